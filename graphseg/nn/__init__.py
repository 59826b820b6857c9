"""Learned propagation models and their losses: the affinity CNN, A²GNN and GNN baselines."""

from graphseg.losses import (
    affinity_contrast_loss,
    affinity_loss,
    affinity_regular_loss,
    consistency_check,
    mp_loss,
    mp_pixels,
    potts_loss,
    seed_cross_entropy,
)
from graphseg.nn.a2gnn import A2GNN, BASELINES, BaselineGNN, GNNOutput, baseline_gnn
from graphseg.nn.affinity import AffinityCNN, AffinityOutput, node_features
from graphseg.nn.attention import VARIANTS, AffinityAttentionConv, affinity_attention
from graphseg.nn.backbone import BackboneAdapter, ResNetBackbone, build_backbone
from graphseg.nn.train import (
    a2gnn_kernel_graph,
    a2gnn_settings,
    fit_a2gnn,
    load_checkpoint,
    save_checkpoint,
    train_affinity,
)
from graphseg.nn.unary import RegionClassifier, UnaryNet, region_loss

__all__ = [
    "A2GNN",
    "BASELINES",
    "VARIANTS",
    "AffinityAttentionConv",
    "AffinityCNN",
    "AffinityOutput",
    "BackboneAdapter",
    "BaselineGNN",
    "GNNOutput",
    "RegionClassifier",
    "ResNetBackbone",
    "UnaryNet",
    "a2gnn_kernel_graph",
    "a2gnn_settings",
    "affinity_attention",
    "affinity_contrast_loss",
    "affinity_loss",
    "affinity_regular_loss",
    "baseline_gnn",
    "build_backbone",
    "consistency_check",
    "fit_a2gnn",
    "load_checkpoint",
    "mp_loss",
    "mp_pixels",
    "node_features",
    "potts_loss",
    "region_loss",
    "save_checkpoint",
    "seed_cross_entropy",
    "train_affinity",
]
