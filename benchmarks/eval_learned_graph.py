"""Does the learned graph earn its place? One propagation from the same box seeds, on the RGB +
position kernel graph and on the learned graph of an affinity CNN trained across the folder.

The affinity CNN (thesis §3.3.3) is trained once per working size across the folder
(:func:`graphseg.pipelines.train_affinity_dataset`), by default on the labels of the
``box-network`` recipe (trained on the same folder from its boxes; ``--targets``), away from
their borders (``--band``), as the thesis trains it on the confident pixels of CAMs; with
``--targets seeds`` on the box seeds M_B of every image. With several ``--epochs`` the shorter
runs are snapshots of the longest one (a resumed run continues exactly as an uninterrupted
one). Then every image is labelled, from the seeds M_B of
:func:`graphseg.pipelines.weak_seeds`, by

- ``seeds``: the seeds alone, unknown pixels counted background (for scale);
- ``harmonic``: Grady's random walker (:func:`graphseg.harmonic`) on the RGB graph at image
  resolution, and on the learned graph (:class:`graphseg.pipelines.LearnedGraph`). By default
  that graph is at image resolution too (``--resolution image``): F_A resized to the image,
  the RGB graph's window, affinities raised to ``--beta``; beside it, those affinities
  multiplied into the RGB graph's weights (``learned × rgb``, ``LearnedGraph(rgb=True)``).
  At the nodes of F_A
  (``--resolution nodes``, the thesis's graph) the seeds are resampled to the nodes (nearest)
  and the probabilities upsampled bilinearly to the image before the argmax; beside it then,
  the same walk with the seeded pixels set back to their seeds (``learned, seeds kept``) and,
  as a control, the RGB graph of the image resized to the learned graph's nodes, walked and
  upsampled the same way (``rgb at the learned nodes``);
- ``a2gnn``: :func:`graphseg.pipelines.segment` with ``method="a2gnn"``, on the superpixel
  graph (``checkpoint=None``) or the learned graph (``checkpoint=`` the affinity CNN), the
  preset's finishing included.

Labels outside the boxes are background in every row (as :func:`~graphseg.pipelines.segment`
does). Scores: foreground IoU, error over the box interiors (the GrabCut protocol of
eval_weak.py). Seconds per image: the median over the images, the seeds included, plus the
training time (the box network's and the affinity CNN's) divided by the images of the folder.

Usage::

    python benchmarks/eval_learned_graph.py --size 192 --a2gnn-limit 0   # horses224, 20 epochs
    python benchmarks/eval_learned_graph.py --targets seeds --resolution nodes
    python benchmarks/eval_learned_graph.py --epochs 20 --epochs 40 --size 128 --size 192
    python benchmarks/eval_learned_graph.py --limit 10 --a2gnn-limit 5 --out /tmp/affinity
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_DATA, emit, machine  # noqa: E402
from eval_weak import _rounded, _score  # noqa: E402

from graphseg import ops  # noqa: E402
from graphseg.data import SegmentationFolder  # noqa: E402
from graphseg.nn.train import resample_seeds  # noqa: E402
from graphseg.pipelines import (  # noqa: E402
    PRESETS,
    LearnedGraph,
    Preset,
    RGBGraph,
    box_network_labels,
    load_affinity,
    segment,
    train_affinity_dataset,
)
from graphseg.pipelines._common import renumber, upsample  # noqa: E402
from graphseg.pipelines.kinds import WeakInput, weak_input  # noqa: E402
from graphseg.propagate import harmonic  # noqa: E402

WEAK = "boxes"
SET = "horses224"


def box_seeds(sample: dict, num_classes: int, preset: Preset) -> WeakInput:
    """The seeds M_B of :func:`graphseg.pipelines.weak_seeds`, with the channel view that the
    recipes propagate."""
    return weak_input(sample["image"][None], {WEAK: sample[WEAK]}, weak=WEAK,
                      num_classes=num_classes, config=preset.seeds)


def seeds_only(inputs: WeakInput) -> torch.Tensor:
    seeds = inputs.seeds[0]
    return torch.where(seeds == 255, 0, seeds)


def harmonic_rgb(image: torch.Tensor, inputs: WeakInput) -> torch.Tensor:
    probs = harmonic(RGBGraph().build(image), inputs.local, num_classes=len(inputs.classes))
    return inputs.labels(probs)


def walk_at_nodes(graph, image: torch.Tensor, inputs: WeakInput) -> torch.Tensor:
    """``(1, K, H, W)`` probabilities of the walk on a graph coarser than the image: the
    seeds resampled to its nodes (nearest), the result upsampled bilinearly to the image."""
    seeds = resample_seeds(inputs.local, graph.image_size)
    # a class whose seeds all fall between the nodes (a thin strip outside a box) has none
    # there: the walk runs on the classes left, the lost one gets probability 0
    present, local = renumber(seeds)
    probs = torch.zeros(1, len(inputs.classes), *graph.image_size)
    if len(present) == 1:
        probs[:, present] = 1.0
    else:
        probs[:, present] = harmonic(graph, local, num_classes=len(present)).cpu()
    return upsample(probs, tuple(image.shape[2:]))


def harmonic_learned(image: torch.Tensor, inputs: WeakInput, model,
                     learned: LearnedGraph) -> tuple[torch.Tensor, tuple[int, int]]:
    """Labels of the walk on the learned graph, and the size of its node grid."""
    graph = learned.build(image, model)
    return inputs.labels(walk_at_nodes(graph, image, inputs)), graph.image_size


def harmonic_rgb_at(image: torch.Tensor, inputs: WeakInput,
                    size: tuple[int, int]) -> torch.Tensor:
    """Labels of the walk on the RGB graph of the image resized to ``size``."""
    small = F.interpolate(image, size=size, mode="bilinear", align_corners=False,
                          antialias=True)
    return inputs.labels(walk_at_nodes(RGBGraph().build(small), image, inputs))


def keep_seeds(labels: torch.Tensor, inputs: WeakInput) -> torch.Tensor:
    """``labels`` with the seeded pixels set to their seeds, as the walk at image resolution
    leaves them."""
    seeds = inputs.seeds[0]
    return torch.where(seeds == 255, labels, seeds)


def a2gnn(sample: dict, num_classes: int, model, learned: LearnedGraph,
          preset: Preset) -> torch.Tensor:
    config = replace(preset.config("a2gnn"), learned=learned)
    return segment(sample["image"], {WEAK: sample[WEAK]}, weak=WEAK, method="a2gnn",
                   num_classes=num_classes, preset=preset, config=config, checkpoint=model)


def box_network_targets(dataset) -> tuple[dict, float]:
    """The labels of the ``box-network`` recipe (trained across the folder on its boxes) for
    every image, and the seconds they took."""
    start = time.perf_counter()
    samples = [dataset[i] for i in range(len(dataset))]
    labels = box_network_labels(samples, num_classes=dataset.num_classes, progress=False)
    seconds = time.perf_counter() - start
    emit({"case": "eval_learned_graph_targets", "set": SET, "targets": "box-network",
          "seconds": round(seconds, 1), **_rounded(_score(SET, dataset, labels))})
    return labels, seconds


def train(dataset, out: Path, size: int, epochs: list[int], preset: Preset,
          targets: dict | None, band: int) -> dict[int, tuple[Path, float]]:
    """Checkpoints of the affinity CNN at each of ``epochs`` (one run, snapshots copied on the
    way) and the training seconds up to each, seeds included (a resumed run builds them
    again)."""
    path, done, elapsed, checkpoints = out / f"affinity_s{size}.pt", 0, 0.0, {}
    for count in sorted(epochs):
        start = time.perf_counter()
        report = train_affinity_dataset(dataset, weak=WEAK, out=path, epochs=count, size=size,
                                        preset=preset, progress=False, resume=done > 0,
                                        targets=targets, band=band)
        elapsed += time.perf_counter() - start
        snapshot = out / f"affinity_s{size}_e{count}.pt"
        shutil.copyfile(path, snapshot)
        checkpoints[count] = (snapshot, elapsed)
        emit({"case": "eval_learned_graph_training", "set": SET, "size": size,
              "epochs": count, "seconds": round(elapsed, 1),
              "loss_per_epoch": [round(loss, 4) for loss in report.history],
              "failures": len(report.failures)})
        done = count
    return checkpoints


def run(dataset, samples: list[dict], models: dict, a2gnn_limit: int,
        preset: Preset) -> list[dict]:
    """Labels the samples with every method on every graph; one row each."""
    num_classes = dataset.num_classes
    runs: dict[tuple, dict] = {}

    def record(key: tuple, name: str, labels: torch.Tensor, seconds: float) -> None:
        entry = runs.setdefault(key, {"predictions": {}, "seconds": []})
        entry["predictions"][name] = labels
        entry["seconds"].append(seconds)

    for index, sample in enumerate(samples):
        name, image = sample["name"], sample["image"][None]
        start = time.perf_counter()
        inputs = box_seeds(sample, num_classes, preset)
        seed_seconds = time.perf_counter() - start
        record(("seeds", "none", None), name, seeds_only(inputs), seed_seconds)
        if len(inputs.classes) == 1:  # one class seeded: every method gives it everywhere
            labels = inputs.labels(torch.ones(1, 1, *image.shape[2:]))
            for key in [("harmonic", "rgb", None), ("a2gnn", "superpixel", None),
                        *[(m, g, k) for k in models for m, g in (
                            ("harmonic", "learned"), ("harmonic", "learned, seeds kept"),
                            ("harmonic", "rgb at the learned nodes"), ("a2gnn", "learned"))
                          if models[k][1].resolution == "nodes" or g == "learned"],
                        *[("harmonic", "learned × rgb", k) for k in models
                          if models[k][1].resolution == "image"]]:
                if key[0] == "harmonic" or index < a2gnn_limit:
                    record(key, name, labels, seed_seconds)
            continue
        start = time.perf_counter()
        record(("harmonic", "rgb", None), name, harmonic_rgb(image, inputs),
               seed_seconds + time.perf_counter() - start)
        for key, (model, learned, _) in models.items():
            start = time.perf_counter()
            labels, size = harmonic_learned(image, inputs, model, learned)
            seconds = seed_seconds + time.perf_counter() - start
            record(("harmonic", "learned", key), name, labels, seconds)
            if learned.resolution == "image":  # the walk keeps its seeds, no control needed
                start = time.perf_counter()
                labels, _ = harmonic_learned(image, inputs, model, replace(learned, rgb=True))
                record(("harmonic", "learned × rgb", key), name, labels,
                       seed_seconds + time.perf_counter() - start)
                continue
            record(("harmonic", "learned, seeds kept", key), name, keep_seeds(labels, inputs),
                   seconds)
            start = time.perf_counter()
            record(("harmonic", "rgb at the learned nodes", key), name,
                   harmonic_rgb_at(image, inputs, size),
                   seed_seconds + time.perf_counter() - start)
        if index >= a2gnn_limit:
            continue
        for key, model, learned in [(None, None, preset.config("a2gnn").learned),
                                    *[(k, m, lg) for k, (m, lg, _) in models.items()]]:
            start = time.perf_counter()
            labels = a2gnn(sample, num_classes, model, learned, preset)
            record(("a2gnn", "superpixel" if model is None else "learned", key), name, labels,
                   time.perf_counter() - start)
    rows = []
    order = {"seeds": 0, "harmonic": 1, "a2gnn": 2}
    for (method, graph, key), entry in sorted(runs.items(), key=lambda item: (
            order[item[0][0]], item[0][2] is not None, item[0][2] or (), item[0][1])):
        # the control at the learned graph's resolution uses no affinity CNN
        training = models[key][2] if graph.startswith("learned") else 0.0
        row = {"case": "eval_learned_graph", "set": SET, "weak": WEAK, "method": method,
               "graph": graph, "images": len(entry["predictions"]),
               "grabcut_context": preset.seeds.context}
        if key is not None:
            row.update(size=key[0], epochs=key[1], training_seconds=round(training, 1))
        row["seconds_per_image"] = round(statistics.median(entry["seconds"])
                                         + training / len(dataset), 3)
        row.update(_rounded(_score(SET, dataset, entry["predictions"])))
        if row["images"] < len(samples):
            # the peers on the same images: the seeds alone and the walk on the RGB graph
            for peer in [("seeds", "none", None), ("harmonic", "rgb", None)]:
                subset = {n: runs[peer]["predictions"][n] for n in entry["predictions"]}
                row[f"{peer[0]}_{peer[1]}_same_images"] = _rounded(_score(SET, dataset, subset))
        emit(row)
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    lines = ["| method | graph | images | fg IoU | box error | s / image |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        graph = r["graph"]
        if "size" in r:
            trained = f", {r['epochs']} ep" if graph.startswith("learned") else ""
            graph += f" ({r['size']} px{trained})"
        lines.append(f"| {r['method']} | {graph} | {r['images']} | "
                     f"{100 * r['foreground_iou']:.1f}% | {100 * r['box_error']:.2f}% | "
                     f"{r['seconds_per_image']:.2f} |")
    return "\n".join(lines)


def _context(value: str) -> float | None:
    return None if value == "image" else float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA / SET),
                        help="folder with images/, masks/ and annotations.json (boxes)")
    parser.add_argument("--limit", type=int, help="first N images (training and labelling)")
    parser.add_argument("--a2gnn-limit", type=int, default=None,
                        help="first N images for the a2gnn rows (default: every image)")
    parser.add_argument("--epochs", type=int, action="append",
                        help="affinity CNN epochs (repeatable; default: 20)")
    parser.add_argument("--size", type=int, action="append",
                        help="longer side of the learned graph's working image (repeatable; "
                             "default: the preset's)")
    parser.add_argument("--context", type=_context, default=PRESETS[WEAK].seeds.context,
                        help="GrabCut's window around each box for the seeds, as a fraction "
                             "of the box's sides, or 'image' for the whole image (default: "
                             "the preset's)")
    parser.add_argument("--targets", choices=("box-network", "seeds"), default="box-network",
                        help="what the affinity CNN learns from: the labels of the box-network "
                             "recipe trained on the folder (its time counted in the learned "
                             "rows), or the seeds M_B (default: box-network)")
    parser.add_argument("--band", type=int, default=2,
                        help="with --targets box-network: working pixels left unknown on each "
                             "side of the labels' borders (default: 2)")
    parser.add_argument("--resolution", choices=("image", "nodes"), default="image",
                        help="the learned graph's nodes: every pixel of the image (with the "
                             "RGB graph's window) or the positions of F_A (default: image)")
    parser.add_argument("--beta", type=float, default=None,
                        help="power of the learned affinities (default: 256 at image "
                             "resolution, 1 at the nodes)")
    parser.add_argument("--out", help="folder for the checkpoints (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    emit({"case": "machine", **machine(), "backend": ops.backend()})
    dataset = SegmentationFolder(args.data, weak=WEAK)
    if args.limit:
        dataset = SegmentationFolder(args.data, weak=WEAK, names=dataset.names[:args.limit])
    samples = [dataset[i] for i in range(len(dataset))]
    preset = PRESETS[WEAK].replace(replace(PRESETS[WEAK].seeds, context=args.context))
    learned = preset.config("a2gnn").learned
    beta = args.beta if args.beta is not None else 256.0 if args.resolution == "image" else 1.0
    learned = replace(learned, resolution=args.resolution, beta=beta)
    if args.resolution == "image":  # like for like: the RGB graph's window
        learned = replace(learned, radius=RGBGraph().radius, shape="disk")
    targets, target_seconds = (box_network_targets(dataset) if args.targets == "box-network"
                               else (None, 0.0))
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(args.out or temporary)
        out.mkdir(parents=True, exist_ok=True)
        models = {}
        for size in args.size or [learned.size]:
            for epochs, (path, seconds) in train(dataset, out, size, args.epochs or [20],
                                                 preset, targets, args.band).items():
                models[(size, epochs)] = (load_affinity(path), replace(learned, size=size),
                                          seconds + target_seconds)
        limit = len(samples) if args.a2gnn_limit is None else args.a2gnn_limit
        rows = run(dataset, samples, models, limit, preset)
    print(_table(rows))


if __name__ == "__main__":
    main()
