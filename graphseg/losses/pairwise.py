r"""Seed and pairwise losses of weakly supervised segmentation (DESIGN §6 "Losses" and "DFR").

Partial cross-entropy on the seeds, the quadratic (Laplacian) pairwise loss, the dense-energy
(Potts) loss with RRM's soft filter, and DFR's dynamic feature regularised loss with the losses of
its feature-consistency head (L_fd, L_fr). Every pairwise term runs on a
:class:`graphseg.WindowGraph` with the window primitives (memory O(B·K·H·W), never N×N); the
graph-level ones also take a PyG ``Data`` / :class:`graphseg.EdgeGraph` with ``(N, C)`` node values.

Each loss is a function and an ``nn.Module`` that holds its hyperparameters.

References:
    - Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018,
      arXiv:1803.09569 (partial cross-entropy, quadratic and Potts losses).
    - Zhang et al., "Reliability Does Matter: An End-to-End Weakly Supervised Semantic
      Segmentation Approach" (RRM), AAAI 2020, arXiv:1911.08039 (dense energy loss and soft
      filter, thesis Eq. 2.19–2.21).
    - Zhang, Xiao, Zhao, "Dynamic Feature Regularized Loss for Weakly Supervised Semantic
      Segmentation", arXiv:2108.01296; Pattern Recognition 164 (2025) 111540,
      doi:10.1016/j.patcog.2025.111540 (DFR, thesis Eq. 4.2–4.13).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.edges import EdgeGraph, as_graph
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import WindowGraph, pixel_graph
from graphseg.nn.losses import (
    IGNORE,
    LOG_EPS,
    _l1_over_d,
    _masked_mean,
    potts_loss,
    seed_cross_entropy,
)
from graphseg.ops.window_ops import affinity_unchecked
from graphseg.seeds.pairs import pair_labels

__all__ = [
    "DFRLoss",
    "DFRObjective",
    "DenseEnergyLoss",
    "FeatureDistanceLoss",
    "FeatureRegularLoss",
    "PAIR_SETS",
    "PartialCrossEntropyLoss",
    "QuadraticPairwiseLoss",
    "dense_energy_loss",
    "dfr_kernel",
    "dfr_loss",
    "dfr_objective",
    "dfr_pseudo_labels",
    "feature_distance_loss",
    "feature_regular_loss",
    "partial_cross_entropy",
    "quadratic_pairwise_loss",
]

PAIR_SETS = ("all", "labelled")
# DFR hyperparameters (thesis §4.3, DESIGN §6 "DFR")
DFR_RADIUS = 5
DFR_SHAPE = "square"
DFR_SIGMA_XY = 6.0
DFR_SIGMA_RGB = 0.5
DFR_SIGMA_FEAT = 50.0
DFR_CONFIDENCE = 0.98


# -- shared checks ---------------------------------------------------------------------------


def _node_values(probs, graph, name: str = "probs") -> tuple[WindowGraph | EdgeGraph, Tensor]:
    """Checks ``probs`` against ``graph`` and returns the graph with the values in the 4-D node
    layout: ``(B, C, H, W)`` for a WindowGraph, ``(1, C, N, 1)`` for an EdgeGraph."""
    graph = as_graph(graph)
    if isinstance(graph, WindowGraph):
        _checks.check_tensor4d(name, probs)
        _checks.same_batch(name, probs, "graph weight", graph.weight)
        return graph, probs
    if (not isinstance(probs, Tensor) or probs.dim() != 2 or probs.shape[0] != graph.num_nodes
            or not probs.is_floating_point()):
        raise ValueError(f"{name} must be a float ({graph.num_nodes}, C) tensor for a graph of "
                         f"{graph.num_nodes} nodes, got {_checks._describe(probs)}")
    _checks.check_finite(name, probs)
    return graph, probs.t().reshape(1, probs.shape[1], graph.num_nodes, 1)


def _check_seeds_for(seeds, probs: Tensor, ignore_index: int, name: str = "seeds") -> Tensor:
    """Seeds of shape ``(B, H, W)`` for ``(B, C, H, W)`` values or ``(N,)`` for ``(N, C)``."""
    expected = (probs.shape[0], *probs.shape[2:])
    if (not isinstance(seeds, Tensor) or seeds.is_floating_point() or seeds.is_complex()
            or seeds.dtype == torch.bool):
        raise TypeError(f"{name} must be an int64 tensor of shape {expected} ({ignore_index} = "
                        f"unknown), got {_checks._describe(seeds)}")
    _checks.check_companion(name, seeds, expected, probs)
    _checks.check_seed_values(name, seeds, probs.shape[1], ignore_index)
    return seeds.long()


def _check_ignore_index(ignore_index) -> int:
    return _checks._as_int("ignore_index", ignore_index)


# -- partial cross-entropy -------------------------------------------------------------------


def partial_cross_entropy(logits: Tensor, seeds: Tensor, *, ignore_index: int = IGNORE) -> Tensor:
    r"""Partial cross-entropy: the mean cross-entropy over the labelled pixels Ω_L.

    .. math::
        L_{pCE} = -\frac{1}{|\Omega_L|} \sum_{p \in \Omega_L} \log \sigma_{p, y_p},
        \qquad \sigma_p = \mathrm{softmax}(\text{logits}_p)

    (Tang et al. ECCV 2018; thesis Eq. 3.21 in its paper form). This is
    :func:`graphseg.nn.seed_cross_entropy` with ``variant="paper"``; the A²GNN official
    background/foreground split is that function's ``variant="official"``. No labelled pixel
    gives 0 (still in the autograd graph) instead of PyTorch's NaN.

    Args:
        logits: ``(B, C, H, W)`` or ``(N, C)`` class logits.
        seeds: ``(B, H, W)`` or ``(N,)`` int64 class ids, ``ignore_index`` = unknown.
        ignore_index: the unknown label (255 by graphseg's convention).

    Returns:
        Scalar loss.

    Shapes:
        logits ``(B, C, H, W)``, seeds ``(B, H, W)`` → ``()``.
    """
    ignore_index = _check_ignore_index(ignore_index)
    if ignore_index != IGNORE and isinstance(seeds, Tensor) and isinstance(logits, Tensor):
        # seed_cross_entropy knows 255 as the unknown label: check against ignore_index, remap
        if logits.dim() >= 2 and logits.shape[1] > IGNORE:
            raise ValueError(f"ignore_index={ignore_index} needs at most {IGNORE} classes "
                             f"(class {IGNORE} would read as unknown), got {logits.shape[1]}")
        if not (seeds.is_floating_point() or seeds.dtype == torch.bool) and logits.dim() >= 2:
            _checks.check_seed_values("seeds", seeds, logits.shape[1], ignore_index)
            seeds = torch.where(seeds == ignore_index, torch.full_like(seeds, IGNORE), seeds)
    return seed_cross_entropy(logits, seeds, variant="paper")


class PartialCrossEntropyLoss(nn.Module):
    """Module form of :func:`partial_cross_entropy`: ``forward(logits, seeds)``."""

    def __init__(self, *, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, seeds: Tensor) -> Tensor:
        return partial_cross_entropy(logits, seeds, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ignore_index={self.ignore_index})"


# -- quadratic pairwise loss -----------------------------------------------------------------


def quadratic_pairwise_loss(probs: Tensor, graph) -> Tensor:
    r"""The quadratic (Laplacian) pairwise loss of soft predictions (slides; Tang et al. 2018).

    .. math::
        L_{quad} = \frac{1}{N} \sum_{p} \sum_{q \in W(p)} w_{pq}\, \|\sigma_p - \sigma_q\|^2
        = \frac{2}{N} \sum_c \sigma_{\cdot c}^\top L\, \sigma_{\cdot c}
        \quad\text{(symmetric } w\text{)}

    The sum runs over ordered pairs: every edge of the graph once, so for a symmetric graph
    (a symmetric kernel on an offset table closed under negation) each unordered pair {p, q}
    counts twice. Normalised by N, the number of nodes over the batch (B·H·W pixels), like
    :func:`graphseg.nn.potts_loss`, so a weight such as λ does not depend on the image size.
    Self loops contribute nothing. On a WindowGraph each ‖σ_p − σ_q‖² comes from
    ``local_affinity(probs, offsets, "l2")`` (exact, no cancellation; memory of one
    ``(B, K, H, W)`` tensor).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, class
            probabilities σ.
        graph: the weights w, e.g. ``pixel_graph(image, radius=5)`` at the resolution of
            ``probs``.

    Returns:
        Scalar loss; 0 when σ is constant.
    """
    graph, values = _node_values(probs, graph)
    if isinstance(graph, WindowGraph):
        squared = affinity_unchecked(values, graph.offsets.to(values.device), "l2")
        return (graph.weight.to(values.dtype) * squared).sum() / graph.num_nodes
    source, target = graph.edge_index
    squared = (probs[target] - probs[source]).square().sum(1)
    return (graph.edge_weight.to(probs.dtype) * squared).sum() / graph.num_nodes


class QuadraticPairwiseLoss(nn.Module):
    """Module form of :func:`quadratic_pairwise_loss`: ``forward(probs, graph)``."""

    def forward(self, probs: Tensor, graph) -> Tensor:
        return quadratic_pairwise_loss(probs, graph)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(normalization='nodes')"


# -- dense energy (Potts) loss with RRM's soft filter ----------------------------------------


def _soft_filter(probs: Tensor, seeds: Tensor, ignore_index: int) -> Tensor:
    """RRM's S(i): 1 − max_c P_c(i) on seeded nodes, 1 elsewhere; a constant (detached)."""
    confidence = probs.detach().amax(1)
    return torch.where(seeds != ignore_index, 1 - confidence, torch.ones_like(confidence))


def dense_energy_loss(probs: Tensor, graph, *, seeds: Tensor | None = None,
                      ignore_index: int = IGNORE) -> Tensor:
    r"""The dense energy (Potts) loss with RRM's soft filter (thesis Eq. 2.19–2.21).

    .. math::
        L_{dense} = \frac{1}{N} \sum_i S(i) \sum_{j \in W(i)} G(i, j)
            \sum_c P_c(i)\,\big(1 - P_c(j)\big),
        \qquad
        S(i) = \begin{cases} 1 - \max_c P_c(i) & i \text{ seeded} \\ 1 & \text{otherwise}
               \end{cases}

    The soft filter S lowers the energy of seeded pixels in proportion to the confidence of the
    prediction there (RRM, Eq. 2.21); without ``seeds`` S ≡ 1 and this is the plain Potts loss
    :func:`graphseg.nn.potts_loss` (L_reg of A²GNN, Eq. 3.22 read as Potts), which computes both
    (one mechanism: S enters as its ``node_weight``). S is a constant of the loss (no gradient
    flows through the max), as in RRM's official code, whose hand-written backward treats the
    gate as fixed. The 1/N (N = pixels over the batch, i.e. 1/(hw) per image averaged over the
    batch) is the official normaliser. RRM's Eq. 2.20 sums over all pixel pairs with σ_d = 100:
    a window graph approximates it (use a downsampled image, or ``shape="rings"`` offsets, for
    long range).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, class
            probabilities P.
        graph: the kernel G, e.g. ``pixel_graph(image, radius=5, sigma_xy=100,
            sigma_rgb=15 / 255)`` (RRM's bandwidths) at the resolution of ``probs``.
        seeds: optional ``(B, H, W)`` or ``(N,)`` int64 seeds (``ignore_index`` = unknown) that
            switch the soft filter on.
        ignore_index: the unknown seed value.

    Returns:
        Scalar loss; 0 for the same one-hot prediction everywhere.

    Shapes:
        probs ``(B, C, H, W)``, graph weight ``(B, K, H, W)``, seeds ``(B, H, W)`` → ``()``.
    """
    ignore_index = _check_ignore_index(ignore_index)
    if seeds is None:
        return potts_loss(probs, graph)
    graph = _node_values(probs, graph)[0]
    seeds = _check_seeds_for(seeds, probs, ignore_index)
    return potts_loss(probs, graph, node_weight=_soft_filter(probs, seeds, ignore_index))


class DenseEnergyLoss(nn.Module):
    """Module form of :func:`dense_energy_loss`: ``forward(probs, graph, seeds=None)``."""

    def __init__(self, *, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, probs: Tensor, graph, seeds: Tensor | None = None) -> Tensor:
        return dense_energy_loss(probs, graph, seeds=seeds, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ignore_index={self.ignore_index})"


# -- DFR -------------------------------------------------------------------------------------


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


def dfr_pseudo_labels(probs: Tensor, seeds: Tensor, *, confidence: float = DFR_CONFIDENCE,
                      ignore_index: int = IGNORE) -> Tensor:
    r"""The labels that train DFR's feature-consistency head: seeds plus confident predictions.

    .. math::
        \hat y_i = \begin{cases} s_i & s_i \text{ known} \\
            \arg\max_c P_c(i) & s_i \text{ unknown and } \max_c P_c(i) > \gamma \\
            \text{unknown} & \text{otherwise} \end{cases}, \qquad \gamma = 0.98

    Seeds (the scribbles) always win over predictions. This is graphseg's reading of the
    confidence γ of thesis §4.3 (see :func:`dfr_objective`).

    Args:
        probs: ``(B, C, H, W)`` class probabilities (no gradient is taken).
        seeds: ``(B, H, W)`` int64 seeds, ``ignore_index`` = unknown.
        confidence: γ, in [0, 1].
        ignore_index: the unknown label.

    Returns:
        ``(B, H, W)`` int64 labels, ``ignore_index`` = unknown.
    """
    _checks.check_tensor4d("probs", probs)
    ignore_index = _check_ignore_index(ignore_index)
    seeds = _check_seeds_for(seeds, probs, ignore_index)
    _checks.check_positive("confidence", confidence, allow_zero=True)
    if confidence > 1:
        raise ValueError(f"confidence must be in [0, 1], got {confidence!r}")
    best, label = probs.detach().max(1)
    predicted = torch.where(best > confidence, label, torch.full_like(label, ignore_index))
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
                         pairs: str = "all", radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                         offsets: Tensor | None = None, sigma_xy: float = DFR_SIGMA_XY,
                         sigma_rgb: float = DFR_SIGMA_RGB, normalize: str | None = "imagenet",
                         ignore_index: int = IGNORE) -> Tensor:
    r"""L_fr, the shallow-kernel regulariser of DFR's head features (thesis Eq. 4.12).

    .. math::
        L_{fr} = \frac{1}{hw} \sum_{(i, j) \in R} G(i, j)\, \frac{\|F_i - F_j\|_1}{d}

    with G the colour-and-position Gaussian of :func:`graphseg.pixel_graph` (σ₁ = 6, σ₂ = 0.5 on
    ImageNet-normalised RGB, squared norms), d the feature channels, averaged over the batch.
    ``pairs="all"`` (default) takes R = every ordered window pair; ``pairs="labelled"`` takes
    R_A, the pairs whose two pixels are both labelled, as Eq. 4.12 is printed. The default is R
    because the text motivates L_fr by the pixels that have no label: restricted to R_A it would
    regularise exactly the pairs that L_fd already supervises and leave unlabelled regions
    free.

    Args:
        features: ``(B, d, H, W)`` head features.
        image: ``(B, 3, H', W')`` image in [0, 1]; resized (bilinear) to the feature size.
        labels: ``(B, H, W)`` int64 labels, needed for ``pairs="labelled"``.
        pairs: ``"all"`` (R) or ``"labelled"`` (R_A).
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

    def __init__(self, *, pairs: str = "all", radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
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
                  lambda_dfr: float = 1e-2, lambda_fr: float = 1e-3,
                  confidence: float = DFR_CONFIDENCE, pairs: str = "all",
                  radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                  sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                  sigma_feat: float = DFR_SIGMA_FEAT, normalize: str | None = "imagenet",
                  ignore_index: int = IGNORE) -> Tensor:
    r"""DFR's training objective, graphseg's reading of thesis Eq. 4.2–4.13.

    .. math::
        L = L_{pCE}(\text{logits}, s) + \lambda_1 L_{dfr}(P, I, F)
            + L_{fd}(F, \hat y) + \lambda_2 L_{fr}(F, I),
        \qquad \lambda_1 = 10^{-2},\ \lambda_2 = 10^{-3}

    with P = softmax(logits), s the scribble seeds, ŷ = :func:`dfr_pseudo_labels` (seeds plus
    predictions above γ = 0.98), :func:`partial_cross_entropy`, :func:`dfr_loss`,
    :func:`feature_distance_loss` and :func:`feature_regular_loss` (R_A uses ŷ). Which term
    each λ weighs, and that γ selects the head's training labels, are readings of DESIGN §6
    (the thesis text is not in the design notes): L_dfr takes λ₁ like A²GNN's L_reg, L_fr takes
    λ₂, L_fd weight 1.

    Args:
        logits: ``(B, C, H, W)`` segmentation logits.
        features: ``(B, d, H, W)`` head features, same resolution.
        image: ``(B, 3, H', W')`` image in [0, 1].
        seeds: ``(B, H, W)`` int64 seeds (scribbles), ``ignore_index`` = unknown.
        lambda_dfr: λ₁. lambda_fr: λ₂. confidence: γ. pairs: R or R_A for L_fr.
        radius, shape, sigma_xy, sigma_rgb, sigma_feat, normalize: the kernels.
        ignore_index: the unknown label.

    Returns:
        Scalar loss.
    """
    _checks.check_tensor4d("logits", logits)
    _checks.check_tensor4d("features", features)
    _checks.same_batch("logits", logits, "features", features)
    _checks.check_positive("lambda_dfr", lambda_dfr, allow_zero=True)
    _checks.check_positive("lambda_fr", lambda_fr, allow_zero=True)
    loss = partial_cross_entropy(logits, seeds, ignore_index=ignore_index)
    probs = logits.softmax(1)
    labels = dfr_pseudo_labels(probs, seeds, confidence=confidence, ignore_index=ignore_index)
    loss = loss + feature_distance_loss(features, labels, radius=radius, shape=shape,
                                        ignore_index=ignore_index)
    if lambda_dfr:
        loss = loss + lambda_dfr * dfr_loss(probs, image, features, radius=radius, shape=shape,
                                            sigma_xy=sigma_xy, sigma_rgb=sigma_rgb,
                                            sigma_feat=sigma_feat, normalize=normalize)
    if lambda_fr:
        loss = loss + lambda_fr * feature_regular_loss(
            features, image, labels=labels, pairs=pairs, radius=radius, shape=shape,
            sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, normalize=normalize,
            ignore_index=ignore_index)
    return loss


class DFRObjective(nn.Module):
    """Module form of :func:`dfr_objective`: ``forward(logits, features, image, seeds)``."""

    def __init__(self, *, lambda_dfr: float = 1e-2, lambda_fr: float = 1e-3,
                 confidence: float = DFR_CONFIDENCE, pairs: str = "all",
                 radius: int = DFR_RADIUS, shape: str = DFR_SHAPE,
                 sigma_xy: float = DFR_SIGMA_XY, sigma_rgb: float = DFR_SIGMA_RGB,
                 sigma_feat: float = DFR_SIGMA_FEAT, normalize: str | None = "imagenet",
                 ignore_index: int = IGNORE) -> None:
        super().__init__()
        _checks.check_positive("lambda_dfr", lambda_dfr, allow_zero=True)
        _checks.check_positive("lambda_fr", lambda_fr, allow_zero=True)
        _checks.check_choice("pairs", pairs, PAIR_SETS)
        self.options = {"lambda_dfr": lambda_dfr, "lambda_fr": lambda_fr,
                        "confidence": confidence, "pairs": pairs, "radius": radius,
                        "shape": shape, "sigma_xy": sigma_xy, "sigma_rgb": sigma_rgb,
                        "sigma_feat": sigma_feat, "normalize": normalize,
                        "ignore_index": _check_ignore_index(ignore_index)}

    def forward(self, logits: Tensor, features: Tensor, image, seeds: Tensor) -> Tensor:
        return dfr_objective(logits, features, image, seeds, **self.options)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{self.__class__.__name__}({options})"
