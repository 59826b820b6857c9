"""Pure-PyTorch reference implementations of the two window primitives.

Each is a loop over the K offsets with shifted slices, differentiable through autograd. They are
the ground truth that the compiled kernels of ``graphseg_ext`` are tested against, and the path
used whenever the extension is absent or switched off.
"""

from __future__ import annotations

from torch import Tensor

__all__ = [
    "gather_neighbours",
    "local_affinity",
    "valid_box",
    "window_aggregate",
    "window_aggregate_transpose",
]


def valid_box(dy: int, dx: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of the pixels p whose neighbour p + (dy, dx)
    lies inside a ``height × width`` image (the ``drop`` border rule). Empty when y1 <= y0."""
    return max(0, -dy), min(height, height - dy), max(0, -dx), min(width, width - dx)


def _pair(kind: str, a: Tensor, b: Tensor) -> Tensor:
    if kind == "l1":
        return (a - b).abs().sum(1)
    if kind == "l2":
        return (a - b).square().sum(1)
    return (a * b).sum(1)


def _shifts(offsets: Tensor, height: int, width: int):
    """For each offset with in-image neighbours: its index, the rows and columns of the pixels p
    and those of their neighbours p + o_k."""
    for k, (dy, dx) in enumerate(offsets.tolist()):
        y0, y1, x0, x1 = valid_box(dy, dx, height, width)
        if y1 > y0 and x1 > x0:
            yield k, slice(y0, y1), slice(x0, x1), slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx)


def local_affinity(features: Tensor, offsets: Tensor, kind: str) -> Tensor:
    """``out[b, k, y, x] = pair(features[b, :, y, x], features[b, :, y + dy_k, x + dx_k])``; 0 where
    the neighbour leaves the image."""
    batch, _, height, width = features.shape
    out = features.new_zeros(batch, offsets.shape[0], height, width)
    for k, ys, xs, nys, nxs in _shifts(offsets, height, width):
        out[:, k, ys, xs] = _pair(kind, features[:, :, ys, xs], features[:, :, nys, nxs])
    return out


def window_aggregate(weight: Tensor, values: Tensor, offsets: Tensor, *,
                     out: Tensor | None = None) -> Tensor:
    """``out[b, :, p] = Σ_k weight[b, k, p] · values[b, :, p + o_k]`` over in-image neighbours;
    written into ``out`` when given."""
    out = values.new_zeros(values.shape) if out is None else out.zero_()
    for k, ys, xs, nys, nxs in _shifts(offsets, *values.shape[2:]):
        # addcmul_ writes in place: no K temporaries of the output's size
        out[:, :, ys, xs].addcmul_(weight[:, k : k + 1, ys, xs], values[:, :, nys, nxs])
    return out


def window_aggregate_transpose(weight: Tensor, values: Tensor, offsets: Tensor) -> Tensor:
    """The adjoint of :func:`window_aggregate` in ``values``:
    ``out[b, :, q] = Σ_k weight[b, k, q − o_k] · values[b, :, q − o_k]``.

    With ``values`` all ones it gives the column sums (in-degrees) of the graph."""
    out = values.new_zeros(values.shape)
    for k, ys, xs, nys, nxs in _shifts(offsets, *values.shape[2:]):
        out[:, :, nys, nxs].addcmul_(weight[:, k : k + 1, ys, xs], values[:, :, ys, xs])
    return out


def gather_neighbours(values: Tensor, offsets: Tensor, channels: list[int] | None = None) -> Tensor:
    """``out[b, k, p] = values[b, channels[k], p + o_k]`` (channel 0 for every k by default); 0
    outside the image. ``values`` is ``(B, C, H, W)``."""
    batch, _, height, width = values.shape
    out = values.new_zeros(batch, offsets.shape[0], height, width)
    for k, ys, xs, nys, nxs in _shifts(offsets, height, width):
        out[:, k, ys, xs] = values[:, 0 if channels is None else channels[k], nys, nxs]
    return out
