"""Segmentation data sets with weak labels (tags, boxes, points, scribbles), and image folders
with seed maps or CAMs, as torch Datasets."""

from graphseg.data.datasets import (
    IMAGE_SUFFIXES,
    VOC_CLASSES,
    WEAK_KINDS,
    LabelMaps,
    PropagationFolder,
    SegmentationFolder,
    VOCSegmentation,
    collate_samples,
    read_cams,
    read_image,
    read_label_map,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "VOC_CLASSES",
    "WEAK_KINDS",
    "LabelMaps",
    "PropagationFolder",
    "SegmentationFolder",
    "VOCSegmentation",
    "collate_samples",
    "read_cams",
    "read_image",
    "read_label_map",
]
