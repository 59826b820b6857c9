"""Seed maps or class activation maps propagated over pixel graphs, one image at a time
(:func:`propagate_image`; a folder of them: :func:`~graphseg.pipelines.propagate_dataset`,
what ``graphseg propagate`` and ``graphseg pseudo-labels`` run).

The input of an image is either

- a **seed map** ``(H, W)`` of class ids, 255 = unknown (scribbles, clicks, confident regions),
- or **class activation maps** ``(C, h, w)``, float, channel c-1 for foreground class c; each
  map is clamped at 0 and divided by its maximum, and the background score comes from the
  preset: :math:`(1 - \\max_c \\mathrm{cam}_c)^\\alpha` with α = 16 (psa, and by default) or 6
  (a2gnn), or IRN's constant 0.25.

and the methods are those of :mod:`graphseg.propagate`:

- ``"random-walk"``: AffinityNet's walk :math:`T^t x` on a graph at stride ``stride``. Seeds
  enter as their one-hot maps averaged over each grid cell (β = 1, t = 256 unless given); CAMs
  follow the preset (``psa``: β 8, t 256, stride 8; ``irn``: IRN's path affinity from a boundary
  map, stride 4; ``a2gnn``: β 8, t 64, stride 4).
- ``"harmonic"``: Grady's random walker from the seeds (CAMs give their confident seeds M'_I,
  :func:`graphseg.seeds.topk_seeds`).
- ``"label-spreading"``: Zhou et al.'s spreading of the seeds or of the CAM scores.
- ``"unia"``: UniA's walk of the CAMs on the Sinkhorn-normalised, symmetrised attention between
  the tokens of a feature grid (:func:`graphseg.propagate.unia_random_walk`), from the image's
  ``attention`` (``(h, w, h, w)``, or ``(heads, h, w, h, w)``, averaged over heads) or token
  features (``(D, h, w)``); CAMs only.
- ``"par"``, ``"crf"``, ``"ial"``: refinements of dense probabilities (PAR, the windowed dense
  CRF with the preset's parameters, IAL's E-step α_p = G α_u); seeds become one-hot at the
  seeded pixels and uniform elsewhere.

The pixel graph (all methods but PAR and the CRF) is the colour + position Gaussian kernel of
:func:`graphseg.graph.pixel_graph`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import pixel_graph
from graphseg.pipelines._common import renumber, single_image
from graphseg.propagate import (
    CRF_PRESETS,
    RANDOM_WALK_PRESETS,
    background_channel,
    crf,
    harmonic,
    ial_refine,
    irn_affinity,
    label_spreading,
    par,
    random_walk,
    unia_random_walk,
)
from graphseg.seeds import add_background, check_cam_layout, normalize_cam, topk_seeds

__all__ = ["PROBABILITY_FORMATS", "PROPAGATE_METHODS", "cam_start", "check_options",
           "propagate_image"]

PROPAGATE_METHODS = ("random-walk", "harmonic", "label-spreading", "par", "crf", "ial", "unia")
PROBABILITY_FORMATS = ("npy", "pt")
UNKNOWN = 255
IRN_BACKGROUND = RANDOM_WALK_PRESETS["irn"]["background"]
SEED_WALK = {"beta": 1.0, "num_steps": 256, "stride": 4}
"""The random walk of seed maps: β = 1 keeps the Gaussian kernel's weights as they are (β = 8 is
for learned affinities), and 256 steps at stride 4 carry labels about 80 grid pixels."""


def _seed_map(seeds, height: int, width: int, num_classes: int | None) -> tuple[Tensor, int]:
    seeds = _checks.as_label_batch(seeds, "seeds", what="(H, W)")
    if tuple(seeds.shape) != (1, height, width):
        raise ValueError(f"seeds must have the image's size ({height}, {width}), got "
                         f"{tuple(seeds.shape[1:])}")
    known = seeds[seeds != UNKNOWN]
    if known.numel() == 0:
        raise ValueError("seeds has no seed: every pixel is 255 (unknown)")
    if int(known.min()) < 0:
        raise ValueError(f"seeds must be class ids >= 0 or 255, got {int(known.min())}")
    top = int(known.max()) + 1
    if num_classes is None:
        num_classes = top
    elif top > num_classes:
        raise ValueError(f"seeds hold class {top - 1} but num_classes is {num_classes}")
    return seeds, num_classes


def _cam_maps(cams, height: int, width: int, num_classes: int | None = None) -> Tensor:
    """``(1, C, H, W)`` max-normalised foreground maps at image size, after
    :func:`graphseg.seeds.check_cam_layout`."""
    cams = check_cam_layout(cams, height, width, num_classes=num_classes)
    cams = F.interpolate(cams[None], size=(height, width), mode="bilinear", align_corners=False)
    return normalize_cam(cams)


def _cam_probs(cams: Tensor, preset: str | None) -> Tensor:
    """``(1, 1 + C, H, W)`` probabilities: the preset's background, then the CAMs."""
    if preset == "irn":
        background = torch.full_like(cams[:, :1], IRN_BACKGROUND)
    else:
        alpha = RANDOM_WALK_PRESETS[preset or "psa"]["alpha"]
        background = background_channel(cams, alpha)
    return _normalised(torch.cat([background, cams], 1))


def _normalised(scores: Tensor) -> Tensor:
    """Non-negative scores divided by their sum per pixel (uniform where all are 0)."""
    scores = scores.clamp_min(0)
    total = scores.sum(1, keepdim=True)
    uniform = torch.full_like(scores, 1 / scores.shape[1])
    return torch.where(total > 1e-12, scores / total.clamp_min(1e-12), uniform)


def _one_hot(seeds: Tensor, num_classes: int) -> Tensor:
    """``(1, C, H, W)``: 1 at each seed's class, 0 elsewhere (unknown pixels all 0)."""
    known = seeds != UNKNOWN
    onehot = F.one_hot(torch.where(known, seeds, 0), num_classes).permute(0, 3, 1, 2)
    return (onehot * known[:, None]).float()


def _seeded_classes(solve, seeds: Tensor, num_classes: int) -> Tensor:
    """``(1, K, H, W)`` probabilities from ``solve(local_seeds, k)`` run on the k classes that
    have seeds, renumbered 0..k-1 (ids with gaps, such as VOC's {0, 13}, included); the other
    classes get probability 0."""
    present, local = renumber(seeds)
    probs = torch.zeros(1, num_classes, *seeds.shape[1:])
    probs[:, present] = solve(local, len(present)).clamp_min(0)
    return _normalised(probs)


def check_options(method: str, *, preset, num_classes, radius, sigma_xy, sigma_rgb, stride,
                   beta, num_steps) -> None:
    """The options of :func:`propagate_image`, checked once before any image is read."""
    _checks.check_choice("method", method, PROPAGATE_METHODS)
    if preset is not None:
        _checks.check_choice("preset", preset, tuple(RANDOM_WALK_PRESETS))
        if method == "crf" and preset not in CRF_PRESETS:
            raise ValueError(f"the CRF has the presets 'psa' and 'a2gnn', got {preset!r}")
    if num_classes is not None:
        _checks.check_positive("num_classes", num_classes, integer=True)
    window_offsets(radius, "disk")  # checks the radius
    _checks.check_positive("sigma_xy", sigma_xy)
    _checks.check_positive("sigma_rgb", sigma_rgb)
    for name, value in (("stride", stride), ("num_steps", num_steps)):
        if value is not None:
            _checks.check_positive(name, value, integer=True, allow_zero=name == "num_steps")
            walks = ("random-walk", "unia") if name == "num_steps" else ("random-walk",)
            if method not in walks:
                raise ValueError(f"{name} applies to method {' and '.join(map(repr, walks))}, "
                                 f"got method {method!r}")
    if beta is not None:
        _checks.check_positive("beta", beta, finite=True)
        if method != "random-walk":
            raise ValueError(f"beta applies to method 'random-walk', got method {method!r}")


def _grid(height: int, width: int, stride: int) -> tuple[int, int]:
    return math.ceil(height / stride), math.ceil(width / stride)


def _walk(image: Tensor, seeds, cams, preset, num_classes, stride, beta, num_steps, boundary,
          graph_options: dict) -> Tensor:
    height, width = image.shape[2:]
    if seeds is not None:
        stride = SEED_WALK["stride"] if stride is None else stride
        grid = _grid(height, width, stride)
        graph = pixel_graph(F.adaptive_avg_pool2d(image, grid), self_weight=1.0,
                            **graph_options)
        values = F.adaptive_avg_pool2d(_one_hot(seeds, num_classes), grid)
        walked = random_walk(graph, values,
                             beta=SEED_WALK["beta"] if beta is None else beta,
                             num_steps=SEED_WALK["num_steps"] if num_steps is None else num_steps)
        return _normalised(F.interpolate(walked, size=(height, width), mode="bilinear",
                                         align_corners=False))
    preset = preset or "psa"
    config = RANDOM_WALK_PRESETS[preset]
    stride = config.get("stride", 4) if stride is None else stride
    grid = _grid(height, width, stride)
    if preset == "irn":
        if boundary is None:
            raise ValueError("preset 'irn' needs the boundary map of the image (IRN's class "
                             "boundaries, (h, w) in [0, 1])")
        edges = _checks.check_tensor4d("boundary", torch.as_tensor(boundary).float()[None, None],
                                       what="(h, w)")
        edges = F.interpolate(edges, size=grid, mode="bilinear", align_corners=False).clamp(0, 1)
        graph = irn_affinity(edges, radius=config["radius"])
        scores = random_walk(graph, cams, preset="irn", boundary=edges, beta=beta,
                             num_steps=num_steps)
    else:
        graph = pixel_graph(F.adaptive_avg_pool2d(image, grid), **graph_options)
        scores = random_walk(graph, cams, preset=preset, beta=beta, num_steps=num_steps)
    return _normalised(scores)


def _unia(cams, attention, preset, num_steps) -> Tensor:
    if cams is None:
        raise ValueError("method 'unia' walks class activation maps: give cams, not seeds")
    if attention is None:
        raise ValueError("method 'unia' needs attention: (h, w, h, w) or (heads, h, w, h, w) "
                         "token attention, or (D, h, w) token features")
    tokens = torch.as_tensor(attention).to(torch.float32)
    options = {} if num_steps is None else {"num_steps": num_steps}
    alpha = RANDOM_WALK_PRESETS[preset or "psa"].get("alpha", 16.0)
    if tokens.dim() == 3:
        scores = unia_random_walk(cams, features=tokens[None], alpha=alpha, **options)
    elif tokens.dim() in (4, 5) and tokens.shape[-4:-2] == tokens.shape[-2:]:
        grid = tuple(tokens.shape[-2:])
        matrix = tokens.reshape(*tokens.shape[:-4], grid[0] * grid[1], grid[0] * grid[1])
        scores = unia_random_walk(cams, attention=matrix[None], grid=grid, alpha=alpha,
                                  **options)
    else:
        raise ValueError("attention must be (h, w, h, w) or (heads, h, w, h, w) token "
                         f"attention, or (D, h, w) token features, got shape "
                         f"{tuple(tokens.shape)}")
    return _normalised(scores)


def propagate_image(image, *, seeds=None, cams=None, method: str, preset: str | None = None,
                    num_classes: int | None = None, radius: int = 5, sigma_xy: float = 6.0,
                    sigma_rgb: float = 0.1, stride: int | None = None,
                    beta: float | None = None, num_steps: int | None = None,
                    boundary=None, attention=None) -> Tensor:
    """Class probabilities of one image from its seed map or its CAMs (see the module notes).

    Args:
        image: ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1] or any image form of docs/images.md.
        seeds: ``(H, W)`` class ids, 255 = unknown; or
        cams: ``(C, h, w)`` float foreground activation maps (any resolution).
        method: one of :data:`PROPAGATE_METHODS`.
        preset: ``"psa"``, ``"irn"`` or ``"a2gnn"``: the random walk of CAMs (``irn`` needs
            ``boundary``), the CRF's parameters (``psa``, ``a2gnn``), and the CAMs'
            background. Seeds take no preset.
        num_classes: class count: of a seed map (default: largest seed + 1; classes
            without seeds get probability 0), or of CAMs, which must then hold
            ``num_classes - 1`` maps.
        radius, sigma_xy, sigma_rgb: the pixel graph's window and Gaussian bandwidths (colour
            in [0, 1]).
        stride: grid of the random walk (default: the preset's, 4 otherwise), below the
            image's longer side.
        beta, num_steps: override the random walk's β and t (``num_steps``: also UniA's).
        boundary: ``(h, w)`` class-boundary map in [0, 1] for ``preset="irn"``.
        attention: for ``"unia"``: ``(h, w, h, w)`` / ``(heads, h, w, h, w)`` attention
            between the tokens of an ``h × w`` grid, or ``(D, h, w)`` token features.

    Returns:
        ``(1, K, H, W)`` probabilities summing to 1 per pixel: K = ``num_classes`` for seeds,
        C + 1 (background first) for CAMs.
    """
    check_options(method, preset=preset, num_classes=num_classes, radius=radius,
                   sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, stride=stride, beta=beta,
                   num_steps=num_steps)
    if (seeds is None) == (cams is None):
        raise ValueError("give exactly one of seeds (a (H, W) seed map) and cams (a (C, h, w) "
                         "array of class activation maps)")
    if preset is not None and seeds is not None:
        raise ValueError(f"preset {preset!r} applies to cams; seeds take no preset")
    image = single_image(image)
    height, width = image.shape[2:]
    if stride is not None and stride >= max(height, width):
        raise ValueError(f"stride={stride} leaves a 1x1 grid of the {height}x{width} (HxW) "
                         f"image, on which nothing can walk: use a stride below "
                         f"{max(height, width)}")
    graph_options = {"radius": radius, "sigma_xy": sigma_xy, "sigma_rgb": sigma_rgb}
    if seeds is not None:
        seeds, num_classes = _seed_map(seeds, height, width, num_classes)
        probs = None
    else:
        cams = _cam_maps(cams, height, width, num_classes)
        probs = _cam_probs(cams, preset)
        num_classes = probs.shape[1]
    if method == "unia":
        return _unia(cams, attention, preset, num_steps)
    if attention is not None:
        raise ValueError(f"attention applies to method 'unia', got method {method!r}")
    if method == "random-walk":
        return _walk(image, seeds, cams, preset, num_classes, stride, beta, num_steps,
                     boundary, graph_options)
    if method == "harmonic":
        if seeds is None:
            seeds = topk_seeds(add_background(cams))
            if not bool((seeds != UNKNOWN).any()):
                raise ValueError("the CAMs give no confident seed for the harmonic solve")
        return _seeded_classes(lambda local, k: harmonic(
            pixel_graph(image, **graph_options), local, num_classes=k), seeds, num_classes)
    if method == "label-spreading":
        if probs is not None:
            return _normalised(label_spreading(pixel_graph(image, **graph_options), probs))
        return _seeded_classes(lambda local, k: label_spreading(
            pixel_graph(image, **graph_options), local, num_classes=k), seeds, num_classes)
    if probs is None:
        probs = _normalised(_one_hot(seeds, num_classes))
    if method == "par":
        return _normalised(par(image, probs))
    if method == "crf":
        return crf(image, probs, preset=preset or "psa")
    return _normalised(ial_refine(pixel_graph(image, **graph_options), probs))


def cam_start(cams, height: int, width: int, preset: str | None) -> Tensor:
    """The ``(H, W)`` argmax of the CAMs' probabilities before propagation (what a figure shows
    as the start of a CAM propagation)."""
    return _cam_probs(_cam_maps(cams, height, width), preset)[0].argmax(0)
