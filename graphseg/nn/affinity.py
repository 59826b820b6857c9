"""The affinity CNN of A²GNN (thesis §3.3.3): image → learned windowed pixel graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.window import WindowGraph, feature_graph
from graphseg.nn.backbone import BackboneAdapter, ResNetBackbone

__all__ = ["AffinityCNN", "AffinityOutput", "node_features"]

NODE_EPS = 1e-5


class AffinityOutput(NamedTuple):
    """The two outputs of :class:`AffinityCNN`, at the resolution of the finest backbone map."""

    affinity: Tensor
    """``(B, 448, h, w)`` affinity features F_A (Eq. 3.14's F)."""
    nodes: Tensor
    """``(B, ΣC_i, h, w)`` node features X (Eq. 3.15)."""


def node_features(maps: Sequence[Tensor], *, eps: float = NODE_EPS) -> Tensor:
    r"""A²GNN's node features (thesis Eq. 3.15): the backbone maps resized to the finest of them
    (bilinear), concatenated, and each node divided by its sum.

    .. math::
        X_i = \frac{x_i}{\sum_c x_{ic} + \epsilon}

    The maps are non-negative after ReLU; ε keeps an all-zero node at 0 instead of NaN.

    Args:
        maps: feature maps ``(B, C_i, H_i, W_i)``.
        eps: ε.

    Returns:
        ``(B, ΣC_i, H, W)`` with (H, W) the largest map size.
    """
    size = _finest(maps)
    x = torch.cat([_resize(m, size) for m in maps], dim=1)
    return x / (x.sum(1, keepdim=True) + eps)


def _finest(maps: Sequence[Tensor]) -> tuple[int, int]:
    return max((tuple(m.shape[2:]) for m in maps), key=lambda s: s[0] * s[1])


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AffinityCNN(nn.Module):
    r"""The affinity CNN of A²GNN (thesis §3.3.3, Eq. 3.14–3.15).

    A backbone gives three feature maps; each is reduced by a 1×1 convolution (+ELU) to 64, 128
    and 256 channels, resized to the finest map, concatenated (448) and mixed by a 1×1
    convolution 448 → 448 (+ELU): the affinity features F_A. The node features X are the
    concatenated backbone maps, each node divided by its sum (:func:`node_features`).
    :meth:`to_graph` turns an image into a :class:`graphseg.WindowGraph` with the learned edges

    .. math::
        D_{ij} = \exp\big(-\|F_i - F_j\|_1 / d\big), \qquad
        E_{ij} = D_{ij} \text{ if } D_{ij} > \sigma \text{ else } 0

    Images enter as ``(B, 3, H, W)`` floats in [0, 1] and are ImageNet-normalised inside.

    Args:
        backbone: None for :class:`~graphseg.nn.ResNetBackbone` (stride 8), or any module that
            returns a list of three feature maps.
        backbone_channels: the channels of those three maps (needed for a module without an
            ``out_channels`` attribute).
        reductions: widths of the 1×1 reductions (64, 128, 256).
        normalize: colour normalisation applied to the input image (``"imagenet"`` or None).

    Shapes:
        image ``(B, 3, H, W)`` → F_A ``(B, 448, h, w)``, X ``(B, ΣC_i, h, w)``.
    """

    def __init__(self, backbone: nn.Module | None = None, *,
                 backbone_channels: Sequence[int] | None = None,
                 reductions: Sequence[int] = (64, 128, 256),
                 normalize: str | None = "imagenet") -> None:
        super().__init__()
        if backbone is None:
            backbone = ResNetBackbone()
        if backbone_channels is None:
            backbone_channels = getattr(backbone, "out_channels", None)
            if backbone_channels is None:
                raise ValueError("backbone_channels must give the channels of the backbone's 3 "
                                 f"maps: {type(backbone).__name__} has no out_channels attribute")
        if not isinstance(backbone, (ResNetBackbone, BackboneAdapter)):
            backbone = BackboneAdapter(backbone, backbone_channels)
        reductions = tuple(reductions)
        if len(reductions) != 3:
            raise ValueError(f"reductions must give 3 widths, got {reductions}")
        if normalize not in (None, "imagenet"):
            raise ValueError(f"normalize must be None or 'imagenet', got {normalize!r}")
        self.backbone = backbone
        self.normalize = normalize
        channels = tuple(backbone.out_channels)
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, r, 1), nn.ELU()) for c, r in zip(channels, reductions,
                                                                          strict=True))
        width = sum(reductions)
        self.mix = nn.Sequential(nn.Conv2d(width, width, 1), nn.ELU())
        self.node_channels = sum(channels)

    @property
    def affinity_channels(self) -> int:
        """d, the channels of F_A."""
        return self.mix[0].out_channels

    def forward(self, image: Tensor) -> AffinityOutput:
        image = _checks.normalize_image(_checks.as_image_batch(image, "image", channels=3),
                                        self.normalize)
        maps = self.backbone(image)
        size = _finest(maps)
        reduced = [_resize(reduce(m), size) for reduce, m in zip(self.reduce, maps, strict=True)]
        return AffinityOutput(self.mix(torch.cat(reduced, dim=1)), node_features(maps))

    def to_graph(self, image: Tensor, *, radius: int = 5, shape: str = "disk",
                 offsets: Tensor | None = None, threshold: float | None = 1e-3) -> WindowGraph:
        """The learned pixel graph of an image at the resolution of F_A (thesis Eq. 3.14).

        Args:
            image: ``(B, 3, H, W)`` in [0, 1] (or ``(3, H, W)``, or any image form of
                docs/images.md).
            radius, shape: the window (paper: disk r = 5; official: square, r = 4 for boxes and
                scribbles, 3 for image labels and points).
            offsets: explicit ``(K, 2)`` offsets instead of ``radius``/``shape``.
            threshold: σ of Eq. 3.14 (1e-3, paper); None keeps every window entry (official).

        Returns:
            :class:`graphseg.WindowGraph` with weights D (or E) and node features ``x`` = X.
            Gradients flow to the model; call it under ``torch.no_grad()`` for inference.
        """
        out = self(image)
        graph = feature_graph(out.affinity, radius=radius, shape=shape, offsets=offsets,
                              kind="l1", threshold=threshold)
        return WindowGraph(graph.weight, graph.offsets, x=out.nodes)

    def __repr__(self) -> str:
        reductions = tuple(seq[0].out_channels for seq in self.reduce)
        return (f"{self.__class__.__name__}(backbone={self.backbone!r}, "
                f"reductions={reductions}, node_channels={self.node_channels}, "
                f"normalize={self.normalize!r})")
