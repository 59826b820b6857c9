"""Weak labels become seeds here and nowhere else: a :class:`WeakInput` per image, built by
the module of its kind (``boxes``, ``points``, ``scribbles``, ``tags``), the only code that
reads ``labels``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.superpixel import SuperpixelGraph, superpixel_graph
from graphseg.pipelines._common import RegistryView, renumber
from graphseg.seeds import (
    add_background,
    box_interior,
    check_cam_layout,
    expand_seeds,
    normalize_cam,
    topk_seeds,
)

__all__ = ["KINDS", "LABEL_KEYS", "Kind", "WeakInput", "cam_maps", "cam_seeds", "expanded",
           "register_kind", "weak_input"]


@dataclass
class WeakInput:
    """One image's weak labels made seeds, and what a recipe may need beside them.

    ``seeds`` hold class ids (255 = unknown); a recipe's probabilities have one channel per
    entry of ``classes`` and learn from ``local``, the seeds renumbered to those channels.
    ``affinity_seeds`` are what the affinity CNN of a data set learns from
    (:func:`~graphseg.pipelines.train_affinity_dataset`); they default to ``seeds``.
    """

    kind: str
    seeds: Tensor
    """``(1, H, W)`` int64: M_B, or M_g with CAMs (boxes), M_P / M_S (points, scribbles),
    M'_I or RRM's reliable regions (tags)."""
    classes: Tensor
    """The class id of each probability channel: the seeded classes, or every class of the
    CAMs for tags."""
    local: Tensor
    """``seeds`` as channel indices of ``classes`` (255 kept)."""
    boxes: list[dict] | None = None
    """boxes: the image's boxes ``{"cls", "box"}``."""
    cams: Tensor | None = None
    """tags: ``(1, C, H, W)`` foreground CAMs at image size, max-normalised, untagged
    classes 0."""
    regions: SuperpixelGraph | None = None
    """points, scribbles: the superpixels the seeds were expanded to."""
    box_seeds: Tensor | None = None
    """boxes: ``(1, H, W)`` GrabCut's seeds M_B, which ``seeds`` refine into M_g when CAMs are
    given (the ``grabcut`` recipe's output); None otherwise."""
    affinity_seeds: Tensor | None = None
    """``(1, H, W)`` int64 class ids the affinity CNN trains on (thesis §3.6.1): with CAMs,
    M_S merged with M'_I (scribbles, :func:`graphseg.seeds.merge_seeds`) or M'_I alone
    (points); ``seeds`` otherwise and for boxes and tags (None at construction = ``seeds``)."""

    def __post_init__(self) -> None:
        if self.affinity_seeds is None:
            self.affinity_seeds = self.seeds

    @classmethod
    def from_seeds(cls, kind: str, seeds: Tensor, **extra) -> WeakInput:
        """Renumbers ``seeds`` to the classes they hold."""
        classes, local = renumber(seeds)
        return cls(kind, seeds, classes, local, **extra)

    def local_boxes(self) -> list[dict] | None:
        """The boxes whose class has seeds, with their class as a channel index."""
        if self.boxes is None:
            return None
        index = {int(c): i for i, c in enumerate(self.classes.tolist())}
        return [{"cls": index[b["cls"]], "box": b["box"]} for b in self.boxes
                if b["cls"] in index]

    def labels(self, probs: Tensor) -> Tensor:
        """``(H, W)`` class ids of ``(1, K, H, W)`` probabilities; box kinds label nothing
        outside their boxes."""
        labels = self.classes[probs.argmax(1)[0].cpu()]
        if self.boxes is not None:
            inside = box_interior([self.boxes], *labels.shape)[0]
            labels = torch.where(inside, labels, 0)
        return labels


def cam_maps(cams, height: int, width: int, classes, num_classes: int | None, *,
             name: str = "labels['cams']", classes_name: str = "labels['tags']") -> Tensor:
    """The ``(1, C, H, W)`` foreground CAMs (channel c-1 = class c) of an image, checked
    (:func:`graphseg.seeds.check_cam_layout`), resized bilinearly to the image, kept for the
    foreground ``classes`` only (the others zeroed) and max-normalised."""
    cams = check_cam_layout(cams, height, width, num_classes=num_classes, name=name)[None]
    tags = torch.zeros(1, cams.shape[1], dtype=torch.bool)
    for cls in classes:
        tags[0, _checks.check_class(classes_name, cls, cams.shape[1] + 1, lowest=1) - 1] = True
    cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
    return normalize_cam(cams.clamp_min(0), tags=tags)


def cam_seeds(cams: Tensor, *, fraction: float, background: float) -> Tensor:
    """The confident CAM seeds M'_I of :func:`cam_maps`' output (the A²GNN code's rule,
    :func:`graphseg.seeds.topk_seeds` after :func:`graphseg.seeds.add_background`, γ = 4)."""
    return topk_seeds(add_background(cams), fraction=fraction, background_threshold=background)


def expanded(kind: str, image: Tensor, seeds: Tensor, n_segments: int) -> WeakInput:
    """Clicks or strokes expanded to whole SLIC superpixels (thesis §3.6.1: M_P, M_S)."""
    regions = superpixel_graph(image, n_segments=n_segments)
    return WeakInput.from_seeds(kind, expand_seeds(seeds, regions), regions=regions)


@dataclass(frozen=True)
class Kind:
    """A weak-label kind: the ``labels`` entries it needs, its seeds' config, its
    ``build(image, labels, num_classes, config) -> WeakInput`` and the entries it reads when
    they are given (``optional_keys``)."""

    name: str
    label_keys: tuple[str, ...]
    config: type
    build: Callable
    optional_keys: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {}


def register_kind(name: str, *, label_keys: tuple[str, ...], config: type,
                  optional_keys: tuple[str, ...] = ()) -> Callable:
    """A decorator registering ``build`` as the seeds of the weak kind ``name``, which needs
    the ``label_keys`` entries of ``labels`` and also reads the ``optional_keys`` ones."""

    def register(build: Callable) -> Callable:
        KINDS[name] = Kind(name, label_keys, config, build, optional_keys)
        return build

    return register


LABEL_KEYS: Mapping[str, tuple[str, ...]] = RegistryView(
    lambda: KINDS, lambda weak: KINDS[weak].label_keys + KINDS[weak].optional_keys)
"""The entries of ``labels`` that each weak kind reads (and the only ones): the ones it needs,
then the optional ones (``"cams"`` beside boxes, points and scribbles)."""


def weak_input(image: Tensor, labels, *, weak: str, num_classes: int | None,
               config) -> WeakInput:
    """The :class:`WeakInput` of one ``(1, 3, H, W)`` image from the ``weak`` entries of
    ``labels`` (an optional entry that is None counts as absent)."""
    _checks.check_choice("weak", weak, tuple(KINDS))
    kind = KINDS[weak]
    for key in kind.label_keys:
        if not isinstance(labels, dict) or labels.get(key) is None:
            raise ValueError(f"labels must be a dict with a {key!r} entry for weak={weak!r}, "
                             f"got {_checks._describe(labels)}")
    if not isinstance(config, kind.config):
        raise TypeError(f"the seeds of weak={weak!r} take a {kind.config.__name__}, got "
                        f"{type(config).__name__}")
    read = {key: labels[key] for key in kind.label_keys}
    read.update({key: labels[key] for key in kind.optional_keys if labels.get(key) is not None})
    return kind.build(image, read, num_classes, config)

