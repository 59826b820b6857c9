"""Deprecated: the regularized-loss recipe moved to
:mod:`graphseg.pipelines.recipes.regularized` (its names are also in
:mod:`graphseg.pipelines`)."""

import warnings

from graphseg.pipelines.recipes.regularized import RegularizedConfig, fit_regularized  # noqa: F401

warnings.warn("graphseg.pipelines.regularized is deprecated: import RegularizedConfig and "
              "fit_regularized from graphseg.pipelines", DeprecationWarning, stacklevel=2)
