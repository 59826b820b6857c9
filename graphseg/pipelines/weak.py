"""Weak labels to masks: one function per weak-label kind and method, and a data-set runner.

Each pipeline turns one image and its weak labels into a label map of class ids:

- ``"boxes"`` — seeds M_B from GrabCut in each box (thesis Eq. 3.2–3.3), then

  - ``"grabcut"``: GrabCut's own foreground (the peer of the box protocol);
  - ``"harmonic"``: Grady's random walker on the RGB pixel graph from M_B, restricted to the
    boxes;
  - ``"a2gnn"``: A²GNN trained on the image's superpixel graph from M_B with the MP loss and
    consistency checking (thesis §3.4), the losses read through a pixel grid of stride 4;
  - ``"ial"``: IAL's EM loop (:func:`graphseg.pipelines.ial.ial_em`) from M_B;
  - ``"pce-potts"``: a network trained on M_B with partial cross-entropy + Potts loss
    (:func:`graphseg.pipelines.regularized.fit_regularized`).

- ``"points"`` / ``"scribbles"`` — the clicks drawn as disks, or the scribbles drawn as strokes,
  expanded to whole superpixels (thesis §3.6.1: M_P, M_S), then ``"harmonic"``,
  ``"random-walk"`` (label spreading of the seeds over the RGB pixel graph), ``"a2gnn"``
  (A²GNN on the superpixel graph), ``"ial"`` (IAL's EM loop) or ``"pce-potts"`` (partial
  cross-entropy + Potts training).

- ``"tags"`` — image-level class tags with class activation maps supplied by the user
  (``labels["cams"]``): ``"random-walk"`` is AffinityNet's random walk of the CAMs (preset
  ``"a2gnn"``); ``"a2gnn"`` trains A²GNN on the superpixel graph from the CAMs' confident
  seeds M'_I and fuses its probabilities with that random walk 1:3 (thesis §3.6, DESIGN §6).

Every method but ``"grabcut"`` ends with the same two optional steps of its kind's settings:
the probabilities are fused with a colour model of the seeds
(:func:`graphseg.propagate.fuse_appearance`, ``colour_weight``) and refined by the windowed
dense CRF (``crf``).

With a trained affinity CNN (``checkpoint=``, from :func:`train_affinity_dataset`), ``"a2gnn"``
runs on the learned pixel graph of the image at a working resolution instead of the superpixel
graph (thesis §3.3.3–3.4), and the random walk of ``"tags"`` on that graph.

One set of settings per weak kind (:data:`SETTINGS`), the same for every image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from graphseg import _checks
from graphseg._io import (
    atomic_path,
    check_png_classes,
    load_state,
    output_file,
    output_folder,
    write_label_png,
)
from graphseg.figures import save_result_figure
from graphseg.graph.superpixel import superpixel_graph
from graphseg.graph.window import pixel_graph
from graphseg.nn.affinity import AffinityCNN
from graphseg.nn.backbone import ResNetBackbone
from graphseg.nn.train import fit_a2gnn, resample_seeds, save_checkpoint, train_affinity
from graphseg.pipelines._runner import (
    Failure,
    check_shard,
    for_each_sample,
    gather_failures,
)
from graphseg.pipelines.ial import IALConfig, ial_em, single_image
from graphseg.pipelines.regularized import RegularizedConfig, fit_regularized
from graphseg.propagate import crf, harmonic, label_spreading, random_walk
from graphseg.propagate.appearance import colour_posterior, fuse_appearance
from graphseg.seeds import (
    add_background,
    box_interior,
    check_cam_layout,
    expand_seeds,
    grabcut_seeds,
    normalize_cam,
    rasterize_points,
    rasterize_scribbles,
    topk_seeds,
)

__all__ = ["AFFINITY_ARCHITECTURE", "DEFAULT_METHOD", "LABEL_KEYS", "METHODS", "SETTINGS",
           "AffinityTraining", "Failure", "Settings", "affinity_model", "load_affinity",
           "segment", "segment_dataset", "train_affinity_dataset", "weak_seeds"]

UNKNOWN = 255
_SPARSE_METHODS = ("harmonic", "random-walk", "a2gnn", "ial", "pce-potts")
METHODS = {
    "boxes": ("grabcut", "harmonic", "a2gnn", "ial", "pce-potts"),
    "points": _SPARSE_METHODS,
    "scribbles": _SPARSE_METHODS,
    "tags": ("a2gnn", "random-walk"),
}
DEFAULT_METHOD = {"boxes": "grabcut", "points": "harmonic", "scribbles": "harmonic",
                  "tags": "a2gnn"}
LABEL_KEYS = {"boxes": ("boxes",), "points": ("points",), "scribbles": ("scribbles",),
              "tags": ("tags", "cams")}
"""The entries of ``labels`` that each weak kind reads (and the only ones)."""


@dataclass(frozen=True)
class Settings:
    """The settings of one weak-label kind (none is tuned per image)."""

    box_context: float | None = 0.1
    """Window of GrabCut around each box, as a fraction of the box's sides (None = the whole
    image; :func:`graphseg.seeds.grabcut_seeds`)."""
    point_radius: int = 5
    """Disk radius of each click, in pixels (the peer's radius on voc14)."""
    n_segments: int = 600
    """SLIC superpixels for the expansion and the superpixel graph."""
    graph_radius: int = 2
    """Window radius of the RGB pixel graph."""
    sigma_xy: float = 2.0
    sigma_rgb: float = 0.1
    """Position and colour bandwidths of the pixel graph (colour in [0, 1])."""
    spreading_steps: int = 200
    """Label spreading iterations (``random-walk``)."""
    epochs: int = 100
    hidden: int = 64
    """A²GNN epochs (both stages) and width."""
    grid_stride: int = 4
    """Stride of the pixel grid through which A²GNN's losses read a superpixel graph."""
    ial: IALConfig = IALConfig()
    """IAL's EM loop."""
    regularized: RegularizedConfig = RegularizedConfig()
    """Partial cross-entropy + Potts training."""
    affinity_size: int = 128
    """Longer side of the working resolution of the learned graph (training and inference)."""
    affinity_radius: int = 4
    """Square window radius of the learned graph (official code: 4 for boxes and scribbles,
    3 for points and image labels)."""
    scribble_radius: int = 1
    """Stroke half-width of each scribble, in pixels."""
    colour_weight: float = 0.0
    """Exponent of the seeds' colour posterior fused with the probabilities (0 = off)."""
    crf: str | None = None
    """CRF preset run on the final probabilities (None = off)."""
    walk_weight: float = 3.0
    """Weight of the random walk against A²GNN's probabilities for image labels (thesis: 1:3)."""
    walk_size: int = 128
    """Longer side of the RGB graph of the CAMs' random walk (no checkpoint; smaller images
    keep their size)."""
    cam_fraction: float = 0.4
    cam_background: float = 0.8
    """The CAM seeds M'_I: each class's top share of its argmax pixels, and background where
    its score (:func:`graphseg.seeds.add_background`, γ = 4) exceeds the threshold."""


_SPARSE = {"sigma_rgb": 0.05, "colour_weight": 0.3, "crf": "a2gnn"}
SETTINGS = {"boxes": Settings(n_segments=1000, colour_weight=1.0),
            "points": Settings(affinity_radius=3, **_SPARSE),
            "scribbles": Settings(**_SPARSE),
            "tags": Settings(affinity_radius=3, crf="a2gnn")}

AFFINITY_ARCHITECTURE = {"widths": (32, 32, 64), "stem_width": 16, "stride": 4,
                         "reductions": (32, 32, 64)}
"""The affinity CNN that :func:`train_affinity_dataset` trains and :func:`load_affinity`
rebuilds: a small :class:`~graphseg.nn.ResNetBackbone` (stride 4) trainable on CPU."""
TRAIN_BYTES_PER_PIXEL = 2048
"""Peak memory of one training step of :data:`AFFINITY_ARCHITECTURE` per working pixel
(measured: 1.2–1.4 KiB at 256² and 384², 2.6 KiB at 128² with the fixed costs)."""
EPOCH_KEY = "epochs_trained"
"""State-dict entry (an int64 scalar) holding the epochs a checkpoint has been trained for."""


def _check_method(weak: str, method: str | None) -> str:
    _checks.check_choice("weak", weak, tuple(METHODS))
    method = DEFAULT_METHOD[weak] if method is None else method
    _checks.check_choice("method", method, METHODS[weak])
    return method


def _region_a2gnn(image: Tensor, local: Tensor, num_classes: int, settings: Settings,
                  boxes=None, seed: int = 0, graph=None) -> Tensor:
    """A²GNN on the superpixel graph from seeds of classes 0..k-1; returns ``(1, k, H, W)``
    probabilities."""
    if graph is None:
        graph = superpixel_graph(image, n_segments=settings.n_segments)
    stride = settings.grid_stride
    offset = stride // 2
    cells = graph.labels[:, offset::stride, offset::stride]
    grid_seeds = local[:, offset::stride, offset::stride]
    grid_boxes = None
    if boxes is not None:
        height, width = cells.shape[1:]
        grid_boxes = [[{"cls": b["cls"],
                        "box": [min(width - 1, b["box"][0] // stride),
                                min(height - 1, b["box"][1] // stride),
                                min(width - 1, b["box"][2] // stride),
                                min(height - 1, b["box"][3] // stride)]}
                       for b in boxes]]
    probs = fit_a2gnn(graph.to_pyg(), grid_seeds, boxes=grid_boxes, pixels=cells,
                      num_classes=num_classes, epochs=settings.epochs, hidden=settings.hidden,
                      seed=seed)
    return graph.unpool(probs)


def _working_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the longer side ``size`` and the aspect ratio kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_image(image: Tensor, size: int) -> Tensor:
    target = _working_size(*image.shape[2:], size)
    if target == tuple(image.shape[2:]):
        return image
    return F.interpolate(image, size=target, mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


def _learned_graph(image: Tensor, model: AffinityCNN, settings: Settings):
    """The learned pixel graph of the image at the working resolution."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return model.to_graph(_resize_image(image, settings.affinity_size).to(device),
                              radius=settings.affinity_radius, shape="square")


def _learned_a2gnn(image: Tensor, local: Tensor, num_classes: int, model: AffinityCNN,
                   settings: Settings, boxes=None, seed: int = 0) -> Tensor:
    """A²GNN on the learned pixel graph of the image at the working resolution; returns
    ``(1, k, H, W)`` probabilities at image resolution."""
    height, width = image.shape[2:]
    graph = _learned_graph(image, model, settings)
    rows, cols = graph.image_size
    grid_boxes = None
    if boxes is not None:
        grid_boxes = [[{"cls": b["cls"],
                        "box": [min(cols - 1, b["box"][0] * cols // width),
                                min(rows - 1, b["box"][1] * rows // height),
                                min(cols - 1, b["box"][2] * cols // width),
                                min(rows - 1, b["box"][3] * rows // height)]}
                       for b in boxes]]
    probs = fit_a2gnn(graph, resample_seeds(local, (rows, cols)).to(graph.weight.device),
                      boxes=grid_boxes, num_classes=num_classes, epochs=settings.epochs,
                      hidden=settings.hidden, seed=seed)
    return F.interpolate(probs, size=(height, width), mode="bilinear",
                         align_corners=False).cpu()


def _rgb_graph(image: Tensor, settings: Settings):
    return pixel_graph(image, radius=settings.graph_radius, sigma_xy=settings.sigma_xy,
                       sigma_rgb=settings.sigma_rgb)


def _probabilities(image: Tensor, local: Tensor, num_classes: int, method: str,
                   settings: Settings, *, model: AffinityCNN | None = None, boxes=None,
                   regions=None, details: dict | None = None) -> Tensor:
    """``(1, k, H, W)`` probabilities over the seeded classes 0..k-1 of ``local``."""
    if method == "harmonic":
        return harmonic(_rgb_graph(image, settings), local, num_classes=num_classes)
    if method == "random-walk":
        scores = label_spreading(_rgb_graph(image, settings), local, num_classes=num_classes,
                                 num_steps=settings.spreading_steps).clamp_min(0)
        return scores / scores.sum(1, keepdim=True).clamp_min(1e-12)
    if method == "ial":
        result = ial_em(image, local, num_classes=num_classes, config=settings.ial)
        if details is not None:
            details["ial_reports"] = result.reports
        return result.probs[None]
    if method == "pce-potts":
        return fit_regularized(image, local, num_classes=num_classes,
                               config=settings.regularized)[None]
    if model is not None:
        return _learned_a2gnn(image, local, num_classes, model, settings, boxes=boxes)
    return _region_a2gnn(image, local, num_classes, settings, boxes=boxes, graph=regions)


def _finish(image: Tensor, local: Tensor, probs: Tensor, settings: Settings) -> Tensor:
    """The colour model fusion and the CRF of ``settings`` on ``(1, k, H, W)`` probabilities."""
    if settings.colour_weight > 0:
        posterior = colour_posterior(image, local, num_classes=probs.shape[1])
        probs = fuse_appearance(probs, posterior, weight=settings.colour_weight)
    if settings.crf is not None:
        probs = crf(image, probs, preset=settings.crf)
    return probs


def _present(seeds: Tensor) -> tuple[Tensor, Tensor]:
    """The classes with seeds and the seed map renumbered 0..k-1 (255 kept); any class id,
    255 and beyond included in the ids of the classes (a seed map's 255 is unknown)."""
    known = seeds != UNKNOWN
    present = torch.unique(seeds[known])
    if len(present) > UNKNOWN:
        raise ValueError(f"the seeds hold {len(present)} classes; at most {UNKNOWN} classes "
                         f"can be seeded in one image ({UNKNOWN} marks unknown pixels)")
    local = torch.searchsorted(present, torch.where(known, seeds, 0).contiguous())
    return present, torch.where(known, local, UNKNOWN)


def _propagate_seeds(image: Tensor, seeds: Tensor, method: str, settings: Settings, *,
                     model=None, boxes=None, regions=None, details=None) -> Tensor:
    """Class ids from a ``(1, H, W)`` seed map: the method's probabilities over the seeded
    classes, finished by :func:`_finish`."""
    present, local = _present(seeds)
    if len(present) == 1:
        return torch.full(seeds.shape[1:], int(present[0]), dtype=torch.int64)
    if boxes is not None:
        index = {int(c): i for i, c in enumerate(present.tolist())}
        boxes = [{"cls": index[b["cls"]], "box": b["box"]} for b in boxes if b["cls"] in index]
    probs = _probabilities(image, local, len(present), method, settings, model=model,
                           boxes=boxes, regions=regions, details=details)
    return present[_finish(image, local, probs, settings).argmax(1)[0].cpu()]


def _check_labels(labels, weak: str) -> None:
    for key in LABEL_KEYS[weak]:
        if not isinstance(labels, dict) or labels.get(key) is None:
            raise ValueError(f"labels must be a dict with a {key!r} entry for weak={weak!r}, "
                             f"got {_checks._describe(labels)}")


def _cams(labels: dict, height: int, width: int, num_classes: int | None) -> Tensor:
    """The ``(1, C, H, W)`` foreground CAMs of ``labels["cams"]`` (channel c-1 = class c),
    resized to the image, kept for the tagged classes only and max-normalised."""
    cams = check_cam_layout(labels["cams"], height, width, num_classes=num_classes,
                            name="labels['cams']")[None]
    tags = torch.zeros(1, cams.shape[1], dtype=torch.bool)
    for cls in labels["tags"]:
        tags[0, _checks.check_class("labels['tags']", cls, cams.shape[1] + 1, lowest=1) - 1] = True
    cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
    return normalize_cam(cams.clamp_min(0), tags=tags)


def _from_cams(image: Tensor, labels: dict, method: str, settings: Settings,
               num_classes: int | None, model: AffinityCNN | None,
               regions=None, details: dict | None = None) -> Tensor:
    """Class ids from image tags and their CAMs: the random walk of the CAMs, alone or fused
    with A²GNN trained on the CAM seeds M'_I."""
    height, width = image.shape[2:]
    cams = _cams(labels, height, width, num_classes)
    graph = (_learned_graph(image, model, settings) if model is not None
             else _rgb_graph(_resize_image(image, min(settings.walk_size, max(height, width))),
                             settings))
    walk = random_walk(graph, cams.to(graph.weight.device), preset="a2gnn").cpu()
    walk = walk / walk.sum(1, keepdim=True).clamp_min(1e-12)
    probs = walk
    seeds = topk_seeds(add_background(cams), fraction=settings.cam_fraction,
                       background_threshold=settings.cam_background)
    if details is not None:
        details["seeds"] = seeds[0]
    if method == "a2gnn":
        present, local = _present(seeds)
        if len(present) > 1:
            gnn = _probabilities(image, local, len(present), method, settings, model=model,
                                 regions=regions)
            probs = settings.walk_weight * walk
            probs[:, present] += gnn
            probs = probs / probs.sum(1, keepdim=True)
    if settings.crf is not None:
        probs = crf(image, probs, preset=settings.crf)
    return probs.argmax(1)[0]


def _seeds(image: Tensor, labels: dict, weak: str, num_classes: int | None,
           settings: Settings):
    """The (1, H, W) seed map of one image, and its superpixel graph for points and scribbles
    (None for boxes)."""
    height, width = image.shape[2:]
    if weak == "boxes":
        boxes = labels["boxes"]
        _checks.check_boxes([boxes], 1, height, width, num_classes=num_classes)
        return grabcut_seeds(image, [boxes], context=settings.box_context,
                             num_classes=num_classes), None
    marks = labels[weak]
    if not marks:
        raise ValueError(f"labels[{weak!r}] is empty: at least one is needed")
    if weak == "points":
        seeds = rasterize_points([marks], height, width, radius=settings.point_radius,
                                 num_classes=num_classes)
    else:
        seeds = rasterize_scribbles([marks], height, width, radius=settings.scribble_radius,
                                    num_classes=num_classes)
    regions = superpixel_graph(image, n_segments=settings.n_segments)
    return expand_seeds(seeds, regions), regions


def weak_seeds(image, labels: dict, *, weak: str, num_classes: int | None = None,
               settings: Settings | None = None) -> Tensor:
    """The seed map that :func:`segment` and :func:`train_affinity_dataset` build from weak
    labels.

    - boxes: GrabCut seeds M_B (thesis Eq. 3.2–3.3, :func:`graphseg.seeds.grabcut_seeds`);
    - points / scribbles: disks of ``settings.point_radius`` / strokes of
      ``settings.scribble_radius`` expanded to SLIC superpixels of ``settings.n_segments``
      (thesis §3.6.1, :func:`graphseg.seeds.expand_seeds`);
    - tags: the CAM seeds M'_I of ``labels["cams"]`` (:func:`graphseg.seeds.topk_seeds`).

    Args:
        image, labels, weak, num_classes, settings: as :func:`segment`.

    Returns:
        ``(1, H, W)`` int64 seeds, 255 = unknown.
    """
    _checks.check_choice("weak", weak, tuple(METHODS))
    image = single_image(image)
    _check_labels(labels, weak)
    settings = SETTINGS[weak] if settings is None else settings
    if weak == "tags":
        cams = _cams(labels, *image.shape[2:], num_classes)
        return topk_seeds(add_background(cams), fraction=settings.cam_fraction,
                          background_threshold=settings.cam_background)
    return _seeds(image, labels, weak, num_classes, settings)[0]


def affinity_model(*, seed: int = 0) -> AffinityCNN:
    """A fresh affinity CNN of :data:`AFFINITY_ARCHITECTURE`, initialised from ``seed`` (the
    global RNG is left as it was), with an ``epochs_trained`` int64 buffer."""
    arch = AFFINITY_ARCHITECTURE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AffinityCNN(ResNetBackbone(widths=arch["widths"], stem_width=arch["stem_width"],
                                           stride=arch["stride"]),
                            reductions=arch["reductions"])
    model.register_buffer(EPOCH_KEY, torch.zeros((), dtype=torch.int64))
    model.eval()
    return model


def load_affinity(path: str | os.PathLike, *,
                  map_location: str | torch.device = "cpu") -> AffinityCNN:
    """Loads a checkpoint of :func:`train_affinity_dataset` into :func:`affinity_model` with
    ``torch.load(..., weights_only=True)`` (a checkpoint cannot run code). A plain state dict
    of an :data:`AFFINITY_ARCHITECTURE` model without ``epochs_trained`` loads as 0 epochs."""
    state = load_state(path, "graphseg affinity checkpoint (a state dict of train-affinity)",
                       map_location=map_location)
    state.setdefault(EPOCH_KEY, torch.zeros((), dtype=torch.int64))
    model = affinity_model()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {os.fspath(path)} does not fit AFFINITY_ARCHITECTURE "
                         f"{AFFINITY_ARCHITECTURE}: {error}") from error
    return model.to(map_location).eval()


def _affinity(checkpoint, weak: str, method: str) -> AffinityCNN | None:
    if checkpoint is None:
        return None
    if method != "a2gnn" and weak != "tags":
        raise ValueError("checkpoint is only used by method 'a2gnn' and weak 'tags', got "
                         f"method {method!r}")
    if isinstance(checkpoint, AffinityCNN):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return load_affinity(checkpoint)
    raise TypeError("checkpoint must be a path or an AffinityCNN, got "
                    f"{type(checkpoint).__name__}")


def segment(image, labels: dict, *, weak: str, method: str | None = None,
            num_classes: int | None = None, settings: Settings | None = None,
            details: dict | None = None, checkpoint=None) -> Tensor:
    """Segments one image from its weak labels.

    Args:
        image: one image: ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1], or any image
            form of docs/images.md.
        labels: the image's weak labels; only the entries of ``weak`` (:data:`LABEL_KEYS`)
            are read:

            - ``{"boxes": [{"cls", "box": [x0, y0, x1, y1]}]}`` (inclusive pixel bounds);
            - ``{"points": [{"x", "y", "cls"}]}`` (class 0 = background);
            - ``{"scribbles": [{"cls", "points": [[x, y], ...]}]}`` (polylines);
            - ``{"tags": [c, ...], "cams": (C, h, w)}``: the foreground classes present and
              class activation maps, channel c-1 for class c (C = ``num_classes`` - 1 when
              given), at any resolution (resized bilinearly), non-negative.

        weak: ``"boxes"``, ``"points"``, ``"scribbles"`` or ``"tags"``.
        method: see :data:`METHODS` (default: :data:`DEFAULT_METHOD`).
        num_classes: when given, label classes must be below it.
        settings: overrides :data:`SETTINGS` ``[weak]``.
        details: an optional dict that receives what the method reports: ``"seeds"``, the
            ``(H, W)`` seed map it started from (255 = unknown; for tags, the confident CAM
            seeds M'_I), and ``"ial_reports"``, IAL's per-round
            :class:`~graphseg.pipelines.ial.RoundReport` list.
        checkpoint: a trained :class:`~graphseg.nn.AffinityCNN`, or the path of a checkpoint
            of :func:`train_affinity_dataset`; method ``"a2gnn"`` then trains on the learned
            pixel graph of the image resized to ``settings.affinity_size`` (square window of
            ``settings.affinity_radius``) and upsamples its probabilities bilinearly, and the
            random walk of ``"tags"`` runs on that graph. For ``"a2gnn"`` and ``"tags"`` only.

    Returns:
        ``(H, W)`` int64 class ids.
    """
    method = _check_method(weak, method)
    model = _affinity(checkpoint, weak, method)
    image = single_image(image)
    _check_labels(labels, weak)
    settings = SETTINGS[weak] if settings is None else settings
    if weak == "tags":
        return _from_cams(image, labels, method, settings, num_classes, model, details=details)
    seeds, regions = _seeds(image, labels, weak, num_classes, settings)
    if details is not None:
        details["seeds"] = seeds[0]
    if weak != "boxes":
        return _propagate_seeds(image, seeds, method, settings, model=model, regions=regions,
                                details=details)
    if method == "grabcut":
        return torch.where(seeds[0] == UNKNOWN, 0, seeds[0])
    boxes = labels["boxes"]
    pred = _propagate_seeds(image, seeds, method, settings, model=model,
                            boxes=boxes if method == "a2gnn" else None, details=details)
    return torch.where(box_interior([boxes], *image.shape[2:])[0], pred, 0)


def _sample_labels(sample: dict, weak: str) -> dict:
    """The entries of a data-set sample that ``weak`` reads."""
    return {key: sample.get(key) for key in LABEL_KEYS[weak]}


def segment_dataset(dataset, out_dir: str | os.PathLike, *, weak: str,
                    method: str | None = None, resume: bool = False, progress: bool = True,
                    settings: Settings | None = None,
                    on_result: Callable[[str, Tensor, float], None] | None = None,
                    checkpoint=None, shard: tuple[int, int] = (0, 1),
                    figures: str | os.PathLike | None = None) -> list[Failure]:
    """Segments every image of a data set and writes ``OUT/NAME.png`` (uint8 class ids).

    Each file is written atomically (a temporary file renamed into place), so an interrupted
    run leaves no partial PNG (and the temporaries of a killed run are removed by the next);
    ``resume`` skips images whose PNG (and figure, when asked) reads back whole. Class ids must
    fit a label PNG (``dataset.num_classes`` <= 255, checked before the first image). An image
    that fails
    (unreadable, invalid labels) is reported and the others are still processed. Every image
    is segmented on its own with fixed seeds, so a data set split into shards (one process per
    shard, e.g. the ranks of ``torchrun``) writes the same files as a single run.

    Args:
        dataset: a :class:`graphseg.data.SegmentationFolder` (or any sequence of samples with
            ``name``, ``image`` and the ``weak`` labels); only ``weak`` labels are read.
        out_dir: output folder (created).
        weak, method, settings: as :func:`segment`.
        checkpoint: as :func:`segment` (a path is loaded once, before the first image).
        resume: skip images whose outputs are all written and readable.
        progress: show a tqdm bar.
        on_result: called as ``on_result(name, labels, seconds)`` after each image.
        shard: ``(index, count)``: process only the images ``index, index + count, ...`` (the
            split of a non-shuffling ``DistributedSampler``, without its padding).
        figures: a folder that receives ``NAME.png``, the image, its seeds and the result side
            by side (:func:`graphseg.figures.save_result_figure`).

    Returns:
        The failures of this shard, in order.
    """
    method = _check_method(weak, method)
    check_shard(shard)
    model = _affinity(checkpoint, weak, method)
    num_classes = getattr(dataset, "num_classes", None)
    if num_classes is not None:
        check_png_classes(num_classes, "the data set's num_classes")
    out = output_folder(out_dir, "out_dir")
    if figures is not None:
        output_folder(figures, "figures")

    def process(name: str, sample: dict) -> None:
        start = time.perf_counter()
        found: dict = {}
        labels = segment(sample["image"], _sample_labels(sample, weak), weak=weak,
                         method=method, num_classes=num_classes, settings=settings,
                         checkpoint=model, details=found)
        seconds = time.perf_counter() - start
        write_label_png(out / f"{name}.png", labels)
        if figures is not None:
            save_result_figure(Path(figures) / f"{name}.png", sample["image"], found["seeds"],
                               labels, title=f"{name}: {weak}/{method}")
        if on_result is not None:
            on_result(name, labels, seconds)

    def outputs(name: str) -> list[Path]:
        return [out / f"{name}.png", *([] if figures is None else [Path(figures) / f"{name}.png"])]

    return for_each_sample(dataset, process, desc=f"segment {weak}/{method}", shard=shard,
                           progress=progress, outputs=outputs, resume=resume)


@dataclass(frozen=True)
class AffinityTraining:
    """What :func:`train_affinity_dataset` did."""

    history: list[float] = field(default_factory=list)
    """Mean loss of each epoch run by this call (a resumed run lists only its new epochs)."""
    failures: list[Failure] = field(default_factory=list)
    """Images left out because their seeds could not be built."""
    epochs: int = 0
    """Epochs the saved checkpoint has been trained for."""


def _seed_batches(dataset, weak: str, size: int, settings: Settings | None, progress: bool,
                  shard: tuple[int, int]):
    """(image, seeds) pairs of a shard at the working resolution, and the images that
    failed."""
    batches = []
    num_classes = getattr(dataset, "num_classes", None)

    def process(name: str, sample: dict) -> None:
        image = single_image(sample["image"])
        seeds = weak_seeds(image, _sample_labels(sample, weak), weak=weak,
                           num_classes=num_classes, settings=settings)
        small = _resize_image(image, size)
        batches.append((small, resample_seeds(seeds, tuple(small.shape[2:]))))

    failures = for_each_sample(dataset, process, desc=f"seeds {weak}", shard=shard,
                               progress=progress)
    return batches, failures


def _process_group() -> tuple[int, int]:
    """(rank, world size) of the default ``torch.distributed`` process group, or (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_affinity_dataset(dataset, *, weak: str, out: str | os.PathLike, epochs: int = 20,
                           lr: float = 3e-3, size: int = 128, settings: Settings | None = None,
                           progress: bool = True, resume: bool = False,
                           seed: int = 0) -> AffinityTraining:
    """Trains the affinity CNN of :data:`AFFINITY_ARCHITECTURE` on the seeds of a data set's
    weak labels (thesis §3.3.3) and saves it to ``out``.

    Every image's seeds come from :func:`weak_seeds`; image and seeds are resized to a working
    resolution whose longer side is ``size`` (seeds nearest), and
    :func:`graphseg.nn.train_affinity` trains on them one image per batch with Adam, on the
    square window of ``settings.affinity_radius`` that :func:`segment` uses. After every epoch
    the state dict (with the epoch count as its ``epochs_trained`` entry) is written atomically
    to ``out``. Each epoch starts a fresh Adam, so a run resumed from epoch k continues exactly
    as an uninterrupted one. An image whose seeds cannot be built (unreadable, invalid labels)
    is reported and left out.

    Inside an initialised ``torch.distributed`` process group (``torchrun``) the run is data
    parallel: each rank builds the seeds of its shard of the images (a ``DistributedSampler``
    split), the model is wrapped in ``DistributedDataParallel`` (gradients averaged over the
    ranks at every step, ``join`` for shards of unequal length), rank 0 writes the checkpoint,
    and every rank returns the same losses (averaged over all images) and failures.

    Args:
        dataset: as :func:`segment_dataset`.
        weak: ``"boxes"``, ``"points"``, ``"scribbles"`` or ``"tags"``.
        out: checkpoint path (loadable with :func:`load_affinity`).
        epochs: total epochs, counting those of a resumed checkpoint.
        lr: Adam learning rate.
        size: longer side of the working resolution (use the same
            ``settings.affinity_size`` in :func:`segment`).
        settings: overrides :data:`SETTINGS` ``[weak]`` (seeds and window).
        progress: show tqdm bars (seeds, then epochs).
        resume: continue from the checkpoint at ``out`` when it exists.
        seed: seed of the initialisation, the only random draw (the images come in the data
            set's order, the network has no dropout; the global RNG is left as it was): a run
            repeated with the same ops backend, CPU and thread count gives the same checkpoint
            bit for bit (others round differently).

    Returns:
        :class:`AffinityTraining`: the loss of every epoch run, the failed images and the
        epochs of the saved checkpoint.
    """
    _checks.check_choice("weak", weak, tuple(METHODS))
    _checks.check_positive("epochs", epochs, integer=True)
    _checks.check_positive("lr", lr)
    _checks.check_positive("size", size, integer=True)
    # the working images are kept for every epoch and the network's activations grow with
    # them: checked for a square image of side `size` before any image is read
    _checks.check_memory(TRAIN_BYTES_PER_PIXEL * size * size,
                         f"training the affinity CNN at size={size}",
                         "lower size (the longer side of the working resolution)")
    settings = SETTINGS[weak] if settings is None else settings
    rank, world = _process_group()
    out = output_file(out, "out")
    model = load_affinity(out) if resume and out.exists() else affinity_model(seed=seed)
    done = int(getattr(model, EPOCH_KEY))
    if done >= epochs:
        return AffinityTraining(epochs=done)
    batches, failures = _seed_batches(dataset, weak, size, settings, progress and rank == 0,
                                      (rank, world))
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
        loss = train_affinity(network, batches, epochs=1, lr=lr,
                              radius=settings.affinity_radius, shape="square",
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
