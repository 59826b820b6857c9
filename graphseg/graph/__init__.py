"""Pixel graphs on local windows."""

from graphseg.graph.offsets import OFFSET_SHAPES, opposite_offsets, window_offsets

__all__ = ["OFFSET_SHAPES", "opposite_offsets", "window_offsets"]
