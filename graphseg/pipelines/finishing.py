"""The last step of :func:`~graphseg.pipelines.segment` before labels: the probabilities
fused with a colour model of the seeds, then refined by the fully connected CRF."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg import _checks
from graphseg.propagate import CRF_METHODS, crf
from graphseg.propagate.appearance import colour_posterior, fuse_appearance

__all__ = ["FinishConfig", "finish"]


@dataclass(frozen=True)
class FinishConfig:
    """What follows a recipe (both off by default)."""

    colour_weight: float = 0.0
    """Exponent of the seeds' colour posterior fused with the probabilities
    (:func:`graphseg.propagate.fuse_appearance`; 0 = off)."""
    crf: str | None = None
    """CRF preset run on the fused probabilities (:func:`graphseg.crf`; None = off)."""
    crf_method: str = "lattice"
    """How the CRF sums its kernels (:func:`graphseg.crf`'s ``method``): ``"lattice"``, over
    every pixel pair as pydensecrf does (the papers' CRF), or ``"window"``."""

    def __post_init__(self) -> None:
        _checks.check_choice("crf_method", self.crf_method, CRF_METHODS)


def finish(image: Tensor, local: Tensor, probs: Tensor, config: FinishConfig) -> Tensor:
    """``(1, K, H, W)`` probabilities after the colour fusion and the CRF of ``config``;
    ``local`` are the seeds as channel indices."""
    if config.colour_weight > 0:
        posterior = colour_posterior(image, local, num_classes=probs.shape[1])
        probs = fuse_appearance(probs, posterior, weight=config.colour_weight)
    if config.crf is not None:
        probs = crf(image, probs, preset=config.crf, method=config.crf_method)
    return probs
