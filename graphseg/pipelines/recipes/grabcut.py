"""``grabcut``: GrabCut's own foreground, the seeds M_B themselves (the peer of the box
protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg.pipelines._common import UNKNOWN
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.registry import register_recipe


@register_recipe("grabcut", kinds=("boxes",), config=None, finishing=False,
                 summary="GrabCut's foreground in each box (the seeds M_B), the rest background")
def grabcut(image: Tensor, inputs: WeakInput, config: None, *, model=None,
            details: dict | None = None) -> Tensor:
    # GrabCut's M_B even when CAMs made the seeds M_g
    seeds = inputs.seeds if inputs.box_seeds is None else inputs.box_seeds
    return seed_probabilities(seeds, inputs.classes)


def seed_probabilities(seeds: Tensor, classes) -> Tensor:
    """``(B, K, H, W)`` one-hot probabilities over ``classes`` of a seed map ``(B, H, W)``; a
    class outside ``classes`` and an unknown pixel go to the first channel (background
    whenever the image has some)."""
    channel = torch.zeros(UNKNOWN + 1, dtype=torch.int64)
    channel[classes] = torch.arange(len(classes))
    index = channel[seeds.clamp(0, UNKNOWN)]
    return F.one_hot(index, len(classes)).permute(0, 3, 1, 2).float()
