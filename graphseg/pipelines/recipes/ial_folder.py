r"""IAL's EM loop with its networks shared across a folder (Wang et al., "Weakly Supervised
Semantic Segmentation by Iterative Affinity Learning", IJCV 2020: one unary network, one
pairwise network and one region classifier trained on the weak labels of the whole training
set, which they then label).

The steps are those of the per-image loop (:func:`~graphseg.pipelines.ial_em`, whose module
derives them), with every fit an epoch-wise pass over the folder instead of steps on one
image:

1. seeds of every image from its weak labels (boxes: GrabCut's M_B; points, scribbles: the
   superpixel-expanded M_P, M_S), each image resized to ``size`` × ``size`` (both networks
   are fully convolutional; the labels are resized back);
2. the unary network F learns from the seeds of all images (partial cross-entropy);
3. each EM round: α_u of every image; confident regions Y mined from it (superpixels ≥
   ``ratio`` one class, kept where the region classifier f^m, trained with L_m on the mined
   regions of the whole folder, agrees; seeds override); the pairwise network (kept across
   rounds) trained on :math:`-Y^\top \log \alpha_p + \lambda \|G - G_s\|^2`; α_p = G α_u of
   every image; F retrained from its initialisation on α_p (seeds overriding) with the energy
   term :math:`\mu\, L_{quad}(\alpha_u; W_{ref} / d_{max})`;
4. each image is labelled with the last round's α_p = G α_u.

An image's probabilities cover the classes of its weak labels (IAL's image-level labels): the
others are masked out of F's softmax. :func:`~graphseg.pipelines.segment_dataset`
(``graphseg segment --method ial-folder``) trains the networks on the folder it labels and
keeps them as ``OUT/ial_networks.pt`` after every stage (``resume`` continues from there).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphseg import _checks
from graphseg._io import atomic_path, load_state
from graphseg.graph.offsets import window_offsets
from graphseg.graph.superpixel import superpixels
from graphseg.nn.train import resample_seeds
from graphseg.nn.unary import UnaryNet
from graphseg.pipelines._common import UNKNOWN, single_image, upsample
from graphseg.pipelines.kinds import KINDS, WeakInput, weak_input
from graphseg.pipelines.recipes.ial import (
    _comembership,
    _fresh_unary,
    _mine,
    _pairwise_loss,
    _pairwise_network,
    _reference_graphs,
    _refine,
    _unary_loss,
)
from graphseg.pipelines.registry import FolderModel, register_recipe

__all__ = ["IALFolderConfig", "IALNetworks", "load_ial_networks", "save_ial_networks",
           "train_ial_folder"]

_KINDS = ("boxes", "points", "scribbles")
_META = ("ial_num_classes", "ial_stride", "ial_stages")
_MASKED = -1e4
"""The logit of a class absent from an image's weak labels (its probability underflows to 0
while 0 · logit stays finite in the soft cross-entropy)."""


@dataclass(frozen=True)
class IALFolderConfig:
    """Settings of the folder-level EM loop (one set for every folder)."""

    rounds: int = 2
    """EM rounds after the first unary fit."""
    size: int = 128
    """Every image is resized to ``size`` × ``size`` for both networks."""
    stride: int = 2
    """Stride of both networks' outputs (the graph's resolution)."""
    unary_epochs: int = 12
    """Epochs of each unary fit (from its initialisation every round)."""
    pairwise_epochs: int = 3
    """Epochs of each pairwise M-step (the pairwise network keeps learning across rounds)."""
    batch_size: int = 8
    lr: float = 3e-3
    radius: int = 3
    """Window radius of the learned graph."""
    variant: str = "paper"
    """The E-step's transformation (:func:`~graphseg.propagate.ial_refine`)."""
    refine_steps: int | None = None
    """Applications of G in the E-step (None: 1 for ``"paper"``, 10 for ``"scaled"``)."""
    ratio: float = 0.8
    """Share of a superpixel's pixels that makes it a confident region."""
    n_segments: int = 200
    """SLIC superpixels per image at ``size`` × ``size``."""
    smoothness: float = 1.0
    """λ of the region smoothness loss ‖G − G_s‖²."""
    region_steps: int = 200
    """Adam steps of the region classifier f^m on the mined regions of the folder."""
    energy_weight: float = 5.0
    """μ of the unary M-step's energy term on the RGB kernel graph (0 = fit α_p alone)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "size", "stride", "unary_epochs", "pairwise_epochs",
                     "batch_size", "radius", "n_segments", "region_steps"):
            _checks.check_positive(name, getattr(self, name), integer=True)
        _checks.check_positive("lr", self.lr)
        for name in ("smoothness", "energy_weight"):
            _checks.check_positive(name, getattr(self, name), allow_zero=True)
        _checks.check_choice("variant", self.variant, ("paper", "scaled"))
        if self.refine_steps is not None:
            _checks.check_positive("refine_steps", self.refine_steps, integer=True)
        if not 0.5 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0.5, 1], got {self.ratio}")


class IALNetworks(nn.Module):
    """IAL's unary network (:class:`~graphseg.nn.UnaryNet`) and pairwise network (an
    :class:`~graphseg.nn.AffinityCNN`) shared by a folder, with the stages of
    :func:`train_ial_folder` they finished (1 after the first unary fit, r + 1 after EM round
    r)."""

    def __init__(self, num_classes: int, *, stride: int = 2) -> None:
        super().__init__()
        self.num_classes, self.stride = num_classes, stride
        self.unary = UnaryNet(num_classes, stride=stride)
        self.pairwise = _pairwise_network(stride)
        self.stages_done = 0

    @torch.no_grad()
    def refine(self, images: Tensor, present: Tensor, config: IALFolderConfig
               ) -> tuple[Tensor, Tensor]:
        """α_u and α_p = G α_u of ``(B, 3, S, S)`` images whose classes are ``present``
        ``(B, C)``."""
        self.eval()
        alpha_u = _masked(self.unary(images), present).softmax(1)
        return alpha_u, _refine(self.pairwise, images, alpha_u, config)[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, stride={self.stride}, "
                f"stages_done={self.stages_done})")


def _masked(logits: Tensor, present: Tensor) -> Tensor:
    return logits.masked_fill(~present[:, :, None, None], _MASKED)


def _kind(sample: dict) -> str:
    for kind in _KINDS:
        if sample.get(kind) is not None:
            return kind
    raise ValueError(f"a sample of the ial-folder recipe needs one of the entries {_KINDS}, "
                     f"got {sorted(sample)}")


class _Folder:
    """The folder at the networks' resolution: images ``(N, 3, S, S)``, seeds and SLIC
    regions ``(N, g, g)`` and each image's classes ``(N, C)``."""

    def __init__(self, images: list[Tensor], seeds: list[Tensor], regions: list[Tensor],
                 classes: list[Tensor], num_classes: int) -> None:
        self.images = torch.cat(images)
        self.seeds = torch.cat(seeds)
        self.regions = torch.cat(regions)
        self.present = torch.zeros(len(classes), num_classes, dtype=torch.bool)
        for row, present in enumerate(classes):
            self.present[row, present] = True

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, size: int, generator: torch.Generator):
        order = torch.randperm(len(self), generator=generator)
        return [order[start : start + size] for start in range(0, len(self), size)]


def _grid(config: IALFolderConfig) -> tuple[int, int]:
    side = -(-config.size // config.stride)
    return side, side


def _square(image: Tensor, size: int) -> Tensor:
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


def _read(samples: Iterable[dict], config: IALFolderConfig, num_classes: int | None,
          failures: list | None, progress: bool) -> tuple[_Folder, int]:
    images, seeds, regions, classes = [], [], [], []
    grid = _grid(config)
    for sample in tqdm(samples, desc="ial-folder seeds", disable=not progress):
        try:
            kind = _kind(sample)
            image = single_image(sample["image"])
            labels = {key: sample[key] for key in (kind, "cams") if sample.get(key) is not None}
            inputs = weak_input(image, labels, weak=kind, num_classes=num_classes,
                                config=KINDS[kind].config())
        except ValueError as error:
            if failures is None:
                raise
            failures.append((sample.get("name"), str(error)))
            continue
        small = _square(image, config.size)
        images.append(small)
        seeds.append(resample_seeds(inputs.seeds, grid))
        regions.append(resample_seeds(superpixels(small, n_segments=config.n_segments), grid))
        classes.append(inputs.classes)
    if not images:
        raise ValueError("train_ial_folder needs at least one sample with usable weak labels")
    if num_classes is None:
        num_classes = max(int(c.max()) for c in classes) + 1
    return _Folder(images, seeds, regions, classes, num_classes), num_classes


def _fit_unary_folder(folder: _Folder, targets: Tensor, config: IALFolderConfig,
                      num_classes: int, *, stage: int, energy: bool, progress: bool
                      ) -> UnaryNet:
    """F from its initialisation, ``unary_epochs`` over the folder on ``targets`` (seeds
    ``(N, g, g)`` or soft targets ``(N, C, g, g)``), each batch mirrored left to right with
    probability ½."""
    unary = _fresh_unary(num_classes, config)
    optimizer = torch.optim.Adam(unary.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed + stage)
    unary.train()
    bar = tqdm(range(config.unary_epochs), desc=f"ial-folder unary, stage {stage + 1}",
               disable=not progress)
    for _ in bar:
        total = 0.0
        for index in folder.batches(config.batch_size, generator):
            images, target = folder.images[index], targets[index]
            if bool(torch.rand((), generator=generator) < 0.5):
                images, target = images.flip(-1), target.flip(-1)
            reference = None
            if energy:
                reference = (_reference_graphs(images, _grid(config), config.radius)[1],
                             config.energy_weight)
            loss = _unary_loss(_masked(unary(images), folder.present[index]), target, reference)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        bar.set_postfix(loss=f"{total / len(folder):.4f}")
    return unary.eval()


def _fit_pairwise_folder(networks: IALNetworks, folder: _Folder, alpha_u: Tensor,
                         confident: Tensor, config: IALFolderConfig, *, stage: int,
                         progress: bool) -> None:
    offsets = window_offsets(config.radius, "disk")
    optimizer = torch.optim.Adam(networks.pairwise.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed + stage)
    networks.pairwise.train()
    bar = tqdm(range(config.pairwise_epochs), desc=f"ial-folder pairwise, stage {stage + 1}",
               disable=not progress)
    for _ in bar:
        total = 0.0
        for index in folder.batches(config.batch_size, generator):
            target = _comembership(folder.regions[index], offsets)
            loss = _pairwise_loss(networks.pairwise, folder.images[index], alpha_u[index],
                                  confident[index], target, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        bar.set_postfix(loss=f"{total / len(folder):.4f}")
    networks.pairwise.eval()


def _each(folder: _Folder, function, batch_size: int) -> Tensor:
    return torch.cat([function(folder.images[start : start + batch_size],
                               folder.present[start : start + batch_size])
                      for start in range(0, len(folder), batch_size)])


def train_ial_folder(samples: Iterable[dict], config: IALFolderConfig = IALFolderConfig(), *,
                     num_classes: int | None = None, progress: bool = True,
                     checkpoint: str | os.PathLike | None = None, resume: bool = False,
                     failures: list | None = None) -> IALNetworks:
    """Trains IAL's networks across a folder (the module's steps 1–3).

    Args:
        samples: dicts with ``"name"``, ``"image"`` and one weak-label entry (``"boxes"``,
            ``"points"`` or ``"scribbles"``, in the layout of docs/datasets.md), read once.
        config: the recipe's settings.
        num_classes: the folder's class count (default: the largest seeded class + 1).
        progress: show tqdm bars (one per fit, advancing per epoch).
        checkpoint: when given, the networks are written there atomically after every stage
            (:func:`save_ial_networks`).
        resume: continue from ``checkpoint`` when it reads back: finished networks are
            returned without reading ``samples``; otherwise the stages done are not repeated
            and the result equals an uninterrupted run's.
        failures: when given, a sample whose weak labels cannot be made seeds is left out and
            ``(name, reason)`` appended here; otherwise the error is raised.

    Returns:
        The networks, in eval mode.
    """
    total = config.rounds + 1
    networks = None
    if resume and checkpoint is not None and os.path.isfile(checkpoint):
        try:
            networks = load_ial_networks(checkpoint)
        except ValueError:
            networks = None  # a checkpoint that does not read back is trained again
        if networks is not None and networks.stages_done >= total:
            return networks
    folder, num_classes = _read(samples, config, num_classes, failures, progress)
    # every draw of the training (network and region-classifier initialisations) comes from
    # config.seed, not from the caller's random state
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(config.seed)
        if networks is None or networks.num_classes != num_classes:
            networks = IALNetworks(num_classes, stride=config.stride)
        if networks.stages_done == 0:
            networks.unary = _fit_unary_folder(folder, folder.seeds, config, num_classes,
                                               stage=0, energy=False, progress=progress)
            _stage_done(networks, checkpoint)
        seeded = (folder.seeds != UNKNOWN)[:, None]
        one_hot = F.one_hot(folder.seeds.clamp(max=num_classes - 1), num_classes)
        one_hot = one_hot.movedim(-1, 1).float()
        for stage in range(networks.stages_done, total):
            torch.manual_seed(config.seed + stage)
            alpha_u = _each(folder, lambda x, p: networks.refine(x, p, config)[0],
                            config.batch_size)
            confident = _mine(networks.unary, folder.images, alpha_u, folder.regions, config)
            confident = torch.where(folder.seeds != UNKNOWN, folder.seeds, confident)
            _fit_pairwise_folder(networks, folder, alpha_u, confident, config, stage=stage,
                                 progress=progress)
            refined = _each(folder, lambda x, p: networks.refine(x, p, config)[1],
                            config.batch_size)
            networks.unary = _fit_unary_folder(folder, torch.where(seeded, one_hot, refined),
                                               config, num_classes, stage=stage, energy=True,
                                               progress=progress)
            _stage_done(networks, checkpoint)
    return networks.eval()


def _stage_done(networks: IALNetworks, checkpoint) -> None:
    networks.stages_done += 1
    if checkpoint is not None:
        save_ial_networks(networks, checkpoint)


def save_ial_networks(networks: IALNetworks, path: str | os.PathLike) -> None:
    """Writes the networks, their class count, stride and stages done to ``path``
    atomically (tensors only: loadable with ``weights_only=True``)."""
    if not isinstance(networks, IALNetworks):
        raise TypeError(f"networks must be IALNetworks, got {type(networks).__name__}")
    meta = (networks.num_classes, networks.stride, networks.stages_done)
    state = {**networks.state_dict(),
             **{key: torch.tensor(value) for key, value in zip(_META, meta, strict=True)}}
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_ial_networks(path: str | os.PathLike) -> IALNetworks:
    """Networks written by :func:`save_ial_networks`."""
    what = "graphseg ial-folder checkpoint"
    state = load_state(path, what)
    if any(key not in state for key in _META):
        raise ValueError(f"{os.fspath(path)} is not a {what}: it has no {_META[0]!r} entry")
    num_classes, stride, stages = (int(state.pop(key)) for key in _META)
    networks = IALNetworks(num_classes, stride=stride)
    networks.stages_done = stages
    try:
        networks.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{os.fspath(path)} is not a {what}: "
                         f"{str(error).splitlines()[0]}") from None
    return networks.eval()


@register_recipe("ial-folder", kinds=_KINDS, config=IALFolderConfig,
                 folder=FolderModel(train_ial_folder, load_ial_networks, IALNetworks,
                                    "ial_networks.pt"),
                 summary="IAL's EM loop with one unary and one pairwise network learned "
                         "across the folder from its weak labels; each image labelled with "
                         "α_p = G α_u")
def ial_folder(image: Tensor, inputs: WeakInput, config: IALFolderConfig, *,
               model: IALNetworks | None = None, details: dict | None = None) -> Tensor:
    if not isinstance(model, IALNetworks):
        raise ValueError("method 'ial-folder' learns across a folder: run it on one with "
                         "segment_dataset / `graphseg segment --images DIR`, or give the "
                         "networks it trained (checkpoint=ial_networks.pt)")
    if int(inputs.classes.max()) >= model.num_classes:
        raise ValueError(f"the weak labels hold class {int(inputs.classes.max())}, but the "
                         f"networks know {model.num_classes} classes")
    present = torch.zeros(1, model.num_classes, dtype=torch.bool)
    present[0, inputs.classes] = True
    refined = model.refine(_square(image, config.size), present, config)[1]
    probs = upsample(refined, image.shape[2:])[:, inputs.classes]
    return probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
