"""Boxes across a data set: a box segmentation network learned from the GrabCut seeds of every
image of a folder, then GrabCut started from its prediction.

GrabCut sees one image's colours; a folder of one category holds what its boxes have in
common (shape, parts, appearance). :func:`train_box_network` learns it from nothing but the
images and boxes, in three steps per image:

1. GrabCut seeds M_B of each box (:func:`graphseg.seeds.grabcut_seeds`, thesis Eq. 3.2–3.3);
2. each box seen in its own frame: the box grown by ``context`` of its sides, resized to
   ``size``², with two coordinate channels in box units (−1 and 1 on the box's sides), so that
   boxes of every size and place share one frame;
3. a class-agnostic network (a small :class:`~graphseg.nn.ResNetBackbone`, from scratch) trained
   on every box of the folder with the cross-entropy on M_B (GrabCut's foreground 1, its
   background inside the box and everything outside the box 0, unknown in a band of ``band``
   pixels around their border) plus a projection term in the spirit of the MP loss (thesis
   Eq. 3.23; BoxInst, Tian et al., CVPR 2021): every row and every column crossing a tight box
   holds the object, so the largest foreground probability of each is pushed to 1 (−log).

:func:`train_box_network_dataset` repeats this ``rounds`` times, each round on the seeds of
GrabCut started from the previous network's prediction (``grabcut_seeds(priors=...)``: the
network's probability of each box, averaged over the frame and its mirror image, splits it into
probable foreground and background). The recipe ``box-network`` then labels each image with the
majority of three labellings (:func:`majority`): M_B, GrabCut started from the last network,
and that network alone. :func:`~graphseg.pipelines.segment_dataset`
(``graphseg segment --method box-network``) trains the network on the folder it labels and
keeps it as ``OUT/box_network.pt`` (after every round; ``resume`` continues from there);
:func:`box_network_labels` does both in memory. This is graphseg's recipe, not one paper's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphseg import _checks
from graphseg._io import atomic_path, load_state
from graphseg.losses import potts_loss
from graphseg.nn.backbone import ResNetBackbone
from graphseg.pipelines._common import UNKNOWN, single_image
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.recipes._graphs import RGBGraph
from graphseg.pipelines.recipes.grabcut import seed_probabilities
from graphseg.pipelines.registry import FolderModel, register_recipe
from graphseg.seeds import border_band, box_owner, grabcut_seeds

__all__ = ["BoxNetwork", "BoxNetworkConfig", "box_crops", "box_network_labels",
           "box_network_seeds", "box_priors", "load_box_network", "majority", "network_labels",
           "save_box_network",
           "train_box_network", "train_box_network_dataset"]

_WIDTHS_KEY = "box_network_widths"
_ROUNDS_KEY = "box_network_rounds"

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass(frozen=True)
class BoxNetworkConfig:
    """Settings of the ``box-network`` recipe (:func:`train_box_network_dataset`,
    :func:`box_network_seeds`), chosen on horses224: 12 epochs and a band of 4 frame pixels
    rather than 30 and 2 (71.9 against 71.4% foreground IoU after one round: longer training
    learns GrabCut's mistakes too), three rounds."""

    size: int = 128
    """Side of the box frame the network sees (pixels): 128 rather than 96 gave 76.4 against
    75.0% foreground IoU on horses224 (10.47 against 11.09% box error) and 86.5 against 86.2%
    on the grabcut set, for 1.3× the training time."""
    context: float = 0.15
    """The frame is the box grown by this fraction of its width and height on each side."""
    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    """Adam's learning rate, decayed polynomially (power 0.9) to 0 over the epochs."""
    band: int = 4
    """Frame pixels left unknown on each side of GrabCut's foreground border."""
    projection: float = 1.0
    """Weight of the projection term."""
    potts: float = 0.0
    """Weight of the Potts loss L_reg (:func:`graphseg.losses.potts_loss`, thesis Eq. 2.19;
    Tang et al.'s regularized loss, ECCV 2018) of the frame's probabilities on its RGB kernel
    graph (:class:`~graphseg.pipelines.recipes._graphs.RGBGraph`). Off: weights 0 / 1 gave
    75.1 / 75.3% foreground IoU on horses224 and 86.5 / 85.8% on the grabcut set (the network
    alone: 62.3 / 60.1% and 62.6 / 60.3%); 3 lowered the network alone to 55.6% on
    horses224."""
    widths: tuple[int, int, int] = (32, 64, 64)
    """Stage widths of the backbone (stride 4)."""
    rounds: int = 3
    """Times the network is trained: round r > 1 learns from the seeds of round r − 1 (on
    horses224, GrabCut started from the network of rounds 1, 2, 3 gave 71.9, 73.5, 74.0%
    foreground IoU)."""
    padding: int = 0
    """GrabCut's padding around each box (tight boxes: 0)."""
    grabcut_context: float | None = 0.1
    """GrabCut's window around each box for the seeds M_B (:func:`graphseg.seeds.grabcut_seeds`,
    as :class:`~graphseg.pipelines.BoxSeeds`)."""
    started_context: float | None = None
    """GrabCut's window when it starts from the network (None: the whole image)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("size", "epochs", "batch_size", "rounds"):
            _checks.check_positive(name, getattr(self, name), integer=True)
        for name in ("context", "lr", "projection", "potts"):
            _checks.check_positive(name, getattr(self, name), allow_zero=name != "lr")
        _checks.check_positive("band", self.band, integer=True, allow_zero=True)
        _checks.check_positive("padding", self.padding, integer=True, allow_zero=True)


class BoxNetwork(nn.Module):
    """Foreground/background logits of a box frame: RGB (ImageNet-normalised) and the two box
    coordinates in, ``(B, 2, S, S)`` logits out (channel 1 = the box's object)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 64)) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.backbone = ResNetBackbone(5, widths=widths, stem_width=32, stride=4)
        self.head = nn.Conv2d(sum(widths), 2, 1)
        self.rounds_done = 0
        """Rounds of :func:`train_box_network_dataset` this network finished."""

    def forward(self, frames: Tensor) -> Tensor:
        logits = self.head(torch.cat(self.backbone(frames), dim=1))
        return F.interpolate(logits, size=frames.shape[2:], mode="bilinear",
                             align_corners=False)


def _window(box: Sequence[int], context: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    rx, ry = context * (x1 - x0 + 1), context * (y1 - y0 + 1)
    return x0 - rx, y0 - ry, x1 + rx, y1 + ry


def _grid(window, size: int, height: int, width: int) -> Tensor:
    """grid_sample's grid of ``size``² points spanning ``window`` (pixel centres)."""
    x0, y0, x1, y1 = window
    xs = torch.linspace(x0, x1, size) / max(width - 1, 1) * 2 - 1
    ys = torch.linspace(y0, y1, size) / max(height - 1, 1) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)[None]


def _box_coordinates(window, box, size: int) -> Tensor:
    x0, y0, x1, y1 = window
    bx0, by0, bx1, by1 = box
    u = (torch.linspace(x0, x1, size) - bx0) / max(bx1 - bx0, 1) * 2 - 1
    v = (torch.linspace(y0, y1, size) - by0) / max(by1 - by0, 1) * 2 - 1
    return torch.stack([u[None].expand(size, size), v[:, None].expand(size, size)])


def box_crops(image, boxes: list, *, size: int = 128, context: float = 0.15) -> Tensor:
    """The frames of an image's boxes: ``(K, 5, size, size)`` (ImageNet-normalised RGB, zero
    outside the image, then the box coordinates u, v)."""
    image = single_image(image)[0].float()
    height, width = image.shape[1:]
    normalised = (image - _MEAN) / _STD
    frames = []
    for box in boxes:
        window = _window(box["box"], context)
        rgb = F.grid_sample(normalised[None], _grid(window, size, height, width),
                            mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        frames.append(torch.cat([rgb, _box_coordinates(window, box["box"], size)]))
    return torch.stack(frames) if frames else torch.zeros(0, 5, size, size)


def _targets(seeds: Tensor, boxes: list, config: BoxNetworkConfig) -> Tensor:
    """``(K, S, S)`` targets of each box frame from the image's seeds ``(H, W)``: 1 where the
    seeds hold the box's class, 0 elsewhere, 255 in the band around the border inside the
    box."""
    height, width = seeds.shape
    size = config.size
    out = []
    for box in boxes:
        window = _window(box["box"], config.context)
        grid = _grid(window, size, height, width)
        labels = F.grid_sample((seeds == box["cls"]).float()[None, None], grid,
                               mode="nearest", padding_mode="zeros", align_corners=True)[0, 0]
        inside = (_box_coordinates(window, box["box"], size).abs() <= 1).all(0)
        target = (labels > 0.5).long() * inside
        out.append(torch.where(inside, border_band(target, config.band), target))
    return torch.stack(out) if out else torch.zeros(0, size, size, dtype=torch.long)


def _projection_loss(probs: Tensor, inside: Tensor) -> Tensor:
    """−log of the largest foreground probability of each row and column crossing the box."""
    fg = probs[:, 1] * inside
    terms = []
    for dim in (1, 2):  # columns, then rows
        crossing = inside.any(dim).float()
        peak = fg.amax(dim).clamp_min(1e-6)
        terms.append(-(peak.log() * crossing).sum() / crossing.sum().clamp_min(1))
    return sum(terms)


def _flip(frames: Tensor) -> Tensor:
    """Box frames mirrored left to right (the u coordinate changes sign)."""
    flipped = frames.flip(-1)
    flipped[:, 3] = -flipped[:, 3]
    return flipped


def _frame_loss(logits: Tensor, frames: Tensor, targets: Tensor, inside: Tensor,
                config: BoxNetworkConfig) -> Tensor:
    """Cross-entropy on the targets, plus the projection and Potts terms by their weights."""
    probs = logits.softmax(1)
    loss = F.cross_entropy(logits, targets, ignore_index=UNKNOWN)
    if config.projection:
        loss = loss + config.projection * _projection_loss(probs, inside)
    if config.potts:
        colour = (frames[:, :3] * _STD + _MEAN).clamp(0, 1)
        loss = loss + config.potts * potts_loss(probs, RGBGraph().build(colour))
    return loss


def train_box_network(frames: Tensor, targets: Tensor,
                      config: BoxNetworkConfig = BoxNetworkConfig(), *,
                      progress: bool = True, desc: str = "box network") -> BoxNetwork:
    """Trains a :class:`BoxNetwork` on box frames (:func:`box_crops`) and their targets
    (``(N, S, S)``: 1 object, 0 background, 255 unknown), seeded by ``config.seed``.

    Each step draws ``batch_size`` frames and flips them left-right with probability ½."""
    if frames.dim() != 4 or frames.shape[1] != 5 or targets.shape != (frames.shape[0],
                                                                        *frames.shape[2:]):
        raise ValueError(f"frames must be (N, 5, S, S) with targets (N, S, S), got "
                         f"{tuple(frames.shape)} and {tuple(targets.shape)}")
    if not len(frames):
        raise ValueError("train_box_network needs at least one box frame")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = BoxNetwork(config.widths)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=1e-4)
    inside_all = (frames[:, 3:].abs() <= 1).all(1)
    model.train()
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(frames), generator=generator)
        total = 0.0
        for start in range(0, len(frames), config.batch_size):
            index = order[start : start + config.batch_size]
            x, y, inside = frames[index], targets[index], inside_all[index]
            if bool(torch.rand((), generator=generator) < 0.5):
                x, y, inside = _flip(x), y.flip(-1), inside.flip(-1)
            loss = _frame_loss(model(x), x, y, inside, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * (1 - (epoch + 1) / config.epochs) ** 0.9
        bar.set_postfix(loss=f"{total / len(frames):.4f}")
    return model.eval()


@torch.no_grad()
def box_priors(model: BoxNetwork, image, boxes: list,
               config: BoxNetworkConfig = BoxNetworkConfig()) -> Tensor:
    """The network's object probability of each box in the image frame: ``(K, H, W)``, 0
    outside the box; the mean of its predictions on each frame and on the frame flipped left
    to right (as in training)."""
    image = single_image(image)
    height, width = image.shape[2:]
    frames = box_crops(image, boxes, size=config.size, context=config.context)
    probs = frames[:, 0]
    if len(frames):
        model.eval()
        flipped = _flip(frames)
        probs = (model(frames).softmax(1)[:, 1] + model(flipped).softmax(1)[:, 1].flip(-1)) / 2
    out = torch.zeros(len(boxes), height, width)
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = box["box"]
        wx0, wy0, wx1, wy1 = _window(box["box"], config.context)
        # the box's pixels in the frame's [-1, 1] coordinates
        gx = (torch.arange(x0, x1 + 1).float() - wx0) / (wx1 - wx0) * 2 - 1
        gy = (torch.arange(y0, y1 + 1).float() - wy0) / (wy1 - wy0) * 2 - 1
        mesh_y, mesh_x = torch.meshgrid(gy, gx, indexing="ij")
        grid = torch.stack([mesh_x, mesh_y], dim=-1)[None]
        out[k, y0 : y1 + 1, x0 : x1 + 1] = F.grid_sample(
            probs[k][None, None], grid, mode="bilinear", align_corners=True)[0, 0]
    return out


def box_network_seeds(model: BoxNetwork, image, boxes: list,
                      config: BoxNetworkConfig = BoxNetworkConfig(), *,
                      num_classes: int | None = None, box_seeds: Tensor | None = None,
                      vote: bool = True) -> Tensor:
    """``(H, W)`` int64 labels of one image from the network (:func:`majority`).

    With ``vote`` False: GrabCut in each box started from the network's probability
    (:func:`box_priors`), 255 inside a box but in no box's foreground (the seeds the next round
    learns from). With ``vote`` True (the recipe's output), the majority of three labellings
    of each pixel, 255 read as background: GrabCut's seeds M_B (``box_seeds``, computed when
    None), GrabCut started from the network, and the network alone (the box's class where its
    probability exceeds 0.5, the smallest box winning); GrabCut from the network where all
    three differ. That is GrabCut from the network except where M_B and the network agree
    otherwise."""
    image = single_image(image)
    probs = box_priors(model, image, boxes, config)
    started = grabcut_seeds(image, [boxes], padding=config.padding,
                            context=config.started_context, priors=[probs],
                            num_classes=num_classes)[0]
    if not vote:
        return started
    if box_seeds is None:
        box_seeds = grabcut_seeds(image, [boxes], padding=config.padding,
                                  context=config.grabcut_context, num_classes=num_classes)[0]
    return majority(box_seeds.cpu(), started.cpu(),
                    network_labels(probs, boxes)).to(image.device)


def network_labels(probs: Tensor, boxes: list) -> Tensor:
    """``(H, W)`` labels of the network alone from its probabilities ``(K, H, W)`` of an
    image's boxes: each pixel takes the class of its smallest box where that box's
    probability exceeds 0.5, else background (0)."""
    height, width = probs.shape[1:]
    owner = box_owner([boxes], height, width)[0]
    classes = torch.tensor([box["cls"] for box in boxes] + [0])
    # an owner of −1 (no box) reads the appended background entry
    padded = torch.cat([probs.float().cpu(), torch.zeros(1, height, width)])
    inside = padded.gather(0, torch.where(owner < 0, len(boxes), owner)[None])[0]
    return torch.where(inside > 0.5, classes[owner], 0)


def majority(box_seeds: Tensor, started: Tensor, network: Tensor) -> Tensor:
    """The pixelwise majority of three label maps (255 read as background), ``started``
    where all three differ: ``network``'s label where it agrees with ``box_seeds``, else
    ``started``'s."""
    box_seeds = torch.where(box_seeds == UNKNOWN, 0, box_seeds)
    started = torch.where(started == UNKNOWN, 0, started)
    return torch.where(box_seeds == network, box_seeds, started)


def train_box_network_dataset(samples: Iterable[dict],
                              config: BoxNetworkConfig = BoxNetworkConfig(), *,
                              num_classes: int | None = None, progress: bool = True,
                              details: dict | None = None,
                              checkpoint: str | os.PathLike | None = None,
                              resume: bool = False,
                              failures: list | None = None) -> BoxNetwork:
    """Trains the box network across a folder: GrabCut seeds M_B of every image, then
    ``config.rounds`` rounds, each training a fresh network on the current seeds and (but the
    last) replacing them by GrabCut started from its prediction.

    Args:
        samples: the folder's samples (e.g. a :class:`~graphseg.data.SegmentationFolder` with
            ``weak="boxes"``, or a generator): dicts with ``"name"``, ``"image"`` and
            ``"boxes"``, read once.
        config: the recipe's settings.
        num_classes: when given, box classes must be below it.
        progress: show tqdm bars.
        details: an optional dict that receives ``"seeds"`` (name → the seeds M_B of each
            image).
        checkpoint: when given, the network of every finished round is written there
            atomically (:func:`save_box_network`, with the rounds done).
        resume: continue from ``checkpoint`` when it reads back: a network of all
            ``config.rounds`` rounds is returned without reading ``samples``; one of fewer
            rounds gives the seeds of the next round, as it did in the interrupted run, so the
            result is the same network.
        failures: when given, a sample whose seeds cannot be built (a ``ValueError``, e.g. a
            box outside its image) is left out of training and ``(name, reason)`` appended
            here; otherwise the error is raised.

    Returns:
        The network of the last round, in eval mode.
    """
    model, done = None, 0
    if resume and checkpoint is not None and os.path.isfile(checkpoint):
        try:
            model = load_box_network(checkpoint)
            done = model.rounds_done
        except ValueError:
            model = None  # a checkpoint that does not read back is trained again
        if model is not None and done >= config.rounds:
            return model
    images, seeds = {}, {}
    for sample in tqdm(samples, desc="grabcut seeds", disable=not progress):
        name = sample["name"]
        try:
            image, boxes = single_image(sample["image"]), sample["boxes"]
            seeds[name] = grabcut_seeds(image, [boxes], padding=config.padding,
                                        context=config.grabcut_context,
                                        num_classes=num_classes)[0]
        except ValueError as error:
            if failures is None:
                raise
            failures.append((name, str(error)))
            continue
        images[name] = (image, boxes)
    if not images:
        raise ValueError("train_box_network_dataset needs at least one sample")
    if details is not None:
        details["seeds"] = dict(seeds)
    frames = torch.cat([box_crops(image, boxes, size=config.size, context=config.context)
                        for image, boxes in images.values()])
    for round_ in range(config.rounds):
        if round_ >= done:
            targets = torch.cat([_targets(seeds[name], boxes, config)
                                 for name, (_, boxes) in images.items()])
            model = train_box_network(frames, targets, config, progress=progress,
                                      desc=f"box network, round {round_ + 1}/{config.rounds}")
            model.rounds_done = round_ + 1
            if checkpoint is not None:
                save_box_network(model, checkpoint)
        if round_ + 1 < config.rounds and round_ + 1 >= done:
            seeds = {name: box_network_seeds(model, image, boxes, config, num_classes=num_classes,
                                              vote=False)
                     for name, (image, boxes) in tqdm(images.items(), desc="grabcut from it",
                                                      disable=not progress)}
    return model


def box_network_labels(samples: Sequence[dict], config: BoxNetworkConfig = BoxNetworkConfig(),
                       *, num_classes: int | None = None, progress: bool = True,
                       details: dict | None = None) -> dict[str, Tensor]:
    """Trains the box network across a folder (:func:`train_box_network_dataset`) and labels
    that folder with it: name → ``(H, W)`` int64 class ids (a pixel in no box's foreground is
    background; where boxes overlap the smaller box wins). ``details`` also receives
    ``"model"``."""
    samples = list(samples)
    model = train_box_network_dataset(samples, config, num_classes=num_classes,
                                      progress=progress, details=details)
    if details is not None:
        details["model"] = model
    labels = {}
    for sample in samples:
        labels[sample["name"]] = box_network_seeds(model, sample["image"], sample["boxes"],
                                                   config, num_classes=num_classes)
    return labels


def save_box_network(model: BoxNetwork, path: str | os.PathLike) -> None:
    """Writes the network's weights, widths and rounds done to ``path`` atomically."""
    if not isinstance(model, BoxNetwork):
        raise TypeError(f"model must be a BoxNetwork, got {type(model).__name__}")
    state = {**model.state_dict(), _WIDTHS_KEY: torch.tensor(model.widths),
             _ROUNDS_KEY: torch.tensor(model.rounds_done)}
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_box_network(path: str | os.PathLike) -> BoxNetwork:
    """A network written by :func:`save_box_network` (read with ``weights_only=True``)."""
    state = load_state(path, "graphseg box-network checkpoint")
    if _WIDTHS_KEY not in state:
        raise ValueError(f"{os.fspath(path)} is not a graphseg box-network checkpoint: it "
                         f"has no {_WIDTHS_KEY!r} entry")
    model = BoxNetwork(tuple(int(w) for w in state.pop(_WIDTHS_KEY)))
    # a checkpoint without the count (written before it was kept) is trained again on resume
    model.rounds_done = int(state.pop(_ROUNDS_KEY, 0))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{os.fspath(path)} is not a graphseg box-network checkpoint: "
                         f"{str(error).splitlines()[0]}") from None
    return model.eval()


@register_recipe("box-network", kinds=("boxes",), config=BoxNetworkConfig, finishing=False,
                 folder=FolderModel(train_box_network_dataset, load_box_network, BoxNetwork,
                                    "box_network.pt"),
                 summary="the majority of GrabCut's seeds, GrabCut started from a box "
                         "network learned across the folder (from its boxes alone), and "
                         "that network")
def box_network(image: Tensor, inputs: WeakInput, config: BoxNetworkConfig, *,
                model: BoxNetwork | None = None, details: dict | None = None) -> Tensor:
    if not isinstance(model, BoxNetwork):
        raise ValueError("method 'box-network' learns across a folder: run it on one with "
                         "segment_dataset / `graphseg segment --images DIR`, or give the "
                         "network it trained (checkpoint=box_network.pt)")
    labels = box_network_seeds(model, image, inputs.boxes, config,
                               box_seeds=inputs.box_seeds[0])
    return seed_probabilities(labels[None], inputs.classes)
