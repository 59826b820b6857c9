"""Seed maps from weak labels: every output is ``(B, H, W)`` int64 with 255 = unknown."""

from graphseg.seeds.boxes import (
    box_interior,
    box_owner,
    confident_box_seeds,
    fuse_box_seeds,
    grabcut_seeds,
)
from graphseg.seeds.cam import (
    CAM_SCALES,
    add_background,
    check_cam_layout,
    multiscale_cam,
    normalize_cam,
    reliable_seeds,
    top_fraction,
    topk_seeds,
)
from graphseg.seeds.expand import (
    expand_seeds,
    merge_seeds,
    rasterize_points,
    rasterize_scribbles,
    region_labels,
)
from graphseg.seeds.mining import mine_confident_regions
from graphseg.seeds.pairs import PairLabels, border_band, pair_labels

__all__ = [
    "CAM_SCALES",
    "PairLabels",
    "add_background",
    "border_band",
    "box_interior",
    "box_owner",
    "check_cam_layout",
    "confident_box_seeds",
    "expand_seeds",
    "fuse_box_seeds",
    "grabcut_seeds",
    "merge_seeds",
    "mine_confident_regions",
    "multiscale_cam",
    "normalize_cam",
    "pair_labels",
    "rasterize_points",
    "rasterize_scribbles",
    "region_labels",
    "reliable_seeds",
    "top_fraction",
    "topk_seeds",
]
