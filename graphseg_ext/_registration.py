"""Fake kernels and autograd formulas of the ``torch.ops.graphseg_ext`` ops.

Imported by :mod:`graphseg_ext` once the compiled library has registered the op schemas. The fake
kernels give output shapes to ``torch.compile`` and meta tensors; the autograd formulas are
themselves compositions of the compiled ops, so no gradient falls back to Python loops.

The three linear ops are closed under differentiation, which makes them differentiable to any
order (``A`` is the windowed graph of ``weight``, ``v`` the values):

- ``window_aggregate(w, v) = A v``: d/dw = ``window_dot(g, v)``,
  d/dv = ``window_aggregate_transpose(w, g)``;
- ``window_aggregate_transpose(w, v) = Aᵀ v``: d/dw = ``window_dot(v, g)``,
  d/dv = ``window_aggregate(w, g)``;
- ``window_dot(a, b)[k, p] = <a(p), b(p + o_k)>``: d/da = ``window_aggregate(g, b)``,
  d/db = ``window_aggregate_transpose(g, a)``.

``lattice_filter`` is linear in its values: its gradient is the transposed filter, the same op
with the splat and slice weights swapped and the blur order reversed.

``local_affinity`` has a fused first derivative (``local_affinity_backward``); its higher
derivatives, rarely needed (gradient penalties, Hessian-vector products), are taken through the
pure-PyTorch reference of ``local_affinity``.
"""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

_ops = torch.ops.graphseg_ext


def _pair_shape(image, offsets):
    return (image.shape[0], offsets.shape[0], image.shape[2], image.shape[3])


@register_fake("graphseg_ext::local_affinity")
def _local_affinity_fake(features, offsets, kind):
    return features.new_empty(_pair_shape(features, offsets))


@register_fake("graphseg_ext::local_affinity_out")
def _local_affinity_out_fake(features, offsets, kind, out):
    return None


@register_fake("graphseg_ext::local_affinity_backward")
def _local_affinity_backward_fake(grad, features, offsets, kind):
    return features.new_empty(features.shape)


@register_fake("graphseg_ext::window_aggregate")
def _window_aggregate_fake(weight, values, offsets):
    return values.new_empty(values.shape)


@register_fake("graphseg_ext::window_aggregate_out")
def _window_aggregate_out_fake(weight, values, offsets, out):
    return None


@register_fake("graphseg_ext::window_aggregate_transpose")
def _window_aggregate_transpose_fake(weight, values, offsets):
    return values.new_empty(values.shape)


@register_fake("graphseg_ext::window_aggregate_transpose_out")
def _window_aggregate_transpose_out_fake(weight, values, offsets, out):
    return None


@register_fake("graphseg_ext::window_aggregate_power")
def _window_aggregate_power_fake(weight, values, offsets, num_steps, steps_per_pass=0):
    return values.new_empty(values.shape)


@register_fake("graphseg_ext::window_dot")
def _window_dot_fake(left, right, offsets):
    return left.new_empty(_pair_shape(left, offsets))


@register_fake("graphseg_ext::window_dot_out")
def _window_dot_out_fake(left, right, offsets, out):
    return None


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:3])


def _save_affinity_inputs(ctx, inputs, output):
    features, offsets, kind = inputs
    ctx.save_for_backward(features, offsets)
    ctx.kind = kind


def _local_affinity_backward(ctx, grad):
    features, offsets = ctx.saved_tensors
    return _ops.local_affinity_backward(grad, features, offsets, ctx.kind), None, None


def _save_affinity_backward_inputs(ctx, inputs, output):
    grad, features, offsets, kind = inputs
    ctx.save_for_backward(grad, features, offsets)
    ctx.kind = kind


def _local_affinity_double_backward(ctx, upstream):
    """The vector-Jacobian product of ``local_affinity_backward(grad, features)`` with
    ``upstream``, through the reference op. ``torch.func`` keeps it a differentiable function
    of ``grad``, ``features`` and ``upstream`` when a higher derivative is asked for."""
    from graphseg.ops import reference  # graphseg imports this package: import when needed

    grad, features, offsets = ctx.saved_tensors

    def first(grad, features):
        _, vjp = torch.func.vjp(lambda f: reference.local_affinity(f, offsets, ctx.kind),
                                features)
        return vjp(grad)[0]

    _, vjp = torch.func.vjp(first, grad, features)
    d_grad, d_features = vjp(upstream)
    return (d_grad if ctx.needs_input_grad[0] else None,
            d_features if ctx.needs_input_grad[1] else None, None, None)


def _bilinear_backward(first, second):
    """The backward of an op bilinear in its two tensor inputs (a, b): ``first(grad, a, b,
    offsets)`` and ``second(...)`` are their gradients, computed only where needed."""
    def backward(ctx, grad):
        a, b, offsets = ctx.saved_tensors
        return (first(grad, a, b, offsets) if ctx.needs_input_grad[0] else None,
                second(grad, a, b, offsets) if ctx.needs_input_grad[1] else None, None)
    return backward


# y = A v: dA = window_dot(dy, v), dv = Aᵀ dy
_window_aggregate_backward = _bilinear_backward(
    lambda grad, weight, values, off: _ops.window_dot(grad, values, off),
    lambda grad, weight, values, off: _ops.window_aggregate_transpose(weight, grad, off))
# y = Aᵀ v: dA = window_dot(v, dy), dv = A dy
_window_aggregate_transpose_backward = _bilinear_backward(
    lambda grad, weight, values, off: _ops.window_dot(values, grad, off),
    lambda grad, weight, values, off: _ops.window_aggregate(weight, grad, off))
# y_k = <l, shift_k r>: dl = aggregate(dy, r), dr = aggregateᵀ(dy, l)
_window_dot_backward = _bilinear_backward(
    lambda grad, left, right, off: _ops.window_aggregate(grad, right, off),
    lambda grad, left, right, off: _ops.window_aggregate_transpose(grad, left, off))


register_autograd("graphseg_ext::local_affinity", _local_affinity_backward,
                  setup_context=_save_affinity_inputs)
register_autograd("graphseg_ext::local_affinity_backward", _local_affinity_double_backward,
                  setup_context=_save_affinity_backward_inputs)
register_autograd("graphseg_ext::window_aggregate", _window_aggregate_backward,
                  setup_context=_save_inputs)
register_autograd("graphseg_ext::window_aggregate_transpose",
                  _window_aggregate_transpose_backward, setup_context=_save_inputs)
register_autograd("graphseg_ext::window_dot", _window_dot_backward, setup_context=_save_inputs)


@register_fake("graphseg_ext::lattice_build")
def _lattice_build_fake(features):
    points, dim = features.shape
    vertices = torch.library.get_ctx().new_dynamic_size()
    return (features.new_empty(points, dim + 1, dtype=torch.int32),
            features.new_empty(points, dim + 1),
            features.new_empty(dim + 1, 2, vertices, dtype=torch.int32))


@register_fake("graphseg_ext::lattice_filter")
def _lattice_filter_fake(values, index, splat_weight, slice_weight, neighbours, reverse=False):
    return torch.empty_like(values)


@register_fake("graphseg_ext::lattice_filter_sum")
def _lattice_filter_sum_fake(values, base, index, splat_weight, slice_weight, neighbours, upper):
    return torch.empty_like(base)


@register_fake("graphseg_ext::lattice_diagonal")
def _lattice_diagonal_fake(index, weight, neighbours):
    return weight.new_empty(index.shape[0])


def _save_lattice_inputs(ctx, inputs, output):
    _, index, splat_weight, slice_weight, neighbours, reverse = inputs
    ctx.save_for_backward(index, splat_weight, slice_weight, neighbours)
    ctx.reverse = reverse


def _lattice_filter_backward(ctx, grad):
    index, splat_weight, slice_weight, neighbours = ctx.saved_tensors
    return (_ops.lattice_filter(grad.contiguous(), index, slice_weight, splat_weight, neighbours,
                                not ctx.reverse), None, None, None, None, None)


register_autograd("graphseg_ext::lattice_filter", _lattice_filter_backward,
                  setup_context=_save_lattice_inputs)
