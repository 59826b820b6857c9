r"""Gaussian filtering in feature space on the permutohedral lattice (Adams, Baek, Davis,
"Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics 2010), the
filter behind Krähenbühl & Koltun's fully connected CRF (NIPS 2011).

Every point with features :math:`f \in \mathbb{R}^d` is lifted onto the hyperplane
:math:`\{x \in \mathbb{R}^{d+1} : \sum x = 0\}`, scaled so that the lattice's blur is a Gaussian
of standard deviation 1 in feature space, and falls into one simplex of the permutohedral
lattice. The filter is three linear maps:

- **splat**: each value is spread onto the :math:`d + 1` vertices of its simplex with its
  barycentric weights;
- **blur**: along each of the :math:`d + 1` lattice directions, every vertex takes
  itself plus half of its two neighbours (the kernel [½, 1, ½]);
- **slice**: each point reads its vertices back with the same weights, times
  :math:`1 / (1 + 2^{-d})`.

so ``filter = slice · blur · splat`` with ``slice = splatᵀ``, which approximates
:math:`\sum_j \exp(-\|f_i - f_j\|^2 / 2)\,v_j` (self term included) up to a constant
factor. Each direction's blur is symmetric, but on a lattice holding only the vertices the
points touch the directions do not commute, so the filter is nearly, not exactly, symmetric
(as pydensecrf's). Its cost is linear in the points and the
lattice vertices they touch, independent of the kernel's width. On the CPU the compiled
kernels of ``graphseg_ext`` build the lattice (a hash table of the vertices, one shard per
thread) and filter with it; elsewhere, or without the extension, this module builds it with
tensor operations (sorting integer keys instead of a hash table), so it runs on any device,
with splat and slice as sparse CSR products and the blur as gathers. Both build the same
lattice from the same float64 arithmetic and agree within float rounding; the gradient with
respect to the values is the exact transpose (the blurs in the opposite order).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.ops import window_ops
from graphseg.propagate._threads import free_threads, intra_op_threads

__all__ = ["PermutohedralLattice", "lattice_filter"]

_CODE_BITS = 62
"""Bits of the int64 codes that name a lattice vertex by its first d coordinates (wider
lattices are named by rows of coordinates, which is slower)."""
_EXT_MAX_DIM = 32
"""Most feature dimensions of the compiled lattice (the kernels keep a point on the stack)."""
_EXT_COORD_LIMIT = 2.0**29
"""Bound on the elevated coordinates of the compiled lattice (int32 vertex coordinates, with
room for the simplex corners and the neighbour steps)."""


class PermutohedralLattice:
    """The permutohedral lattice of a point set: each point's simplex vertices and
    barycentric weights, and each vertex's neighbours along the lattice directions.

    CPU lattices are built and filtered by the compiled kernels of ``graphseg_ext`` when it is
    loaded (and :func:`graphseg.ops.use_backend` has not chosen ``"reference"``), other ones
    with tensor operations; both build the same lattice (only the numbering of the vertices
    differs) and agree within float rounding.

    Args:
        features: ``(N, d)`` float positions in feature space, already divided by the
            kernel's standard deviations (e.g. ``(x / s_xy, y / s_xy, r / s_rgb, ...)``).

    Attributes:
        dim: d.
        index: ``(N, d + 1)`` vertex of each point's simplex corner (int32 when compiled,
            else int64).
        weight: ``(N, d + 1)`` barycentric weights (non-negative, summing to 1 per point).
        neighbours: ``(d + 1, 2, M)`` neighbours of the M vertices along each direction
            (−, +); ``M`` where the neighbour holds no point (int32 when compiled, else int64).
    """

    def __init__(self, features: Tensor) -> None:
        if not isinstance(features, Tensor) or features.dim() != 2 or (
                not features.is_floating_point()):
            raise ValueError("features must be a float (N, d) tensor, got "
                             f"{_checks._describe(features)}")
        if features.shape[1] == 0:
            raise ValueError(f"features must have at least one dimension, got shape "
                             f"{tuple(features.shape)}")
        if features.shape[0] == 0:
            raise ValueError(f"features must hold at least one point, got shape "
                             f"{tuple(features.shape)}")
        self.dim = d = features.shape[1]
        self.num_points = features.shape[0]
        wide = features.double()
        low, high = torch.aminmax(wide, dim=0)  # NaN and ±inf reach the extremes
        if not bool(torch.isfinite(torch.cat([low, high])).all()):
            raise ValueError("features must be finite")
        closed = _close_gaps(wide, _reach(d), low, high)
        extent = float(closed.abs().amax() if closed is not wide
                       else torch.maximum(-low, high).amax())
        self._ext = _extension_for(closed, extent)
        self._by_vertex = None
        if self._ext is not None:
            with _free_cores():
                self.index, weight, self.neighbours = self._ext.lattice_build(closed)
        else:
            self.index, weight, self.neighbours, self._by_vertex = _build(closed)
        self.weight = weight.to(features.dtype)
        self.num_vertices = self.neighbours.shape[2]
        # per dtype: the compiled filter's weights, or the sparse splat and slice matrices
        self._cache: dict[torch.dtype, Tensor | tuple[Tensor, Tensor]] = {}

    def filter(self, values: Tensor, *, scale: Tensor | None = None) -> Tensor:
        """``(N, C)`` → ``(N, C)``: splat, blur, slice (differentiable in ``values``).

        ``scale``: optional ``(N,)`` factors s, giving ``s ⊙ filter(s ⊙ values)``, the filter's
        matrix K as :math:`\\operatorname{diag}(s)\\, K \\operatorname{diag}(s)` (e.g.
        ``s = diagonal().rsqrt()`` makes its diagonal 1); the compiled filter folds s into its
        splat and slice weights instead of passing over the values twice more. The result has
        the layout of ``values`` where compiled, else it is contiguous.
        """
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"values must be ({self.num_points}, C), got "
                             f"{_checks._describe(values)}")
        if not values.is_floating_point():
            raise ValueError(f"values must be floating point, got {values.dtype}")
        if scale is not None and (not isinstance(scale, Tensor) or scale.shape != (
                self.num_points,) or not scale.is_floating_point()):
            raise ValueError(f"scale must be a float ({self.num_points},) tensor, got "
                             f"{_checks._describe(scale)}")
        return _Filter.apply(values, self, scale)

    def diagonal(self) -> Tensor:
        """``(N,)``: the filter's weight of each point on itself (the diagonal of the
        ``N × N`` matrix that :meth:`filter` applies), without filtering the N unit vectors.

        The weight of point i on itself is :math:`\\alpha \\sum_{k, l} w_{ik} w_{il} B_{kl}`
        over the d + 1 vertices of its simplex (w its barycentric weights, α = 1 / (1 + 2⁻ᵈ),
        B the blur). Two vertices of one simplex differ by a sum of distinct lattice
        directions, and the blur moves a value by at most one step along each direction, so
        B_kl has two paths (three on the diagonal): the steps along that set of directions,
        or the opposite steps along all the others (the d + 1 directions sum to zero), each
        worth 2 to the minus its number of steps, taken in the blur's order of directions
        and counted only where every vertex on the way holds a point.

        Compiled lattices compute it with ``graphseg_ext.lattice_diagonal`` (each simplex's
        block once while a thread's small cache of recent simplices holds it; float16 and
        bfloat16 weights in float32), other ones with tensor operations (one block per
        distinct simplex, found by sorting the points' vertices).
        """
        if self._ext is not None:
            weight = self._compiled(self.weight.dtype)
            if weight is None:
                weight = self._compiled(torch.float32)
            with _free_cores():
                diagonal = self._ext.lattice_diagonal(self.index, weight, self.neighbours)
            return diagonal.to(self.weight.dtype)
        d, device = self.dim, self.index.device
        missing = self.num_vertices
        neighbours = torch.cat([self.neighbours, self.neighbours.new_full((d + 1, 2, 1),
                                                                          missing)], 2)
        of_point, first = _unique_rows(self.index, missing + 1)
        simplices = self.index[first]
        # the direction from vertex k to k + 1 of each simplex: the one whose backward step
        # leads there; the last one closes the cycle
        below = neighbours[:, 0]
        order = torch.stack([(below[:, simplices[:, k]] == simplices[:, k + 1]).long().argmax(0)
                             for k in range(d)], 1)
        order = torch.cat([order, d * (d + 1) // 2 - order.sum(1, keepdim=True)], 1)
        place = torch.empty_like(order).scatter_(
            1, order, torch.arange(d + 1, device=device).expand_as(order).contiguous())
        steps, worth = _simplex_paths(d, device)
        # walk the two paths of every ordered pair of vertices (k, l) of every simplex, one
        # row (U, (d + 1)² · 2) per direction in the blur's order: a step of −1, 0, +1 reads
        # part 0, 1, 2 of (below, itself, above), int32 where it fits
        small = torch.int32 if 3 * (missing + 1) < 2**31 else torch.int64
        moves = torch.stack([neighbours[:, 0], torch.arange(missing + 1, device=device)
                             .expand(d + 1, -1), neighbours[:, 1]], 1).to(small).flatten(1)
        offsets = ((steps + 1) * (missing + 1)).to(small).flatten(0, 2).t().contiguous()
        source = torch.arange(d + 1, device=device).view(1, -1, 1).expand(d + 1, -1, 2)
        at = simplices[:, source.flatten()].to(small)
        for direction in range(d + 1):
            at = moves[direction][offsets.index_select(0, place[:, direction]) + at]
        blur = ((at != missing).view(len(first), -1, 2).to(self.weight.dtype)
                * worth.to(self.weight.dtype).view(-1, 2)).sum(2)
        blur = blur + torch.eye(d + 1, dtype=blur.dtype, device=device).view(-1)
        weight = self.weight
        pairs = (weight[:, :, None] * weight[:, None, :]).flatten(1)
        self_weight = (pairs * blur.index_select(0, of_point)).sum(1)
        return self_weight.view(-1) / (1.0 + 2.0 ** -d)

    def _compiled(self, dtype: torch.dtype) -> Tensor | None:
        """The weights in ``dtype`` where the compiled filter runs it, else None."""
        if self._ext is None or dtype not in (torch.float32, torch.float64):
            return None
        if dtype not in self._cache:
            self._cache[dtype] = self.weight.to(dtype)
        return self._cache[dtype]

    def _matrices(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Splat ``(M + 1, N)`` and slice ``(N, M + 1)`` as sparse CSR matrices of the
        barycentric weights (row M of the lattice is the empty neighbour), built once per
        dtype."""
        if dtype not in self._cache:
            d, n, m = self.dim, self.num_points, self.num_vertices + 1
            index = self.index.long()
            device = index.device
            # slice: each point's d + 1 vertices, columns sorted within the row
            columns, order = index.sort(dim=1)
            weights = self.weight.to(dtype).gather(1, order)
            slice_ = _csr(torch.arange(0, n * (d + 1) + 1, d + 1, device=device),
                          columns.reshape(-1), weights.reshape(-1), (n, m))
            # splat: the transpose, each vertex's points in order
            flat = index.reshape(-1)
            by_vertex = (flat.argsort(stable=True) if self._by_vertex is None
                         else self._by_vertex)
            counts = torch.bincount(flat, minlength=m)
            rows = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            splat = _csr(rows, by_vertex // (d + 1),
                         self.weight.to(dtype).reshape(-1)[by_vertex], (m, n))
            self._cache[dtype] = (splat, slice_)
        return self._cache[dtype]

    def _apply(self, values: Tensor, *, reverse: bool = False,
               scale: Tensor | None = None) -> Tensor:
        """The filter, or its transpose (``reverse``: the same blurs in the opposite order,
        each being symmetric), between the factors ``scale`` ``(N,)`` where given; float16 and
        bfloat16 values are filtered in float32."""
        given = values.dtype
        if given in (torch.float16, torch.bfloat16):
            values = values.float()
        weight = self._compiled(values.dtype)
        if weight is not None:
            if scale is not None:
                weight = weight * scale.to(weight.dtype)[:, None]
            with _free_cores():
                out = self._ext.lattice_filter(values, self.index, weight, weight,
                                               self.neighbours, reverse=reverse)
            return out.to(given)
        values = values.contiguous()
        if scale is not None:
            scale = scale.to(values.dtype)[:, None]
            values = values * scale
        splat, slice_ = self._matrices(values.dtype)
        lattice = splat @ values
        empty = values.new_zeros(1, values.shape[1])
        directions = range(self.dim + 1)
        for direction in reversed(directions) if reverse else directions:
            below, above = self.neighbours[direction].long()
            lattice = torch.cat([lattice[:-1] + 0.5 * (lattice[below] + lattice[above]),
                                 empty])
        out = (slice_ @ lattice) * (1.0 / (1.0 + 2.0 ** -self.dim))
        return (out if scale is None else out * scale).to(given)


class _FilterSum:
    """``(values, base) ↦ min(base + Σ_m after_m ⊙ filter_m(before_m ⊙ values), upper)`` over
    the ``(lattice, before, after)`` terms, for ``(N, C)`` values and base of any strides and
    ``(N, 1)`` factors (not differentiable): the message of the CRF's mean field. With compiled
    lattices it is one op, each lattice filtered on a thread of its own (the factors folded
    into the weights once, here); else tensor operations."""

    def __init__(self, terms: list[tuple[PermutohedralLattice, Tensor, Tensor]],
                 upper: float) -> None:
        self.terms, self.upper = terms, upper
        weights = [lattice._compiled(before.dtype) for lattice, before, _ in terms]
        self._ext = None
        if terms and all(weight is not None for weight in weights):
            self._ext = terms[0][0]._ext
            pairs = list(zip(weights, terms, strict=True))
            self._args = ([lattice.index for lattice, _, _ in terms],
                          [weight * before for weight, (_, before, _) in pairs],
                          [weight * after for weight, (_, _, after) in pairs],
                          [lattice.neighbours for lattice, _, _ in terms])

    def __call__(self, values: Tensor, base: Tensor) -> Tensor:
        if self._ext is not None:
            with _free_cores():
                return self._ext.lattice_filter_sum(values, base, *self._args,
                                                    upper=self.upper)
        total = base.clone()
        for lattice, before, after in self.terms:
            total += after * lattice._apply(before * values)
        return total.clamp_max_(self.upper)


def _free_cores():
    """The context of one compiled lattice op: torch's threads cut to those whose cores are
    free now (:func:`graphseg.propagate._threads.free_threads`). Each op is a few parallel
    regions ending at barriers; beside a CPU-bound process on 2 cores, a team of two waits a
    scheduler time slice at each (the CRF ran 2.4× slower on two threads than on one)."""
    return intra_op_threads(free_threads(torch.get_num_threads()))


def _extension_for(features: Tensor, extent: float):
    """``graphseg_ext`` where it builds the lattice of these gap-closed float64 features of
    largest magnitude ``extent``: CPU, at most 32 dimensions, vertex coordinates within int32
    (the elevated coordinates are at most 2d(d + 1)/√3 times the largest feature); else
    None."""
    d = features.shape[1]
    if features.device.type != "cpu" or d > _EXT_MAX_DIM:
        return None
    ext = window_ops._ext_for(features)
    if ext is None or extent * 2 * d * (d + 1) >= _EXT_COORD_LIMIT:
        return None
    return ext


def _build(features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The lattice with tensor operations: each point's vertices ``(N, d + 1)``, its float64
    barycentric weights, the neighbours ``(d + 1, 2, M)``, and the order of the points'
    corners by vertex (None where the vertices are named by rows)."""
    num_points, d = features.shape
    device = features.device
    elevated = _elevate(features)
    rem0, rank = _enclosing_simplex(elevated)
    # barycentric coordinates (Adams et al., Alg. 1): the sorted differences to rem0
    delta = (elevated - rem0) / (d + 1)
    bary = torch.zeros(num_points, d + 2, dtype=torch.float64, device=device)
    bary.scatter_add_(1, d - rank, delta)
    bary.scatter_add_(1, d + 1 - rank, -delta)
    bary[:, 0] += 1 + bary[:, d + 1]
    # vertex k of the simplex: rem0 plus the canonical simplex's vertex k, permuted by
    # rank: k where rank <= d - k, k - (d + 1) above
    k = torch.arange(d + 1, device=device).view(1, d + 1, 1)
    shift = torch.where(rank[:, None, :] <= d - k, k, k - (d + 1))
    keys = rem0[:, None, :].long() + shift  # (N, d + 1 vertices, d + 1 coordinates)
    keys = keys[..., :d].reshape(-1, d)  # the last coordinate is minus their sum
    # the neighbour along direction j: every coordinate ∓1, coordinate j ±d
    steps = torch.full((d + 1, 2, d), 1, dtype=torch.int64, device=device)
    steps[:, 1] = -1
    for direction in range(d):
        steps[direction, 0, direction], steps[direction, 1, direction] = -d, d
    low = keys.amin(0) - (d + 1)
    base = int((keys.amax(0) - low).amax()) + d + 2
    by_vertex = None
    if d * math.log2(base) < _CODE_BITS:  # vertices named by one int64 each
        powers = base ** torch.arange(d, device=device, dtype=torch.int64)
        # one sort gives the vertices, each corner's vertex, and the corners of each
        # vertex in order (the splat matrix's rows)
        ordered, by_vertex = ((keys - low) @ powers).sort(stable=True)
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[1:] = ordered[1:] != ordered[:-1]
        unique = ordered[first]
        inverse = torch.empty_like(by_vertex).scatter_(0, by_vertex, first.cumsum(0) - 1)
        coords = _decode(unique, low, base, d)
        wanted = ((coords[None, None] + steps[:, :, None] - low) @ powers)
        found = torch.searchsorted(unique, wanted).clamp_max(len(unique) - 1)
        neighbours = torch.where(unique[found] == wanted, found, len(unique))
    else:  # too wide for one int64: rows of coordinates, and their neighbours with them
        coords, inverse = torch.unique(keys, dim=0, return_inverse=True)
        wanted = (coords[None, None] + steps[:, :, None]).reshape(-1, d)
        everything, ids = torch.unique(torch.cat([coords, wanted]), dim=0,
                                       return_inverse=True)
        vertex = torch.full((len(everything),), len(coords), dtype=torch.int64,
                            device=device)
        vertex[ids[: len(coords)]] = torch.arange(len(coords), device=device)
        neighbours = vertex[ids[len(coords):]].view(d + 1, 2, len(coords))
    return inverse.view(num_points, d + 1), bary[:, : d + 1], neighbours, by_vertex


def _csr(rows: Tensor, columns: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A sparse CSR matrix that is valid by construction (no invariant checks, no warning
    that torch's CSR support is in beta)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(rows, columns, values, size, check_invariants=False)


class _Filter(torch.autograd.Function):
    """The lattice filter with its exact transpose as the backward."""

    @staticmethod
    def forward(ctx, values: Tensor, lattice: PermutohedralLattice,
                scale: Tensor | None) -> Tensor:
        ctx.lattice, ctx.scale = lattice, scale
        return lattice._apply(values, scale=scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.lattice._apply(grad, reverse=True, scale=ctx.scale), None, None


def lattice_filter(features: Tensor, values: Tensor) -> Tensor:
    """The permutohedral Gaussian filter of ``values`` ``(N, C)`` at ``features`` ``(N, d)``
    (one-off: build the :class:`PermutohedralLattice` once to filter several value sets)."""
    return PermutohedralLattice(features).filter(values)


def _unique_rows(rows: Tensor, base: int) -> tuple[Tensor, Tensor]:
    """Each row's place among the distinct rows of ``rows`` ``(N, k)`` (entries in [0, base)),
    and one row of each: stable sorts by int64 codes of as many columns as fit, last first
    (much faster than ``torch.unique(dim=0)``)."""
    width = max(1, int(_CODE_BITS // math.log2(max(base, 2))))
    codes = []
    for start in range(0, rows.shape[1], width):
        code = rows[:, start].to(torch.int64, copy=True)  # int32 rows would overflow
        for column in range(start + 1, min(start + width, rows.shape[1])):
            code.mul_(base).add_(rows[:, column])
        codes.append(code)
    order = torch.arange(len(rows), device=rows.device)
    for code in reversed(codes):
        order = order[code[order].sort(stable=True)[1]]
    new = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
    for code in codes:
        ordered = code[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    new[0] = True
    place = torch.empty_like(order).scatter_(0, order, new.cumsum(0) - 1)
    return place, order[new]


def _simplex_paths(d: int, device) -> tuple[Tensor, Tensor]:
    """The two blur paths between vertices l and k of a simplex whose consecutive vertices
    differ by the directions at places 0, …, d: ``steps[k, l, path, place]`` in {−1, 0, 1}
    (the step along the direction at that place) and ``worth[k, l, path]`` = 2^−steps. From
    l to k > l the directions at places l, …, k − 1 are taken backwards (or all others
    forwards), to k < l those at places k, …, l − 1 forwards (or all others backwards), and
    a vertex reaches itself by all directions forwards or all backwards (besides staying,
    counted apart)."""
    place = torch.arange(d + 1, device=device)
    target, source = place.view(-1, 1, 1), place.view(1, -1, 1)
    inside = (place >= torch.minimum(target, source)) & (place < torch.maximum(target, source))
    sign = torch.where(target > source, -1, 1)
    steps = torch.stack([torch.where(inside | (target == source), sign, 0),
                         torch.where(inside, 0, -sign)], 2)
    worth = 0.5 ** (steps != 0).sum(-1).double()
    return steps, worth


def _elevate(features: Tensor) -> Tensor:
    """``(N, d)`` → ``(N, d + 1)`` on the plane Σx = 0, scaled per axis by
    :math:`(d+1)\\sqrt{2/3} / \\sqrt{(i+1)(i+2)}` so that the lattice blur has standard
    deviation 1 in feature space (Adams et al. §3.1)."""
    d = features.shape[1]
    i = torch.arange(d, dtype=features.dtype, device=features.device)
    scaled = features * ((d + 1) * math.sqrt(2.0 / 3.0) / torch.sqrt((i + 1) * (i + 2)))
    # suffix sums S_i = Σ_{k ≥ i} scaled_k; x_0 = S_0, x_i = S_i − i·scaled_{i−1}
    suffix = torch.cat([scaled.flip(1).cumsum(1).flip(1),
                        scaled.new_zeros(len(scaled), 1)], dim=1)
    elevated = suffix.clone()
    elevated[:, 1:] = suffix[:, 1:] - (i + 1) * scaled
    return elevated


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor]:
    """The nearest remainder-0 lattice point ``rem0`` and the rank of each coordinate's
    offset from it, adjusted so that rem0 lies on the lattice (Adams et al. §3.1)."""
    d = elevated.shape[1] - 1
    scale = d + 1
    down = torch.floor(elevated / scale) * scale
    up = torch.ceil(elevated / scale) * scale
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    total = torch.round(rem0.sum(1) / scale).long()
    delta = elevated - rem0
    # rank_i = #{j > i : δ_j > δ_i} + #{j < i : δ_j ≥ δ_i}: the place of i when the
    # coordinates are sorted by δ, largest first, ties in index order (a stable sort)
    order = (-delta).argsort(dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(d + 1, device=elevated.device).expand_as(order).contiguous())
    total = total[:, None]
    high = (total > 0) & (rank >= d + 1 - total)
    low = (total < 0) & (rank < -total)
    rem0 = rem0 - scale * high + scale * low
    rank = rank + total - scale * high + scale * low
    return rem0, rank


def _reach(d: int) -> float:
    """A distance in feature units beyond which the lattice filter mixes nothing: splat and
    slice stay within a simplex and the blur moves d + 1 lattice steps, each of length
    √(d(d+1)) on the elevated plane, where a feature unit is at least (d+1)√(2/3)/√(d(d+1))
    long; twice that bound."""
    return 2 * (d + 3) * d / math.sqrt(2.0 / 3.0)


def _close_gaps(features: Tensor, gap: float, low: Tensor | None = None,
                high: Tensor | None = None) -> Tensor:
    """Each feature axis with its gaps wider than ``gap`` shortened to ``gap``: distances
    below ``gap`` are kept, points farther apart stay at least ``gap`` apart (where the filter
    mixes nothing), so features of any finite range fit the lattice's integer coordinates.
    Axes beyond 2^40 in magnitude are also moved to start at 0 (float64 keeps their
    fractions); features without wide gaps or large values are returned as they are, so the
    lattice is the one pydensecrf builds from them. ``low`` and ``high``: each axis'
    extremes, where the caller has them."""
    if len(features) < 2:  # one point mixes with nothing: any place will do
        return torch.zeros_like(features)
    if low is None or high is None:
        low, high = torch.aminmax(features, dim=0)
    if float(torch.maximum(-low, high).amax()) <= 2.0**40 and _no_gaps(features, low, high,
                                                                        gap):
        return features
    order = features.argsort(0)
    ordered = features.gather(0, order)
    steps = ordered.diff(dim=0)
    if not bool((steps > gap).any()) and float(ordered.abs().amax()) <= 2.0**40:
        return features
    # each point's place from the lowest one by the shortened steps (no huge differences)
    start = torch.where(ordered[:1].abs() <= 2.0**40, ordered[:1], 0.0)
    closed = start + torch.cat([steps.new_zeros(1, features.shape[1]),
                                steps.clamp_max(gap).cumsum(0)])
    return torch.empty_like(features).scatter_(0, order, closed)


def _no_gaps(features: Tensor, low: Tensor, high: Tensor, gap: float) -> bool:
    """Whether no axis holds two consecutive values more than ``gap`` apart (``low`` and
    ``high``: each axis' extremes), decided without sorting: an axis narrower than ``gap`` has
    none; a wider one is cut into equal bins narrower than gap / 3, and where every bin holds
    a value, two consecutive values lie in the same or adjacent bins, less than 2 gap / 3
    apart. False where a bin is empty, although the gaps may still be narrow enough (the
    caller sorts then)."""
    for axis in ((high - low) > gap).nonzero().flatten().tolist():
        span = float(high[axis] - low[axis])
        bins = math.floor(span / (gap / 3)) + 1
        if bins > 2 * len(features):  # more bins than values: some are empty
            return False
        counts = torch.histc(features[:, axis], bins=bins, min=float(low[axis]),
                             max=float(high[axis]))
        if bool((counts == 0).any()):
            return False
    return True


def _decode(codes: Tensor, low: Tensor, base: int, d: int) -> Tensor:
    digits = []
    for _ in range(d):
        digits.append(codes % base)
        codes = codes // base
    return torch.stack(digits, dim=-1) + low
