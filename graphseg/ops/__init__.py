"""Window primitives: ``local_affinity`` and ``window_aggregate`` with backend dispatch."""

from graphseg.ops.window_ops import (
    AFFINITY_KINDS,
    backend,
    extension_available,
    local_affinity,
    set_backend,
    use_backend,
    window_aggregate,
    window_aggregate_transpose,
)

__all__ = [
    "AFFINITY_KINDS",
    "backend",
    "extension_available",
    "local_affinity",
    "set_backend",
    "use_backend",
    "window_aggregate",
    "window_aggregate_transpose",
]
