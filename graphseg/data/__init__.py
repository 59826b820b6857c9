"""Segmentation data sets with weak labels (tags, boxes, points) as torch Datasets."""

from graphseg.data.datasets import (
    IMAGE_SUFFIXES,
    VOC_CLASSES,
    WEAK_KINDS,
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
    "SegmentationFolder",
    "VOCSegmentation",
    "collate_samples",
    "read_cams",
    "read_image",
    "read_label_map",
]
