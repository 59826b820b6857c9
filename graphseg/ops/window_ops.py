"""The two window primitives every propagation in graphseg is built from, with backend dispatch.

``local_affinity`` and ``window_aggregate`` run the compiled kernels of ``graphseg_ext`` when the
extension is importable and supports the input (device and dtype), and the pure-PyTorch reference
otherwise. ``set_backend`` / ``use_backend`` force one path, e.g. to compare them or in tests.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.ops import reference

__all__ = [
    "AFFINITY_KINDS",
    "backend",
    "extension_available",
    "local_affinity",
    "set_backend",
    "use_backend",
    "window_aggregate",
    "window_aggregate_transpose",
]

AFFINITY_KINDS = ("l1", "l2", "dot")
_BACKENDS = ("auto", "extension", "reference")
_state = {"backend": "auto", "ext": None, "warned": False}


def _load_extension():
    if _state["ext"] is None:
        try:
            import graphseg_ext

            _state["ext"] = graphseg_ext if graphseg_ext.is_available() else False
        except ImportError:
            _state["ext"] = False
        if _state["ext"] is False and not _state["warned"]:
            _state["warned"] = True
            warnings.warn(
                "graphseg_ext is not built; graphseg uses its pure-PyTorch window ops "
                "(slower). Reinstall with the README's commands to build it.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _state["ext"] or None


def extension_available() -> bool:
    """Whether the compiled extension ``graphseg_ext`` could be loaded."""
    return _load_extension() is not None


def set_backend(name: str) -> None:
    """Chooses the implementation: ``"auto"`` (extension when available), ``"extension"`` (raise
    when absent) or ``"reference"`` (pure PyTorch)."""
    _checks.check_choice("name", name, _BACKENDS)
    if name == "extension" and not extension_available():
        raise RuntimeError("backend 'extension' requested but graphseg_ext is not built")
    _state["backend"] = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous choice on exit."""
    previous = _state["backend"]
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def backend() -> str:
    """The implementation that runs now: ``"extension"`` or ``"reference"``."""
    if _state["backend"] == "reference":
        return "reference"
    return "extension" if extension_available() else "reference"


def _ext_for(*tensors: Tensor):
    """The extension module when it should run these tensors, else None."""
    if backend() != "extension":
        return None
    ext = _load_extension()
    return ext if all(ext.supports(t) for t in tensors) else None


def local_affinity(features: Tensor, offsets: Tensor, kind: str = "l1") -> Tensor:
    r"""Pairwise distances or products between every pixel and each of its window neighbours.

    .. math::
        \mathrm{out}[b, k, p] = \mathrm{pair}\big(f_b(p),\, f_b(p + o_k)\big)

    with ``pair`` the L1 distance :math:`\sum_c |a_c - b_c|` (``"l1"``), the squared L2 distance
    :math:`\sum_c (a_c - b_c)^2` (``"l2"``) or the dot product (``"dot"``). Neighbours outside the
    image give 0 (the ``drop`` border rule). Differentiable in ``features``.

    Args:
        features: ``(B, C, H, W)`` floating-point tensor.
        offsets: ``(K, 2)`` integer (dy, dx) offsets, see :func:`graphseg.window_offsets`.
        kind: ``"l1"``, ``"l2"`` or ``"dot"``.

    Shapes:
        features ``(B, C, H, W)``, offsets ``(K, 2)`` → ``(B, K, H, W)``.
    """
    _checks.check_tensor4d("features", features)
    offsets = _checks.check_offsets(offsets)
    _checks.check_choice("kind", kind, AFFINITY_KINDS)
    return affinity_unchecked(features, offsets, kind)


def affinity_unchecked(features: Tensor, offsets: Tensor, kind: str) -> Tensor:
    """:func:`local_affinity` without input checks, for graphseg's internals."""
    ext = _ext_for(features)
    if ext is not None:
        return ext.local_affinity(features, offsets, kind)
    return reference.local_affinity(features, offsets.cpu(), kind)


def window_aggregate(weight: Tensor, values: Tensor, offsets: Tensor) -> Tensor:
    r"""Weighted sum of each pixel's window neighbours.

    .. math::
        y_b(p) = \sum_k w_{b,k}(p)\, v_b(p + o_k)

    over the neighbours inside the image. This is the mat-vec ``A v`` of the windowed graph whose
    edge p → p + o_k has weight ``weight[b, k, p]``. Differentiable in ``weight`` and ``values``.

    Args:
        weight: ``(B, K, H, W)`` edge weights.
        values: ``(B, C, H, W)`` node values of the same dtype.
        offsets: ``(K, 2)`` integer offsets matching ``weight``.

    Shapes:
        weight ``(B, K, H, W)``, values ``(B, C, H, W)`` → ``(B, C, H, W)``.
    """
    _checks.check_tensor4d("weight", weight, what="(B, K, H, W)")
    _checks.check_tensor4d("values", values)
    offsets = _checks.check_offsets(offsets)
    _checks.same_batch("weight", weight, "values", values)
    if weight.shape[1] != offsets.shape[0]:
        raise ValueError(f"weight has {weight.shape[1]} offsets (dim 1) but offsets has "
                         f"{offsets.shape[0]} rows")
    if weight.dtype != values.dtype:
        raise TypeError(f"weight and values must share a dtype, got {weight.dtype} and "
                        f"{values.dtype}")
    return aggregate_unchecked(weight, values, offsets)


def aggregate_unchecked(weight: Tensor, values: Tensor, offsets: Tensor, *,
                        out: Tensor | None = None) -> Tensor:
    """:func:`window_aggregate` without input checks, for graphseg's internals; ``out`` (not
    differentiable) reuses a buffer, which saves the page faults of a fresh large output."""
    ext = _ext_for(weight, values)
    if ext is not None:
        return ext.window_aggregate(weight, values, offsets, out=out)
    return reference.window_aggregate(weight, values, offsets.cpu(), out=out)


def fused_power_available(weight: Tensor, values: Tensor, *others: Tensor) -> bool:
    """Whether :func:`aggregate_power_fused` can run on these tensors: the extension's CPU
    kernel (float32 or float64), and no gradient asked for through any of them (the fused kernel
    records none)."""
    ext = _ext_for(weight, values)
    if ext is None or weight.device.type != "cpu":
        return False
    return not (torch.is_grad_enabled()
                and any(t.requires_grad for t in (weight, values, *others)))


def aggregate_power_fused(weight: Tensor, values: Tensor, offsets: Tensor,
                          num_steps: int) -> Tensor:
    """``num_steps`` window aggregations in a row, ``A^t v``, in the extension's multi-step
    kernel; inputs are trusted and :func:`fused_power_available` must hold."""
    return _load_extension().window_aggregate_power(weight, values, offsets, num_steps)


def window_aggregate_transpose(weight: Tensor, values: Tensor, offsets: Tensor) -> Tensor:
    """The adjoint of :func:`window_aggregate` in ``values`` (``Aᵀ v``); inputs are trusted."""
    ext = _ext_for(weight, values)
    if ext is not None:
        return ext.window_aggregate_transpose(weight, values, offsets)
    return reference.window_aggregate_transpose(weight, values, offsets.cpu())

