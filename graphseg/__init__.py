"""graphseg: graph learning on images for weakly supervised semantic segmentation."""

from graphseg import ops
from graphseg.graph import (
    WindowGraph,
    feature_graph,
    opposite_offsets,
    pixel_graph,
    window_offsets,
)

__version__ = "0.1.0"

__all__ = [
    "WindowGraph",
    "feature_graph",
    "ops",
    "opposite_offsets",
    "pixel_graph",
    "window_offsets",
]
