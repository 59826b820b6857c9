"""Scribbles → strokes expanded to superpixels, M_S (thesis §3.6.1; class 0 = background); with
class activation maps, the affinity CNN trains on M_S merged with their confident seeds M'_I."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from graphseg.pipelines.kinds.base import WeakInput, cam_maps, cam_seeds, expanded, register_kind
from graphseg.seeds import merge_seeds, rasterize_scribbles

__all__ = ["ScribbleSeeds"]


@dataclass(frozen=True)
class ScribbleSeeds:
    """The seeds of scribbles: M_S, the strokes expanded to superpixels. With
    ``labels["cams"]`` beside the scribbles, the affinity CNN
    (:attr:`WeakInput.affinity_seeds`) trains on M_S merged with the CAMs' confident seeds M'_I
    (thesis §3.6.1; :func:`graphseg.seeds.merge_seeds`: M_S where it labels a pixel, M'_I
    elsewhere), the CAMs kept for the scribbled foreground classes; the per-image recipe still
    starts from M_S."""

    radius: int = 1
    """Stroke half-width, in pixels."""
    n_segments: int = 600
    """SLIC superpixels the strokes are expanded to."""
    cam_fraction: float = 0.4
    """With CAMs: each foreground class's top share of its argmax pixels in M'_I."""
    cam_background: float = 0.8
    """With CAMs: background in M'_I where its score exceeds this."""


@register_kind("scribbles", label_keys=("scribbles",), config=ScribbleSeeds,
               optional_keys=("cams",))
def scribble_input(image: Tensor, labels: dict, num_classes: int | None,
                   config: ScribbleSeeds) -> WeakInput:
    if not labels["scribbles"]:
        raise ValueError("labels['scribbles'] is empty: at least one is needed")
    seeds = rasterize_scribbles([labels["scribbles"]], *image.shape[2:], radius=config.radius,
                                num_classes=num_classes)
    inputs = expanded("scribbles", image, seeds, config.n_segments)
    if labels.get("cams") is not None:
        classes = sorted({s["cls"] for s in labels["scribbles"]} - {0})
        cams = cam_maps(labels["cams"], *image.shape[2:], classes, num_classes,
                        classes_name="labels['scribbles'] classes")
        inputs.affinity_seeds = merge_seeds(
            inputs.seeds, cam_seeds(cams, fraction=config.cam_fraction,
                                    background=config.cam_background))
    return inputs
