"""``a2gnn``: A²GNN (thesis §3.4) trained on one image's graph from its seeds, with the MP
loss and consistency checking inside boxes.

The graph is the image's superpixel graph (the losses read through a pixel grid of stride
``grid_stride``), or, with a trained affinity CNN (``checkpoint=``, thesis §3.3.3–3.4), its
learned pixel graph at a working resolution. From image tags the A²GNN probabilities of the
CAM seeds M'_I are fused with the CAMs' random walk 1:``walk_weight`` (thesis §3.6: 1:3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg._checks import VARIANTS
from graphseg.graph.superpixel import superpixel_graph
from graphseg.nn.affinity import AffinityCNN
from graphseg.nn.train import a2gnn_settings, fit_a2gnn, resample_seeds
from graphseg.pipelines._common import renumber, working_size
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.recipes._graphs import LearnedGraph
from graphseg.pipelines.recipes.random_walk import RandomWalkConfig, cam_walk
from graphseg.pipelines.registry import register_recipe

A2GNN_CRF = {"paper": "psa", "official": "a2gnn"}
"""The CRF preset (:data:`graphseg.propagate.CRF_PRESETS`) after A²GNN per variant: the thesis
adopts PSA's (smoothness s_xy 3 / compat 3, appearance s_xy 80, s_rgb 13, compat 10); the
official ``mytool.crf_inference_inf`` uses 2 / 3 and 50 / 5 / 10. A preset puts it in its
:class:`~graphseg.pipelines.FinishConfig` (see :attr:`A2GNNConfig.crf`)."""
LOSS_SIZES = ("graph", "image")


@dataclass(frozen=True)
class A2GNNConfig:
    """A²GNN's training and graphs.

    The defaults are graphseg's shipped settings (the official attention and losses, the
    thesis's schedule, width 64 for CPU runs); :meth:`paper` and :meth:`official` give each
    source exactly (docs/paper_presets.md). ``None`` in ``epochs``, ``hidden``, ``lr`` or
    ``lambda_reg`` means the variant's value (:func:`graphseg.nn.train.a2gnn_settings`).
    """

    epochs: int | None = 100
    hidden: int | None = 64
    """Epochs (both stages) and width."""
    grid_stride: int = 4
    """Stride of the pixel grid through which the losses read a superpixel graph."""
    n_segments: int = 600
    """SLIC superpixels of the graph when the seeds bring none (boxes, tags)."""
    learned: LearnedGraph = field(default_factory=LearnedGraph)
    """The learned graph (``checkpoint=``)."""
    walk_weight: float = 3.0
    """Weight of the CAMs' random walk against A²GNN's probabilities (tags; thesis: 1:3)."""
    walk: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    """That random walk (tags)."""
    # the fields below come last: the deprecated Settings build this config positionally
    lr: float | None = 0.03
    lambda_reg: float | None = 0.01
    """Adam's learning rate and L_reg's weight λ₁ in stage 2."""
    variant: str = "official"
    """``"paper"`` or ``"official"``: attention, L_ce, L_mp, L_reg's kernel window and
    normalisation, when consistency checking starts (:func:`graphseg.nn.fit_a2gnn`)."""
    loss_size: str = "graph"
    """On the learned graph, where L_ce, L_mp and consistency checking are computed:
    ``"graph"`` at its nodes, ``"image"`` on the working image the affinity CNN sees, the
    logits upsampled bilinearly (official code; the paper variant resamples the seeds back to
    the nodes). The superpixel graph always reads through its ``grid_stride`` grid."""

    def __post_init__(self) -> None:
        _checks.check_choice("variant", self.variant, VARIANTS)
        _checks.check_choice("loss_size", self.loss_size, LOSS_SIZES)

    @property
    def crf(self) -> str:
        """The CRF preset of this variant (:data:`A2GNN_CRF`)."""
        return A2GNN_CRF[self.variant]

    @classmethod
    def _of(cls, variant: str, weak: str, learned: LearnedGraph, loss_size: str,
            changes: dict) -> A2GNNConfig:
        settings = a2gnn_settings(variant, boxes=weak == "boxes")
        values = {"epochs": settings["epochs"], "hidden": settings["hidden"],
                  "lr": settings["lr"], "lambda_reg": settings["lambda_reg"],
                  "variant": variant, "loss_size": loss_size, "learned": learned,
                  "walk": RandomWalkConfig(learned=learned)}
        return cls(**{**values, **changes})

    @classmethod
    def paper(cls, weak: str, **changes) -> A2GNNConfig:
        """The thesis's A²GNN for ``weak`` labels: 100 epochs, Adam lr 0.03, λ₁ = 0.01,
        width 256, the paper's attention and losses at the graph's nodes, the disk window of
        radius 5 (:meth:`LearnedGraph.paper`). ``changes`` replace fields."""
        return cls._of("paper", weak, LearnedGraph.paper(weak), "graph", changes)

    @classmethod
    def official(cls, weak: str, **changes) -> A2GNNConfig:
        """The released code's A²GNN for ``weak`` labels: 150 + 150 epochs, lr 0.035 and
        λ₁ = 0.01 for boxes, 50 + 50 epochs, lr 0.03 and λ₁ = 0.3 otherwise; width 256; the
        code's attention and losses with the logits upsampled to the image for L_ce and L_mp;
        its square window (:meth:`LearnedGraph.official`). ``changes`` replace fields."""
        return cls._of("official", weak, LearnedGraph.official(weak), "image", changes)


def _grid_boxes(boxes, rows: int, cols: int, to_grid):
    """Boxes on a ``rows`` x ``cols`` grid, ``to_grid(pixel, axis)`` mapping image pixels
    (axis 0: y, 1: x) to grid cells."""
    if boxes is None:
        return None
    return [[{"cls": b["cls"],
              "box": [min(cols - 1, to_grid(b["box"][0], 1)),
                      min(rows - 1, to_grid(b["box"][1], 0)),
                      min(cols - 1, to_grid(b["box"][2], 1)),
                      min(rows - 1, to_grid(b["box"][3], 0))]}
             for b in boxes]]


def _on_regions(image: Tensor, local: Tensor, num_classes: int, config: A2GNNConfig,
                boxes, regions) -> Tensor:
    graph = regions if regions is not None else superpixel_graph(
        image, n_segments=config.n_segments)
    stride = config.grid_stride
    offset = stride // 2
    cells = graph.labels[:, offset::stride, offset::stride]
    grid_boxes = _grid_boxes(boxes, *cells.shape[1:], lambda pixel, axis: pixel // stride)
    probs = fit_a2gnn(graph.to_pyg(), local[:, offset::stride, offset::stride], boxes=grid_boxes,
                      pixels=cells, num_classes=num_classes, image=image,
                      **_training(config))
    return graph.unpool(probs)


def _training(config: A2GNNConfig) -> dict:
    """:func:`~graphseg.nn.fit_a2gnn`'s training arguments from ``config``."""
    return {"variant": config.variant, "epochs": config.epochs, "hidden": config.hidden,
            "lr": config.lr, "lambda_reg": config.lambda_reg}


def _on_learned_graph(image: Tensor, local: Tensor, num_classes: int, config: A2GNNConfig,
                      boxes, model: AffinityCNN) -> Tensor:
    height, width = image.shape[2:]
    graph = config.learned.build(image, model)
    # the losses' grid: the graph's nodes, or the working image the affinity CNN saw
    rows, cols = (graph.image_size if config.loss_size == "graph"
                  else working_size(height, width, config.learned.size))
    scale = ((rows, height), (cols, width))
    grid_boxes = _grid_boxes(boxes, rows, cols,
                             lambda pixel, axis: pixel * scale[axis][0] // scale[axis][1])
    probs = fit_a2gnn(graph, resample_seeds(local, (rows, cols)).to(graph.weight.device),
                      boxes=grid_boxes, num_classes=num_classes, image=image,
                      **_training(config))
    return F.interpolate(probs, size=(height, width), mode="bilinear",
                         align_corners=False).cpu()


def a2gnn_probabilities(image: Tensor, local: Tensor, num_classes: int, config: A2GNNConfig, *,
                        boxes=None, regions=None, model: AffinityCNN | None = None) -> Tensor:
    """``(1, num_classes, H, W)`` probabilities of A²GNN trained from ``local`` seeds."""
    if model is not None:
        return _on_learned_graph(image, local, num_classes, config, boxes, model)
    return _on_regions(image, local, num_classes, config, boxes, regions)


@register_recipe("a2gnn", kinds=("boxes", "points", "scribbles", "tags"), config=A2GNNConfig,
                 learned_graph=("boxes", "points", "scribbles", "tags"),
                 summary="A²GNN trained on the image's superpixel (or learned) graph with the "
                         "MP loss and consistency checking; from tags fused 1:3 with the CAMs' "
                         "random walk")
def a2gnn(image: Tensor, inputs: WeakInput, config: A2GNNConfig, *,
          model: AffinityCNN | None = None, details: dict | None = None) -> Tensor:
    if inputs.cams is None:
        return a2gnn_probabilities(image, inputs.local, len(inputs.classes), config,
                                   boxes=inputs.local_boxes(), regions=inputs.regions,
                                   model=model)
    walk = cam_walk(image, inputs.cams, config.walk, model)
    present, local = renumber(inputs.seeds)
    if len(present) < 2:
        return walk
    probs = config.walk_weight * walk
    probs[:, present] += a2gnn_probabilities(image, local, len(present), config, model=model)
    return probs / probs.sum(1, keepdim=True)
