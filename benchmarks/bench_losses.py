"""Weak-supervision losses on windowed graphs against dense N×N peers (JSON lines).

Records:

- ``potts_512``: the dense-energy (Potts) loss and its gradient on the 512x512 astronaut, 21
  classes, disk r = 5 window graph (``pixel_graph(image, radius=5)``), median of several runs,
  against the goal of 0.5 s on a 2-core CPU. The dense peer would need an N×N matrix of
  N = 262144 pixels (256 GiB in float32): its size is reported instead of a time.
- ``<loss>_64``: each graph loss and its gradient at 64x64 (N = 4096), window ops against the
  same graph as a dense N×N matrix (``WindowGraph.to_dense``), the brute-force form every
  reference implementation uses; the values must agree, the ratio is dense / window.

    python benchmarks/bench_losses.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit, machine, median_seconds
from skimage import data as skdata
from skimage.transform import resize

from graphseg import ops, pixel_graph
from graphseg.losses import dense_energy_loss, quadratic_pairwise_loss
from graphseg.losses.clustering import kernel_kmeans_loss, normalized_cut_loss

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    potts_512(args.repeats)
    losses_64(args.repeats)


if __name__ == "__main__":
    main()
