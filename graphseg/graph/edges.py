"""A general weighted graph from an edge list (a PyG ``Data``), with the algebra of WindowGraph.

The propagation algorithms are written once against the methods shared by :class:`WindowGraph`
and :class:`EdgeGraph` (``aggregate``, ``degree``, ``normalize``, ``power``, ``symmetrize``). Node
values of an EdgeGraph travel in the same 4-D layout as pixel values, ``(1, C, N, 1)``, so that
reductions over nodes are reductions over the last two dimensions in both cases.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphseg import _checks

__all__ = ["EdgeGraph", "as_graph"]


class EdgeGraph:
    r"""A graph on N nodes with edges ``source → target``: ``aggregate`` computes
    :math:`y_i = \sum_{(j \to i)} w_{ji}\, v_j`, PyG's ``source_to_target`` flow.

    Args:
        edge_index: ``(2, E)`` int64, row 0 the source j, row 1 the target i.
        edge_weight: ``(E,)`` float weights (None: all ones).
        num_nodes: N (default: largest index + 1).

    Shapes:
        node values ``(1, C, N, 1)`` inside graphseg; :func:`graphseg.propagate` functions take
        and return PyG's ``(N, C)``.
    """

    def __init__(self, edge_index: Tensor, edge_weight: Tensor | None = None,
                 num_nodes: int | None = None) -> None:
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError("edge_index must be a (2, E) integer tensor, got "
                             f"{getattr(edge_index, 'shape', type(edge_index).__name__)}")
        if edge_index.is_floating_point():
            raise TypeError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
        edge_index = edge_index.long()
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        if num_nodes <= 0:
            raise ValueError(f"the graph must have at least one node, got num_nodes={num_nodes}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes})")
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1], device=edge_index.device)
        if edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_weight must have shape ({edge_index.shape[1]},), got "
                             f"{tuple(edge_weight.shape)}")
        if not edge_weight.is_floating_point():
            raise TypeError(f"edge_weight must be floating point, got {edge_weight.dtype}")
        _checks.check_finite("edge_weight", edge_weight)
        self.edge_index = edge_index
        self.edge_weight = edge_weight
        self.num_nodes = num_nodes

    @classmethod
    def from_pyg(cls, data) -> EdgeGraph:
        """From a ``torch_geometric.data.Data`` with ``edge_index`` and optional ``edge_weight``."""
        return cls(data.edge_index, getattr(data, "edge_weight", None), data.num_nodes)

    def __repr__(self) -> str:
        return (f"EdgeGraph(nodes={self.num_nodes}, edges={self.edge_index.shape[1]}, "
                f"dtype={self.edge_weight.dtype})")

    @property
    def dtype(self) -> torch.dtype:
        return self.edge_weight.dtype

    def _with(self, edge_weight: Tensor) -> EdgeGraph:
        graph = EdgeGraph.__new__(EdgeGraph)
        graph.edge_index, graph.edge_weight, graph.num_nodes = (
            self.edge_index, edge_weight, self.num_nodes)
        return graph

    def _scatter(self, index: Tensor, values: Tensor) -> Tensor:
        out = values.new_zeros(self.num_nodes, *values.shape[1:])
        return out.index_add(0, index, values)

    def degree(self) -> Tensor:
        """Weighted in-degree of each target, ``(1, N, 1)`` (the row sums of A)."""
        return self._scatter(self.edge_index[1], self.edge_weight).view(1, -1, 1)

    def without_self_loops(self) -> EdgeGraph:
        """The graph with its self loops removed (as in the Laplacian)."""
        keep = self.edge_index[0] != self.edge_index[1]
        return EdgeGraph(self.edge_index[:, keep], self.edge_weight[keep], self.num_nodes)

    def in_degree(self) -> Tensor:
        """Column sums of A (weighted out-degree of each source), ``(1, N, 1)``."""
        return self._scatter(self.edge_index[0], self.edge_weight).view(1, -1, 1)

    def normalize(self, mode: str = "row") -> EdgeGraph:
        """``"row"`` D⁻¹A, ``"sym"`` D^-½AD^-½ or ``"col"`` A D_in⁻¹, as WindowGraph.normalize."""
        _checks.check_choice("mode", mode, ("row", "sym", "col"))
        degree = (self.in_degree() if mode == "col" else self.degree()).view(-1)
        inverse = torch.where(degree > 0, 1.0 / degree.clamp_min(torch.finfo(degree.dtype).tiny),
                              torch.zeros_like(degree))
        source, target = self.edge_index
        if mode == "row":
            return self._with(self.edge_weight * inverse[target])
        if mode == "col":
            return self._with(self.edge_weight * inverse[source])
        root = inverse.sqrt()
        return self._with(self.edge_weight * root[target] * root[source])

    def power(self, beta: float) -> EdgeGraph:
        """Element-wise power of every weight."""
        _checks.check_positive("beta", beta)
        return self._with(self.edge_weight.pow(beta))

    def symmetrize(self) -> EdgeGraph:
        """(A + Aᵀ) / 2 with duplicate edges merged."""
        source, target = self.edge_index
        index = torch.cat([torch.stack([source, target]), torch.stack([target, source])], dim=1)
        weight = torch.cat([self.edge_weight, self.edge_weight]) / 2
        matrix = torch.sparse_coo_tensor(index, weight, (self.num_nodes,) * 2,
                                         check_invariants=False).coalesce()
        graph = EdgeGraph.__new__(EdgeGraph)
        graph.edge_index, graph.edge_weight, graph.num_nodes = (
            matrix.indices(), matrix.values(), self.num_nodes)
        return graph

    def _aggregate(self, values: Tensor) -> Tensor:
        """``A v`` for node values ``(1, C, N, 1)`` (inputs trusted, as WindowGraph._aggregate)."""
        source, target = self.edge_index
        flat = values[0, :, :, 0].t()
        messages = flat[source] * self.edge_weight.to(flat.dtype).unsqueeze(1)
        return self._scatter(target, messages).t().reshape(1, -1, self.num_nodes, 1)


def as_graph(graph, name: str = "graph"):
    """Accepts a WindowGraph, an EdgeGraph or a PyG ``Data``; returns a graph object with the
    shared algebra."""
    from graphseg.graph.window import WindowGraph

    if isinstance(graph, (WindowGraph, EdgeGraph)):
        return graph
    if hasattr(graph, "edge_index") and hasattr(graph, "num_nodes"):
        return EdgeGraph.from_pyg(graph)
    raise TypeError(f"{name} must be a WindowGraph, an EdgeGraph or a torch_geometric Data with "
                    f"edge_index, got {type(graph).__name__}")
