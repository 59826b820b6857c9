"""The weak-supervision loss library: each loss a function and an ``nn.Module``, vectorised over
windowed graphs (no N×N tensors). The A²GNN and affinity-CNN losses live in
:mod:`graphseg.nn.losses`; :func:`partial_cross_entropy` and :func:`dense_energy_loss` build on
them."""

from graphseg.losses.clustering import (
    BCDLoss,
    EntropyLoss,
    KernelKMeansLoss,
    NormalizedCutLoss,
    bcd_loss,
    entropy_loss,
    kernel_kmeans_loss,
    normalized_cut_loss,
)
from graphseg.losses.contrastive import (
    ContrastiveAffinityLoss,
    contrastive_affinity_loss,
)
from graphseg.losses.pairwise import (
    PAIR_SETS,
    DenseEnergyLoss,
    DFRLoss,
    DFRObjective,
    FeatureDistanceLoss,
    FeatureRegularLoss,
    PartialCrossEntropyLoss,
    QuadraticPairwiseLoss,
    dense_energy_loss,
    dfr_kernel,
    dfr_loss,
    dfr_objective,
    dfr_pseudo_labels,
    feature_distance_loss,
    feature_regular_loss,
    partial_cross_entropy,
    quadratic_pairwise_loss,
)
from graphseg.losses.reliability import (
    DynamicThreshold,
    ReliabilityWeightedCrossEntropy,
    cam_perplexity,
    perplexity_reliability,
    reliability_weighted_cross_entropy,
    reliability_weights,
    search_threshold,
)

__all__ = [
    "BCDLoss",
    "ContrastiveAffinityLoss",
    "DFRLoss",
    "DFRObjective",
    "DenseEnergyLoss",
    "DynamicThreshold",
    "EntropyLoss",
    "FeatureDistanceLoss",
    "FeatureRegularLoss",
    "KernelKMeansLoss",
    "NormalizedCutLoss",
    "PAIR_SETS",
    "PartialCrossEntropyLoss",
    "QuadraticPairwiseLoss",
    "ReliabilityWeightedCrossEntropy",
    "bcd_loss",
    "cam_perplexity",
    "contrastive_affinity_loss",
    "dense_energy_loss",
    "dfr_kernel",
    "dfr_loss",
    "dfr_objective",
    "dfr_pseudo_labels",
    "entropy_loss",
    "feature_distance_loss",
    "feature_regular_loss",
    "kernel_kmeans_loss",
    "normalized_cut_loss",
    "partial_cross_entropy",
    "perplexity_reliability",
    "quadratic_pairwise_loss",
    "reliability_weighted_cross_entropy",
    "reliability_weights",
    "search_threshold",
]
