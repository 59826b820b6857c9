"""Seeds from class activation maps (thesis §2, Eq. 2.1–2.7; DESIGN §6 "Seeds").

Channel c of a probability map is class c, channel 0 the background. Every seed map is a
``(B, H, W)`` int64 tensor with 255 = unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks

__all__ = [
    "CAM_SCALES",
    "add_background",
    "check_cam_layout",
    "multiscale_cam",
    "normalize_cam",
    "reliable_seeds",
    "top_fraction",
    "topk_seeds",
]

CAM_SCALES = (0.5, 1.0, 1.5, 2.0)
UNKNOWN = 255
ASPECT_TOLERANCE = 0.15
"""How far (relative, plus one cell) a CAM grid's width may stray from the width the image's
aspect ratio gives its height: CAMs are computed on the image, at some stride."""


def _aspect_fits(rows: int, cols: int, height: int, width: int) -> bool:
    expected = rows * width / height
    return abs(cols - expected) <= 1 + ASPECT_TOLERANCE * expected


def check_cam_layout(cams, height: int, width: int, *, num_classes: int | None = None,
                     name: str = "cams") -> Tensor:
    """Foreground class activation maps ``(C, h, w)`` (channel c-1 = class c, any
    resolution) of an ``height`` x ``width`` image, as a float32 tensor.

    The checks catch maps saved in another layout: C must be ``num_classes - 1`` when given,
    and the ``h`` x ``w`` grid must have the image's aspect ratio (within
    :data:`ASPECT_TOLERANCE`), which a channel-last ``(h, w, C)`` array read as ``(C, h, w)``
    does not; the message then says how to convert it.
    """
    import numpy as np

    if isinstance(cams, np.ndarray):
        cams = torch.from_numpy(np.ascontiguousarray(cams))
    if not isinstance(cams, Tensor) or cams.dim() != 3 or not cams.is_floating_point():
        raise ValueError(f"{name} must be a float (C, h, w) array of foreground class "
                         f"activation maps, got {_checks._describe(cams)}")
    channel_last = (_aspect_fits(cams.shape[0], cams.shape[1], height, width)
                    and (num_classes is None or cams.shape[2] == num_classes - 1))
    hint = (": it looks channel-last (h, w, C); pass np.moveaxis(cams, -1, 0)"
            if channel_last else "")
    if cams.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one foreground map, got shape "
                         f"{tuple(cams.shape)}")
    if num_classes is not None and cams.shape[0] != num_classes - 1:
        raise ValueError(f"{name} must hold num_classes - 1 = {num_classes - 1} foreground maps "
                         f"(channel c-1 = class c), got shape {tuple(cams.shape)}{hint}")
    if not _aspect_fits(cams.shape[1], cams.shape[2], height, width):
        raise ValueError(f"{name} of shape {tuple(cams.shape)} (C, h, w) does not have the "
                         f"aspect ratio of its {height}x{width} (HxW) image{hint}")
    return _checks.check_tensor4d(name, cams[None].float())[0]


def multiscale_cam(
    cam_fn: Callable[[Tensor], Tensor],
    image,
    *,
    scales: Sequence[float] = CAM_SCALES,
    flip: bool = False,
) -> Tensor:
    """Averages a CAM network's maps over rescaled (and optionally mirrored) copies of the image.

    Each copy is resized bilinearly to ``int(H·s) × int(W·s)`` (the PSA/SEAM test-time
    pyramid), its CAM upsampled bilinearly back to ``H × W`` (mirrored back when flipped), and
    the maps averaged (thesis Eq. 2.1–2.7: scales {0.5, 1, 1.5, 2}).

    Args:
        cam_fn: maps a ``(B, 3, h, w)`` image to ``(B, C, h', w')`` activation maps. Apply any
            colour normalisation the network needs inside it.
        image: ``(B, 3, H, W)`` float in [0, 1], or any image form of docs/images.md.
        scales: resize factors.
        flip: also run on the horizontally mirrored copies.

    Returns:
        ``(B, C, H, W)`` mean activation maps (raw: apply :func:`normalize_cam` next).
    """
    image = _checks.as_image_batch(image, "image")
    if not callable(cam_fn):
        raise TypeError(f"cam_fn must be callable, got {type(cam_fn).__name__}")
    if len(scales) == 0:
        raise ValueError("scales must name at least one resize factor, got an empty list")
    for scale in scales:
        _checks.check_positive("scales", scale)
    batch, _, height, width = image.shape
    total, runs = None, 0
    for scale in scales:
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        resized = image if size == (height, width) else F.interpolate(
            image, size=size, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            cam = cam_fn(resized.flip(-1) if mirrored else resized)
            _checks.check_tensor4d("cam_fn(image)", cam, what="(B, C, h, w)")
            if cam.shape[0] != batch:
                raise ValueError(f"cam_fn(image) must keep the batch size {batch}, "
                                 f"got shape {tuple(cam.shape)}")
            if mirrored:
                cam = cam.flip(-1)
            cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)
            total = cam if total is None else total + cam
            runs += 1
    return total / runs


def normalize_cam(cams: Tensor, *, tags: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    r"""Per-class max normalisation: :math:`\hat M_c = \mathrm{ReLU}(M_c) / (\max \mathrm{ReLU}
    (M_c) + \epsilon)` per image (thesis Eq. 2.1–2.7), so each class peaks near 1.

    Args:
        cams: ``(B, C, H, W)`` activation maps.
        tags: optional ``(B, C)`` image-level labels (bool or 0/1): classes absent from an image
            are zeroed.
        eps: keeps an all-zero map at zero.

    Returns:
        ``(B, C, H, W)`` maps in [0, 1).
    """
    _checks.check_tensor4d("cams", cams)
    _checks.check_positive("eps", eps)
    cams = cams.clamp_min(0)
    peak = cams.amax(dim=(2, 3), keepdim=True)
    cams = cams / (peak + eps)
    if tags is not None:
        if not isinstance(tags, Tensor) or tuple(tags.shape) != tuple(cams.shape[:2]):
            raise ValueError(f"tags must be a {tuple(cams.shape[:2])} tensor (one flag per image "
                             f"and CAM channel), got {_checks._describe(tags)}")
        cams = cams * tags.to(cams.dtype).view(*tags.shape, 1, 1)
    return cams


def add_background(cams: Tensor, *, gamma: float = 4.0) -> Tensor:
    r"""Prepends the background score :math:`(1 - \max_c \hat M_c)^\gamma` (thesis Eq. 2.1–2.7;
    γ = 4 as in the thesis, PSA uses α ∈ {4, 16, 24, 32}).

    Args:
        cams: ``(B, C, H, W)`` max-normalised foreground maps in [0, 1] (see
            :func:`normalize_cam`).
        gamma: exponent; larger values shrink the background.

    Returns:
        ``(B, C + 1, H, W)``: channel 0 background, channel c the c-th foreground map.
    """
    _checks.check_tensor4d("cams", cams)
    _checks.check_positive("gamma", gamma)
    if cams.numel() and (float(cams.min()) < 0 or float(cams.max()) > 1 + 1e-4):
        raise ValueError("cams must be max-normalised into [0, 1] (use normalize_cam), got "
                         f"values in [{float(cams.min()):.4g}, {float(cams.max()):.4g}]")
    if cams.shape[1] == 0:
        background = cams.new_ones(cams.shape[0], 1, *cams.shape[2:])
    else:
        background = (1 - cams.amax(dim=1, keepdim=True)).clamp(0, 1).pow(gamma)
    return torch.cat([background, cams], dim=1)


def _check_probs(probs: Tensor, name: str = "probs") -> Tensor:
    _checks.check_tensor4d(name, probs, what="(B, C, H, W)")
    if probs.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class channel, "
                         f"got shape {tuple(probs.shape)}")
    return probs


def _check_fraction(name: str, value: float) -> None:
    _checks.check_positive(name, value)
    if value > 1:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")


def top_fraction(scores: Tensor, labels: Tensor, fraction: float, *, min_score: float = 0.0,
                 classes: Sequence[int] | None = None) -> Tensor:
    """Marks, per image and class, the most confident ``fraction`` of the pixels of that class.

    Among the n pixels of class c whose score exceeds ``min_score``, sorted ascending, the cut is
    the score at rank ⌊n·(1 − fraction)⌋ and the pixels strictly above it are kept (the A²GNN
    code's rule: ``fraction = 0.4`` keeps the top 40%). A class with ⌊n·(1 − fraction)⌋ < 1
    keeps nothing.

    Args:
        scores: ``(B, H, W)`` confidence of each pixel's label.
        labels: ``(B, H, W)`` int64 labels (255 = none).
        fraction: share of each class to keep, in (0, 1].
        min_score: pixels at or below it never count.
        classes: the classes to consider (default: every label present but 255).

    Returns:
        ``(B, H, W)`` bool.
    """
    _check_fraction("fraction", fraction)
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(labels.shape[0]):
        present = labels[b].unique().tolist() if classes is None else classes
        for cls in present:
            if cls == UNKNOWN:
                continue
            member = (labels[b] == cls) & (scores[b] > min_score)
            values = scores[b][member]
            rank = int(values.numel() * (1 - fraction))
            if rank < 1:
                continue
            cut = values.kthvalue(rank + 1).values
            keep[b] |= member & (scores[b] > cut)
    return keep


def reliable_seeds(
    probs: Tensor,
    *,
    crf_labels: Tensor | None = None,
    alpha: float | None = None,
    fraction: float = 0.4,
    quantile: float | None = None,
) -> Tensor:
    """RRM's reliable regions: each class's most confident pixels, kept where the CAM and CRF
    labels agree (thesis §2.3.1 and Eq. 2.1–2.7).

    Per image, the pixels of each argmax class c (the background included) are ranked by their
    confidence and the top ``fraction`` of them is kept (thesis §2.3.1: "α is chosen with 40%
    pixels selected as labeled pixels for each class"): with n pixels of class c, the
    k = ⌊fraction·n + ½⌋ most confident ones, i.e. those whose confidence is at least the
    k-th largest (pixels tied with it are kept too, so only ties give more than k). A class
    with k = 0 keeps nothing. With ``crf_labels`` the pixels whose CRF label differs from the
    argmax are dropped.

    The RRM code (zbf1991/RRM, ``tool/myTool.py``, ``compute_seg_label``) cuts a foreground
    class at the score of rank ⌊0.6·n⌋ among its scores above 0.1, keeping those strictly
    above (one pixel fewer than 40%), and keeps the background above a fixed 0.8; that rule
    is :func:`topk_seeds` (``min_score=0.1``).

    Args:
        probs: ``(B, C, H, W)`` class scores (channel 0 background), e.g. from
            :func:`add_background`.
        crf_labels: optional ``(B, H, W)`` labels of a CRF run on the same scores.
        alpha: a fixed confidence threshold (kept: confidence > alpha) instead of the
            per-class share.
        fraction: the share of each class's pixels kept, in (0, 1] (0.4, thesis §2.3.1).
        quantile: the older form of the per-class cut: kept are the pixels whose confidence
            exceeds the ``quantile`` of their class's confidences (in [0, 1); 0.6 keeps about
            the top 40%). Given with ``alpha``, it is refused.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    probs = _check_probs(probs)
    confidence, labels = probs.max(dim=1)
    if alpha is not None and quantile is not None:
        raise ValueError(f"give either alpha (a fixed threshold) or quantile (a per-class cut), "
                         f"got alpha={alpha!r} and quantile={quantile!r}")
    keep = torch.zeros_like(labels, dtype=torch.bool)
    if alpha is not None:
        _checks.check_positive("alpha", alpha, allow_zero=True)
        keep = confidence > alpha
    elif quantile is not None:
        _checks.check_positive("quantile", quantile, allow_zero=True)
        if quantile >= 1:
            raise ValueError(f"quantile must lie in [0, 1), got {quantile!r}")
        for b in range(labels.shape[0]):
            for cls in labels[b].unique().tolist():
                member = labels[b] == cls
                cut = torch.quantile(confidence[b][member].double(), quantile)
                keep[b] |= member & (confidence[b] > cut.to(confidence.dtype))
    else:
        _check_fraction("fraction", fraction)
        for b in range(labels.shape[0]):
            for cls in labels[b].unique().tolist():
                member = labels[b] == cls
                values = confidence[b][member]
                count = math.floor(fraction * values.numel() + 0.5)
                if count < 1:
                    continue
                cut = values.topk(count).values[-1]
                keep[b] |= member & (confidence[b] >= cut)
    if crf_labels is not None:
        crf_labels = _checks.as_label_batch(crf_labels, "crf_labels")
        _checks.same_size("crf_labels", crf_labels, "probs without its class dimension", labels)
        keep &= crf_labels.to(labels.device) == labels
    return torch.where(keep, labels, torch.full_like(labels, UNKNOWN))


def topk_seeds(
    probs: Tensor,
    *,
    fraction: float = 0.4,
    background_threshold: float | None = 0.8,
    min_score: float = 0.01,
) -> Tensor:
    """The A²GNN code's confident CAM labels M'_I: per image and class, the top 40% of the
    class's argmax pixels (a dynamic, per-class threshold), and background where its score
    exceeds 0.8 (DESIGN §6 "CAM utilities"; thesis Eq. 2.1–2.7 and §3.6.1).

    Args:
        probs: ``(B, C, H, W)`` scores with channel 0 the background (see
            :func:`add_background`).
        fraction: share of each foreground class's argmax pixels kept (see
            :func:`top_fraction` for the exact cut).
        background_threshold: background seeds where the background wins the argmax with a score
            above it; None treats the background like a foreground class (top share).
        min_score: foreground scores at or below it are never seeds.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    probs = _check_probs(probs)
    scores, labels = probs.max(dim=1)
    first = 0 if background_threshold is None else 1
    keep = top_fraction(scores, labels, fraction, min_score=min_score,
                        classes=range(first, probs.shape[1]))
    if background_threshold is not None:
        _checks.check_positive("background_threshold", background_threshold, allow_zero=True)
        keep |= (labels == 0) & (scores > background_threshold)
    return torch.where(keep, labels, torch.full_like(labels, UNKNOWN))
