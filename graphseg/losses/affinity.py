"""The affinity CNN's losses (thesis §3.3.3): L_Ac (Eq. 3.10), L_Ar (Eq. 3.12) and their sum
(Eq. 3.9), in the window layout ``(B, K, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg._checks import VARIANTS
from graphseg.graph.window import pixel_graph
from graphseg.losses._common import LOG_EPS, _l1_over_d, _masked_mean
from graphseg.seeds.pairs import PairLabels

__all__ = ["affinity_contrast_loss", "affinity_loss", "affinity_regular_loss"]


def _check_pairs(features: Tensor, pairs) -> None:
    _checks.check_tensor4d("features", features)
    if not isinstance(pairs, PairLabels):
        raise TypeError("pairs must be the PairLabels of graphseg.seeds.pair_labels, got "
                        f"{type(pairs).__name__}")
    batch, _, height, width = features.shape
    expected = (batch, pairs.offsets.shape[0], height, width)
    if tuple(pairs.background.shape) != expected:
        raise ValueError(f"pairs must be (B, K, H, W) = {expected} to match features of shape "
                         f"{tuple(features.shape)} and its {pairs.offsets.shape[0]} offsets, got "
                         f"{tuple(pairs.background.shape)}")


def affinity_contrast_loss(features: Tensor, pairs: PairLabels, *,
                           variant: str = "official") -> Tensor:
    r"""L_Ac, the affinity cross-entropy on labelled window pairs (thesis Eq. 3.10).

    With :math:`D_{ij} = \exp(-\|F_i - F_j\|_1 / d)` (Eq. 3.14) and the pair sets of
    :func:`graphseg.seeds.pair_labels` (P⁺ = positives, split into background P⁺_bg and
    foreground P⁺_fg; P⁻ = negatives):

    .. math::
        \text{paper:}\quad L_{Ac} = \frac{1}{|P^+|}\sum_{P^+} -\log D_{ij}
            + \frac{1}{|P^-|}\sum_{P^-} -\log(1 - D_{ij})

        \text{official:}\quad L_{Ac} = \tfrac14 \overline{-\log(D + \epsilon)}_{P^+_{bg}}
            + \tfrac14 \overline{-\log(D + \epsilon)}_{P^+_{fg}}
            + \tfrac12 \overline{-\log(1 + \epsilon - D)}_{P^-}, \quad \epsilon = 10^{-5}

    For the paper variant, −log D is computed exactly as the distance itself, and 1 − D is
    floored at 1e-5 so identical features on a negative pair give a finite loss. An empty set
    contributes 0.

    Args:
        features: ``(B, d, H, W)`` affinity features F_A.
        pairs: :class:`graphseg.seeds.PairLabels` at the resolution of ``features``.
        variant: ``"paper"`` or ``"official"`` (default: the official code's weighting, which
            keeps background pairs, far more numerous, from dominating).

    Returns:
        Scalar loss.

    Shapes:
        features ``(B, d, H, W)``, pairs ``(B, K, H, W)`` → ``()``.
    """
    _check_pairs(features, pairs)
    _checks.check_choice("variant", variant, VARIANTS)
    distance = _l1_over_d(features, pairs.offsets)
    if variant == "paper":
        negative_log = -torch.log((-torch.expm1(-distance)).clamp_min(LOG_EPS))
        return (_masked_mean(distance, pairs.positive)
                + _masked_mean(negative_log, pairs.negative))
    affinity = torch.exp(-distance)
    positive_log = -torch.log(affinity + LOG_EPS)
    negative_log = -torch.log(1 + LOG_EPS - affinity)
    return (_masked_mean(positive_log, pairs.background) / 4
            + _masked_mean(positive_log, pairs.foreground) / 4
            + _masked_mean(negative_log, pairs.negative) / 2)


def affinity_regular_loss(features: Tensor, image, offsets: Tensor, *,
                          variant: str = "official", sigma_xy: float = 6.0,
                          sigma_rgb: float = 0.1, normalize: str | None = "imagenet") -> Tensor:
    r"""L_Ar, the colour-and-position regulariser of the affinity features (thesis Eq. 3.12).

    .. math::
        \text{paper:}\quad L_{Ar} = \sum_i \sum_{j \in W(i)} G(i, j)\, \frac{\|F_i - F_j\|_1}{d}
        \qquad\quad \text{official:}\quad L_{Ar} / \textstyle\sum \mathrm{mask}

    with G the Gaussian kernel of :func:`graphseg.pixel_graph` (squared norms, DESIGN §3) on the
    image at the feature resolution, W(i) the window of ``offsets`` and Σ mask the number of
    in-image window pairs.

    Args:
        features: ``(B, d, H, W)`` affinity features F_A.
        image: ``(B, 3, H', W')`` image in [0, 1]; resized (bilinear) to H × W when its size
            differs.
        offsets: ``(K, 2)`` window offsets (e.g. ``pairs.offsets``).
        variant: ``"paper"`` (unnormalised sum) or ``"official"`` (mean over window pairs;
            the default, because the paper's sum makes λ = 3 depend on the image size).
        sigma_xy: position bandwidth in feature-grid pixels (6).
        sigma_rgb: colour bandwidth in the units of the normalised image (0.1).
        normalize: colour normalisation of ``image`` (``"imagenet"``, the units of σ_rgb).

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("features", features)
    _checks.check_choice("variant", variant, VARIANTS)
    offsets = _checks.check_offsets(offsets)
    image = _checks.as_image_batch(image, "image")
    batch, _, height, width = features.shape
    if image.shape[0] != batch:
        raise ValueError(f"image must have the batch size of features ({batch}), got shape "
                         f"{tuple(image.shape)}")
    if image.shape[2:] != features.shape[2:]:
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    kernel = pixel_graph(image.to(features.device, features.dtype), offsets=offsets,
                         sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, normalize=normalize)
    total = (kernel.weight * _l1_over_d(features, offsets)).sum()
    if variant == "paper":
        return total
    return total / max(batch * int(kernel._mask().sum()), 1)


def affinity_loss(features: Tensor, pairs: PairLabels, *, image, variant: str = "official",
                  lam: float = 3.0, sigma_xy: float = 6.0, sigma_rgb: float = 0.1,
                  normalize: str | None = "imagenet") -> Tensor:
    r"""The affinity CNN's loss :math:`L_A = L_{Ac} + \lambda L_{Ar}` (thesis Eq. 3.9, λ = 3).

    See :func:`affinity_contrast_loss` and :func:`affinity_regular_loss` for the two terms and
    their ``"paper"`` / ``"official"`` variants; both use ``pairs.offsets`` as the window.

    Args:
        features: ``(B, d, H, W)`` affinity features F_A.
        pairs: pair labels at the resolution of ``features``.
        image: ``(B, 3, H', W')`` image in [0, 1] for L_Ar's kernel.
        variant: ``"paper"`` or ``"official"`` (default).
        lam: λ.
        sigma_xy, sigma_rgb, normalize: L_Ar's kernel.

    Returns:
        Scalar loss.
    """
    _checks.check_positive("lam", lam, allow_zero=True)
    contrast = affinity_contrast_loss(features, pairs, variant=variant)
    if lam == 0:
        return contrast
    return contrast + lam * affinity_regular_loss(
        features, image, pairs.offsets, variant=variant, sigma_xy=sigma_xy,
        sigma_rgb=sigma_rgb, normalize=normalize)
