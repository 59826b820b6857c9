"""Weak labels to masks, end to end.

One image goes ``labels → seeds → graph → propagation → probabilities → finishing → labels``:
:mod:`~graphseg.pipelines.kinds` (one module per weak kind) makes the seeds,
:mod:`~graphseg.pipelines.recipes` (one module per method, registered in
:mod:`~graphseg.pipelines.registry`) the probabilities, :mod:`~graphseg.pipelines.finishing`
fuses a colour model and runs the CRF, and :func:`segment` composes them with the settings of
:data:`PRESETS`. Data sets: :func:`segment_dataset`, :func:`propagate_dataset`,
:func:`train_affinity_dataset` and :func:`evaluate_folder`.
"""

from graphseg.pipelines._runner import Failure
from graphseg.pipelines.affinity import (
    AFFINITY_ARCHITECTURE,
    AffinityTraining,
    affinity_model,
    load_affinity,
    train_affinity_dataset,
)
from graphseg.pipelines.dataset import propagate_dataset, segment_dataset
from graphseg.pipelines.evaluate import evaluate_folder
from graphseg.pipelines.finishing import FinishConfig
from graphseg.pipelines.instances import box_instances
from graphseg.pipelines.kinds import (
    LABEL_KEYS,
    BoxSeeds,
    PointSeeds,
    ScribbleSeeds,
    TagSeeds,
    WeakInput,
)
from graphseg.pipelines.presets import (
    DEFAULT_METHOD,
    PRESET_SOURCES,
    PRESETS,
    Preset,
    source_preset,
)
from graphseg.pipelines.propagation import PROBABILITY_FORMATS, PROPAGATE_METHODS, propagate_image
from graphseg.pipelines.recipes import (
    A2GNNConfig,
    BoxNetworkConfig,
    HarmonicConfig,
    IALConfig,
    IALFolderConfig,
    IALResult,
    LearnedGraph,
    RandomWalkConfig,
    RegularizedConfig,
    RGBGraph,
    RoundReport,
    box_network_labels,
    fit_regularized,
    ial_em,
    train_ial_folder,
)
from graphseg.pipelines.recipes.ial import reference_energy
from graphseg.pipelines.registry import METHODS, Recipe, get_recipe, list_recipes, register_recipe
from graphseg.pipelines.segmentation import segment, weak_seeds

__all__ = ["A2GNNConfig", "AFFINITY_ARCHITECTURE", "affinity_model", "AffinityTraining",
           "box_instances", "box_network_labels", "BoxNetworkConfig", "BoxSeeds",
           "DEFAULT_METHOD", "evaluate_folder", "Failure",
           "FinishConfig", "fit_regularized", "get_recipe", "HarmonicConfig", "ial_em",
           "IALConfig", "IALFolderConfig", "IALResult", "LABEL_KEYS", "LearnedGraph",
           "list_recipes", "load_affinity",
           "METHODS", "PointSeeds", "Preset", "PRESET_SOURCES", "PRESETS", "PROBABILITY_FORMATS",
           "propagate_dataset", "propagate_image", "PROPAGATE_METHODS", "RandomWalkConfig",
           "Recipe", "reference_energy", "register_recipe", "RegularizedConfig", "RGBGraph",
           "RoundReport", "ScribbleSeeds", "segment", "segment_dataset", "source_preset",
           "TagSeeds", "train_affinity_dataset", "train_ial_folder", "weak_seeds", "WeakInput"]

_DEPRECATED = {"Settings": "PRESETS[weak].replace(...) and the recipes' configs",
               "SETTINGS": "PRESETS"}


def __getattr__(name: str):
    if name in _DEPRECATED:
        import warnings

        from graphseg.pipelines import _settings

        warnings.warn(f"graphseg.pipelines.{name} is deprecated: use graphseg.pipelines."
                      f"{_DEPRECATED[name]}", DeprecationWarning, stacklevel=2)
        return getattr(_settings, name)
    raise AttributeError(f"module 'graphseg.pipelines' has no attribute {name!r}")
