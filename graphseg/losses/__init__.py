"""Every loss of graphseg, each a function (and, for the losses one trains with, an
``nn.Module``), vectorised over windowed graphs (no N×N tensors), grouped by what it serves:

- :mod:`~graphseg.losses.seed`: seed cross-entropy (A²GNN Eq. 3.21), partial cross-entropy;
- :mod:`~graphseg.losses.pairwise`: Potts L_reg, quadratic, dense energy with RRM's filter
  (windowed, and RRM's fully connected energy: exact for small images or on a coarse grid);
- :mod:`~graphseg.losses.dfr`: DFR's dynamic feature regularised loss and its head's losses;
- :mod:`~graphseg.losses.affinity`: the affinity CNN's L_Ac and L_Ar (thesis §3.3.3);
- :mod:`~graphseg.losses.mp`: A²GNN's multi-point loss and consistency checking;
- :mod:`~graphseg.losses.clustering`: entropy, normalised cut, kernel k-means, BCD;
- :mod:`~graphseg.losses.contrastive`: UniA's contrastive affinity loss;
- :mod:`~graphseg.losses.reliability`: CoSA's reliability weighting and dynamic threshold.
"""

from graphseg.losses.affinity import affinity_contrast_loss, affinity_loss, affinity_regular_loss
from graphseg.losses.clustering import (
    BCDLoss,
    EntropyLoss,
    KernelKMeansLoss,
    NormalizedCutLoss,
    bcd_loss,
    entropy_loss,
    kernel_kmeans_loss,
    normalized_cut_loss,
)
from graphseg.losses.contrastive import (
    CONTRASTIVE_VARIANTS,
    ContrastiveAffinityLoss,
    contrastive_affinity_loss,
)
from graphseg.losses.dfr import (
    HEAD_LABELS,
    PAIR_SETS,
    DFRLoss,
    DFRObjective,
    FeatureDistanceLoss,
    FeatureRegularLoss,
    dfr_kernel,
    dfr_loss,
    dfr_objective,
    dfr_pseudo_labels,
    feature_distance_loss,
    feature_regular_loss,
)
from graphseg.losses.mp import consistency_check, mp_loss, mp_pixels
from graphseg.losses.pairwise import (
    DENSE_METHODS,
    DENSE_NORMALIZATIONS,
    DenseEnergyLoss,
    FullyConnectedEnergyLoss,
    QuadraticPairwiseLoss,
    dense_energy_loss,
    fully_connected_energy_loss,
    potts_loss,
    quadratic_pairwise_loss,
)
from graphseg.losses.reliability import (
    DynamicThreshold,
    ReliabilityWeightedCrossEntropy,
    cam_perplexity,
    perplexity_reliability,
    reliability_weighted_cross_entropy,
    reliability_weights,
    search_threshold,
)
from graphseg.losses.seed import PartialCrossEntropyLoss, partial_cross_entropy, seed_cross_entropy

__all__ = [
    "BCDLoss",
    "CONTRASTIVE_VARIANTS",
    "ContrastiveAffinityLoss",
    "DENSE_METHODS",
    "DENSE_NORMALIZATIONS",
    "DFRLoss",
    "DFRObjective",
    "DenseEnergyLoss",
    "DynamicThreshold",
    "EntropyLoss",
    "FeatureDistanceLoss",
    "FeatureRegularLoss",
    "FullyConnectedEnergyLoss",
    "HEAD_LABELS",
    "KernelKMeansLoss",
    "NormalizedCutLoss",
    "PAIR_SETS",
    "PartialCrossEntropyLoss",
    "QuadraticPairwiseLoss",
    "ReliabilityWeightedCrossEntropy",
    "affinity_contrast_loss",
    "affinity_loss",
    "affinity_regular_loss",
    "bcd_loss",
    "cam_perplexity",
    "consistency_check",
    "contrastive_affinity_loss",
    "dense_energy_loss",
    "dfr_kernel",
    "dfr_loss",
    "dfr_objective",
    "dfr_pseudo_labels",
    "entropy_loss",
    "feature_distance_loss",
    "feature_regular_loss",
    "fully_connected_energy_loss",
    "kernel_kmeans_loss",
    "mp_loss",
    "mp_pixels",
    "normalized_cut_loss",
    "partial_cross_entropy",
    "perplexity_reliability",
    "potts_loss",
    "quadratic_pairwise_loss",
    "reliability_weighted_cross_entropy",
    "reliability_weights",
    "search_threshold",
    "seed_cross_entropy",
]
