"""``graphseg demo``: a windowed pixel graph of an image that ships with scikit-image."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from graphseg._io import atomic_path
from graphseg.figures import overlay, save_panels
from graphseg.graph import WindowGraph, pixel_graph
from graphseg.ops import backend
from graphseg.propagate import harmonic, random_walk, random_walker_graph


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def astronaut_scribbles() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut and three synthetic scribbled labels — 0 background (wall, flag, shuttle),
    1 astronaut (hair, face, suit), 2 helmet — as an int64 seed map with 255 = unknown."""
    image = _astronaut()
    seeds = np.full(image.shape[:2], 255, dtype=np.int64)
    seeds[30:250, 455:462] = 0
    seeds[12:18, 20:140] = 0
    seeds[60:200, 318:324] = 0
    seeds[40:46, 180:240] = 1
    seeds[110:170, 190:196] = 1
    seeds[350:356, 40:200] = 1
    seeds[290:296, 400:500] = 0
    seeds[420:426, 300:400] = 2
    return image, seeds


STRIDE = 4


def run_propagation_demo(out: str | Path = "demo-out") -> dict:
    """Propagates the astronaut scribbles with ``harmonic`` (scikit-image's graph) and
    ``random_walk`` (the disk r = 5 Gaussian graph) and writes ``OUT/propagation.png``."""
    image, seeds = astronaut_scribbles()
    seed_tensor = torch.from_numpy(seeds)[None]
    start = time.perf_counter()
    probs = harmonic(random_walker_graph(image), seed_tensor)
    harmonic_seconds = time.perf_counter() - start
    # The random walk runs at stride 4, where AffinityNet and IRN use it: 256 steps of a
    # radius-5 window carry labels about 5·√256 = 80 graph pixels.
    start = time.perf_counter()
    small = torch.nn.functional.avg_pool2d(
        torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, STRIDE)
    graph = pixel_graph(small, radius=5, self_weight=1.0)
    sampled = seed_tensor[:, STRIDE // 2 :: STRIDE, STRIDE // 2 :: STRIDE]
    onehot = torch.nn.functional.one_hot(sampled.clamp_max(2), 3).permute(0, 3, 1, 2)
    walked = random_walk(graph, (onehot * (sampled != 255).unsqueeze(1)).float(), beta=1,
                         num_steps=256)
    walked = torch.nn.functional.interpolate(walked, size=seeds.shape, mode="bilinear",
                                             align_corners=False)
    walk_seconds = time.perf_counter() - start
    walk_labels = torch.where(walked.sum(1) > 1e-6, walked.argmax(1), 255)[0].numpy()
    harmonic_labels = probs[0].argmax(0).numpy()
    figure_path = Path(out) / "propagation.png"
    save_panels(figure_path, [
        ("scribbles: background, astronaut, helmet", overlay(image, seeds, alpha=1.0)),
        (f"harmonic (random walker), {harmonic_seconds:.2f} s", overlay(image, harmonic_labels)),
        (f"random walk (stride {STRIDE}, 256 steps), {walk_seconds:.2f} s",
         overlay(image, walk_labels)),
    ])
    reached = float((walk_labels != 255).mean())
    print(f"scribbles propagated: harmonic in {harmonic_seconds:.2f} s, random walk (256 steps) "
          f"in {walk_seconds:.1f} s reaching {100 * reached:.0f}% of the pixels")
    print(f"  figure: {figure_path}")
    return {"harmonic_s": harmonic_seconds, "random_walk_s": walk_seconds,
            "random_walk_reached": reached, "figure": str(figure_path)}


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
