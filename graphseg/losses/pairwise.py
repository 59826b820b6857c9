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
    - Adams, Baek, Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice",
      Eurographics 2010 (the fully connected energy on the lattice, as Tang et al. compute it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graphseg import _checks
from graphseg.graph.edges import as_graph
from graphseg.graph.window import WindowGraph
from graphseg.losses._common import IGNORE, _check_ignore_index, _check_seeds_for, _node_values
from graphseg.ops.window_ops import affinity_unchecked, aggregate_unchecked
from graphseg.propagate.lattice import PermutohedralLattice

__all__ = ["DENSE_METHODS", "DENSE_NORMALIZATIONS", "DenseEnergyLoss",
           "FullyConnectedEnergyLoss", "QuadraticPairwiseLoss", "dense_energy_loss",
           "fully_connected_energy_loss", "potts_loss", "quadratic_pairwise_loss"]

# RRM's dense energy (thesis Eq. 2.18-2.20): sigma_d in pixels, sigma_r on 0-255 colour
RRM_SIGMA_XY = 100.0
RRM_SIGMA_RGB = 15.0
DENSE_METHODS = ("coarse", "exact", "lattice")
DENSE_NORMALIZATIONS = ("sum", "pixels")
EXACT_MAX_PIXELS = 128 * 128
COARSE_CELL = 8
COARSE_COLOUR_BIN = 5.0
_CHUNK_BYTES = 32 * 2**20  # one block of kernel rows (and its differences) at a time


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
    on a window graph (e.g. radius 5) that Gaussian is nearly flat, so this becomes a colour-only
    local Potts loss. The paper form (all pixel pairs, σ_d = 100, σ_r = 15 on 0–255 colour;
    Tang et al.'s dense CRF loss) is :func:`fully_connected_energy_loss`, with the same soft
    filter: exact for small images, on a coarse grid, or on the permutohedral lattice
    (``method="lattice"``, linear in the pixels). It takes the image rather than a graph:
    no window graph holds all pairs.

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


# -- RRM's fully connected dense energy ----------------------------------------------------


def _kernel_rows(pos: Tensor, colour: Tensor, rows: slice, sigma_xy: float,
                 sigma_rgb: float) -> Tensor:
    """Rows ``rows`` of G for one image: ``(r, n)``; pos ``(n, 2)``, colour ``(3, n)``."""
    spatial = (pos[rows, None, :] - pos[None, :, :]).square().sum(-1)
    appearance = (colour[:, rows, None] - colour[:, None, :]).square().sum(0)
    return torch.exp(-spatial / (2 * sigma_xy**2) - appearance / (2 * sigma_rgb**2))


def _chunk(n: int, itemsize: int) -> int:
    return max(1, min(n, _CHUNK_BYTES // max(1, 4 * n * itemsize)))


def _kernel_product(pos: Tensor, colour: Tensor, values: Tensor, sigma_xy: float,
                    sigma_rgb: float) -> Tensor:
    """``G @ values`` for ``values (B, C, n)``, G built block by block (never n × n)."""
    out = torch.empty_like(values)
    step = _chunk(values.shape[2], values.element_size())
    for b in range(values.shape[0]):
        for start in range(0, values.shape[2], step):
            rows = slice(start, start + step)
            kernel = _kernel_rows(pos[b], colour[b], rows, sigma_xy, sigma_rgb)
            out[b, :, rows] = values[b] @ kernel.t()
    return out


class _DensePairSum(torch.autograd.Function):
    """Per image, ``Σ_c Σ_IJ a_cI G_IJ b_cJ`` with the symmetric Gaussian G; the backward
    recomputes G block by block, so memory stays O(block · n)."""

    @staticmethod
    def forward(ctx, a, b, pos, colour, sigma_xy, sigma_rgb):
        ctx.save_for_backward(a, b, pos, colour)
        ctx.sigmas = (sigma_xy, sigma_rgb)
        return (a * _kernel_product(pos, colour, b, sigma_xy, sigma_rgb)).sum((1, 2))

    @staticmethod
    def backward(ctx, grad):
        a, b, pos, colour = ctx.saved_tensors
        scale = grad.view(-1, 1, 1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = scale * _kernel_product(pos, colour, b, *ctx.sigmas)
        if ctx.needs_input_grad[1]:
            grad_b = scale * _kernel_product(pos, colour, a, *ctx.sigmas)
        return grad_a, grad_b, None, None, None, None


class _LatticePairSum(torch.autograd.Function):
    """Per image, ``Σ_c Σ_ij a_ci W_ij b_cj − Σ_ci a_ci b_ci`` (``a, b (B, C, n)``, pos
    ``(n, 2)``, colour ``(B, 3, n)``) with W = D^(−1/2) K D^(−1/2), K the lattice filter of the
    features (y, x)/σ_d, rgb/σ_r and D its diagonal, so that W_ii = 1 = G(i, i) and the pairs
    i = j drop out; shape ``(B,)``. The forward keeps W b − b for the gradient in a; the gradient
    in b is Wᵀ a − a. Each image's classes stay planar through the filters, and the gradients
    are written into ``(B, C, n)`` tensors directly (no per-image slices for autograd to scatter
    back)."""

    @staticmethod
    def forward(ctx, a, b, pos, colour, sigma_xy, sigma_rgb):
        lattices, others = [], []
        energy = a.new_empty(a.shape[0])
        for image in range(a.shape[0]):
            lattice = PermutohedralLattice(torch.cat([pos / sigma_xy,
                                                      colour[image].t() / sigma_rgb], 1))
            scale = lattice.diagonal().rsqrt()
            # W b − b, (C, n)
            other = lattice.filter(b[image].t(), scale=scale).t().sub_(b[image])
            energy[image] = (a[image] * other).sum()
            lattices.append((lattice, scale))
            others.append(other)
        ctx.lattices = lattices
        ctx.save_for_backward(a, *others)
        return energy

    @staticmethod
    def backward(ctx, grad):
        a, *others = ctx.saved_tensors
        grad_a = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        grad_b = torch.empty_like(a) if ctx.needs_input_grad[1] else None
        for image, (lattice, scale) in enumerate(ctx.lattices):
            if grad_a is not None:
                torch.mul(others[image], grad[image], out=grad_a[image])
            if grad_b is not None:
                transposed = lattice._apply(a[image].t(), reverse=True, scale=scale).t()
                torch.sub(transposed, a[image], out=grad_b[image]).mul_(grad[image])
        return grad_a, grad_b, None, None, None, None


def _nodes(colour: Tensor, height: int, width: int, cell: int,
           colour_bin: float | None) -> tuple[Tensor, int]:
    """Each pixel's node for one image (``colour (3, n)`` on 0-255): the bins of a grid of
    ``cell × cell`` pixels, split further by colour into cubes of side ``colour_bin``; only
    occupied bins become nodes."""
    device = colour.device
    grid_h, grid_w = -(-height // cell), -(-width // cell)
    cy = torch.arange(height, device=device) * grid_h // height
    cx = torch.arange(width, device=device) * grid_w // width
    key = (cy[:, None] * grid_w + cx[None, :]).flatten()
    if colour_bin is not None:
        levels = int(math.ceil(256 / colour_bin)) + 1
        quantised = torch.div(colour, colour_bin, rounding_mode="floor").long().clamp(0,
                                                                                   levels - 1)
        for channel in quantised:
            key = key * levels + channel
    nodes, index = torch.unique(key, return_inverse=True)
    return index, len(nodes)


def fully_connected_energy_loss(probs: Tensor, image, *, seeds: Tensor | None = None,
                                method: str = "coarse", cell: int = COARSE_CELL,
                                colour_bin: float | None = COARSE_COLOUR_BIN,
                                sigma_xy: float = RRM_SIGMA_XY, sigma_rgb: float = RRM_SIGMA_RGB,
                                normalization: str = "sum", max_pixels: int = EXACT_MAX_PIXELS,
                                ignore_index: int = IGNORE) -> Tensor:
    r"""RRM's dense energy loss over all pixel pairs (thesis Eq. 2.18–2.21), λ₁ = 1.

    .. math::
        E = \sum_i S(i) \sum_{j \ne i} G(i, j) \sum_c P_c(i)\,\big(1 - P_c(j)\big),
        \qquad
        G(i, j) = \exp\Big(-\frac{\|p_i - p_j\|^2}{2\sigma_d^2}
                            - \frac{\|I_i - I_j\|^2}{2\sigma_r^2}\Big)

    with σ_d = 100 (pixels of ``probs``), σ_r = 15 on 0–255 colour (``image`` in [0, 1] is
    multiplied by 255), the Potts form of Eq. 2.19 and RRM's soft filter S (Eq. 2.21: 1 − max_c
    P_c(i) on seeded pixels, 1 elsewhere and without ``seeds``; detached). λ₁ = 1 is the weight
    of this term in RRM's objective: multiply outside.

    ``method="exact"``: every ordered pair (O(N²) time, O(block · N) memory: G is built block by
    block in the forward and again in the backward, never stored); refused above ``max_pixels``
    pixels per image. ``method="coarse"`` (default): pixels are grouped into nodes, the occupied
    bins of a grid of ``cell × cell`` pixels split into colour cubes of side ``colour_bin``
    (0–255 units; None: no colour split). With A_cI = Σ_{i∈I} S(i) P_c(i),
    B_cI = Σ_{i∈I} (1 − P_c(i)) and the nodes' centroids and mean colours,

    .. math::
        E \approx \sum_c \sum_{I, J} A_{cI}\, G(I, J)\, B_{cJ}
            - \sum_i S(i) \sum_c P_c(i)\,\big(1 - P_c(i)\big)

    (G(I, I) = 1; the last sum removes the pairs i = j exactly). The Gaussian of σ_d = 100
    barely changes across a cell and a colour cube of side 5 keeps the colour term within a
    node close to 1, so pairs of nodes with pixel counts as weights approximate the full sum.
    Measured against ``method="exact"`` (``benchmarks/bench_losses.py --only fully_connected``,
    the 14 VOC images of the test data resized to 48², 64², 96², 21 classes, float64; value:
    relative error; gradient with respect to P: cosine, and cosine after removing its mean
    over classes, the part a softmax passes on), default ``cell=8, colour_bin=5``: value error
    median 0.3 %, at most 0.7 %; gradient cosine ≥ 0.9995; centred cosine ≥ 0.999 (smooth
    predictions) and ≥ 0.994 (random soft predictions). A purely spatial grid
    (``cell=4, colour_bin=None``) errs by 6–15 % in the median and up to 65 %, centred cosine
    down to 0.34: the colours inside a cell differ by far more than σ_r. Nodes number at most
    the pixels (an image of noise gives back the exact cost). Its time grows with the square of
    the nodes: forward and backward in float64, median 0.5 s at 48², 1.0 s at 64², 4.7 s at
    96² (one thread), minutes at 256².

    ``method="lattice"``: Tang et al.'s evaluation of the dense CRF loss
    :math:`\sum_c S_c^\top W (1 - S_c)`, W·v by the permutohedral lattice filter
    (:class:`~graphseg.propagate.PermutohedralLattice`, Adams et al. 2010) of the features
    (y, x)/σ_d, rgb/σ_r: time and memory linear in the pixels. The lattice filter K is a
    blurred, rescaled Gaussian whose scale varies from pixel to pixel (on the 14 VOC images at
    48², its row sums are 0.05–0.78 times those of G, 0.45–0.55 times over a whole image), so
    it is rescaled by its own diagonal (the filter's weight of each pixel on itself,
    :meth:`~graphseg.propagate.PermutohedralLattice.diagonal`):

    .. math::
        E \approx \sum_c \sum_{i, j} a_{ci}\, \frac{K_{ij}}{\sqrt{K_{ii} K_{jj}}}\,
            \big(1 - P_c(j)\big) - \sum_i S(i) \sum_c P_c(i)\,\big(1 - P_c(i)\big),
        \qquad a_{ci} = S(i)\, P_c(i)

    so that the rescaled kernel is 1 on the diagonal, as G(i, i) is, and the last sum removes
    the pairs i = j exactly; the gradient is the filter's exact transpose. Measured as above:
    value error median 3.0 % (2.4 %, 2.6 %, 3.8 % at 48², 64², 96²), at most 12 %, of either
    sign; gradient cosine ≥ 0.9976; centred cosine ≥ 0.997 (smooth predictions) and ≥ 0.993
    (random soft predictions); 0.04–0.06 s in float64 where ``"coarse"`` takes 0.5–4.7 s.
    Rescaling by one number per image (the mean of the diagonal) errs about as much in value
    (2.9 % median, 11.5 % at most at 48²) but turns the gradient less well (centred cosine
    down to 0.990 against 0.994 for random predictions); the diagonal of a lattice with every
    vertex occupied (a closed form in the barycentric weights) errs by 6 % in the median. Tang
    et al.'s and RRM's released code filter with the raw lattice, so their loss weights
    absorb its scale. At 512², 21 classes, forward and backward take 1.4 times one lattice
    build and filter with its transpose, on 1 or 2 threads (``benchmarks/bench_losses.py
    --only fully_connected_512``; docs/results.md); the compiled diagonal costs less than the
    build (0.04 s against 0.05 s on one thread).

    ``"coarse"`` stays the default: where the exact sum can be checked (≤ 96²) its value errs
    by a tenth of the lattice's, with gradients as close or closer; ``"lattice"`` is the
    method for large images, where the coarse grid's node pairs take minutes.

    Normalisation: ``"sum"`` (default) is the paper's sum over pairs, per image, averaged over
    the images of the batch (RRM's code divides by the number of images); ``"pixels"`` also
    divides by the H·W pixels of an image, as :func:`dense_energy_loss` does, so that a
    weight does not depend on the image size.

    Args:
        probs: ``(B, C, H, W)`` class probabilities P.
        image: ``(B, 3, H', W')`` image in [0, 1] (or any image form of docs/images.md);
            resized (bilinear) to the resolution of ``probs`` when its size differs.
        seeds: optional ``(B, H, W)`` int64 seeds that switch the soft filter on.
        method: ``"coarse"``, ``"exact"`` or ``"lattice"``.
        cell: the side of a coarse cell in pixels (``method="coarse"``).
        colour_bin: the side of a colour cube on 0–255 colour, or None (``method="coarse"``).
        sigma_xy: σ_d in pixels. sigma_rgb: σ_r on 0–255 colour.
        normalization: ``"sum"`` or ``"pixels"``.
        max_pixels: the largest H·W that ``method="exact"`` accepts.
        ignore_index: the unknown seed value.

    Returns:
        Scalar loss; 0 for the same one-hot prediction everywhere.
    """
    _checks.check_tensor4d("probs", probs)
    _checks.check_choice("method", method, DENSE_METHODS)
    _checks.check_choice("normalization", normalization, DENSE_NORMALIZATIONS)
    _checks.check_positive("cell", cell, integer=True)
    if colour_bin is not None:
        _checks.check_positive("colour_bin", colour_bin)
    _checks.check_positive("sigma_xy", sigma_xy)
    _checks.check_positive("sigma_rgb", sigma_rgb)
    _checks.check_positive("max_pixels", max_pixels, integer=True)
    ignore_index = _check_ignore_index(ignore_index)
    batch, classes, height, width = probs.shape
    image = _checks.as_image_batch(image, "image")
    if image.shape[0] != batch or image.shape[1] != 3:
        raise ValueError(f"image must be a (B, 3, H, W) batch with B = {batch} (that of probs), "
                         f"got shape {tuple(image.shape)}")
    if image.shape[2:] != probs.shape[2:]:
        image = torch.nn.functional.interpolate(image, size=(height, width), mode="bilinear",
                                                align_corners=False)
    colour = image.to(probs.device, probs.dtype).flatten(2) * 255
    flat = probs.flatten(2)  # (B, C, n)
    rest = 1 - flat
    if seeds is None:  # S = 1
        weighted = flat
    else:
        seeds = _check_seeds_for(seeds, probs, ignore_index)
        weighted = flat * _soft_filter(probs, seeds, ignore_index).flatten(1).unsqueeze(1)
    ys, xs = torch.meshgrid(torch.arange(height, device=probs.device, dtype=probs.dtype),
                            torch.arange(width, device=probs.device, dtype=probs.dtype),
                            indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1)  # (n, 2)
    if method == "exact" and height * width > max_pixels:
        raise ValueError(
            f"fully_connected_energy_loss(method='exact') sums over all N² pixel pairs and "
            f"accepts at most max_pixels={max_pixels} pixels per image, got {height}x{width} = "
            f"{height * width}: use method='coarse' or 'lattice', or raise max_pixels")
    if method == "lattice":
        energy = _LatticePairSum.apply(weighted, rest, pos, colour, float(sigma_xy),
                                       float(sigma_rgb))
    else:
        energies = []
        for b in range(batch):
            if method == "exact":
                a, other, node_colour, node_pos = weighted[b], rest[b], colour[b], pos
            else:
                index, nodes = _nodes(colour[b], height, width, cell, colour_bin)
                count = torch.bincount(index, minlength=nodes).to(probs.dtype)
                a = weighted.new_zeros(classes, nodes).index_add(1, index, weighted[b])
                other = flat.new_zeros(classes, nodes).index_add(1, index, rest[b])
                node_colour = colour.new_zeros(3, nodes).index_add(1, index, colour[b]) / count
                node_pos = pos.new_zeros(nodes, 2).index_add(0, index, pos) / count[:, None]
            nodes = a.shape[1]
            _checks.check_memory(
                probs.element_size() * (8 * _chunk(nodes, probs.element_size()) * nodes
                                        + 8 * classes * nodes),
                f"fully_connected_energy_loss on {nodes} nodes per image",
                "use method='coarse' with a larger cell or colour_bin", probs.device)
            energies.append(_DensePairSum.apply(a[None], other[None], node_pos[None],
                                                node_colour[None], float(sigma_xy),
                                                float(sigma_rgb)))
        # the pairs i = j, exact at any grid
        energy = torch.cat(energies) - (weighted * rest).sum((1, 2))
    if normalization == "pixels":
        energy = energy / (height * width)
    return energy.mean()


class FullyConnectedEnergyLoss(nn.Module):
    """Module form of :func:`fully_connected_energy_loss`: ``forward(probs, image,
    seeds=None)``."""

    def __init__(self, *, method: str = "coarse", cell: int = COARSE_CELL,
                 colour_bin: float | None = COARSE_COLOUR_BIN,
                 sigma_xy: float = RRM_SIGMA_XY, sigma_rgb: float = RRM_SIGMA_RGB,
                 normalization: str = "sum", max_pixels: int = EXACT_MAX_PIXELS,
                 ignore_index: int = IGNORE) -> None:
        super().__init__()
        _checks.check_choice("method", method, DENSE_METHODS)
        _checks.check_choice("normalization", normalization, DENSE_NORMALIZATIONS)
        _checks.check_positive("cell", cell, integer=True)
        self.options = {"method": method, "cell": cell, "colour_bin": colour_bin,
                        "sigma_xy": sigma_xy,
                        "sigma_rgb": sigma_rgb, "normalization": normalization,
                        "max_pixels": max_pixels,
                        "ignore_index": _check_ignore_index(ignore_index)}

    def forward(self, probs: Tensor, image, seeds: Tensor | None = None) -> Tensor:
        return fully_connected_energy_loss(probs, image, seeds=seeds, **self.options)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"{self.__class__.__name__}({options})"
