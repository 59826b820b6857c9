r"""Clustering losses of soft segmentations (DESIGN §6 "Losses").

The entropy (decisiveness) loss, the normalised-cut and kernel k-means relaxations of Tang et al.
(ECCV 2018) on a pixel graph, and RRM's batch-based class distance (BCD) loss on deep features.
Graph terms take a :class:`graphseg.WindowGraph` (window mat-vecs, never an N×N tensor) or a
PyG ``Data`` / :class:`graphseg.EdgeGraph` with ``(N, C)`` node values. Each loss is a function
and an ``nn.Module``.

References:
    - Tang, Djelouah, Perazzi, Boykov, Schroers, "Normalized Cut Loss for Weakly-supervised CNN
      Segmentation", CVPR 2018, doi:10.1109/CVPR.2018.00195.
    - Tang, Perazzi, Djelouah, Ben Ayed, Schroers, Boykov, "On Regularized Losses for
      Weakly-supervised CNN Segmentation", ECCV 2018, arXiv:1803.09569.
    - Shi, Malik, "Normalized Cuts and Image Segmentation", TPAMI 22(8), 2000,
      doi:10.1109/34.868688.
    - Zhang, Xiao, Wei, Huang, Luo, Zhao, "End-to-end weakly supervised semantic segmentation with
      reliable region mining", Pattern Recognition 128 (2022) 108663,
      doi:10.1016/j.patcog.2022.108663 (BCD loss, thesis Eq. 2.24–2.26).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.window import WindowGraph
from graphseg.losses._common import IGNORE, _check_ignore_index, _node_values

__all__ = [
    "BCDLoss",
    "EntropyLoss",
    "KernelKMeansLoss",
    "NormalizedCutLoss",
    "bcd_loss",
    "entropy_loss",
    "kernel_kmeans_loss",
    "normalized_cut_loss",
]

SEGMENT_EPS = 1e-8  # keeps an empty segment's ratio at 0 instead of 0/0
COS_EPS = 1e-7  # the official RRM code's cos(a, b) = a·b / (‖a‖‖b‖ + 1e-7)


def _check_eps(eps) -> float:
    _checks.check_positive("eps", eps, allow_zero=True)
    return float(eps)


# -- entropy ---------------------------------------------------------------------------------


def entropy_loss(probs: Tensor) -> Tensor:
    r"""The mean Shannon entropy of the soft predictions (slides' entropy loss).

    .. math::
        L_{H} = \frac{1}{N} \sum_p H(\sigma_p), \qquad
        H(\sigma_p) = -\sum_c \sigma_{pc} \log \sigma_{pc}

    N = pixels over the batch (nodes for ``(N, C)``); 0 · log 0 = 0, and the logarithm is taken
    of σ clamped at the smallest normal float so the gradient at σ = 0 is finite too. 0 for
    one-hot predictions, log C for uniform ones.

    Args:
        probs: ``(B, C, H, W)`` or ``(N, C)`` class probabilities.

    Returns:
        Scalar loss.
    """
    if not isinstance(probs, Tensor) or probs.dim() not in (2, 4) or not probs.is_floating_point():
        raise TypeError("probs must be a float (B, C, H, W) or (N, C) tensor, got "
                        f"{_checks._describe(probs)}")
    _checks.check_finite("probs", probs)
    log = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
    return -(probs * log).sum(1).mean()


class EntropyLoss(nn.Module):
    """Module form of :func:`entropy_loss`: ``forward(probs)``."""

    def forward(self, probs: Tensor) -> Tensor:
        return entropy_loss(probs)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


# -- normalised cut and kernel k-means -------------------------------------------------------


def _segments(probs: Tensor, graph):
    """The graph and the soft segments in the 4-D node layout, in one dtype."""
    graph, values = _node_values(probs, graph)
    if isinstance(graph, WindowGraph) and graph.dtype != values.dtype:
        graph = graph.to(values.dtype)
    return graph, values


def normalized_cut_loss(probs: Tensor, graph, *, eps: float = SEGMENT_EPS) -> Tensor:
    r"""The normalised-cut loss of soft segments (Tang et al. CVPR 2018; slides).

    For each image, with the soft segments :math:`S_k = \sigma_{\cdot k}` (column k of the
    ``(N, C)`` probabilities), the affinity matrix W of ``graph`` and the degrees d = W·1:

    .. math::
        L_{NC} = \sum_k \frac{S_k^\top W (1 - S_k)}{d^\top S_k + \epsilon}

    the relaxation of Shi and Malik's normalised cut (a partition gives Σ_k cut(A_k, Ā_k) /
    assoc(A_k, V)). Averaged over the images of the batch. W is the full matrix of the graph,
    self loops included (both in W(1 − S_k) and in d); the window graph computes W(1 − S_k) with
    one ``window_aggregate``, so a single segment covering everything gives exactly 0. ε keeps an
    empty segment's term at 0 instead of 0/0. An EdgeGraph / PyG ``Data`` is one image (call the
    loss per graph of a PyG ``Batch``).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, soft
            segments σ (class probabilities).
        graph: the affinities W, e.g. ``pixel_graph(image, radius=5)``.
        eps: ε in the denominators.

    Returns:
        Scalar loss in [0, C].
    """
    eps = _check_eps(eps)
    graph, values = _segments(probs, graph)
    cut = (values * graph._aggregate(1 - values)).sum((2, 3))
    degree = graph.degree().to(values.dtype).unsqueeze(1)
    volume = (values * degree).sum((2, 3))
    return (cut / (volume + eps)).sum(1).mean()


class NormalizedCutLoss(nn.Module):
    """Module form of :func:`normalized_cut_loss`: ``forward(probs, graph)``."""

    def __init__(self, *, eps: float = SEGMENT_EPS) -> None:
        super().__init__()
        self.eps = _check_eps(eps)

    def forward(self, probs: Tensor, graph) -> Tensor:
        return normalized_cut_loss(probs, graph, eps=self.eps)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eps={self.eps})"


def kernel_kmeans_loss(probs: Tensor, graph, *, eps: float = SEGMENT_EPS) -> Tensor:
    r"""The kernel k-means loss of soft segments (Tang et al. ECCV 2018; slides).

    .. math::
        L_{KKM} = -\sum_k \frac{S_k^\top W S_k}{1^\top S_k + \epsilon}

    per image, averaged over the batch; W is the kernel (affinity) matrix of ``graph``, self
    loops included. Kernel k-means minimises
    :math:`\sum_k \sum_{p \in A_k} \|\phi_p - \mu_k\|^2
    = \sum_p W_{pp} - \sum_k S_k^\top W S_k / 1^\top S_k`; the first sum does not depend on the
    segmentation and is dropped. The slides write the identity with a sign slip (a positive
    association term): both terms are negative here, and the loss decreases as segments gather
    strongly connected pixels. ε keeps an empty segment's term at 0.

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, soft
            segments σ.
        graph: the kernel W.
        eps: ε in the denominators.

    Returns:
        Scalar loss (≤ 0 for non-negative weights).
    """
    eps = _check_eps(eps)
    graph, values = _segments(probs, graph)
    association = (values * graph._aggregate(values)).sum((2, 3))
    size = values.sum((2, 3))
    return -(association / (size + eps)).sum(1).mean()


class KernelKMeansLoss(nn.Module):
    """Module form of :func:`kernel_kmeans_loss`: ``forward(probs, graph)``."""

    def __init__(self, *, eps: float = SEGMENT_EPS) -> None:
        super().__init__()
        self.eps = _check_eps(eps)

    def forward(self, probs: Tensor, graph) -> Tensor:
        return kernel_kmeans_loss(probs, graph, eps=self.eps)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eps={self.eps})"


# -- batch-based class distance (BCD) --------------------------------------------------------


def _cosine(dots: Tensor, norm_a: Tensor, norm_b: Tensor) -> Tensor:
    return dots / (norm_a * norm_b + COS_EPS)


def bcd_loss(features: Tensor, labels, *, variant: str = "paper",
             ignore_index: int = IGNORE) -> Tensor:
    r"""The batch-based class distance (BCD) loss of RRM's journal version (thesis Eq. 2.24–2.26).

    With :math:`\cos(a, b) = a^\top b / (\|a\|\|b\| + 10^{-7})`, class 0 the background, Ω⁰_b
    the background pixels of image b, Ω^k the pixels of foreground class k over the whole
    batch (all B·H·W pixels), the centres :math:`\mu^0_b = \overline{f}_{\Omega^0_b}` (per image)
    and :math:`\mu^k = \overline{f}_{\Omega^k}` (per batch), 𝒦 the foreground classes present
    in the batch and ℬ the images with background pixels:

    ``variant="paper"`` (default): the four means of Eq. 2.24–2.26, each with weight 1,

    .. math::
        L_{BCD} = \frac{1}{|\mathcal B|} \sum_{b \in \mathcal B} \overline{1 - \cos(f_i,
            \mu^0_b)}_{i \in \Omega^0_b}
          + \frac{1}{|\mathcal K|} \sum_{k \in \mathcal K} \overline{1 - \cos(f_i,
            \mu^k)}_{i \in \Omega^k}
          + \overline{1 + \cos(\mu^k, \mu^l)}_{k \ne l \in \mathcal K}
          + \overline{1 + \cos(\mu^k, \mu^0_b)}_{k \in \mathcal K,\, b \in \mathcal B}

    where the foreground intra sum runs over all B·H·W pixels of the batch (DESIGN §6: as
    printed its index stops at B). A mean over an empty set is 0 (no background anywhere, one
    foreground class, ...).

    ``variant="official"``: the released code (``compute_dis_no_batch`` in ``tool/myTool.py`` of
    github.com/zbf1991/RRM), which balances the two intra means into one term over all
    centres and halves the two inter means:

    .. math::
        L_{BCD} = \frac{1}{B + |\mathcal K|} \Big[ \sum_{b=1}^{B}
            \overline{1 - \cos(f_i, \mu^0_b)}_{\Omega^0_b}
            + \sum_{k \in \mathcal K} \overline{1 - \cos(f_i, \mu^k)}_{\Omega^k} \Big]
          + \tfrac12\, \overline{1 + \cos(\mu^k, \mu^l)}_{k \ne l}
          + \tfrac12\, \overline{1 + \cos(\mu^k, \mu^0_b)}_{k,\, b \le B}

    with its edge cases: an image without background pixels adds the constant 2 to the intra
    bracket and 1 (its centre is the zero vector, cos = 0) to every background pair of the inter
    mean; with one foreground class the foreground-pair mean is 0; with no background pixel in
    the batch the background half is the constant 1; with no foreground class the inter terms
    are 0. On one input the two differ by about a factor 2 (the halves and the balancing).

    The intra terms pull every pixel towards its class centre; the inter terms push the
    centres of different classes apart (cos → −1), foreground against foreground and against
    each image's background. Pixels labelled ``ignore_index`` take no part (the official code
    labels every pixel with the argmax of the segmentation: pass ``logits.argmax(1)``); with no
    labelled pixel the loss is 0. Gradients flow into ``features`` only.

    Args:
        features: ``(B, F, H, W)`` deep features.
        labels: ``(B, H, W)`` int64 class map (0 = background), ``ignore_index`` = unknown.
        variant: ``"paper"`` (Eq. 2.24–2.26) or ``"official"`` (the released code).
        ignore_index: the unknown label.

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("features", features)
    _checks.check_choice("variant", variant, _checks.VARIANTS)
    ignore_index = _check_ignore_index(ignore_index)
    labels = _checks.as_label_batch(labels, "labels")
    batch, _, height, width = features.shape
    if tuple(labels.shape) != (batch, height, width):
        raise ValueError(f"labels must have shape {(batch, height, width)} to match features of "
                         f"shape {tuple(features.shape)}, got {tuple(labels.shape)}")
    if labels.device != features.device:
        raise ValueError(f"labels must be on the device of features ({features.device}), got "
                         f"{labels.device}")
    _checks.check_seed_values("labels", labels, None, ignore_index)
    if not bool((labels != ignore_index).any()):
        return features.sum() * 0
    stats = _bcd_statistics(features, labels, ignore_index)
    if variant == "paper":
        return _bcd_paper(features, stats)
    return _bcd_official(features, stats)


def _mean_or_zero(values: Tensor) -> Tensor:
    return values.mean() if values.numel() else values.new_zeros(())


def _bcd_statistics(features: Tensor, labels: Tensor, ignore_index: int) -> dict:
    """Class centres and per-class intra sums, every sum a scatter (O(B·F·n) memory)."""
    batch, channels = features.shape[:2]
    flat = features.flatten(2)  # (B, F, n)
    labels = labels.flatten(1)  # (B, n)
    known = labels != ignore_index
    # slot K collects the unknown pixels
    num_classes = int(labels[known].max()) + 1
    index = torch.where(known, labels, num_classes)
    counts = flat.new_zeros(batch, num_classes + 1).scatter_add_(
        1, index, flat.new_ones(index.shape))
    sums = flat.new_zeros(batch, channels, num_classes + 1).scatter_add(
        2, index.unsqueeze(1).expand(-1, channels, -1), flat)
    bg_count = counts[:, 0]
    bg_centre = sums[:, :, 0] / bg_count.clamp_min(1).unsqueeze(1)  # (B, F), per image
    fg_count = counts[:, 1:num_classes].sum(0)  # (K - 1,)
    fg_centres = sums[:, :, 1:num_classes].sum(0) / fg_count.clamp_min(1)  # (F, K - 1), batch
    table = torch.cat([bg_centre.unsqueeze(2),
                       fg_centres.unsqueeze(0).expand(batch, -1, -1),
                       flat.new_zeros(batch, channels, 1)], dim=2)  # (B, F, K + 1)
    own = table.gather(2, index.unsqueeze(1).expand(-1, channels, -1))  # each pixel's centre
    distance = 1 - _cosine((flat * own).sum(1), flat.norm(dim=1), own.norm(dim=1))
    distance_sums = flat.new_zeros(batch, num_classes + 1).scatter_add(1, index, distance)
    present = torch.nonzero(fg_count > 0).flatten()
    fg_centre = fg_centres[:, present].t()  # (K', F)
    return {"has_bg": bg_count > 0, "bg_count": bg_count, "bg_centre": bg_centre,
            "bg_intra": distance_sums[:, 0] / bg_count.clamp_min(1),
            "fg_intra": distance_sums[:, 1:num_classes].sum(0)[present] / fg_count[present],
            "fg_centre": fg_centre}


def _centre_cosines(stats: dict) -> tuple[Tensor, Tensor]:
    """cos between distinct foreground centres (flat) and foreground × background centres."""
    fg_centre, bg_centre = stats["fg_centre"], stats["bg_centre"]
    fg_norm, bg_norm = fg_centre.norm(dim=1), bg_centre.norm(dim=1)
    pair_cos = _cosine(fg_centre @ fg_centre.t(), fg_norm.unsqueeze(1), fg_norm.unsqueeze(0))
    off_diagonal = ~torch.eye(len(fg_centre), dtype=torch.bool, device=fg_centre.device)
    centre_cos = _cosine(fg_centre @ bg_centre.t(), fg_norm.unsqueeze(1), bg_norm.unsqueeze(0))
    return pair_cos[off_diagonal], centre_cos


def _bcd_paper(features: Tensor, stats: dict) -> Tensor:
    has_bg = stats["has_bg"]
    fg_fg, fg_bg = _centre_cosines(stats)
    return (_mean_or_zero(stats["bg_intra"][has_bg]) + _mean_or_zero(stats["fg_intra"])
            + _mean_or_zero(1 + fg_fg) + _mean_or_zero(1 + fg_bg[:, has_bg]))


def _bcd_official(features: Tensor, stats: dict) -> Tensor:
    has_bg, batch = stats["has_bg"], features.shape[0]
    bg_intra = torch.where(has_bg, stats["bg_intra"], torch.full_like(stats["bg_intra"], 2.0))
    fg_intra = stats["fg_intra"]
    intra = (bg_intra.sum() + fg_intra.sum()) / (batch + len(fg_intra))
    if len(fg_intra) == 0:
        return intra
    fg_fg, centre_cos = _centre_cosines(stats)
    fg_fg = _mean_or_zero(1 + fg_fg)
    if not bool(has_bg.any()):
        return intra + fg_fg / 2 + 1
    fg_bg = torch.where(has_bg.unsqueeze(0), 1 + centre_cos, torch.ones_like(centre_cos)).mean()
    return intra + fg_fg / 2 + fg_bg / 2


class BCDLoss(nn.Module):
    """Module form of :func:`bcd_loss`: ``forward(features, labels)``."""

    def __init__(self, *, variant: str = "paper", ignore_index: int = IGNORE) -> None:
        super().__init__()
        _checks.check_choice("variant", variant, _checks.VARIANTS)
        self.variant = variant
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, features: Tensor, labels) -> Tensor:
        return bcd_loss(features, labels, variant=self.variant, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(variant={self.variant!r}, "
                f"ignore_index={self.ignore_index})")
