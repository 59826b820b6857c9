"""Boxes → GrabCut seeds M_B (thesis Eq. 3.2–3.3): outside every box background, inside a box
GrabCut's foreground takes the box's class, the rest is unknown."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg import _checks
from graphseg.pipelines.kinds.base import WeakInput, register_kind
from graphseg.seeds import grabcut_seeds

__all__ = ["BoxSeeds"]


@dataclass(frozen=True)
class BoxSeeds:
    """The seeds of boxes (:func:`graphseg.seeds.grabcut_seeds`)."""

    context: float | None = 0.1
    """Window of GrabCut around each box, as a fraction of the box's sides (None = the whole
    image)."""


@register_kind("boxes", label_keys=("boxes",), config=BoxSeeds)
def box_input(image: Tensor, labels: dict, num_classes: int | None,
              config: BoxSeeds) -> WeakInput:
    boxes = labels["boxes"]
    _checks.check_boxes([boxes], 1, *image.shape[2:], num_classes=num_classes)
    seeds = grabcut_seeds(image, [boxes], context=config.context, num_classes=num_classes)
    return WeakInput.from_seeds("boxes", seeds, boxes=boxes)
