"""Aggregation multigrid for the grounded Laplacian of a windowed graph.

The harmonic problem solves ``L_uu x = b`` on the unknown pixels. Writing
``L_uu = G + D_uu − A_uu`` (A_uu the edges between unknown pixels, D_uu its degrees, G the weight
each unknown pixel sends to seeded ones) shows that its Galerkin coarsening with piecewise-constant
2×2 aggregates, ``Pᵀ L_uu P``, has the same form on the half-resolution grid: the coarse edges are
the sums of the fine edges between two blocks, the coarse grounding the sum of the block's
grounding. Every level is therefore again a windowed graph, whose mat-vec is one
``window_aggregate``; the coarsest level is solved densely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg.ops.reference import gather_neighbours
from graphseg.ops.window_ops import aggregate_unchecked
from graphseg.propagate._threads import SERIAL_WORK, intra_op_threads

COARSEST = 24
SMOOTHING = 0.9
SWEEPS = 2
# Plain aggregation under-corrects smooth errors; scaling the coarse correction (a constant keeps
# the cycle symmetric) roughly halves the CG iterations on image graphs.
OVER_CORRECTION = 1.5


class _Level:
    """One grid: edge weights between unknown pixels and the diagonal of the grounded Laplacian."""

    def __init__(self, weight: Tensor, offsets: Tensor, diagonal: Tensor) -> None:
        self.weight, self.offsets, self.diagonal = weight, offsets, diagonal
        self.inverse = torch.where(diagonal > 0, SMOOTHING / diagonal.clamp_min(1e-30),
                                   torch.zeros_like(diagonal))
        self._scratch: Tensor | None = None

    def apply(self, x: Tensor) -> Tensor:
        return self.diagonal * x - aggregate_unchecked(self.weight, x, self.offsets)

    def residual(self, rhs: Tensor, x: Tensor) -> Tensor:
        """``rhs − apply(x)`` in the level's scratch buffer: valid until the next call."""
        if self._scratch is None or self._scratch.shape != x.shape:
            self._scratch = torch.empty_like(x)
        return aggregate_unchecked(self.weight, x, self.offsets, out=self._scratch).add_(
            rhs).addcmul_(self.diagonal, x, value=-1)

    def smooth(self, rhs: Tensor, x: Tensor) -> Tensor:
        """One damped Jacobi sweep, in place."""
        return x.addcmul_(self.inverse, self.residual(rhs, x))

    def coarsen(self) -> _Level:
        batch, _, height, width = self.weight.shape
        small = ((height + 1) // 2, (width + 1) // 2)
        table: dict[tuple[int, int], int] = {}
        pieces = []
        for k, (dy, dx) in enumerate(self.offsets.tolist()):
            for py in range(2):
                for px in range(2):
                    coarse = ((py + dy) // 2, (px + dx) // 2)
                    if coarse == (0, 0):
                        continue  # an edge inside one aggregate leaves the coarse Laplacian
                    index = table.setdefault(coarse, len(table))
                    pieces.append((index, self.weight[:, k, py::2, px::2]))
        weight = self.weight.new_zeros(batch, max(1, len(table)), *small)
        for index, piece in pieces:
            weight[:, index, : piece.shape[1], : piece.shape[2]] += piece
        offsets = torch.tensor(list(table) or [(0, 1)], dtype=torch.int64)
        return _Level(weight, offsets, _block_sum(self.diagonal) - _inner(self))


def _block_sum(x: Tensor) -> Tensor:
    """Sum over 2×2 blocks (zero-padding odd sizes): the restriction Pᵀ. Strided adds, ten times
    faster than avg_pool2d here."""
    height, width = x.shape[2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2))
    rows = x[:, :, 0::2] + x[:, :, 1::2]
    return rows[..., 0::2] + rows[..., 1::2]


def _inner(level: _Level) -> Tensor:
    """The weight of the (directed) edges inside each 2×2 block, summed per block: the block's
    diagonal entry of Pᵀ A P, which the coarse diagonal loses."""
    height, width = (level.weight.shape[2] + 1) // 2, (level.weight.shape[3] + 1) // 2
    total = None
    for k, (dy, dx) in enumerate(level.offsets.tolist()):
        for py in range(2):
            for px in range(2):
                if ((py + dy) // 2, (px + dx) // 2) != (0, 0):
                    continue
                piece = level.weight[:, k : k + 1, py::2, px::2]
                piece = F.pad(piece, (0, width - piece.shape[3], 0, height - piece.shape[2]))
                total = piece if total is None else total + piece
    if total is None:
        return level.weight.new_zeros(level.weight.shape[0], 1, height, width)
    return total


def _factor(matrices: Tensor) -> Tensor:
    """Cholesky factors of the coarsest matrices, shifted just enough to be positive definite:
    components without any seed make them singular, and float32 coarsening can leave them
    slightly indefinite. The shift only weakens the preconditioner, never the solution."""
    matrices = (matrices + matrices.transpose(1, 2)) / 2
    scale = matrices.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-30).view(-1, 1, 1)
    eye = torch.eye(matrices.shape[1], dtype=matrices.dtype, device=matrices.device)
    for shift in (1e-10, 1e-7, 1e-4, 1e-2):
        factor, info = torch.linalg.cholesky_ex(matrices + shift * scale * eye)
        if not bool(info.any()):
            return factor
    return torch.linalg.cholesky(matrices + scale * eye)


def _add_prolonged(x: Tensor, coarse: Tensor, scale: float) -> Tensor:
    """``x += scale · P coarse`` in place, P the piecewise-constant interpolation."""
    for py in range(2):
        for px in range(2):
            fine = x[:, :, py::2, px::2]
            fine.add_(coarse[:, :, : fine.shape[2], : fine.shape[3]], alpha=scale)
    return x


class Multigrid:
    """A symmetric V(2, 2) cycle with damped Jacobi smoothing, usable as a CG preconditioner;
    the levels below :data:`SERIAL_WORK` elements run on one thread.

    Args:
        weight: ``(B, K, H, W)`` symmetric edge weights (no self loops).
        offsets: ``(K, 2)`` offsets.
        unknown: ``(B, 1, H, W)`` float mask of the unknown pixels.
    """

    def __init__(self, weight: Tensor, offsets: Tensor, unknown: Tensor) -> None:
        opposite_unknown = gather_neighbours(unknown, offsets)
        inner = weight * unknown * opposite_unknown
        diagonal = unknown * weight.sum(1, keepdim=True)
        self.unknown = unknown
        self.levels = [_Level(inner, offsets, diagonal)]
        while max(self.levels[-1].weight.shape[2:]) > COARSEST:
            self.levels.append(self.levels[-1].coarsen())
        self._factor_coarsest()

    def _factor_coarsest(self) -> None:
        level = self.levels[-1]
        batch, _, height, width = level.weight.shape
        nodes = height * width
        eye = torch.eye(nodes, dtype=level.weight.dtype, device=level.weight.device)
        basis = eye.t().reshape(nodes, 1, height, width)
        matrices = []
        for b in range(batch):
            single = _Level(level.weight[b : b + 1].expand(nodes, -1, -1, -1), level.offsets,
                            level.diagonal[b : b + 1].expand(nodes, -1, -1, -1))
            columns = single.apply(basis).reshape(nodes, nodes)
            empty = level.diagonal[b].reshape(-1) <= 0
            # rows of pixels outside the unknown set are identity rows (their values stay 0)
            columns = columns + torch.diag(empty.to(columns.dtype))
            matrices.append(columns.t().double())
        self.coarse = _factor(torch.stack(matrices))

    def _cycle(self, depth: int, rhs: Tensor) -> Tensor:
        if depth > 0 and rhs.numel() < SERIAL_WORK and torch.get_num_threads() > 1:
            # the coarse levels' parallel regions cost more than they save (see _threads)
            with intra_op_threads(1):
                return self._cycle(depth, rhs)
        level = self.levels[depth]
        if depth == len(self.levels) - 1:
            batch, channels, height, width = rhs.shape
            flat = rhs.reshape(batch, channels, -1).transpose(1, 2).double()
            solved = torch.cholesky_solve(flat, self.coarse).to(rhs.dtype)
            return solved.transpose(1, 2).reshape(batch, channels, height, width)
        x = level.inverse * rhs
        for _ in range(SWEEPS - 1):
            level.smooth(rhs, x)
        correction = self._cycle(depth + 1, _block_sum(level.residual(rhs, x)))
        _add_prolonged(x, correction, OVER_CORRECTION)
        for _ in range(SWEEPS):
            level.smooth(rhs, x)
        return x

    def __call__(self, rhs: Tensor) -> Tensor:
        return self._cycle(0, rhs).mul_(self.unknown)
