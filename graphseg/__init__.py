"""graphseg: graph learning on images for weakly supervised semantic segmentation."""

from graphseg import ops
from graphseg.graph import opposite_offsets, window_offsets

__version__ = "0.1.0"

__all__ = ["ops", "opposite_offsets", "window_offsets"]
