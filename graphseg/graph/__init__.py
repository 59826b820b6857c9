"""Pixel graphs on local windows and superpixel region graphs."""

from graphseg.graph.edges import EdgeGraph
from graphseg.graph.io import GRAPH_FORMATS, load_graph, save_graph
from graphseg.graph.offsets import OFFSET_SHAPES, opposite_offsets, window_offsets
from graphseg.graph.superpixel import (
    SuperpixelGraph,
    region_adjacency,
    superpixel_graph,
    superpixels,
)
from graphseg.graph.window import KERNELS, WindowGraph, feature_graph, pixel_graph

__all__ = [
    "GRAPH_FORMATS",
    "KERNELS",
    "EdgeGraph",
    "OFFSET_SHAPES",
    "SuperpixelGraph",
    "WindowGraph",
    "feature_graph",
    "load_graph",
    "opposite_offsets",
    "pixel_graph",
    "region_adjacency",
    "save_graph",
    "superpixel_graph",
    "superpixels",
    "window_offsets",
]
