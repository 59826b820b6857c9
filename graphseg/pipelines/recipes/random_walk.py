"""``random-walk``: the seeds spread over the RGB pixel graph (label spreading, Zhou et al.),
or, from image tags, AffinityNet's random walk of the CAMs (preset ``"a2gnn"``: β 8, t 64)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from graphseg.nn.affinity import AffinityCNN
from graphseg.pipelines._common import resize_image
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.recipes._graphs import LearnedGraph, RGBGraph
from graphseg.pipelines.registry import register_recipe
from graphseg.propagate import label_spreading, random_walk


@dataclass(frozen=True)
class RandomWalkConfig:
    """The random walk of seeds or CAMs."""

    graph: RGBGraph = field(default_factory=RGBGraph)
    """The RGB graph of both walks."""
    steps: int = 200
    """Label spreading iterations (seeds)."""
    size: int = 128
    """Longer side of the RGB graph of the CAMs' walk (smaller images keep their size)."""
    learned: LearnedGraph = field(default_factory=LearnedGraph)
    """The CAMs' walk on a trained affinity CNN's graph (``checkpoint=``)."""


def cam_walk(image: Tensor, cams: Tensor, config: RandomWalkConfig,
             model: AffinityCNN | None) -> Tensor:
    """``(1, 1 + C, H, W)`` class probabilities of AffinityNet's walk of the CAMs, on the
    learned graph when ``model`` is given, else on the RGB graph."""
    height, width = image.shape[2:]
    graph = (config.learned.build(image, model) if model is not None
             else config.graph.build(resize_image(image, min(config.size, max(height, width)))))
    walk = random_walk(graph, cams.to(graph.weight.device), preset="a2gnn").cpu()
    return walk / walk.sum(1, keepdim=True).clamp_min(1e-12)


@register_recipe("random-walk", kinds=("points", "scribbles", "tags"), config=RandomWalkConfig,
                 learned_graph=("tags",),
                 summary="label spreading of the seeds over the RGB pixel graph; from tags, "
                         "AffinityNet's random walk of the CAMs")
def random_walk_recipe(image: Tensor, inputs: WeakInput, config: RandomWalkConfig, *,
                       model: AffinityCNN | None = None, details: dict | None = None) -> Tensor:
    if inputs.cams is not None:
        return cam_walk(image, inputs.cams, config, model)
    scores = label_spreading(config.graph.build(image), inputs.local,
                             num_classes=len(inputs.classes), num_steps=config.steps)
    scores = scores.clamp_min(0)
    return scores / scores.sum(1, keepdim=True).clamp_min(1e-12)
