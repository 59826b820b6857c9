"""Scribble and point seeds expanded through superpixels (thesis §3.6.1: M_S, M_P)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.seeds.boxes import _batch_of

__all__ = ["expand_seeds", "merge_seeds", "rasterize_points", "rasterize_scribbles",
           "region_labels"]

UNKNOWN = 255


def region_labels(regions, name: str = "regions") -> Tensor:
    """``(B, H, W)`` int64 region labels from a label map or a
    :class:`graphseg.graph.SuperpixelGraph`."""
    from graphseg.graph.superpixel import SuperpixelGraph

    if isinstance(regions, SuperpixelGraph):
        return regions.labels
    regions = _checks.as_label_batch(regions, name)
    if regions.numel() and int(regions.min()) < 0:
        raise ValueError(f"{name} must be non-negative region labels, "
                         f"got the value {int(regions.min())}")
    return regions


def global_regions(regions: Tensor) -> tuple[Tensor, int]:
    """Region ids made unique over the batch (image b's shifted by the regions before it),
    and their count."""
    sizes = regions.flatten(1).amax(dim=1) + 1
    shift = torch.cumsum(sizes, 0) - sizes
    return regions + shift.view(-1, 1, 1), int(sizes.sum())


def _between(a: float, b: float, t: float) -> float:
    """``a + (b - a) t``, kept within [a, b]: rounding must not carry a sample of a segment
    whose ends lie on the image border off the image."""
    return min(max(a + (b - a) * t, min(a, b)), max(a, b))


def rasterize_points(points, height: int, width: int, *, radius: int = 0,
                     num_classes: int | None = None) -> Tensor:
    """Draws point labels ``{"x", "y", "cls"}`` into a seed map.

    Each point marks the pixel nearest to it (x, y rounded half up), or with ``radius`` > 0
    every pixel within that Euclidean distance of it; where disks overlap, the nearer point wins
    (the first listed on a tie).

    Args:
        points: one list of point dicts per image (a flat list for one image), in pixel
            coordinates; class 0 is background.
        height, width: image size.
        radius: disk radius in pixels.
        num_classes: when given, point classes must be below it.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    _checks.check_positive("height", height, integer=True)
    _checks.check_positive("width", width, integer=True)
    _checks.check_positive("radius", radius, integer=True, allow_zero=True)
    checked = _checks.check_points(points, _batch_of(points), height, width,
                                   num_classes=num_classes)
    # a disk wider than the image covers the same pixels as one spanning it
    radius = min(radius, height + width)
    seeds = torch.full((len(checked), height, width), UNKNOWN, dtype=torch.int64)
    nearest = torch.full((len(checked), height, width), math.inf, dtype=torch.float64)
    for b, image_points in enumerate(checked):
        for x, y, cls in image_points:
            # clamped: y = H − 0.5 − ε rounds to H in floating point (0.49999999999999994 + 0.5)
            cx, cy = min(math.floor(x + 0.5), width - 1), min(math.floor(y + 0.5), height - 1)
            y0, y1 = max(0, cy - radius), min(height, cy + radius + 1)
            x0, x1 = max(0, cx - radius), min(width, cx + radius + 1)
            ys = torch.arange(y0, y1, dtype=torch.float64).view(-1, 1)
            xs = torch.arange(x0, x1, dtype=torch.float64).view(1, -1)
            grid = (ys - cy).square() + (xs - cx).square()
            distance = (ys - y).square() + (xs - x).square()
            window = nearest[b, y0:y1, x0:x1]
            closer = (grid <= radius * radius) & (distance < window)
            window[closer] = distance[closer]
            seeds[b, y0:y1, x0:x1][closer] = cls
    return seeds


def rasterize_scribbles(scribbles, height: int, width: int, *, radius: int = 1,
                        num_classes: int | None = None) -> Tensor:
    """Draws scribbles ``{"cls": c, "points": [[x, y], ...]}`` (polylines, as ScribbleSup
    annotates them) into a seed map.

    Every segment of a polyline is sampled every half pixel and each sample is drawn as a
    disk of ``radius`` by :func:`rasterize_points` (where strokes of different classes cross,
    the nearer sample wins); a single-vertex scribble is a point.

    Args:
        scribbles: one list of scribble dicts per image (a flat list for one image), in pixel
            coordinates; class 0 is background.
        height, width: image size.
        radius: stroke half-width in pixels (0 draws one-pixel lines).
        num_classes: when given, scribble classes must be below it.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    _checks.check_positive("height", height, integer=True)
    _checks.check_positive("width", width, integer=True)
    checked = _checks.check_scribbles(scribbles, _batch_of(scribbles), height, width,
                                      num_classes=num_classes)
    samples = []
    for image_scribbles in checked:
        image_samples = []
        for cls, line in image_scribbles:
            image_samples.append({"x": line[0][0], "y": line[0][1], "cls": cls})
            for (x0, y0), (x1, y1) in itertools.pairwise(line):
                steps = max(1, math.ceil(2 * math.hypot(x1 - x0, y1 - y0)))
                image_samples += [{"x": _between(x0, x1, k / steps),
                                   "y": _between(y0, y1, k / steps), "cls": cls}
                                  for k in range(1, steps + 1)]
        samples.append(image_samples)
    return rasterize_points(samples, height, width, radius=radius, num_classes=num_classes)


def expand_seeds(seeds, regions) -> Tensor:
    """Expands sparse labels (scribbles, points) to whole superpixels (thesis §3.6.1).

    A region takes the label of the labelled pixels inside it when they all agree; a region
    holding two or more labels is ambiguous and keeps only its own labelled pixels. Labelled
    pixels always keep their label.

    Args:
        seeds: ``(B, H, W)`` int64 sparse labels, 255 = unknown (e.g. from
            :func:`rasterize_points` or a scribble map).
        regions: ``(B, H, W)`` region labels or a :class:`graphseg.graph.SuperpixelGraph`.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    seeds = _checks.as_label_batch(seeds, "seeds")
    regions = region_labels(regions).to(seeds.device)
    _checks.same_size("seeds", seeds, "regions", regions)
    _checks.check_seed_values("seeds", seeds, None)
    if regions.numel() and int(regions.max()) >= regions.numel():
        # sparse region ids (e.g. 10**12) would size the per-region tables: renumber them
        regions = torch.unique(regions, return_inverse=True)[1]
    node, num_nodes = global_regions(regions)
    labelled = seeds != UNKNOWN
    node_l, cls_l = node[labelled], seeds[labelled]
    # distinct (region, class) pairs: a region with exactly one is unambiguous
    span = int(cls_l.max()) + 1 if cls_l.numel() else 1
    pairs = torch.unique(node_l * span + cls_l)
    pair_node, pair_cls = pairs // span, pairs % span
    classes_in = torch.bincount(pair_node, minlength=num_nodes)
    region_label = torch.full((num_nodes,), UNKNOWN, dtype=torch.int64, device=seeds.device)
    single = classes_in[pair_node] == 1
    region_label[pair_node[single]] = pair_cls[single]
    expanded = region_label[node]
    return torch.where(labelled, seeds, expanded)


def merge_seeds(annotation, cam_seeds) -> Tensor:
    r"""Merges expanded annotation seeds (M_S, M_P) with confident CAM seeds M'_I: the seeds
    the affinity CNN trains on under scribbles (thesis §3.6.1; DESIGN §6 "Seeds").

    .. math::
        M(p) = \begin{cases}
            M_S(p) & M_S(p) \ne 255 \\
            M'_I(p) & \text{otherwise}
        \end{cases}

    Where both label a pixel and disagree, the annotation wins: it is a person's label on the
    pixel (or on a superpixel holding no other label), whereas M'_I comes from a classifier
    trained on image tags whose maps are coarse (stride 8) and spill over object boundaries.

    Args:
        annotation: ``(B, H, W)`` int64 annotation seeds, 255 = unknown (e.g. from
            :func:`expand_seeds`).
        cam_seeds: ``(B, H, W)`` int64 CAM seeds, 255 = unknown (e.g. from
            :func:`graphseg.seeds.topk_seeds`).

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    annotation = _checks.as_label_batch(annotation, "annotation")
    cam_seeds = _checks.as_label_batch(cam_seeds, "cam_seeds").to(annotation.device)
    _checks.same_size("cam_seeds", cam_seeds, "annotation", annotation)
    return torch.where(annotation != UNKNOWN, annotation, cam_seeds)
