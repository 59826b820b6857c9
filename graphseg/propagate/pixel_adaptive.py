"""Pixel-adaptive refinement (PAR) of AFA and ToCo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import PAR_DILATIONS, window_offsets
from graphseg.ops.window_ops import affinity_unchecked, aggregate_unchecked

__all__ = ["par", "par_affinity"]


def _position_logits(offsets: Tensor, w1: float, dtype: torch.dtype) -> Tensor:
    distance = offsets.to(dtype).norm(dim=1)  # d for axial, √2·d for diagonal neighbours
    return -(distance / distance.std() / w1).square()


def par_affinity(image: Tensor, *, dilations: Sequence[int] = PAR_DILATIONS, w1: float = 0.3,
                 w2: float = 0.01) -> Tensor:
    r"""PAR's affinity of each pixel to its ring neighbours, ``(B, K, H, W)``.

    .. math::
        \kappa_{ij} = -\frac{1}{C}\sum_c \Big(\frac{|I_{i,c} - I_{j,c}|}{(\sigma_{i,c} + 10^{-8})
        \, w_1}\Big)^2, \qquad
        \kappa^p_{ij} = -\Big(\frac{p_{ij}}{\sigma_p\, w_1}\Big)^2, \qquad
        a_{ij} = \mathrm{softmax}_j(\kappa_{ij}) + w_2\, \mathrm{softmax}_j(\kappa^p_{ij})

    with :math:`\sigma_{i,c}` the unbiased standard deviation of the neighbours' colours and
    :math:`p_{ij}` = d (axial) or √2·d (diagonal). Neighbours outside the image repeat the border
    pixel (``replicate`` padding, as AFA does), not the ``drop`` rule.
    """
    image = _checks.as_image_batch(image, "image")
    _checks.check_positive("w1", w1)
    _checks.check_positive("w2", w2, allow_zero=True)
    offsets = window_offsets(shape="rings", dilations=dilations)
    pad = max(dilations)
    batch, channels, height, width = image.shape
    padded = F.pad(image, (pad,) * 4, mode="replicate")
    count = offsets.shape[0]
    ones = padded.new_ones(batch, count, *padded.shape[2:])
    # The variance is taken of the differences to the centre pixel, d = I_j - I_i (the same
    # variance): one-pass sums of raw colours cancel catastrophically in float32.
    difference = aggregate_unchecked(ones, padded, offsets) - count * padded
    logits = padded.new_zeros(batch, count, *padded.shape[2:])
    for c in range(channels):
        squared = affinity_unchecked(padded[:, c : c + 1], offsets, "l2")
        variance = (squared.sum(1, keepdim=True)
                    - difference[:, c : c + 1].square() / count) / (count - 1)
        std = variance.clamp_min(0).sqrt()
        logits = logits - squared / ((std + 1e-8) * w1).square()
    logits = (logits / channels)[:, :, pad : pad + height, pad : pad + width]
    position = torch.softmax(_position_logits(offsets, w1, image.dtype), 0).to(image.device)
    return torch.softmax(logits, 1) + w2 * position.view(1, -1, 1, 1)


def par(
    image,
    masks: Tensor,
    *,
    dilations: Sequence[int] = PAR_DILATIONS,
    num_iter: int = 10,
    w1: float = 0.3,
    w2: float = 0.01,
) -> Tensor:
    r"""Refines masks with PAR: ``num_iter`` times :math:`m_i \leftarrow \sum_j a_{ij} m_j` over
    the ring neighbours (see :func:`par_affinity`).

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] (or any image form of docs/images.md).
        masks: ``(B, C, h, w)`` non-negative scores; upsampled bilinearly
            (``align_corners=True``) to the image size when smaller, as AFA does.
        dilations: ring distances (AFA/ToCo: 1, 2, 4, 8, 12, 24).
        num_iter: iterations (10).
        w1, w2: the colour temperature and the weight of the position term (0.3, 0.01).

    Returns:
        ``(B, C, H, W)`` refined masks.

    References:
        L. Ru, Y. Zhan, B. Yu, B. Du, "Learning Affinity from Attention: End-to-End Weakly-
        Supervised Semantic Segmentation with Transformers", CVPR 2022 (AFA).
    """
    image = _checks.as_image_batch(image, "image")
    _checks.check_tensor4d("masks", masks)
    if masks.numel() and float(masks.min()) < 0:
        raise ValueError(f"masks must be non-negative scores (CAMs after ReLU, or "
                         f"probabilities), got a value of {float(masks.min()):.4g}")
    if masks.shape[0] != image.shape[0]:
        raise ValueError(f"masks has batch size {masks.shape[0]} but image has {image.shape[0]}")
    _checks.check_positive("num_iter", num_iter, integer=True, allow_zero=True)
    if masks.device != image.device:
        raise ValueError(f"masks and image must be on the same device, got {masks.device} and "
                         f"{image.device}")
    offsets = window_offsets(shape="rings", dilations=dilations)
    height, width = image.shape[2:]
    if masks.shape[2:] != image.shape[2:]:
        masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=True)
    image = image.to(masks.dtype)
    affinity = par_affinity(image, dilations=dilations, w1=w1, w2=w2)
    pad = max(dilations)
    weight = F.pad(affinity, (pad,) * 4)
    for _ in range(num_iter):
        padded = F.pad(masks, (pad,) * 4, mode="replicate")
        masks = aggregate_unchecked(weight, padded, offsets)[:, :, pad : pad + height,
                                                             pad : pad + width]
    return masks

