"""Mean-field inference of a dense CRF restricted to windows."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import WindowGraph, check_window_size, pixel_graph

__all__ = ["CRF_PRESETS", "crf", "crf_kernels"]

_PSA = {"num_iter": 10, "smooth_sxy": 3.0, "smooth_compat": 3.0, "app_sxy": 80.0,
        "app_srgb": 13.0, "app_compat": 10.0}
_A2GNN_CODE = {"num_iter": 10, "smooth_sxy": 2.0, "smooth_compat": 3.0, "app_sxy": 50.0,
               "app_srgb": 5.0, "app_compat": 10.0}
CRF_PRESETS = {
    # PSA's settings, which the A2GNN thesis adopts ("same as [18]"): its "paper" preset.
    "psa": _PSA,
    "paper": _PSA,
    # The A2GNN official code: its "official" preset.
    "a2gnn": _A2GNN_CODE,
    "official": _A2GNN_CODE,
}
DENSE_RADIUS = 2
RING_AREA = 1.5 * math.pi / 8  # area of the annulus [d/√2, √2·d] per ring sample, over d²


def _appearance_offsets(sxy: float, extent: int) -> tuple[Tensor, Tensor]:
    """A dense disk of radius 2 plus 8-neighbour rings at distances 3·2^n up to 2·sxy, each
    sample weighted by the area it stands for, so the window sum approximates the dense one.
    Rings of ``extent`` pixels or more (the image's longer side) reach no pixel and are left
    out, which bounds the table however large sxy is."""
    dense = window_offsets(DENSE_RADIUS, "disk")
    rings, distance = [], 3
    while distance <= max(3, 2 * sxy) and (distance < extent or not rings):
        rings.append(distance)
        distance *= 2
    ring = window_offsets(shape="rings", dilations=rings)
    area = torch.cat([torch.ones(len(dense)),
                      RING_AREA * ring.abs().amax(1).double().square().float()])
    return torch.cat([dense, ring]), area


def _check_finite_positive(name: str, value, *, allow_zero: bool = False,
                           integer: bool = False) -> None:
    _checks.check_positive(name, value, integer=integer, allow_zero=allow_zero)
    if integer:
        return
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def crf_kernels(image: Tensor, *, smooth_sxy: float, app_sxy: float, app_srgb: float
                ) -> tuple[WindowGraph, WindowGraph]:
    """The smoothness and appearance kernels as symmetric-normalised windowed graphs (with the
    self term k(i, i) = 1, as the permutohedral filter of pydensecrf includes it)."""
    image = _checks.as_image_batch(image, "image")
    for name, value in (("smooth_sxy", smooth_sxy), ("app_sxy", app_sxy),
                        ("app_srgb", app_srgb)):
        _check_finite_positive(name, value)
    batch, _, height, width = image.shape
    radius = max(1, min(math.ceil(1.5 * smooth_sxy), max(height, width)))
    offsets = window_offsets(radius, "disk")
    app_offsets, area = _appearance_offsets(app_sxy, max(height, width))
    # both kernels at once: they live side by side through the mean-field iterations
    check_window_size(batch, offsets.shape[0] + app_offsets.shape[0], height, width,
                      "lower smooth_sxy (the smoothness kernel spans a disk of radius "
                      "1.5 smooth_sxy)", dtype=image.dtype, device=image.device)
    spatial = torch.exp(-offsets.double().square().sum(1) / (2 * smooth_sxy * smooth_sxy)).to(
        image.dtype)
    smooth = WindowGraph(spatial.view(1, -1, 1, 1).expand(batch, -1, height, width).to(
        image.device).contiguous(), offsets, self_weight=1.0)
    appearance = pixel_graph(image, offsets=app_offsets, sigma_xy=app_sxy,
                             sigma_rgb=app_srgb / 255.0, self_weight=1.0)
    appearance = WindowGraph(appearance.weight * area.to(image).view(1, -1, 1, 1), app_offsets,
                             self_weight=1.0)
    return smooth.normalize("sym"), appearance.normalize("sym")


def crf(
    image,
    probs: Tensor,
    *,
    preset: str = "psa",
    num_iter: int | None = None,
    smooth_sxy: float | None = None,
    smooth_compat: float | None = None,
    app_sxy: float | None = None,
    app_srgb: float | None = None,
    app_compat: float | None = None,
    clip: float = 1e-5,
) -> Tensor:
    r"""Mean-field inference of a Potts dense CRF whose kernels are restricted to windows.

    .. math::
        Q_i(l) \propto \exp\Big(\log P_i(l) + \sum_m w_m \sum_j \tilde k_m(i, j)\, Q_j(l)\Big)

    with unary :math:`-\log P` (clipped at ``clip``), a smoothness kernel
    :math:`\exp(-\|p_i - p_j\|^2 / 2 s_{xy}^2)` and an appearance kernel
    :math:`\exp(-\|p_i - p_j\|^2 / 2 s_{xy}^2 - \|I_i - I_j\|^2 / 2 s_{rgb}^2)` (colour in 0–255),
    each symmetric-normalised as pydensecrf does by default. Potts compatibility: the constant
    part of the message drops out of the softmax.

    Notes:
        This approximates the fully connected CRF (Krähenbühl & Koltun, NIPS 2011): the
        smoothness kernel is summed over a disk of radius 1.5·s_xy, the long-range appearance
        kernel over a dense disk of radius 2 plus dilated 8-neighbour rings (3, 6, 12, … ≤ 2·s_xy)
        whose samples are weighted by the area they stand for. Agreement with pydensecrf is
        measured in ``benchmarks/bench_propagation.py``.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] (or any image form of docs/images.md).
        probs: ``(B, C, H, W)`` class probabilities (non-negative, summing to 1 per pixel).
        preset: ``"psa"`` = ``"paper"`` (10 iterations, smoothness s_xy 3 / weight 3,
            appearance s_xy 80, s_rgb 13, weight 10; the PSA and A²GNN-thesis settings) or
            ``"a2gnn"`` = ``"official"`` (the A²GNN code: 2 / 3 and 50 / 5 / 10).
        num_iter, smooth_sxy, smooth_compat, app_sxy, app_srgb, app_compat: override the preset.
        clip: probabilities are clipped below at this value, in (0, 1], before the log.

    Returns:
        ``(B, C, H, W)`` marginals Q.
    """
    _checks.check_choice("preset", preset, CRF_PRESETS)
    settings = dict(CRF_PRESETS[preset])
    overrides = {"num_iter": num_iter, "smooth_sxy": smooth_sxy, "smooth_compat": smooth_compat,
                 "app_sxy": app_sxy, "app_srgb": app_srgb, "app_compat": app_compat}
    for name, value in overrides.items():
        if value is not None:
            _check_finite_positive(name, value, integer=name == "num_iter",
                                   allow_zero=name in ("num_iter", "smooth_compat", "app_compat"))
            settings[name] = value
    image = _checks.as_image_batch(image, "image")
    _checks.check_tensor4d("probs", probs)
    if probs.shape[1] == 0:
        raise ValueError(f"probs must have at least one class channel, got shape "
                         f"{tuple(probs.shape)}")
    _checks.same_batch("probs", probs, "image", image)
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip <= 1:
        raise ValueError(f"clip must be a number in (0, 1], got {clip!r}")
    _checks.check_probabilities("probs", probs)
    image = image.to(probs.dtype)
    smooth, appearance = crf_kernels(image, smooth_sxy=settings["smooth_sxy"],
                                     app_sxy=settings["app_sxy"], app_srgb=settings["app_srgb"])
    # a compatibility weight beyond the dtype's range would turn 0 · inf into NaN, and two
    # infinite logits give inf − inf in the softmax: both are kept at the largest finite value
    largest = torch.finfo(probs.dtype).max
    smooth_compat = min(settings["smooth_compat"], largest)
    app_compat = min(settings["app_compat"], largest)
    unary = probs.clamp_min(clip).log()
    marginals = torch.softmax(unary, 1)
    for _ in range(settings["num_iter"]):
        message = (smooth_compat * smooth._aggregate(marginals)
                   + app_compat * appearance._aggregate(marginals))
        marginals = torch.softmax((unary + message).clamp_max(largest), 1)
    return marginals
