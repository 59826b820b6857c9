"""graphseg: graph learning on images for weakly supervised semantic segmentation."""

from graphseg import data, metrics, ops, propagate, seeds
from graphseg._checks import MemoryLimitError, memory_limit, set_memory_limit
from graphseg.graph import (
    EdgeGraph,
    SuperpixelGraph,
    WindowGraph,
    feature_graph,
    opposite_offsets,
    pixel_graph,
    superpixel_graph,
    window_offsets,
)
from graphseg.propagate import (
    crf,
    harmonic,
    ial_refine,
    label_spreading,
    par,
    random_walk,
    random_walker_graph,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # graphseg.nn pulls in PyTorch Geometric's layers (about a second): load it on first use.
    if name == "nn":
        import importlib

        return importlib.import_module("graphseg.nn")
    raise AttributeError(f"module 'graphseg' has no attribute {name!r}")

__all__ = [
    "EdgeGraph",
    "MemoryLimitError",
    "SuperpixelGraph",
    "WindowGraph",
    "data",
    "crf",
    "feature_graph",
    "harmonic",
    "ial_refine",
    "label_spreading",
    "memory_limit",
    "metrics",
    "nn",
    "ops",
    "opposite_offsets",
    "par",
    "pixel_graph",
    "propagate",
    "random_walk",
    "random_walker_graph",
    "seeds",
    "set_memory_limit",
    "superpixel_graph",
    "window_offsets",
]
