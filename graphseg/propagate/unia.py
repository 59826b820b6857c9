r"""UniA's affinity refinement: Sinkhorn normalisation, symmetrisation, mutual complementing.

UniA (Yang, Meng, Fu, Wang & Song, "Tackling Ambiguity from Perspective of Uncertainty Inference
and Affinity Diversification for Weakly Supervised Semantic Segmentation", arXiv:2404.08195)
turns an attention matrix into an affinity for the random walk by Sinkhorn normalisation followed
by :math:`(M + M^\top)/2`, and fuses three pseudo-label maps by mutual complementing refinement
(its Eq. 12–15). Sinkhorn runs densely on ``(B, N, N)`` attention or directly on a
:class:`~graphseg.WindowGraph` (and PyG / :class:`~graphseg.EdgeGraph` graphs) as diagonal
scalings of the stored weights, so a pixel graph never becomes N×N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.edges import EdgeGraph, as_graph
from graphseg.graph.window import WindowGraph
from graphseg.ops import window_aggregate_transpose
from graphseg.ops.reference import gather_neighbours
from graphseg.propagate.random_walk import background_channel

__all__ = [
    "MCR_VARIANTS",
    "mutual_complementing_refinement",
    "sinkhorn",
    "sinkhorn_graph",
    "unia_affinity",
    "unia_random_walk",
]

IGNORE = 255
MCR_VARIANTS = ("official", "consensus")
NUM_ITER = 100
TOL = 1e-4
EPS = 1e-12


def _check_options(num_iter, tol, eps) -> None:
    _checks.check_positive("num_iter", num_iter, integer=True)
    _checks.check_positive("tol", tol, allow_zero=True)
    _checks.check_positive("eps", eps)


def _inverse(sums: Tensor, eps: float) -> Tensor:
    """``1 / sums``, 0 for empty rows or columns (sum ≤ eps), which cannot be normalised."""
    return torch.where(sums > eps, 1.0 / sums.clamp_min(eps), torch.zeros_like(sums))


def _scalings(matvec, rmatvec, ones: Tensor, num_iter: int, tol: float,
              eps: float) -> tuple[Tensor, Tensor]:
    """The Sinkhorn–Knopp diagonal scalings u, v of a non-negative matrix A given as its
    mat-vecs ``A x`` and ``Aᵀ x``: ``diag(u) A diag(v)`` has unit row and column sums.

    Each iteration normalises the rows (u = 1 / A v), then the columns (v = 1 / Aᵀ u); after the
    column step the columns sum to 1 exactly, so convergence is judged on the rows, over the
    non-empty ones. Two mat-vecs per iteration."""
    v = ones
    a_v = matvec(v)
    for _ in range(num_iter):
        u = _inverse(a_v, eps)
        v = _inverse(rmatvec(u), eps)
        a_v = matvec(v)
        rows = u * a_v
        error = torch.where(a_v > eps, (rows - 1).abs(), torch.zeros_like(rows))
        if float(error.detach().max()) <= tol:
            break
    return u, v


def sinkhorn(attention: Tensor, *, num_iter: int = NUM_ITER, tol: float = TOL,
             eps: float = EPS) -> Tensor:
    r"""Sinkhorn–Knopp normalisation of a dense non-negative attention / affinity matrix.

    Alternates row and column normalisation (Sinkhorn & Knopp, Pacific J. Math. 21, 1967,
    doi:10.2140/pjm.1967.21.343), as UniA does before its random walk:

    .. math::
        u \leftarrow 1 \oslash (A v), \qquad v \leftarrow 1 \oslash (A^\top u), \qquad
        M = \operatorname{diag}(u)\, A \operatorname{diag}(v)

    until every row of M sums to 1 within ``tol`` (the columns sum to 1 after each column step)
    or ``num_iter`` row-and-column steps have run. Rows and columns that are entirely zero stay
    zero. The iteration converges when A has a positive diagonal (attention does; so does a
    graph with self loops), and its limit is a diagonal scaling of A when every positive entry
    lies on a positive diagonal ("total support": any symmetric pattern with a positive
    diagonal). Without a positive diagonal it may not converge and stops at ``num_iter``.
    Each iteration costs two mat-vecs. Differentiable in ``attention``.

    Args:
        attention: ``(B, N, N)`` or ``(N, N)`` non-negative float matrix (e.g. softmax or sigmoid
            attention between N tokens).
        num_iter: at most this many row-and-column normalisation pairs (default 100).
        tol: stop once every non-empty row sums to 1 within ``tol`` (default 1e-4, a float32-safe
            value; pass 0 to always run ``num_iter`` steps).
        eps: a row or column whose sum is ≤ eps is treated as empty (default 1e-12).

    Returns:
        The doubly stochastic matrix, shaped like ``attention``.

    Shapes:
        ``(B, N, N)`` → ``(B, N, N)``; ``(N, N)`` → ``(N, N)``.

    Example:
        >>> sinkhorn(torch.rand(2, 16, 16)).sum(-1).shape
        torch.Size([2, 16])
    """
    if not isinstance(attention, Tensor):
        raise TypeError("attention must be a (B, N, N) or (N, N) float tensor, got "
                        f"{_checks._describe(attention)}")
    if attention.dim() not in (2, 3) or attention.shape[-1] != attention.shape[-2]:
        raise ValueError("attention must be a square (B, N, N) or (N, N) matrix, got shape "
                         f"{tuple(attention.shape)}")
    if not attention.is_floating_point():
        raise TypeError(f"attention must be a floating-point tensor, got dtype {attention.dtype}")
    _checks.check_finite("attention", attention)
    if attention.numel() and bool((attention < 0).any()):
        raise ValueError("attention must be non-negative (Sinkhorn scales rows and columns by "
                         f"positive factors), got a minimum of {float(attention.min())}")
    _check_options(num_iter, tol, eps)
    matrix = attention if attention.dim() == 3 else attention.unsqueeze(0)
    u, v = _scalings(lambda x: (matrix @ x.unsqueeze(-1)).squeeze(-1),
                     lambda x: (matrix.transpose(1, 2) @ x.unsqueeze(-1)).squeeze(-1),
                     matrix.new_ones(matrix.shape[:2]), num_iter, tol, eps)
    out = u.unsqueeze(2) * matrix * v.unsqueeze(1)
    return out if attention.dim() == 3 else out[0]


def _check_non_negative(graph) -> None:
    if isinstance(graph, WindowGraph):
        weights = [("graph weight", graph.weight), ("graph self_weight", graph.self_weight)]
    else:
        weights = [("graph edge_weight", graph.edge_weight)]
    for name, weight in weights:
        if weight is not None and weight.numel() and bool((weight < 0).any()):
            raise ValueError(f"{name} must be non-negative for Sinkhorn normalisation, got a "
                             f"minimum of {float(weight.min())}")


def _sinkhorn_window(graph: WindowGraph, num_iter: int, tol: float, eps: float) -> WindowGraph:
    weight, offsets, self_weight = graph.weight, graph.offsets, graph.self_weight

    def rmatvec(x: Tensor) -> Tensor:
        out = window_aggregate_transpose(weight, x, offsets)
        return out if self_weight is None else out + self_weight * x

    u, v = _scalings(graph._aggregate, rmatvec,
                     weight.new_ones(graph.batch_size, 1, *graph.image_size), num_iter, tol, eps)
    scaled = u * weight * gather_neighbours(v, offsets)
    scaled_self = None if self_weight is None else u * self_weight * v
    return WindowGraph(scaled, offsets, self_weight=scaled_self, x=graph.x)


def _sinkhorn_edges(graph: EdgeGraph, num_iter: int, tol: float, eps: float) -> EdgeGraph:
    source, target = graph.edge_index
    weight = graph.edge_weight

    def scatter(index: Tensor, values: Tensor) -> Tensor:
        return values.new_zeros(graph.num_nodes).index_add(0, index, values)

    u, v = _scalings(lambda x: scatter(target, weight * x[source]),
                     lambda x: scatter(source, weight * x[target]),
                     weight.new_ones(graph.num_nodes), num_iter, tol, eps)
    return EdgeGraph(graph.edge_index, u[target] * weight * v[source], graph.num_nodes)


def sinkhorn_graph(graph, *, num_iter: int = NUM_ITER, tol: float = TOL, eps: float = EPS):
    r"""Sinkhorn–Knopp normalisation of a sparse graph, kept in its own storage.

    The same iteration as :func:`sinkhorn` on the adjacency A of ``graph`` (rows: the pixel p and
    its window, ``A[p, p + o_k] = w_k(p)``, self weight on the diagonal), with the mat-vecs
    ``A v`` = :meth:`WindowGraph.aggregate` and ``Aᵀ u`` = the transposed window aggregation.
    The result scales each stored weight by per-node factors,

    .. math::
        w'_k(p) = u(p)\, w_k(p)\, v(p + o_k), \qquad s'(p) = u(p)\, s(p)\, v(p),

    so its :meth:`~WindowGraph.degree` (row sums) and :meth:`~WindowGraph.in_degree` (column
    sums) are 1 within ``tol`` and nothing N×N is ever formed. Differentiable in the weights.

    Args:
        graph: a :class:`WindowGraph`, a PyG ``Data`` or an :class:`EdgeGraph` with
            non-negative weights.
        num_iter, tol, eps: as in :func:`sinkhorn` (defaults 100, 1e-4, 1e-12).

    Returns:
        A graph of the input's kind (a PyG ``Data`` comes back as an :class:`EdgeGraph`).
    """
    graph = as_graph(graph)
    _check_non_negative(graph)
    _check_options(num_iter, tol, eps)
    if isinstance(graph, WindowGraph):
        return _sinkhorn_window(graph, num_iter, tol, eps)
    return _sinkhorn_edges(graph, num_iter, tol, eps)


def unia_affinity(attention, *, num_iter: int = NUM_ITER, tol: float = TOL, eps: float = EPS):
    r"""UniA's affinity: Sinkhorn normalisation, then symmetrisation.

    .. math::
        M = \mathrm{Sinkhorn}(A), \qquad \hat A = \tfrac12 (M + M^\top)

    Â is symmetric and, since the columns of M are its transpose's rows, still doubly
    stochastic: a random-walk transition matrix that is its own transpose.

    - A tensor ``(B, N, N)`` / ``(N, N)`` gives a dense tensor of that shape. To propagate on
      it with :func:`graphseg.propagate.random_walk`, wrap it as a graph, e.g.
      ``EdgeGraph(*torch_geometric.utils.dense_to_sparse(a), num_nodes=N)`` for one image.
    - A :class:`WindowGraph` (or PyG graph) gives a graph of that kind, symmetrised with its
      own :meth:`~WindowGraph.symmetrize` (the offset table must be closed under negation),
      ready for ``random_walk(graph, probs, beta=1)`` — β = 1 keeps the doubly stochastic
      weights; the row normalisation inside the walk then changes nothing.

    Args:
        attention: non-negative attention matrix or graph.
        num_iter, tol, eps: Sinkhorn options, see :func:`sinkhorn`.

    Returns:
        The symmetric doubly stochastic affinity, of the input's kind.
    """
    if isinstance(attention, Tensor):
        matrix = sinkhorn(attention, num_iter=num_iter, tol=tol, eps=eps)
        return (matrix + matrix.transpose(-1, -2)) / 2
    return sinkhorn_graph(attention, num_iter=num_iter, tol=tol, eps=eps).symmetrize()



def _token_attention(attention, features, grid) -> tuple[Tensor, tuple[int, int]]:
    """``(B, N, N)`` attention over an ``h × w`` token grid, from attention or features."""
    if (attention is None) == (features is None):
        raise ValueError("give exactly one of attention (B, [heads,] N, N) and features "
                         "(B, D, h, w)")
    if features is not None:
        features = _checks.check_tensor4d("features", features, what="(B, D, h, w)")
        batch, dim, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        # a transformer's attention between the tokens: softmax_j(f_i · f_j / √D)
        return torch.softmax(tokens @ tokens.transpose(1, 2) / dim ** 0.5, -1), (height, width)
    if not isinstance(attention, Tensor) or not attention.is_floating_point():
        raise TypeError("attention must be a float (B, N, N) or (B, heads, N, N) tensor, got "
                        f"{_checks._describe(attention)}")
    if attention.dim() == 4:
        attention = attention.mean(1)  # heads averaged, as AFA and UniA read MHSA
    if attention.dim() != 3 or attention.shape[1] != attention.shape[2]:
        raise ValueError("attention must have shape (B, N, N) or (B, heads, N, N), got "
                         f"{tuple(attention.shape)}")
    if grid is None:
        raise ValueError("attention needs grid=(h, w), the token grid with h * w = N")
    height, width = (int(g) for g in grid)
    if height * width != attention.shape[1]:
        raise ValueError(f"grid {(height, width)} holds {height * width} tokens, but attention "
                         f"is over N = {attention.shape[1]}")
    return attention, (height, width)


def unia_random_walk(cams: Tensor, *, attention: Tensor | None = None,
                     features: Tensor | None = None, grid: tuple[int, int] | None = None,
                     num_steps: int = 2, alpha: float = 16.0, num_iter: int = NUM_ITER,
                     tol: float = TOL, eps: float = EPS) -> Tensor:
    r"""UniA's pseudo-labels in one call: the CAMs walked on the Sinkhorn-normalised, symmetrised
    attention between the tokens of an ``h × w`` grid (UniA §3.3; :func:`unia_affinity`).

    .. math::
        \hat A = \tfrac12 (M + M^\top),\quad M = \mathrm{Sinkhorn}(A), \qquad
        s^{(t)} = \hat A^{\,t} s^{(0)}

    with :math:`s^{(0)}` the foreground CAMs average-pooled to the grid and a background row
    :math:`(1 - \max_c \mathrm{cam}_c)^\alpha` (AffinityNet's background,
    :func:`background_channel`). Â is symmetric and doubly stochastic, so it is its own
    transition matrix (no β, no row normalisation). The scores are upsampled bilinearly to the
    CAMs' resolution; take their ``argmax`` (channel 0 = background).

    UniA gives the walk's background rule and step count only through the code it builds on;
    the defaults here (α = 16, t = 2) are AffinityNet's background and a short walk, since a
    dense doubly stochastic matrix mixes in a few steps. Both are arguments.

    Args:
        cams: ``(B, C, H, W)`` foreground class activation maps in [0, 1].
        attention: ``(B, N, N)`` or ``(B, heads, N, N)`` non-negative attention between the
            ``N = h·w`` tokens (heads are averaged), with ``grid=(h, w)``.
        features: instead of ``attention``, ``(B, D, h, w)`` token features; the attention is
            then :math:`\mathrm{softmax}_j(f_i \cdot f_j / \sqrt{D})`.
        grid: the token grid ``(h, w)`` of ``attention``.
        num_steps: walk steps t.
        alpha: background exponent.
        num_iter, tol, eps: Sinkhorn options, see :func:`sinkhorn`.

    Returns:
        ``(B, 1 + C, H, W)`` scores, background first.
    """
    cams = _checks.check_tensor4d("cams", cams)
    _checks.check_positive("num_steps", num_steps, integer=True, allow_zero=True)
    matrix, (height, width) = _token_attention(attention, features, grid)
    if matrix.shape[0] != cams.shape[0]:
        raise ValueError(f"cams has batch size {cams.shape[0]} but the attention has "
                         f"{matrix.shape[0]}")
    affinity = unia_affinity(matrix.to(cams.dtype), num_iter=num_iter, tol=tol, eps=eps)
    values = torch.cat([background_channel(cams, alpha), cams], 1)
    scores = F.adaptive_avg_pool2d(values, (height, width)).flatten(2)
    for _ in range(num_steps):
        scores = scores @ affinity  # Â symmetric: (Â s)ᵀ = sᵀ Â
    scores = scores.unflatten(2, (height, width))
    return F.interpolate(scores, size=cams.shape[2:], mode="bilinear", align_corners=False)

# -- mutual complementing refinement ---------------------------------------------------------


def _foreground(labels: Tensor) -> Tensor:
    return (labels != 0) & (labels != IGNORE)


def mutual_complementing_refinement(
    cam_label,
    refined_label,
    affinity_label,
    *,
    variant: str = "official",
    cam_prior: bool = True,
) -> Tensor:
    r"""UniA's mutual complementing refinement of three pseudo-label maps (arXiv:2404.08195,
    its Eq. 12–15).

    Inputs are ``(B, H, W)`` maps with 0 = background, 1..C = foreground classes and 255 =
    uncertain / ignore: P (``cam_label``, the thresholded CAM), R (``refined_label``, the CAM
    refined by PAR) and A (``affinity_label``, the CAM propagated on the Sinkhorn affinity and
    refined). Write fg(x) for "x is a foreground class" (x ∉ {0, 255}). Every rule below is a
    per-pixel selection (``torch.where``): label arithmetic written as sums of masked labels
    mixes class ids with 255.

    ``variant="official"`` (default) — the rule of UniA's released code (``dr`` in
    ``model/dense_refinement.py`` of github.com/zwyang6/UniA), step by step:

    1. :math:`M_1 = R` where fg(R) and not fg(A), else :math:`M_1 = A`: a foreground class of
       R fills pixels that A calls background or uncertain; R's background or 255 never
       overrides A.
    2. (``cam_prior=True``) :math:`M = P` where fg(P) and P = R, else :math:`M = M_1`: a
       foreground class on which the raw CAM and PAR agree wins. The code turns this step on
       after 6000 training iterations; pass ``cam_prior=False`` for the early phase.

    ``variant="consensus"`` — the symmetric reading of the refinement's idea as this project
    summarises it: among the known labels (≠ 255) of the three maps, a pixel keeps the label
    when all known labels agree (agreement, or one map's 255 complemented by the others),
    becomes 255 when two known labels differ (conflict), and stays 255 when all three are 255.
    ``cam_prior`` is unused here.

    The printed Eq. 12–15 could not be consulted while writing this; ``"official"`` is the
    released implementation, ``"consensus"`` a stricter alternative that never resolves a
    conflict by precedence.

    Args:
        cam_label: P, ``(B, H, W)`` or ``(H, W)`` integer map.
        refined_label: R, same shape.
        affinity_label: A, same shape.
        variant: ``"official"`` or ``"consensus"``.
        cam_prior: apply step 2 of the official rule.

    Returns:
        ``(B, H, W)`` int64 fused pseudo labels, 255 = ignore.
    """
    maps = []
    for name, labels in (("cam_label", cam_label), ("refined_label", refined_label),
                         ("affinity_label", affinity_label)):
        labels = _checks.as_label_batch(labels, name)
        _checks.check_seed_values(name, labels, None, IGNORE)
        maps.append(labels)
    for name, labels in (("refined_label", maps[1]), ("affinity_label", maps[2])):
        _checks.same_size("cam_label", maps[0], name, labels)
        if labels.device != maps[0].device:
            raise ValueError(f"cam_label and {name} must be on the same device, got "
                             f"{maps[0].device} and {labels.device}")
    _checks.check_choice("variant", variant, MCR_VARIANTS)
    cam, refined, affinity = maps
    if variant == "official":
        fused = torch.where(_foreground(refined) & ~_foreground(affinity), refined, affinity)
        if cam_prior:
            fused = torch.where(_foreground(cam) & (cam == refined), cam, fused)
        return fused
    stacked = torch.stack(maps)
    known = stacked != IGNORE
    # the smallest and largest known label per pixel (255 excluded): equal iff all agree
    low = torch.where(known, stacked, torch.full_like(stacked, torch.iinfo(torch.int64).max))
    high = torch.where(known, stacked, torch.full_like(stacked, -1))
    low, high = low.amin(0), high.amax(0)
    return torch.where(known.any(0) & (low == high), low, torch.full_like(low, IGNORE))
