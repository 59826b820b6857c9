"""IAL's pairwise refinement step α_p = G α_u."""

from __future__ import annotations

from torch import Tensor

from graphseg import _checks
from graphseg.propagate._common import node_values

__all__ = ["ial_refine"]


def ial_refine(graph, probs: Tensor, *, normalization: str = "laplacian") -> Tensor:
    r"""One IAL E-step: refine unary probabilities with the pairwise transformation G.

    - ``"laplacian"`` (default): :math:`G = I - L / d_{max}` with :math:`L = D - W` (self loops
      cancel) and :math:`d_{max}` the largest degree of each image. IAL writes
      :math:`G = I - D + W = I - L`, which is negative wherever a degree exceeds 1; dividing L by
      :math:`d_{max}` keeps G symmetric, non-negative and row-stochastic, so probabilities keep
      summing to 1.
    - ``"row"``: :math:`G = D^{-1} W` (self weights included), also row-stochastic. The symmetric
      :math:`D^{-1/2} W D^{-1/2}` is not offered: it does not preserve the sum to 1.

    Args:
        graph: a :class:`WindowGraph`, a PyG ``Data`` or an :class:`EdgeGraph`.
        probs: ``(B, C, H, W)`` (pixel graph) or ``(N, C)`` (PyG graph) unary probabilities α_u.

    Returns:
        α_p in the layout of ``probs``.
    """
    _checks.check_choice("normalization", normalization, ("laplacian", "row"))
    graph, values, restore = node_values(graph, probs, "probs")
    if normalization == "row":
        return restore(graph.normalize("row")._aggregate(values))
    graph = graph.without_self_loops()
    degree = graph.degree().unsqueeze(1)
    scale = degree.amax((1, 2, 3), keepdim=True).clamp_min(1e-30)
    return restore(values - (degree * values - graph._aggregate(values)) / scale)
