"""Pixel graphs on local windows."""

from graphseg.graph.offsets import OFFSET_SHAPES, opposite_offsets, window_offsets
from graphseg.graph.window import KERNELS, WindowGraph, feature_graph, pixel_graph

__all__ = [
    "KERNELS",
    "OFFSET_SHAPES",
    "WindowGraph",
    "feature_graph",
    "opposite_offsets",
    "pixel_graph",
    "window_offsets",
]
