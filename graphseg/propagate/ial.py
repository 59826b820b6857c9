"""IAL's pairwise refinement step α_p = G α_u."""

from __future__ import annotations

import warnings

from torch import Tensor

from graphseg import _checks
from graphseg.propagate._common import node_values

__all__ = ["IAL_VARIANTS", "ial_refine"]

IAL_VARIANTS = ("paper", "scaled", "row")
"""The transformations G of :func:`ial_refine`."""
_NORMALIZATIONS = {"laplacian": "scaled", "row": "row"}


def _transform_scale(graph, variant: str):
    """The graph without self loops and the divisor of each row of its Laplacian in
    G = I − L / scale: ``max(d, 1)`` (``"paper"``) or ``d_max`` per image (``"scaled"``),
    ``(B, H, W)``. G's off-diagonal entries are ``W / scale``."""
    graph = graph.without_self_loops()
    degree = graph.degree()
    if variant == "paper":
        return graph, degree.clamp_min(1.0)
    return graph, degree.amax((1, 2), keepdim=True).clamp_min(1e-30)


def ial_refine(graph, probs: Tensor, *, variant: str = "paper", num_steps: int = 1,
               normalization: str | None = None) -> Tensor:
    r"""IAL's E-step: refine unary probabilities with the pairwise transformation G,
    :math:`\alpha_p = G^t \alpha_u` (IAL, Wang et al., IJCV 2020: :math:`\alpha_p = G\alpha_u`
    with :math:`G = I - D + W = I - L`, applied once, ``num_steps=1``).

    Self loops of the graph cancel in :math:`L = D - W` and are dropped first.

    - ``variant="paper"`` (default): :math:`G = I - D + W`. It is non-negative only where a
      degree :math:`d_i = \sum_j w_{ij}` is at most 1. IAL's pairwise network is a spatial
      propagation network (Liu et al., NIPS 2017), which keeps its propagation stable by
      normalising each pixel's weights so that their sum is at most 1; the same normalisation is
      applied here to any graph: a row whose degree exceeds 1 is divided by its degree,
      :math:`W_{ij} \leftarrow W_{ij} / \max(d_i, 1)`. A graph whose degrees are all at most 1
      is used as it is, so G is then exactly :math:`I - D + W`. Either way G is non-negative
      with rows summing to 1: probabilities stay probabilities (no clamping is needed).
    - ``variant="scaled"``: :math:`G = I - L / d_{max}`, :math:`d_{max}` the largest degree of
      each image. Symmetric as well as non-negative and row-stochastic, but one step moves
      little mass (a pixel of degree d keeps :math:`1 - d / d_{max}` of its own value): the IAL
      pipeline applies it ten times. No released IAL code exists to follow; this is a
      normalisation of ours, named for what it does.
    - ``variant="row"``: :math:`G = D^{-1} W` (self weights kept), also row-stochastic (the
      random walk's step). The
      symmetric :math:`D^{-1/2} W D^{-1/2}` is not offered: it does not keep the sum to 1.

    Args:
        graph: a :class:`WindowGraph`, a PyG ``Data`` or an :class:`EdgeGraph`, non-negative.
        probs: ``(B, C, H, W)`` (pixel graph) or ``(N, C)`` (PyG graph) unary probabilities α_u.
        variant: ``"paper"``, ``"scaled"`` or ``"row"`` (above).
        num_steps: applications of G (IAL: 1).
        normalization: the former name of the choice, ``"laplacian"`` (= ``"scaled"``) or
            ``"row"``; when given it replaces ``variant``.

    Returns:
        α_p in the layout of ``probs``.
    """
    if normalization is not None:
        _checks.check_choice("normalization", normalization, tuple(_NORMALIZATIONS))
        warnings.warn("ial_refine(normalization=...) is deprecated: pass variant='scaled' "
                      "(for 'laplacian') or variant='row'", DeprecationWarning, stacklevel=2)
        variant = _NORMALIZATIONS[normalization]
    _checks.check_choice("variant", variant, IAL_VARIANTS)
    _checks.check_positive("num_steps", num_steps, integer=True)
    graph, values, restore = node_values(graph, probs, "probs")
    if variant == "row":
        graph = graph.normalize("row")
        for _ in range(num_steps):
            values = graph._aggregate(values)
        return restore(values)
    graph, scale = _transform_scale(graph, variant)
    degree, scale = graph.degree().unsqueeze(1), scale.unsqueeze(1)
    for _ in range(num_steps):
        values = values - (degree * values - graph._aggregate(values)) / scale
    return restore(values)
