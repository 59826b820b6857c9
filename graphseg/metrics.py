"""Segmentation and seed metrics.

IoU metrics read a confusion matrix, so that counts can be summed over a data set of images of
different sizes before the ratios are taken. Rows are ground-truth classes, columns predictions;
ground truth 255 (void) is never scored.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphseg import _checks

__all__ = [
    "SeedScores",
    "confusion_matrix",
    "error_rate",
    "foreground_iou",
    "mean_iou",
    "per_class_iou",
    "seed_scores",
]

VOID = 255
# C·(C + 1) counts above this (2 GiB of int64) come from a stray label value, not a class count
CONFUSION_MAX_ENTRIES = 2**28


def _pair(pred, target) -> tuple[Tensor, Tensor]:
    pred = _checks.as_label_batch(pred, "pred")
    target = _checks.as_label_batch(target, "target")
    _checks.same_size("pred", pred, "target", target)
    return pred, target.to(pred.device)


def confusion_matrix(
    pred,
    target,
    *,
    num_classes: int,
    ignore_index: int = VOID,
    unlabelled: int | None = None,
) -> Tensor:
    """Counts ``confusion[t, p]`` of scored pixels with ground truth t and prediction p.

    Args:
        pred: ``(B, H, W)`` or ``(H, W)`` int predictions.
        target: ground truth of the same size; ``ignore_index`` pixels are not scored.
        num_classes: C; every scored value must lie in [0, C).
        ignore_index: void label of the ground truth.
        unlabelled: the prediction value meaning "not labelled" (255 in seed maps). When given,
            such pixels are counted in an extra last column, giving a ``(C, C + 1)`` matrix for
            :func:`seed_scores`; otherwise a prediction outside [0, C) on a scored pixel is an
            error.

    Returns:
        ``(C, C)`` int64, or ``(C, C + 1)`` with ``unlabelled``.
    """
    _checks.check_positive("num_classes", num_classes, integer=True)
    if num_classes * (num_classes + 1) > CONFUSION_MAX_ENTRIES:
        raise ValueError(f"num_classes={num_classes} would need a {num_classes}x{num_classes} "
                         f"confusion matrix, above CONFUSION_MAX_ENTRIES={CONFUSION_MAX_ENTRIES}")
    pred, target = _pair(pred, target)
    scored = target != ignore_index
    truth, guess = target[scored], pred[scored]
    if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= num_classes):
        bad = int(truth.min()) if int(truth.min()) < 0 else int(truth.max())
        raise ValueError(f"target must hold class ids in [0, {num_classes}) or {ignore_index} "
                         f"(void), got the value {bad}")
    columns = num_classes
    if unlabelled is not None:
        guess = torch.where(guess == unlabelled, torch.full_like(guess, num_classes), guess)
        columns += 1
    if guess.numel() and (int(guess.min()) < 0 or int(guess.max()) >= columns):
        bad = int(guess.min()) if int(guess.min()) < 0 else int(guess.max())
        hint = ("" if unlabelled is not None else
                "; for partially labelled seed maps pass unlabelled=255")
        raise ValueError(f"pred must hold class ids in [0, {num_classes}) at scored pixels, "
                         f"got the value {bad}{hint}")
    counts = torch.bincount(truth * columns + guess, minlength=num_classes * columns)
    return counts.view(num_classes, columns).cpu()


def _square(confusion) -> Tensor:
    if not isinstance(confusion, Tensor) or confusion.dim() != 2 \
            or confusion.shape[0] != confusion.shape[1]:
        raise ValueError("confusion must be a square (C, C) tensor from confusion_matrix() "
                         f"without unlabelled, got {_checks._describe(confusion)}")
    confusion = confusion.to(torch.float64)
    if confusion.numel() and not bool((confusion >= 0).all()):  # NaN fails too
        raise ValueError("confusion must hold non-negative counts from confusion_matrix(), got "
                         f"a minimum of {float(confusion.min())}")
    return confusion


def per_class_iou(confusion: Tensor) -> Tensor:
    """IoU of each class, TP / (TP + FP + FN); NaN for a class absent from both the ground truth
    and the predictions.

    Args:
        confusion: ``(C, C)`` from :func:`confusion_matrix`.

    Returns:
        ``(C,)`` float64.
    """
    confusion = _square(confusion)
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    return torch.where(union > 0, hits / union.clamp_min(1), torch.full_like(hits, torch.nan))


def mean_iou(confusion: Tensor, *, classes: str = "present") -> float:
    """Mean IoU.

    Args:
        confusion: ``(C, C)`` from :func:`confusion_matrix`.
        classes: ``"present"``: the classes present in the ground truth (the voc14 protocol of
            the shared data); ``"union"``: every class present in the ground truth or the
            predictions (the usual VOC evaluation, where a class only predicted scores 0).

    Returns:
        The mean, NaN when no class qualifies.
    """
    _checks.check_choice("classes", classes, ("present", "union"))
    iou = per_class_iou(confusion)
    keep = _square(confusion).sum(1) > 0 if classes == "present" else ~iou.isnan()
    return float(iou[keep].mean()) if bool(keep.any()) else float("nan")


def foreground_iou(confusion: Tensor) -> float:
    """IoU of the foreground, every class but 0 merged (the GrabCut protocol's object IoU).

    Args:
        confusion: ``(C, C)`` from :func:`confusion_matrix`.
    """
    confusion = _square(confusion)
    hits = confusion[1:, 1:].sum()
    union = confusion.sum() - confusion[0, 0]
    return float(hits / union) if union > 0 else float("nan")


def error_rate(pred, target, *, region=None, ignore_index: int = VOID) -> float:
    """The GrabCut protocol's error rate: misclassified pixels / scored pixels.

    Args:
        pred: ``(B, H, W)`` or ``(H, W)`` int predictions (any value other than the ground
            truth, 255 included, is an error).
        target: ground truth; ``ignore_index`` pixels are not scored.
        region: optional bool mask of the same size restricting the scored pixels, e.g.
            :func:`graphseg.seeds.box_interior` for the box-interior rate.
        ignore_index: void label of the ground truth.

    Returns:
        The rate in [0, 1] pooled over all given pixels, NaN when none is scored.
    """
    pred, target = _pair(pred, target)
    scored = target != ignore_index
    if region is not None:
        region = _checks.as_label_batch(region, "region").to(pred.device)
        _checks.same_size("region", region, "target", target)
        scored &= region.bool()
    total = int(scored.sum())
    if total == 0:
        return float("nan")
    return int(((pred != target) & scored).sum()) / total


class SeedScores(NamedTuple):
    """Quality of a partially labelled seed map against the ground truth."""

    precision: float
    """Correct / labelled pixels (among the scored ones)."""
    recall: float
    """Correct / scored pixels."""
    coverage: float
    """Labelled / scored pixels."""
    class_precision: Tensor
    """``(C,)`` per class: correct / labelled with c (NaN where no pixel is labelled c)."""
    class_recall: Tensor
    """``(C,)`` per class: correct / ground-truth c (NaN where the class is absent)."""


def seed_scores(confusion: Tensor) -> SeedScores:
    """Pseudo-label precision, recall and coverage of a seed map (255 = not labelled).

    Args:
        confusion: ``(C, C + 1)`` from ``confusion_matrix(seeds, target, num_classes=C,
            unlabelled=255)``; the last column counts the unlabelled scored pixels.

    Returns:
        :class:`SeedScores`.
    """
    if not isinstance(confusion, Tensor) or confusion.dim() != 2 \
            or confusion.shape[1] != confusion.shape[0] + 1:
        raise ValueError("confusion must be a (C, C + 1) tensor from confusion_matrix(..., "
                         f"unlabelled=255), got {_checks._describe(confusion)}")
    confusion = confusion.to(torch.float64)
    labelled = confusion[:, :-1]
    hits = labelled.diagonal()
    scored, marked, correct = confusion.sum(), labelled.sum(), hits.sum()
    nan = torch.tensor(torch.nan, dtype=torch.float64)

    def ratio(a, b):
        return torch.where(b > 0, a / b.clamp_min(1), nan)

    return SeedScores(
        precision=float(ratio(correct, marked)),
        recall=float(ratio(correct, scored)),
        coverage=float(ratio(marked, scored)),
        class_precision=ratio(hits, labelled.sum(0)),
        class_recall=ratio(hits, confusion.sum(1)),
    )
