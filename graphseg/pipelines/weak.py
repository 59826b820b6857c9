"""Deprecated: the single module of graphseg 0.1's pipelines. Its names now live in
:mod:`graphseg.pipelines` (``segment``, ``segment_dataset``, ``train_affinity_dataset``,
``weak_seeds``, ``PRESETS`` …); this module re-exports them for one release."""

import warnings

from graphseg.pipelines import (  # noqa: F401
    AFFINITY_ARCHITECTURE,
    DEFAULT_METHOD,
    LABEL_KEYS,
    METHODS,
    AffinityTraining,
    Failure,
    affinity_model,
    load_affinity,
    segment,
    segment_dataset,
    train_affinity_dataset,
    weak_seeds,
)
from graphseg.pipelines._settings import SETTINGS, Settings  # noqa: F401

warnings.warn("graphseg.pipelines.weak is deprecated: import from graphseg.pipelines "
              "(Settings/SETTINGS: use graphseg.pipelines.PRESETS and the recipes' configs)",
              DeprecationWarning, stacklevel=2)
