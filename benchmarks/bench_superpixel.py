"""Superpixel graphs against scikit-image's RAG, and GrabCut box seeds on the shared GrabCut set.

Prints JSON lines:

- ``slic``: the over-segmentation of the 512x512 astronaut (scikit-image; fast-slic when
  installed), for scale;
- ``adjacency``: ``region_adjacency`` against ``skimage.graph.rag_mean_color`` on the same SLIC
  labels, at 8-connectivity (rag_mean_color's default ``connectivity=2``) and 4-connectivity
  (``connectivity=1``): equal edge sets and the speed-up;
- ``superpixel_graph``: the whole ``SuperpixelGraph`` build (mean RGB and Lab, centroids, sizes,
  edges, boundary strength, weights) against rag_mean_color, which computes mean colours and
  weights too;
- ``grabcut_box_seeds``: seed precision (correct / labelled pixels), coverage (labelled /
  scored) and recall of ``grabcut_seeds`` as the box pipeline builds them (GrabCut in the box
  padded by 5 px, 5 iterations, in the box pipeline's context window; unknown where GrabCut
  says background inside the box) against the naive box seeds (the whole
  box as foreground), plus the error rates and foreground IoU of the GrabCut mask itself, the
  set's published baseline.

    python benchmarks/bench_superpixel.py [--data ../shared/data] [--limit N] [--repeats 9]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, emit, machine, median_seconds
from skimage import data, segmentation
from skimage import graph as skgraph

from graphseg.data import SegmentationFolder
from graphseg.graph import SuperpixelGraph, region_adjacency, superpixels
from graphseg.graph.superpixel import WITH_FAST_SLIC
from graphseg.metrics import (
    confusion_matrix,
    error_rate,
    foreground_iou,
    seed_scores,
)
from graphseg.pipelines import PRESETS
from graphseg.seeds import box_interior, grabcut_seeds

CONTEXT = PRESETS["boxes"].seeds.context  # the box pipeline's GrabCut window


def bench_graph(args) -> None:
    image = data.astronaut()
    seconds = median_seconds(
        lambda: segmentation.slic(image, n_segments=args.segments, compactness=10,
                                  start_label=0), repeats=max(1, args.repeats // 2))
    labels = segmentation.slic(image, n_segments=args.segments, compactness=10, start_label=0)
    regions = int(labels.max()) + 1
    record = {"case": "slic", "image": "astronaut 512x512", "n_segments": args.segments,
              "regions": regions, "skimage_ms": round(1000 * seconds, 1)}
    if WITH_FAST_SLIC:
        fast = median_seconds(lambda: superpixels(image, n_segments=args.segments),
                              repeats=args.repeats)
        record.update(fast_slic_ms=round(1000 * fast, 1), speedup=round(seconds / fast, 1))
    emit(record)

    for ours, theirs in ((8, 2), (4, 1)):
        rag_seconds = median_seconds(
            lambda c=theirs: skgraph.rag_mean_color(image, labels, connectivity=c),
            repeats=args.rag_repeats, warmup=0)
        our_seconds = median_seconds(
            lambda c=ours: region_adjacency(labels, connectivity=c), repeats=args.repeats)
        rag = skgraph.rag_mean_color(image, labels, connectivity=theirs)
        expected = {tuple(sorted(edge)) for edge in rag.edges()}
        got = set(map(tuple, region_adjacency(labels, connectivity=ours).t().tolist()))
        emit({"case": "adjacency", "image": "astronaut 512x512", "regions": regions,
              "connectivity": ours, "skimage_connectivity": theirs, "edges": len(got),
              "edges_equal": got == expected,
              "graphseg_ms": round(1000 * our_seconds, 2),
              "rag_mean_color_ms": round(1000 * rag_seconds, 1),
              "speedup": round(rag_seconds / our_seconds, 1)})
        if ours == 8:
            build = median_seconds(lambda: SuperpixelGraph(image, labels, connectivity=8),
                                   repeats=args.repeats)
            emit({"case": "superpixel_graph", "image": "astronaut 512x512", "regions": regions,
                  "connectivity": 8, "graphseg_ms": round(1000 * build, 1),
                  "rag_mean_color_ms": round(1000 * rag_seconds, 1),
                  "speedup": round(rag_seconds / build, 1)})


def bench_grabcut(args) -> None:
    root = Path(args.data) / "grabcut"
    if not (root / "annotations.json").is_file():
        emit({"case": "grabcut_box_seeds", "skipped": f"no GrabCut set at {root}"})
        return
    dataset = SegmentationFolder(root, weak="boxes")
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    grabcut_counts = torch.zeros(2, 3, dtype=torch.int64)
    box_counts = torch.zeros(2, 3, dtype=torch.int64)
    mask_counts = torch.zeros(2, 2, dtype=torch.int64)
    whole, interior, per_image_iou = [], [], []
    seconds = 0.0
    for index in range(count):
        sample = dataset[index]
        image, mask, boxes = sample["image"], sample["mask"], sample["boxes"]
        start = time.perf_counter()
        seeds = grabcut_seeds(image, boxes, iterations=5, padding=5, context=CONTEXT,
                              num_classes=2)
        seconds += time.perf_counter() - start
        height, width = mask.shape
        inside = box_interior(boxes, height, width)
        naive = inside.long()
        grabcut_counts += confusion_matrix(seeds, mask, num_classes=2, unlabelled=255)
        box_counts += confusion_matrix(naive, mask, num_classes=2, unlabelled=255)
        # the GrabCut mask: unknown inside the box is GrabCut's background
        prediction = (seeds == 1).long()
        image_counts = confusion_matrix(prediction, mask, num_classes=2)
        mask_counts += image_counts
        per_image_iou.append(foreground_iou(image_counts))
        whole.append(error_rate(prediction, mask))
        interior.append(error_rate(prediction, mask, region=inside))
    for name, counts in (("grabcut_seeds", grabcut_counts), ("box_fill_seeds", box_counts)):
        scores = seed_scores(counts)
        emit({"case": "grabcut_box_seeds", "method": name, "images": count,
              "precision": round(scores.precision, 4), "coverage": round(scores.coverage, 4),
              "recall": round(scores.recall, 4),
              "foreground_precision": round(float(scores.class_precision[1]), 4),
              "foreground_recall": round(float(scores.class_recall[1]), 4)})
    emit({"case": "grabcut_mask", "images": count, "iterations": 5, "padding": 5,
          "context": CONTEXT,
          "foreground_iou_pooled": round(foreground_iou(mask_counts), 4),
          "foreground_iou_mean_per_image": round(sum(per_image_iou) / count, 4),
          "error_whole_image": round(sum(whole) / count, 4),
          "error_box_interior": round(sum(interior) / count, 4),
          "seconds_per_image": round(seconds / count, 2),
          "baseline_readme": {"foreground_iou": 0.852, "error_whole_image": 0.0448,
                              "error_box_interior": 0.0897}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder holding grabcut/ (default: ../shared/data beside the repo)")
    parser.add_argument("--limit", type=int, default=None, help="GrabCut images to use")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rag-repeats", type=int, default=3)
    parser.add_argument("--segments", type=int, default=1000,
                        help="SLIC n_segments (1000 gives about 800 regions on the astronaut)")
    args = parser.parse_args()
    emit({"case": "machine", **machine(), "fast_slic": WITH_FAST_SLIC})
    bench_graph(args)
    bench_grabcut(args)


if __name__ == "__main__":
    main()
