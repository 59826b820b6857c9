"""Scribbles → strokes expanded to superpixels, M_S (thesis §3.6.1; class 0 = background)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg.pipelines.kinds.base import WeakInput, expanded, register_kind
from graphseg.seeds import rasterize_scribbles

__all__ = ["ScribbleSeeds"]


@dataclass(frozen=True)
class ScribbleSeeds:
    """The seeds of scribbles."""

    radius: int = 1
    """Stroke half-width, in pixels."""
    n_segments: int = 600
    """SLIC superpixels the strokes are expanded to."""


@register_kind("scribbles", label_keys=("scribbles",), config=ScribbleSeeds)
def scribble_input(image: Tensor, labels: dict, num_classes: int | None,
                   config: ScribbleSeeds) -> WeakInput:
    if not labels["scribbles"]:
        raise ValueError("labels['scribbles'] is empty: at least one is needed")
    seeds = rasterize_scribbles([labels["scribbles"]], *image.shape[2:], radius=config.radius,
                                num_classes=num_classes)
    return expanded("scribbles", image, seeds, config.n_segments)
