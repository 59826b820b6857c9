r"""CoSA's reliability-based adaptive weighting (RAW) and searched confidence threshold.

CoSA (Yang, Rahmani, Black & Williams, "Weakly Supervised Co-training with Swapping Assignments
for Semantic Segmentation", ECCV 2024, arXiv:2402.17891) trains its segmentation head on CAM
pseudo-labels (CPL) "softened by reliability-based adaptive weighting, formed based on CAM
perplexity estimation and dynamic thresholding" (project page of github.com/youshyee/CoSA).
Three pieces, each a function:

- :func:`cam_perplexity` and :func:`perplexity_reliability` → :func:`reliability_weights`: how
  much a CAM's class distribution can be trusted, per image, per class or per pixel;
- :func:`reliability_weighted_cross_entropy` (Module :class:`ReliabilityWeightedCrossEntropy`):
  the pseudo-label cross-entropy with those weights;
- :func:`search_threshold` (stateful form :class:`DynamicThreshold`): the confidence thresholds
  that cut the CAM into confident background, uncertain (255) and confident foreground.

Sources and what is ours. The threshold search follows CoSA's released code exactly
(``rungmm``, ``DynamicQueue`` and ``EMAtracker`` in ``utils/seg_helper.py`` and
``utils/torch_helper.py``; defaults of ``args.py``), and so does the form of the weighted
cross-entropy (``seg_weightloss``: background and foreground means, each divided by its pixel
count, mixed with ``fg_alpha`` = 0.5). The released code never computes the perplexity weights
(``seg_weightloss`` and the ``camweight_beta`` option are unused there) and the paper's RAW
equations could not be consulted while writing this, so the perplexity estimate and its mapping
to a weight are our reading, stated in the functions below: perplexity as the exponential of the
mean pixel entropy (the standard definition), reliability as its normalised inverse raised to
``beta`` (the role we give CoSA's ``camweight_beta`` = 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphseg import _checks

__all__ = [
    "DynamicThreshold",
    "ReliabilityWeightedCrossEntropy",
    "cam_perplexity",
    "perplexity_reliability",
    "reliability_weighted_cross_entropy",
    "reliability_weights",
    "search_threshold",
]

IGNORE = 255
REDUCTIONS = ("image", "class", "none")
FG_ALPHA = 0.5  # CoSA args.py segfg_alpha
# CoSA args.py (VOC): low_thre, high_thre, gmmfilter_thre, gmmemadecay, queue_update_ratio
LOW, HIGH, FILTER, DECAY, QUEUE = 0.25, 0.7, 0.05, 0.99, 100
# exp() below e^-700 gives float64 subnormals, ~100x slower on CPU; such terms are < 1e-304 of 1
LOG_TINY = -700.0


# -- reliability -----------------------------------------------------------------------------


def _check_probs(probs) -> Tensor:
    _checks.check_tensor4d("probs", probs)
    if probs.shape[1] < 2:
        raise ValueError(f"probs must hold at least 2 classes (dim 1), got shape "
                         f"{tuple(probs.shape)}")
    if bool((probs < 0).any()):
        raise ValueError(f"probs must be non-negative class probabilities, got a minimum of "
                         f"{float(probs.min())}")
    total = probs.sum(1)
    if not torch.allclose(total, torch.ones_like(total), atol=1e-3, rtol=0):
        worst = float((total - 1).abs().max())
        raise ValueError("probs must sum to 1 over the classes (dim 1), e.g. a softmax over "
                         f"background and CAM scores; the sums are off by up to {worst:.3g}")
    return probs


def _check_labels(labels, name: str, like: Tensor, num_classes: int) -> Tensor:
    labels = _checks.as_label_batch(labels, name)
    expected = (like.shape[0], *like.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} to match {tuple(like.shape)}, got "
                         f"{tuple(labels.shape)}")
    if labels.device != like.device:
        raise ValueError(f"{name} must be on the device {like.device}, got {labels.device}")
    _checks.check_seed_values(name, labels, num_classes, IGNORE)
    return labels


def _perplexity(probs: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    entropy = -torch.special.xlogy(probs, probs).sum(1)
    if reduction == "none":
        return entropy.exp()
    num_classes = probs.shape[1]
    weight = entropy.new_ones(entropy.shape) if mask is None else mask.to(entropy.dtype)
    if reduction == "class":
        weight = weight.unsqueeze(1) * probs
        total = (weight * entropy.unsqueeze(1)).sum((2, 3))
        mass = weight.sum((2, 3))
    else:
        total = (weight * entropy).sum((1, 2))
        mass = weight.sum((1, 2))
    mean = total / mass.clamp_min(torch.finfo(mass.dtype).tiny)
    # no pixel, no evidence: the largest perplexity (reliability 0)
    return torch.where(mass > 0, mean.exp(), torch.full_like(mean, float(num_classes)))


def cam_perplexity(probs: Tensor, *, mask: Tensor | None = None,
                   reduction: str = "image") -> Tensor:
    r"""Perplexity of per-pixel class distributions (CAM-derived), per image, class or pixel.

    With the pixel entropy :math:`H_i = -\sum_c p_{ic} \log p_{ic}` (0 log 0 = 0):

    .. math::
        \mathrm{PP}_i = e^{H_i}, \qquad
        \mathrm{PP} = \exp\Big(\frac{\sum_i m_i H_i}{\sum_i m_i}\Big), \qquad
        \mathrm{PP}_c = \exp\Big(\frac{\sum_i m_i p_{ic} H_i}{\sum_i m_i p_{ic}}\Big)

    for ``"none"``, ``"image"`` and ``"class"`` (each pixel counted with its probability of the
    class); m is ``mask`` (all ones by default). PP lies in [1, C]: 1 for one-hot pixels, C for
    uniform ones — the effective number of classes a pixel hesitates between. An image or class
    with no (masked) mass gets C.

    Args:
        probs: ``(B, C, H, W)`` class probabilities summing to 1 over C, e.g.
            ``softmax([background score, CAMs of the image's classes])`` as CoSA builds them.
        mask: ``(B, H, W)`` bool, the pixels to average over (e.g. labelled pixels).
        reduction: ``"image"`` → ``(B,)``, ``"class"`` → ``(B, C)``, ``"none"`` → ``(B, H, W)``.

    Returns:
        Perplexities (differentiable; :func:`reliability_weights` detaches them).
    """
    probs = _check_probs(probs)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool (B, H, W) tensor, got {_checks._describe(mask)}")
        expected = (probs.shape[0], *probs.shape[2:])
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must have shape {expected}, got {tuple(mask.shape)}")
    return _perplexity(probs, mask, reduction)


def perplexity_reliability(perplexity: Tensor, num_classes: int, *, beta: float = 1.0) -> Tensor:
    r"""Maps a perplexity in [1, C] to a reliability in [0, 1].

    .. math::
        r = \Big(\frac{C / \mathrm{PP} - 1}{C - 1}\Big)^{\beta}

    1/PP = e^{−H} is the geometric-mean probability a distribution gives its own outcomes; the
    affine map sends a one-hot distribution (PP = 1) to 1 and a uniform one (PP = C) to 0, and
    β sharpens (β > 1) or softens (β < 1) the weighting. Our reading of CoSA's RAW, see the
    module notes; values are clamped to [0, 1] against rounding.

    Args:
        perplexity: perplexities from :func:`cam_perplexity`.
        num_classes: C, the number of classes the distributions range over (≥ 2).
        beta: exponent β (default 1, CoSA's ``camweight_beta``).
    """
    if not isinstance(perplexity, Tensor) or not perplexity.is_floating_point():
        raise TypeError(f"perplexity must be a float tensor, got {_checks._describe(perplexity)}")
    _checks.check_positive("num_classes", num_classes, integer=True)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    _checks.check_positive("beta", beta)
    base = (num_classes / perplexity.clamp_min(1.0) - 1) / (num_classes - 1)
    return base.clamp(0.0, 1.0).pow(beta)


def _pixel_weights(probs: Tensor, labels: Tensor | None, reduction: str,
                   beta: float) -> Tensor:
    mask = None if labels is None else labels != IGNORE
    reliability = perplexity_reliability(_perplexity(probs, mask, reduction), probs.shape[1],
                                         beta=beta)
    if reduction == "none":
        return reliability
    if reduction == "image":
        return reliability.view(-1, 1, 1).expand(probs.shape[0], *probs.shape[2:]).contiguous()
    classes = probs.argmax(1) if labels is None else torch.where(mask, labels, 0)
    return reliability.gather(1, classes.flatten(1)).view_as(classes)


def reliability_weights(probs: Tensor, labels: Tensor | None = None, *,
                        reduction: str = "image", beta: float = 1.0) -> Tensor:
    """Per-pixel loss weights from CAM reliability (our reading of CoSA's RAW).

    The reliability :func:`perplexity_reliability` of :func:`cam_perplexity`, spread over the
    pixels: one value per image (``"image"``, default), the value of the pixel's class
    (``"class"``: its pseudo label, or the argmax of ``probs`` without ``labels``), or each
    pixel's own (``"none"``). With ``labels``, the perplexity is averaged over labelled pixels
    only (label ≠ 255). Computed without gradient.

    Args:
        probs: ``(B, C, H, W)`` class probabilities (background first, like the labels).
        labels: ``(B, H, W)`` pseudo labels, 255 = ignore.
        reduction: ``"image"``, ``"class"`` or ``"none"``.
        beta: exponent of :func:`perplexity_reliability`.

    Returns:
        ``(B, H, W)`` weights in [0, 1].
    """
    probs = _check_probs(probs)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    _checks.check_positive("beta", beta)
    if labels is not None:
        labels = _check_labels(labels, "labels", probs, probs.shape[1])
    with torch.no_grad():
        return _pixel_weights(probs.detach(), labels, reduction, beta)


# -- weighted cross-entropy ------------------------------------------------------------------


def _expand_weight(weight, labels: Tensor, num_classes: int) -> Tensor:
    batch = labels.shape[0]
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError("weight must be a float tensor of shape (B,), (B, C) or (B, H, W), got "
                        f"{_checks._describe(weight)}")
    _checks.check_finite("weight", weight)
    if bool((weight < 0).any()):
        raise ValueError(f"weight must be non-negative, got a minimum of {float(weight.min())}")
    if weight.device != labels.device:
        raise ValueError(f"weight must be on the device {labels.device}, got {weight.device}")
    if tuple(weight.shape) == (batch,):
        return weight.view(-1, 1, 1).expand_as(labels)
    if tuple(weight.shape) == (batch, num_classes):
        index = torch.where(labels != IGNORE, labels, 0)
        return weight.gather(1, index.flatten(1)).view_as(labels)
    if tuple(weight.shape) == tuple(labels.shape):
        return weight
    raise ValueError(f"weight must have shape ({batch},) per image, ({batch}, {num_classes}) per "
                     f"class or {tuple(labels.shape)} per pixel, got {tuple(weight.shape)}")


def reliability_weighted_cross_entropy(logits: Tensor, labels, weight: Tensor, *,
                                       fg_alpha: float | None = FG_ALPHA) -> Tensor:
    r"""Pseudo-label cross-entropy with reliability weights (CoSA's weighted segmentation loss).

    With :math:`\ell_i = -\log \mathrm{softmax}(z_i)_{y_i}` and weights w (detached):

    .. math::
        L = (1 - \alpha) \frac{\sum_{y_i = 0} w_i \ell_i}{|\{y_i = 0\}|}
            + \alpha \frac{\sum_{y_i > 0} w_i \ell_i}{|\{y_i > 0\}|}

    over pixels with :math:`y_i \ne 255` — CoSA's ``seg_weightloss`` (α = ``fg_alpha`` = 0.5).
    Each mean divides by the pixel count, not by Σ w, so unreliable labels lower the loss rather
    than being renormalised away. ``fg_alpha=None`` gives one mean over all labelled pixels,
    :math:`\sum_i w_i \ell_i / |\{y_i \ne 255\}|`. An empty set contributes 0.

    Args:
        logits: ``(B, C, H, W)`` segmentation logits at the resolution of ``labels``.
        labels: ``(B, H, W)`` pseudo labels (0 = background), 255 = ignore.
        weight: ``(B,)`` per image, ``(B, C)`` per class (looked up by label) or ``(B, H, W)``
            per pixel, non-negative; e.g. :func:`reliability_weights`. Not differentiated.
        fg_alpha: α in [0, 1], or None for a single mean.

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("logits", logits)
    labels = _check_labels(labels, "labels", logits, logits.shape[1])
    if fg_alpha is not None:
        _checks.check_positive("fg_alpha", fg_alpha, allow_zero=True)
        if fg_alpha > 1:
            raise ValueError(f"fg_alpha must lie in [0, 1] (or be None), got {fg_alpha}")
    pixel_weight = _expand_weight(weight, labels, logits.shape[1]).detach().to(logits.dtype)
    known = labels != IGNORE
    loss = F.cross_entropy(logits, torch.where(known, labels, 0), reduction="none")
    weighted = pixel_weight * loss

    def mean(mask: Tensor) -> Tensor:
        return torch.where(mask, weighted, 0).sum() / mask.sum().clamp_min(1)

    if fg_alpha is None:
        return mean(known)
    return (1 - fg_alpha) * mean(known & (labels == 0)) + fg_alpha * mean(known & (labels > 0))


class ReliabilityWeightedCrossEntropy(nn.Module):
    """Module form: :func:`reliability_weights` of the CAM probabilities, then
    :func:`reliability_weighted_cross_entropy`.

    Args:
        reduction: reliability per ``"image"`` (default), ``"class"`` or pixel (``"none"``).
        beta: reliability exponent β.
        fg_alpha: background/foreground mix α (None: one mean).
    """

    def __init__(self, reduction: str = "image", beta: float = 1.0,
                 fg_alpha: float | None = FG_ALPHA) -> None:
        super().__init__()
        _checks.check_choice("reduction", reduction, REDUCTIONS)
        _checks.check_positive("beta", beta)
        self.reduction, self.beta, self.fg_alpha = reduction, beta, fg_alpha

    def forward(self, logits: Tensor, labels: Tensor, probs: Tensor) -> Tensor:
        """``logits`` (B, C, H, W), ``labels`` (B, H, W) pseudo labels, ``probs`` (B, C, H, W)
        the CAM class probabilities the labels came from."""
        weight = reliability_weights(probs, labels, reduction=self.reduction, beta=self.beta)
        return reliability_weighted_cross_entropy(logits, labels, weight, fg_alpha=self.fg_alpha)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, beta={self.beta}, fg_alpha={self.fg_alpha}"


# -- threshold search ------------------------------------------------------------------------


def _gmm_labels(values: Tensor, max_iter: int, tol: float, reg: float) -> tuple[Tensor, Tensor]:
    """EM for a 1-D mixture of 3 Gaussians, initialised and stopped as scikit-learn's
    ``GaussianMixture(3, weights_init=[1/3]*3, means_init=[min, median, max],
    precisions_init=[1]*3)``; returns the component of each value and the fitted means."""
    x = values.to(torch.float64)
    ordered = x.sort().values
    n = x.numel()
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    means = torch.stack([ordered[0], median, ordered[-1]])
    variances = torch.ones(3, dtype=torch.float64, device=x.device)
    log_weights = torch.full((3,), math.log(1 / 3), dtype=torch.float64, device=x.device)

    def e_step():
        log_prob = -0.5 * (math.log(2 * math.pi) + variances.log()
                           + (x.unsqueeze(1) - means) ** 2 / variances)
        joint = log_prob + log_weights
        top = joint.amax(1, keepdim=True)
        norm = top + (joint - top).clamp_min(LOG_TINY).exp().sum(1, keepdim=True).log()
        return float(norm.mean()), joint - norm

    bound = -math.inf
    for _ in range(max_iter):
        previous = bound
        bound, log_resp = e_step()
        resp = log_resp.clamp_min(LOG_TINY).exp()
        counts = resp.sum(0) + 10 * torch.finfo(torch.float64).eps
        means = (resp * x.unsqueeze(1)).sum(0) / counts
        variances = (resp * (x.unsqueeze(1) - means) ** 2).sum(0) / counts + reg
        log_weights = (counts / counts.sum()).log()
        if abs(bound - previous) < tol:
            break
    return e_step()[1].argmax(1), means


def search_threshold(scores: Tensor, *, filter_threshold: float = FILTER, max_iter: int = 100,
                     tol: float = 1e-3, reg: float = 1e-6) -> tuple[float, float]:
    r"""CoSA's searched confidence thresholds (β_l, β_h) from a sample of CAM scores.

    The scores above ``filter_threshold`` (0.05, CoSA's ``gmmfilter_thre``) are fitted with a
    mixture of three 1-D Gaussians — confident background, uncertain, confident foreground —
    initialised at their minimum, median and maximum with equal weights and unit precision,
    and run by EM (scikit-learn's algorithm and stopping rule, which CoSA calls). Then

    .. math::
        \beta_l = \max\{s : s \in \text{lowest component}\}, \qquad
        \beta_h = \min\{s : s \in \text{highest component}\}

    Pixels with score ≤ β_l are background, ≥ β_h foreground, in between uncertain (255).
    With the unit initial variances on scores in [0, 1] the likelihood moves little at first and
    the default ``tol`` often stops EM after a few iterations, near the initial split; that is
    CoSA's behaviour, kept for parity — lower ``tol`` for a converged fit.
    CoSA's code reads components 0 and 2; here components are ordered by their fitted means,
    which only differs when EM swaps them. An empty lowest (highest) component gives the
    smallest (largest) score.

    Args:
        scores: CAM scores of any shape, e.g. the per-pixel maximum foreground CAM of recent
            images (CoSA: max over classes, 1/16 of the crop size, a queue of images).
        filter_threshold: scores at or below it are left out of the fit.
        max_iter, tol, reg: EM iterations, tolerance on the mean log-likelihood, variance floor
            (scikit-learn's ``max_iter``, ``tol``, ``reg_covar`` defaults).

    Returns:
        ``(low, high)`` as Python floats.
    """
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError(f"scores must be a float tensor, got {_checks._describe(scores)}")
    _checks.check_finite("scores", scores)
    _checks.check_positive("filter_threshold", filter_threshold, allow_zero=True)
    _checks.check_positive("max_iter", max_iter, integer=True)
    _checks.check_positive("tol", tol)
    _checks.check_positive("reg", reg)
    values = scores.detach().flatten()
    values = values[values > filter_threshold]
    if values.numel() < 3:
        raise ValueError(f"scores must hold at least 3 values above filter_threshold="
                         f"{filter_threshold} to fit three components, got {values.numel()}")
    labels, means = _gmm_labels(values, max_iter, tol, reg)
    order = means.argsort()
    low_set = values[labels == order[0]]
    high_set = values[labels == order[2]]
    low = float(low_set.max()) if low_set.numel() else float(values.min())
    high = float(high_set.min()) if high_set.numel() else float(values.max())
    return low, high


class DynamicThreshold(nn.Module):
    r"""CoSA's dynamic threshold: a queue of recent CAM scores, a threshold search on it after
    every update, and an exponential moving average of the result.

    .. math::
        \beta \leftarrow \delta\, \beta + (1 - \delta)\, \beta^{\text{search}}

    with δ = ``decay`` (0.99) for both β_l and β_h, which start at ``low`` = 0.25 and
    ``high`` = 0.7 (CoSA's VOC values). The queue keeps the flattened scores of the last
    ``size`` images (CoSA: batch size × 100). CoSA fills its queue with uniform random values at
    start; here the search uses only the images seen so far. The thresholds are buffers (saved
    in ``state_dict``); the queue is not.

    Args:
        size: number of images the queue holds.
        low, high: initial β_l, β_h.
        decay: EMA decay δ.
        filter_threshold: see :func:`search_threshold`.
    """

    low: Tensor
    high: Tensor

    def __init__(self, size: int = 2 * QUEUE, *, low: float = LOW, high: float = HIGH,
                 decay: float = DECAY, filter_threshold: float = FILTER) -> None:
        super().__init__()
        _checks.check_positive("size", size, integer=True)
        _checks.check_positive("decay", decay, allow_zero=True)
        if decay > 1:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        if not 0 <= low <= high:
            raise ValueError(f"low and high must satisfy 0 <= low <= high, got low={low}, "
                             f"high={high}")
        self.size, self.decay, self.filter_threshold = size, decay, filter_threshold
        self.register_buffer("low", torch.tensor(float(low), dtype=torch.float64))
        self.register_buffer("high", torch.tensor(float(high), dtype=torch.float64))
        self._queue: list[Tensor] = []

    @torch.no_grad()
    def update(self, scores: Tensor) -> tuple[float, float]:
        """Pushes ``(B, ...)`` scores (one row per image) and returns the updated (β_l, β_h)."""
        if not isinstance(scores, Tensor) or not scores.is_floating_point() or scores.dim() < 1:
            raise TypeError("scores must be a float tensor with one row per image, got "
                            f"{_checks._describe(scores)}")
        rows = scores.detach().reshape(scores.shape[0], -1).to(torch.float64).cpu()
        self._queue.extend(rows.unbind(0))
        del self._queue[:-self.size]
        low, high = search_threshold(torch.cat(self._queue),
                                     filter_threshold=self.filter_threshold)
        self.low.mul_(self.decay).add_((1 - self.decay) * low)
        self.high.mul_(self.decay).add_((1 - self.decay) * high)
        return float(self.low), float(self.high)

    def forward(self, scores: Tensor) -> tuple[float, float]:
        return self.update(scores)

    def extra_repr(self) -> str:
        return (f"size={self.size}, low={float(self.low):.4f}, high={float(self.high):.4f}, "
                f"decay={self.decay}, filter_threshold={self.filter_threshold}")
