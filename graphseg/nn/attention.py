"""A²GNN's affinity attention (thesis Eq. 3.17–3.20) on edge lists and on windowed pixel graphs.

One layer, :class:`AffinityAttentionConv`, holds the learnable scalar and runs either as a PyG
``MessagePassing`` layer on any graph (``forward``) or on a :class:`graphseg.WindowGraph` in the
``(B, K, H, W)`` layout (``forward_window``); both compute the same output on the same graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import add_self_loops, remove_self_loops, softmax

from graphseg import _checks
from graphseg._checks import VARIANTS
from graphseg.graph.window import WindowGraph
from graphseg.ops.window_ops import affinity_unchecked, aggregate_unchecked

__all__ = ["VARIANTS", "AffinityAttentionConv", "affinity_attention"]

EDGE_SCALE = 10.0
THRESHOLD = 1e-3
# F.normalize's floor: a zero feature vector gets cosine 0 with everything, itself included
NORM_EPS = 1e-12


def _logits(cos: Tensor, edge: Tensor, cos_scale: Tensor, edge_scale: float, variant: str,
            threshold: float, valid: Tensor | bool = True) -> Tensor:
    """Attention logits of the edges, ``-inf`` where j is not in S(i)."""
    if variant == "paper":
        logits = cos_scale * cos + edge_scale * (cos > 0).to(cos.dtype) * edge
        member = (edge > threshold) & valid
    else:
        # the official code adds M = -1e9 where cos < 0; leaving those entries out of the softmax
        # is the same (exp(-1e9) underflows to 0) and keeps the masked logits out of the graph
        logits = cos_scale * cos + edge_scale * edge
        member = (cos >= 0) & valid
    return logits.masked_fill(~member, float("-inf"))


def affinity_attention(
    x: Tensor,
    graph: WindowGraph,
    *,
    cos_scale: float | Tensor = 1.0,
    edge_scale: float = EDGE_SCALE,
    variant: str = "official",
    threshold: float = THRESHOLD,
) -> Tensor:
    r"""One affinity-attention propagation :math:`H^{l+1} = P^l H^l` on a windowed pixel graph.

    With :math:`E_{ij}` the weight of the window edge i → j (``graph.weight``) and
    :math:`c_{ij} = \cos(H_i, H_j)`, the attention of pixel i over its window plus itself is a
    softmax of the logits (thesis Eq. 3.17–3.19 and the official code):

    .. math::
        \text{paper:}\quad e_{ij} = w^l c_{ij} + \beta\,[c_{ij} > 0]\,E_{ij},
        \qquad j \in S(i) = \{j : E_{ij} > \sigma\} \cup \{i\}

        \text{official:}\quad e_{ij} = \beta^l c_{ij} + M_{ij} + 10\,A_{ij},
        \qquad M_{ij} = -10^9 \text{ where } c_{ij} < 0

    .. math::
        P_{ij} = \frac{\exp e_{ij}}{\sum_{k \in S(i)} \exp e_{ik}}, \qquad
        H^{l+1}_i = \sum_{j \in S(i)} P_{ij} H^l_j

    The self term always enters with :math:`E_{ii} = A_{ii} = 1` (the affinity of a pixel with
    itself, :math:`\exp(0)`); a stored ``graph.self_weight`` is not used. Neighbours outside the
    image are never in S(i). Computed with the two window primitives: ``local_affinity`` (dot
    products of unit features) and ``window_aggregate`` (the weighted sum), no N×N tensor.

    Args:
        x: ``(B, F, H, W)`` node features H^l.
        graph: the window graph whose weights are E (paper) or A (official).
        cos_scale: the scalar on the cosine, w^l (paper) or β^l (official).
        edge_scale: the factor on the edge weight, β (paper; the thesis gives no value, the
            default 10 is the official code's factor) or 10 (official).
        variant: ``"paper"`` or ``"official"`` (default: the official code, whose constants are
            all given).
        threshold: σ of S(i) for the paper variant (Eq. 3.14: 1e-3).

    Returns:
        ``(B, F, H, W)`` features H^{l+1}.

    Shapes:
        x ``(B, F, H, W)``, graph.weight ``(B, K, H, W)`` → ``(B, F, H, W)``.
    """
    if not isinstance(graph, WindowGraph):
        raise TypeError(f"graph must be a WindowGraph, got {type(graph).__name__}")
    _checks.check_tensor4d("x", x)
    _checks.same_batch("x", x, "graph weight", graph.weight)
    _checks.check_choice("variant", variant, VARIANTS)
    _checks.check_positive("threshold", threshold, allow_zero=True)
    if not isinstance(cos_scale, Tensor):
        cos_scale = x.new_tensor(float(cos_scale))
    return attention_window_unchecked(x, graph, cos_scale, float(edge_scale), variant,
                                      float(threshold))


def attention_window_unchecked(x: Tensor, graph: WindowGraph, cos_scale: Tensor,
                               edge_scale: float, variant: str, threshold: float) -> Tensor:
    """:func:`affinity_attention` without input checks, for the models' forward passes."""
    weight = graph.weight.to(x.dtype)
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
    cos = affinity_unchecked(unit, graph.offsets, "dot")
    self_cos = (unit * unit).sum(1, keepdim=True)
    logits = _logits(cos, weight, cos_scale, edge_scale, variant, threshold,
                     graph._mask().unsqueeze(0))
    self_logits = _logits(self_cos, torch.ones_like(self_cos), cos_scale, edge_scale, variant,
                          threshold)
    top = torch.maximum(logits.amax(1, keepdim=True), self_logits).detach()
    attention = (logits - top).exp()
    self_attention = (self_logits - top).exp()
    total = attention.sum(1, keepdim=True) + self_attention
    return (aggregate_unchecked(attention / total, x, graph.offsets)
            + (self_attention / total) * x)


class AffinityAttentionConv(MessagePassing):
    r"""A²GNN's affinity-attention layer (thesis Eq. 3.17–3.20), see :func:`affinity_attention`
    for the formula of both variants.

    A PyG ``MessagePassing`` layer: ``forward(x, edge_index, edge_weight)`` works on any graph
    (pixel graphs from :meth:`graphseg.WindowGraph.to_pyg`, superpixel graphs, ...), with the edge
    weight as E / A (all ones when omitted). Existing self loops are replaced by self loops of
    weight 1. :meth:`forward_window` runs the same layer on a :class:`graphseg.WindowGraph` in the
    ``(B, K, H, W)`` layout and gives the same output as ``forward`` on ``graph.to_pyg()``.

    Args:
        variant: ``"paper"`` (learnable w^l initialised to 1, fixed β) or ``"official"``
            (learnable β^l initialised U(0, 1), edge factor 10). Default: the official code.
        edge_scale: the fixed factor on the edge weight (paper β; official 10).
        threshold: σ of the paper's S(i) (1e-3); the official variant keeps every edge.

    Shapes:
        x ``(|V|, F)``, edge_index ``(2, |E|)``, edge_weight ``(|E|,)`` → ``(|V|, F)``;
        windowed: x ``(B, F, H, W)`` → ``(B, F, H, W)``.
    """

    def __init__(self, *, variant: str = "official", edge_scale: float = EDGE_SCALE,
                 threshold: float = THRESHOLD) -> None:
        super().__init__(aggr="add", node_dim=0)
        _checks.check_choice("variant", variant, VARIANTS)
        _checks.check_positive("threshold", threshold, allow_zero=True)
        self.variant = variant
        self.edge_scale = float(edge_scale)
        self.threshold = float(threshold)
        self.cos_scale = Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.variant == "paper":
            torch.nn.init.ones_(self.cos_scale)
        else:
            torch.nn.init.uniform_(self.cos_scale, 0.0, 1.0)

    def _edges(self, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
               dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
        edge_index, edge_weight = remove_self_loops(edge_index, edge_weight.to(dtype))
        return add_self_loops(edge_index, edge_weight, fill_value=1.0, num_nodes=num_nodes)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        edge_index, edge_weight = self._edges(edge_index, edge_weight, x.shape[0], x.dtype)
        unit = F.normalize(x, dim=-1, eps=NORM_EPS)
        return self.propagate(edge_index, x=x, unit=unit, edge_weight=edge_weight)

    def message(self, x_j: Tensor, unit_i: Tensor, unit_j: Tensor, edge_weight: Tensor,
                index: Tensor, ptr: Tensor | None, size_i: int | None) -> Tensor:
        cos = (unit_i * unit_j).sum(-1)
        logits = _logits(cos, edge_weight, self.cos_scale, self.edge_scale, self.variant,
                         self.threshold)
        # every node keeps its self loop (cos_ii >= 0, E_ii = 1 > σ), so no row is all -inf
        attention = softmax(logits, index, ptr, size_i)
        return attention.unsqueeze(-1) * x_j

    def forward_window(self, x: Tensor, graph: WindowGraph) -> Tensor:
        """The layer on a windowed pixel graph: ``(B, F, H, W)`` → ``(B, F, H, W)``."""
        return attention_window_unchecked(x, graph, self.cos_scale.to(x.dtype), self.edge_scale,
                                          self.variant, self.threshold)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(variant={self.variant!r}, "
                f"edge_scale={self.edge_scale}, threshold={self.threshold})")
