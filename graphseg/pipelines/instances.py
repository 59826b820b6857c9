"""Box pseudo-labels → instance masks: one mask per box, as thesis §3.5 trains Mask R-CNN on the
box pipeline's labels (each box's pixels of its class inside it are its instance)."""

from __future__ import annotations

import json
import os

import torch
from torch import Tensor

from graphseg import _checks
from graphseg._io import PNG_CLASSES, atomic_path, write_label_png
from graphseg.seeds.boxes import _largest_first

__all__ = ["box_instances", "write_instances"]


def box_instances(labels, boxes) -> tuple[Tensor, list[dict]]:
    """Splits a semantic label map into one instance per box.

    Instance k (1-based, the order of ``boxes``) holds the pixels inside box k labelled with
    box k's class. A pixel inside several boxes of its class goes to the smallest of them (the
    rule of the box seeds, :func:`graphseg.seeds.box_owner`: a smaller box lies in front);
    a box whose pixels all went elsewhere keeps its entry with ``"pixels": 0``.

    Args:
        labels: ``(H, W)`` class ids (e.g. from :func:`~graphseg.pipelines.segment`).
        boxes: the image's ``[{"cls", "box": [x0, y0, x1, y1]}]`` (inclusive pixel bounds).

    Returns:
        ``(H, W)`` int64 instance ids (0 = no instance) and one dict per box:
        ``{"id", "cls", "box", "pixels"}``.
    """
    labels = _checks.as_label_batch(labels, "labels", what="(H, W)")
    if labels.shape[0] != 1:
        raise ValueError(f"labels must be one (H, W) map, got shape {tuple(labels.shape)}")
    labels = labels[0]
    height, width = labels.shape
    if not boxes:
        raise ValueError("boxes is empty: instances need at least one box")
    checked = _checks.check_boxes([boxes], 1, height, width)[0]
    instances = torch.zeros(height, width, dtype=torch.int64)
    # every box claims its class's pixels; a smaller box claims after a larger one
    for k in _largest_first(checked):
        cls, x0, y0, x1, y1 = checked[k]
        window = instances[y0 : y1 + 1, x0 : x1 + 1]
        window[labels[y0 : y1 + 1, x0 : x1 + 1] == cls] = k + 1
    counts = torch.bincount(instances.flatten(), minlength=len(checked) + 1)
    table = [{"id": k + 1, "cls": int(cls), "box": [int(x0), int(y0), int(x1), int(y1)],
              "pixels": int(counts[k + 1])}
             for k, (cls, x0, y0, x1, y1) in enumerate(checked)]
    return instances, table


def write_instances(png: str | os.PathLike, table_path: str | os.PathLike, instances: Tensor,
                    table: list[dict]) -> None:
    """Writes an instance map as a uint8 PNG (at most 254 instances, 0 = none) and its table as
    JSON ``{"instances": [{"id", "cls", "box", "pixels"}]}``, each atomically."""
    if len(table) >= PNG_CLASSES:
        raise ValueError(f"{len(table)} boxes: an instance PNG holds ids 1–{PNG_CLASSES - 1}")
    write_label_png(png, instances)
    with atomic_path(table_path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"instances": table}, handle, indent=1)

