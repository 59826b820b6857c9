"""Weak labels → seeds, one module per kind (each registers itself in :data:`KINDS`)."""

from graphseg.pipelines.kinds.base import (
    KINDS,
    LABEL_KEYS,
    Kind,
    WeakInput,
    expanded,
    register_kind,
    weak_input,
)
from graphseg.pipelines.kinds.boxes import BoxSeeds
from graphseg.pipelines.kinds.points import PointSeeds
from graphseg.pipelines.kinds.scribbles import ScribbleSeeds
from graphseg.pipelines.kinds.tags import TagSeeds

__all__ = ["KINDS", "LABEL_KEYS", "BoxSeeds", "Kind", "PointSeeds", "ScribbleSeeds", "TagSeeds",
           "WeakInput", "expanded", "register_kind", "weak_input"]
