"""Random-walk propagation of class scores (AffinityNet, IRN, A²GNN) on windowed graphs.

The references build the dense N×N transition matrix and square it ``logt`` times; here the same
``T^t`` is applied as ``t`` windowed steps, each a :func:`graphseg.ops.window_aggregate` — the
matrix power of a windowed operator fills in and is no longer windowed. On CPU with the compiled
extension, and when no gradient is asked for, the ``t`` steps run in one kernel
(``graphseg_ext.window_aggregate_power``) that does several steps per pass over the image, so
that the weights and values are read from memory once per pass instead of once per step.
Iteration carries labels about r·√t pixels; full-resolution seeded problems want
:func:`graphseg.harmonic`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.edges import as_graph
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import WindowGraph
from graphseg.ops.window_ops import aggregate_power_fused, fused_power_available
from graphseg.propagate._common import node_values, propagation_graph
from graphseg.propagate._threads import free_threads, intra_op_threads

__all__ = [
    "RANDOM_WALK_PRESETS",
    "background_channel",
    "irn_affinity",
    "psa_border_mask",
    "random_walk",
    "transition",
]

RANDOM_WALK_PRESETS = {
    # AffinityNet (Ahn & Kwak, CVPR 2018): psa(5) offsets at stride 8, beta 8, logt 8, alpha 16.
    "psa": {"beta": 8.0, "num_steps": 256, "alpha": 16.0, "stride": 8, "radius": 5},
    # IRN (Ahn, Cho & Kwak, CVPR 2019): path affinity from a boundary map at stride 4, beta 10,
    # exp_times 8, constant background score 0.25.
    "irn": {"beta": 10.0, "num_steps": 256, "background": 0.25, "stride": 4, "radius": 5},
    # A2GNN official code: beta 8, logt 6, alpha 6 (fused 1:3 with the GNN output elsewhere).
    "a2gnn": {"beta": 8.0, "num_steps": 64, "alpha": 6.0},
}


def background_channel(cams: Tensor, alpha: float = 16.0) -> Tensor:
    r"""AffinityNet's background score :math:`(1 - \max_c \mathrm{cam}_c)^\alpha`.

    Args:
        cams: ``(B, C, H, W)`` foreground class activation maps in [0, 1].
        alpha: the exponent (psa uses 4, 16, 24, 32; 16 by default; A²GNN 6).

    Returns:
        ``(B, 1, H, W)``.
    """
    _checks.check_tensor4d("cams", cams)
    _checks.check_positive("alpha", alpha)
    return (1 - cams.amax(1, keepdim=True)).clamp_min(0).pow(alpha)


def transition(graph, beta: float = 8.0):
    r"""AffinityNet's transition operator :math:`T = D^{-1} A^{\beta}` (self weights included).

    psa and IRN column-normalise :math:`A^\beta` and right-multiply a row vector of scores; for a
    symmetric A that equals the row-normalised aggregation used here."""
    _checks.check_positive("beta", beta)
    return as_graph(graph).power(beta).normalize("row")


def psa_border_mask(height: int, width: int, radius: int = 5) -> Tensor:
    """Edges that AffinityNet's official code keeps on its half-disk pairs.

    The psa code forms pairs only from source pixels in the crop rows ``[0, H − r + 1)``, columns
    ``[r − 1, W − r + 1)``, so that every half-disk neighbour lies inside the image; pairs whose
    upper (source) end lies in the border strip do not exist. Returns a ``(K, H, W)`` bool mask
    over ``window_offsets(radius, "psa")`` (forward half first, then the reverse edges)."""
    offsets = window_offsets(radius, "psa")
    half = offsets.shape[0] // 2
    crop = torch.zeros(height + 2 * radius, width + 2 * radius, dtype=torch.bool)
    crop[radius : radius + max(0, height - radius + 1),
         radius + radius - 1 : radius + max(radius - 1, width - radius + 1)] = True
    mask = torch.zeros(offsets.shape[0], height, width, dtype=torch.bool)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        # forward edge at p: source p; reverse edge at q: source q + o_k (o_k is the negation)
        sy, sx = (0, 0) if k < half else (dy, dx)
        mask[k] = crop[radius + sy : radius + sy + height, radius + sx : radius + sx + width]
    return mask


def _path_points(dy: int, dx: int) -> list[tuple[int, int]]:
    """Grid points of the bounding box of the segment 0 → (dy, dx) whose distance to its line is
    below 1 (IRN's path between two pixels, both ends included)."""
    length = dy * dy + dx * dx
    return [(y, x) for y in range(min(0, dy), max(0, dy) + 1)
            for x in range(min(0, dx), max(0, dx) + 1)
            if (dy * x - dx * y) ** 2 < length]


def irn_affinity(boundary: Tensor, *, radius: int = 5, self_weight: float = 1.0) -> WindowGraph:
    r"""IRN's inter-pixel affinity from a class boundary map.

    .. math::
        a_{ij} = 1 - \max_{k \in \Pi_{ij}} B(k)

    with :math:`\Pi_{ij}` the grid points within distance 1 of the segment i → j. The map is
    padded with 1, so the image border acts as a boundary. Offsets ``psa(radius)``.

    Args:
        boundary: ``(B, 1, h, w)`` boundary probabilities in [0, 1] (IRN: stride 4).
        radius: window radius (IRN inference: 5).
        self_weight: weight of the self loop (1: the affinity of a pixel with itself).
    """
    _checks.check_tensor4d("boundary", boundary, what="(B, 1, h, w)")
    if boundary.shape[1] != 1:
        raise ValueError(f"boundary must have one channel, got shape {tuple(boundary.shape)}")
    offsets = window_offsets(radius, "psa")
    height, width = boundary.shape[2:]
    padded = F.pad(boundary, (radius,) * 4, value=1.0)[:, 0]
    weight = []
    for dy, dx in offsets.tolist():
        points = [padded[:, radius + y : radius + y + height, radius + x : radius + x + width]
                  for y, x in _path_points(dy, dx)]
        weight.append(1 - torch.stack(points).amax(0))
    return WindowGraph(torch.stack(weight, 1), offsets, self_weight=self_weight)


# multiply-adds of a walk (values × window entries × steps) from which a core seen busy is
# confirmed before the walk gives it up: about 0.5 s of work, against free_threads's pause
LONG_WALK = 10**10


def _walk(graph, values: Tensor, beta: float, num_steps: int) -> Tensor:
    # On the cores no other process holds, as harmonic and the lattice: every pass of the walk
    # and every torch op ends at a barrier, so a thread that shares its core with a busy process
    # holds up the others. Right after large allocations a first look often sees a short-lived
    # task elsewhere (measured: 7 of 10 looks after building the 512² graph); a long walk looks
    # again rather than run on one core.
    work = values.numel() * (getattr(graph, "num_offsets", 0) + 1) * num_steps
    threads = free_threads(torch.get_num_threads(), confirm=work >= LONG_WALK)
    with intra_op_threads(threads):
        return _walk_steps(graph, values, beta, num_steps)


def _walk_steps(graph, values: Tensor, beta: float, num_steps: int) -> Tensor:
    operator = transition(graph, beta)
    if isinstance(operator, WindowGraph):
        weight, offsets = operator.weight, operator.offsets.to(operator.weight.device)
        self_weight = operator.self_weight
        extra = () if self_weight is None else (self_weight,)
        if fused_power_available(weight, values, *extra):
            # The compiled multi-step kernel, with the self loop as one more window entry (0, 0).
            if self_weight is not None:
                weight = torch.cat([weight, self_weight.expand(-1, 1, -1, -1)], 1)
                offsets = torch.cat([offsets, offsets.new_zeros(1, 2)])
            return aggregate_power_fused(weight, values.contiguous(), offsets, num_steps)
    for _ in range(num_steps):
        values = operator._aggregate(values)
    return values


def _check_steps(beta, num_steps) -> None:
    _checks.check_positive("beta", beta, finite=True)
    _checks.check_positive("num_steps", num_steps, integer=True, allow_zero=True)


def random_walk(
    graph,
    probs: Tensor,
    *,
    beta: float | None = None,
    num_steps: int | None = None,
    preset: str | None = None,
    variant: str = "paper",
    alpha: float | None = None,
    boundary: Tensor | None = None,
) -> Tensor:
    r"""Random-walk propagation :math:`T^t x` with :math:`T = D^{-1} A^{\beta}` (AffinityNet).

    Without ``preset``, ``probs`` lives on the graph's nodes and the result too (β = 8,
    t = 256 unless given). Differentiable in ``probs`` and in the graph weights.

    With a ``preset``, ``probs`` are foreground CAMs ``(B, C, H, W)`` in [0, 1] at image
    resolution and ``graph`` is a :class:`WindowGraph` at feature resolution; the result is
    ``(B, 1 + C, H, W)`` class scores (background first) at image resolution, for ``argmax``:

    - ``"psa"``: background :math:`(1 - \max_c \mathrm{cam})^{16}` at image resolution, average
      pooled to the graph, β = 8, t = 256 (logt 8), bilinear upsampling, no renormalisation.
      ``variant="official"`` also zero-pads the image to a multiple of 8 (the graph must then be
      ``ceil(H/8) × ceil(W/8)`` on ``psa(5)`` offsets), keeps only the half-disk pairs of
      :func:`psa_border_mask`, upsamples ×8 and crops.
    - ``"irn"``: CAMs max-normalised per class, pooled to the graph and multiplied by
      :math:`1 - B` (``boundary``, ``(B, 1, h, w)``), β = 10, t = 256, bilinear upsampling
      (``official``: ×4 then crop), divided by the global maximum, constant background 0.25
      prepended. Build the graph with :func:`irn_affinity`.
    - ``"a2gnn"``: background exponent 6, β = 8, t = 64 (logt 6) — the A²GNN code's values
      (``variant`` changes nothing here; the 1:3 fusion with the GNN output belongs to the
      A²GNN pipeline).

    A graph without self weights gets AffinityNet's self loop of weight 1 under a preset.

    Args:
        graph: a :class:`WindowGraph`, or a PyG ``Data`` / :class:`EdgeGraph` (no preset).
        probs: ``(B, C, h, w)`` on a pixel graph, ``(N, C)`` on a PyG graph; CAMs with a preset.
        beta: affinity exponent β.
        num_steps: number of steps t (the papers' t = 2^logt).
        preset: None, ``"psa"``, ``"irn"`` or ``"a2gnn"``.
        variant: ``"paper"`` or ``"official"`` (padding and border details of the released code).
        alpha: background exponent (``psa``/``a2gnn``); default from the preset.
        boundary: IRN boundary map at graph resolution (``irn`` only).

    Returns:
        Propagated scores, shaped like ``probs`` (no preset) or ``(B, 1 + C, H, W)``.
    """
    if preset is None:
        beta = 8.0 if beta is None else beta
        num_steps = 256 if num_steps is None else num_steps
        _check_steps(beta, num_steps)
        graph, values, restore = node_values(graph, probs, "probs")
        return restore(_walk(graph, values, beta, num_steps))

    _checks.check_choice("preset", preset, RANDOM_WALK_PRESETS)
    _checks.check_choice("variant", variant, ("paper", "official"))
    config = RANDOM_WALK_PRESETS[preset]
    beta = config["beta"] if beta is None else beta
    num_steps = config["num_steps"] if num_steps is None else num_steps
    _check_steps(beta, num_steps)
    if not isinstance(graph, WindowGraph):
        raise TypeError(f"preset={preset!r} needs a WindowGraph at feature resolution, got "
                        f"{type(graph).__name__}")
    graph = propagation_graph(graph)
    cams = _checks.check_tensor4d("probs", probs)
    if cams.shape[0] != graph.batch_size:
        raise ValueError(f"probs has batch size {cams.shape[0]} but the graph has "
                         f"{graph.batch_size}")
    if graph.self_weight is None:
        graph = WindowGraph(graph.weight, graph.offsets, self_weight=1.0)
    height, width = cams.shape[2:]
    small = graph.image_size

    if preset == "irn":
        if boundary is None:
            raise ValueError("preset='irn' needs the boundary map (B, 1, h, w) it was built from")
        _checks.check_tensor4d("boundary", boundary, what="(B, 1, h, w)")
        if tuple(boundary.shape) != (graph.batch_size, 1, *small):
            raise ValueError(f"boundary must have shape ({graph.batch_size}, 1, {small[0]}, "
                             f"{small[1]}), got {tuple(boundary.shape)}")
        peak = cams.amax((2, 3), keepdim=True).clamp_min(1e-5)
        values = F.adaptive_avg_pool2d(cams / peak, small) * (1 - boundary.to(cams.dtype))
        scores = _upsample(_walk(graph, values.to(graph.dtype), beta, num_steps), height, width,
                           config["stride"] if variant == "official" else None)
        scores = scores / scores.amax((1, 2, 3), keepdim=True).clamp_min(1e-12)
        background = torch.full_like(scores[:, :1], config["background"])
        return torch.cat([background, scores], 1)

    alpha = config["alpha"] if alpha is None else alpha
    values = torch.cat([background_channel(cams, alpha), cams], 1)
    stride = None
    if preset == "psa" and variant == "official":
        stride = config["stride"]
        padded = (math.ceil(height / stride) * stride, math.ceil(width / stride) * stride)
        if small != (padded[0] // stride, padded[1] // stride):
            raise ValueError(f"preset='psa', variant='official' needs a graph of "
                             f"{padded[0] // stride}x{padded[1] // stride} (the image padded to "
                             f"a multiple of {stride}, at stride {stride}), got "
                             f"{small[0]}x{small[1]}")
        if not torch.equal(graph.offsets.cpu(), window_offsets(config["radius"], "psa")):
            raise ValueError("preset='psa', variant='official' needs a graph on "
                             f"window_offsets({config['radius']}, 'psa')")
        values = F.pad(values, (0, padded[1] - width, 0, padded[0] - height))
        mask = psa_border_mask(*small, config["radius"]).to(graph.weight.device)
        graph = WindowGraph(graph.weight * mask, graph.offsets, self_weight=graph.self_weight)
    values = F.adaptive_avg_pool2d(values, small).to(graph.dtype)
    return _upsample(_walk(graph, values, beta, num_steps), height, width, stride)


def _upsample(scores: Tensor, height: int, width: int, stride: int | None) -> Tensor:
    """Bilinear upsampling to the image; with ``stride``, by that factor and then cropped, as
    the official codes do after padding."""
    if stride is None:
        return F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=False)
    big = (scores.shape[2] * stride, scores.shape[3] * stride)
    if big[0] < height or big[1] < width:
        raise ValueError(f"the graph ({scores.shape[2]}x{scores.shape[3]}) at stride {stride} "
                         f"does not cover the {height}x{width} image")
    scores = F.interpolate(scores, size=big, mode="bilinear", align_corners=False)
    return scores[:, :, :height, :width]
