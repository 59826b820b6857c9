"""The ``Settings`` of graphseg 0.1 (one dataclass holding every knob of every method),
kept for one release: ``segment(settings=...)`` converts it to a :class:`Preset`."""

from __future__ import annotations

from dataclasses import dataclass

from graphseg.pipelines.finishing import FinishConfig
from graphseg.pipelines.kinds import BoxSeeds, PointSeeds, ScribbleSeeds, TagSeeds
from graphseg.pipelines.presets import PRESETS, Preset
from graphseg.pipelines.recipes import (
    A2GNNConfig,
    HarmonicConfig,
    IALConfig,
    LearnedGraph,
    RandomWalkConfig,
    RegularizedConfig,
    RGBGraph,
)


@dataclass(frozen=True)
class Settings:
    """Deprecated: the settings of one weak kind in one dataclass. Use
    ``PRESETS[weak].replace(config, ...)`` or ``segment(..., config=...)``."""

    box_context: float | None = 0.1
    point_radius: int = 5
    n_segments: int = 600
    graph_radius: int = 2
    sigma_xy: float = 2.0
    sigma_rgb: float = 0.1
    spreading_steps: int = 200
    epochs: int = 100
    hidden: int = 64
    grid_stride: int = 4
    ial: IALConfig = IALConfig()
    regularized: RegularizedConfig = RegularizedConfig()
    affinity_size: int = 128
    affinity_radius: int = 4
    scribble_radius: int = 1
    colour_weight: float = 0.0
    crf: str | None = None
    walk_weight: float = 3.0
    walk_size: int = 128
    cam_fraction: float = 0.4
    cam_background: float = 0.8

    def to_preset(self, weak: str) -> Preset:
        """The :class:`Preset` of ``weak`` holding these settings."""
        seeds = {"boxes": BoxSeeds(self.box_context),
                 "points": PointSeeds(self.point_radius, self.n_segments),
                 "scribbles": ScribbleSeeds(self.scribble_radius, self.n_segments),
                 "tags": TagSeeds(self.cam_fraction, self.cam_background)}[weak]
        graph = RGBGraph(self.graph_radius, self.sigma_xy, self.sigma_rgb)
        learned = LearnedGraph(self.affinity_size, self.affinity_radius)
        walk = RandomWalkConfig(graph, self.spreading_steps, self.walk_size, learned)
        a2gnn = A2GNNConfig(self.epochs, self.hidden, self.grid_stride, self.n_segments,
                            learned, self.walk_weight, walk)
        return Preset(seeds, PRESETS[weak].method, FinishConfig(self.colour_weight, self.crf),
                      (HarmonicConfig(graph), walk, a2gnn, self.ial, self.regularized))


_SPARSE = {"sigma_rgb": 0.05, "colour_weight": 0.3, "crf": "a2gnn"}
SETTINGS = {"boxes": Settings(n_segments=1000, colour_weight=1.0),
            "points": Settings(affinity_radius=3, **_SPARSE),
            "scribbles": Settings(**_SPARSE),
            "tags": Settings(affinity_radius=3, crf="a2gnn")}
"""Deprecated: the 0.1 settings of each weak kind, the same as :data:`PRESETS`."""
