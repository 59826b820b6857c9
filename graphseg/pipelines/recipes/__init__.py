"""The methods of :func:`~graphseg.pipelines.segment`, one module each; importing a module
registers its recipe (:mod:`graphseg.pipelines.registry`), in the order below, which is the
order of ``METHODS`` and of the command line's help."""
# ruff: noqa: I001 (the import order is the registration order)

from graphseg.pipelines.recipes._graphs import LearnedGraph, RGBGraph
from graphseg.pipelines.recipes.grabcut import grabcut
from graphseg.pipelines.recipes.harmonic import HarmonicConfig
from graphseg.pipelines.recipes.random_walk import RandomWalkConfig
from graphseg.pipelines.recipes.a2gnn import A2GNNConfig
from graphseg.pipelines.recipes.ial import IALConfig, IALResult, RoundReport, ial_em
from graphseg.pipelines.recipes.regularized import RegularizedConfig, fit_regularized
from graphseg.pipelines.recipes.box_network import BoxNetworkConfig, box_network_labels
from graphseg.pipelines.recipes.ial_folder import IALFolderConfig, train_ial_folder

__all__ = ["A2GNNConfig", "BoxNetworkConfig", "HarmonicConfig", "IALConfig", "IALFolderConfig",
           "IALResult", "LearnedGraph", "RGBGraph", "RandomWalkConfig", "RegularizedConfig",
           "RoundReport", "box_network_labels", "fit_regularized", "grabcut", "ial_em",
           "train_ial_folder"]
