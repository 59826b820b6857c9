r"""Training a segmentation network with partial cross-entropy plus a regularized loss
(Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018):

.. math::
    L = L_{pCE}(\sigma, \text{seeds}) + \lambda\, E(\sigma, G)

trained from scratch on one image (a :class:`~graphseg.nn.UnaryNet`). Two energies E:

- ``energy="potts"`` (the shipped ``pce-potts``): graphseg's *windowed* Potts loss
  (:func:`~graphseg.losses.dense_energy_loss`) on the RGB + position kernel graph of radius 3,
  σ_xy = 3, σ_rgb = 0.1, λ = 0.1 -- a local colour-edge term chosen for speed on one image,
  not a method of the thesis;
- ``energy="dense"`` (:meth:`RegularizedConfig.paper`): RRM's dense energy over all pixel
  pairs (thesis §2.3, Eq. 2.18–2.21: σ_d = 100, σ_r = 15 on 0–255 colour, Potts, the soft
  filter of the seeds) through :func:`~graphseg.losses.fully_connected_energy_loss` on the
  permutohedral lattice (``method="lattice"``; Tang et al.'s released rloss code also filters
  with a permutohedral lattice). On the paper's 160² grid one loss and its gradient took 0.1 s
  there against 95 s with ``method="coarse"`` on an image of noise, whose colours leave the
  coarse nodes as many as the pixels.

RRM itself trains a DeepLab network on the whole data set with this loss on top of its
classification and reliable-region losses; this recipe is the loss, not that network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.window import pixel_graph
from graphseg.losses import dense_energy_loss, fully_connected_energy_loss, partial_cross_entropy
from graphseg.nn.train import resample_seeds
from graphseg.nn.unary import UnaryNet
from graphseg.pipelines._common import image_and_seeds, upsample, working
from graphseg.pipelines.kinds import WeakInput
from graphseg.pipelines.registry import register_recipe

__all__ = ["ENERGIES", "RegularizedConfig", "fit_regularized"]

ENERGIES = ("potts", "dense")


@dataclass(frozen=True)
class RegularizedConfig:
    """Settings of :func:`fit_regularized` (one set for every image). The defaults are the
    shipped ``pce-potts``; :meth:`paper` gives RRM's dense energy."""

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
    """Window and bandwidths of the kernel graph G (colour in [0, 1]; ``energy="potts"``)."""
    seed: int = 0
    energy: str = "potts"
    """``"potts"``: the windowed Potts loss on G; ``"dense"``: the fully connected energy over
    all pixel pairs of the network's grid (σ_d = 100 px, σ_r = 15 on 0–255 colour), summed
    per image, with RRM's soft filter of the seeds."""

    def __post_init__(self) -> None:
        _checks.check_choice("energy", self.energy, ENERGIES)
        _checks.check_positive("steps", self.steps, integer=True)
        _checks.check_positive("weight", self.weight, allow_zero=True)

    @classmethod
    def paper(cls, **changes) -> RegularizedConfig:
        """RRM's regularized loss (thesis Eq. 2.18–2.21): the dense energy with σ_d = 100 and
        σ_r = 15 over all pixel pairs, on a 160 × 160 grid (size 320, stride 2: RRM trains on
        321² crops and evaluates the energy at half their scale, ``rloss_scale=0.5``).

        The thesis writes λ₁ = 1 in front of an energy whose scale it leaves to the code; the
        released training multiplies the per-image sum by 1e-7 (zbf1991/RRM
        ``train_from_cls_weight.py``: ``--densecrfloss 1e-7``, ``--rloss-scale 0.5``,
        ``--sigma-rgb 15``, ``--sigma-xy 100``). A sum's weight depends on the pixel count, so
        the grid is RRM's too. ``changes`` replace fields.
        """
        return cls(**{"size": 320, "stride": 2, "energy": "dense", "weight": 1e-7, **changes})


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
    image, seeds, classes = image_and_seeds(image, seeds, num_classes)
    small = working(image, config.size)
    grid = tuple(-(-s // config.stride) for s in small.shape[2:])
    grid_seeds = resample_seeds(seeds, grid)
    grid_image = F.interpolate(small, size=grid, mode="bilinear", align_corners=False)
    if config.energy == "potts":
        kernel = pixel_graph(grid_image, radius=config.radius, sigma_xy=config.sigma_xy,
                             sigma_rgb=config.sigma_rgb)

        def energy(probs: Tensor) -> Tensor:
            return dense_energy_loss(probs, kernel)
    else:
        def energy(probs: Tensor) -> Tensor:
            return fully_connected_energy_loss(probs, grid_image, seeds=grid_seeds,
                                               method="lattice")
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(config.seed)
        model = UnaryNet(classes, stride=config.stride)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        model.train()
        for _ in range(config.steps):
            logits = model(small)
            loss = partial_cross_entropy(logits, grid_seeds)
            if config.weight > 0:
                loss = loss + config.weight * energy(logits.softmax(1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            return upsample(model(small).softmax(1), tuple(image.shape[2:]))[0]


@register_recipe("pce-potts", kinds=("boxes", "points", "scribbles"), config=RegularizedConfig,
                 summary="a network trained on the image with partial cross-entropy + "
                         "λ windowed Potts loss (RegularizedConfig.paper(): RRM's fully "
                         "connected dense energy)")
def pce_potts(image: Tensor, inputs: WeakInput, config: RegularizedConfig, *, model=None,
              details: dict | None = None) -> Tensor:
    return fit_regularized(image, inputs.local, num_classes=len(inputs.classes),
                           config=config)[None]
