"""Trainers of the learned models: the affinity CNN on seed pairs, A²GNN per image, and
checkpoints as plain state dicts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from graphseg import _checks
from graphseg._io import load_state
from graphseg.graph.edges import EdgeGraph, as_graph
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import WindowGraph, pixel_graph
from graphseg.losses import (
    affinity_loss,
    consistency_check,
    mp_loss,
    potts_loss,
    seed_cross_entropy,
)
from graphseg.nn.a2gnn import A2GNN, node_inputs
from graphseg.nn.affinity import AffinityCNN
from graphseg.nn.attention import VARIANTS
from graphseg.propagate._common import seed_classes
from graphseg.seeds.pairs import pair_labels

__all__ = ["A2GNN_BOX_SETTINGS", "A2GNN_SETTINGS", "AFFINITY_SETTINGS", "a2gnn_kernel_graph",
           "a2gnn_settings", "fit_a2gnn", "load_checkpoint", "save_checkpoint",
           "train_affinity"]


def resample_seeds(seeds: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resampling of a seed map (255 stays a label, never blended)."""
    if tuple(seeds.shape[1:]) == size:
        return seeds
    return F.interpolate(seeds.unsqueeze(1).float(), size=size, mode="nearest")[:, 0].long()


AFFINITY_SETTINGS = {
    "paper": {"radius": 5, "shape": "disk"},
    "official": {"radius": 4, "shape": "square"},
}
"""The affinity CNN's training window per variant: the thesis's disk of radius 5 (§3.3.3,
Eq. 3.6–3.7) and the released code's (2r+1)² unfold window, r = 4 (zbf1991/A2GNN
``train_gated_aff.py``, ``--radius 4``). λ = 3, σ_xy = 6 and σ_rgb = 0.1 are the same in
both; the loss terms follow ``variant`` in :func:`~graphseg.nn.affinity_loss`."""


def train_affinity(
    model: AffinityCNN,
    batches: Iterable,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 5e-4,
    radius: int | None = None,
    shape: str | None = None,
    variant: str = "official",
    lam: float = 3.0,
    sigma_xy: float = 6.0,
    sigma_rgb: float = 0.1,
    progress: bool = True,
) -> list[float]:
    r"""Trains an affinity CNN on (image, seed map) pairs with :func:`~graphseg.nn.affinity_loss`.

    Each step runs the model, resamples the seeds (nearest) to the resolution of F_A, labels the
    window pairs (:func:`graphseg.seeds.pair_labels`, Eq. 3.6–3.7) and minimises
    :math:`L_{Ac} + \lambda L_{Ar}` (Eq. 3.9) with Adam. The thesis trains with the PSA recipe
    (SGD, polynomial decay) on an ImageNet backbone; Adam trains a backbone from scratch with less
    tuning, which is what graphseg can offer without downloadable weights.

    Args:
        model: the :class:`~graphseg.nn.AffinityCNN` (trained in place), or one wrapped in
            ``DistributedDataParallel``: each rank then passes its own ``batches``, gradients
            are averaged over the ranks and shards of unequal length are joined.
        batches: an iterable, re-iterated every epoch (a list or a DataLoader), of
            ``(image, seeds)``: ``(B, 3, H, W)`` float images in [0, 1] and ``(B, H, W)`` int64
            seeds at image resolution, 255 = unknown.
        epochs: passes over ``batches``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        radius, shape: the training window (None: the variant's, :data:`AFFINITY_SETTINGS`:
            paper disk r = 5, official square r = 4).
        variant: ``"paper"`` or ``"official"`` (default): the window and the loss
            (:func:`~graphseg.nn.affinity_loss`: L_Ac's weighting, L_Ar's normalisation).
        lam: λ of L_Ar (3).
        sigma_xy, sigma_rgb: L_Ar's kernel (6, 0.1; ImageNet-normalised colour).
        progress: show a tqdm bar over epochs.

    Returns:
        The mean loss of each epoch.
    """
    parallel = isinstance(model, DistributedDataParallel)
    if not isinstance(model.module if parallel else model, AffinityCNN):
        raise TypeError("model must be an AffinityCNN (or one wrapped in "
                        f"DistributedDataParallel), got {type(model).__name__}")
    _checks.check_positive("epochs", epochs, integer=True)
    _checks.check_positive("lr", lr)
    _checks.check_positive("weight_decay", weight_decay, allow_zero=True)
    _checks.check_choice("variant", variant, VARIANTS)
    radius = AFFINITY_SETTINGS[variant]["radius"] if radius is None else radius
    shape = AFFINITY_SETTINGS[variant]["shape"] if shape is None else shape
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    model.train()
    bar = tqdm(range(epochs), desc="affinity", disable=not progress)
    for _ in bar:
        # ranks with fewer batches than others join early instead of hanging the all-reduce
        with model.join() if parallel else contextlib.nullcontext():
            total, count = _affinity_epoch(model, batches, optimizer, radius=radius, shape=shape,
                                           variant=variant, lam=lam, sigma_xy=sigma_xy,
                                           sigma_rgb=sigma_rgb)
        if count == 0:
            raise ValueError("batches is empty: give at least one (image, seeds) pair")
        history.append(total / count)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history


def _affinity_epoch(model: nn.Module, batches: Iterable, optimizer, *, radius: int,
                    shape: str, variant: str, lam: float, sigma_xy: float,
                    sigma_rgb: float) -> tuple[float, int]:
    """One pass of :func:`train_affinity` over ``batches``: the summed loss and the step
    count."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i, batch in enumerate(batches):
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise TypeError(f"batches[{i}] must be an (image, seeds) pair, got "
                            f"{type(batch).__name__}")
        image = _checks.as_image_batch(batch[0], f"batches[{i}] image", channels=3)
        seeds = _checks.as_label_batch(batch[1], f"batches[{i}] seeds")
        _checks.same_size(f"batches[{i}] seeds", seeds, f"batches[{i}] image", image[:, 0])
        image, seeds = image.to(device), seeds.to(device)
        features = model(image).affinity
        pairs = pair_labels(resample_seeds(seeds, tuple(features.shape[2:])), radius=radius,
                            shape=shape)
        loss = affinity_loss(features, pairs, image=image, variant=variant, lam=lam,
                             sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item(), count + 1
    return total, count


def _fit_seeds(graph, seeds, pixels: Tensor | None) -> Tensor:
    """Seeds in the layout of the losses: ``(B, H, W)`` (a WindowGraph, at its resolution or
    a finer one, or the ``pixels`` grid) or ``(N,)``."""
    if pixels is not None:
        expected = tuple(pixels.shape)
    elif isinstance(graph, WindowGraph):
        expected = (graph.batch_size, *graph.image_size)
        if (isinstance(seeds, Tensor) and seeds.dim() == 3 and seeds.shape[0] == expected[0]
                and seeds.shape[1] >= expected[1] and seeds.shape[2] >= expected[2]):
            expected = tuple(seeds.shape)
    else:
        expected = (graph.num_nodes,)
    _checks.check_seed_map(seeds, expected, "the graph")
    if not bool((seeds != 255).any()):
        raise ValueError("seeds has no seed: every entry is 255 (unknown)")
    return seeds.long()


def _detached(graph):
    if isinstance(graph, WindowGraph):
        return WindowGraph(graph.weight.detach(), graph.offsets, x=graph.x.detach())
    data = graph.clone()
    data.x = data.x.detach()
    if getattr(data, "edge_weight", None) is not None:
        data.edge_weight = data.edge_weight.detach()
    return data


A2GNN_SETTINGS = {
    "paper": {"epochs": 100, "lr": 0.03, "weight_decay": 5e-4, "lambda_reg": 0.01,
              "hidden": 256, "reg_radius": 5, "reg_shape": "disk", "reg_reduction": "sum"},
    "official": {"epochs": 100, "lr": 0.03, "weight_decay": 5e-4, "lambda_reg": 0.3,
                 "hidden": 256, "reg_radius": 5, "reg_shape": "square", "reg_reduction": "mean"},
}
"""A²GNN's training settings per variant (docs/paper_presets.md). ``"paper"``: thesis §3.4 and
§3.5 (100 epochs, Adam lr 0.03, weight decay 5e-4, λ₁ = 0.01, width 256) with L_reg's kernel on
the disk of radius 5 of Eq. 3.13 and the unnormalised sum of Eq. 3.22. ``"official"``: the
released code zbf1991/A2GNN, ``train_infer_A2GNN_others.py`` (50 + 50 epochs, lr 0.03,
``mytool.train_with_crf``: λ₁ = 0.3) with ``mytool.train_with_*crf``'s gated-CRF loss (square
window of radius 5, divided by the number of pixels); boxes replace some of them, see
:data:`A2GNN_BOX_SETTINGS`."""
A2GNN_BOX_SETTINGS = {
    "paper": {},
    "official": {"epochs": 300, "lr": 0.035, "lambda_reg": 0.01},
}
"""What boxes change in :data:`A2GNN_SETTINGS`: nothing in the thesis; in the official
``train_infer_A2GNN_box.py`` 150 + 150 epochs, lr 0.035 and ``mytool.train_with_mp_crf``'s
λ₁ = 0.01."""
REG_SIGMA_XY = 6.0
REG_SIGMA_RGB = 0.1
"""L_reg's kernel bandwidths (Eq. 3.22 "with the same parameters as Eq. 3.13"): σ_xy = 6 graph
pixels, σ_rgb = 0.1 on ImageNet-normalised colour; the official code's ``{'xy': 6, 'rgb': 0.1}``."""


def a2gnn_settings(variant: str = "official", *, boxes: bool = False) -> dict:
    """The settings :func:`fit_a2gnn` takes from ``variant`` (:data:`A2GNN_SETTINGS`, with
    :data:`A2GNN_BOX_SETTINGS` when the labels are boxes): a new dict with ``epochs``, ``lr``,
    ``weight_decay``, ``lambda_reg``, ``hidden``, ``reg_radius``, ``reg_shape`` and
    ``reg_reduction`` (``"sum"`` or ``"mean"`` over the nodes)."""
    _checks.check_choice("variant", variant, VARIANTS)
    settings = dict(A2GNN_SETTINGS[variant])
    if boxes:
        settings.update(A2GNN_BOX_SETTINGS[variant])
    return settings


def _node_kernel(graph, image: Tensor, pixels: Tensor) -> EdgeGraph:
    """L_reg's colour + position kernel on the edges of a region graph (see
    :func:`a2gnn_kernel_graph`)."""
    num_nodes = int(graph.num_nodes)
    batch, rows, cols = pixels.shape
    small = F.interpolate(image, size=(rows, cols), mode="bilinear", align_corners=False)
    colour = _checks.normalize_image(small, "imagenet").movedim(1, -1).reshape(-1, 3)
    y, x = torch.meshgrid(torch.arange(rows, device=image.device),
                          torch.arange(cols, device=image.device), indexing="ij")
    position = torch.stack([y, x], -1).to(colour.dtype).expand(batch, rows, cols, 2)
    nodes = pixels.reshape(-1)
    count = torch.zeros(num_nodes, dtype=colour.dtype, device=colour.device)
    count.index_add_(0, nodes, torch.ones_like(nodes, dtype=colour.dtype))
    count = count.clamp_min(1).unsqueeze(1)
    mean_colour = torch.zeros(num_nodes, 3, dtype=colour.dtype,
                              device=colour.device).index_add_(0, nodes, colour) / count
    centroid = torch.zeros(num_nodes, 2, dtype=colour.dtype, device=colour.device).index_add_(
        0, nodes, position.reshape(-1, 2)) / count
    edges = EdgeGraph.from_pyg(graph).without_self_loops()
    source, target = edges.edge_index
    weight = torch.exp(
        -(centroid[source] - centroid[target]).square().sum(1) / (2 * REG_SIGMA_XY ** 2)
        - (mean_colour[source] - mean_colour[target]).square().sum(1) / (2 * REG_SIGMA_RGB ** 2))
    return EdgeGraph(edges.edge_index, weight, num_nodes)


def a2gnn_kernel_graph(graph, image, *, variant: str = "official",
                       pixels: Tensor | None = None):
    r"""The pairwise weights G of A²GNN's L_reg (thesis Eq. 3.22) for ``graph``.

    G is the colour + position Gaussian of L_Ar (Eq. 3.13, squared norms, DESIGN §3),
    :math:`G(i,j) = \exp(-\|p_i - p_j\|^2 / 2\sigma_{xy}^2 - \|c_i - c_j\|^2 / 2\sigma_{rgb}^2)`,
    σ_xy = 6, σ_rgb = 0.1 on ImageNet-normalised colour, with the image resized (bilinear) to the
    graph's resolution (the official code's ``F.interpolate(img, [f_h, f_w])``):

    - a :class:`graphseg.WindowGraph`: on the window of ``variant``, whatever the graph's own
      window: paper the disk of radius 5 (the window of Eq. 3.12–3.13), official the square
      (2·5 + 1)² of the gated-CRF loss (``kernels_radius`` 5 in ``mytool.train_with_*crf``);
    - a graph of region nodes (a PyG ``Data``) read through ``pixels``: on the graph's own
      edges, with p_i the centroid of region i in cells of the ``pixels`` grid and c_i its mean
      colour over those cells (the image resized to that grid). The code has no region graph;
      these are the region-level counterparts of a pixel's position and colour.

    Args:
        graph: the graph A²GNN is trained on.
        image: ``(B, 3, H, W)`` image in [0, 1] (any image form of docs/images.md).
        variant: ``"paper"`` or ``"official"``: the window (pixel graphs).
        pixels: the ``(B, h, w)`` node map of a region graph (required for one).

    Returns:
        A :class:`graphseg.WindowGraph` at the graph's resolution, or an
        :class:`graphseg.graph.EdgeGraph` on the region graph's nodes.
    """
    _checks.check_choice("variant", variant, VARIANTS)
    image = _checks.as_image_batch(image, "image", channels=3)
    if isinstance(graph, WindowGraph):
        if image.shape[0] != graph.batch_size:
            raise ValueError(f"image must have the graph's batch size {graph.batch_size}, got "
                             f"shape {tuple(image.shape)}")
        image = image.to(graph.weight.device)
        if tuple(image.shape[2:]) != graph.image_size:
            image = F.interpolate(image, size=graph.image_size, mode="bilinear",
                                  align_corners=False)
        settings = A2GNN_SETTINGS[variant]
        # a 5-pixel window may not fit a tiny graph: keep the offsets that reach a pixel
        offsets = window_offsets(settings["reg_radius"], settings["reg_shape"])
        height, width = graph.image_size
        offsets = offsets[(offsets[:, 0].abs() < height) & (offsets[:, 1].abs() < width)]
        return pixel_graph(image.to(graph.weight.dtype), offsets=offsets, sigma_xy=REG_SIGMA_XY,
                           sigma_rgb=REG_SIGMA_RGB, normalize="imagenet")
    if pixels is None:
        raise ValueError("image= builds L_reg's kernel on a pixel graph (WindowGraph) or on a "
                         "region graph read through pixels=; for another graph give reg_graph=")
    if image.shape[0] != pixels.shape[0]:
        raise ValueError(f"image must have the batch size of pixels ({pixels.shape[0]}), got "
                         f"shape {tuple(image.shape)}")
    return _node_kernel(graph, image.to(pixels.device), pixels)


def _reg_loss(probs: Tensor, reg_graph, reduction: str) -> Tensor:
    """L_reg (Eq. 3.22, Potts form) as :func:`~graphseg.nn.potts_loss`'s mean over the N nodes,
    or times N for the sum (N = every node of the batch)."""
    loss = potts_loss(probs, reg_graph)
    if reduction == "sum":
        return loss * (probs.numel() // probs.shape[1])
    return loss


def _scaled_boxes(boxes, source: tuple[int, int], target: tuple[int, int]):
    """Boxes of a ``source`` (rows, cols) grid in the cells of a coarser ``target`` grid."""
    def scale(value: int, axis: int) -> int:
        return min(target[axis] - 1, value * target[axis] // source[axis])

    return [[{"cls": box["cls"],
              "box": [scale(box["box"][0], 1), scale(box["box"][1], 0),
                      scale(box["box"][2], 1), scale(box["box"][3], 0)]}
             for box in image_boxes] for image_boxes in boxes]


def fit_a2gnn(
    graph,
    seeds: Tensor,
    *,
    boxes=None,
    num_classes: int | None = None,
    variant: str = "official",
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    lambda_reg: float | None = None,
    image=None,
    reg_graph=None,
    hidden: int | None = None,
    model: nn.Module | None = None,
    seed: int = 0,
    history: list | None = None,
    progress: bool = False,
    pixels: Tensor | None = None,
) -> Tensor:
    r"""Trains an A²GNN on one image's graph and returns its class probabilities (thesis §3.4).

    Two stages of ``epochs // 2`` and the rest, Adam:

    .. math::
        \text{stage 1:}\quad L = L_{ce} + L_{mp} \qquad
        \text{stage 2:}\quad L = L_{ce} + L_{mp} + \lambda_1 L_{reg}

    with consistency checking (:func:`~graphseg.nn.consistency_check`, Eq. 3.27–3.28) pruning
    the seeds, the pruning accumulating. L_mp and consistency checking need ``boxes`` and are
    skipped without them. ``variant`` selects every choice where the thesis and the released
    code (zbf1991/A2GNN) differ; docs/paper_presets.md has the table:

    - the attention layer, L_ce and L_mp (:class:`~graphseg.nn.A2GNN`,
      :func:`~graphseg.nn.seed_cross_entropy`, :func:`~graphseg.nn.mp_loss`);
    - the schedule and width (:func:`a2gnn_settings`): paper 100 epochs, lr 0.03, λ₁ = 0.01,
      width 256; official 50 + 50 epochs and λ₁ = 0.3, or with boxes 150 + 150 epochs,
      lr 0.035 and λ₁ = 0.01. Any of ``epochs``, ``lr``, ``weight_decay``, ``lambda_reg`` and
      ``hidden`` given overrides the variant's value;
    - L_reg (Eq. 3.22, Potts form :math:`\sum_i \sum_j G(i,j) \sum_c P_c(i)(1 - P_c(j))`): its
      kernel G is :func:`a2gnn_kernel_graph` of ``image`` (paper: disk of radius 5; official:
      square of radius 5) and it is the plain sum over the nodes (paper, as printed) or divided
      by their number N (official ``ModelLossSemsegGatedCRF``: ``loss / (N·h·w)``). With the
      sum, λ₁ = 0.01 weighs L_reg N times more than the official code does (DESIGN §6);
    - consistency checking: the paper prunes in stage 2; the official code prunes from the
      first epoch (``mytool.box_mp_loss_with_consistency_checking`` writes into the seed tensor
      in place, and ``train_with_mp_nocrf`` calls it too);
    - seeds finer than a WindowGraph (e.g. at the image's resolution, boxes in its pixels):
      official upsamples the logits and features bilinearly to the seeds for L_ce, L_mp and
      consistency checking (``mytool.train_with_mp_*``); paper resamples the seeds (nearest)
      and boxes to the graph, so the losses sum over labelled nodes (Eq. 3.21, 3.23). L_reg is
      computed at the graph's resolution in both.

    Args:
        graph: a :class:`graphseg.WindowGraph` with node features ``x`` (e.g. from
            :meth:`~graphseg.nn.AffinityCNN.to_graph`) or a PyG ``Data`` with ``x``
            (e.g. a superpixel graph).
        seeds: int64 seeds, 255 = unknown: ``(B, H, W)`` at the graph's resolution or, for a
            WindowGraph, at any finer one (see above); ``(N,)`` for a ``Data``, or ``(B, h, w)``
            on the grid of ``pixels``.
        boxes: one list of ``{"cls", "box"}`` per image, in the pixel coordinates of the seeds.
        num_classes: C (default: largest seeded class + 1).
        variant: ``"paper"`` or ``"official"`` (default: the released code, whose constants
            are all given; the thesis leaves the attention's β open).
        epochs: total epochs of both stages (None: the variant's).
        lr, weight_decay: Adam settings (None: the variant's).
        lambda_reg: λ₁ of L_reg in stage 2, 0 switches it off (None: the variant's).
        image: ``(B, 3, H', W')`` image in [0, 1] from which L_reg's kernel is built
            (:func:`a2gnn_kernel_graph`).
        reg_graph: explicit pairwise weights G of L_reg instead (e.g. ``reg_graph=graph`` for
            the learned edges). Without ``image`` and ``reg_graph`` L_reg cannot be formed and
            a ``lambda_reg`` > 0 is refused: the learned edges are not the thesis's kernel, so
            they are never taken silently.
        hidden: A²GNN width (None: the variant's, 256).
        model: a module with A²GNN's interface to train instead (e.g.
            :func:`~graphseg.nn.baseline_gnn`).
        seed: seed of the initialisation and dropout (the global RNG state is restored).
        history: when a list is given, the loss of every epoch is appended to it.
        progress: show a tqdm bar.
        pixels: for a graph whose nodes are regions (a PyG ``Data``, e.g. a superpixel graph),
            a ``(B, h, w)`` int64 map of the node that covers each cell of a pixel grid (e.g.
            the superpixel labels, subsampled): seeds and boxes then live on that grid, and the
            losses read the node logits and features through it (both variants).

    Returns:
        ``(B, C, H, W)`` or ``(N, C)`` class probabilities at the graph's nodes (no gradient).
    """
    inputs = node_inputs(graph)
    windowed = isinstance(graph, WindowGraph)
    _checks.check_choice("variant", variant, VARIANTS)
    settings = a2gnn_settings(variant, boxes=boxes is not None)
    given = {"epochs": epochs, "lr": lr, "weight_decay": weight_decay,
             "lambda_reg": lambda_reg, "hidden": hidden}
    settings.update({name: value for name, value in given.items() if value is not None})
    epochs, lr, weight_decay = settings["epochs"], settings["lr"], settings["weight_decay"]
    lambda_reg, hidden = settings["lambda_reg"], settings["hidden"]
    if pixels is not None:
        if windowed:
            raise ValueError("pixels is for graphs of region nodes; a WindowGraph's nodes are "
                             "pixels already")
        pixels = _checks.as_label_batch(pixels, "pixels").to(inputs.device)
        if int(pixels.max()) >= inputs.shape[0]:
            raise ValueError(f"pixels must hold node ids below {inputs.shape[0]}, got "
                             f"{int(pixels.max())}")
    seeds = _fit_seeds(graph, seeds, pixels).to(inputs.device)
    _checks.check_positive("epochs", epochs, integer=True)
    _checks.check_positive("lr", lr)
    _checks.check_positive("weight_decay", weight_decay, allow_zero=True)
    _checks.check_positive("lambda_reg", lambda_reg, allow_zero=True)
    _checks.check_positive("hidden", hidden, integer=True)
    num_classes = seed_classes(seeds, num_classes)
    if boxes is not None:
        if not windowed and pixels is None:
            raise TypeError("boxes need pixel rows and columns: a WindowGraph, or pixels= for "
                            f"a {type(graph).__name__}")
        _checks.check_boxes(boxes, *seeds.shape, num_classes=num_classes)
    upsample = None
    if windowed and tuple(seeds.shape[1:]) != graph.image_size:
        if variant == "official":
            upsample = tuple(seeds.shape[1:])
        else:
            if boxes is not None:
                boxes = _scaled_boxes(boxes, tuple(seeds.shape[1:]), graph.image_size)
            seeds = resample_seeds(seeds, graph.image_size)
    if lambda_reg > 0 and reg_graph is None:
        if image is None:
            raise ValueError("lambda_reg > 0 needs L_reg's kernel: give image= (the thesis's "
                             "colour + position kernel, Eq. 3.22) or reg_graph= (explicit "
                             "weights, e.g. reg_graph=graph for the learned edges), or set "
                             "lambda_reg=0")
        reg_graph = a2gnn_kernel_graph(graph, image, variant=variant, pixels=pixels)
    if reg_graph is not None:
        reg_graph = as_graph(reg_graph, "reg_graph")
        if windowed and (not isinstance(reg_graph, WindowGraph)
                         or reg_graph.weight.shape[0] != graph.batch_size
                         or reg_graph.image_size != graph.image_size):
            raise ValueError("reg_graph must be a WindowGraph of the graph's batch and image "
                             f"size {(graph.batch_size, *graph.image_size)}, got {reg_graph!r}")
        if isinstance(reg_graph, WindowGraph):
            reg_graph = WindowGraph(reg_graph.weight.detach(), reg_graph.offsets)
    graph = _detached(graph)
    prune_from = 0 if variant == "official" else epochs // 2
    # training works even when the caller holds torch.no_grad() (e.g. around to_graph); the
    # generator of the GPU that draws the dropout masks is restored too
    rng_devices = [inputs.device] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), torch.enable_grad():
        torch.manual_seed(seed)
        if model is None:
            model = A2GNN(inputs.shape[1], num_classes, hidden=hidden, variant=variant)
        model = model.to(inputs.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        current = seeds
        model.train()
        for epoch in tqdm(range(epochs), desc="a2gnn", disable=not progress):
            out = model(graph)
            logits, features = out.logits, out.features
            if pixels is not None:
                logits, features = logits[pixels].movedim(-1, 1), features[pixels].movedim(-1, 1)
            elif upsample is not None:
                logits = F.interpolate(logits, size=upsample, mode="bilinear",
                                       align_corners=False)
                features = F.interpolate(features, size=upsample, mode="bilinear",
                                         align_corners=False)
            if boxes is not None and epoch >= prune_from:
                current = consistency_check(current, logits.detach(), features, boxes,
                                            variant=variant)
            loss = seed_cross_entropy(logits, current, variant=variant)
            if boxes is not None:
                loss = loss + mp_loss(logits, features, boxes, variant=variant)
            if epoch >= epochs // 2 and lambda_reg > 0:
                loss = loss + lambda_reg * _reg_loss(out.probs, reg_graph,
                                                     settings["reg_reduction"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if history is not None:
                history.append(loss.item())
        model.eval()
        with torch.no_grad():
            return model(graph).probs


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Saves ``model.state_dict()`` (tensors only, loadable with ``weights_only=True``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    torch.save(model.state_dict(), os.fspath(path))


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Loads a state dict saved by :func:`save_checkpoint` into ``model`` (built with the same
    configuration) with ``torch.load(..., weights_only=True)``, so a checkpoint cannot run code.

    Returns:
        ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = load_state(path, f"checkpoint of a {type(model).__name__}",
                       map_location=map_location)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {os.fspath(path)} does not fit this "
                         f"{type(model).__name__}: {error}") from None
    return model
