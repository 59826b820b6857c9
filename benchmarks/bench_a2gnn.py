"""A²GNN's affinity-attention layer: windowed against dense N×N.

The official A²GNN code forms the attention of every node over every node (N×N cosines,
affinities and the −1e9 window mask) and multiplies by the features; graphseg's windowed layer
(:func:`graphseg.nn.affinity_attention`) touches only the K window entries of each node. Both
run the official variant on the same learned-looking graph (square window r = 4, K = 80, 256
features, as in A²GNN's box setting) at 64×64 and 128×128 nodes. Each case runs in a fresh
subprocess so its peak resident memory (``ru_maxrss`` above the process's baseline after the
imports and inputs common to both) is its own. Prints JSON lines: per case the median forward
time and the peak memory, then the dense/windowed ratios and the largest output difference.

    python benchmarks/bench_a2gnn.py [--repeats 3] [--sizes 64 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from common import emit, machine, median_seconds

import graphseg
from graphseg import ops
from graphseg.nn import affinity_attention

CHANNELS = 256
RADIUS = 4
COS_SCALE = 0.5
EDGE_SCALE = 10.0


def inputs(size: int) -> tuple[torch.Tensor, graphseg.WindowGraph]:
    """Node features and a window graph with D = exp(−‖f_i − f_j‖₁ / d) from random features."""
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(1, 16, size, size, generator=generator)
    graph = graphseg.feature_graph(features, radius=RADIUS, shape="square")
    x = torch.randn(1, CHANNELS, size, size, generator=generator)
    return x, graph


def dense_inputs(graph: graphseg.WindowGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The N×N affinity A (A_ii = 1) and window mask that the official code holds."""
    height, width = graph.image_size
    nodes = height * width
    data = graph.to_pyg()
    source, target = data.edge_index
    affinity = torch.zeros(nodes, nodes)
    affinity[target, source] = data.edge_weight
    affinity.fill_diagonal_(1.0)
    window = torch.zeros(nodes, nodes, dtype=torch.bool)
    window[target, source] = True
    window.fill_diagonal_(True)
    return affinity, window


def dense_attention(x: torch.Tensor, affinity: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The official formula on dense matrices: softmax(β cos + M + 10 A) H."""
    flat = x[0].flatten(1).t()
    unit = torch.nn.functional.normalize(flat, dim=1, eps=1e-12)
    cos = unit @ unit.t()
    logits = COS_SCALE * cos + EDGE_SCALE * affinity
    logits = torch.where(window & (cos >= 0), logits, torch.full_like(logits, -1e9))
    out = logits.softmax(1) @ flat
    return out.t().reshape(x.shape)


def peak_mib(baseline_kib: int) -> float:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib) / 1024


def run_case(case: str, size: int, repeats: int) -> dict:
    """One measurement in this (fresh) process."""
    x, graph = inputs(size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = {"case": case, "nodes": f"{size}x{size}", "offsets": graph.num_offsets,
              "channels": CHANNELS}
    with torch.no_grad():
        if case == "dense":
            affinity, window = dense_inputs(graph)
            seconds = median_seconds(lambda: dense_attention(x, affinity, window),
                                     repeats=repeats)
            out = dense_attention(x, affinity, window)
            record["peak_mib"] = round(peak_mib(baseline), 1)
            del affinity, window
            windowed = affinity_attention(x, graph, cos_scale=COS_SCALE, edge_scale=EDGE_SCALE)
            record["max_abs_diff_vs_window"] = float((out - windowed).abs().max())
        else:
            backend = case.split("-")[1]
            with ops.use_backend(backend):
                seconds = median_seconds(lambda: affinity_attention(
                    x, graph, cos_scale=COS_SCALE, edge_scale=EDGE_SCALE), repeats=repeats)
            record["peak_mib"] = round(peak_mib(baseline), 1)
            record["backend"] = ops.backend() if backend == "auto" else backend
    record["median_ms"] = round(1000 * seconds, 2)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.size, args.repeats)), flush=True)
        return
    emit({"case": "machine", **machine(), "backend": ops.backend()})
    cases = ["window-reference", "dense"]
    if ops.extension_available():
        cases.insert(0, "window-auto")
    for size in args.sizes:
        results = {}
        for case in cases:
            done = subprocess.run(
                [sys.executable, __file__, "--case", case, "--size", str(size),
                 "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=True)
            results[case] = json.loads(done.stdout.strip().splitlines()[-1])
            emit(results[case])
        dense = results["dense"]
        for case in cases[:-1]:
            window = results[case]
            emit({"case": "ratio", "nodes": f"{size}x{size}", "window": case,
                  "speedup": round(dense["median_ms"] / window["median_ms"], 1),
                  "memory_ratio": round(dense["peak_mib"] / max(window["peak_mib"], 0.1), 1),
                  "outputs_equal_1e-5": dense["max_abs_diff_vs_window"] <= 1e-5})


if __name__ == "__main__":
    main()
