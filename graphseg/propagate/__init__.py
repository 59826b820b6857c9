"""Non-learned propagation on pixel graphs and PyG graphs."""

from graphseg.propagate.appearance import colour_posterior, fuse_appearance
from graphseg.propagate.dense_crf import (
    CRF_METHODS,
    CRF_PRESETS,
    crf,
    crf_kernels,
    dense_crf,
    lattice_kernels,
)
from graphseg.propagate.harmonic import harmonic, random_walker_graph
from graphseg.propagate.ial import ial_refine
from graphseg.propagate.lattice import PermutohedralLattice, lattice_filter
from graphseg.propagate.pixel_adaptive import par, par_affinity
from graphseg.propagate.random_walk import (
    RANDOM_WALK_PRESETS,
    background_channel,
    irn_affinity,
    psa_border_mask,
    random_walk,
    transition,
)
from graphseg.propagate.spreading import label_spreading
from graphseg.propagate.unia import (
    MCR_VARIANTS,
    mutual_complementing_refinement,
    sinkhorn,
    sinkhorn_graph,
    unia_affinity,
    unia_random_walk,
)

__all__ = [
    "CRF_METHODS",
    "CRF_PRESETS",
    "MCR_VARIANTS",
    "PermutohedralLattice",
    "RANDOM_WALK_PRESETS",
    "background_channel",
    "colour_posterior",
    "crf",
    "crf_kernels",
    "dense_crf",
    "fuse_appearance",
    "harmonic",
    "ial_refine",
    "irn_affinity",
    "label_spreading",
    "lattice_filter",
    "lattice_kernels",
    "mutual_complementing_refinement",
    "par",
    "par_affinity",
    "psa_border_mask",
    "random_walk",
    "random_walker_graph",
    "sinkhorn",
    "sinkhorn_graph",
    "transition",
    "unia_affinity",
    "unia_random_walk",
]
