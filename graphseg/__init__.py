"""graphseg: graph learning on images for weakly supervised semantic segmentation."""

from graphseg import data, metrics, ops, propagate, seeds
from graphseg._checks import MemoryLimitError, memory_limit, set_memory_limit
from graphseg.graph import (
    EdgeGraph,
    SuperpixelGraph,
    WindowGraph,
    feature_graph,
    load_graph,
    opposite_offsets,
    pixel_graph,
    save_graph,
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


_PIPELINES = ("evaluate_folder", "propagate_dataset", "propagate_image", "segment",
              "segment_dataset")


def __getattr__(name: str):
    # graphseg.nn (and the pipelines, which use it) pull in PyTorch Geometric's layers, about a
    # second: they load on first use
    import importlib

    if name in ("nn", "pipelines"):
        return importlib.import_module(f"graphseg.{name}")
    if name in _PIPELINES:
        return getattr(importlib.import_module("graphseg.pipelines"), name)
    raise AttributeError(f"module 'graphseg' has no attribute {name!r}")

__all__ = [
    "EdgeGraph",
    "MemoryLimitError",
    "SuperpixelGraph",
    "WindowGraph",
    "crf",
    "data",
    "evaluate_folder",
    "feature_graph",
    "harmonic",
    "ial_refine",
    "label_spreading",
    "load_graph",
    "memory_limit",
    "metrics",
    "nn",
    "ops",
    "opposite_offsets",
    "par",
    "pipelines",
    "pixel_graph",
    "propagate",
    "propagate_dataset",
    "propagate_image",
    "random_walk",
    "random_walker_graph",
    "save_graph",
    "seeds",
    "segment",
    "segment_dataset",
    "set_memory_limit",
    "superpixel_graph",
    "window_offsets",
]
