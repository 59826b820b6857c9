"""Losses on the seeded pixels: A²GNN's seed cross-entropy (thesis Eq. 3.21) and the partial
cross-entropy of the regularized-loss literature (Tang et al., ECCV 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphseg import _checks
from graphseg._checks import VARIANTS
from graphseg.losses._common import IGNORE, _check_ignore_index, _check_logits_seeds, _masked_mean

__all__ = ["PartialCrossEntropyLoss", "partial_cross_entropy", "seed_cross_entropy"]


def seed_cross_entropy(logits: Tensor, seeds: Tensor, *, variant: str = "official") -> Tensor:
    r"""Cross-entropy on the seeded nodes (thesis Eq. 3.21).

    .. math::
        \text{paper:}\quad L_{ce} = -\frac{1}{|Y_L|} \sum_{i \in Y_L} \log O_{i, y_i}
        \qquad
        \text{official:}\quad \overline{-\log O_{i, y_i}}_{y_i = 0}
            + \overline{-\log O_{i, y_i}}_{y_i > 0}

    Y_L is the set of seeded nodes (seed ≠ 255); the official code averages background and
    foreground seeds separately and adds the two means. An empty set contributes 0.

    Args:
        logits: ``(B, C, H, W)`` or ``(N, C)`` class logits.
        seeds: ``(B, H, W)`` or ``(N,)`` int64 seeds, 255 = unknown.
        variant: ``"paper"`` or ``"official"`` (default).

    Returns:
        Scalar loss.
    """
    _check_logits_seeds(logits, seeds)
    _checks.check_choice("variant", variant, VARIANTS)
    seeds = seeds.long()
    known = seeds != IGNORE
    loss = F.cross_entropy(logits, torch.where(known, seeds, torch.zeros_like(seeds)),
                           reduction="none")
    if variant == "paper":
        return _masked_mean(loss, known)
    return _masked_mean(loss, known & (seeds == 0)) + _masked_mean(loss, known & (seeds > 0))


def partial_cross_entropy(logits: Tensor, seeds: Tensor, *, ignore_index: int = IGNORE) -> Tensor:
    r"""Partial cross-entropy: the mean cross-entropy over the labelled pixels Ω_L.

    .. math::
        L_{pCE} = -\frac{1}{|\Omega_L|} \sum_{p \in \Omega_L} \log \sigma_{p, y_p},
        \qquad \sigma_p = \mathrm{softmax}(\text{logits}_p)

    (Tang et al. ECCV 2018; thesis Eq. 3.21 in its paper form). This is
    :func:`graphseg.nn.seed_cross_entropy` with ``variant="paper"``; the A²GNN official
    background/foreground split is that function's ``variant="official"``. No labelled pixel
    gives 0 (still in the autograd graph) instead of PyTorch's NaN.

    Args:
        logits: ``(B, C, H, W)`` or ``(N, C)`` class logits.
        seeds: ``(B, H, W)`` or ``(N,)`` int64 class ids, ``ignore_index`` = unknown.
        ignore_index: the unknown label (255 by graphseg's convention).

    Returns:
        Scalar loss.

    Shapes:
        logits ``(B, C, H, W)``, seeds ``(B, H, W)`` → ``()``.
    """
    ignore_index = _check_ignore_index(ignore_index)
    if ignore_index != IGNORE and isinstance(seeds, Tensor) and isinstance(logits, Tensor):
        # seed_cross_entropy knows 255 as the unknown label: check against ignore_index, remap
        if logits.dim() >= 2 and logits.shape[1] > IGNORE:
            raise ValueError(f"ignore_index={ignore_index} needs at most {IGNORE} classes "
                             f"(class {IGNORE} would read as unknown), got {logits.shape[1]}")
        if not (seeds.is_floating_point() or seeds.dtype == torch.bool) and logits.dim() >= 2:
            _checks.check_seed_values("seeds", seeds, logits.shape[1], ignore_index)
            seeds = torch.where(seeds == ignore_index, torch.full_like(seeds, IGNORE), seeds)
    return seed_cross_entropy(logits, seeds, variant="paper")


class PartialCrossEntropyLoss(nn.Module):
    """Module form of :func:`partial_cross_entropy`: ``forward(logits, seeds)``."""

    def __init__(self, *, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, seeds: Tensor) -> Tensor:
        return partial_cross_entropy(logits, seeds, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ignore_index={self.ignore_index})"
