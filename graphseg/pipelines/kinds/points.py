"""Clicks → disks expanded to superpixels, M_P (thesis §3.6.1; class 0 = background); with
class activation maps, the affinity CNN trains on their confident seeds M'_I instead."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg.pipelines.kinds.base import WeakInput, cam_maps, cam_seeds, expanded, register_kind
from graphseg.seeds import rasterize_points

__all__ = ["PointSeeds"]


@dataclass(frozen=True)
class PointSeeds:
    """The seeds of clicks: M_P, the disks expanded to superpixels. With ``labels["cams"]``
    beside the points, the affinity CNN (:attr:`WeakInput.affinity_seeds`) trains on the CAMs'
    confident seeds M'_I alone (thesis §3.6.1), the CAMs kept for the clicked foreground
    classes; the per-image recipe still starts from M_P."""

    radius: int = 5
    """Disk radius of each click, in pixels (the peer's radius on voc14)."""
    n_segments: int = 600
    """SLIC superpixels the disks are expanded to."""
    cam_fraction: float = 0.4
    """With CAMs: each foreground class's top share of its argmax pixels in M'_I."""
    cam_background: float = 0.8
    """With CAMs: background in M'_I where its score exceeds this."""


@register_kind("points", label_keys=("points",), config=PointSeeds, optional_keys=("cams",))
def point_input(image: Tensor, labels: dict, num_classes: int | None,
                config: PointSeeds) -> WeakInput:
    if not labels["points"]:
        raise ValueError("labels['points'] is empty: at least one is needed")
    seeds = rasterize_points([labels["points"]], *image.shape[2:], radius=config.radius,
                             num_classes=num_classes)
    inputs = expanded("points", image, seeds, config.n_segments)
    if labels.get("cams") is not None:
        classes = sorted({p["cls"] for p in labels["points"]} - {0})
        cams = cam_maps(labels["cams"], *image.shape[2:], classes, num_classes,
                        classes_name="labels['points'] classes")
        inputs.affinity_seeds = cam_seeds(cams, fraction=config.cam_fraction,
                                          background=config.cam_background)
    return inputs
