"""Weak labels become seeds here and nowhere else: a :class:`WeakInput` per image, built by
the module of its kind (``boxes``, ``points``, ``scribbles``, ``tags``), the only code that
reads ``labels``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.superpixel import SuperpixelGraph, superpixel_graph
from graphseg.pipelines._common import RegistryView, renumber
from graphseg.seeds import box_interior, expand_seeds

__all__ = ["KINDS", "LABEL_KEYS", "Kind", "WeakInput", "expanded", "register_kind", "weak_input"]


@dataclass
class WeakInput:
    """One image's weak labels made seeds, and what a recipe may need beside them.

    ``seeds`` hold class ids (255 = unknown); a recipe's probabilities have one channel per
    entry of ``classes`` and learn from ``local``, the seeds renumbered to those channels.
    """

    kind: str
    seeds: Tensor
    """``(1, H, W)`` int64: M_B (boxes), M_P / M_S (points, scribbles), M'_I (tags)."""
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


def expanded(kind: str, image: Tensor, seeds: Tensor, n_segments: int) -> WeakInput:
    """Clicks or strokes expanded to whole SLIC superpixels (thesis §3.6.1: M_P, M_S)."""
    regions = superpixel_graph(image, n_segments=n_segments)
    return WeakInput.from_seeds(kind, expand_seeds(seeds, regions), regions=regions)


@dataclass(frozen=True)
class Kind:
    """A weak-label kind: the ``labels`` entries it reads, its seeds' config and its
    ``build(image, labels, num_classes, config) -> WeakInput``."""

    name: str
    label_keys: tuple[str, ...]
    config: type
    build: Callable


KINDS: dict[str, Kind] = {}


def register_kind(name: str, *, label_keys: tuple[str, ...], config: type) -> Callable:
    """A decorator registering ``build`` as the seeds of the weak kind ``name``."""

    def register(build: Callable) -> Callable:
        KINDS[name] = Kind(name, label_keys, config, build)
        return build

    return register


LABEL_KEYS: Mapping[str, tuple[str, ...]] = RegistryView(
    lambda: KINDS, lambda weak: KINDS[weak].label_keys)
"""The entries of ``labels`` that each weak kind reads (and the only ones)."""


def weak_input(image: Tensor, labels, *, weak: str, num_classes: int | None,
               config) -> WeakInput:
    """The :class:`WeakInput` of one ``(1, 3, H, W)`` image from the ``weak`` entries of
    ``labels``."""
    _checks.check_choice("weak", weak, tuple(KINDS))
    kind = KINDS[weak]
    for key in kind.label_keys:
        if not isinstance(labels, dict) or labels.get(key) is None:
            raise ValueError(f"labels must be a dict with a {key!r} entry for weak={weak!r}, "
                             f"got {_checks._describe(labels)}")
    if not isinstance(config, kind.config):
        raise TypeError(f"the seeds of weak={weak!r} take a {kind.config.__name__}, got "
                        f"{type(config).__name__}")
    return kind.build(image, {key: labels[key] for key in kind.label_keys}, num_classes, config)

