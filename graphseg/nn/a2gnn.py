"""The A²GNN model (thesis Eq. 3.16–3.21) and GCN / GAT / AGNN baselines with the same interface.

Every model here takes a :class:`graphseg.WindowGraph` with node features ``x`` (pixels, layout
``(B, F, H, W)``) or a PyG ``Data`` with ``x`` (any graph, layout ``(N, F)``) and returns a
:class:`GNNOutput`: the class logits and the features before the output layer, in the layout of
the input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.window import WindowGraph
from graphseg.nn.attention import EDGE_SCALE, THRESHOLD, AffinityAttentionConv

__all__ = ["BASELINES", "A2GNN", "BaselineGNN", "GNNOutput", "baseline_gnn"]

BASELINES = ("gcn", "gat", "agnn")
GAT_HEADS = 8


class GNNOutput(NamedTuple):
    """What the graph models return, in the layout of their input graph."""

    logits: Tensor
    """``(B, C, H, W)`` for a WindowGraph, ``(N, C)`` for a PyG graph."""
    features: Tensor
    """Features before the output layer, H^{L+1}: ``(B, F, H, W)`` or ``(N, F)``."""

    @property
    def probs(self) -> Tensor:
        """Class probabilities O = softmax of the logits over classes (dimension 1)."""
        return self.logits.softmax(1)


def node_inputs(graph, name: str = "graph") -> Tensor:
    """The node features of a WindowGraph (``(B, F, H, W)``) or a PyG ``Data`` (``(N, F)``)."""
    if isinstance(graph, WindowGraph):
        if graph.x is None:
            raise ValueError(f"{name} has no node features x: build it with "
                             "AffinityCNN.to_graph() or WindowGraph(weight, offsets, x=features)")
        return graph.x
    if hasattr(graph, "edge_index") and hasattr(graph, "num_nodes"):
        x = getattr(graph, "x", None)
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{name}.x must be a float (N, F) node feature tensor, got "
                             f"{_checks._describe(x)}")
        return x
    raise TypeError(f"{name} must be a WindowGraph with node features or a torch_geometric Data "
                    f"with x and edge_index, got {type(graph).__name__}")


def _pointwise(layer: nn.Module, x: Tensor, windowed: bool) -> Tensor:
    """A per-node linear layer on ``(N, F)`` or, channel-wise, on ``(B, F, H, W)``."""
    return layer(x.movedim(1, -1)).movedim(-1, 1) if windowed else layer(x)


class A2GNN(nn.Module):
    r"""Affinity-attention graph neural network (A²GNN, thesis §3.4, Eq. 3.16–3.21).

    .. math::
        H^1 = \mathrm{ReLU}(X W^0), \qquad H^{l+1} = P^l H^l \ (l = 1..L), \qquad
        O = \mathrm{softmax}(H^{L+1} W)

    with dropout 0.5 after H¹ and P^l the affinity attention of
    :class:`~graphseg.nn.AffinityAttentionConv`. On a :class:`graphseg.WindowGraph` the attention
    runs in the windowed layout; on a PyG graph as message passing; both give the same output.

    Args:
        in_channels: node feature size F of X.
        num_classes: C, background included.
        hidden: width of H (256 in the thesis and code).
        num_layers: attention layers L (3).
        dropout: dropout rate after H¹ (0.5).
        variant: ``"paper"`` or ``"official"`` attention (default: official code).
        edge_scale, threshold: see :class:`~graphseg.nn.AffinityAttentionConv`.

    Shapes:
        WindowGraph with x ``(B, F, H, W)`` → logits ``(B, C, H, W)``, features
        ``(B, hidden, H, W)``; Data with x ``(N, F)`` → ``(N, C)``, ``(N, hidden)``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, hidden: int = 256,
                 num_layers: int = 3, dropout: float = 0.5, variant: str = "official",
                 edge_scale: float = EDGE_SCALE, threshold: float = THRESHOLD) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("hidden", hidden), ("num_layers", num_layers)):
            _checks.check_positive(name, value, integer=True)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input = nn.Linear(in_channels, hidden)
        self.dropout = dropout
        self.convs = nn.ModuleList(
            AffinityAttentionConv(variant=variant, edge_scale=edge_scale, threshold=threshold)
            for _ in range(num_layers))
        self.output = nn.Linear(hidden, num_classes)

    def reset_parameters(self) -> None:
        self.input.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        self.output.reset_parameters()

    def forward(self, graph) -> GNNOutput:
        x = node_inputs(graph)
        windowed = isinstance(graph, WindowGraph)
        h = F.relu(_pointwise(self.input, x, windowed))
        h = F.dropout(h, self.dropout, self.training)
        for conv in self.convs:
            if windowed:
                h = conv.forward_window(h, graph)
            else:
                h = conv(h, graph.edge_index, getattr(graph, "edge_weight", None))
        return GNNOutput(_pointwise(self.output, h, windowed), h)

    def __repr__(self) -> str:
        conv = self.convs[0]
        return (f"{self.__class__.__name__}({self.input.in_features}, "
                f"{self.output.out_features}, hidden={self.input.out_features}, "
                f"num_layers={len(self.convs)}, dropout={self.dropout}, "
                f"variant={conv.variant!r})")


class BaselineGNN(nn.Module):
    """A PyG GCN, GAT or AGNN with A²GNN's interface, see :func:`baseline_gnn`."""

    def __init__(self, kind: str, in_channels: int, hidden: int, num_classes: int, *,
                 dropout: float = 0.5) -> None:
        super().__init__()
        from torch_geometric.nn import AGNNConv, GATConv, GCNConv

        _checks.check_choice("kind", kind, BASELINES)
        for name, value in (("in_channels", in_channels), ("hidden", hidden),
                            ("num_classes", num_classes)):
            _checks.check_positive(name, value, integer=True)
        if kind == "gat" and hidden % GAT_HEADS:
            raise ValueError(f"hidden must be a multiple of the {GAT_HEADS} GAT heads, "
                             f"got {hidden}")
        self.kind = kind
        self.dropout = dropout
        self.input = nn.Linear(in_channels, hidden)
        if kind == "gcn":
            self.convs = nn.ModuleList([GCNConv(hidden, hidden), GCNConv(hidden, hidden)])
        elif kind == "gat":
            self.convs = nn.ModuleList([GATConv(hidden, hidden // GAT_HEADS, heads=GAT_HEADS),
                                        GATConv(hidden, hidden // GAT_HEADS, heads=GAT_HEADS)])
        else:
            self.convs = nn.ModuleList([AGNNConv() for _ in range(3)])
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, graph) -> GNNOutput:
        x = node_inputs(graph)
        windowed = isinstance(graph, WindowGraph)
        if windowed:
            data = graph.to_pyg()
            batch, channels, height, width = x.shape
            x = x.movedim(1, -1).reshape(-1, channels)
        else:
            data = graph
        edge_weight = getattr(data, "edge_weight", None)
        h = F.dropout(F.relu(self.input(x)), self.dropout, self.training)
        for i, conv in enumerate(self.convs):
            if self.kind == "gcn":
                h = conv(h, data.edge_index, edge_weight)
            else:
                # GAT and AGNN attend over the edges and take no edge weight
                h = conv(h, data.edge_index)
            if self.kind != "agnn" and i < len(self.convs) - 1:
                h = F.elu(h) if self.kind == "gat" else F.relu(h)
        logits = self.output(h)
        if windowed:
            return GNNOutput(
                logits.reshape(batch, height, width, -1).movedim(-1, 1),
                h.reshape(batch, height, width, -1).movedim(-1, 1))
        return GNNOutput(logits, h)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(kind={self.kind!r}, {self.input.in_features}, "
                f"hidden={self.input.out_features}, num_classes={self.output.out_features})")


def baseline_gnn(kind: str, in_channels: int, hidden: int, num_classes: int) -> BaselineGNN:
    """A PyTorch Geometric baseline with A²GNN's interface (a drop-in for
    :func:`graphseg.nn.fit_a2gnn`'s ``model``).

    All three start like A²GNN, :math:`H^1 = \\mathrm{ReLU}(X W^0)` with dropout 0.5, and end with
    a linear output layer; in between:

    - ``"gcn"``: two ``GCNConv`` layers (Kipf & Welling, ICLR 2017) using the edge weights;
    - ``"gat"``: two ``GATConv`` layers with 8 heads (Veličković et al., ICLR 2018);
    - ``"agnn"``: three ``AGNNConv`` layers (Thekumparampil et al., 2018), the cosine attention
      that A²GNN extends with the affinity term.

    Args:
        kind: ``"gcn"``, ``"gat"`` or ``"agnn"``.
        in_channels: node feature size.
        hidden: hidden width (a multiple of 8 for GAT).
        num_classes: output classes.

    Returns:
        :class:`BaselineGNN` taking a WindowGraph with ``x`` or a PyG ``Data``.
    """
    return BaselineGNN(kind, in_channels, hidden, num_classes)
