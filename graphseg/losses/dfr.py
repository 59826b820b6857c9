r"""DFR's dynamic feature regularised loss and the losses of its feature-consistency head
(L_fd, L_fr), with its total objective (thesis Eq. 4.1–4.13, DESIGN §6 "DFR").

References:
    Zhang, Xiao, Zhao, "Dynamic Feature Regularized Loss for Weakly Supervised Semantic
    Segmentation", arXiv:2108.01296; Pattern Recognition 164 (2025) 111540,
    doi:10.1016/j.patcog.2025.111540.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import WindowGraph, pixel_graph
from graphseg.losses._common import (
    IGNORE,
    LOG_EPS,
    _check_ignore_index,
    _check_seeds_for,
    _l1_over_d,
    _masked_mean,
)
from graphseg.losses.pairwise import potts_loss
from graphseg.losses.seed import partial_cross_entropy
from graphseg.ops.window_ops import affinity_unchecked
from graphseg.seeds.pairs import pair_labels

__all__ = ["HEAD_LABELS", "PAIR_SETS", "DFRLoss", "DFRObjective", "FeatureDistanceLoss",
           "FeatureRegularLoss", "dfr_kernel", "dfr_loss", "dfr_objective",
           "dfr_pseudo_labels", "feature_distance_loss", "feature_regular_loss"]

PAIR_SETS = ("labelled", "all")
HEAD_LABELS = ("confident", "merged")
# DFR hyperparameters (thesis §4.3, DESIGN §6 "DFR")
DFR_RADIUS = 5
DFR_SHAPE = "square"
DFR_SIGMA_XY = 6.0
DFR_SIGMA_RGB = 0.5
DFR_SIGMA_FEAT = 50.0
DFR_CONFIDENCE = 0.98


def _dfr_image(image, features: Tensor) -> Tensor:
    """The image as ``(B, 3, h, w)`` at the resolution of ``features`` (bilinear resize)."""
    image = _checks.as_image_batch(image, "image")
    if image.shape[0] != features.shape[0]:
        raise ValueError(f"image must have the batch size of features ({features.shape[0]}), "
                         f"got shape {tuple(image.shape)}")
    if image.shape[2:] != features.shape[2:]:
        image = torch.nn.functional.interpolate(image, size=tuple(features.shape[2:]),
                                                mode="bilinear", align_corners=False)
    return image.to(features.device, features.dtype)


def _window(radius: int, shape: str, offsets: Tensor | None) -> Tensor:
    if offsets is not None:
        return _checks.check_offsets(offsets)
    _checks.check_positive("radius", radius, integer=True)
    return window_offsets(radius, shape)


def dfr_kernel(image, features: Tensor, *, radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
               offsets: Tensor | None = None, sigma_xy: float = DFR_SIGMA_XY,
               sigma_rgb: float = DFR_SIGMA_RGB, sigma_feat: float = DFR_SIGMA_FEAT,
               normalize: str | None = "imagenet") -> WindowGraph:
    r"""DFR's dynamic kernel: shallow (position, colour) times deep (feature) similarity.

    .. math::
        K(i, j) = \exp\Big(-\frac{\|p_i - p_j\|^2}{2\sigma_1^2}
                           - \frac{\|I_i - I_j\|^2}{2\sigma_2^2}\Big)
                  \cdot \exp\Big(-\frac{\|F_i - F_j\|^2}{2\sigma_3^2}\Big)

    with squared norms (thesis Eq. 4.6; DESIGN §3), σ₁ = 6, σ₂ = 0.5 (ImageNet-normalised RGB),
    σ₃ = 50, on a square window of radius 5 (thesis §4.3). The features F are detached: the
    kernel is a weight of the regularised loss, re-computed ("dynamic") at every step as the
    feature-consistency head learns, not a term the loss optimises.

    Args:
        image: ``(B, 3, H', W')`` image in [0, 1] (or any image form of docs/images.md); resized
            (bilinear) to the feature resolution when its size differs.
        features: ``(B, d, H, W)`` output of the feature-consistency head (d = 128 in DFR).
        radius, shape, offsets: the window (default square, r = 5).
        sigma_xy: σ₁, position bandwidth in pixels.
        sigma_rgb: σ₂, colour bandwidth in the units of the normalised image.
        sigma_feat: σ₃, feature bandwidth.
        normalize: colour normalisation (``"imagenet"``: the units of σ₂).

    Returns:
        :class:`graphseg.WindowGraph` with weights ``(B, K, H, W)`` and no gradient.
    """
    _checks.check_tensor4d("features", features)
    _checks.check_positive("sigma_feat", sigma_feat)
    image = _dfr_image(image, features)
    offsets = _window(radius, shape, offsets)
    shallow = pixel_graph(image, offsets=offsets, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb,
                          normalize=normalize)
    deep = affinity_unchecked(features.detach(), offsets.to(features.device), "l2")
    weight = shallow.weight * torch.exp(-deep / (2 * sigma_feat**2))
    return WindowGraph(weight, offsets)


def dfr_loss(probs: Tensor, image, features: Tensor, *, radius: int = DFR_RADIUS,
             shape: str = DFR_SHAPE, offsets: Tensor | None = None,
             sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
             sigma_feat: float = DFR_SIGMA_FEAT, normalize: str | None = "imagenet") -> Tensor:
    r"""L_dfr, the dynamic feature regularised loss (thesis Eq. 4.5 with the kernel of Eq. 4.6).

    .. math::
        L_{dfr} = \frac{1}{hw} \sum_i \sum_{j \in W(i)} K(i, j) \sum_c P_c(i)\,\big(1 - P_c(j)\big)

    the Potts form of :func:`dense_energy_loss` (without soft filter) with the dynamic kernel K of
    :func:`dfr_kernel`, normalised by the pixels of an image (1/hw) and averaged over the batch.

    Args:
        probs: ``(B, C, H, W)`` class probabilities at the resolution of ``features``.
        image: ``(B, 3, H', W')`` image in [0, 1].
        features: ``(B, d, H, W)`` head features (detached inside the kernel).
        radius, shape, offsets, sigma_xy, sigma_rgb, sigma_feat, normalize: see
            :func:`dfr_kernel`.

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("probs", probs)
    _checks.check_tensor4d("features", features)
    _checks.same_batch("probs", probs, "features", features)
    kernel = dfr_kernel(image, features, radius=radius, shape=shape, offsets=offsets,
                        sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, sigma_feat=sigma_feat,
                        normalize=normalize)
    return potts_loss(probs, kernel)


class DFRLoss(nn.Module):
    """Module form of :func:`dfr_loss`: ``forward(probs, image, features)``."""

    def __init__(self, *, radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                 sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                 sigma_feat: float = DFR_SIGMA_FEAT, normalize: str | None = "imagenet") -> None:
        super().__init__()
        _checks.check_positive("radius", radius, integer=True)
        for name, value in (("sigma_xy", sigma_xy), ("sigma_rgb", sigma_rgb),
                            ("sigma_feat", sigma_feat)):
            _checks.check_positive(name, value)
        self.radius, self.shape, self.normalize = radius, shape, normalize
        self.sigma_xy, self.sigma_rgb, self.sigma_feat = sigma_xy, sigma_rgb, sigma_feat

    def forward(self, probs: Tensor, image, features: Tensor) -> Tensor:
        return dfr_loss(probs, image, features, radius=self.radius, shape=self.shape,
                        sigma_xy=self.sigma_xy, sigma_rgb=self.sigma_rgb,
                        sigma_feat=self.sigma_feat, normalize=self.normalize)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(radius={self.radius}, shape={self.shape!r}, "
                f"sigma_xy={self.sigma_xy}, sigma_rgb={self.sigma_rgb}, "
                f"sigma_feat={self.sigma_feat}, normalize={self.normalize!r})")


def dfr_pseudo_labels(probs: Tensor, seeds: Tensor | None = None, *,
                      confidence: float = DFR_CONFIDENCE, merge_seeds: bool = False,
                      ignore_index: int = IGNORE) -> Tensor:
    r"""The labels M that train DFR's feature-consistency head (thesis Eq. 4.7).

    .. math::
        M_i = \begin{cases} \arg\max_c P_c(i) & \max_c P_c(i) > \gamma \\
            \text{unknown} & \text{otherwise} \end{cases}, \qquad \gamma = 0.98

    The paper builds M from the confident predictions only (default, ``merge_seeds=False``):
    the seeds take no part. ``merge_seeds=True`` is an option that also writes the scribble
    seeds into M (a seed wins over a prediction); the thesis's Table 4.7 measures this merge
    as worse (81.1 against 81.5 mIoU), which is why it is not the default.

    Args:
        probs: ``(B, C, H, W)`` class probabilities (no gradient is taken).
        seeds: ``(B, H, W)`` int64 seeds, ``ignore_index`` = unknown; required only with
            ``merge_seeds=True`` (checked whenever given).
        confidence: γ, in [0, 1].
        merge_seeds: also take the seeds (not the paper's M).
        ignore_index: the unknown label.

    Returns:
        ``(B, H, W)`` int64 labels, ``ignore_index`` = unknown.
    """
    _checks.check_tensor4d("probs", probs)
    ignore_index = _check_ignore_index(ignore_index)
    if seeds is not None:
        seeds = _check_seeds_for(seeds, probs, ignore_index)
    elif merge_seeds:
        raise ValueError("seeds are required for merge_seeds=True")
    _checks.check_positive("confidence", confidence, allow_zero=True)
    if confidence > 1:
        raise ValueError(f"confidence must be in [0, 1], got {confidence!r}")
    best, label = probs.detach().max(1)
    predicted = torch.where(best > confidence, label, torch.full_like(label, ignore_index))
    if not merge_seeds:
        return predicted
    return torch.where(seeds != ignore_index, seeds, predicted)


def _pairs_for(features: Tensor, labels, offsets: Tensor, ignore_index: int):
    labels = _checks.as_label_batch(labels, "labels")
    expected = (features.shape[0], *features.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape {expected} to match features of shape "
                         f"{tuple(features.shape)}, got {tuple(labels.shape)}")
    if labels.device != features.device:
        raise ValueError(f"labels must be on the device of features ({features.device}), got "
                         f"{labels.device}")
    if ignore_index != IGNORE:
        labels = torch.where(labels == ignore_index, torch.full_like(labels, IGNORE), labels)
    return pair_labels(labels, offsets=offsets)


def feature_distance_loss(features: Tensor, labels: Tensor, *, radius: int = DFR_RADIUS,
                          shape: str = DFR_SHAPE, offsets: Tensor | None = None,
                          ignore_index: int = IGNORE) -> Tensor:
    r"""L_fd, the pair loss of DFR's feature-consistency head (thesis ch. 4, Eq. 4.2–4.13).

    With :math:`D_{ij} = \exp(-\|F_i - F_j\|_1 / d)` (d = feature channels, 128 in DFR) and the
    labelled window pairs of :func:`graphseg.seeds.pair_labels` (P⁺_bg both background, P⁺_fg
    both the same foreground class, P⁻ different classes):

    .. math::
        L_{fd} = \overline{-\log D_{ij}}_{P^+_{bg}} + \overline{-\log D_{ij}}_{P^+_{fg}}
            + 2\, \overline{-\log(1 - D_{ij})}_{P^-}

    weighted 1, 1, 2 as the thesis prints them (not the /4, /4, /2 of A²GNN's official L_Ac,
    :func:`graphseg.nn.affinity_contrast_loss`, whose pair machinery this reuses). −log D is
    computed exactly as the distance; 1 − D is floored at 1e-5 so identical features on a
    negative pair stay finite. An empty pair set contributes 0.

    Args:
        features: ``(B, d, H, W)`` head features.
        labels: ``(B, H, W)`` int64 labels, e.g. :func:`dfr_pseudo_labels`.
        radius, shape, offsets: the window (DFR: square, r = 5).
        ignore_index: the unknown label.

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("features", features)
    ignore_index = _check_ignore_index(ignore_index)
    offsets = _window(radius, shape, offsets)
    pairs = _pairs_for(features, labels, offsets, ignore_index)
    distance = _l1_over_d(features, offsets)
    negative_log = -torch.log((-torch.expm1(-distance)).clamp_min(LOG_EPS))
    return (_masked_mean(distance, pairs.background) + _masked_mean(distance, pairs.foreground)
            + 2 * _masked_mean(negative_log, pairs.negative))


class FeatureDistanceLoss(nn.Module):
    """Module form of :func:`feature_distance_loss`: ``forward(features, labels)``."""

    def __init__(self, *, radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                 ignore_index: int = IGNORE) -> None:
        super().__init__()
        _checks.check_positive("radius", radius, integer=True)
        self.radius, self.shape = radius, shape
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return feature_distance_loss(features, labels, radius=self.radius, shape=self.shape,
                                     ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(radius={self.radius}, shape={self.shape!r}, "
                f"ignore_index={self.ignore_index})")


def feature_regular_loss(features: Tensor, image, *, labels: Tensor | None = None,
                         pairs: str = "labelled", radius: int = DFR_RADIUS,
                         shape: str = DFR_SHAPE, offsets: Tensor | None = None,
                         sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                         normalize: str | None = "imagenet", ignore_index: int = IGNORE) -> Tensor:
    r"""L_fr, the shallow-kernel regulariser of DFR's head features (thesis Eq. 4.12).

    .. math::
        L_{fr} = \frac{1}{hw} \sum_{(i, j) \in R_A} G(i, j)\, \frac{\|F_i - F_j\|_1}{d}

    with G the colour-and-position Gaussian of :func:`graphseg.pixel_graph` (σ₁ = 6, σ₂ = 0.5 on
    ImageNet-normalised RGB, squared norms), d the feature channels, averaged over the batch.
    ``pairs="labelled"`` (default, the paper) takes R_A, the ordered window pairs whose two
    pixels are both labelled in ``labels`` (in :func:`dfr_objective`, the head labels M of
    Eq. 4.7), as Eq. 4.12 is printed. ``pairs="all"`` is an option that takes R, every ordered
    window pair: the text motivates L_fr by pixels without a label, and over R the regulariser
    also reaches the unlabelled regions that L_fd never sees (not what the equation says).

    Args:
        features: ``(B, d, H, W)`` head features.
        image: ``(B, 3, H', W')`` image in [0, 1]; resized (bilinear) to the feature size.
        labels: ``(B, H, W)`` int64 labels, required for ``pairs="labelled"``.
        pairs: ``"labelled"`` (R_A) or ``"all"`` (R).
        radius, shape, offsets: the window (DFR: square, r = 5).
        sigma_xy, sigma_rgb, normalize: the Gaussian G.
        ignore_index: the unknown label.

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("features", features)
    _checks.check_choice("pairs", pairs, PAIR_SETS)
    ignore_index = _check_ignore_index(ignore_index)
    image = _dfr_image(image, features)
    offsets = _window(radius, shape, offsets)
    kernel = pixel_graph(image, offsets=offsets, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb,
                         normalize=normalize).weight
    if pairs == "labelled":
        if labels is None:
            raise ValueError("labels are required for pairs='labelled' (the set R_A)")
        labelled = _pairs_for(features, labels, offsets, ignore_index)
        kernel = kernel * (labelled.positive | labelled.negative)
    total = (kernel * _l1_over_d(features, offsets)).sum()
    return total / (features.shape[0] * features.shape[2] * features.shape[3])


class FeatureRegularLoss(nn.Module):
    """Module form of :func:`feature_regular_loss`: ``forward(features, image, labels=None)``."""

    def __init__(self, *, pairs: str = "labelled", radius: int = DFR_RADIUS,
                 shape: str = DFR_SHAPE,
                 sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                 normalize: str | None = "imagenet", ignore_index: int = IGNORE) -> None:
        super().__init__()
        _checks.check_choice("pairs", pairs, PAIR_SETS)
        _checks.check_positive("radius", radius, integer=True)
        self.pairs, self.radius, self.shape, self.normalize = pairs, radius, shape, normalize
        self.sigma_xy, self.sigma_rgb = sigma_xy, sigma_rgb
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, features: Tensor, image, labels: Tensor | None = None) -> Tensor:
        return feature_regular_loss(features, image, labels=labels, pairs=self.pairs,
                                    radius=self.radius, shape=self.shape,
                                    sigma_xy=self.sigma_xy, sigma_rgb=self.sigma_rgb,
                                    normalize=self.normalize, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(pairs={self.pairs!r}, radius={self.radius}, "
                f"shape={self.shape!r}, sigma_xy={self.sigma_xy}, sigma_rgb={self.sigma_rgb}, "
                f"normalize={self.normalize!r})")


def dfr_objective(logits: Tensor, features: Tensor, image, seeds: Tensor, *,
                  lambda_dfr: float = 1e-2, lambda_head: float = 1e-3,
                  confidence: float = DFR_CONFIDENCE, head_labels: str = "confident",
                  pairs: str = "labelled", radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                  sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                  sigma_feat: float = DFR_SIGMA_FEAT, normalize: str | None = "imagenet",
                  ignore_index: int = IGNORE, lambda_fr: float | None = None) -> Tensor:
    r"""DFR's training objective (thesis Eq. 4.1).

    .. math::
        L = L_{pce}(\text{logits}, s) + \lambda_1 L_{dfr}(P, I, F)
            + \lambda_2 \big(L_{fd}(F, M) + L_{fr}(F, I; R_A(M))\big),
        \qquad \lambda_1 = 10^{-2},\ \lambda_2 = 10^{-3}

    with P = softmax(logits), s the scribble seeds, :func:`partial_cross_entropy`,
    :func:`dfr_loss` (Eq. 4.5–4.6), :func:`feature_distance_loss` (L_fd, weights 1, 1, 2) and
    :func:`feature_regular_loss` (Eq. 4.12 over the labelled pairs R_A of M). λ₂ weighs both
    feature-head terms. M = :func:`dfr_pseudo_labels`: the predictions above γ = 0.98 only
    (Eq. 4.7; ``head_labels="confident"``); ``head_labels="merged"`` also writes the seeds
    into M, an option the thesis's Table 4.7 measures as worse (81.1 against 81.5).
    ``pairs="all"`` runs L_fr over every window pair R instead (see
    :func:`feature_regular_loss`).

    Args:
        logits: ``(B, C, H, W)`` segmentation logits.
        features: ``(B, d, H, W)`` head features, same resolution.
        image: ``(B, 3, H', W')`` image in [0, 1].
        seeds: ``(B, H, W)`` int64 seeds (scribbles), ``ignore_index`` = unknown.
        lambda_dfr: λ₁. lambda_head: λ₂ (on L_fd + L_fr). confidence: γ.
        head_labels: ``"confident"`` (paper) or ``"merged"``. pairs: R_A or R for L_fr.
        radius, shape, sigma_xy, sigma_rgb, sigma_feat, normalize: the kernels.
        ignore_index: the unknown label.
        lambda_fr: former name of ``lambda_head`` (deprecated; it weighs L_fd too now).

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("logits", logits)
    _checks.check_tensor4d("features", features)
    _checks.same_batch("logits", logits, "features", features)
    lambda_head = _lambda_head(lambda_head, lambda_fr)
    _checks.check_positive("lambda_dfr", lambda_dfr, allow_zero=True)
    _checks.check_choice("head_labels", head_labels, HEAD_LABELS)
    loss = partial_cross_entropy(logits, seeds, ignore_index=ignore_index)
    probs = logits.softmax(1)
    if lambda_dfr:
        loss = loss + lambda_dfr * dfr_loss(probs, image, features, radius=radius, shape=shape,
                                            sigma_xy=sigma_xy, sigma_rgb=sigma_rgb,
                                            sigma_feat=sigma_feat, normalize=normalize)
    if lambda_head:
        labels = dfr_pseudo_labels(probs, seeds, confidence=confidence,
                                   merge_seeds=head_labels == "merged",
                                   ignore_index=ignore_index)
        head = feature_distance_loss(features, labels, radius=radius, shape=shape,
                                     ignore_index=ignore_index)
        head = head + feature_regular_loss(
            features, image, labels=labels, pairs=pairs, radius=radius, shape=shape,
            sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, normalize=normalize,
            ignore_index=ignore_index)
        loss = loss + lambda_head * head
    return loss


def _lambda_head(lambda_head: float, lambda_fr: float | None) -> float:
    if lambda_fr is not None:
        warnings.warn("lambda_fr is deprecated: use lambda_head, the λ₂ of thesis Eq. 4.1 that "
                      "weighs L_fd + L_fr", DeprecationWarning, stacklevel=3)
        lambda_head = lambda_fr
    _checks.check_positive("lambda_head", lambda_head, allow_zero=True)
    return lambda_head


class DFRObjective(nn.Module):
    """Module form of :func:`dfr_objective`: ``forward(logits, features, image, seeds)``."""

    def __init__(self, *, lambda_dfr: float = 1e-2, lambda_head: float = 1e-3,
                 confidence: float = DFR_CONFIDENCE, head_labels: str = "confident",
                 pairs: str = "labelled", radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                 sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                 sigma_feat: float = DFR_SIGMA_FEAT, normalize: str | None = "imagenet",
                 ignore_index: int = IGNORE, lambda_fr: float | None = None) -> None:
        super().__init__()
        lambda_head = _lambda_head(lambda_head, lambda_fr)
        _checks.check_positive("lambda_dfr", lambda_dfr, allow_zero=True)
        _checks.check_choice("head_labels", head_labels, HEAD_LABELS)
        _checks.check_choice("pairs", pairs, PAIR_SETS)
        self.options = {"lambda_dfr": lambda_dfr, "lambda_head": lambda_head,
                        "confidence": confidence, "head_labels": head_labels, "pairs": pairs,
                        "radius": radius, "shape": shape, "sigma_xy": sigma_xy,
                        "sigma_rgb": sigma_rgb, "sigma_feat": sigma_feat,
                        "normalize": normalize,
                        "ignore_index": _check_ignore_index(ignore_index)}

    def forward(self, logits: Tensor, features: Tensor, image, seeds: Tensor) -> Tensor:
        return dfr_objective(logits, features, image, seeds, **self.options)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{self.__class__.__name__}({options})"
