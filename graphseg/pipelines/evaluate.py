"""Scores predicted label maps against ground truth (the protocols of the shared data sets)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from graphseg import _checks, metrics
from graphseg._io import PNG_CLASSES
from graphseg.data.datasets import read_label_map
from graphseg.seeds import box_interior

__all__ = ["evaluate_folder"]


def evaluate_folder(pred_dir: str | os.PathLike, mask_dir: str | os.PathLike, *,
                    num_classes: int | None = None, boxes: dict | None = None) -> dict:
    """Scores every ``PRED/NAME.png`` against ``MASKS/NAME.png`` (255 in a mask = not scored;
    a prediction must hold class ids only, 0–254 or below ``num_classes``: any other value is
    refused, naming the file).

    Reports the mean IoU over the classes present in the ground truth, from the confusion
    matrix summed over the images; the foreground IoU (every class but 0 merged, the GrabCut
    protocol's object IoU) averaged over the images; the error rate over the whole image and,
    when ``boxes`` are given, over the box interiors (the GrabCut protocol).

    Args:
        pred_dir, mask_dir: folders of uint8 class-id PNGs.
        num_classes: class count (default: the largest id seen + 1).
        boxes: optional ``{NAME: [{"cls", "box"}]}`` for the box-interior error rate.

    Returns:
        ``{"images", "missing", "miou", "foreground_iou", "error", "box_error"}``; ``missing``
        lists the masks without a prediction (they are not scored); a score with nothing to
        average (no foreground, no matching box) is None.
    """
    pred_dir, mask_dir = Path(pred_dir), Path(mask_dir)
    for name, folder in (("pred_dir", pred_dir), ("mask_dir", mask_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{name} {folder} is not a folder")
    if num_classes is not None:
        _checks.check_positive("num_classes", num_classes, integer=True)
    pairs, missing = [], []
    for mask_path in sorted(mask_dir.glob("*.png")):
        pred_path = pred_dir / mask_path.name
        if pred_path.exists():
            pairs.append((mask_path.stem, read_label_map(mask_path, what="ground truth"),
                          pred_path))
        else:
            missing.append(mask_path.stem)
    if not pairs:
        raise ValueError(f"no prediction in {pred_dir} matches a ground-truth mask of "
                         f"{mask_dir}")
    loaded = []
    for name, mask, pred_path in pairs:
        pred = read_label_map(pred_path, tuple(mask.shape), what="prediction",
                              reference="its ground truth")
        # a prediction holds class ids only: 255 (void in ground truth) would be scored as a
        # class of its own, and as foreground
        bound = PNG_CLASSES if num_classes is None else num_classes
        if int(pred.max()) >= bound:
            expected = (f"0–{bound - 1} for num_classes={num_classes}" if num_classes else
                        f"0–{bound - 1}; {PNG_CLASSES} marks void in ground truth only")
            raise ValueError(f"prediction {pred_path} holds the value {int(pred.max())}, which "
                             f"is not a class id (expected {expected})")
        loaded.append((name, mask, pred))
    if num_classes is None:
        scored = torch.cat([torch.cat([m[m != metrics.VOID], p.flatten()])
                            for _, m, p in loaded])
        num_classes = 1 + int(scored.max())
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    foreground, errors, box_errors = [], [], []
    for name, mask, pred in loaded:
        image_confusion = metrics.confusion_matrix(pred, mask, num_classes=num_classes)
        confusion += image_confusion
        foreground.append(metrics.foreground_iou(image_confusion))
        errors.append(metrics.error_rate(pred, mask))
        if boxes is not None and boxes.get(name):
            inside = box_interior([boxes[name]], *mask.shape)[0]
            box_errors.append(metrics.error_rate(pred, mask, region=inside))

    def mean(values):
        kept = [v for v in values if v == v]
        return sum(kept) / len(kept) if kept else float("nan")

    def number(value):  # None rather than NaN, which strict JSON cannot hold
        return None if value is None or value != value else value

    return {"images": len(loaded), "missing": missing,
            "miou": number(metrics.mean_iou(confusion)),
            "foreground_iou": number(mean(foreground)), "error": number(mean(errors)),
            "box_error": number(mean(box_errors)) if boxes is not None else None}
