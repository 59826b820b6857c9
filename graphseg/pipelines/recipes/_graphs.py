"""The two graphs the recipes propagate on: the RGB + position kernel graph and the learned
graph of a trained affinity CNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg._checks import VARIANTS
from graphseg.graph.window import WindowGraph, feature_graph, pixel_graph
from graphseg.nn.affinity import AffinityCNN
from graphseg.pipelines._common import resize_image

# the official code's window radius per weak kind: --radius of zbf1991/A2GNN's
# train_infer_A2GNN_box.py (4) and train_infer_A2GNN_others.py (3; its scribble run uses 4)
_OFFICIAL_RADIUS = {"boxes": 4, "scribbles": 4, "points": 3, "tags": 3}
_KINDS = tuple(_OFFICIAL_RADIUS)


@dataclass(frozen=True)
class RGBGraph:
    """The colour + position Gaussian kernel graph (:func:`graphseg.pixel_graph`)."""

    radius: int = 2
    """Window radius."""
    sigma_xy: float = 2.0
    sigma_rgb: float = 0.1
    """Position and colour bandwidths (colour in [0, 1])."""

    def build(self, image: Tensor) -> WindowGraph:
        return pixel_graph(image, radius=self.radius, sigma_xy=self.sigma_xy,
                           sigma_rgb=self.sigma_rgb)


@dataclass(frozen=True)
class LearnedGraph:
    """The learned graph of a trained affinity CNN (thesis Eq. 3.14) at a working
    resolution, and how that CNN is trained (:func:`~graphseg.pipelines.train_affinity_dataset`).

    The defaults are graphseg's shipped ones: the official code's square window with the
    thesis's threshold σ = 1e-3. :meth:`paper` and :meth:`official` give each source exactly
    (docs/paper_presets.md).
    """

    size: int = 128
    """Longer side of the working resolution, in training and at inference."""
    radius: int = 4
    """Window radius (official code: square, 4 for boxes and scribbles, 3 for points and image
    labels; thesis: disk, 5 for every kind)."""
    shape: str = "square"
    """Window shape, ``"square"`` (official) or ``"disk"`` (thesis), in training and at
    inference."""
    train_radius: int | None = None
    """Window radius in training when it differs from ``radius`` (the official code trains
    every kind's CNN with ``train_gated_aff.py --radius 4``); None: ``radius``."""
    threshold: float | None = 1e-3
    """Eq. 3.14's σ: affinities at or below it are not edges (thesis 1e-3; None keeps every
    window entry, as the official code)."""
    variant: str = "official"
    """The affinity CNN's loss in training (:func:`graphseg.nn.affinity_loss`)."""
    resolution: str = "nodes"
    """Where the graph's nodes lie: ``"nodes"``, one per position of F_A (the thesis's and
    AffinityNet's graph, stride 4 of the working image), or ``"image"``, one per pixel of the
    image: F_A (and the node features X) resized bilinearly to the image and the window taken
    there, so that a walk needs no upsampling of its result."""
    beta: float = 1.0
    """Power of the learned affinities, W = D^β (AffinityNet's β, Ahn & Kwak CVPR 2018 §4.2:
    8; 1 is the thesis's D), after Eq. 3.14's threshold. Resized features change slowly from
    pixel to pixel, so the ``"image"`` graph needs a large β to hold a boundary."""
    rgb: bool = False
    """With ``resolution="image"``: multiply the learned affinities into the weights of the
    RGB + position kernel (:class:`RGBGraph`'s bandwidths) on the same window, so that colour
    edges the node grid cannot resolve still separate pixels (graphseg's graph, not the
    thesis's)."""

    def __post_init__(self) -> None:
        _checks.check_choice("variant", self.variant, VARIANTS)
        _checks.check_choice("shape", self.shape, ("disk", "square"))
        _checks.check_positive("radius", self.radius, integer=True)
        _checks.check_positive("size", self.size, integer=True)
        _checks.check_choice("resolution", self.resolution, ("nodes", "image"))
        _checks.check_positive("beta", self.beta)
        if self.rgb and self.resolution != "image":
            raise ValueError("rgb=True multiplies the RGB kernel into a graph at image "
                             "resolution: set resolution='image'")
        if self.train_radius is not None:
            _checks.check_positive("train_radius", self.train_radius, integer=True)

    @property
    def training_radius(self) -> int:
        """The window radius the affinity CNN is trained with."""
        return self.radius if self.train_radius is None else self.train_radius

    @classmethod
    def paper(cls, weak: str, **changes) -> LearnedGraph:
        """The thesis's graph for every ``weak`` kind: disk of radius 5 in training and
        inference (§3.3.3), threshold σ = 1e-3 (Eq. 3.14), the paper's L_Ac and L_Ar."""
        _checks.check_choice("weak", weak, _KINDS)
        return cls(**{"radius": 5, "shape": "disk", "threshold": 1e-3, "variant": "paper",
                      **changes})

    @classmethod
    def official(cls, weak: str, **changes) -> LearnedGraph:
        """The released code's graph for ``weak``: square window of radius 4 (boxes,
        scribbles) or 3 (points, tags) at inference and 4 in training, every window entry
        kept, the code's L_Ac and L_Ar."""
        _checks.check_choice("weak", weak, _KINDS)
        return cls(**{"radius": _OFFICIAL_RADIUS[weak], "train_radius": 4, "shape": "square",
                      "threshold": None, "variant": "official", **changes})

    def build(self, image, model: AffinityCNN) -> WindowGraph:
        """The graph of ``image`` (any image form of docs/graphs.md#images) under ``model``."""
        image = _checks.as_image_batch(image, "image", channels=3)
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            small = resize_image(image, self.size).to(device)
            if self.resolution == "nodes":
                graph = model.to_graph(small, radius=self.radius, shape=self.shape,
                                       threshold=self.threshold)
            else:
                out = model(small)
                size = tuple(image.shape[2:])
                features, nodes = (F.interpolate(x, size=size, mode="bilinear",
                                                 align_corners=False)
                                   for x in (out.affinity, out.nodes))
                graph = feature_graph(features, radius=self.radius, shape=self.shape,
                                      kind="l1", threshold=self.threshold)
                graph = WindowGraph(graph.weight, graph.offsets, x=nodes)
        weight = graph.weight.pow_(self.beta) if self.beta != 1.0 else graph.weight
        if self.rgb:
            colour = RGBGraph()
            weight = weight * pixel_graph(image.to(weight.device), offsets=graph.offsets,
                                          sigma_xy=colour.sigma_xy,
                                          sigma_rgb=colour.sigma_rgb).weight
        return WindowGraph(weight, graph.offsets, x=graph.x)
