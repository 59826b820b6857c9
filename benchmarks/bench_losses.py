"""Weak-supervision losses on windowed graphs against dense N×N peers (JSON lines).

Records:

- ``potts_512``: the dense-energy (Potts) loss and its gradient on the 512x512 astronaut, 21
  classes, disk r = 5 window graph (``pixel_graph(image, radius=5)``), median of several runs,
  against the goal of 0.5 s on a 2-core CPU. The dense peer would need an N×N matrix of
  N = 262144 pixels (256 GiB in float32): its size is reported instead of a time.
- ``<loss>_64``: each graph loss and its gradient at 64x64 (N = 4096), window ops against the
  same graph as a dense N×N matrix (``WindowGraph.to_dense``), the brute-force form every
  reference implementation uses; the values must agree, the ratio is dense / window.
- ``fully_connected_<size>_<kind>_cell<k>_bin<b>``: RRM's fully connected dense energy
  (``fully_connected_energy_loss``, σ_d = 100, σ_r = 15) on a coarse grid of k×k cells split
  into colour cubes of side b (None: no colour split) against
  the exact sum over all pixel pairs, on the VOC images of ``$GRAPHSEG_DATA/voc14/images``
  resized to 48², 64², 96², 21 classes, with random soft predictions (independent per pixel)
  and smooth ones (4×4 random logits upsampled): relative error of the value, cosine of the
  gradient with respect to the probabilities (also centred over classes, the part a softmax
  passes on), and exact / coarse time.

  ``fully_connected_<size>_<kind>_lattice``: the same with ``method="lattice"`` (the
  permutohedral lattice filter rescaled by its diagonal).

  Runs only when asked for (``--only fully_connected``): the exact sums take minutes.
- ``fully_connected_512``: ``fully_connected_energy_loss(method="lattice")`` and its gradient
  on the 512x512 astronaut, 21 classes, median of several runs, against the goal of 0.5 s;
  in the same run its floor, one lattice built on the same features and one filter of the
  21 channels with its transpose (the part shared with the fully connected CRF), and the
  windowed peer (``dense_energy_loss`` on a disk of radius 5 with RRM's bandwidths, graph
  built inside the timing as the lattice is). ``method="coarse"`` is not timed at this size:
  its node pairs take minutes.

    python benchmarks/bench_losses.py [--repeats 5] [--only fully_connected] [--sizes 48 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import DEFAULT_DATA, emit, machine, median_seconds
from skimage import data as skdata
from skimage.transform import resize

from graphseg import ops, pixel_graph
from graphseg.losses import dense_energy_loss, fully_connected_energy_loss, quadratic_pairwise_loss
from graphseg.losses.clustering import kernel_kmeans_loss, normalized_cut_loss
from graphseg.propagate import PermutohedralLattice

GOAL_SECONDS = 0.5
CLASSES = 21


def _astronaut(size: int) -> torch.Tensor:
    image = skdata.astronaut()
    if size != image.shape[0]:
        image = resize(image, (size, size), anti_aliasing=True, preserve_range=True)
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0).contiguous()


def _logits(size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, CLASSES, size, size, generator=generator).mul(3).requires_grad_()


def _with_gradient(loss_fn, logits: torch.Tensor):
    def run():
        logits.grad = None
        loss = loss_fn(logits.softmax(1))
        loss.backward()
        return loss

    return run


def _dense_losses(dense: torch.Tensor):
    """The same losses written with the dense (N, N) matrix, on ``(N, C)`` probabilities."""
    no_self = dense - torch.diag(torch.diagonal(dense))

    def potts(p):
        return (p * (no_self @ (1 - p))).sum() / p.shape[0]

    def quadratic(p):
        # Σ_pq w_pq ‖σ_p − σ_q‖² = Σ_p d_p‖σ_p‖² + Σ_q d_in_q‖σ_q‖² − 2 Σ ⟨σ_p, (Wσ)_p⟩
        squared = p.square().sum(1)
        return ((no_self.sum(1) + no_self.sum(0)) @ squared
                - 2 * (p * (no_self @ p)).sum()) / p.shape[0]

    def ncut(p):
        return ((p * (dense @ (1 - p))).sum(0) / (dense.sum(1) @ p + 1e-8)).sum()

    def kkm(p):
        return -((p * (dense @ p)).sum(0) / (p.sum(0) + 1e-8)).sum()

    return {"potts": potts, "quadratic": quadratic, "normalized_cut": ncut,
            "kernel_kmeans": kkm}


def potts_512(repeats: int) -> None:
    image = _astronaut(512)
    start = time.perf_counter()
    graph = pixel_graph(image, radius=5)
    graph_seconds = time.perf_counter() - start
    logits = _logits(512)
    seconds = median_seconds(_with_gradient(lambda p: dense_energy_loss(p, graph), logits),
                             repeats=repeats)
    nodes = 512 * 512
    emit({"case": "potts_512", "what": "dense_energy_loss + backward, 512x512, 21 classes, "
          "disk r=5 (K=80)", "backend": ops.backend(), "repeats": repeats,
          "seconds": round(seconds, 4), "goal_s": GOAL_SECONDS,
          "goal_met": bool(seconds < GOAL_SECONDS), "graph_build_s": round(graph_seconds, 4),
          "dense_peer": f"infeasible: N x N float32 = {nodes * nodes * 4 / 2**30:.0f} GiB",
          "window_weight_mib": round(graph.nbytes / 2**20, 1), **machine()})


def losses_64(repeats: int) -> None:
    size = 64
    graph = pixel_graph(_astronaut(size), radius=5)
    dense = graph.to_dense()
    dense_fns = _dense_losses(dense)
    window_fns = {"potts": lambda p: dense_energy_loss(p, graph),
                  "quadratic": lambda p: quadratic_pairwise_loss(p, graph),
                  "normalized_cut": lambda p: normalized_cut_loss(p, graph),
                  "kernel_kmeans": lambda p: kernel_kmeans_loss(p, graph)}
    logits = _logits(size)

    def as_nodes(p):
        return p[0].flatten(1).t()

    for name, window_fn in window_fns.items():
        dense_fn = dense_fns[name]
        window_value = float(window_fn(logits.softmax(1)))
        dense_value = float(dense_fn(as_nodes(logits.softmax(1))))
        window_s = median_seconds(_with_gradient(window_fn, logits), repeats=repeats)
        dense_s = median_seconds(_with_gradient(lambda p, fn=dense_fn: fn(as_nodes(p)), logits),
                                 repeats=repeats)
        emit({"case": f"{name}_64", "what": f"{name} + backward, 64x64, 21 classes, disk r=5",
              "backend": ops.backend(), "window_s": round(window_s, 5),
              "dense_nxn_s": round(dense_s, 5), "ratio_dense_over_window": round(
                  dense_s / window_s, 2),
              "relative_difference": abs(window_value - dense_value) / max(abs(dense_value),
                                                                          1e-30),
              "dense_mib": round(dense.numel() * dense.element_size() / 2**20, 1),
              **machine()})


def _voc_images(size: int) -> list[tuple[str, torch.Tensor]]:
    from PIL import Image

    folder = DEFAULT_DATA / "voc14" / "images"
    images = []
    for path in sorted(folder.glob("*.png")):
        picture = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        array = torch.from_numpy(__import__("numpy").asarray(picture).copy())
        images.append((path.stem, array.permute(2, 0, 1).double().div(255).unsqueeze(0)))
    return images


def _predictions(kind: str, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        logits = torch.randn(1, CLASSES, size, size, generator=generator, dtype=torch.float64)
    else:
        coarse = torch.randn(1, CLASSES, 4, 4, generator=generator, dtype=torch.float64)
        logits = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                 align_corners=False)
    return logits.mul(3).softmax(1)


def _value_and_gradient(probs: torch.Tensor, image: torch.Tensor, **options):
    leaf = probs.clone().requires_grad_()
    start = time.perf_counter()
    loss = fully_connected_energy_loss(leaf, image, **options)
    loss.backward()
    return float(loss.detach()), leaf.grad, time.perf_counter() - start


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


# (cell, colour_bin) of the coarse grid; the first is the default of the loss
GRIDS = ((8, 5.0), (16, 5.0), (8, 10.0), (4, None))


def _compared(probs, image, exact, exact_grad, exact_s, **options) -> dict:
    value, grad, seconds = _value_and_gradient(probs, image, **options)
    # centred over classes: the part of the gradient a softmax passes on
    centred = _cosine(grad - grad.mean(1, keepdim=True),
                      exact_grad - exact_grad.mean(1, keepdim=True))
    return {"exact": exact, options["method"]: value,
            "relative_error": abs(value - exact) / abs(exact),
            "gradient_cosine": _cosine(grad, exact_grad), "centred_gradient_cosine": centred,
            "exact_s": round(exact_s, 4), f"{options['method']}_s": round(seconds, 4),
            f"ratio_exact_over_{options['method']}": round(exact_s / seconds, 1), **machine()}


def fully_connected(grids=GRIDS, sizes=(48, 64, 96)) -> None:
    for size in sizes:
        for seed, (name, image) in enumerate(_voc_images(size)):
            for kind in ("random", "smooth"):
                probs = _predictions(kind, size, seed)
                exact = _value_and_gradient(probs, image, method="exact")
                for cell, colour_bin in grids:
                    emit({"case": f"fully_connected_{size}_{kind}_cell{cell}_bin{colour_bin}",
                          "image": name, "cell": cell, "colour_bin": colour_bin,
                          "what": "fully_connected_energy_loss coarse vs exact, value + "
                                  "gradient, 21 classes, float64",
                          **_compared(probs, image, *exact, method="coarse", cell=cell,
                                      colour_bin=colour_bin)})
                emit({"case": f"fully_connected_{size}_{kind}_lattice", "image": name,
                      "what": "fully_connected_energy_loss lattice vs exact, value + "
                              "gradient, 21 classes, float64",
                      **_compared(probs, image, *exact, method="lattice")})


def fully_connected_512(repeats: int) -> None:
    size = 512
    image = _astronaut(size)
    logits = _logits(size)
    seconds = median_seconds(_with_gradient(
        lambda p: fully_connected_energy_loss(p, image, method="lattice"), logits),
        repeats=repeats)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    features = torch.cat([torch.stack([ys.flatten(), xs.flatten()], 1) / 100,
                          image[0].flatten(1).t() * 255 / 15], 1)

    def floor(p):
        return (p[0].flatten(1).t() * PermutohedralLattice(features).filter(
            1 - p[0].flatten(1).t())).sum()

    floor_s = median_seconds(_with_gradient(floor, logits), repeats=repeats)

    def window(p):  # RRM's bandwidths on a disk of radius 5, graph built in the timing too
        return dense_energy_loss(p, pixel_graph(image, radius=5, sigma_xy=100,
                                                sigma_rgb=15 / 255))

    window_s = median_seconds(_with_gradient(window, logits), repeats=repeats)
    emit({"case": "fully_connected_512", "what": "fully_connected_energy_loss(method="
          "'lattice') + backward, 512x512, 21 classes, float32", "repeats": repeats,
          "seconds": round(seconds, 4), "goal_s": GOAL_SECONDS,
          "goal_met": bool(seconds < GOAL_SECONDS),
          "floor_lattice_filter_s": round(floor_s, 4),
          "ratio_over_floor": round(seconds / floor_s, 2),
          "window_r5_s": round(window_s, 4), "ratio_over_window": round(seconds / window_s, 2),
          **machine()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=("potts_512", "losses_64", "fully_connected",
                                           "fully_connected_512"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 64, 96],
                        help="image sides of the fully connected energy records")
    args = parser.parse_args()
    if args.only in (None, "potts_512"):
        potts_512(args.repeats)
    if args.only in (None, "losses_64"):
        losses_64(args.repeats)
    if args.only in (None, "fully_connected_512"):
        fully_connected_512(args.repeats)
    # an accuracy study over a data set (minutes), not a timing of the default run
    if args.only == "fully_connected":
        fully_connected(sizes=args.sizes)


if __name__ == "__main__":
    main()
