"""Weak labels to masks, end to end: seeds, graphs, propagation or A²GNN, and evaluation."""

from graphseg.pipelines.evaluate import evaluate_folder
from graphseg.pipelines.propagation import (
    PROBABILITY_FORMATS,
    PROPAGATE_METHODS,
    propagate_dataset,
    propagate_image,
)
from graphseg.pipelines.weak import (
    AFFINITY_ARCHITECTURE,
    DEFAULT_METHOD,
    LABEL_KEYS,
    METHODS,
    SETTINGS,
    AffinityTraining,
    Failure,
    Settings,
    affinity_model,
    load_affinity,
    segment,
    segment_dataset,
    train_affinity_dataset,
    weak_seeds,
)

__all__ = ["AFFINITY_ARCHITECTURE", "DEFAULT_METHOD", "LABEL_KEYS", "METHODS",
           "PROBABILITY_FORMATS", "PROPAGATE_METHODS", "SETTINGS", "AffinityTraining", "Failure",
           "Settings", "affinity_model", "evaluate_folder", "load_affinity", "propagate_dataset",
           "propagate_image", "segment", "segment_dataset", "train_affinity_dataset",
           "weak_seeds"]
