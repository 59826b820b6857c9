"""Grady's random walker: harmonic functions on a graph with seeded nodes fixed."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.window import WindowGraph
from graphseg.ops.window_ops import affinity_unchecked
from graphseg.propagate._common import IGNORE, node_seeds, one_hot, seed_classes
from graphseg.propagate._multigrid import Multigrid
from graphseg.propagate._threads import free_threads, intra_op_threads, solve_threads

__all__ = ["harmonic", "random_walker_graph"]

FOUR_NEIGHBOURS = torch.tensor([[0, 1], [1, 0], [0, -1], [-1, 0]])


def random_walker_graph(image, *, beta: float = 130.0, eps: float = 1e-10) -> WindowGraph:
    r"""The 4-connected graph and weights of scikit-image's ``random_walker``.

    .. math::
        w_{ij} = \exp\Big(-\frac{\beta}{10\,\sigma\sqrt{C}} \sum_c (c_i - c_j)^2\Big) + \epsilon

    with σ the standard deviation of the whole image (all channels together) and C its channel
    count, as in ``skimage.segmentation.random_walker`` (β = 130, ε = 1e-10), so that
    :func:`harmonic` on this graph solves the same system. Like :func:`harmonic`, it runs on one
    thread when it is small or when other processes hold the other cores.

    Args:
        image: ``(B, C, H, W)`` / ``(C, H, W)`` float in [0, 1] or any image form of docs/images.md.
    """
    _checks.check_positive("beta", beta)
    _checks.check_positive("eps", eps, allow_zero=True)
    limit = torch.get_num_threads()
    with intra_op_threads(free_threads(limit)):
        image = _checks.as_image_batch(image, "image")
        channels = image.shape[1]
        torch.set_num_threads(solve_threads(image[:, 0].numel() * len(FOUR_NEIGHBOURS), limit))
        squared = affinity_unchecked(image, FOUR_NEIGHBOURS, "l2")
        std = image.reshape(image.shape[0], -1).std(1, correction=0).view(-1, 1, 1, 1)
        scale = beta / (10 * std.clamp_min(1e-12) * math.sqrt(channels))
        return WindowGraph(torch.exp(-scale * squared) + eps, FOUR_NEIGHBOURS)


def _unseeded(graph, seeds: Tensor) -> Tensor | None:
    """Nodes whose connected component (over positive weights) holds no seed, as a mask shaped
    like ``seeds``; None when every component has a seed. A pixel graph with positive weights on
    the four axial neighbours is connected, which spares the search in the common case."""
    every_image_seeded = bool((seeds != IGNORE).flatten(1).any(1).all())
    if isinstance(graph, WindowGraph) and every_image_seeded:
        table = graph.offsets.tolist()
        axial = all(o in table for o in ([0, 1], [1, 0], [0, -1], [-1, 0]))
        if axial and bool((graph.weight > 0).eq(graph._mask()).all()):
            return None
    from scipy.sparse.csgraph import connected_components

    matrix = graph.to_scipy(remove_zeros=True) if isinstance(graph, WindowGraph) else (
        _edge_scipy(graph))
    _, component = connected_components(matrix, directed=False)
    component = torch.from_numpy(component).to(seeds.device).view_as(seeds)
    seeded = torch.zeros(int(component.max()) + 1, dtype=torch.bool, device=seeds.device)
    seeded[component[seeds != IGNORE]] = True
    lonely = ~seeded[component]
    return lonely if bool(lonely.any()) else None


def _edge_scipy(graph):
    import scipy.sparse

    keep = graph.edge_weight > 0
    source, target = graph.edge_index[:, keep].cpu().numpy()
    return scipy.sparse.coo_matrix(
        (graph.edge_weight[keep].detach().cpu().numpy(), (target, source)),
        shape=(graph.num_nodes, graph.num_nodes))


def _dot(u: Tensor, v: Tensor) -> Tensor:
    return (u * v).sum((2, 3), keepdim=True)


def harmonic(
    graph,
    seeds: Tensor,
    *,
    num_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 5000,
    preconditioner: str | None = None,
) -> Tensor:
    r"""Harmonic label probabilities (Grady's random walker) from seeds.

    Minimises :math:`\sum_{ij} w_{ij} (x_i - x_j)^2` per class with the seeded nodes fixed to
    their one-hot labels, i.e. solves :math:`L_{uu} x_u = -L_{ul} x_l` with
    :math:`L = D - (A + A^\top)/2` by preconditioned conjugate gradients, all classes and images
    at once. The Laplacian mat-vec is one :func:`graphseg.ops.window_aggregate`.

    Notes:
        The exact probabilities of a node sum to 1 (the solution is linear in the seeds and the
        all-ones vector is harmonic). All C systems are solved — deriving the last class as 1
        minus the others would hand it every node the solver has not reached yet — and the result
        is clamped at 0 and renormalised. Nodes in a component without any seed get the uniform
        distribution, and so do nodes the solver leaves at 0 in every class (reached only
        through weights too small for the stopping rule to resolve). The solve runs in the
        graph's dtype: when its weights span many orders of magnitude (noise images under a
        sharp colour kernel), float32 cannot resolve the small ones — build the graph in
        float64. Its vectors are small and every iteration runs dozens of short parallel
        regions, each ending at a barrier that waits for a whole time slice when another process
        holds a core, so it runs on one thread below 65536 elements (batch × classes × pixels)
        and on multigrid levels of that size, and otherwise on those of torch's intra-op threads
        whose cores no other process is using, checked at the start and every iteration
        (Linux); torch's thread count is restored afterwards.

    Args:
        graph: a :class:`WindowGraph`, a PyG ``Data`` or an :class:`EdgeGraph`.
        seeds: int64 class ids, 255 = unknown: ``(B, H, W)`` for a pixel graph, ``(N,)`` for a
            PyG graph.
        num_classes: class count (default: largest seed + 1). Every class needs a seed.
        tol: relative residual :math:`\|r_c\| / \|b_c\|` at which CG stops (scikit-image:
            1e-3), with :math:`\|b_c\|` floored at 1e-3 of the image's largest class.
        max_iter: CG iteration limit.
        preconditioner: ``"multigrid"`` (aggregation V-cycle, pixel graphs only; their
            default), ``"jacobi"`` (the diagonal of :math:`L_{uu}`; PyG graphs' default) or
            ``"none"``.

    Returns:
        ``(B, C, H, W)`` (pixel graph) or ``(N, C)`` (PyG graph) probabilities, without
        gradient (the solve is iterative; differentiate through :func:`random_walk` or
        :func:`label_spreading` instead).

    References:
        L. Grady, "Random Walks for Image Segmentation", IEEE TPAMI 28(11), 2006,
        doi:10.1109/TPAMI.2006.233.
    """
    with torch.no_grad(), intra_op_threads(torch.get_num_threads()):
        return _harmonic(graph, seeds, num_classes, tol, max_iter, preconditioner)


def _harmonic(graph, seeds, num_classes, tol, max_iter, preconditioner) -> Tensor:
    graph, seeds, restore = node_seeds(graph, seeds)
    classes = seed_classes(seeds, num_classes)
    _checks.check_positive("tol", tol)
    _checks.check_positive("max_iter", max_iter, integer=True)
    if preconditioner is None:
        preconditioner = "multigrid" if isinstance(graph, WindowGraph) else "jacobi"
    _checks.check_choice("preconditioner", preconditioner, ("multigrid", "jacobi", "none"))
    if preconditioner == "multigrid" and not isinstance(graph, WindowGraph):
        raise ValueError("preconditioner='multigrid' needs a WindowGraph; use 'jacobi' for "
                         "PyG graphs")
    threads = torch.get_num_threads()
    torch.set_num_threads(solve_threads(seeds.numel() * classes, threads))
    graph = graph.symmetrize().without_self_loops()
    dtype = graph.dtype
    unknown = (seeds == IGNORE).unsqueeze(1).to(dtype)
    fixed = one_hot(seeds, classes, dtype)
    degree = graph.degree().unsqueeze(1)

    if classes == 1:
        return restore(torch.ones_like(fixed))
    solution = _solve(graph, unknown, fixed, degree, tol, max_iter, preconditioner, threads)
    probs = (fixed + unknown * solution).clamp_min(0)
    # a node reached only through weights near the stopping rule's floor may keep a tiny total
    # (normalised however small) or 0 in every class (made uniform), never all zeros
    total = probs.sum(1, keepdim=True)
    probs = torch.where(total > 0, probs / torch.where(total > 0, total, 1.0),
                        torch.full_like(probs, 1 / classes))
    lonely = _unseeded(graph, seeds)
    if lonely is not None:
        probs = torch.where(lonely.unsqueeze(1), torch.full_like(probs, 1 / classes), probs)
    return restore(probs)


def _solve(graph, unknown, fixed, degree, tol, max_iter, preconditioner, threads) -> Tensor:
    """Preconditioned CG on ``L_uu x = -L_ul x_l`` for all classes at once, on up to ``threads``
    threads; sets torch's thread count (the caller restores it)."""

    def laplacian(z: Tensor) -> Tensor:
        return graph._aggregate(z).neg_().addcmul_(degree, z).mul_(unknown)

    rhs = unknown * graph._aggregate(fixed)
    if preconditioner == "multigrid":
        precondition = Multigrid(graph.weight, graph.offsets, unknown)
    else:
        inverse = unknown
        if preconditioner == "jacobi":
            inverse = unknown * torch.where(degree > 0, 1 / degree.clamp_min(1e-30),
                                            torch.zeros_like(degree))
        def precondition(r: Tensor) -> Tensor:
            return inverse * r
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = precondition(residual)
    rz = _dot(residual, direction)
    # relative per class, but never below 1e-3 of the image's largest class: a class whose seeds
    # barely touch the unknown nodes (weights below float32's range across a sharp colour edge)
    # has a right-hand side near 0 that no float32 residual could match relatively
    norms = _dot(rhs, rhs)
    limit = tol**2 * torch.maximum(norms, 1e-6 * norms.amax(1, keepdim=True))
    for _ in range(max_iter):
        # sampled every iteration (tens of microseconds): other processes come and go
        torch.set_num_threads(solve_threads(rhs.numel(), threads))
        if bool((_dot(residual, residual) <= limit).all()):
            break
        product = laplacian(direction)
        curvature = _dot(direction, product)
        step = torch.where(curvature > 0, rz / curvature.clamp_min(1e-30), torch.zeros_like(rz))
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1)
        preconditioned = precondition(residual)
        rz_next = _dot(residual, preconditioned)
        ratio = torch.where(rz > 0, rz_next / rz.clamp_min(1e-30), torch.zeros_like(rz))
        direction = direction.mul_(ratio).add_(preconditioned)
        rz = rz_next
    return solution
