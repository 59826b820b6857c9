"""Mean-field inference of the fully connected CRF (Krähenbühl & Koltun, NIPS 2011): exact on
the permutohedral lattice, or with its kernels restricted to windows."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphseg import _checks
from graphseg.graph.offsets import window_offsets
from graphseg.graph.window import WindowGraph, check_window_size, pixel_graph
from graphseg.propagate.lattice import PermutohedralLattice, _FilterSum, _free_cores

__all__ = ["CRF_METHODS", "CRF_PRESETS", "crf", "crf_kernels", "dense_crf", "lattice_kernels"]

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
CRF_METHODS = ("lattice", "window")
LATTICE_BYTES_PER_PIXEL = 2048
"""Peak memory of building both lattices of :func:`lattice_kernels`, per pixel (measured:
1.5–1.9 KiB on random 512² and 1024² images)."""
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


class _LatticeKernel:
    r"""A Gaussian kernel on the permutohedral lattice, symmetric-normalised as pydensecrf's
    default (``NORMALIZE_SYMMETRIC``): :math:`n \odot K (n \odot Q)`, :math:`n = 1 /
    \sqrt{K 1}`."""

    def __init__(self, features: Tensor, dtype: torch.dtype) -> None:
        self.lattice = PermutohedralLattice(features)
        ones = torch.ones(len(features), 1, dtype=dtype, device=features.device)
        self.norm = (self.lattice.filter(ones) + 1e-20).rsqrt()

    def __call__(self, values: Tensor) -> Tensor:
        return self.norm * self.lattice.filter(self.norm * values)


def lattice_kernels(image: Tensor, *, smooth_sxy: float, app_sxy: float, app_srgb: float
                    ) -> tuple[_LatticeKernel, _LatticeKernel]:
    """The smoothness kernel (features x / s_xy, y / s_xy) and the appearance kernel (x / s_xy,
    y / s_xy, and r, g, b in 0–255 over s_rgb) of one ``(1, 3, H, W)`` image on the
    permutohedral lattice, as pydensecrf's ``addPairwiseGaussian`` and
    ``addPairwiseBilateral`` build them; each maps ``(H·W, C)`` values to ``(H·W, C)``."""
    height, width = image.shape[2:]
    _checks.check_memory(LATTICE_BYTES_PER_PIXEL * height * width,
                         f"the CRF's lattices of a {height}x{width} image",
                         "use method='window', or a smaller image")
    # float64 features: a small s_xy or s_rgb would overflow float32
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=image.device),
                            torch.arange(width, dtype=torch.float64, device=image.device),
                            indexing="ij")
    position = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    colour = image[0].permute(1, 2, 0).reshape(-1, 3).double() * 255
    smooth = _LatticeKernel(position / smooth_sxy, image.dtype)
    appearance = _LatticeKernel(torch.cat([position / app_sxy, colour / app_srgb], dim=1),
                                image.dtype)
    return smooth, appearance


def crf(
    image,
    probs: Tensor,
    *,
    preset: str = "psa",
    method: str = "lattice",
    num_iter: int | None = None,
    smooth_sxy: float | None = None,
    smooth_compat: float | None = None,
    app_sxy: float | None = None,
    app_srgb: float | None = None,
    app_compat: float | None = None,
    clip: float = 1e-5,
) -> Tensor:
    r"""Mean-field inference of a Potts fully connected CRF.

    .. math::
        Q_i(l) \propto \exp\Big(\log P_i(l) + \sum_m w_m \sum_j \tilde k_m(i, j)\, Q_j(l)\Big)

    with unary :math:`-\log P` (clipped at ``clip``), a smoothness kernel
    :math:`\exp(-\|p_i - p_j\|^2 / 2 s_{xy}^2)` and an appearance kernel
    :math:`\exp(-\|p_i - p_j\|^2 / 2 s_{xy}^2 - \|I_i - I_j\|^2 / 2 s_{rgb}^2)` (colour in 0–255),
    each symmetric-normalised as pydensecrf does by default. Potts compatibility: the constant
    part of the message drops out of the softmax.

    Notes:
        ``method="lattice"`` (the default) sums both kernels over every pixel pair with the
        permutohedral lattice (:mod:`graphseg.propagate.lattice`), the filter of Krähenbühl &
        Koltun's own implementation and of pydensecrf, whose marginals it reproduces (on the
        voc14 images with the PSA settings: every label equal, marginals within 2e-4). On the
        CPU with ``graphseg_ext`` built, the lattices are compiled and each mean-field update
        is one call that filters all classes with both kernels (each on a thread of its own)
        and adds them to the unary.
        ``method="window"`` restricts the kernels to windows: the smoothness kernel is summed
        over a disk of radius 1.5·s_xy, the long-range appearance kernel over a dense disk of
        radius 2 plus dilated 8-neighbour rings (3, 6, 12, … ≤ 2·s_xy) whose samples are
        weighted by the area they stand for (91–98% label agreement with pydensecrf there);
        it runs batched on any device and its gradient flows through the inference. Both are
        measured in ``benchmarks/bench_propagation.py``.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] (or any image form of docs/images.md).
        probs: ``(B, C, H, W)`` class probabilities (non-negative, summing to 1 per pixel).
        preset: ``"psa"`` = ``"paper"`` (10 iterations, smoothness s_xy 3 / weight 3,
            appearance s_xy 80, s_rgb 13, weight 10; the PSA and A²GNN-thesis settings) or
            ``"a2gnn"`` = ``"official"`` (the A²GNN code: 2 / 3 and 50 / 5 / 10).
        method: ``"lattice"`` (exact, fully connected) or ``"window"`` (windowed kernels).
        num_iter, smooth_sxy, smooth_compat, app_sxy, app_srgb, app_compat: override the preset.
        clip: probabilities are clipped below at this value, in (0, 1], before the log.

    Returns:
        ``(B, C, H, W)`` marginals Q.
    """
    _checks.check_choice("preset", preset, CRF_PRESETS)
    _checks.check_choice("method", method, CRF_METHODS)
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
    kernels = {"smooth_sxy": settings["smooth_sxy"], "app_sxy": settings["app_sxy"],
               "app_srgb": settings["app_srgb"]}
    # a compatibility weight beyond the dtype's range would turn 0 · inf into NaN, and two
    # infinite logits give inf − inf in the softmax: both are kept at the largest finite value
    largest = torch.finfo(probs.dtype).max
    weights = (min(settings["smooth_compat"], largest), min(settings["app_compat"], largest))
    if method == "window":
        smooth, appearance = crf_kernels(image, **kernels)
        return _mean_field(probs, (smooth._aggregate, appearance._aggregate), weights,
                           settings["num_iter"], clip, largest)
    out = []
    with _free_cores():  # the torch ops between the lattice calls too
        for b in range(probs.shape[0]):  # one image at a time, classes × pixels
            filters = lattice_kernels(image[b : b + 1], **kernels)
            marginals = _lattice_mean_field(probs[b].flatten(1), filters, weights,
                                            settings["num_iter"], clip, largest)
            out.append(marginals.reshape(probs.shape[1:]))
    return torch.stack(out)


def _mean_field(probs: Tensor, filters, weights, num_iter: int, clip: float, largest: float
                ) -> Tensor:
    """``num_iter`` mean-field updates Q ∝ exp(log P + Σ_m w_m K̃_m Q) over the class axis 1
    of ``(B, C, H, W)`` probabilities, from Q = P (clipped)."""
    unary = probs.clamp_min(clip).log()
    marginals = torch.softmax(unary, 1)
    for _ in range(num_iter):
        message = sum(weight * kernel(marginals)
                      for weight, kernel in zip(weights, filters, strict=True))
        marginals = torch.softmax((unary + message).clamp_max(largest), 1)
    return marginals


def _lattice_mean_field(probs: Tensor, kernels, weights, num_iter: int, clip: float,
                        largest: float) -> Tensor:
    """:func:`_mean_field` of ``(C, N)`` probabilities on the lattice kernels, lean: the
    logits of an update are one call that filters all classes with both kernels (handed
    ``(N, C)`` views of the planar classes) and adds them to the unary; the softmax runs over
    the planar class axis. Kernels of weight 0 are left out (their message is 0)."""
    unary = probs.clamp_min(clip).log()
    logits = _FilterSum([(kernel.lattice, kernel.norm, (weight * kernel.norm).clamp_max(largest))
                         for weight, kernel in zip(weights, kernels, strict=True) if weight != 0],
                        largest)
    marginals = torch.softmax(unary, 0)
    for _ in range(num_iter):
        marginals = torch.softmax(logits(marginals.t(), unary.t()).t(), 0)
    return marginals


def dense_crf(image, probs, *, num_iter: int = 10, sxy_gaussian: float = 3.0,
              compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0,
              srgb_bilateral: float = 13.0, compat_bilateral: float = 10.0,
              clip: float = 1e-5):
    """pydensecrf's usual five lines in one call: the fully connected CRF of one image,
    exact on the permutohedral lattice (:func:`crf` with ``method="lattice"``).

    ::

        # pydensecrf
        d = dcrf.DenseCRF2D(w, h, n)
        d.setUnaryEnergy(unary_from_softmax(probs))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
        q = np.array(d.inference(10)).reshape(n, h, w)
        # graphseg
        q = graphseg.propagate.dense_crf(img, probs, num_iter=10)

    The keyword defaults are pydensecrf's own defaults of ``addPairwiseGaussian`` and
    ``addPairwiseBilateral`` (which are also PSA's settings, ``CRF_PRESETS["psa"]``), the
    compatibilities are Potts weights (numbers) and both kernels are symmetric-normalised, as
    pydensecrf's defaults are; the unary is ``-log(max(probs, clip))``, as
    ``unary_from_softmax`` gives it.

    Args:
        image: one ``(H, W, 3)`` uint8 RGB image as pydensecrf takes it, or any image form
            of docs/images.md.
        probs: ``(C, H, W)`` class probabilities (a NumPy array or a tensor).
        num_iter: mean-field iterations (pydensecrf's ``inference(n)``).
        sxy_gaussian, compat_gaussian: ``addPairwiseGaussian(sxy=, compat=)``.
        sxy_bilateral, srgb_bilateral, compat_bilateral: ``addPairwiseBilateral(sxy=, srgb=,
            compat=)``.
        clip: ``unary_from_softmax``'s clip.

    Returns:
        ``(C, H, W)`` marginals Q, a float32 NumPy array when ``probs`` is one (the array of
        ``d.inference(n)`` reshaped), else a tensor.
    """
    import numpy as np

    for name, value in (("compat_gaussian", compat_gaussian),
                        ("compat_bilateral", compat_bilateral)):
        if isinstance(value, (np.ndarray, Tensor, list, tuple)):
            raise ValueError(f"{name} must be a number (a Potts weight); label-compatibility "
                             "matrices are not supported")
    as_numpy = isinstance(probs, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(probs)) if as_numpy else probs
    if not isinstance(tensor, Tensor) or tensor.dim() != 3 or not tensor.is_floating_point():
        raise ValueError("probs must be a float (C, H, W) array of class probabilities, got "
                         f"{_checks._describe(probs)}")
    marginals = crf(image, tensor.float()[None] if as_numpy else tensor[None],
                    method="lattice", num_iter=num_iter, smooth_sxy=sxy_gaussian,
                    smooth_compat=compat_gaussian, app_sxy=sxy_bilateral,
                    app_srgb=srgb_bilateral, app_compat=compat_bilateral, clip=clip)[0]
    return marginals.numpy() if as_numpy else marginals
