"""Deprecated: the losses of the learned models moved to :mod:`graphseg.losses` (affinity CNN:
:mod:`graphseg.losses.affinity`; A²GNN: :mod:`graphseg.losses.seed`,
:mod:`graphseg.losses.pairwise`, :mod:`graphseg.losses.mp`); :mod:`graphseg.nn` still exports
them."""

import warnings

from graphseg.losses import (  # noqa: F401
    affinity_contrast_loss,
    affinity_loss,
    affinity_regular_loss,
    consistency_check,
    mp_loss,
    mp_pixels,
    potts_loss,
    seed_cross_entropy,
)
from graphseg.losses._common import IGNORE  # noqa: F401

warnings.warn("graphseg.nn.losses is deprecated: import the losses from graphseg.losses (or "
              "graphseg.nn)", DeprecationWarning, stacklevel=2)
