"""``harmonic``: Grady's random walker from the seeds on the RGB pixel graph."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.recipes._graphs import RGBGraph
from graphseg.pipelines.registry import register_recipe
from graphseg.propagate import harmonic


@dataclass(frozen=True)
class HarmonicConfig:
    """The graph of :func:`graphseg.harmonic`."""

    graph: RGBGraph = field(default_factory=RGBGraph)


@register_recipe("harmonic", kinds=("boxes", "points", "scribbles"), config=HarmonicConfig,
                 summary="Grady's random walker (harmonic solve) from the seeds on the RGB "
                         "pixel graph")
def harmonic_recipe(image: Tensor, inputs: WeakInput, config: HarmonicConfig, *, model=None,
                    details: dict | None = None) -> Tensor:
    return harmonic(config.graph.build(image), inputs.local, num_classes=len(inputs.classes))
