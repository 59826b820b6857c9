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
from graphseg.graph.edges import as_graph
from graphseg.graph.window import WindowGraph
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

__all__ = ["fit_a2gnn", "load_checkpoint", "save_checkpoint", "train_affinity"]


def resample_seeds(seeds: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resampling of a seed map (255 stays a label, never blended)."""
    if tuple(seeds.shape[1:]) == size:
        return seeds
    return F.interpolate(seeds.unsqueeze(1).float(), size=size, mode="nearest")[:, 0].long()


def train_affinity(
    model: AffinityCNN,
    batches: Iterable,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 5e-4,
    radius: int = 5,
    shape: str = "disk",
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
        radius, shape: the training window (paper: disk r = 5).
        variant: loss variant, ``"paper"`` or ``"official"`` (default).
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
    """Seeds in the layout of the losses: ``(B, H, W)`` (a WindowGraph, or the ``pixels``
    grid) or ``(N,)``."""
    if pixels is not None:
        expected = tuple(pixels.shape)
    elif isinstance(graph, WindowGraph):
        expected = (graph.batch_size, *graph.image_size)
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


def fit_a2gnn(
    graph,
    seeds: Tensor,
    *,
    boxes=None,
    num_classes: int | None = None,
    variant: str = "official",
    epochs: int = 100,
    lr: float = 0.03,
    weight_decay: float = 5e-4,
    lambda_reg: float = 0.01,
    reg_graph=None,
    hidden: int = 256,
    model: nn.Module | None = None,
    seed: int = 0,
    history: list | None = None,
    progress: bool = False,
    pixels: Tensor | None = None,
) -> Tensor:
    r"""Trains an A²GNN on one image's graph and returns its class probabilities (thesis §3.4).

    Two stages of ``epochs // 2`` and the rest, Adam (lr 0.03, weight decay 5e-4):

    .. math::
        \text{stage 1:}\quad L = L_{ce} + L_{mp} \qquad
        \text{stage 2:}\quad L = L_{ce} + L_{mp} + \lambda_1 L_{reg}

    with consistency checking (:func:`~graphseg.nn.consistency_check`) pruning the seeds before
    every stage-2 epoch, the pruning accumulating. L_mp and consistency checking need ``boxes``
    and are skipped without them. Everything is computed at the graph's resolution (the official
    code upsamples the logits to the image for L_ce and L_mp). Defaults: the thesis's 100 epochs
    and λ₁ = 0.01; the official code uses 150 + 150 epochs and lr 0.035 for boxes, and
    λ₁ = 0.3 for the other labels.

    Args:
        graph: a :class:`graphseg.WindowGraph` with node features ``x`` (e.g. from
            :meth:`~graphseg.nn.AffinityCNN.to_graph`) or a PyG ``Data`` with ``x``
            (e.g. a superpixel graph).
        seeds: ``(B, H, W)`` (WindowGraph) or ``(N,)`` (Data) int64 seeds, 255 = unknown.
        boxes: one list of ``{"cls", "box"}`` per image, in the pixel coordinates of the graph
            (WindowGraph) or of ``pixels``.
        num_classes: C (default: largest seeded class + 1).
        variant: attention and cross-entropy variant, ``"paper"`` or ``"official"`` (default).
        epochs: total epochs of both stages.
        lr, weight_decay: Adam settings.
        lambda_reg: λ₁ of L_reg in stage 2 (0 switches it off).
        reg_graph: the pairwise weights G of L_reg, e.g.
            ``pixel_graph(small_image, offsets=graph.offsets)`` for the thesis's colour kernel;
            None uses the graph's own (learned) edge weights.
        hidden: A²GNN width (256).
        model: a module with A²GNN's interface to train instead (e.g.
            :func:`~graphseg.nn.baseline_gnn`).
        seed: seed of the initialisation and dropout (the global RNG state is restored).
        history: when a list is given, the loss of every epoch is appended to it.
        progress: show a tqdm bar.
        pixels: for a graph whose nodes are regions (a PyG ``Data``, e.g. a superpixel graph),
            a ``(B, h, w)`` int64 map of the node that covers each cell of a pixel grid (e.g.
            the superpixel labels, subsampled): seeds and boxes then live on that grid, and the
            losses read the node logits and features through it, as the official code
            upsamples its logits to the image.

    Returns:
        ``(B, C, H, W)`` or ``(N, C)`` class probabilities at the graph's nodes (no gradient).
    """
    inputs = node_inputs(graph)
    windowed = isinstance(graph, WindowGraph)
    if pixels is not None:
        if windowed:
            raise ValueError("pixels is for graphs of region nodes; a WindowGraph's nodes are "
                             "pixels already")
        pixels = _checks.as_label_batch(pixels, "pixels").to(inputs.device)
        if int(pixels.max()) >= inputs.shape[0]:
            raise ValueError(f"pixels must hold node ids below {inputs.shape[0]}, got "
                             f"{int(pixels.max())}")
    seeds = _fit_seeds(graph, seeds, pixels).to(inputs.device)
    _checks.check_choice("variant", variant, VARIANTS)
    _checks.check_positive("epochs", epochs, integer=True)
    _checks.check_positive("lr", lr)
    _checks.check_positive("weight_decay", weight_decay, allow_zero=True)
    _checks.check_positive("lambda_reg", lambda_reg, allow_zero=True)
    num_classes = seed_classes(seeds, num_classes)
    if boxes is not None:
        if not windowed and pixels is None:
            raise TypeError("boxes need pixel rows and columns: a WindowGraph, or pixels= for "
                            f"a {type(graph).__name__}")
        grid = tuple(pixels.shape) if pixels is not None else (graph.batch_size,
                                                                *graph.image_size)
        _checks.check_boxes(boxes, grid[0], *grid[1:], num_classes=num_classes)
    if reg_graph is None:
        reg_graph = graph
    reg_graph = as_graph(reg_graph, "reg_graph")
    if windowed and (not isinstance(reg_graph, WindowGraph)
                     or reg_graph.weight.shape[0] != graph.batch_size
                     or reg_graph.image_size != graph.image_size):
        raise ValueError("reg_graph must be a WindowGraph of the graph's batch and image size "
                         f"{(graph.batch_size, *graph.image_size)}, got {reg_graph!r}")
    graph = _detached(graph)
    if isinstance(reg_graph, WindowGraph):
        reg_graph = WindowGraph(reg_graph.weight.detach(), reg_graph.offsets)
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
            second = epoch >= epochs // 2
            if second and boxes is not None:
                current = consistency_check(current, logits.detach(), features, boxes)
            loss = seed_cross_entropy(logits, current, variant=variant)
            if boxes is not None:
                loss = loss + mp_loss(logits, features, boxes)
            if second and lambda_reg > 0:
                loss = loss + lambda_reg * potts_loss(out.probs, reg_graph)
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
