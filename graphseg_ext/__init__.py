"""Compiled window ops and permutohedral lattice for graphseg (C++ CPU and CUDA kernels).

The ops are registered with the PyTorch dispatcher as ``torch.ops.graphseg_ext.*`` (schemas and
kernels in ``csrc/``, fake kernels and autograd in :mod:`graphseg_ext._registration`), so they work
with autograd, ``torch.compile`` and meta tensors. The functions below are the interface that
:mod:`graphseg.ops` calls; they place the offsets on the data's device and add ``out=`` buffers.

Importing this package never fails: when the compiled library ``graphseg_ext._C`` is missing or
does not load, :func:`is_available` returns False and graphseg uses its pure-PyTorch reference.

Kernels: CPU float32 and float64; CUDA float16, bfloat16, float32 and float64 when the
extension was built against a CUDA-enabled torch. The lattice ops are CPU only (graphseg builds
CUDA lattices with tensor operations).

The CPU kernels run with subnormal numbers flushed to zero (x86: the flush-to-zero and
denormals-are-zero bits, set in each thread for the kernel only, as GPUs compute by default): a
weight below the smallest normal number (1.2e-38 in float32), such as exp(-d) of a far colour,
reads as 0. On Intel CPUs every multiply-add with a subnormal operand otherwise takes a
microcode assist; a 512×512 graph with 0.8% subnormal weights aggregated 5× slower.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

try:
    from graphseg_ext import _C
except ImportError:  # not built, or built against another torch
    _C = None
else:
    from graphseg_ext import _registration  # noqa: F401  (fake kernels and autograd)

__all__ = [
    "cpu_clone",
    "is_available",
    "lattice_build",
    "lattice_diagonal",
    "lattice_filter",
    "lattice_filter_sum",
    "local_affinity",
    "supports",
    "window_aggregate",
    "window_aggregate_power",
    "window_aggregate_transpose",
    "window_dot",
]

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def is_available() -> bool:
    """Whether the compiled kernels are built and loaded."""
    return _C is not None


def supports(tensor: Tensor) -> bool:
    """Whether the compiled kernels handle ``tensor``'s device and dtype."""
    if _C is None:
        return False
    if tensor.device.type == "cpu":
        return tensor.dtype in _CPU_DTYPES
    if tensor.device.type == "cuda":
        return bool(_C.WITH_CUDA) and tensor.dtype in _CUDA_DTYPES
    return False


def cpu_clone() -> str:
    """The instruction-set clone of the CPU kernels that runs on this CPU.

    The CPU kernels are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline,
    and the loader picks the best one the CPU supports; a build with ``GRAPHSEG_CPU_LEVEL=3`` has
    no AVX-512 clone. Returns e.g. ``"x86-64-v3 (AVX2, FMA)"``.
    """
    return _ops().cpu_clone()


def _ops():
    if _C is None:
        raise RuntimeError("graphseg_ext._C is not built: reinstall graphseg with "
                           "`pip install --no-build-isolation -e .` and a C++ compiler")
    return torch.ops.graphseg_ext


def _offsets_for(offsets: Tensor, data: Tensor) -> Tensor:
    return offsets.to(device=data.device, dtype=torch.int64)


def _call(name: str, inputs: tuple[Tensor, ...], args: tuple, out: Tensor | None) -> Tensor:
    """Runs op ``name`` on ``args``, or its ``_out`` form writing into ``out``."""
    if out is None:
        return getattr(_ops(), name)(*args)
    # Like torch's own out= functions: writing into a caller's buffer cannot be recorded.
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        raise RuntimeError(f"{name}(..., out=...) does not support automatic differentiation; "
                           "call it without out= or under torch.no_grad()")
    getattr(_ops(), f"{name}_out")(*args, out)
    return out


def local_affinity(features: Tensor, offsets: Tensor, kind: str, *,
                   out: Tensor | None = None) -> Tensor:
    """Distance or product between each pixel and each of its window neighbours.

    ``out[b, k, y, x] = pair(features[b, :, y, x], features[b, :, y + dy_k, x + dx_k])`` with
    pair the L1 distance (``"l1"``), squared L2 distance (``"l2"``) or dot product (``"dot"``);
    0 where the neighbour is outside the image. Differentiable once in ``features``.

    Args:
        features: ``(B, C, H, W)`` map, any memory layout.
        offsets: ``(K, 2)`` integer (dy, dx) offsets, on any device.
        kind: ``"l1"``, ``"l2"`` or ``"dot"``.
        out: optional contiguous ``(B, K, H, W)`` buffer to write into (saves allocating and
            page-faulting a fresh output); not differentiable.

    Returns:
        ``(B, K, H, W)`` tensor (``out`` when given).
    """
    return _call("local_affinity", (features,),
                 (features, _offsets_for(offsets, features), kind), out)


def window_aggregate(weight: Tensor, values: Tensor, offsets: Tensor, *,
                     out: Tensor | None = None) -> Tensor:
    """Weighted sum of each pixel's window neighbours, ``A v`` for the windowed graph ``A``.

    ``out[b, :, p] = Σ_k weight[b, k, p] · values[b, :, p + o_k]`` over in-image neighbours.
    Differentiable (to any order) in ``weight`` and ``values``.

    Args:
        weight: ``(B, K, H, W)`` edge weights.
        values: ``(B, C, H, W)`` node values, same dtype and device.
        offsets: ``(K, 2)`` integer offsets matching ``weight``.
        out: optional contiguous ``(B, C, H, W)`` buffer to write into; not differentiable.

    Returns:
        ``(B, C, H, W)`` tensor (``out`` when given).
    """
    return _call("window_aggregate", (weight, values),
                 (weight, values, _offsets_for(offsets, values)), out)


def window_aggregate_power(weight: Tensor, values: Tensor, offsets: Tensor, num_steps: int, *,
                           steps_per_pass: int = 0) -> Tensor:
    """``num_steps`` window aggregations in a row, ``A^t v`` (CPU float32 and float64 only).

    Equals calling :func:`window_aggregate` ``num_steps`` times (up to float rounding: the sums
    are the same, in the same order), with far less memory traffic: each pass over the image
    runs several steps on bands of rows whose intermediate rows stay in cache, so the weights and
    the values are read from memory once per pass rather than once per step. The weights are
    first copied once into tiles that the kernel reads in order (extra memory: the size of
    ``weight``). Not differentiable; the random walk uses it when no gradient is needed.

    Args:
        weight: ``(B, K, H, W)`` edge weights.
        values: ``(B, C, H, W)`` node values, same dtype.
        offsets: ``(K, 2)`` integer offsets matching ``weight``.
        num_steps: number of aggregations t >= 0 (0 returns a copy of ``values``).
        steps_per_pass: steps per pass over the image; 0 (default) picks the most whose
            working set fits the cache.

    Returns:
        ``(B, C, H, W)`` tensor.
    """
    return _ops().window_aggregate_power(weight, values, _offsets_for(offsets, values),
                                         num_steps, steps_per_pass)


def window_aggregate_transpose(weight: Tensor, values: Tensor, offsets: Tensor, *,
                               out: Tensor | None = None) -> Tensor:
    """The adjoint of :func:`window_aggregate` in ``values``, ``Aᵀ v``.

    ``out[b, :, q] = Σ_k weight[b, k, q − o_k] · values[b, :, q − o_k]``; with ``values`` all ones
    it gives the in-degrees (column sums) of the graph. Differentiable in both inputs.

    Args:
        weight: ``(B, K, H, W)`` edge weights.
        values: ``(B, C, H, W)`` node values, same dtype and device.
        offsets: ``(K, 2)`` integer offsets matching ``weight``.
        out: optional contiguous ``(B, C, H, W)`` buffer to write into; not differentiable.

    Returns:
        ``(B, C, H, W)`` tensor (``out`` when given).
    """
    return _call("window_aggregate_transpose", (weight, values),
                 (weight, values, _offsets_for(offsets, values)), out)


def window_dot(left: Tensor, right: Tensor, offsets: Tensor, *,
               out: Tensor | None = None) -> Tensor:
    """Dot product of each pixel of ``left`` with each window neighbour in ``right``.

    ``out[b, k, p] = <left[b, :, p], right[b, :, p + o_k]>``, 0 where the neighbour is outside the
    image: the gradient of :func:`window_aggregate` in ``weight``, and
    ``local_affinity(f, offsets, "dot")`` when ``left`` and ``right`` are both ``f``.
    Differentiable in both inputs.

    Args:
        left: ``(B, C, H, W)`` map.
        right: ``(B, C, H, W)`` map, same dtype and device.
        offsets: ``(K, 2)`` integer offsets.
        out: optional contiguous ``(B, K, H, W)`` buffer to write into; not differentiable.

    Returns:
        ``(B, K, H, W)`` tensor (``out`` when given).
    """
    return _call("window_dot", (left, right),
                 (left, right, _offsets_for(offsets, left)), out)


def lattice_build(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The permutohedral lattice of ``features`` (Adams, Baek & Davis, Eurographics 2010, §3.1
    and Alg. 1), as :class:`graphseg.propagate.PermutohedralLattice` builds it.

    Args:
        features: ``(N, d)`` float64 CPU positions, 1 ≤ d ≤ 32, already scaled by the kernel's
            standard deviations and with their gaps closed; ``|features| · 2d(d + 1)`` below
            2^29 (the vertices have int32 coordinates).

    Returns:
        ``index`` ``(N, d + 1)`` int32, the vertices of each point's simplex; ``weight``
        ``(N, d + 1)`` float64, their barycentric weights; ``neighbours`` ``(d + 1, 2, M)``
        int32, each vertex's neighbours along the d + 1 lattice directions (−, +), ``M`` where
        the lattice has none.
    """
    return _ops().lattice_build(features)


def lattice_filter(values: Tensor, index: Tensor, splat_weight: Tensor, slice_weight: Tensor,
                   neighbours: Tensor, *, reverse: bool = False) -> Tensor:
    """Splat ``values`` onto the lattice of :func:`lattice_build` with ``splat_weight``, blur
    along the directions 0..d (d..0 when ``reverse``), slice with ``slice_weight`` times
    1 / (1 + 2^-d).

    With both weights the barycentric ones this is the lattice's Gaussian filter; swapping them
    and flipping ``reverse`` gives its exact transpose, which is the gradient in ``values``
    (the only differentiable input). Per-point factors folded into the weights, ``a`` into the
    splat and ``b`` into the slice, give ``b ⊙ filter(a ⊙ values)`` in one pass.

    Args:
        values: ``(N, C)`` float32 or float64 CPU values, any strides.
        index, neighbours: from :func:`lattice_build` (trusted: not checked entry by entry).
        splat_weight, slice_weight: ``(N, d + 1)`` in the dtype of ``values``.
        reverse: blur in the opposite order.

    Returns:
        ``(N, C)`` tensor with the layout of ``values`` (contiguous where theirs has gaps).
    """
    return _ops().lattice_filter(values, index, splat_weight, slice_weight, neighbours, reverse)


def lattice_filter_sum(values: Tensor, base: Tensor, index: list[Tensor],
                       splat_weight: list[Tensor], slice_weight: list[Tensor],
                       neighbours: list[Tensor], *, upper: float = math.inf) -> Tensor:
    """``min(base + Σ_l filter_l(values), upper)`` over several lattices (the lists hold one
    tensor each, as :func:`lattice_filter` takes them), as the mean field of a CRF sums its
    kernels' messages: each lattice is splatted and blurred on a thread of its own and all are
    sliced in one pass over the points. Not differentiable.

    Args:
        values: ``(N, C)`` float32 or float64 CPU values, any strides.
        base: ``(N, C)`` added to the sum, any strides; the result has its layout.
        index, splat_weight, slice_weight, neighbours: one entry per lattice.
        upper: the result is capped at this value.

    Returns:
        ``(N, C)`` tensor.
    """
    return _ops().lattice_filter_sum(values, base, index, splat_weight, slice_weight, neighbours,
                                     upper)


def lattice_diagonal(index: Tensor, weight: Tensor, neighbours: Tensor) -> Tensor:
    r"""The weight of each point on itself in the filter of :func:`lattice_filter` with both
    weights ``weight``: the diagonal of its ``N × N`` matrix, as
    :meth:`graphseg.propagate.PermutohedralLattice.diagonal` gives it, without filtering the N
    unit vectors.

    .. math::
        \operatorname{diag}_i = \frac{1}{1 + 2^{-d}} \sum_{k, l = 0}^{d} w_{ik}\, w_{il}\, B_{kl}

    over the d + 1 vertices of point i's simplex (Adams, Baek & Davis, Eurographics 2010,
    §3.1: splat and slice with the barycentric weights w, the blur B between them). Two vertices
    of one simplex differ by a sum of distinct lattice directions and each direction's blur
    moves a value by at most one step, so :math:`B_{kl}` sums two paths (three on the
    diagonal, staying included), each worth 2 to the minus its steps, taken in the blur's order
    of directions and counted only where every vertex on the way is in the lattice. The block B
    is computed once per simplex while it stays in a small cache of each thread (points in
    raster order share their simplex with a recent point most of the time).

    Args:
        index, neighbours: from :func:`lattice_build`; the vertices of each simplex whose block
            is computed are checked (in range, consecutive ones neighbours in the table).
        weight: ``(N, d + 1)`` float32 or float64 barycentric weights (from
            :func:`lattice_build`, or cast from them); the result has their dtype.

    Returns:
        ``(N,)`` tensor.
    """
    return _ops().lattice_diagonal(index, weight, neighbours)
