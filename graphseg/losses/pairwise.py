r"""Pairwise losses of weakly supervised segmentation (DESIGN §6 "Losses"): the Potts loss
L_reg (thesis Eq. 2.19, 3.22), the quadratic (Laplacian) pairwise loss and the dense-energy
(Potts) loss with RRM's soft filter. Every term runs on a :class:`graphseg.WindowGraph` with the
window primitives (memory O(B·K·H·W), never N×N) and also takes a PyG ``Data`` /
:class:`graphseg.EdgeGraph` with ``(N, C)`` node values.

References:
    - Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018,
      arXiv:1803.09569 (quadratic and Potts losses).
    - Zhang et al., "Reliability Does Matter: An End-to-End Weakly Supervised Semantic
      Segmentation Approach" (RRM), AAAI 2020, arXiv:1911.08039 (dense energy loss and soft
      filter, thesis Eq. 2.19–2.21).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.edges import as_graph
from graphseg.graph.window import WindowGraph
from graphseg.losses._common import IGNORE, _check_ignore_index, _check_seeds_for, _node_values
from graphseg.ops.window_ops import affinity_unchecked, aggregate_unchecked

__all__ = ["DenseEnergyLoss", "QuadraticPairwiseLoss", "dense_energy_loss", "potts_loss",
           "quadratic_pairwise_loss"]


def potts_loss(probs: Tensor, graph, *, node_weight: Tensor | None = None) -> Tensor:
    r"""L_reg, the dense-energy (Potts) loss on a pixel or general graph (thesis Eq. 2.19, 3.22).

    .. math::
        L_{reg} = \frac{1}{N} \sum_i s_i \sum_{j \in W(i)} G(i, j) \sum_c P_c(i)\,(1 - P_c(j))

    Eq. 3.22 as printed sums over all class pairs including c_i = c_j, which is constant; we read
    it as the Potts form of Eq. 2.19. The 1/N (N = nodes over the batch) is the official code's
    normaliser. On a WindowGraph it is computed as
    :math:`\sum_i s_i \langle P(i), (G (1 - P))(i) \rangle` with one ``window_aggregate`` (no N×N
    tensor; aggregating 1 − P rather than expanding into d·ΣP − ⟨P, GP⟩ avoids cancellation, so
    a constant one-hot prediction gives exactly 0); self weights are not used (G(i, i) = 0). A graph
    restricted to a window approximates RRM's fully connected energy (Eq. 2.20).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, class
            probabilities.
        graph: the pairwise weights G, e.g. ``pixel_graph(image, radius=5)`` at the resolution
            of ``probs``.
        node_weight: per-node factors :math:`s_i` on the energy of node i, ``(B, H, W)`` for a
            WindowGraph or ``(N,)`` for a PyG/EdgeGraph (None: all 1). RRM's soft filter
            (Eq. 2.21) is one, see :func:`graphseg.losses.pairwise.dense_energy_loss`.

    Returns:
        Scalar loss; 0 for the same one-hot prediction everywhere.
    """
    graph = as_graph(graph)
    if isinstance(graph, WindowGraph):
        _checks.check_tensor4d("probs", probs)
        _checks.same_batch("probs", probs, "graph weight", graph.weight)
        _check_node_weight(node_weight, probs, (probs.shape[0], *probs.shape[2:]))
        weight = graph.weight.to(probs.dtype)
        energy = (probs * aggregate_unchecked(weight, 1 - probs, graph.offsets)).sum(1)
        if node_weight is not None:
            energy = energy * node_weight.to(probs.dtype)
        return energy.sum() / energy.numel()
    if (not isinstance(probs, Tensor) or probs.dim() != 2 or probs.shape[0] != graph.num_nodes
            or not probs.is_floating_point()):
        raise ValueError(f"probs must be a float ({graph.num_nodes}, C) tensor for a graph of "
                         f"{graph.num_nodes} nodes, got {_checks._describe(probs)}")
    _check_node_weight(node_weight, probs, (graph.num_nodes,))
    edges = graph.without_self_loops()
    source, target = edges.edge_index
    pair = (probs[target] * (1 - probs[source])).sum(1)
    if node_weight is not None:
        pair = pair * node_weight.to(probs.dtype)[target]
    return (edges.edge_weight.to(probs.dtype) * pair).sum() / graph.num_nodes


def _check_node_weight(node_weight, probs: Tensor, expected: tuple) -> None:
    if node_weight is None:
        return
    if not isinstance(node_weight, Tensor) or not node_weight.is_floating_point():
        raise TypeError(f"node_weight must be a float tensor of shape {expected}, got "
                        f"{_checks._describe(node_weight)}")
    _checks.check_companion("node_weight", node_weight, expected, probs)
    _checks.check_finite("node_weight", node_weight)


def quadratic_pairwise_loss(probs: Tensor, graph) -> Tensor:
    r"""The quadratic (Laplacian) pairwise loss of soft predictions (slides; Tang et al. 2018).

    .. math::
        L_{quad} = \frac{1}{N} \sum_{p} \sum_{q \in W(p)} w_{pq}\, \|\sigma_p - \sigma_q\|^2
        = \frac{2}{N} \sum_c \sigma_{\cdot c}^\top L\, \sigma_{\cdot c}
        \quad\text{(symmetric } w\text{)}

    The sum runs over ordered pairs: every edge of the graph once, so for a symmetric graph
    (a symmetric kernel on an offset table closed under negation) each unordered pair {p, q}
    counts twice. Normalised by N, the number of nodes over the batch (B·H·W pixels), like
    :func:`graphseg.nn.potts_loss`, so a weight such as λ does not depend on the image size.
    Self loops contribute nothing. On a WindowGraph each ‖σ_p − σ_q‖² comes from
    ``local_affinity(probs, offsets, "l2")`` (exact, no cancellation; memory of one
    ``(B, K, H, W)`` tensor).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, class
            probabilities σ.
        graph: the weights w, e.g. ``pixel_graph(image, radius=5)`` at the resolution of
            ``probs``.

    Returns:
        Scalar loss; 0 when σ is constant.
    """
    graph, values = _node_values(probs, graph)
    if isinstance(graph, WindowGraph):
        squared = affinity_unchecked(values, graph.offsets.to(values.device), "l2")
        return (graph.weight.to(values.dtype) * squared).sum() / graph.num_nodes
    source, target = graph.edge_index
    squared = (probs[target] - probs[source]).square().sum(1)
    return (graph.edge_weight.to(probs.dtype) * squared).sum() / graph.num_nodes


class QuadraticPairwiseLoss(nn.Module):
    """Module form of :func:`quadratic_pairwise_loss`: ``forward(probs, graph)``."""

    def forward(self, probs: Tensor, graph) -> Tensor:
        return quadratic_pairwise_loss(probs, graph)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(normalization='nodes')"


def _soft_filter(probs: Tensor, seeds: Tensor, ignore_index: int) -> Tensor:
    """RRM's S(i): 1 − max_c P_c(i) on seeded nodes, 1 elsewhere; a constant (detached)."""
    confidence = probs.detach().amax(1)
    return torch.where(seeds != ignore_index, 1 - confidence, torch.ones_like(confidence))


def dense_energy_loss(probs: Tensor, graph, *, seeds: Tensor | None = None,
                      ignore_index: int = IGNORE) -> Tensor:
    r"""The dense energy (Potts) loss with RRM's soft filter (thesis Eq. 2.19–2.21).

    .. math::
        L_{dense} = \frac{1}{N} \sum_i S(i) \sum_{j \in W(i)} G(i, j)
            \sum_c P_c(i)\,\big(1 - P_c(j)\big),
        \qquad
        S(i) = \begin{cases} 1 - \max_c P_c(i) & i \text{ seeded} \\ 1 & \text{otherwise}
               \end{cases}

    The soft filter S lowers the energy of seeded pixels in proportion to the confidence of the
    prediction there (RRM, Eq. 2.21); without ``seeds`` S ≡ 1 and this is the plain Potts loss
    :func:`graphseg.nn.potts_loss` (L_reg of A²GNN, Eq. 3.22 read as Potts), which computes both
    (one mechanism: S enters as its ``node_weight``). S is a constant of the loss (no gradient
    flows through the max), as in RRM's official code, whose hand-written backward treats the
    gate as fixed. The 1/N (N = pixels over the batch, i.e. 1/(hw) per image averaged over the
    batch) is the official normaliser. RRM's Eq. 2.20 sums over all pixel pairs with σ_d = 100:
    a window graph approximates it (use a downsampled image, or ``shape="rings"`` offsets, for
    long range).

    Args:
        probs: ``(B, C, H, W)`` for a WindowGraph or ``(N, C)`` for a PyG/EdgeGraph, class
            probabilities P.
        graph: the kernel G, e.g. ``pixel_graph(image, radius=5, sigma_xy=100,
            sigma_rgb=15 / 255)`` (RRM's bandwidths) at the resolution of ``probs``.
        seeds: optional ``(B, H, W)`` or ``(N,)`` int64 seeds (``ignore_index`` = unknown) that
            switch the soft filter on.
        ignore_index: the unknown seed value.

    Returns:
        Scalar loss; 0 for the same one-hot prediction everywhere.

    Shapes:
        probs ``(B, C, H, W)``, graph weight ``(B, K, H, W)``, seeds ``(B, H, W)`` → ``()``.
    """
    ignore_index = _check_ignore_index(ignore_index)
    if seeds is None:
        return potts_loss(probs, graph)
    graph = _node_values(probs, graph)[0]
    seeds = _check_seeds_for(seeds, probs, ignore_index)
    return potts_loss(probs, graph, node_weight=_soft_filter(probs, seeds, ignore_index))


class DenseEnergyLoss(nn.Module):
    """Module form of :func:`dense_energy_loss`: ``forward(probs, graph, seeds=None)``."""

    def __init__(self, *, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)

    def forward(self, probs: Tensor, graph, seeds: Tensor | None = None) -> Tensor:
        return dense_energy_loss(probs, graph, seeds=seeds, ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ignore_index={self.ignore_index})"
