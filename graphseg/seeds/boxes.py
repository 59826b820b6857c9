"""Seeds from bounding boxes (A²GNN, thesis Eq. 3.2–3.5; DESIGN §6 "Box seeds").

Boxes are ``{"cls": c, "box": [x0, y0, x1, y1]}`` with inclusive pixel bounds and c >= 1; a
batch takes one list of boxes per image. Where boxes overlap, the smaller box (fewer pixels)
wins: a pixel belongs to the smallest box that contains it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from graphseg import _checks
from graphseg.seeds.cam import top_fraction

__all__ = [
    "box_interior",
    "box_owner",
    "confident_box_seeds",
    "fuse_box_seeds",
    "grabcut_seeds",
]

UNKNOWN = 255
GMM_COMPONENTS = 5  # OpenCV's GrabCut fits 5-component colour models on each side
MIN_CONTEXT = 16  # pixels of the narrowest context ring around a padded box


def _batch_of(items) -> int:
    """Images described by a per-image list, a flat list of dicts counting as one image."""
    if isinstance(items, (list, tuple)) and items and not isinstance(items[0], dict):
        return len(items)
    return 1


def box_owner(boxes, height: int, width: int, *, num_classes: int | None = None) -> Tensor:
    """For each pixel, the index of the smallest box that contains it (−1 outside every box).

    Args:
        boxes: one list of box dicts per image (a flat list for one image).
        height, width: image size.
        num_classes: when given, box classes must be below it.

    Returns:
        ``(B, H, W)`` int64 box indices into each image's list.
    """
    checked = _checks.check_boxes(boxes, _batch_of(boxes), height, width,
                                  num_classes=num_classes)
    return _owner(checked, height, width)


def _owner(checked, height: int, width: int) -> Tensor:
    owner = torch.full((len(checked), height, width), -1, dtype=torch.int64)
    for b, image_boxes in enumerate(checked):
        # largest first, so a smaller box overwrites where they overlap
        for k in _largest_first(image_boxes):
            _, x0, y0, x1, y1 = image_boxes[k]
            owner[b, y0 : y1 + 1, x0 : x1 + 1] = k
    return owner


def _largest_first(image_boxes) -> list[int]:
    area = [(x1 - x0 + 1) * (y1 - y0 + 1) for _, x0, y0, x1, y1 in image_boxes]
    return sorted(range(len(image_boxes)), key=lambda k: -area[k])


def box_interior(boxes, height: int, width: int) -> Tensor:
    """``(B, H, W)`` bool: the pixels inside any box (the GrabCut protocol's "box interior")."""
    return box_owner(boxes, height, width) >= 0


def _grabcut_box(bgr: np.ndarray, box, padding: int, iterations: int,
                 context: float | None, prior: np.ndarray | None = None) -> np.ndarray | None:
    """GrabCut foreground inside one box as an ``(H, W)`` bool map, or None when one side has
    too few pixels for the colour models. ``prior``: an ``(H, W)`` foreground probability
    that splits the padded box into probable foreground (above 0.5) and probable
    background."""
    import cv2

    height, width = bgr.shape[:2]
    _, x0, y0, x1, y1 = box
    px0, py0 = max(0, x0 - padding), max(0, y0 - padding)
    px1, py1 = min(width - 1, x1 + padding), min(height - 1, y1 + padding)
    # the window GrabCut sees: the whole image, or the padded box grown by the context ring
    wx0, wy0, wx1, wy1 = 0, 0, width - 1, height - 1
    if context is not None:
        ring_x = max(MIN_CONTEXT, round(context * (x1 - x0 + 1)))
        ring_y = max(MIN_CONTEXT, round(context * (y1 - y0 + 1)))
        wx0, wy0 = max(0, px0 - ring_x), max(0, py0 - ring_y)
        wx1, wy1 = min(width - 1, px1 + ring_x), min(height - 1, py1 + ring_y)
    window = np.ascontiguousarray(bgr[wy0 : wy1 + 1, wx0 : wx1 + 1])
    mask = np.full(window.shape[:2], cv2.GC_BGD, dtype=np.uint8)
    mask[py0 - wy0 : py1 - wy0 + 1, px0 - wx0 : px1 - wx0 + 1] = cv2.GC_PR_FGD
    if prior is not None:
        inside = prior[py0 : py1 + 1, px0 : px1 + 1] > 0.5
        if inside.sum() >= GMM_COMPONENTS:  # else too few for a colour model: the whole box
            mask[py0 - wy0 : py1 - wy0 + 1, px0 - wx0 : px1 - wx0 + 1] = np.where(
                inside, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    if not (mask == cv2.GC_BGD).any():
        # a box over the whole window leaves no background sample: the border ring stands in
        mask[[0, -1], :] = cv2.GC_PR_BGD
        mask[:, [0, -1]] = cv2.GC_PR_BGD
    background = int(np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD)).sum())
    if background < GMM_COMPONENTS or mask.size - background < GMM_COMPONENTS:
        return None
    cv2.setRNGSeed(0)  # GrabCut seeds its k-means from OpenCV's global generator
    cv2.grabCut(window, mask, None, np.zeros((1, 65), np.float64),
                np.zeros((1, 65), np.float64), iterations, cv2.GC_INIT_WITH_MASK)
    foreground = np.zeros((height, width), dtype=bool)
    inside = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    foreground[y0 : y1 + 1, x0 : x1 + 1] = inside[y0 - wy0 : y1 - wy0 + 1,
                                                  x0 - wx0 : x1 - wx0 + 1]
    if prior is not None and not foreground.any():
        # started from the prior, GrabCut gave the whole box to the background: the prior's
        # colours did not separate, so the box starts as without it
        return _grabcut_box(bgr, box, padding, iterations, context)
    return foreground


def _box_priors(priors, checked, height: int, width: int) -> list[list[np.ndarray]] | None:
    """``priors`` as per image a list of ``(H, W)`` float arrays, one per box, checked."""
    if priors is None:
        return None
    if len(priors) != len(checked):
        raise ValueError(f"priors must hold one entry per image ({len(checked)}), got "
                         f"{len(priors)}")
    out = []
    for b, (image_priors, image_boxes) in enumerate(zip(priors, checked, strict=True)):
        maps = [torch.as_tensor(p).detach().float().cpu() for p in image_priors]
        if len(maps) != len(image_boxes) or any(m.shape != (height, width) for m in maps):
            raise ValueError(
                f"priors[{b}] must hold one ({height}, {width}) map per box "
                f"({len(image_boxes)}), got shapes {[tuple(m.shape) for m in maps]}")
        if any(not torch.isfinite(m).all() for m in maps):
            raise ValueError(f"priors[{b}] must be finite probabilities")
        out.append([m.numpy() for m in maps])
    return out


def grabcut_seeds(
    image,
    boxes,
    *,
    iterations: int = 5,
    padding: int = 0,
    context: float | None = None,
    priors=None,
    num_classes: int | None = None,
) -> Tensor:
    """Box seeds M_B from GrabCut in each box (thesis Eq. 3.2–3.3).

    - outside every box: background (0);
    - inside: the class of the smallest box whose GrabCut foreground holds the pixel;
    - inside some box but in no box's foreground: unknown (255).

    GrabCut (Rother et al., SIGGRAPH 2004, DOI 10.1145/1015706.1015720) runs through OpenCV on
    the whole image, initialised with everything outside the box padded by ``padding`` pixels as
    sure background. Boxes are taken as tight (the object touches each side), so the default
    adds nothing: padding 0 / 2 / 5 px gave 86.5 / 86.5 / 85.9% foreground IoU on the grabcut
    set and 71.0 / 69.0 / 67.6% on horses224 (``benchmarks/eval_weak.py``); give ``padding``
    for loose boxes. OpenCV's generator is
    reseeded for each box, so the result is deterministic. A box whose padded rectangle leaves
    fewer than 5 pixels on either side cannot fit the 5-component colour models and keeps its
    interior unknown.

    With ``context``, GrabCut sees only a window around each box: the padded box grown on the
    left and right by ``context`` times the box's width and on the top and bottom by
    ``context`` times its height (at least 16 px each), clipped to the image. The background
    model then comes from the surroundings of the object, and the cost of each box follows its
    own size instead of the image's.

    With ``priors`` (e.g. a network's foreground probability of each box,
    :mod:`graphseg.pipelines.box_network`), GrabCut starts from them instead of the whole box:
    inside each padded box, pixels above 0.5 are probable foreground and the others probable
    background, so the first colour models are fitted to the prior's split (OpenCV's
    ``GC_INIT_WITH_MASK``). A box whose prior has fewer than 5 pixels above 0.5, or from
    whose prior GrabCut keeps no foreground, is done as without a prior.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] or any image form of docs/images.md.
        boxes: one list of ``{"cls", "box"}`` dicts per image (a flat list for one image).
        iterations: GrabCut iterations.
        padding: pixels added around each box for the sure-background line (0 for tight
            boxes).
        context: width of the window around each box as a fraction of the box's sides, or
            None for the whole image.
        priors: None, or per image one ``(H, W)`` foreground probability per box (a tensor
            ``(K, H, W)`` or a list of K maps, in the order of that image's boxes).
        num_classes: when given, box classes must be below it.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    image = _checks.as_image_batch(image, "image", channels=3)
    batch, _, height, width = image.shape
    checked = _checks.check_boxes(boxes, batch, height, width, num_classes=num_classes)
    _checks.check_positive("iterations", iterations, integer=True)
    _checks.check_positive("padding", padding, integer=True, allow_zero=True)
    if context is not None:
        _checks.check_positive("context", context, allow_zero=True)
        if context == float("inf"):
            raise ValueError("context must be finite (None for the whole image), got inf")
    priors = _box_priors(priors, checked, height, width)
    pixels = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    seeds = torch.zeros(batch, height, width, dtype=torch.int64)
    for b, image_boxes in enumerate(checked):
        bgr = np.ascontiguousarray(pixels[b].permute(1, 2, 0).numpy()[:, :, ::-1])
        for _, x0, y0, x1, y1 in image_boxes:
            seeds[b, y0 : y1 + 1, x0 : x1 + 1] = UNKNOWN
        for k in _largest_first(image_boxes):
            prior = None if priors is None else priors[b][k]
            foreground = _grabcut_box(bgr, image_boxes[k], padding, iterations, context, prior)
            if foreground is not None:
                seeds[b][torch.from_numpy(foreground)] = image_boxes[k][0]
    return seeds.to(image.device)


def _seed_maps(names_and_maps) -> list[Tensor]:
    """Label maps of one batch and image size, as (B, H, W) int64 on the first one's device."""
    maps = []
    for name, value in names_and_maps:
        value = _checks.as_label_batch(value, name)
        if maps:
            _checks.same_size(name, value, names_and_maps[0][0], maps[0])
            value = value.to(maps[0].device)
        maps.append(value)
    return maps


def fuse_box_seeds(box_seeds, cam_seeds, boxes, *, num_classes: int | None = None) -> Tensor:
    r"""Fuses box seeds M_B with CAM seeds M_I into M_F (thesis Eq. 3.4).

    For a pixel p, with c the class of the smallest box containing p:

    .. math::
        M_F(p) = \begin{cases}
            M_B(p) & p \text{ outside every box} \\
            M_I(p) & M_I(p) = M_B(p) \\
            M_B(p) & c \text{ appears nowhere in } M_I \text{ inside that box} \\
            255 & \text{otherwise}
        \end{cases}

    The first matching branch wins.

    Args:
        box_seeds: ``(B, H, W)`` M_B (see :func:`grabcut_seeds`).
        cam_seeds: ``(B, H, W)`` M_I, e.g. :func:`graphseg.seeds.topk_seeds`.
        boxes: the boxes M_B came from.
        num_classes: when given, box classes must be below it.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    box_seeds, cam_seeds = _seed_maps([("box_seeds", box_seeds), ("cam_seeds", cam_seeds)])
    batch, height, width = box_seeds.shape
    checked = _checks.check_boxes(boxes, batch, height, width, num_classes=num_classes)
    owner = _owner(checked, height, width).to(box_seeds.device)
    unknown = torch.full_like(box_seeds, UNKNOWN)
    fused = torch.where(cam_seeds == box_seeds, cam_seeds, unknown)
    for b, image_boxes in enumerate(checked):
        for k, (cls, x0, y0, x1, y1) in enumerate(image_boxes):
            if not (cam_seeds[b, y0 : y1 + 1, x0 : x1 + 1] == cls).any():
                owned = (owner[b] == k) & (fused[b] == UNKNOWN)
                fused[b][owned] = box_seeds[b][owned]
    return torch.where(owner < 0, box_seeds, fused)


def confident_box_seeds(fused, box_seeds, cam_seeds, cam_scores: Tensor, boxes=None, *,
                        fraction: float = 0.4, background_threshold: float | None = 0.8,
                        min_score: float = 0.01, num_classes: int | None = None) -> Tensor:
    r"""The confident seeds M_g (thesis Eq. 3.5): the fusion of Eq. 3.4 redone with the
    confident CAM seeds M'_I in place of M_I (:func:`fuse_box_seeds`), kept where it agrees
    with M_F.

    .. math::
        M'_I(p) &= M_I(p) \text{ if } p \text{ is among the most confident pixels of its
            class, else } 255 \\
        M'_F &= \mathrm{fuse}(M_B, M'_I) \quad \text{(Eq. 3.4)} \\
        M_g(p) &= \begin{cases} M_F(p) & M'_F(p) = M_F(p) \\ 255 & \text{otherwise}
            \end{cases}

    so that :math:`M_g \subseteq M_F`: every pixel labelled in M_g is labelled in M_F with the
    same class. The most confident pixels are those of :func:`graphseg.seeds.topk_seeds`: for
    each foreground class the top ``fraction`` of its M_I pixels scoring above ``min_score``
    (the cut of :func:`graphseg.seeds.top_fraction`), and the background where its score
    exceeds ``background_threshold`` (None: ranked like the others).

    Notes:
        Eq. 3.5 as printed keeps M_F where it equals M_B, which every labelled pixel of M_F
        does (Eq. 3.4), so read literally M_g = M_F, while the text after it says M_g "has
        fewer annotated nodes" than M_F (73.2 → 78.8 mIoU). The authors' code resolves it:
        its README (zbf1991/A2GNN, ``README.md``, step 1) builds the box seed map by merging
        the GrabCut labels with the *confident* CAM labels (top 40%) of its ``infer_SEAM.py``,
        which keeps per foreground class the pixels above the score of rank ⌊0.6·n⌋ and the
        background above 0.8, while the full CAM labels ("top 100%") train the initial
        affinity network. M'_I labels a subset of M_I's pixels with the same classes, so the
        agreement branch of Eq. 3.4 can only lose pixels; its fallback branch ("the box class
        is absent from M'_I inside the box") can fire for M'_I where it does not for M_I and
        would then label pixels that M_F leaves unknown: keeping M'_F only where it agrees
        with M_F removes exactly those, so M_g ⊆ M_F always holds.

    Args:
        fused: ``(B, H, W)`` M_F from :func:`fuse_box_seeds` (with ``cam_seeds`` as M_I).
        box_seeds: ``(B, H, W)`` M_B.
        cam_seeds: ``(B, H, W)`` M_I: the CAMs' argmax labels (channel 0 background).
        cam_scores: ``(B, H, W)`` float score of each pixel's M_I label (its CAM score).
        boxes: the boxes M_B came from (required).
        fraction: share of each foreground class's M_I pixels counted as confident.
        background_threshold: background M_I pixels above it are confident.
        min_score: foreground M_I pixels at or below it are never confident.
        num_classes: when given, box classes must be below it.

    Returns:
        ``(B, H, W)`` int64 seeds, 255 = unknown.
    """
    fused, box_seeds, cam_seeds = _seed_maps(
        [("fused", fused), ("box_seeds", box_seeds), ("cam_seeds", cam_seeds)])
    if not isinstance(cam_scores, Tensor) or not cam_scores.is_floating_point():
        raise TypeError(f"cam_scores must be a float tensor of shape {tuple(fused.shape)}, "
                        f"got {_checks._describe(cam_scores)}")
    if boxes is None:
        raise TypeError("confident_box_seeds needs the boxes M_B came from (boxes=...): M_g "
                        "redoes the fusion of Eq. 3.4 with the confident CAM seeds")
    if cam_scores.dim() == 2:
        cam_scores = cam_scores.unsqueeze(0)
    _checks.same_size("cam_scores", cam_scores, "fused", fused)
    cam_scores = cam_scores.to(fused.device)
    first = 0 if background_threshold is None else 1
    classes = sorted(set(cam_seeds.unique().tolist()) - {UNKNOWN} - set(range(first)))
    confident = top_fraction(cam_scores, cam_seeds, fraction, min_score=min_score,
                             classes=classes)
    if background_threshold is not None:
        _checks.check_positive("background_threshold", background_threshold, allow_zero=True)
        confident |= (cam_seeds == 0) & (cam_scores > background_threshold)
    unknown = torch.full_like(fused, UNKNOWN)
    confident_cam = torch.where(confident, cam_seeds, unknown)
    confident_fused = fuse_box_seeds(box_seeds, confident_cam, boxes, num_classes=num_classes)
    return torch.where(confident_fused == fused, fused, unknown)
