"""What the loss modules share: the ignore label, the epsilon of the official logarithms,
masked means and the checks of node values and seeds."""

from __future__ import annotations

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.edges import EdgeGraph, as_graph
from graphseg.graph.window import WindowGraph
from graphseg.ops.window_ops import affinity_unchecked

IGNORE = 255
LOG_EPS = 1e-5  # the official code's epsilon inside both logarithms of L_Ac


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` holds; 0 (still in the autograd graph) when empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def _l1_over_d(features: Tensor, offsets: Tensor) -> Tensor:
    """``‖F_i − F_j‖₁ / d`` for every window pair: the negative log of D_ij (Eq. 3.14)."""
    return affinity_unchecked(features, offsets.to(features.device), "l1") / features.shape[1]


def _node_values(probs, graph, name: str = "probs") -> tuple[WindowGraph | EdgeGraph, Tensor]:
    """Checks ``probs`` against ``graph`` and returns the graph with the values in the 4-D node
    layout: ``(B, C, H, W)`` for a WindowGraph, ``(1, C, N, 1)`` for an EdgeGraph."""
    graph = as_graph(graph)
    if isinstance(graph, WindowGraph):
        _checks.check_tensor4d(name, probs)
        _checks.same_batch(name, probs, "graph weight", graph.weight)
        return graph, probs
    if (not isinstance(probs, Tensor) or probs.dim() != 2 or probs.shape[0] != graph.num_nodes
            or not probs.is_floating_point()):
        raise ValueError(f"{name} must be a float ({graph.num_nodes}, C) tensor for a graph of "
                         f"{graph.num_nodes} nodes, got {_checks._describe(probs)}")
    _checks.check_finite(name, probs)
    return graph, probs.t().reshape(1, probs.shape[1], graph.num_nodes, 1)


def _check_seeds_for(seeds, probs: Tensor, ignore_index: int, name: str = "seeds") -> Tensor:
    """Seeds of shape ``(B, H, W)`` for ``(B, C, H, W)`` values or ``(N,)`` for ``(N, C)``."""
    expected = (probs.shape[0], *probs.shape[2:])
    if (not isinstance(seeds, Tensor) or seeds.is_floating_point() or seeds.is_complex()
            or seeds.dtype == torch.bool):
        raise TypeError(f"{name} must be an int64 tensor of shape {expected} ({ignore_index} = "
                        f"unknown), got {_checks._describe(seeds)}")
    _checks.check_companion(name, seeds, expected, probs)
    _checks.check_seed_values(name, seeds, probs.shape[1], ignore_index)
    return seeds.long()


def _check_ignore_index(ignore_index) -> int:
    return _checks._as_int("ignore_index", ignore_index)


def _check_logits_seeds(logits: Tensor, seeds: Tensor) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() not in (
            2, 4):
        raise TypeError("logits must be a float (B, C, H, W) or (N, C) tensor, got "
                        f"{_checks._describe(logits)}")
    expected = (logits.shape[0], *logits.shape[2:])
    _checks.check_seed_map(seeds, expected, f"logits of shape {tuple(logits.shape)}")
    _checks.check_seed_values("seeds", seeds, logits.shape[1], IGNORE)
