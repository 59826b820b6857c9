"""Clicks → disks expanded to superpixels, M_P (thesis §3.6.1; class 0 = background)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg.pipelines.kinds.base import WeakInput, expanded, register_kind
from graphseg.seeds import rasterize_points

__all__ = ["PointSeeds"]


@dataclass(frozen=True)
class PointSeeds:
    """The seeds of clicks."""

    radius: int = 5
    """Disk radius of each click, in pixels (the peer's radius on voc14)."""
    n_segments: int = 600
    """SLIC superpixels the disks are expanded to."""


@register_kind("points", label_keys=("points",), config=PointSeeds)
def point_input(image: Tensor, labels: dict, num_classes: int | None,
                config: PointSeeds) -> WeakInput:
    if not labels["points"]:
        raise ValueError("labels['points'] is empty: at least one is needed")
    seeds = rasterize_points([labels["points"]], *image.shape[2:], radius=config.radius,
                             num_classes=num_classes)
    return expanded("points", image, seeds, config.n_segments)
