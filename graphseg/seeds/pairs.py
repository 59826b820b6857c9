"""Affinity pair labels from seeds (A²GNN, thesis Eq. 3.6–3.7), in the windowed layout."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import window_offsets
from graphseg.ops.reference import valid_box

__all__ = ["PairLabels", "pair_labels"]

UNKNOWN = 255


class PairLabels(NamedTuple):
    """Pair labels of every pixel and window neighbour, each ``(B, K, H, W)`` bool;
    entry ``[b, k, y, x]`` is the pair (y, x), (y + dy_k, x + dx_k) of :attr:`offsets`, laid out
    like :attr:`graphseg.WindowGraph.weight`."""

    background: Tensor
    """Both pixels background (class 0): positive, affinity 1."""
    foreground: Tensor
    """Both pixels the same foreground class: positive, affinity 1."""
    negative: Tensor
    """Both pixels labelled, with different classes: negative, affinity 0."""
    offsets: Tensor
    """``(K, 2)`` int64 (dy, dx) of the window."""

    @property
    def positive(self) -> Tensor:
        """Background or foreground positive pairs."""
        return self.background | self.foreground


def pair_labels(
    seeds,
    *,
    radius: int = 5,
    shape: str = "disk",
    offsets: Tensor | None = None,
) -> PairLabels:
    r"""Labels the pixel pairs within a window for training an affinity model.

    For pixels i, j within the window (j = i + o_k) whose seeds are both known (thesis Eq. 3.6):

    .. math::
        \hat A_{ij} = \begin{cases} 1 & s_i = s_j \\ 0 & s_i \ne s_j \end{cases}

    and the positives split into background pairs (s_i = s_j = 0) and foreground pairs
    (Eq. 3.7; the official loss weights them bg/4 + fg/4 + neg/2). Pairs with an unknown seed
    (255) or whose neighbour leaves the image are in none of the three sets.

    Args:
        seeds: ``(B, H, W)`` int64 seeds, 255 = unknown (usually downsampled to the feature
            resolution first).
        radius: window radius (thesis: disk r = 5; official code: square, r = 4 box/scribble,
            3 image/point).
        shape: offset family, see :func:`graphseg.window_offsets`.
        offsets: explicit ``(K, 2)`` offsets (overrides ``radius`` and ``shape``), e.g. those of
            the :class:`graphseg.WindowGraph` being trained.

    Returns:
        :class:`PairLabels` with ``(B, K, H, W)`` bool masks.
    """
    seeds = _checks.as_label_batch(seeds, "seeds")
    _checks.check_seed_values("seeds", seeds, None)
    if offsets is None:
        offsets = window_offsets(radius, shape)
    else:
        offsets = _checks.check_offsets(offsets)
    batch, height, width = seeds.shape
    size = (batch, offsets.shape[0], height, width)
    background = torch.zeros(size, dtype=torch.bool, device=seeds.device)
    foreground = torch.zeros_like(background)
    negative = torch.zeros_like(background)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        y0, y1, x0, x1 = valid_box(dy, dx, height, width)
        if y1 <= y0 or x1 <= x0:
            continue
        here = seeds[:, y0:y1, x0:x1]
        there = seeds[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        known = (here != UNKNOWN) & (there != UNKNOWN)
        same = known & (here == there)
        background[:, k, y0:y1, x0:x1] = same & (here == 0)
        foreground[:, k, y0:y1, x0:x1] = same & (here != 0)
        negative[:, k, y0:y1, x0:x1] = known & (here != there)
    return PairLabels(background, foreground, negative, offsets)
