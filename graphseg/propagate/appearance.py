"""Colour models of the seeded classes: a per-image appearance term for propagation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks

__all__ = ["colour_posterior", "fuse_appearance"]

HISTOGRAM_MAX_CELLS = 2**28  # 2 GiB of int64 counts


def colour_posterior(image, seeds, *, num_classes: int | None = None, bins: int = 16,
                     floor: float = 1e-3) -> Tensor:
    r"""Per-pixel class posterior of colour histograms fitted to each class's seed pixels.

    For each image and class :math:`k`, a joint RGB histogram :math:`h_k` of ``bins``³ cells is
    counted over the pixels seeded :math:`k`, smoothed by a 3×3×3 box filter and mixed with a
    uniform floor (``floor`` of the mass spread over all cells, so colours never seen keep a
    small likelihood); then

    .. math:: P(k \mid I_p) = h_k(I_p) \big/ \textstyle\sum_j h_j(I_p)

    with equal class priors. This is the colour data term of GrabCut-style segmentation with
    histograms in place of Gaussian mixtures (Boykov & Jolly, ICCV 2001) and the "prior model"
    that Grady adds to the random walker (CVPR 2005).

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] (or any image form of docs/images.md).
        seeds: ``(B, H, W)`` / ``(H, W)`` int64 class ids, 255 = unknown.
        num_classes: class count (default: largest seed + 1). A class with no seed pixels in an
            image gets a uniform histogram there.
        bins: histogram cells per channel (at least 3, the width of the smoothing filter).
        floor: weight of the uniform component, in [0, 1).

    Returns:
        ``(B, C, H, W)`` posteriors summing to 1 over the classes.
    """
    image = _checks.as_image_batch(image, "image", channels=3)
    seeds = _checks.as_label_batch(seeds, "seeds").to(image.device)
    _checks.same_size("image", image[:, 0], "seeds", seeds)
    if num_classes is not None:
        _checks.check_positive("num_classes", num_classes, integer=True)
    _checks.check_seed_values("seeds", seeds, num_classes)
    _checks.check_positive("bins", bins, integer=True)
    if bins < 3:
        raise ValueError(f"bins must be >= 3 (the histograms are smoothed by a 3x3x3 box "
                         f"filter), got {bins}")
    if not isinstance(floor, (int, float)) or isinstance(floor, bool) or not 0 <= floor < 1:
        raise ValueError(f"floor must be a number in [0, 1), got {floor!r}")
    known = seeds[seeds != 255]
    if num_classes is None:
        num_classes = int(known.max()) + 1 if known.numel() else 1
    batch = image.shape[0]
    cells = bins**3
    if batch * (num_classes + 1) * cells > HISTOGRAM_MAX_CELLS:
        raise ValueError(
            f"colour_posterior would count {batch} x {num_classes + 1} x {bins}^3 histogram "
            f"cells (images x (num_classes + 1) x bins^3), above HISTOGRAM_MAX_CELLS="
            f"{HISTOGRAM_MAX_CELLS}: lower bins, or num_classes (default: the largest seed + 1)")
    level = (image.clamp(0, 1) * (bins - 1)).round().to(torch.int64)
    cell = (level[:, 0] * bins + level[:, 1]) * bins + level[:, 2]  # (B, H, W)
    # one bincount over (image, class, cell); unknown pixels land in a dropped extra class
    cls = torch.where(seeds == 255, num_classes, seeds)
    key = (torch.arange(batch, device=image.device).view(-1, 1, 1) * (num_classes + 1)
           + cls) * cells + cell
    counts = torch.bincount(key.reshape(-1), minlength=batch * (num_classes + 1) * cells)
    counts = counts.view(batch * (num_classes + 1), 1, bins, bins, bins).to(image.dtype)
    counts = F.avg_pool3d(counts, 3, stride=1, padding=1, count_include_pad=False)
    counts = counts.view(batch, num_classes + 1, cells)[:, :num_classes]
    mass = counts.sum(2, keepdim=True)
    histogram = torch.where(mass > 0, counts / mass.clamp_min(1e-12), 1.0 / cells)
    histogram = (1 - floor) * histogram + floor / cells
    likelihood = histogram.gather(2, cell.view(batch, 1, -1).expand(-1, num_classes, -1))
    posterior = likelihood / likelihood.sum(1, keepdim=True)
    return posterior.view(batch, num_classes, *image.shape[2:])


def fuse_appearance(probs: Tensor, posterior: Tensor, *, weight: float,
                    clip: float = 1e-6) -> Tensor:
    r"""Product of experts :math:`Q \propto P \cdot A^{w}` of propagated probabilities
    :math:`P` and an appearance posterior :math:`A` (e.g. :func:`colour_posterior`).

    Args:
        probs, posterior: ``(B, C, H, W)`` probabilities.
        weight: the exponent :math:`w \ge 0` of the appearance term (0 returns ``probs``
            renormalised).
        clip: both are clipped below at this value before the logarithm.

    Returns:
        ``(B, C, H, W)`` probabilities.
    """
    _checks.check_tensor4d("probs", probs)
    _checks.check_tensor4d("posterior", posterior)
    if probs.shape != posterior.shape:
        raise ValueError(f"probs and posterior must have the same shape, got "
                         f"{tuple(probs.shape)} and {tuple(posterior.shape)}")
    _checks.check_positive("weight", weight, allow_zero=True)
    _checks.check_positive("clip", clip)
    logits = probs.clamp_min(clip).log() + weight * posterior.clamp_min(clip).log()
    return torch.softmax(logits, 1)
