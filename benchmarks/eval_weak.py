"""Weakly supervised segmentation on the shared evaluation data: graphseg's pipelines and the
peers, side by side in one run.

- ``grabcut`` and ``horses224`` (boxes): OpenCV GrabCut (5 iterations, rectangle
  initialisation, called directly here) with the tight box and with the box padded by 5 px —
  the peer at both settings, since the better one differs by set — against graphseg's box
  pipelines. Scores: foreground IoU and the error rates over the whole image and over the box
  interior, averaged over the images (the GrabCut protocol).
- ``voc14`` (points: real clicks plus background points from scribbles — an easier setting than
  the thesis's points-only one): scikit-image ``random_walker`` from the points drawn as disks of
  radius 5 (β = 130) against graphseg's point pipelines. Score: mean IoU over the classes
  present in the ground truth, from the confusion matrix summed over the images.

Prints one JSON line per method and set (quality, median seconds per image), then a table.
Each pipeline reads only its weak-label kind (the data set keeps nothing else).

Usage::

    python benchmarks/eval_weak.py                      # every set and method
    python benchmarks/eval_weak.py --set voc14 --limit 5
    python benchmarks/eval_weak.py --data /path/to/shared/data
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_DATA, emit, machine  # noqa: E402

from graphseg import metrics, ops  # noqa: E402
from graphseg.data import SegmentationFolder  # noqa: E402
from graphseg.pipelines import METHODS, PRESETS, get_recipe, segment  # noqa: E402
from graphseg.seeds import box_interior, rasterize_points  # noqa: E402

SETS = {"grabcut": "boxes", "horses224": "boxes", "voc14": "points"}


def opencv_grabcut(image: torch.Tensor, boxes: list, padding: int) -> torch.Tensor:
    """The peer: cv2.grabCut per box (5 iterations, rectangle initialisation from the box
    padded by ``padding`` px), foreground = the definite and probable foreground, boxes painted
    largest first."""
    import cv2

    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    height, width = rgb.shape[:2]
    out = np.zeros((height, width), dtype=np.int64)
    order = sorted(boxes, key=lambda b: -(b["box"][2] - b["box"][0] + 1)
                   * (b["box"][3] - b["box"][1] + 1))
    for box in order:
        x0, y0, x1, y1 = box["box"]
        x0, y0 = max(0, x0 - padding), max(0, y0 - padding)
        x1, y1 = min(width - 1, x1 + padding), min(height - 1, y1 + padding)
        mask = np.zeros((height, width), np.uint8)
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(bgr, mask, (x0, y0, x1 - x0 + 1, y1 - y0 + 1), np.zeros((1, 65)),
                        np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_RECT)
        except cv2.error:
            # a rectangle over the whole image leaves no background sample: OpenCV refuses,
            # and the box itself is the answer
            mask[y0 : y1 + 1, x0 : x1 + 1] = cv2.GC_PR_FGD
        out[(mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)] = box["cls"]
    return torch.from_numpy(out)


def _grabcut_peer(sample: dict, padding: int) -> torch.Tensor:
    return opencv_grabcut(sample["image"], sample["boxes"], padding)


def skimage_random_walker(image: torch.Tensor, points: list) -> torch.Tensor:
    """The peer: scikit-image random_walker from the points as disks of radius 5, β = 130."""
    from skimage.segmentation import random_walker

    seeds = rasterize_points([points], *image.shape[1:], radius=5)[0]
    present = torch.unique(seeds[seeds != 255])
    if len(present) == 1:
        return torch.full(seeds.shape, int(present[0]), dtype=torch.int64)
    markers = torch.zeros_like(seeds)
    for index, cls in enumerate(present.tolist()):
        markers[seeds == cls] = index + 1
    labels = random_walker(image.permute(1, 2, 0).numpy(), markers.numpy(), beta=130,
                           mode="cg_j", channel_axis=-1)
    return present[torch.from_numpy(labels - 1).long()]


def _score(set_name: str, dataset, predictions: dict) -> dict:
    num_classes = dataset.num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    foreground, error, box_error = [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        name, mask = sample["name"], sample["mask"]
        if name not in predictions:
            continue
        pred = predictions[name]
        image_confusion = metrics.confusion_matrix(pred, mask, num_classes=num_classes)
        confusion += image_confusion
        foreground.append(metrics.foreground_iou(image_confusion))
        error.append(metrics.error_rate(pred, mask))
        if "boxes" in sample:
            inside = box_interior([sample["boxes"]], *mask.shape)[0]
            box_error.append(metrics.error_rate(pred, mask, region=inside))
    scores = {"miou": metrics.mean_iou(confusion),
              "foreground_iou": float(np.mean(foreground)), "error": float(np.mean(error))}
    if box_error:
        scores["box_error"] = float(np.mean(box_error))
    return scores


def run_set(set_name: str, data: Path, limit: int | None, methods: list[str],
            ial_limit: int) -> list[dict]:
    weak = SETS[set_name]
    dataset = SegmentationFolder(data / set_name, weak=weak)
    if limit:
        dataset = SegmentationFolder(data / set_name, weak=weak, names=dataset.names[:limit])
    if weak == "boxes":
        # the peer at both of its settings: the tight box and the box padded by 5 px
        runs = [(f"opencv_grabcut_{name}", partial(_grabcut_peer, padding=padding), len(dataset))
                for name, padding in (("tight", 0), ("padded5", 5))]
    else:
        runs = [("skimage_random_walker",
                 lambda s: skimage_random_walker(s["image"], s["points"]), len(dataset))]
    peer_name = runs[0][0]

    energies: dict[str, list] = {}  # per run: each image's IAL energy per round

    def ours(method, config=None, run_name=None):
        def run(s):
            details = {}
            labels = segment(s["image"], {weak: s[weak]}, weak=weak, method=method,
                             num_classes=dataset.num_classes, config=config,
                             details=details)
            if "ial_reports" in details:
                energies.setdefault(run_name, []).append(
                    [r.energy for r in details["ial_reports"]])
            return labels
        return run

    for method in methods:
        if method == "ial":
            # IAL is the slowest: its rows cover the first --ial-limit images, after 1 and 3
            # EM rounds (the 1-round run is the first round of the 3-round one)
            for rounds in (1, 3):
                config = replace(PRESETS[weak].config("ial"), rounds=rounds)
                name = f"graphseg_ial_{rounds}round{'s' if rounds > 1 else ''}"
                runs.append((name, ours(method, config, name),
                             min(ial_limit, len(dataset))))
        elif method in METHODS[weak] and get_recipe(weak, method).folder is not None:
            # learns across the set first: one run over it, timed as a whole
            runs.append((f"graphseg_{method}", partial(_folder_run, method=method, weak=weak),
                         None))
        elif method in METHODS[weak]:
            runs.append((f"graphseg_{method}", ours(method), len(dataset)))
    rows, peer_predictions = [], None
    for run_name, fn, count in runs:
        predictions, seconds = {}, []
        if count is None:  # a folder method: one call over the set, its time shared out
            start = time.perf_counter()
            predictions = fn(dataset)
            seconds = [(time.perf_counter() - start) / len(dataset)]
            count = len(dataset)
        else:
            for index in range(count):
                sample = dataset[index]
                start = time.perf_counter()
                predictions[sample["name"]] = fn(sample)
                seconds.append(time.perf_counter() - start)
        if peer_predictions is None:
            peer_predictions = predictions
        row = {"case": "eval_weak", "set": set_name, "weak": weak, "method": run_name,
               "images": len(predictions), "seconds_per_image": round(statistics.median(
                   seconds), 3), **_rounded(_score(set_name, dataset, predictions))}
        if count < len(dataset):
            subset = {name: peer_predictions[name] for name in predictions}
            row[f"{peer_name}_same_images"] = _rounded(_score(set_name, dataset, subset))
        if run_name in energies:
            # the energy of α_u on the RGB kernel graph, per round, averaged over the images,
            # and how many images saw it fall from the first round to the last
            per_image = np.array(energies[run_name])
            row["ial_energy_per_round"] = [round(float(e), 4) for e in per_image.mean(0)]
            row["ial_energy_fell"] = int((per_image[:, -1] < per_image[:, 0]).sum())
        emit(row)
        rows.append(row)
    return rows


def _folder_run(dataset, *, method: str, weak: str) -> dict:
    """A recipe that learns across the set: its model trained on every image, then each image
    labelled with it (training included in the time)."""
    recipe = get_recipe(weak, method)
    samples = [dataset[i] for i in range(len(dataset))]
    model = recipe.folder.train(samples, PRESETS[weak].config(method),
                                num_classes=dataset.num_classes, progress=False)
    return {s["name"]: segment(s["image"], {weak: s[weak]}, weak=weak, method=method,
                               num_classes=dataset.num_classes, checkpoint=model)
            for s in samples}


def _rounded(scores: dict) -> dict:
    return {k: round(v, 4) for k, v in scores.items()}


def _table(rows: list[dict]) -> str:
    lines = ["| set | method | images | mIoU | fg IoU | error | box error | s / image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        box = f"{100 * r['box_error']:.2f}%" if "box_error" in r else "–"
        lines.append(f"| {r['set']} | {r['method']} | {r['images']} | {100 * r['miou']:.1f}% | "
                     f"{100 * r['foreground_iou']:.1f}% | {100 * r['error']:.2f}% | {box} | "
                     f"{r['seconds_per_image']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder holding grabcut/ and voc14/")
    parser.add_argument("--set", choices=sorted(SETS), action="append",
                        help="data set (repeatable; default: all)")
    parser.add_argument("--method", action="append",
                        help="graphseg method (repeatable; default: every one of the set)")
    parser.add_argument("--limit", type=int, help="first N images of each set")
    parser.add_argument("--ial-limit", type=int, default=10,
                        help="first N images for the IAL rows (default: 10)")
    args = parser.parse_args()
    torch.manual_seed(0)
    emit({"case": "machine", **machine(), "backend": ops.backend()})
    rows = []
    for set_name in args.set or sorted(SETS):
        weak = SETS[set_name]
        methods = args.method or list(METHODS[weak])
        rows += run_set(set_name, Path(args.data), args.limit, methods, args.ial_limit)
    print(_table(rows))


if __name__ == "__main__":
    main()
