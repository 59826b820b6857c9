"""Propagation on windowed graphs against the peers, measured in the same run (JSON lines).

Cases (each runs in its own process so that its peak memory is its own):

- ``harmonic``: graphseg.harmonic on scikit-image's graph of the 512x512 astronaut (or
  ``--harmonic-size``) with three scribbled labels, against ``skimage.segmentation.random_walker``
  in modes ``bf`` (the exact solution; label agreement) and ``cg_mg`` (speed; needs pyamg). Three
  rows, each with the load average: the first call in a fresh process, the warm median, and the
  warm median beside one CPU-bound competing process (both solvers under the same load).
- ``random_walk``: random_walk(preset-free, β 8, 256 steps) of 21 class maps on the full
  resolution disk r=5 pixel graph of the astronaut: time, its memory-bandwidth floor (the bytes
  one step must move — weights read, values read and written — times the steps, over the copy
  bandwidth measured in the same run) and the ratio, its arithmetic floor (the multiply-adds
  over the rate of a float32 matrix product measured in the same run: the walk is bound by
  arithmetic, and on a shared machine that rate moves with the neighbours' load), the
  step-by-step path (one
  window_aggregate per step, timed over 16 steps) and peak memory, against the dense N×N matrix
  the reference code would build.
- ``label_spreading``: against PyG's LabelPropagation on the converted graph with the same
  symmetric normalisation.
- ``crf``: the CRF (psa preset) on the permutohedral lattice (compiled, and with tensor
  operations) and windowed, against pydensecrf2 on the voc14 images of the data folder, from
  the harmonic probabilities of the clicks, on the classes present and on all 21: label
  agreement, mIoU, seconds, time ratio.

    python benchmarks/bench_propagation.py [--case NAME] [--data ../shared/data] [--limit N]
        [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import (
    DEFAULT_DATA,
    copy_bandwidth,
    cpu_clone,
    cpu_model,
    emit,
    machine,
    median_seconds,
    multiply_add_rate,
)
from skimage import data as skdata

import graphseg
from graphseg import ops
from graphseg.data import SegmentationFolder
from graphseg.demo import astronaut_scribbles
from graphseg.metrics import confusion_matrix, mean_iou
from graphseg.propagate import (
    CRF_METHODS,
    crf,
    harmonic,
    label_spreading,
    random_walk,
    random_walker_graph,
    transition,
)
from graphseg.seeds import rasterize_points


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _harmonic_inputs(size: int):
    """The astronaut scribbles at ``size``² (every 512/size-th pixel) and scikit-image's labels."""
    image, seeds = astronaut_scribbles()
    stride = 512 // size
    image, seeds = image[::stride, ::stride].copy(), seeds[::stride, ::stride].copy()
    return image, seeds, np.where(seeds == 255, 0, seeds + 1)


def _harmonic_solvers(size: int) -> dict:
    from skimage.segmentation import random_walker

    image, seeds, labels = _harmonic_inputs(size)
    seed_tensor = torch.from_numpy(seeds)[None]
    return {"graphseg": lambda: harmonic(random_walker_graph(image), seed_tensor),
            "skimage_cg_mg": lambda: random_walker(image, labels, beta=130, mode="cg_mg",
                                                   channel_axis=-1)}


# a fresh process times its first call: imports, inputs and solver set up before the clock starts
_COLD = """import json, sys, time, warnings
sys.path.insert(0, {here!r})
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(2)
from bench_propagation import _harmonic_solvers
solve = _harmonic_solvers({size})[{name!r}]
start = time.perf_counter()
solve()
print(json.dumps(time.perf_counter() - start))
"""


def _cold_seconds(name: str, size: int) -> float:
    code = _COLD.format(here=str(Path(__file__).parent), size=size, name=name)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def case_harmonic(args) -> None:
    from skimage.segmentation import random_walker

    try:
        import pyamg  # noqa: F401
    except ImportError:
        has_pyamg = False
    else:
        has_pyamg = True
    size = args.harmonic_size
    image, seeds, labels = _harmonic_inputs(size)
    start = time.perf_counter()
    exact = random_walker(image, labels, beta=130, mode="bf", channel_axis=-1) - 1
    bf_seconds = time.perf_counter() - start
    solvers = _harmonic_solvers(size)
    if not has_pyamg:
        del solvers["skimage_cg_mg"]
    title = f"astronaut {size}x{size}, 3 scribbled labels"
    base = {"case": "harmonic", "image": title, "backend": ops.backend(),
            "cpu_model": cpu_model(), "threads": torch.get_num_threads()}

    def row(kind: str, seconds: dict, **extra) -> dict:
        record = {**base, "row": kind, **{f"{k}_s": round(v, 3) for k, v in seconds.items()}}
        if "skimage_cg_mg" in seconds:
            record["speedup_vs_cg_mg"] = round(seconds["skimage_cg_mg"] / seconds["graphseg"], 2)
        else:
            record["skimage_cg_mg_s"] = "pyamg not installed"
        record.update(extra, loadavg=_load())
        emit(record)
        return record

    cold = {name: _cold_seconds(name, size) for name in solvers}
    warm = {name: median_seconds(solve, repeats=args.repeats) for name, solve in solvers.items()}
    ours_labels = solvers["graphseg"]()[0].argmax(0).numpy()
    row("cold_first_call", cold,
        graphseg_cold_over_warm=round(cold["graphseg"] / warm["graphseg"], 2))
    row("warm_median", warm, skimage_bf_s=round(bf_seconds, 3),
        speedup_vs_bf=round(bf_seconds / warm["graphseg"], 2),
        agreement_with_bf=round(float((ours_labels == exact).mean()), 5))
    # one CPU-bound competitor for the whole measurement, on whichever core the kernel gives it
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = {name: median_seconds(solve, repeats=args.repeats)
                for name, solve in solvers.items()}
    finally:
        competitor.kill()
        competitor.wait()
    row("contended_one_busy_process", busy,
        graphseg_contended_over_warm=round(busy["graphseg"] / warm["graphseg"], 2))


def case_random_walk(args) -> None:
    image = skdata.astronaut()
    graph = graphseg.pixel_graph(image, radius=5, self_weight=1.0)
    classes, steps = 21, 256
    probs = torch.softmax(
        torch.randn(1, classes, 512, 512, generator=torch.Generator().manual_seed(0)), 1)
    baseline = _peak_rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    walked = random_walk(graph, probs, beta=8, num_steps=steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _peak_rss_mib()
    copy = copy_bandwidth(repeats=args.repeats)  # after the walk: its buffers count for no peak
    rate = multiply_add_rate(repeats=args.repeats)
    # One multiply-add per node, window entry (the self loop included), class and step.
    multiply_adds = graph.num_nodes * (graph.num_offsets + 1) * classes * steps
    arithmetic_floor = multiply_adds / rate["multiply_adds_per_s"]
    # The floor of one step: read the weights (the window's planes and the self-loop plane that
    # the normalisation makes per-pixel) and the values, write the values.
    element = probs.element_size()
    step_bytes = (graph.num_offsets + 1) * graph.num_nodes * element + 2 * probs.numel() * element
    floor = step_bytes * steps / copy["bytes_per_s"]
    # The step-by-step path (one window_aggregate per step) over a few steps, for comparison.
    loop_steps = 16
    start = time.perf_counter()
    looped = probs
    operator = transition(graph, 8)
    for _ in range(loop_steps):
        looped = operator._aggregate(looped)
    loop_seconds = time.perf_counter() - start
    fused_short = random_walk(graph, probs, beta=8, num_steps=loop_steps)
    nodes = graph.num_nodes
    emit({"case": "random_walk", "image": "astronaut 512x512", "classes": classes,
          "offsets": graph.num_offsets, "steps": steps, "backend": ops.backend(),
          "cpu_clone": cpu_clone(), "seconds": round(seconds, 2),
          "cpu_seconds_all_threads": round(cpu_seconds, 2),
          "copy_gib_per_s": copy["gib_per_s"], "bytes_per_step": step_bytes,
          "floor_s": round(floor, 3), "over_floor": round(seconds / floor, 2),
          "sgemm_g_multiply_adds_per_s": rate["g_multiply_adds_per_s"],
          "arithmetic_floor_s": round(arithmetic_floor, 3),
          "over_arithmetic_floor": round(seconds / arithmetic_floor, 2),
          "step_by_step_s_per_step": round(loop_seconds / loop_steps, 4),
          "speedup_vs_step_by_step": round(loop_seconds / loop_steps * steps / seconds, 2),
          "max_abs_difference_vs_step_by_step_16_steps":
              float((looped - fused_short).abs().max()),
          "peak_rss_mib": round(peak, 1), "peak_rss_over_inputs_mib": round(peak - baseline, 1),
          "dense_matrix_gib": round(nodes * nodes * 4 / 2**30, 1),
          "finite": bool(torch.isfinite(walked).all())})


def case_label_spreading(args) -> None:
    from torch_geometric.nn.models import LabelPropagation

    image, seeds = astronaut_scribbles()
    graph = graphseg.pixel_graph(image, radius=5)
    seed_tensor = torch.from_numpy(seeds)[None]
    steps = args.steps
    data = graph.normalize("sym").to_pyg()
    flat = seed_tensor.reshape(-1)
    mask = flat != 255
    model = LabelPropagation(num_layers=steps, alpha=0.99)

    def peer():
        return model(torch.where(mask, flat, 0), data.edge_index, mask=mask,
                     edge_weight=data.edge_weight)

    def ours():
        return label_spreading(graph, seed_tensor, alpha=0.99, num_steps=steps, clamp=True)

    peer_seconds = median_seconds(peer, repeats=max(1, args.repeats // 2))
    seconds = median_seconds(ours, repeats=args.repeats)
    difference = (ours()[0].reshape(3, -1).t() - peer()).abs().max().item()
    emit({"case": "label_spreading", "image": "astronaut 512x512, disk r=5", "steps": steps,
          "backend": ops.backend(), "graphseg_s": round(seconds, 3),
          "pyg_label_propagation_s": round(peer_seconds, 3),
          "speedup": round(peer_seconds / seconds, 2), "max_abs_difference": difference})


def _miou(pred: torch.Tensor, mask: torch.Tensor, num_classes: int) -> float:
    return mean_iou(confusion_matrix(pred, mask, num_classes=num_classes))


def _pydensecrf(dcrf, unary_from_softmax, rgb, probs: torch.Tensor, settings) -> np.ndarray:
    """pydensecrf's usual five lines: the labels of its mean field."""
    classes, height, width = probs.shape
    model = dcrf.DenseCRF2D(width, height, classes)
    model.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.numpy().astype(np.float32))))
    model.addPairwiseGaussian(sxy=settings["smooth_sxy"], compat=settings["smooth_compat"])
    model.addPairwiseBilateral(sxy=settings["app_sxy"], srgb=settings["app_srgb"],
                               rgbim=np.ascontiguousarray(rgb), compat=settings["app_compat"])
    return np.argmax(np.array(model.inference(settings["num_iter"])), 0).reshape(height, width)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def case_crf(args) -> None:
    """Per image: the lattice CRF (compiled lattice of graphseg_ext when it is built), the same
    with the tensor-op lattice (``lattice_reference``), the windowed CRF and pydensecrf on the
    classes present; then the compiled lattice and pydensecrf on all the dataset's classes
    (``_all`` keys; the absent ones get probability 0, clipped as the unary clips it)."""
    folder = Path(args.data) / "voc14"
    if not folder.exists():
        emit({"case": "crf", "skipped": f"no data at {folder}"})
        return
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        dcrf = unary_from_softmax = None
    settings = graphseg.propagate.CRF_PRESETS["psa"]
    dataset = SegmentationFolder(folder, weak="points")
    classes = dataset.num_classes
    rows = []
    for index in range(min(args.limit, len(dataset))):
        sample = dataset[index]
        image, mask = sample["image"], sample["mask"]
        height, width = mask.shape
        seeds = rasterize_points(sample["points"], height, width, radius=5)
        present = torch.unique(seeds[seeds != 255])
        remap = torch.full((256,), 255, dtype=torch.int64)
        remap[present] = torch.arange(len(present))
        probs = harmonic(random_walker_graph(image), remap[seeds])
        everything = probs.new_zeros(1, classes, height, width)
        everything[:, present] = probs
        row = {"image": sample["name"], "classes_present": len(present),
               "miou_harmonic": _miou(present[probs[0].argmax(0)], mask, classes)}
        labels = {}
        runs = [(method, method, probs, present) for method in CRF_METHODS]
        runs += [("lattice_reference", "lattice", probs, present),
                 ("lattice_all", "lattice", everything, torch.arange(classes))]
        for name, method, given, names in runs:
            with ops.use_backend("reference" if name == "lattice_reference" else "auto"):
                marginals, seconds = _timed(partial(crf, image, given, method=method))
            labels[name] = names[marginals[0].argmax(0)]
            row[f"graphseg_{name}_s"] = seconds
            row[f"miou_graphseg_{name}"] = _miou(labels[name], mask, classes)
        if dcrf is not None:
            rgb = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            for suffix, given, names in (("", probs, present),
                                         ("_all", everything, torch.arange(classes))):
                peer, seconds = _timed(partial(_pydensecrf, dcrf, unary_from_softmax, rgb,
                                               given[0], settings))
                peer = names[torch.from_numpy(peer)]
                row[f"pydensecrf{suffix}_s"] = seconds
                row[f"miou_pydensecrf{suffix}"] = _miou(peer, mask, classes)
                for name in labels:
                    if name.endswith("_all") == (suffix == "_all"):
                        row[f"agreement_{name}"] = float((peer == labels[name]).float().mean())
                        row[f"speedup_{name}"] = (row[f"pydensecrf{suffix}_s"]
                                                  / row[f"graphseg_{name}_s"])
        rows.append(row)
    summary = {"case": "crf", "images": len(rows), "preset": "psa", "backend": ops.backend(),
               "classes_all": classes, **machine(),
               # the machine's other work: threads that wait for each other suffer most
               "load_average": round(os.getloadavg()[0], 2)}
    for key in rows[0]:
        if key != "image":
            summary[key] = round(float(np.median([row[key] for row in rows])), 4)
    summary["note"] = ("medians over images (ratios: medians of the per-image ratios, pydensecrf "
                       "measured in the same run); probabilities from harmonic on the clicks")
    emit(summary)


CASES = {"harmonic": case_harmonic, "random_walk": case_random_walk,
         "label_spreading": case_label_spreading, "crf": case_crf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="label spreading steps")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=14)
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads")
    parser.add_argument("--harmonic-size", type=int, choices=(128, 256, 512), default=512,
                        help="side of the astronaut for the harmonic case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        CASES[args.case](args)
        return
    emit({"case": "machine", **machine(), "backend": ops.backend()})
    forwarded = [f"--repeats={args.repeats}", f"--steps={args.steps}", f"--data={args.data}",
                 f"--limit={args.limit}", f"--threads={args.threads}",
                 f"--harmonic-size={args.harmonic_size}"]
    for name in CASES:
        subprocess.run([sys.executable, __file__, "--case", name, *forwarded], check=False)


if __name__ == "__main__":
    main()
