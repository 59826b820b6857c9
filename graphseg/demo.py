"""``graphseg demo``: a windowed pixel graph of an image that ships with scikit-image."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from graphseg._io import atomic_path
from graphseg.graph import WindowGraph, pixel_graph
from graphseg.ops import backend


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _edge_list_bytes(graph: WindowGraph) -> int:
    """Bytes of the same graph as PyG ``edge_index`` (int64) plus ``edge_weight``."""
    return graph.num_edges * (2 * 8 + graph.weight.element_size())


def _figure(image: np.ndarray, graph: WindowGraph, path: Path) -> None:
    from matplotlib.figure import Figure

    valid = graph._mask().sum(0).to(graph.weight.dtype)
    mean = (graph.weight[0].sum(0) / valid.clamp_min(1)).cpu().numpy()
    right = graph.offsets.tolist().index([0, 1])
    below = graph.offsets.tolist().index([1, 0])
    edge = torch.minimum(graph.weight[0, right], graph.weight[0, below]).cpu().numpy()

    figure = Figure(figsize=(15, 5.2), layout="constrained")
    axes = figure.subplots(1, 3)
    axes[0].imshow(image)
    axes[0].set_title("image (skimage.data.astronaut)")
    shown = axes[1].imshow(mean, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title(f"mean affinity over the window (K = {graph.num_offsets})")
    figure.colorbar(shown, ax=axes[1], shrink=0.8)
    shown = axes[2].imshow(edge, cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("affinity to the right / lower neighbour (min)")
    figure.colorbar(shown, ax=axes[2], shrink=0.8)
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle("graphseg: Gaussian colour + position pixel graph, disk window r = 5")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")


def run_demo(out: str | Path = "demo-out", *, radius: int = 5, repeats: int = 3) -> dict:
    """Builds the pixel graph of the astronaut image, prints its size and timing and writes
    ``OUT/pixel_graph.png``. Returns the printed numbers."""
    image = _astronaut()
    pixel_graph(image[:64, :64], radius=radius)  # warm-up: first-call allocations and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph = pixel_graph(image, radius=radius)
        times.append(time.perf_counter() - start)
    out = Path(out)
    figure_path = out / "pixel_graph.png"
    _figure(image, graph, figure_path)
    result = {
        "image": "skimage.data.astronaut",
        "size": list(graph.image_size),
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "offsets": graph.num_offsets,
        "backend": backend(),
        "build_ms_median": round(1000 * statistics.median(times), 1),
        "window_graph_mib": round(graph.nbytes / 2**20, 1),
        "edge_list_mib": round(_edge_list_bytes(graph) / 2**20, 1),
        "figure": str(figure_path),
    }
    height, width = graph.image_size
    print(f"pixel graph of skimage.data.astronaut ({height}x{width}), disk window r = {radius}")
    print(f"  nodes {result['nodes']:,}  edges {result['edges']:,}  offsets {result['offsets']}")
    print(f"  built in {result['build_ms_median']} ms (median of {repeats}, "
          f"{result['backend']} ops)")
    print(f"  memory: WindowGraph {result['window_graph_mib']} MiB vs PyG edge_index + "
          f"edge_weight {result['edge_list_mib']} MiB")
    print(f"  figure: {figure_path}")
    return result
