"""The affinity CNN across a data set (thesis §3.3.3): its architecture, checkpoints, and
:func:`train_affinity_dataset`, which learns it from the seeds of every image of a folder."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from graphseg import _checks
from graphseg._io import atomic_path, load_state, output_file
from graphseg.nn.affinity import AffinityCNN
from graphseg.nn.backbone import ResNetBackbone, build_backbone
from graphseg.nn.train import resample_seeds, save_checkpoint, train_affinity
from graphseg.pipelines._common import resize_image, single_image
from graphseg.pipelines._runner import Failure, for_each_sample, sample_labels
from graphseg.pipelines.distributed import gather_failures, process_group
from graphseg.pipelines.kinds import LABEL_KEYS, weak_input
from graphseg.pipelines.presets import Preset, resolve_preset
from graphseg.seeds import border_band

__all__ = ["AFFINITY_ARCHITECTURE", "AffinityTraining", "affinity_model", "load_affinity",
           "train_affinity_dataset"]

AFFINITY_ARCHITECTURE = {"widths": (32, 32, 64), "stem_width": 16, "stride": 4,
                         "reductions": (32, 32, 64)}
"""The affinity CNN that :func:`train_affinity_dataset` trains and :func:`load_affinity`
rebuilds: a small :class:`~graphseg.nn.ResNetBackbone` (stride 4) trainable on CPU. With
``backbone=`` the network is another one and the reductions stay these."""
TRAIN_BYTES_PER_PIXEL = 2048
"""Peak memory of one training step of :data:`AFFINITY_ARCHITECTURE` per working pixel
(measured: 1.2–1.4 KiB at 256² and 384², 2.6 KiB at 128² with the fixed costs)."""
EPOCH_KEY = "epochs_trained"
"""State-dict entry (an int64 scalar) holding the epochs a checkpoint has been trained for."""
BACKBONE_KEY = "backbone._extra_state"
"""State-dict entry (a string) of a model built with ``backbone=``: the spec of
:func:`~graphseg.nn.build_backbone` that :func:`load_affinity` rebuilds the network from.
Checkpoints of :data:`AFFINITY_ARCHITECTURE` have none."""


def _check_backbone(backbone: str | None, backbone_weights) -> None:
    if backbone_weights is not None and backbone is None:
        raise ValueError("backbone_weights are the weights of the network of backbone=, which "
                         "is None (AFFINITY_ARCHITECTURE's network starts from its seed): give "
                         "backbone too, e.g. 'torchvision:resnet50'")


def _backbone_name(spec: str | None) -> str:
    return "None (AFFINITY_ARCHITECTURE)" if spec is None else repr(spec)


def affinity_model(*, seed: int = 0, backbone: str | None = None,
                   backbone_weights: str | os.PathLike | None = None) -> AffinityCNN:
    """A fresh affinity CNN, initialised from ``seed`` (the global RNG is left as it was), with
    an ``epochs_trained`` int64 buffer.

    Args:
        seed: seed of the random initialisation.
        backbone: None for :data:`AFFINITY_ARCHITECTURE`'s small network, or a spec of
            :func:`~graphseg.nn.build_backbone` (``"torchvision:resnet50"``,
            ``"timm:convnext_tiny"``, ``"package.module:callable"``); the 1×1 reductions are
            :data:`AFFINITY_ARCHITECTURE`'s either way. The spec is kept in the state dict
            (:data:`BACKBONE_KEY`), so that :func:`load_affinity` rebuilds the same network.
        backbone_weights: a local state-dict file of that network (nothing is downloaded);
            None keeps its random initialisation.
    """
    _check_backbone(backbone, backbone_weights)
    arch = AFFINITY_ARCHITECTURE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if backbone is None:
            network = ResNetBackbone(widths=arch["widths"], stem_width=arch["stem_width"],
                                     stride=arch["stride"])
        else:
            network = build_backbone(backbone, backbone_weights)
        model = AffinityCNN(network, reductions=arch["reductions"])
    model.register_buffer(EPOCH_KEY, torch.zeros((), dtype=torch.int64))
    model.eval()
    return model


def load_affinity(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                  backbone: str | None = None) -> AffinityCNN:
    """Loads a checkpoint of :func:`train_affinity_dataset` into :func:`affinity_model` with
    ``torch.load(..., weights_only=True)`` (unpickling cannot run code). The network is the
    one the checkpoint's :data:`BACKBONE_KEY` names, :data:`AFFINITY_ARCHITECTURE`'s without
    one; torchvision and timm networks are rebuilt from their names. A
    ``"package.module:callable"`` backbone is rebuilt by importing that module and calling the
    callable, which runs code: a checkpoint naming one loads only when ``backbone`` names the
    same spec (the caller vouches for that code), so a checkpoint alone never runs code. A
    plain state dict without ``epochs_trained`` loads as 0 epochs."""
    state = load_state(path, "graphseg affinity checkpoint (a state dict of train-affinity)",
                       map_location=map_location)
    state.setdefault(EPOCH_KEY, torch.zeros((), dtype=torch.int64))
    spec = state.get(BACKBONE_KEY)
    if spec is not None and not isinstance(spec, str):
        raise ValueError(f"checkpoint {os.fspath(path)} names its backbone with a "
                         f"{type(spec).__name__} under {BACKBONE_KEY!r}, not a string")
    if backbone is not None and backbone != spec:
        raise ValueError(f"backbone is {backbone!r}, but checkpoint {os.fspath(path)} was "
                         f"trained with {_backbone_name(spec)}")
    if spec is not None and not spec.startswith(("torchvision:", "timm:")) and spec != backbone:
        raise ValueError(f"checkpoint {os.fspath(path)} was trained with backbone {spec!r}, "
                         "which is rebuilt by running that code: pass backbone="
                         f"{spec!r} to load it (only for code you trust)")
    try:
        model = affinity_model(backbone=spec)
    except (ImportError, ValueError) as error:
        kind = ImportError if isinstance(error, ImportError) else ValueError
        raise kind(f"checkpoint {os.fspath(path)} was trained with a backbone that cannot be "
                   f"built here: {error}") from error
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        expected = (f"AFFINITY_ARCHITECTURE {AFFINITY_ARCHITECTURE}" if spec is None
                    else f"backbone {spec!r} with AFFINITY_ARCHITECTURE's reductions")
        raise ValueError(f"checkpoint {os.fspath(path)} does not fit {expected}: "
                         f"{error}") from error
    return model.to(map_location).eval()


@dataclass(frozen=True)
class AffinityTraining:
    """What :func:`train_affinity_dataset` did."""

    history: list[float] = field(default_factory=list)
    """Mean loss of each epoch run by this call (a resumed run lists only its new epochs)."""
    failures: list[Failure] = field(default_factory=list)
    """Images left out because their seeds could not be built."""
    epochs: int = 0
    """Epochs the saved checkpoint has been trained for."""


def _seed_batches(dataset, weak: str, size: int, preset: Preset, progress: bool,
                  shard: tuple[int, int], targets: Mapping[str, Tensor] | None = None,
                  band: int = 0):
    """(image, seeds) pairs of a shard at the working resolution, and the images that
    failed."""
    batches = []
    num_classes = getattr(dataset, "num_classes", None)

    def process(name: str, sample: dict) -> None:
        image = single_image(sample["image"])
        small = resize_image(image, size)
        if targets is None:
            seeds = weak_input(image, sample_labels(sample, LABEL_KEYS[weak]), weak=weak,
                               num_classes=num_classes, config=preset.seeds).affinity_seeds
            batches.append((small, resample_seeds(seeds, tuple(small.shape[2:]))))
            return
        if name not in targets:
            raise ValueError(f"targets has no label map for image {name!r}")
        given = targets[name]
        labels = _checks.as_label_batch(given, f"targets[{name!r}]")
        if labels.shape[0] != 1 or tuple(labels.shape[1:]) != tuple(image.shape[2:]):
            raise ValueError(f"targets[{name!r}] must be ({image.shape[2]}, {image.shape[3]}) "
                             f"like its image, got shape {tuple(given.shape)}")
        _checks.check_seed_values(f"targets[{name!r}]", labels, num_classes)
        batches.append((small, border_band(resample_seeds(labels, tuple(small.shape[2:])),
                                           band)))

    failures = for_each_sample(dataset, process, shard=shard,
                               desc=f"seeds {weak}" if targets is None else "targets",
                               progress=progress)
    return batches, failures


def train_affinity_dataset(dataset, *, weak: str, out: str | os.PathLike, epochs: int = 20,
                           lr: float = 3e-3, size: int | None = None,
                           radius: int | None = None, preset: Preset | None = None,
                           progress: bool = True, resume: bool = False, seed: int = 0,
                           backbone: str | None = None,
                           backbone_weights: str | os.PathLike | None = None,
                           targets: Mapping[str, Tensor] | None = None, band: int = 2,
                           settings=None) -> AffinityTraining:
    """Trains the affinity CNN of :func:`affinity_model` (:data:`AFFINITY_ARCHITECTURE`, or
    the network of ``backbone``) on the seeds of a data set's weak labels (thesis §3.3.3) and
    saves it to ``out``.

    Every image's seeds are the ``affinity_seeds`` of its
    :class:`~graphseg.pipelines.kinds.WeakInput` (thesis §3.6.1: with ``"cams"`` in the
    sample, M_S merged with the CAM seeds M'_I for scribbles and M'_I alone for points; the
    seeds of :func:`~graphseg.pipelines.weak_seeds` otherwise); image and seeds are
    resized to a working resolution whose longer side is ``size`` (seeds nearest), and
    :func:`graphseg.nn.train_affinity` trains on them one image per batch with Adam, on the
    window of ``radius``. ``size`` and ``radius`` default to the learned graph of the
    preset's ``a2gnn`` config, the one :func:`~graphseg.pipelines.segment` builds. After every
    epoch the state dict (with the epoch count as its ``epochs_trained`` entry) is written
    atomically to ``out``. Each epoch starts a fresh Adam, so a run resumed from epoch k
    continues exactly as an uninterrupted one. An image whose seeds cannot be built
    (unreadable, invalid labels) is reported and left out.

    Inside an initialised ``torch.distributed`` process group (``torchrun``) the run is data
    parallel: each rank builds the seeds of its shard of the images (a ``DistributedSampler``
    split), the model is wrapped in ``DistributedDataParallel`` (gradients averaged over the
    ranks at every step, ``join`` for shards of unequal length), rank 0 writes the checkpoint,
    and every rank returns the same losses (averaged over all images) and failures.

    Args:
        dataset: as :func:`~graphseg.pipelines.segment_dataset`.
        weak: ``"boxes"``, ``"points"``, ``"scribbles"`` or ``"tags"``.
        out: checkpoint path (loadable with :func:`load_affinity`), checked before any image
            is read.
        epochs: total epochs, counting those of a resumed checkpoint.
        lr: Adam learning rate.
        size, radius: working resolution (longer side) and training window radius; the
            window's shape and the loss variant are the learned graph's
            (:class:`~graphseg.pipelines.LearnedGraph`: ``shape``, ``variant``).
        preset: the kind's settings (seeds; default :data:`~graphseg.pipelines.PRESETS`).
        progress: show tqdm bars (seeds, then epochs).
        resume: continue from the checkpoint at ``out`` when it exists.
        seed: seed of the initialisation, the only random draw (the images come in the data
            set's order, the network has no dropout; the global RNG is left as it was): a run
            repeated with the same ops backend, CPU and thread count gives the same checkpoint
            bit for bit (others round differently).
        backbone: None for :data:`AFFINITY_ARCHITECTURE`, or a spec of
            :func:`~graphseg.nn.build_backbone` (``"torchvision:resnet50"``,
            ``"timm:convnext_tiny"``, ``"package.module:callable"``), recorded in the
            checkpoint; a resumed checkpoint must have been trained with the same one.
        backbone_weights: a local state-dict file the network of ``backbone`` starts from
            (nothing is downloaded); read when training starts, not when it resumes.
        targets: pseudo-labels to learn from instead of the weak labels' seeds: image name →
            ``(H, W)`` class ids at the image's size (e.g. the output of
            :func:`~graphseg.pipelines.recipes.box_network.box_network_labels`, 255 =
            unknown). Each is resized to the working resolution (nearest) and its pixels
            within ``band`` working pixels of a border between two classes are left unknown
            (:func:`graphseg.seeds.border_band`): the affinities are learned from the
            confident pixels only, as the thesis learns them from the confident CAM pixels
            (Eq. 3.4–3.5). An image without a label map is reported and left out.
        band: that band's half width (0 keeps every pixel).
        settings: deprecated; use ``preset``.

    Returns:
        :class:`AffinityTraining`: the loss of every epoch run, the failed images and the
        epochs of the saved checkpoint.
    """
    preset = resolve_preset(weak, preset, settings)
    learned = preset.config("a2gnn").learned
    size = learned.size if size is None else size
    radius = learned.training_radius if radius is None else radius
    _checks.check_positive("epochs", epochs, integer=True)
    _checks.check_positive("lr", lr)
    _checks.check_positive("size", size, integer=True)
    _checks.check_positive("radius", radius, integer=True)
    _checks.check_positive("band", band, integer=True, allow_zero=True)
    if targets is not None and not isinstance(targets, Mapping):
        raise ValueError("targets must map image names to (H, W) label maps, got "
                         f"{type(targets).__name__}")
    # the working images are kept for every epoch and the network's activations grow with
    # them: checked for a square image of side `size` before any image is read
    _checks.check_memory(TRAIN_BYTES_PER_PIXEL * size * size,
                         f"training the affinity CNN at size={size}",
                         "lower size (the longer side of the working resolution)")
    _check_backbone(backbone, backbone_weights)
    rank, world = process_group()
    out = output_file(out, "out")
    if resume and out.exists():
        model = load_affinity(out, backbone=backbone)
        found = getattr(model.backbone, "spec", None)
        if found != backbone:  # a checkpoint of a named network, resumed without backbone
            raise ValueError(f"backbone is {_backbone_name(backbone)}, but the checkpoint "
                             f"{out} to resume was trained with {_backbone_name(found)}: give "
                             "that backbone, or another out to start afresh")
    else:
        model = affinity_model(seed=seed, backbone=backbone, backbone_weights=backbone_weights)
    done = int(getattr(model, EPOCH_KEY))
    if done >= epochs:
        return AffinityTraining(epochs=done)
    batches, failures = _seed_batches(dataset, weak, size, preset, progress and rank == 0,
                                      (rank, world), targets, band)
    failures = gather_failures(failures, getattr(dataset, "names", None))
    counts = [len(batches)]
    if world > 1:
        every = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(every, torch.tensor([len(batches)]))
        counts = [int(c) for c in every]
    if not any(counts):
        reason = failures[0].reason if failures else "the data set is empty"
        raise ValueError(f"no image gave seeds to train on ({len(failures)} failed; first: "
                         f"{reason})")
    if not all(counts):
        raise ValueError(f"the shards of ranks {[r for r, c in enumerate(counts) if not c]} hold "
                         f"no image with seeds ({sum(counts)} images for {world} processes): "
                         "run fewer processes")
    network = DistributedDataParallel(model) if world > 1 else model
    history: list[float] = []
    bar = tqdm(range(done, epochs), desc=f"train-affinity {weak}",
               disable=not progress or rank != 0)
    for epoch in bar:
        loss = train_affinity(network, batches, epochs=1, lr=lr, radius=radius,
                              shape=learned.shape, variant=learned.variant,
                              progress=False)[0]
        if world > 1:  # the mean over every image of every rank
            total = torch.tensor([loss * len(batches)], dtype=torch.float64)
            dist.all_reduce(total)
            loss = float(total) / sum(counts)
        history.append(loss)
        getattr(model, EPOCH_KEY).fill_(epoch + 1)
        if rank == 0:
            with atomic_path(out) as temporary:
                save_checkpoint(model, temporary)
        bar.set_postfix(loss=f"{loss:.4f}")
    if world > 1:
        dist.barrier()  # the checkpoint is complete before any rank returns
    return AffinityTraining(history=history, failures=failures, epochs=epochs)
