"""The two graphs the recipes propagate on: the RGB + position kernel graph and the learned
graph of a trained affinity CNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from graphseg.graph.window import WindowGraph, pixel_graph
from graphseg.nn.affinity import AffinityCNN
from graphseg.pipelines._common import resize_image


@dataclass(frozen=True)
class RGBGraph:
    """The colour + position Gaussian kernel graph (:func:`graphseg.pixel_graph`)."""

    radius: int = 2
    """Window radius."""
    sigma_xy: float = 2.0
    sigma_rgb: float = 0.1
    """Position and colour bandwidths (colour in [0, 1])."""

    def build(self, image: Tensor) -> WindowGraph:
        return pixel_graph(image, radius=self.radius, sigma_xy=self.sigma_xy,
                           sigma_rgb=self.sigma_rgb)


@dataclass(frozen=True)
class LearnedGraph:
    """The learned graph of a trained affinity CNN (thesis Eq. 3.14) at a working
    resolution, on a square window (the official code's)."""

    size: int = 128
    """Longer side of the working resolution, in training and at inference."""
    radius: int = 4
    """Square window radius (official code: 4 for boxes and scribbles, 3 for points and image
    labels)."""

    def build(self, image: Tensor, model: AffinityCNN) -> WindowGraph:
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            return model.to_graph(resize_image(image, self.size).to(device), radius=self.radius,
                                  shape="square")
