"""Weak labels to masks, end to end: seeds, graphs, propagation or A²GNN, and evaluation."""

from graphseg.pipelines.evaluate import evaluate_folder
from graphseg.pipelines.weak import (
    METHODS,
    SETTINGS,
    Failure,
    Settings,
    segment,
    segment_dataset,
)

__all__ = ["METHODS", "SETTINGS", "Failure", "Settings", "evaluate_folder", "segment",
           "segment_dataset"]
