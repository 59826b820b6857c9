"""One :class:`Preset` per weak kind: its seeds, its default method, where its recipes depart
from their own defaults, and the finishing. The one place where the kinds' settings are set
(none is tuned per image)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from graphseg import _checks
from graphseg.pipelines import registry
from graphseg.pipelines._common import RegistryView
from graphseg.pipelines.finishing import FinishConfig
from graphseg.pipelines.kinds import BoxSeeds, PointSeeds, ScribbleSeeds, TagSeeds
from graphseg.pipelines.recipes import (
    A2GNNConfig,
    HarmonicConfig,
    IALConfig,
    LearnedGraph,
    RandomWalkConfig,
    RegularizedConfig,
    RGBGraph,
)

__all__ = ["DEFAULT_METHOD", "PRESETS", "PRESET_SOURCES", "Preset", "resolve_preset",
           "source_preset"]

PRESET_SOURCES = ("graphseg", "paper", "official")
"""Where a preset's choices come from: graphseg's shipped settings (:data:`PRESETS`), the
thesis as printed, or the authors' released code (docs/paper_presets.md)."""


@dataclass(frozen=True)
class Preset:
    """The settings of one weak-label kind.

    Change one recipe's options without knowing the others:
    ``PRESETS["points"].replace(A2GNNConfig(epochs=20))``.
    """

    seeds: BoxSeeds | PointSeeds | ScribbleSeeds | TagSeeds
    """How the weak labels become seeds."""
    method: str
    """The default method of one image (:func:`~graphseg.pipelines.segment`)."""
    finish: FinishConfig = field(default_factory=FinishConfig)
    """Colour fusion and CRF after every recipe but ``grabcut``."""
    configs: tuple = ()
    """Recipe configs that replace the recipes' defaults for this kind (one per type)."""
    folder_method: str | None = None
    """The default method of a folder (:func:`~graphseg.pipelines.segment_dataset`, ``graphseg
    segment``), a recipe that learns across it; None: ``method``."""

    @property
    def folder_default(self) -> str:
        """The method a folder is labelled with when none is given."""
        return self.method if self.folder_method is None else self.folder_method

    def config(self, method: str):
        """The config the recipe ``method`` runs with under this preset."""
        recipe_config = registry.get_recipe_config(method)
        for config in self.configs:
            if type(config) is recipe_config:
                return config
        return None if recipe_config is None else recipe_config()

    def replace(self, *configs) -> Preset:
        """A copy with ``configs`` in place: a seeds config of this kind, a
        :class:`FinishConfig`, or recipe configs."""
        preset = self
        for config in configs:
            if isinstance(config, type(self.seeds)):
                preset = dataclasses.replace(preset, seeds=config)
            elif isinstance(config, FinishConfig):
                preset = dataclasses.replace(preset, finish=config)
            elif registry.is_recipe_config(config):
                kept = tuple(c for c in preset.configs if type(c) is not type(config))
                preset = dataclasses.replace(preset, configs=(*kept, config))
            else:
                raise TypeError(f"a preset of {type(self.seeds).__name__} takes seed, finish "
                                f"and recipe configs, got {type(config).__name__}")
        return preset


_SHARP = RGBGraph(sigma_rgb=0.05)
_SPARSE_FINISH = FinishConfig(colour_weight=0.3, crf="a2gnn")
_SMALL_WINDOW = LearnedGraph(radius=3)  # official code: 3 for points and image labels


def _walks(walk: RandomWalkConfig, a2gnn: A2GNNConfig) -> tuple:
    """The kind's random walk, also the one A²GNN fuses with (tags)."""
    return walk, dataclasses.replace(a2gnn, walk=walk)


PRESETS: dict[str, Preset] = {
    "boxes": Preset(BoxSeeds(), "grabcut", FinishConfig(colour_weight=1.0),
                    (A2GNNConfig(n_segments=1000),), folder_method="box-network"),
    "points": Preset(PointSeeds(), "harmonic", _SPARSE_FINISH,
                     (HarmonicConfig(graph=_SHARP),
                      *_walks(RandomWalkConfig(graph=_SHARP, learned=_SMALL_WINDOW),
                              A2GNNConfig(learned=_SMALL_WINDOW)))),
    "scribbles": Preset(ScribbleSeeds(), "harmonic", _SPARSE_FINISH,
                        (HarmonicConfig(graph=_SHARP),
                         *_walks(RandomWalkConfig(graph=_SHARP), A2GNNConfig()))),
    "tags": Preset(TagSeeds(), "a2gnn", FinishConfig(crf="a2gnn"),
                   _walks(RandomWalkConfig(learned=_SMALL_WINDOW),
                          A2GNNConfig(learned=_SMALL_WINDOW))),
}
"""The shipped settings of each weak kind: boxes fuse a colour model of the seeds (weight 1),
and a folder of boxes is labelled by ``box-network`` (learned across it; ``grabcut`` for one
image);
points and scribbles a sharper RGB graph (σ_rgb 0.05), the colour model with weight 0.3 and
the CRF (``a2gnn`` preset); tags the CRF."""


DEFAULT_METHOD: Mapping[str, str] = RegistryView(lambda: PRESETS,
                                                 lambda weak: PRESETS[weak].method)
"""The default method of each weak kind, from :data:`PRESETS`."""


def source_preset(weak: str, source: str) -> Preset:
    """The preset of ``weak`` labels whose every choice comes from one ``source``
    (:data:`PRESET_SOURCES`).

    ``"graphseg"`` is :data:`PRESETS` ``[weak]``. ``"paper"`` and ``"official"`` run A²GNN end
    to end as the thesis (§3.3–3.6) or the released code (zbf1991/A2GNN) does: attention,
    losses, schedule, width and learned-graph window of :meth:`A2GNNConfig.paper` /
    :meth:`~A2GNNConfig.official`, the affinity CNN trained on that window and loss
    (:meth:`LearnedGraph.paper` / :meth:`~LearnedGraph.official`), the CAMs' random walk on
    the same graph, no colour fusion, and the CRF of that source
    (:data:`~graphseg.pipelines.recipes.a2gnn.A2GNN_CRF`: PSA's for the thesis,
    ``crf_inference_inf``'s for the code). The other learned recipes take their
    paper form under both: IAL's operator (:class:`IALConfig` ``variant="paper"``; IAL has no
    released code) and RRM's dense energy (:meth:`RegularizedConfig.paper`, the values of
    RRM's training script). The seeds are the kind's (thesis Eq. 3.4–3.5, §3.6).
    """
    _checks.check_choice("weak", weak, tuple(PRESETS))
    _checks.check_choice("preset", source, PRESET_SOURCES)
    if source == "graphseg":
        return PRESETS[weak]
    a2gnn = (A2GNNConfig.paper(weak) if source == "paper" else A2GNNConfig.official(weak))
    return Preset(PRESETS[weak].seeds, "a2gnn", FinishConfig(crf=a2gnn.crf),
                  (a2gnn, a2gnn.walk, IALConfig(variant="paper"), RegularizedConfig.paper()))


def resolve_preset(weak: str, preset: Preset | str | None, settings=None) -> Preset:
    """The preset of a call: ``preset`` (a :class:`Preset` or a source of
    :data:`PRESET_SOURCES`, :func:`source_preset`), the deprecated ``settings`` converted, or
    :data:`PRESETS` ``[weak]``."""
    _checks.check_choice("weak", weak, tuple(PRESETS))
    if settings is not None:
        if preset is not None:
            raise ValueError("give preset or the deprecated settings, not both")
        warnings.warn("settings= is deprecated: pass preset=PRESETS[weak].replace(...) (or a "
                      "recipe's config=) from graphseg.pipelines", DeprecationWarning,
                      stacklevel=3)
        return settings.to_preset(weak)
    if preset is None:
        return PRESETS[weak]
    if isinstance(preset, str):
        return source_preset(weak, preset)
    if not isinstance(preset, Preset):
        raise TypeError(f"preset must be a graphseg.pipelines.Preset or one of "
                        f"{PRESET_SOURCES}, got {type(preset).__name__}")
    return preset
