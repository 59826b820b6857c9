"""A²GNN's box losses: the multi-point (MP) loss (thesis Eq. 3.23–3.26) and consistency
checking (Eq. 3.27–3.28)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg._checks import VARIANTS
from graphseg.losses._common import IGNORE, _check_logits_seeds

__all__ = ["consistency_check", "mp_loss", "mp_pixels"]

OFFICIAL_EPS = 1e-5
"""The constant the official code adds to each 1 − cos term of the MP loss."""


def _check_boxes_for(logits: Tensor, features: Tensor | None, boxes) -> list:
    if not isinstance(logits, Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        raise TypeError("logits must be a float (B, C, H, W) tensor (boxes need the pixel "
                        f"layout), got {_checks._describe(logits)}")
    if features is not None:
        _checks.check_tensor4d("features", features)
        _checks.same_batch("features", features, "logits", logits)
    batch, classes, height, width = logits.shape
    return _checks.check_boxes(boxes, batch, height, width, num_classes=classes)


def _box_pixels(probs: Tensor, cls: int, x0: int, y0: int, x1: int, y1: int, *,
                unique: bool = True) -> Tensor:
    """Flat indices y·W + x of the MP pixels of one box: per row and per column, the pixel
    with the highest O^c (duplicates removed, or kept: rows first, then columns)."""
    width = probs.shape[-1]
    region = probs[cls, y0 : y1 + 1, x0 : x1 + 1]
    rows = torch.arange(y0, y1 + 1, device=probs.device)
    cols = torch.arange(x0, x1 + 1, device=probs.device)
    by_row = rows * width + x0 + region.argmax(1)
    by_col = (y0 + region.argmax(0)) * width + cols
    both = torch.cat([by_row, by_col])
    return torch.unique(both) if unique else both


def mp_pixels(logits: Tensor, boxes) -> list[list[Tensor]]:
    """The pixels that the MP loss and consistency checking use (thesis Eq. 3.23–3.24).

    For each box of class c, in every row and every column inside the box, the pixel with the
    highest O^c = softmax(logits)_c (the first one on ties).

    Args:
        logits: ``(B, C, H, W)`` class logits.
        boxes: one list of ``{"cls": c, "box": [x0, y0, x1, y1]}`` per image (inclusive bounds,
            in the coordinates of ``logits``).

    Returns:
        Per image, per box, a 1-D int64 tensor of flat pixel indices y·W + x.
    """
    checked = _check_boxes_for(logits, None, boxes)
    return _mp_pixels(logits, checked)


def _mp_pixels(logits: Tensor, checked, variant: str = "paper") -> list[list[Tensor]]:
    """The MP pixels of every box; the official code takes the maxima of the class logit
    (not of O^c) and keeps duplicates."""
    official = variant == "official"
    scores = logits.detach() if official else logits.detach().softmax(1)
    return [[_box_pixels(scores[b], *box, unique=not official) for box in image_boxes]
            for b, image_boxes in enumerate(checked)]


def mp_loss(logits: Tensor, features: Tensor, boxes, *, variant: str = "paper") -> Tensor:
    r"""The maximum-prediction (MP) loss of box supervision (thesis Eq. 3.23–3.26).

    With M the MP pixels of :func:`mp_pixels` (M_b those of box b, of class c_b):

    .. math::
        L_{mp} = -\frac{1}{|M|} \sum_b \sum_{i \in M_b} \log O_{i, c_b}
            + \frac{1}{|\Pi|} \sum_b \sum_{\{i, j\} \subset M_b} \big(1 - \cos(H_i, H_j)\big)

    where Π is the set of unordered pairs of distinct MP pixels within the same box and H the
    features before the output layer. Boxes of one pixel contribute no pair.

    ``variant="official"`` follows zbf1991/A2GNN
    ``mytool.box_mp_loss_with_consistency_checking``: M_b is the list of the row maxima
    followed by the column maxima of the class logit (not of O^c), a pixel that is both counted
    twice; the similarity term averages :math:`1 - \cos(H_i, H_j) + 10^{-5}` over all
    :math:`|M_b|^2` ordered pairs of each box, the diagonal included, then over the boxes'
    pairs together.

    Args:
        logits: ``(B, C, H, W)`` class logits.
        features: ``(B, F, H, W)`` features H^{L+1} before the output layer.
        boxes: one list of box dicts per image, in the coordinates of ``logits``.
        variant: ``"paper"`` (default, the equations) or ``"official"``.

    Returns:
        Scalar loss (0 without boxes).
    """
    checked = _check_boxes_for(logits, features, boxes)
    _checks.check_choice("variant", variant, VARIANTS)
    official = variant == "official"
    log_probs = logits.log_softmax(1).flatten(2)
    flat = features.flatten(2)
    picked, similarity = [], []
    for b, image_pixels in enumerate(_mp_pixels(logits, checked, variant)):
        for (cls, *_), pixels in zip(checked[b], image_pixels, strict=True):
            picked.append(-log_probs[b, cls, pixels])
            unit = F.normalize(flat[b][:, pixels].t(), dim=1)
            if official:
                similarity.append((1 - unit @ unit.t() + OFFICIAL_EPS).flatten())
                continue
            first, second = torch.triu_indices(len(pixels), len(pixels), 1,
                                               device=pixels.device)
            similarity.append(1 - (unit[first] * unit[second]).sum(1))
    if not picked:
        return logits.sum() * 0
    pairs = torch.cat(similarity)
    return torch.cat(picked).mean() + (pairs.mean() if pairs.numel() else 0)


def consistency_check(seeds: Tensor, logits: Tensor, features: Tensor, boxes, *,
                      variant: str = "paper") -> Tensor:
    r"""Consistency checking of box seeds (thesis Eq. 3.27–3.28).

    For each box b of class c, the prototype is the mean feature of its MP pixels
    (:func:`mp_pixels`), :math:`\bar H_b = \frac{1}{|M_b|} \sum_{i \in M_b} H_i`; a seed of class c
    inside the box becomes unknown (255) when :math:`\cos(H_i, \bar H_b) < 0`. This follows the
    official code and the text; Eq. 3.28 as printed keeps "d > 0" the other way round. Seeds of
    other classes inside the box, e.g. of an overlapping box, are kept. Apply it every epoch to
    the pruned map for the accumulation of the official code.

    Args:
        seeds: ``(B, H, W)`` int64 seeds, 255 = unknown.
        logits: ``(B, C, H, W)`` class logits (selects the MP pixels).
        features: ``(B, F, H, W)`` features H before the output layer.
        boxes: one list of box dicts per image.
        variant: ``"paper"`` (default) or ``"official"``, whose prototype averages the MP
            list with a pixel that is both a row and a column maximum counted twice, as in
            :func:`mp_loss`.

    Returns:
        ``(B, H, W)`` int64 pruned seeds (a new tensor).
    """
    checked = _check_boxes_for(logits, features, boxes)
    _check_logits_seeds(logits, seeds)
    _checks.check_choice("variant", variant, VARIANTS)
    pruned = seeds.clone().long()
    features = features.detach()
    for b, image_pixels in enumerate(_mp_pixels(logits, checked, variant)):
        for (cls, x0, y0, x1, y1), pixels in zip(checked[b], image_pixels, strict=True):
            proto = features[b].flatten(1)[:, pixels].mean(1)
            inside = features[b, :, y0 : y1 + 1, x0 : x1 + 1]
            cos = F.cosine_similarity(inside, proto.view(-1, 1, 1), dim=0, eps=1e-12)
            box = pruned[b, y0 : y1 + 1, x0 : x1 + 1]
            box[(box == cls) & (cos < 0)] = IGNORE
    return pruned
