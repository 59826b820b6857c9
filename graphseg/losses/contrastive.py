"""UniA's contrastive affinity loss, as printed and in InfoNCE form (DESIGN §6, "UniA and
CoSA")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphseg import _checks

__all__ = ["CONTRASTIVE_VARIANTS", "ContrastiveAffinityLoss", "contrastive_affinity_loss"]

TAU = 0.1
CONTRASTIVE_VARIANTS = ("infonce", "paper")


def _check_inputs(affinity, positive, negative, tau) -> None:
    if not isinstance(affinity, Tensor) or affinity.dim() not in (3, 4):
        raise TypeError("affinity must be a (B, K, H, W) window tensor or a (B, N, N) matrix, "
                        f"got {_checks._describe(affinity)}")
    if not affinity.is_floating_point():
        raise TypeError(f"affinity must be a floating-point tensor, got dtype {affinity.dtype}")
    _checks.check_finite("affinity", affinity)
    for name, mask in (("positive", positive), ("negative", negative)):
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor shaped like affinity "
                            f"{tuple(affinity.shape)}, got {_checks._describe(mask)}")
        if mask.shape != affinity.shape:
            raise ValueError(f"{name} must have the shape of affinity {tuple(affinity.shape)}, "
                             f"got {tuple(mask.shape)}")
        if mask.device != affinity.device:
            raise ValueError(f"{name} must be on the device of affinity ({affinity.device}), "
                             f"got {mask.device}")
    if bool((positive & negative).any()):
        raise ValueError("positive and negative must not share an entry: a pair cannot be both")
    _checks.check_positive("tau", tau)


def contrastive_affinity_loss(affinity: Tensor, positive: Tensor, negative: Tensor, *,
                              tau: float = TAU, variant: str = "infonce") -> Tensor:
    r"""UniA's contrastive affinity loss (Yang et al., arXiv:2404.08195, Eq. 16).

    ``variant="paper"``: the form of Eq. 16 as DESIGN §6 transcribes it from the paper, with
    the temperature τ and without a logarithm. S⁺ and S⁻ are the sets of positive and
    negative affinities of one image (every pair of the image, not one anchor's row), N⁺ the
    number of positive pairs over the batch:

    .. math::
        L = -\frac{1}{N^+} \sum_b \sum_{q \in S^+_b}
            \frac{e^{q/\tau}}{e^{q/\tau} + \sum_{k \in S^-_b} e^{k/\tau}}

    Each term is the share of one positive against all the negatives of its image, in (0, 1);
    the loss lies in [−1, 0] and falls as positives rise above the negatives. The paper's text
    itself could not be consulted here: the sign and the per-image sets are our reading of the
    transcription, and the paper gives no value of τ (default 0.1 as for the other variant).
    Computed as :math:`\sigma(q/\tau - \mathrm{LSE}_{k \in S^-_b}(k/\tau))`, stable for any
    τ; an image without negatives gives terms of 1.

    ``variant="infonce"`` (default): the InfoNCE form that DESIGN §6 fixes, with a logarithm
    and each anchor's own negatives. For anchor pixel i, its positive pairs q = a_ij
    (j ∈ S⁺(i)) are contrasted with its negative pairs k = a_ik (k ∈ S⁻(i)):

    .. math::
        L = -\frac{1}{N^+} \sum_i \sum_{q \in S^+(i)}
            \log \frac{e^{q/\tau}}{e^{q/\tau} + \sum_{k \in S^-(i)} e^{k/\tau}}

    It is the default because the logarithm keeps the gradient of a positive that is already
    far below its negatives large (the printed share saturates at 0 there, so such a pair
    stops learning), and per-anchor negatives keep one anchor's pairs from being swamped by
    the negatives of the whole image. A positive whose anchor has no negative contributes
    log 1 = 0 and still counts in N⁺. Computed as
    :math:`\mathrm{softplus}(\mathrm{LSE}_{k}(k/\tau) - q/\tau)`. UniA's released code
    (``get_aff_loss`` in ``model/losses.py`` of github.com/zwyang6/UniA) has the logarithm too,
    with τ = 0.5 and every entry of the anchor's row in the denominator (a softmax over the
    row), not only its negatives.

    Without positives either variant gives 0 (in the autograd graph).

    Layouts — the anchor and the dimension that holds its pairs:

    - window ``(B, K, H, W)``: anchor = pixel (y, x), pairs along K, as in
      :attr:`graphseg.WindowGraph.weight` and :class:`graphseg.seeds.PairLabels`; e.g.
      ``affinity = feature_graph(features, kind="cosine", offsets=pairs.offsets).weight`` with
      ``positive = pairs.positive``, ``negative = pairs.negative``.
    - dense ``(B, N, N)``: anchor = row i, pairs along the last dimension (an attention matrix
      with masks from pixel labels).

    Args:
        affinity: similarities a (cosine-like values in [−1, 1] suit τ = 0.1), differentiable.
        positive: bool mask of the positive pairs, shaped like ``affinity``.
        negative: bool mask of the negative pairs (disjoint from ``positive``).
        tau: temperature τ > 0.
        variant: ``"infonce"`` (default) or ``"paper"`` (the printed form, see above).

    Returns:
        Scalar loss.

    Shapes:
        affinity, positive, negative ``(B, K, H, W)`` or ``(B, N, N)`` → ``()``.
    """
    _check_inputs(affinity, positive, negative, tau)
    _checks.check_choice("variant", variant, CONTRASTIVE_VARIANTS)
    logits = affinity / tau
    if variant == "paper":
        pair_dims = tuple(range(1, affinity.dim()))
        has_negative = negative.flatten(1).any(1).view(-1, *([1] * len(pair_dims)))
        masked = torch.where(negative, logits, torch.full_like(logits, float("-inf")))
        masked = torch.where(has_negative, masked, torch.zeros_like(logits))
        negatives = torch.where(has_negative, torch.logsumexp(masked, pair_dims, keepdim=True),
                                torch.full_like(has_negative, float("-inf"),
                                                dtype=logits.dtype))
        per_pair = -torch.sigmoid(logits - negatives)
    else:
        pair_dim = 1 if affinity.dim() == 4 else 2
        has_negative = negative.any(pair_dim, keepdim=True)
        # rows without negatives get finite dummy logits, so the logsumexp backward stays finite
        masked = torch.where(negative, logits, torch.full_like(logits, float("-inf")))
        masked = torch.where(has_negative, masked, torch.zeros_like(logits))
        negatives = torch.where(has_negative, torch.logsumexp(masked, pair_dim, keepdim=True),
                                torch.full_like(has_negative, float("-inf"),
                                                dtype=logits.dtype))
        per_pair = F.softplus(negatives - logits)
    per_pair = torch.where(positive, per_pair, torch.zeros_like(per_pair))
    return per_pair.sum() / positive.sum().clamp_min(1)


class ContrastiveAffinityLoss(nn.Module):
    """Module form of :func:`contrastive_affinity_loss`.

    Args:
        tau: temperature τ (default 0.1).
        variant: ``"infonce"`` (default) or ``"paper"``.
    """

    def __init__(self, tau: float = TAU, *, variant: str = "infonce") -> None:
        super().__init__()
        _checks.check_positive("tau", tau)
        _checks.check_choice("variant", variant, CONTRASTIVE_VARIANTS)
        self.tau, self.variant = tau, variant

    def forward(self, affinity: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return contrastive_affinity_loss(affinity, positive, negative, tau=self.tau,
                                         variant=self.variant)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, variant={self.variant!r}"
