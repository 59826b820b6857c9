"""Affinity pair labels from seeds (A²GNN, thesis Eq. 3.6–3.7), in the windowed layout."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import window_offsets
from graphseg.ops.reference import valid_box

__all__ = ["PairLabels", "border_band", "pair_labels"]

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


def border_band(labels, band: int) -> Tensor:
    """Label maps with the pixels near a border between two labels made unknown: every pixel
    with a pixel of another value within ``band`` pixels (the ``(2·band + 1)²`` square
    around it) becomes 255. The image's own edges are no border, and unknown pixels count as
    a value of their own (their neighbourhood becomes unknown too).

    Pseudo-labels are least reliable at their borders; keeping the pixels away from them
    trains an affinity CNN only on confident pairs (as thesis Eq. 3.4–3.5 keep only the
    confident pixels of CAMs), and a box network only on the confident pixels of its seeds.

    Args:
        labels: ``(B, H, W)`` or ``(H, W)`` int64 labels (255 = unknown).
        band: half width of the band in pixels (0 returns the labels unchanged).

    Returns:
        The labels, same shape, with the band set to 255.

    Example:
        >>> border_band(torch.tensor([[0, 0, 0, 1, 1, 1]]), 1)
        tensor([[  0,   0, 255, 255,   1,   1]])
    """
    _checks.check_positive("band", band, integer=True, allow_zero=True)
    if not isinstance(labels, Tensor) or labels.dim() not in (2, 3) or (
            labels.is_floating_point() or labels.is_complex()):
        raise ValueError("labels must be an integer (B, H, W) or (H, W) tensor, got "
                         f"{_checks._describe(labels)}")
    if band == 0 or labels.numel() == 0:
        return labels.clone()
    values = labels.double()[None] if labels.dim() == 2 else labels.double()[:, None]
    kernel = 2 * band + 1
    highest = F.max_pool2d(values, kernel, 1, band)
    lowest = -F.max_pool2d(-values, kernel, 1, band)
    border = (highest != lowest).view(labels.shape)
    return torch.where(border, torch.full_like(labels, UNKNOWN), labels)
