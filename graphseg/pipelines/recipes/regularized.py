r"""Training a segmentation network with partial cross-entropy plus the Potts (dense energy)
loss: the regularized-loss recipe of the weak-supervision literature (Tang et al., "On
Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018; thesis ch. 2).

.. math::
    L = L_{pCE}(\sigma, \text{seeds}) + \lambda\, L_{dense}(\sigma, G)

with G the RGB + position kernel graph at the network's resolution. Like the other pipelines
it trains from scratch on one image (a :class:`~graphseg.nn.UnaryNet`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.window import pixel_graph
from graphseg.losses import dense_energy_loss, partial_cross_entropy
from graphseg.nn.train import resample_seeds
from graphseg.nn.unary import UnaryNet
from graphseg.pipelines._common import image_and_seeds, upsample, working
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.registry import register_recipe

__all__ = ["RegularizedConfig", "fit_regularized"]


@dataclass(frozen=True)
class RegularizedConfig:
    """Settings of :func:`fit_regularized` (one set for every image)."""

    size: int = 128
    """Working resolution: the longer image side is resized to this."""
    stride: int = 2
    steps: int = 150
    """Adam steps."""
    lr: float = 3e-3
    weight: float = 0.1
    """λ of the Potts loss."""
    radius: int = 3
    sigma_xy: float = 3.0
    sigma_rgb: float = 0.1
    """Window and bandwidths of the kernel graph G (colour in [0, 1])."""
    seed: int = 0


def fit_regularized(image, seeds: Tensor, *, num_classes: int | None = None,
                    config: RegularizedConfig | None = None) -> Tensor:
    """Trains a small network on one image's seeds with partial cross-entropy + λ Potts and
    returns its ``(C, H, W)`` class probabilities at image resolution.

    Args:
        image: one image: ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1], or any image
            form of docs/images.md.
        seeds: ``(H, W)`` or ``(1, H, W)`` int64 seeds, 255 = unknown.
        num_classes: C (default: largest seed + 1).
        config: :class:`RegularizedConfig`.
    """
    config = RegularizedConfig() if config is None else config
    _checks.check_positive("steps", config.steps, integer=True)
    _checks.check_positive("weight", config.weight, allow_zero=True)
    image, seeds, classes = image_and_seeds(image, seeds, num_classes)
    small = working(image, config.size)
    grid = tuple(-(-s // config.stride) for s in small.shape[2:])
    grid_seeds = resample_seeds(seeds, grid)
    kernel = pixel_graph(F.interpolate(small, size=grid, mode="bilinear", align_corners=False),
                         radius=config.radius, sigma_xy=config.sigma_xy,
                         sigma_rgb=config.sigma_rgb)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(config.seed)
        model = UnaryNet(classes, stride=config.stride)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        model.train()
        for _ in range(config.steps):
            logits = model(small)
            loss = partial_cross_entropy(logits, grid_seeds)
            if config.weight > 0:
                loss = loss + config.weight * dense_energy_loss(logits.softmax(1), kernel)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            return upsample(model(small).softmax(1), tuple(image.shape[2:]))[0]


@register_recipe("pce-potts", kinds=("boxes", "points", "scribbles"), config=RegularizedConfig,
                 summary="a network trained on the image with partial cross-entropy + "
                         "λ Potts (dense energy) loss")
def pce_potts(image: Tensor, inputs: WeakInput, config: RegularizedConfig, *, model=None,
              details: dict | None = None) -> Tensor:
    return fit_regularized(image, inputs.local, num_classes=len(inputs.classes),
                           config=config)[None]
