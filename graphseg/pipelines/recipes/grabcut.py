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
    # an unknown pixel goes to the first class: background whenever the image has some
    index = torch.where(inputs.local == UNKNOWN, 0, inputs.local)
    return F.one_hot(index, len(inputs.classes)).permute(0, 3, 1, 2).float()
