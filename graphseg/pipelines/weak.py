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

- ``"points"`` — the clicks drawn as disks, expanded to whole superpixels (thesis §3.6.1), then
  ``"harmonic"``, ``"random-walk"`` (label spreading of the seeds over the RGB pixel graph),
  ``"a2gnn"`` (A²GNN on the superpixel graph), ``"ial"`` (IAL's EM loop) or ``"pce-potts"``
  (partial cross-entropy + Potts training).

One set of settings per weak kind (:data:`SETTINGS`), the same for every image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from graphseg import _checks
from graphseg._io import atomic_path
from graphseg.graph.superpixel import superpixel_graph
from graphseg.graph.window import pixel_graph
from graphseg.nn.train import fit_a2gnn
from graphseg.pipelines.ial import IALConfig, ial_em
from graphseg.pipelines.regularized import RegularizedConfig, fit_regularized
from graphseg.propagate import harmonic, label_spreading
from graphseg.seeds import box_interior, expand_seeds, grabcut_seeds, rasterize_points

__all__ = ["METHODS", "SETTINGS", "Failure", "Settings", "segment", "segment_dataset"]

UNKNOWN = 255
METHODS = {
    "boxes": ("grabcut", "harmonic", "a2gnn", "ial", "pce-potts"),
    "points": ("harmonic", "random-walk", "a2gnn", "ial", "pce-potts"),
}
DEFAULT_METHOD = {"boxes": "grabcut", "points": "harmonic"}


@dataclass(frozen=True)
class Settings:
    """The settings of one weak-label kind (none is tuned per image)."""

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


SETTINGS = {"boxes": Settings(n_segments=1000), "points": Settings()}


def _one_image(image) -> Tensor:
    image = _checks.as_image_batch(image, "image", channels=3)
    if image.shape[0] != 1:
        raise ValueError(f"image must be a single image, got a batch of {image.shape[0]}")
    return image


def _check_method(weak: str, method: str | None) -> str:
    _checks.check_choice("weak", weak, tuple(METHODS))
    method = DEFAULT_METHOD[weak] if method is None else method
    _checks.check_choice("method", method, METHODS[weak])
    return method


def _present(seeds: Tensor) -> tuple[Tensor, Tensor]:
    """The classes with seeds and the seed map renumbered 0..k-1 (255 kept)."""
    present = torch.unique(seeds[seeds != UNKNOWN])
    remap = torch.full((256,), UNKNOWN, dtype=torch.int64)
    remap[present] = torch.arange(len(present))
    return present, remap[seeds]


def _region_a2gnn(image: Tensor, seeds: Tensor, settings: Settings, boxes=None,
                  seed: int = 0) -> Tensor:
    """A²GNN on the superpixel graph; returns per-pixel class ids among the seeded classes."""
    present, local = _present(seeds)
    graph = superpixel_graph(image, n_segments=settings.n_segments)
    stride = settings.grid_stride
    offset = stride // 2
    cells = graph.labels[:, offset::stride, offset::stride]
    grid_seeds = local[:, offset::stride, offset::stride]
    grid_boxes = None
    if boxes is not None:
        height, width = cells.shape[1:]
        index = {int(c): i for i, c in enumerate(present.tolist())}
        grid_boxes = [[{"cls": index[b["cls"]],
                        "box": [min(width - 1, b["box"][0] // stride),
                                min(height - 1, b["box"][1] // stride),
                                min(width - 1, b["box"][2] // stride),
                                min(height - 1, b["box"][3] // stride)]}
                       for b in boxes if b["cls"] in index]]
    probs = fit_a2gnn(graph.to_pyg(), grid_seeds, boxes=grid_boxes, pixels=cells,
                      num_classes=len(present), epochs=settings.epochs, hidden=settings.hidden,
                      seed=seed)
    return present[graph.unpool(probs).argmax(1)[0]]


def _trained(image: Tensor, seeds: Tensor, method: str, settings: Settings,
             details: dict | None) -> Tensor:
    """IAL's EM loop or partial cross-entropy + Potts training over the seeded classes;
    returns per-pixel class ids."""
    present, local = _present(seeds)
    if len(present) == 1:
        return torch.full(seeds.shape[1:], int(present[0]), dtype=torch.int64)
    if method == "ial":
        result = ial_em(image, local, num_classes=len(present), config=settings.ial)
        if details is not None:
            details["ial_reports"] = result.reports
        labels = result.labels
    else:
        labels = fit_regularized(image, local, num_classes=len(present),
                                 config=settings.regularized).argmax(0)
    return present[labels]


def _rgb_graph(image: Tensor, settings: Settings):
    return pixel_graph(image, radius=settings.graph_radius, sigma_xy=settings.sigma_xy,
                       sigma_rgb=settings.sigma_rgb)


def _propagate(image: Tensor, seeds: Tensor, method: str, settings: Settings) -> Tensor:
    """Class ids from a (1, H, W) seed map by harmonic solves or label spreading."""
    present, local = _present(seeds)
    if len(present) == 1:
        return torch.full(seeds.shape[1:], int(present[0]), dtype=torch.int64)
    graph = _rgb_graph(image, settings)
    if method == "harmonic":
        probs = harmonic(graph, local, num_classes=len(present))
    else:
        probs = label_spreading(graph, local, num_classes=len(present),
                                num_steps=settings.spreading_steps)
    return present[probs.argmax(1)[0]]


def segment(image, labels: dict, *, weak: str, method: str | None = None,
            num_classes: int | None = None, settings: Settings | None = None,
            details: dict | None = None) -> Tensor:
    """Segments one image from its weak labels.

    Args:
        image: ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1] or an ``(H, W, 3)`` uint8 array.
        labels: the image's weak labels; only the entry of ``weak`` is read:
            ``{"boxes": [{"cls", "box": [x0, y0, x1, y1]}]}`` (inclusive pixel bounds) or
            ``{"points": [{"x", "y", "cls"}]}`` (class 0 = background).
        weak: ``"boxes"`` or ``"points"``.
        method: see :data:`METHODS` (default: ``"grabcut"`` for boxes, ``"harmonic"`` for
            points).
        num_classes: when given, label classes must be below it.
        settings: overrides :data:`SETTINGS` ``[weak]``.
        details: an optional dict that receives what the method reports: ``"ial_reports"``,
            IAL's per-round :class:`~graphseg.pipelines.ial.RoundReport` list.

    Returns:
        ``(H, W)`` int64 class ids.
    """
    method = _check_method(weak, method)
    image = _one_image(image)
    if not isinstance(labels, dict) or weak not in labels:
        raise ValueError(f"labels must be a dict with a {weak!r} entry, got "
                         f"{_checks._describe(labels)}")
    settings = SETTINGS[weak] if settings is None else settings
    height, width = image.shape[2:]
    if weak == "boxes":
        boxes = labels["boxes"]
        _checks.check_boxes([boxes], 1, height, width, num_classes=num_classes)
        seeds = grabcut_seeds(image, [boxes], num_classes=num_classes)
        if method == "grabcut":
            return torch.where(seeds[0] == UNKNOWN, 0, seeds[0])
        inside = box_interior([boxes], height, width)[0]
        if method == "harmonic":
            pred = _propagate(image, seeds, method, settings)
        elif method in ("ial", "pce-potts"):
            pred = _trained(image, seeds, method, settings, details)
        else:
            pred = _region_a2gnn(image, seeds, settings, boxes=boxes)
        return torch.where(inside, pred, 0)
    points = labels["points"]
    if not points:
        raise ValueError("labels['points'] is empty: at least one click is needed")
    seeds = rasterize_points([points], height, width, radius=settings.point_radius,
                             num_classes=num_classes)
    if method == "a2gnn":
        return _region_a2gnn(image, seeds, settings)
    graph_regions = superpixel_graph(image, n_segments=settings.n_segments)
    expanded = expand_seeds(seeds, graph_regions)
    if method in ("ial", "pce-potts"):
        return _trained(image, expanded, method, settings, details)
    return _propagate(image, expanded, method, settings)


@dataclass(frozen=True)
class Failure:
    """An image that could not be segmented, and why."""

    name: str
    reason: str


def _write_png(path: Path, labels: Tensor) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(labels.to(torch.uint8).numpy()).save(temporary, format="PNG")


def segment_dataset(dataset, out_dir: str | os.PathLike, *, weak: str,
                    method: str | None = None, resume: bool = False, progress: bool = True,
                    settings: Settings | None = None,
                    on_result: Callable[[str, Tensor, float], None] | None = None
                    ) -> list[Failure]:
    """Segments every image of a data set and writes ``OUT/NAME.png`` (uint8 class ids).

    Each file is written atomically (a temporary file renamed into place), so an interrupted
    run leaves no partial PNG; ``resume`` skips images whose PNG exists. An image that fails
    (unreadable, invalid labels) is reported and the others are still processed.

    Args:
        dataset: a :class:`graphseg.data.SegmentationFolder` (or any sequence of samples with
            ``name``, ``image`` and the ``weak`` labels); only ``weak`` labels are read.
        out_dir: output folder (created).
        weak, method, settings: as :func:`segment`.
        resume: skip images already written.
        progress: show a tqdm bar.
        on_result: called as ``on_result(name, labels, seconds)`` after each image.

    Returns:
        The failures, in order.
    """
    method = _check_method(weak, method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures: list[Failure] = []
    names = getattr(dataset, "names", None)
    num_classes = getattr(dataset, "num_classes", None)
    bar = tqdm(range(len(dataset)), desc=f"segment {weak}/{method}", disable=not progress)
    for index in bar:
        name = names[index] if names is not None else str(index)
        target = out / f"{name}.png"
        if resume and target.exists():
            continue
        try:
            sample = dataset[index]
            name = sample.get("name", name)
            target = out / f"{name}.png"
            start = time.perf_counter()
            labels = segment(sample["image"], {weak: sample.get(weak)}, weak=weak,
                             method=method, num_classes=num_classes, settings=settings)
            seconds = time.perf_counter() - start
            _write_png(target, labels)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
            failures.append(Failure(name, f"{type(error).__name__}: {error}"))
            bar.write(f"{name}: {type(error).__name__}: {error}")
            continue
        if on_result is not None:
            on_result(name, labels, seconds)
    return failures
