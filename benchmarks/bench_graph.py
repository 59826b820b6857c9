"""Pixel-graph construction, memory and one propagation step against the sparse peers.

Prints JSON lines: the build time of ``pixel_graph(astronaut, radius=5)``, the memory of the
WindowGraph against the same graph as PyG ``edge_index`` + ``edge_weight``, and one propagation
step ``A v`` (21 channels) through ``WindowGraph.aggregate``, torch sparse CSR and PyG message
passing, all measured in this run.

    python benchmarks/bench_graph.py [--repeats 5] [--radius 5]
"""

from __future__ import annotations

import argparse

import torch
from common import emit, machine, median_seconds
from skimage import data
from torch_geometric.nn import MessagePassing

import graphseg
from graphseg import ops


class WeightedSum(MessagePassing):
    """PyG's sum aggregation of ``edge_weight · x_j``: the peer of ``WindowGraph.aggregate``."""

    def __init__(self) -> None:
        super().__init__(aggr="add")

    def forward(self, x, edge_index, edge_weight):
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message(self, x_j, edge_weight):
        return edge_weight.unsqueeze(1) * x_j


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--channels", type=int, default=21)
    args = parser.parse_args()
    torch.manual_seed(0)
    image = data.astronaut()
    emit({"case": "machine", **machine(), "backend": ops.backend()})

    backends = ["reference"] + (["extension"] if ops.extension_available() else [])
    for name in backends:
        with ops.use_backend(name):
            seconds = median_seconds(lambda: graphseg.pixel_graph(image, radius=args.radius),
                                     repeats=args.repeats)
        emit({"case": "pixel_graph", "image": "astronaut 512x512", "radius": args.radius,
              "backend": name, "median_ms": round(1000 * seconds, 1)})

    graph = graphseg.pixel_graph(image, radius=args.radius)
    pyg = graph.to_pyg()
    edge_bytes = pyg.edge_index.nbytes + pyg.edge_weight.nbytes
    emit({"case": "memory", "edges": graph.num_edges, "window_graph_mib": graph.nbytes / 2**20,
          "pyg_edge_list_mib": edge_bytes / 2**20, "ratio": edge_bytes / graph.nbytes})

    graphseg.graph.window._edge_layout.cache_clear()
    first = median_seconds(graph.to_pyg, repeats=1, warmup=0)
    cached = median_seconds(graph.to_pyg, repeats=args.repeats)
    emit({"case": "to_pyg", "first_ms": round(1000 * first, 1),
          "cached_ms": round(1000 * cached, 1)})

    values = torch.rand(1, args.channels, *graph.image_size)
    flat = values[0].reshape(args.channels, -1).t().contiguous()
    csr = graph.to_sparse_csr()
    layer = WeightedSum()
    window = median_seconds(lambda: graph.aggregate(values), repeats=args.repeats)
    sparse = median_seconds(lambda: csr @ flat, repeats=args.repeats)
    message = median_seconds(lambda: layer(flat, pyg.edge_index, pyg.edge_weight),
                             repeats=max(2, args.repeats // 2))
    emit({"case": "propagation_step", "channels": args.channels, "backend": ops.backend(),
          "window_ms": round(1000 * window, 1), "torch_sparse_csr_ms": round(1000 * sparse, 1),
          "pyg_message_passing_ms": round(1000 * message, 1),
          "speedup_vs_csr": round(sparse / window, 2),
          "speedup_vs_pyg": round(message / window, 2)})


if __name__ == "__main__":
    main()
