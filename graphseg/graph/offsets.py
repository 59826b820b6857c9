"""Offset tables of windowed pixel graphs (DESIGN §3).

An offset (dy, dx) links pixel (y, x) to pixel (y + dy, x + dx); the centre is never an offset
(self weights are stored apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from graphseg import _checks

__all__ = ["MAX_OFFSETS", "OFFSET_SHAPES", "opposite_offsets", "window_offsets"]

OFFSET_SHAPES = ("disk", "psa", "square", "rings")
PAR_DILATIONS = (1, 2, 4, 8, 12, 24)
# A window of more offsets than this links every pixel to a large part of the image: a dense
# graph in disguise, whose (B, K, H, W) weights would not fit in memory. Long-range edges belong
# in shape="rings" (8 offsets per distance).
MAX_OFFSETS = 2**20
MAX_DISTANCE = 2**30


def _disk(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if (dy, dx) != (0, 0) and dy * dy + dx * dx <= radius * radius]


def _psa_half(radius: int) -> list[tuple[int, int]]:
    half = [(0, dx) for dx in range(1, radius)]
    half += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius)
             if dy * dy + dx * dx < radius * radius]
    return half


def _square(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if (dy, dx) != (0, 0)]


def _rings(dilations: Sequence[int]) -> list[tuple[int, int]]:
    ring = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    return [(d * dy, d * dx) for d in dilations for dy, dx in ring]


def window_offsets(
    radius: int | None = None,
    shape: str = "disk",
    dilations: Sequence[int] | None = None,
) -> Tensor:
    """Offsets of a pixel's window neighbours, centre excluded.

    Shapes (DESIGN §3):

    - ``"disk"``: dy² + dx² ≤ r² (A²GNN paper window) → K = 80 at r = 5, 48 at r = 4, 28 at r = 3.
    - ``"psa"``: the AffinityNet/IRN half-disk — (0, dx) for dx = 1..r−1 and (dy, dx) for
      dy = 1..r−1, ``|dx| ≤ r−1``, dy² + dx² < r² (34 directions at r = 5) — followed by their
      negations, so the table is closed under negation → K = 68 at r = 5. Offset ``k + K/2`` is
      the opposite of offset ``k``.
    - ``"square"``: the (2r+1)² − 1 entries of A²GNN's official unfold window → K = 120 at r = 5.
    - ``"rings"``: the 8 neighbours at each dilation (AFA/ToCo PAR); ``dilations`` defaults to
      (1, 2, 4, 8, 12, 24) → K = 48. ``radius`` must be None.

    Args:
        radius: window radius in pixels (not used by ``"rings"``).
        shape: one of ``"disk"``, ``"psa"``, ``"square"``, ``"rings"``.
        dilations: ring distances for ``"rings"``.

    Returns:
        ``(K, 2)`` int64 tensor of (dy, dx).

    Raises:
        ValueError: for a table of more than ``MAX_OFFSETS`` (2**20) offsets, or ring distances
            above 2**30: such a window is a dense graph, see ``shape="rings"``.

    Example:
        >>> window_offsets(5).shape
        torch.Size([80, 2])
    """
    _checks.check_choice("shape", shape, OFFSET_SHAPES)
    if shape == "rings":
        if radius is not None:
            raise ValueError("radius must be None for shape='rings'; give the ring distances "
                             f"as dilations, got radius={radius!r}")
        dilations = PAR_DILATIONS if dilations is None else tuple(dilations)
        if not dilations:
            raise ValueError("dilations must name at least one ring distance, got an empty list")
        if 8 * len(dilations) > MAX_OFFSETS:
            raise ValueError(f"dilations name {len(dilations)} rings ({8 * len(dilations)} "
                             f"offsets), above MAX_OFFSETS={MAX_OFFSETS}")
        for d in dilations:
            _checks.check_positive("dilations", d, integer=True)
            if d > MAX_DISTANCE:
                raise ValueError(f"dilations must be at most {MAX_DISTANCE} pixels, got {d}")
        if len(set(dilations)) != len(dilations):
            raise ValueError(f"dilations must be distinct, got {list(dilations)}")
        table = _rings(dilations)
    else:
        if dilations is not None:
            raise ValueError(f"dilations apply to shape='rings' only, got shape={shape!r}")
        if radius is None:
            raise ValueError(f"radius is required for shape={shape!r}")
        _checks.check_positive("radius", radius, integer=True)
        # counted before the table is built: an absurd radius must fail at once, not fill memory
        count = math.inf if radius > MAX_OFFSETS else (
            (2 * radius + 1) ** 2 - 1 if shape == "square" else math.pi * radius * radius)
        if count > MAX_OFFSETS:
            raise ValueError(
                f"radius={radius} gives about {count:.3g} window offsets for shape={shape!r}, "
                f"above MAX_OFFSETS={MAX_OFFSETS}: a window that wide is a dense graph. Use "
                "shape='rings' with a few dilations for long-range edges, or a smaller radius")
        if shape == "disk":
            table = _disk(radius)
        elif shape == "square":
            table = _square(radius)
        else:
            if radius < 2:
                raise ValueError(f"radius must be >= 2 for shape='psa' (the half-disk of radius "
                                 f"1 is empty), got {radius}")
            half = _psa_half(radius)
            table = half + [(-dy, -dx) for dy, dx in half]
    return torch.tensor(table, dtype=torch.int64).reshape(-1, 2)


def opposite_offsets(offsets: Tensor) -> Tensor:
    """For each offset k, the index k' with o_k' = −o_k, or −1 where the table lacks it.

    Used to read a symmetric graph's reverse edges: weight[k'] at p + o_k is the reverse of
    weight[k] at p."""
    offsets = _checks.check_offsets(offsets)
    index = {tuple(o): k for k, o in enumerate(offsets.tolist())}
    return torch.tensor([index.get((-dy, -dx), -1) for dy, dx in offsets.tolist()],
                        dtype=torch.int64)
