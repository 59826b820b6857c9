"""A²GNN's box losses: the multi-point (MP) loss (thesis Eq. 3.23–3.26) and consistency
checking (Eq. 3.27–3.28)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.losses._common import IGNORE, _check_logits_seeds

__all__ = ["consistency_check", "mp_loss", "mp_pixels"]


def _check_boxes_for(logits: Tensor, features: Tensor | None, boxes) -> list:
    if not isinstance(logits, Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        raise TypeError("logits must be a float (B, C, H, W) tensor (boxes need the pixel "
                        f"layout), got {_checks._describe(logits)}")
    if features is not None:
        _checks.check_tensor4d("features", features)
        _checks.same_batch("features", features, "logits", logits)
    batch, classes, height, width = logits.shape
    return _checks.check_boxes(boxes, batch, height, width, num_classes=classes)


def _box_pixels(probs: Tensor, cls: int, x0: int, y0: int, x1: int, y1: int) -> Tensor:
    """Flat indices y·W + x of the MP pixels of one box: per row and per column, the pixel
    with the highest O^c (duplicates removed)."""
    width = probs.shape[-1]
    region = probs[cls, y0 : y1 + 1, x0 : x1 + 1]
    rows = torch.arange(y0, y1 + 1, device=probs.device)
    cols = torch.arange(x0, x1 + 1, device=probs.device)
    by_row = rows * width + x0 + region.argmax(1)
    by_col = (y0 + region.argmax(0)) * width + cols
    return torch.unique(torch.cat([by_row, by_col]))


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


def _mp_pixels(logits: Tensor, checked) -> list[list[Tensor]]:
    probs = logits.detach().softmax(1)
    return [[_box_pixels(probs[b], *box) for box in image_boxes]
            for b, image_boxes in enumerate(checked)]


def mp_loss(logits: Tensor, features: Tensor, boxes) -> Tensor:
    r"""The maximum-prediction (MP) loss of box supervision (thesis Eq. 3.23–3.26).

    With M the MP pixels of :func:`mp_pixels` (M_b those of box b, of class c_b):

    .. math::
        L_{mp} = -\frac{1}{|M|} \sum_b \sum_{i \in M_b} \log O_{i, c_b}
            + \frac{1}{|\Pi|} \sum_b \sum_{\{i, j\} \subset M_b} \big(1 - \cos(H_i, H_j)\big)

    where Π is the set of unordered pairs of distinct MP pixels within the same box and H the
    features before the output layer. Boxes of one pixel contribute no pair.

    Args:
        logits: ``(B, C, H, W)`` class logits.
        features: ``(B, F, H, W)`` features H^{L+1} before the output layer.
        boxes: one list of box dicts per image, in the coordinates of ``logits``.

    Returns:
        Scalar loss (0 without boxes).
    """
    checked = _check_boxes_for(logits, features, boxes)
    log_probs = logits.log_softmax(1).flatten(2)
    flat = features.flatten(2)
    picked, similarity = [], []
    for b, image_pixels in enumerate(_mp_pixels(logits, checked)):
        for (cls, *_), pixels in zip(checked[b], image_pixels, strict=True):
            picked.append(-log_probs[b, cls, pixels])
            unit = F.normalize(flat[b][:, pixels].t(), dim=1)
            first, second = torch.triu_indices(len(pixels), len(pixels), 1,
                                               device=pixels.device)
            similarity.append(1 - (unit[first] * unit[second]).sum(1))
    if not picked:
        return logits.sum() * 0
    pairs = torch.cat(similarity)
    return torch.cat(picked).mean() + (pairs.mean() if pairs.numel() else 0)


def consistency_check(seeds: Tensor, logits: Tensor, features: Tensor, boxes) -> Tensor:
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

    Returns:
        ``(B, H, W)`` int64 pruned seeds (a new tensor).
    """
    checked = _check_boxes_for(logits, features, boxes)
    _check_logits_seeds(logits, seeds)
    pruned = seeds.clone().long()
    features = features.detach()
    for b, image_pixels in enumerate(_mp_pixels(logits, checked)):
        for (cls, x0, y0, x1, y1), pixels in zip(checked[b], image_pixels, strict=True):
            proto = features[b].flatten(1)[:, pixels].mean(1)
            inside = features[b, :, y0 : y1 + 1, x0 : x1 + 1]
            cos = F.cosine_similarity(inside, proto.view(-1, 1, 1), dim=0, eps=1e-12)
            box = pruned[b, y0 : y1 + 1, x0 : x1 + 1]
            box[(box == cls) & (cos < 0)] = IGNORE
    return pruned
