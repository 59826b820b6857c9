"""Image tags with class activation maps → the CAMs' confident seeds M'_I (the A²GNN code:
each class's top share of its argmax pixels, background where its score is high)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.pipelines.kinds.base import WeakInput, register_kind
from graphseg.seeds import add_background, check_cam_layout, normalize_cam, topk_seeds

__all__ = ["TagSeeds"]


@dataclass(frozen=True)
class TagSeeds:
    """The seeds of tags and their CAMs (:func:`graphseg.seeds.topk_seeds` after
    :func:`graphseg.seeds.add_background`, γ = 4)."""

    fraction: float = 0.4
    """Each class's top share of its argmax pixels."""
    background: float = 0.8
    """Background where its score exceeds this."""


def _cams(labels: dict, height: int, width: int, num_classes: int | None) -> Tensor:
    """The ``(1, C, H, W)`` foreground CAMs (channel c-1 = class c), resized to the image,
    kept for the tagged classes only and max-normalised."""
    cams = check_cam_layout(labels["cams"], height, width, num_classes=num_classes,
                            name="labels['cams']")[None]
    tags = torch.zeros(1, cams.shape[1], dtype=torch.bool)
    for cls in labels["tags"]:
        tags[0, _checks.check_class("labels['tags']", cls, cams.shape[1] + 1, lowest=1) - 1] = True
    cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
    return normalize_cam(cams.clamp_min(0), tags=tags)


@register_kind("tags", label_keys=("tags", "cams"), config=TagSeeds)
def tag_input(image: Tensor, labels: dict, num_classes: int | None,
              config: TagSeeds) -> WeakInput:
    cams = _cams(labels, *image.shape[2:], num_classes)
    seeds = topk_seeds(add_background(cams), fraction=config.fraction,
                       background_threshold=config.background)
    return WeakInput("tags", seeds, torch.arange(cams.shape[1] + 1), seeds, cams=cams)
