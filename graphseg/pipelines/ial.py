"""Deprecated: IAL's EM loop moved to :mod:`graphseg.pipelines.recipes.ial` (its names are
also in :mod:`graphseg.pipelines`), ``UnaryNet`` to :mod:`graphseg.nn`."""

import warnings

from graphseg.nn.unary import UnaryNet  # noqa: F401
from graphseg.pipelines.recipes.ial import (  # noqa: F401
    IALConfig,
    IALResult,
    RoundReport,
    ial_em,
    reference_energy,
)

warnings.warn("graphseg.pipelines.ial is deprecated: import IALConfig, ial_em, ... from "
              "graphseg.pipelines (UnaryNet from graphseg.nn)", DeprecationWarning, stacklevel=2)
