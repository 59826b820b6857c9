"""Boxes → seeds: GrabCut's M_B (thesis Eq. 3.2–3.3), or with class activation maps the
confident box seeds M_g (Eq. 3.4–3.5) that A²GNN trains on (thesis §3.3.2)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg import _checks
from graphseg.pipelines.kinds.base import WeakInput, cam_maps, register_kind
from graphseg.seeds import add_background, confident_box_seeds, fuse_box_seeds, grabcut_seeds

__all__ = ["BoxSeeds"]


@dataclass(frozen=True)
class BoxSeeds:
    """The seeds of boxes.

    Without CAMs they are GrabCut's M_B (:func:`graphseg.seeds.grabcut_seeds`: outside every
    box background, inside a box GrabCut's foreground takes the box's class, the rest is
    unknown). With ``labels["cams"]`` beside the boxes they are M_g
    (:func:`graphseg.seeds.confident_box_seeds`): M_B fused with the CAMs' argmax labels M_I
    into M_F (:func:`graphseg.seeds.fuse_box_seeds`, Eq. 3.4), then with their confident
    labels only (Eq. 3.5), so M_g ⊆ M_F.
    """

    context: float | None = 0.1
    """Window of GrabCut around each box, as a fraction of the box's sides (None = the whole
    image)."""
    cam_fraction: float = 0.4
    """With CAMs: each foreground class's top share of its argmax pixels counted confident."""
    cam_background: float = 0.8
    """With CAMs: background pixels whose score exceeds this are confident."""
    padding: int = 0
    """Pixels added around each box before GrabCut's sure-background line (0: the boxes are
    tight, as in the annotation files of docs/datasets.md; see
    :func:`graphseg.seeds.grabcut_seeds`)."""


@register_kind("boxes", label_keys=("boxes",), config=BoxSeeds, optional_keys=("cams",))
def box_input(image: Tensor, labels: dict, num_classes: int | None,
              config: BoxSeeds) -> WeakInput:
    boxes = labels["boxes"]
    height, width = image.shape[2:]
    _checks.check_boxes([boxes], 1, height, width, num_classes=num_classes)
    seeds = box_seeds = grabcut_seeds(image, [boxes], padding=config.padding,
                                      context=config.context, num_classes=num_classes)
    if labels.get("cams") is not None:
        # the image's tags are the classes of its boxes
        classes = sorted({box["cls"] for box in boxes})
        cams = cam_maps(labels["cams"], height, width, classes, num_classes,
                        classes_name="labels['boxes'] classes")
        scores, cam_labels = add_background(cams).max(dim=1)
        fused = fuse_box_seeds(seeds, cam_labels, [boxes], num_classes=num_classes)
        seeds = confident_box_seeds(fused, seeds, cam_labels, scores, [boxes],
                                    fraction=config.cam_fraction,
                                    background_threshold=config.cam_background,
                                    num_classes=num_classes)
    return WeakInput.from_seeds("boxes", seeds, boxes=boxes, box_seeds=box_seeds)
