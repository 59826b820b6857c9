"""Compiled window ops for graphseg (C++ CPU and CUDA kernels).

Interface used by :mod:`graphseg.ops`:

- ``is_available()``: whether the compiled library ``graphseg_ext._C`` is loaded;
- ``supports(tensor)``: whether the kernels handle this tensor's device and dtype;
- ``local_affinity(features, offsets, kind)`` and ``window_aggregate(weight, values, offsets)``.
"""

from __future__ import annotations

__all__ = ["is_available", "supports"]


def is_available() -> bool:
    """Whether the compiled kernels are built and loaded."""
    return False


def supports(tensor) -> bool:  # noqa: ARG001 - no kernels yet
    """Whether the compiled kernels handle ``tensor``'s device and dtype."""
    return False
