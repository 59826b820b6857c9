"""Label spreading (Zhou et al., NIPS 2003)."""

from __future__ import annotations

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.propagate._common import node_seeds, node_values, one_hot, seed_classes

__all__ = ["label_spreading"]


def label_spreading(
    graph,
    seeds_or_probs: Tensor,
    *,
    alpha: float = 0.99,
    num_steps: int = 50,
    num_classes: int | None = None,
    clamp: bool = False,
) -> Tensor:
    r"""Label spreading :math:`Y \leftarrow \alpha S Y + (1 - \alpha) Y_0`,
    :math:`S = D^{-1/2} A D^{-1/2}`.

    Args:
        graph: a :class:`WindowGraph`, a PyG ``Data`` or an :class:`EdgeGraph` (its weights are
            normalised here; self weights, if any, count as edges).
        seeds_or_probs: int64 seeds (255 = unknown; ``(B, H, W)`` or ``(N,)``), turned into
            one-hot :math:`Y_0`, or float scores :math:`Y_0` (``(B, C, H, W)`` or ``(N, C)``).
        alpha: the propagation weight α in (0, 1).
        num_steps: iterations (the fixed point is :math:`(1-\alpha)(I - \alpha S)^{-1} Y_0`).
        num_classes: class count for seeds (default: largest seed + 1).
        clamp: clamp Y to [0, 1] after every step, as PyG's ``LabelPropagation`` does.

    Returns:
        Scores :math:`Y` in the layout of the input (argmax gives the labels).

    References:
        D. Zhou, O. Bousquet, T. N. Lal, J. Weston, B. Schölkopf, "Learning with Local and
        Global Consistency", NIPS 2003.
    """
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    _checks.check_positive("num_steps", num_steps, integer=True, allow_zero=True)
    if isinstance(seeds_or_probs, Tensor) and not seeds_or_probs.is_floating_point():
        graph, seeds, restore = node_seeds(graph, seeds_or_probs, "seeds_or_probs")
        classes = seed_classes(seeds, num_classes, "seeds_or_probs")
        start = one_hot(seeds, classes, graph.dtype)
    else:
        graph, start, restore = node_values(graph, seeds_or_probs, "seeds_or_probs")
    operator = graph.normalize("sym")
    values = start
    for _ in range(num_steps):
        values = alpha * operator._aggregate(values) + (1 - alpha) * start
        if clamp:
            values = torch.clamp(values, 0, 1)
    return restore(values)
