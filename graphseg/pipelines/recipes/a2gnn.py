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

from graphseg.graph.superpixel import superpixel_graph
from graphseg.nn.affinity import AffinityCNN
from graphseg.nn.train import fit_a2gnn, resample_seeds
from graphseg.pipelines._common import renumber
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.recipes._graphs import LearnedGraph
from graphseg.pipelines.recipes.random_walk import RandomWalkConfig, cam_walk
from graphseg.pipelines.registry import register_recipe


@dataclass(frozen=True)
class A2GNNConfig:
    """A²GNN's training and graphs."""

    epochs: int = 100
    hidden: int = 64
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
                      pixels=cells, num_classes=num_classes, epochs=config.epochs,
                      hidden=config.hidden)
    return graph.unpool(probs)


def _on_learned_graph(image: Tensor, local: Tensor, num_classes: int, config: A2GNNConfig,
                      boxes, model: AffinityCNN) -> Tensor:
    height, width = image.shape[2:]
    graph = config.learned.build(image, model)
    rows, cols = graph.image_size
    scale = ((rows, height), (cols, width))
    grid_boxes = _grid_boxes(boxes, rows, cols,
                             lambda pixel, axis: pixel * scale[axis][0] // scale[axis][1])
    probs = fit_a2gnn(graph, resample_seeds(local, (rows, cols)).to(graph.weight.device),
                      boxes=grid_boxes,
                      num_classes=num_classes, epochs=config.epochs, hidden=config.hidden)
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
