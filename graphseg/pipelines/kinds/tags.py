"""Image tags with class activation maps → seeds: the CAMs' confident seeds M'_I (the A²GNN
code: each class's top share of its argmax pixels, background where its score is high), or
RRM's reliable regions (thesis §2.3.1: each class's top 40% where the CAM and CRF agree)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.pipelines.kinds.base import WeakInput, cam_maps, cam_seeds, register_kind
from graphseg.propagate import crf
from graphseg.seeds import add_background, reliable_seeds

__all__ = ["TAG_SOURCES", "TagSeeds"]

TAG_SOURCES = ("a2gnn", "rrm")
"""The seed rules of :class:`TagSeeds`."""


@dataclass(frozen=True)
class TagSeeds:
    """The seeds of tags and their CAMs, after :func:`graphseg.seeds.add_background` (γ = 4).

    ``source="a2gnn"`` (default): the A²GNN code's M'_I (:func:`graphseg.seeds.topk_seeds`):
    each foreground class's top ``fraction`` of its argmax pixels, background where its score
    exceeds ``background``.

    ``source="rrm"``: RRM's reliable regions (thesis §2.3.1,
    :func:`graphseg.seeds.reliable_seeds`): the top ``fraction`` (40%) of each class's argmax
    pixels, the background included, kept where the CAM label agrees with the label of a dense
    CRF (:func:`graphseg.crf`, preset ``crf``) run on the class scores normalised to sum to 1.
    ``background`` is not used.
    """

    fraction: float = 0.4
    """Each class's top share of its argmax pixels."""
    background: float = 0.8
    """``source="a2gnn"``: background where its score exceeds this."""
    source: str = "a2gnn"
    """The seed rule: ``"a2gnn"`` or ``"rrm"`` (:data:`TAG_SOURCES`)."""
    crf: str = "psa"
    """``source="rrm"``: the CRF preset (:data:`graphseg.propagate.CRF_PRESETS`; RRM runs
    PSA's CRF)."""


@register_kind("tags", label_keys=("tags", "cams"), config=TagSeeds)
def tag_input(image: Tensor, labels: dict, num_classes: int | None,
              config: TagSeeds) -> WeakInput:
    _checks.check_choice("TagSeeds.source", config.source, TAG_SOURCES)
    cams = cam_maps(labels["cams"], *image.shape[2:], labels["tags"], num_classes)
    if config.source == "a2gnn":
        seeds = cam_seeds(cams, fraction=config.fraction, background=config.background)
    else:
        scores = add_background(cams)
        probs = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)
        crf_labels = crf(image, probs, preset=config.crf).argmax(dim=1)
        seeds = reliable_seeds(scores, crf_labels=crf_labels, fraction=config.fraction)
    return WeakInput("tags", seeds, torch.arange(cams.shape[1] + 1), seeds, cams=cams)
