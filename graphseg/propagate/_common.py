"""Shared input handling of the propagation functions.

Pixel graphs carry node values as ``(B, C, H, W)``; PyG graphs as ``(N, C)``, which travel inside
as ``(1, C, N, 1)`` so that both kinds reduce over the last two dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.edges import EdgeGraph, as_graph
from graphseg.graph.window import WindowGraph

IGNORE = 255
SHOWN = 10  # missing classes listed in an error message


LOW_PRECISION = (torch.float16, torch.bfloat16)


def propagation_graph(graph, name: str = "graph") -> WindowGraph | EdgeGraph:
    """The graph object of a propagation: weights in float32 at least (half precision cannot
    resolve the small differences a propagation accumulates, and SciPy has neither float16 nor
    bfloat16), and non-negative (a random walk, a harmonic solve or a spreading over negative
    affinities gives no probabilities: NaN, values outside [0, 1], an indefinite Laplacian)."""
    graph = as_graph(graph, name)
    window = isinstance(graph, WindowGraph)
    if graph.dtype in LOW_PRECISION:
        graph = graph.to(torch.float32) if window else graph._with(graph.edge_weight.float())
    weights = [graph.weight, graph.self_weight] if window else [graph.edge_weight]
    weights = [w for w in weights if w is not None and w.numel()]
    smallest = min((float(w.detach().min()) for w in weights), default=0.0)
    if smallest < 0:
        raise ValueError(
            f"{name} has negative weights (smallest {smallest:.3g}); propagation needs "
            "non-negative affinities. A cosine kernel gives negative ones: set them to 0 as "
            "A²GNN's attention does, e.g. WindowGraph(graph.weight.clamp_min(0), graph.offsets), "
            "or use kernel='gaussian' / 'l1'")
    return graph


def node_values(graph, values, name: str) -> tuple[WindowGraph | EdgeGraph, Tensor, Callable]:
    """Checks ``values`` against ``graph``; returns the graph object (see
    :func:`propagation_graph`), the values in the 4-D layout and a function that restores the
    caller's layout."""
    graph = propagation_graph(graph)
    if isinstance(graph, WindowGraph):
        _checks.check_tensor4d(name, values)
        _checks.same_batch(name, values, "graph weight", graph.weight)
        return graph, values.to(graph.dtype), lambda out: out
    if not isinstance(values, Tensor) or values.dim() != 2 or values.shape[0] != graph.num_nodes:
        raise ValueError(f"{name} must have shape ({graph.num_nodes}, C) for a graph of "
                         f"{graph.num_nodes} nodes, got "
                         f"{tuple(getattr(values, 'shape', ())) or type(values).__name__}")
    if not values.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {values.dtype}")
    _checks.check_finite(name, values)
    return graph, values.t().reshape(1, -1, graph.num_nodes, 1).to(graph.dtype), (
        lambda out: out[0, :, :, 0].t())


def node_seeds(graph, seeds, name: str = "seeds") -> tuple[WindowGraph | EdgeGraph, Tensor,
                                                            Callable]:
    """Checks a seed map (int64, 255 = unknown): ``(B, H, W)`` for a pixel graph, ``(N,)`` for a
    PyG graph. Returns the graph (see :func:`propagation_graph`), the seeds as ``(B, H, W)`` /
    ``(1, N, 1)`` and the layout restorer for class-valued outputs."""
    graph = propagation_graph(graph)
    if not isinstance(seeds, Tensor):
        raise TypeError(f"{name} must be an int64 tensor, got {type(seeds).__name__}")
    if seeds.is_floating_point() or seeds.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (255 = unknown), got {seeds.dtype}")
    if isinstance(graph, WindowGraph):
        expected = (graph.batch_size, *graph.image_size)
        restore = lambda out: out  # noqa: E731
    else:
        expected = (graph.num_nodes,)
        restore = lambda out: out[0, :, :, 0].t()  # noqa: E731
    if tuple(seeds.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} to match the graph, got "
                         f"{tuple(seeds.shape)}")
    seeds = seeds.long().reshape(-1, *(graph.image_size if isinstance(graph, WindowGraph)
                                       else (graph.num_nodes, 1)))
    known = seeds != IGNORE
    if not bool(known.any()):
        raise ValueError(f"{name} has no seed: every entry is {IGNORE} (unknown)")
    if bool((seeds[known] < 0).any()):
        raise ValueError(f"{name} must hold class ids >= 0 or {IGNORE}, got "
                         f"{int(seeds[known].min())}")
    return graph, seeds, restore


def one_hot(seeds: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``(B, H, W)`` seeds → ``(B, C, H, W)`` one-hot, zero at unknown pixels."""
    known = seeds != IGNORE
    index = torch.where(known, seeds, torch.zeros_like(seeds))
    hot = torch.nn.functional.one_hot(index, num_classes).permute(0, 3, 1, 2).to(dtype)
    return hot * known.unsqueeze(1)


def seed_classes(seeds: Tensor, num_classes: int | None, name: str = "seeds") -> int:
    """The class count: ``num_classes`` when given (each class must have a seed), else the
    largest seeded class + 1 (classes in between must have seeds too)."""
    present = torch.unique(seeds[seeds != IGNORE]).tolist()
    count = max(present) + 1 if num_classes is None else num_classes
    if num_classes is not None:
        _checks.check_positive("num_classes", num_classes, integer=True)
        if max(present) >= num_classes:
            raise ValueError(f"{name} holds class {max(present)} but num_classes={num_classes}")
    if len(present) < count:
        # listed without range(count): a stray seed value such as 10**12 must not fill memory
        missing, expected = [], 0
        for cls in [*present, count]:
            missing += range(expected, min(cls, expected + SHOWN - len(missing)))
            expected = cls + 1
        listed = f"{missing}"
        if count - len(present) > SHOWN:
            listed = f"[{', '.join(map(str, missing[:-1]))}, ...] ({count - len(present)} in all)"
        raise ValueError(f"classes {listed} have no seed in {name}; every class needs at least "
                         "one seeded pixel (relabel the classes or drop the empty ones)")
    return count
