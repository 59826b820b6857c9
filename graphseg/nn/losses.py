"""Losses of the learned propagation models (DESIGN §6, thesis ch. 3).

Affinity CNN: :func:`affinity_contrast_loss` (L_Ac, Eq. 3.10), :func:`affinity_regular_loss`
(L_Ar, Eq. 3.12) and their sum :func:`affinity_loss` (Eq. 3.9), all in the window layout
``(B, K, H, W)``. A²GNN: :func:`seed_cross_entropy` (Eq. 3.21), :func:`potts_loss` (L_reg,
Eq. 3.22 read as Potts), :func:`mp_loss` (Eq. 3.23–3.26) and :func:`consistency_check`
(Eq. 3.27–3.28).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.edges import as_graph
from graphseg.graph.window import WindowGraph, pixel_graph
from graphseg.nn.attention import VARIANTS
from graphseg.ops.window_ops import affinity_unchecked, aggregate_unchecked
from graphseg.seeds.pairs import PairLabels

__all__ = [
    "affinity_contrast_loss",
    "affinity_loss",
    "affinity_regular_loss",
    "consistency_check",
    "mp_loss",
    "mp_pixels",
    "potts_loss",
    "seed_cross_entropy",
]

IGNORE = 255
LOG_EPS = 1e-5  # the official code's epsilon inside both logarithms of L_Ac


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` holds; 0 (still in the autograd graph) when empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


# -- affinity CNN ----------------------------------------------------------------------------


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


def _l1_over_d(features: Tensor, offsets: Tensor) -> Tensor:
    """``‖F_i − F_j‖₁ / d`` for every window pair: the negative log of D_ij (Eq. 3.14)."""
    return affinity_unchecked(features, offsets.to(features.device), "l1") / features.shape[1]


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


# -- A²GNN -----------------------------------------------------------------------------------


def _check_logits_seeds(logits: Tensor, seeds: Tensor) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() not in (
            2, 4):
        raise TypeError("logits must be a float (B, C, H, W) or (N, C) tensor, got "
                        f"{_checks._describe(logits)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if not isinstance(seeds, Tensor) or seeds.is_floating_point() or seeds.dtype == torch.bool:
        raise TypeError(f"seeds must be an int64 tensor of shape {expected} (255 = unknown), "
                        f"got {_checks._describe(seeds)}")
    if tuple(seeds.shape) != expected:
        raise ValueError(f"seeds must have shape {expected} to match logits of shape "
                         f"{tuple(logits.shape)}, got {tuple(seeds.shape)}")
    _checks.check_seed_values("seeds", seeds, logits.shape[1], IGNORE)


def seed_cross_entropy(logits: Tensor, seeds: Tensor, *, variant: str = "official") -> Tensor:
    r"""Cross-entropy on the seeded nodes (thesis Eq. 3.21).

    .. math::
        \text{paper:}\quad L_{ce} = -\frac{1}{|Y_L|} \sum_{i \in Y_L} \log O_{i, y_i}
        \qquad
        \text{official:}\quad \overline{-\log O_{i, y_i}}_{y_i = 0}
            + \overline{-\log O_{i, y_i}}_{y_i > 0}

    Y_L is the set of seeded nodes (seed ≠ 255); the official code averages background and
    foreground seeds separately and adds the two means. An empty set contributes 0.

    Args:
        logits: ``(B, C, H, W)`` or ``(N, C)`` class logits.
        seeds: ``(B, H, W)`` or ``(N,)`` int64 seeds, 255 = unknown.
        variant: ``"paper"`` or ``"official"`` (default).

    Returns:
        Scalar loss.
    """
    _check_logits_seeds(logits, seeds)
    _checks.check_choice("variant", variant, VARIANTS)
    seeds = seeds.long()
    known = seeds != IGNORE
    loss = F.cross_entropy(logits, torch.where(known, seeds, torch.zeros_like(seeds)),
                           reduction="none")
    if variant == "paper":
        return _masked_mean(loss, known)
    return _masked_mean(loss, known & (seeds == 0)) + _masked_mean(loss, known & (seeds > 0))


def potts_loss(probs: Tensor, graph, *, node_weight: Tensor | None = None) -> Tensor:
    r"""L_reg, the dense-energy (Potts) loss on a pixel or general graph (thesis Eq. 2.19, 3.22).

    .. math::
        L_{reg} = \frac{1}{N} \sum_i s_i \sum_{j \in W(i)} G(i, j) \sum_c P_c(i)\,(1 - P_c(j))

    Eq. 3.22 as printed sums over all class pairs including c_i = c_j, which is constant; we read
    it as the Potts form of Eq. 2.19. The 1/N (N = nodes over the batch) is the official code's
    normaliser. On a WindowGraph it is computed as
    :math:`\sum_i s_i \langle P(i), (G (1 - P))(i) \rangle` with one ``window_aggregate`` (no N×N
    tensor; aggregating 1 − P rather than expanding into d·ΣP − ⟨P, GP⟩ avoids cancellation, so
    a constant one-hot prediction gives exactly 0); self weights are not used (G(i, i) = 0). A graph
    restricted to a window approximates RRM's fully connected energy (Eq. 2.20).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, class
            probabilities.
        graph: the pairwise weights G, e.g. ``pixel_graph(image, radius=5)`` at the resolution
            of ``probs``.
        node_weight: per-node factors :math:`s_i` on the energy of node i, ``(B, H, W)`` for a
            WindowGraph or ``(N,)`` for a PyG/EdgeGraph (None: all 1). RRM's soft filter
            (Eq. 2.21) is one, see :func:`graphseg.losses.pairwise.dense_energy_loss`.

    Returns:
        Scalar loss; 0 for the same one-hot prediction everywhere.
    """
    graph = as_graph(graph)
    if isinstance(graph, WindowGraph):
        _checks.check_tensor4d("probs", probs)
        _checks.same_batch("probs", probs, "graph weight", graph.weight)
        _check_node_weight(node_weight, probs, (probs.shape[0], *probs.shape[2:]))
        weight = graph.weight.to(probs.dtype)
        energy = (probs * aggregate_unchecked(weight, 1 - probs, graph.offsets)).sum(1)
        if node_weight is not None:
            energy = energy * node_weight.to(probs.dtype)
        return energy.sum() / energy.numel()
    if (not isinstance(probs, Tensor) or probs.dim() != 2 or probs.shape[0] != graph.num_nodes
            or not probs.is_floating_point()):
        raise ValueError(f"probs must be a float ({graph.num_nodes}, C) tensor for a graph of "
                         f"{graph.num_nodes} nodes, got {_checks._describe(probs)}")
    _check_node_weight(node_weight, probs, (graph.num_nodes,))
    edges = graph.without_self_loops()
    source, target = edges.edge_index
    pair = (probs[target] * (1 - probs[source])).sum(1)
    if node_weight is not None:
        pair = pair * node_weight.to(probs.dtype)[target]
    return (edges.edge_weight.to(probs.dtype) * pair).sum() / graph.num_nodes


def _check_node_weight(node_weight, probs: Tensor, expected: tuple) -> None:
    if node_weight is None:
        return
    if not isinstance(node_weight, Tensor) or not node_weight.is_floating_point():
        raise TypeError(f"node_weight must be a float tensor of shape {expected}, got "
                        f"{_checks._describe(node_weight)}")
    _checks.check_companion("node_weight", node_weight, expected, probs)
    _checks.check_finite("node_weight", node_weight)


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
