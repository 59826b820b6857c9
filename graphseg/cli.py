"""The ``graphseg`` command line."""

from __future__ import annotations

import argparse
import sys


def _add_checkpoint_backbone(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", metavar="SPEC",
                        help="the user network (package.module:callable) that --checkpoint "
                        "was trained with: rebuilding it runs that code, so a checkpoint "
                        "naming one loads only with this flag (torchvision and timm networks "
                        "need none)")


def _checkpoint(args, *, load: bool = False):
    """--checkpoint: its affinity CNN when ``load`` or --backbone asks for it (loaded with
    --backbone), else the path as given (None without one)."""
    if args.checkpoint is None:
        if args.backbone is not None:
            raise ValueError("--backbone names the network of a --checkpoint; give "
                             "--checkpoint")
        return None
    if not load and args.backbone is None:
        return args.checkpoint
    from graphseg.pipelines import load_affinity

    return load_affinity(args.checkpoint, backbone=args.backbone)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphseg",
        description="Graph learning on images for weakly supervised segmentation.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="build a pixel graph of a built-in image and draw its affinities",
        description="Builds the windowed pixel graph of skimage.data.astronaut, prints its size "
        "and build time, writes a figure of the affinities, then propagates three scribbled "
        "labels with the harmonic solver and the random walk and writes an overlay figure.",
        epilog="example: graphseg demo --out demo-out",
    )
    demo.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    demo.add_argument("--radius", type=int, default=5, help="window radius (default: 5)")

    segment = commands.add_parser(
        "segment",
        help="segment a folder of images from weak labels (boxes, clicks, scribbles, tags)",
        description="Writes OUT/NAME.png (uint8 class ids) for every image of the annotation "
        "file. Only the --weak labels are read. A failed image is reported on its own line and "
        "the others are still processed; every PNG is written atomically. Under torchrun "
        "each rank segments its shard of the images (the files are those of a single run). "
        "Exit code 0 only when every image succeeded.",
        epilog="example: graphseg segment --images data/grabcut/images --annotations "
        "data/grabcut/annotations.json --weak box --method grabcut --out pred "
        "(torchrun --nproc_per_node 4 -m graphseg segment ... runs it in 4 processes)",
    )
    _add_folder_arguments(segment)
    segment.add_argument("--method", help=_methods_help())
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument("--resume", action="store_true", help="skip images already written")
    _add_output_arguments(segment, figures=True)
    segment.add_argument("--checkpoint", help="affinity CNN from train-affinity: --method a2gnn "
                         "then runs on the learned pixel graph instead of superpixels (and "
                         "the random walk of --weak tags on it); with --method box-network, "
                         "the box_network.pt of an earlier run (without it, segment trains "
                         "the network on the folder and writes OUT/box_network.pt)")
    _add_checkpoint_backbone(segment)
    segment.add_argument("--instances", action="store_true",
                         help="with --weak box, also write OUT/instances/NAME.png (uint8 "
                         "instance ids, 0 = none, one instance per box) and NAME.json "
                         "(instance -> class and box)")
    _add_preset_argument(segment)

    train_affinity = commands.add_parser(
        "train-affinity",
        help="train the affinity CNN on the seeds of a folder's weak labels",
        description="Builds seeds from the --weak labels of every image (GrabCut in the boxes, "
        "clicks or scribbles expanded to superpixels, or the confident pixels of the CAMs of "
        "the tags), resizes them to --size, trains the affinity CNN "
        "and writes its state dict to OUT atomically after every epoch (--resume continues "
        "from it). A failed image is reported and left out. Exit code 0 only when every image "
        "gave seeds. Under torchrun the training is data parallel (DistributedDataParallel on "
        "a gloo group): each rank builds the seeds of its shard and gradients are averaged.",
        epilog="example: graphseg train-affinity --images data/grabcut/images --annotations "
        "data/grabcut/annotations.json --weak box --out affinity.pt "
        "(torchrun --nproc_per_node 4 -m graphseg train-affinity ... trains on 4 processes)",
    )
    _add_folder_arguments(train_affinity)
    train_affinity.add_argument("--out", required=True, help="checkpoint file to write")
    train_affinity.add_argument("--epochs", type=int, default=20,
                                help="total epochs (default: 20)")
    train_affinity.add_argument("--lr", type=float, default=3e-3,
                                help="Adam learning rate (default: 0.003)")
    train_affinity.add_argument("--size", type=int, default=128,
                                help="longer side of the working resolution (default: 128, "
                                "the one segment --checkpoint uses)")
    train_affinity.add_argument("--resume", action="store_true",
                                help="continue from the checkpoint at --out")
    train_affinity.add_argument("--backbone", metavar="SPEC",
                                help="the network of the affinity CNN instead of the small "
                                "one trained from scratch, e.g. torchvision:resnet50, "
                                "timm:convnext_tiny, mypkg.mod:build (a function returning a "
                                "module with 3 feature maps); the checkpoint records it: "
                                "graph and segment --checkpoint rebuild a torchvision or timm "
                                "network by its name, and a user network with --backbone")
    train_affinity.add_argument("--backbone-weights", metavar="FILE",
                                help="state dict the --backbone network starts from: a local "
                                "file (nothing is downloaded)")
    train_affinity.add_argument("--targets", metavar="DIR",
                                help="learn from pseudo-labels instead of the seeds of the "
                                "weak labels: DIR/NAME.png, uint8 class ids (255 unknown) at "
                                "each image's size, e.g. the --out of graphseg segment "
                                "--method box-network")
    train_affinity.add_argument("--band", type=int, default=None,
                                help="with --targets: working pixels left unknown on each side "
                                "of a border between two classes (default: 2)")
    _add_preset_argument(train_affinity)
    _add_output_arguments(train_affinity)

    evaluate = commands.add_parser(
        "evaluate",
        help="score predicted label maps against ground-truth masks",
        description="Mean IoU over the classes present in the ground truth (confusion summed "
        "over the images), foreground IoU and error rate per image averaged, and with "
        "--annotations the box-interior error rate (the GrabCut protocol). 255 in a mask is "
        "not scored.",
        epilog="example: graphseg evaluate --pred pred --masks data/grabcut/masks --json",
    )
    evaluate.add_argument("--pred", required=True, help="folder of predicted PNGs")
    evaluate.add_argument("--masks", required=True, help="folder of ground-truth PNGs")
    evaluate.add_argument("--annotations", help="annotation file with boxes (box error rate)")
    evaluate.add_argument("--num-classes", type=int, help="class count (default: inferred)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _add_graph_parser(commands)
    _add_propagate_parsers(commands)
    _add_bench_parser(commands)
    return parser


def _methods_help() -> str:
    """The methods of each weak kind, from the registry of recipes, the default of a folder
    marked."""
    from graphseg.pipelines import METHODS, PRESETS

    return "; ".join(f"{weak}: " + ", ".join(
        m + (" (default)" if m == PRESETS[weak].folder_default else "") for m in methods)
        for weak, methods in METHODS.items())


def _add_output_arguments(parser, *, figures: bool = False) -> None:
    """--quiet and --json (and --figures) of a long command."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object")
    if figures:
        parser.add_argument("--figures", metavar="DIR",
                            help="also write DIR/NAME.png: image, seeds and result side by side")


def _add_kernel_arguments(parser) -> None:
    """The colour + position kernel of a pixel graph."""
    parser.add_argument("--radius", type=int, default=5, help="window radius (default: 5)")
    parser.add_argument("--sigma-xy", type=float, default=6.0,
                        help="position bandwidth in pixels (default: 6)")
    parser.add_argument("--sigma-rgb", type=float, default=0.1,
                        help="colour bandwidth, colour in [0, 1] (default: 0.1)")


def _add_propagate_parsers(commands) -> None:
    from graphseg.pipelines.propagation import PROBABILITY_FORMATS, PROPAGATE_METHODS

    common = ("Reads IMAGES/NAME.png|jpg with SEEDS/NAME.png (uint8 class ids, 255 = unknown) "
              "or CAMS/NAME.npy (float (C, h, w), channel c-1 = class c; background from the "
              "preset) and propagates them over the colour + position pixel graph: "
              "random-walk (AffinityNet's walk; from CAMs the preset's, from seeds beta 1 and "
              "256 steps at stride 4), harmonic (Grady's random walker; CAMs give their "
              "confident seeds), label-spreading, par, crf (windowed dense CRF) or ial (IAL's "
              "E-step). A failed image is reported on its own line and the others are still "
              "processed; every file is written atomically. Under torchrun each rank takes its "
              "shard of the images (the files are those of a single run). Exit code 0 only "
              "when every image succeeded.")
    propagate = commands.add_parser(
        "propagate",
        help="propagate seed maps or CAMs over pixel graphs (probabilities and labels)",
        description="Writes OUT/NAME.npy (float32 (K, H, W) probabilities; --format pt for "
        "torch files) and OUT/NAME.png (uint8 argmax) per image. " + common,
        epilog="example: graphseg propagate --images photos --seeds scribbles --method "
        "harmonic --out propagated --figures figures",
    )
    labels = commands.add_parser(
        "pseudo-labels",
        help="pseudo-label a whole data set from seeds or CAMs (resumable, torchrun)",
        description="Writes OUT/NAME.png (uint8 class ids) per image, and with --probabilities "
        "also the probabilities; --resume skips images already written. " + common,
        epilog="example: graphseg pseudo-labels --images voc/JPEGImages --cams cams "
        "--method random-walk --preset psa --out pseudo --resume "
        "(torchrun --nproc_per_node 4 -m graphseg pseudo-labels ... runs 4 processes)",
    )
    for parser in (propagate, labels):
        parser.add_argument("--images", required=True, help="folder of RGB images")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--seeds", help="folder of seed maps NAME.png")
        source.add_argument("--cams", help="folder of class activation maps NAME.npy")
        parser.add_argument("--boundaries", help="folder of IRN boundary maps NAME.npy, float "
                            "(h, w) in [0, 1] (needed by --preset irn)")
        parser.add_argument("--attention", help="folder of token attention NAME.npy, float "
                            "(h, w, h, w) or (heads, h, w, h, w), or token features (D, h, w) "
                            "(needed by --method unia)")
        parser.add_argument("--method", required=True, choices=PROPAGATE_METHODS)
        parser.add_argument("--preset", choices=("psa", "irn", "a2gnn"),
                            help="with --cams: the random walk, the CRF parameters (psa, a2gnn) "
                            "and the background score of that paper (default: psa)")
        parser.add_argument("--num-classes", type=int,
                            help="class count of the seed maps (default: largest seed + 1)")
        _add_kernel_arguments(parser)
        parser.add_argument("--stride", type=int,
                            help="grid of the random walk (default: the preset's, else 4)")
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument("--resume", action="store_true", help="skip images already written")
        _add_output_arguments(parser, figures=True)
    propagate.add_argument("--format", choices=PROBABILITY_FORMATS, default="npy",
                           help="probability files: npy (default) or pt")
    labels.add_argument("--probabilities", choices=PROBABILITY_FORMATS,
                        help="also write the probabilities in this format")


BENCHMARKS = {
    # script name: its arguments in the short preset
    "graph": ["--repeats", "3"],
    "ops": ["--quick"],
    "propagation": ["--repeats", "1", "--limit", "2"],
    "superpixel": ["--limit", "3", "--repeats", "3", "--rag-repeats", "1"],
    "a2gnn": ["--repeats", "1", "--sizes", "64"],
    "losses": ["--repeats", "3"],
}
"""The benchmark scripts ``graphseg bench`` runs (benchmarks/bench_NAME.py)."""


def _add_bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="run the speed benchmarks (short preset) and collect their JSON lines",
        description="Runs benchmarks/bench_NAME.py of a source checkout, each in its own "
        "process with a short preset (--full: the scripts' own settings), prints their "
        "tables and writes every JSON line (peers measured in the same run, medians and "
        "ratios) to --out. A failing script is reported and the others still run. Exit code 0 "
        "only when every script succeeded.",
        epilog="example: graphseg bench --only graph --only propagation --out bench.jsonl",
    )
    bench.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                       help="run this benchmark (repeatable; default: all)")
    bench.add_argument("--full", action="store_true", help="the scripts' default settings")
    bench.add_argument("--data", help="folder holding grabcut/ and voc14/ for the benchmarks "
                       "that read real images")
    bench.add_argument("--out", help="file for the JSON lines of every benchmark")
    _add_output_arguments(bench)


def _add_folder_arguments(parser) -> None:
    """The images, annotation file and weak-label kind of a data-set command."""
    parser.add_argument("--images", required=True, help="folder of RGB images")
    parser.add_argument("--annotations", required=True,
                        help='JSON file {"num_classes": N, "images": {NAME: {...}}}')
    parser.add_argument("--weak", required=True, choices=sorted(_WEAK),
                        help="weak-label kind to read")
    parser.add_argument("--cams", help="folder of class activation maps NAME.npy, float "
                        "(C, h, w) with channel c-1 for class c: needed by --weak tags; with "
                        "--weak box the seeds become the confident box seeds M_g; with "
                        "--weak points or scribbles (train-affinity only) the affinity CNN "
                        "trains on the CAM seeds (points) or the scribbles merged with them")


def _add_preset_argument(parser) -> None:
    from graphseg.pipelines import PRESET_SOURCES

    parser.add_argument("--preset", choices=PRESET_SOURCES, default="graphseg",
                        help="whose choices to run (default: graphseg, the shipped settings): "
                        "paper = the thesis as printed, official = the authors' released code "
                        "(method a2gnn, its layer, losses, schedule, learned-graph window and "
                        "CRF; see the docs' preset tables)")


def _add_graph_parser(commands) -> None:
    graph = commands.add_parser(
        "graph",
        help="convert images to pixel or superpixel graph files",
        description="Writes OUT/NAME.pt (or .npz) per image: the windowed pixel graph of the "
        "colour + position kernel, or with --superpixels N the region adjacency graph of N SLIC "
        "superpixels. Formats: pyg (a dict of PyG Data tensors, torch.load(weights_only=True); "
        "graphseg.graph.load_graph rebuilds the Data), window (the compact windowed form, "
        "pixel graphs only), npz (edge list as NumPy arrays). A failed image is reported on its "
        "own line and the others are still converted; files are written atomically. Exit code "
        "0 only when every image succeeded.",
        epilog="example: graphseg graph photos/*.jpg --out graphs --radius 5 --format window",
    )
    graph.add_argument("images", nargs="+", help="image files")
    graph.add_argument("--out", required=True, help="output folder")
    _add_kernel_arguments(graph)
    graph.add_argument("--shape", default="disk", help="offset family: disk, psa, square, rings")
    graph.add_argument("--kernel", default="gaussian", help="gaussian, l1 or cosine")
    graph.add_argument("--superpixels", type=int, metavar="N",
                       help="build the graph of about N SLIC superpixels instead")
    graph.add_argument("--checkpoint", help="affinity CNN from train-affinity: the learned "
                       "graph (thesis Eq. 3.14) at its feature resolution, on --radius and "
                       "--shape, instead of the kernel")
    _add_checkpoint_backbone(graph)
    graph.add_argument("--format", default="pyg", choices=("pyg", "window", "npz"))
    _add_output_arguments(graph)


def _summary(args, text: str, record: dict, failures) -> int:
    """Prints the summary of a command (text, or one JSON object with --json) and returns the
    exit code: 0 when nothing failed, else 1."""
    import json

    failed = [{"name": f.name, "reason": f.reason} for f in failures]
    if args.json:
        print(json.dumps({"command": args.command, **record, "failed": failed}))
    else:
        print(text + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _graph(args) -> int:
    from collections import Counter
    from pathlib import Path

    from graphseg._checks import check_choice, check_positive
    from graphseg._io import output_folder
    from graphseg.data import read_image
    from graphseg.graph import pixel_graph, save_graph, superpixel_graph, window_offsets
    from graphseg.graph.window import KERNELS
    from graphseg.pipelines._runner import for_each_sample

    if args.superpixels is not None:
        check_positive("--superpixels", args.superpixels, integer=True)
        if args.format == "window":
            raise ValueError("--format window holds pixel graphs only; drop --superpixels or "
                             "use --format pyg or npz")
        if args.checkpoint:
            raise ValueError("--checkpoint builds learned pixel graphs; drop --superpixels")
    else:
        window_offsets(args.radius, args.shape)  # checks --radius and --shape
        check_choice("--kernel", args.kernel, KERNELS)
        check_positive("--sigma-xy", args.sigma_xy)
        check_positive("--sigma-rgb", args.sigma_rgb)
    names = [Path(name).stem for name in args.images]
    clashes = sorted(name for name, count in Counter(names).items() if count > 1)
    if clashes:
        sharing = [path for path in args.images if Path(path).stem in clashes]
        raise ValueError(f"images {sharing[:6]} share the names {clashes[:3]}: each would "
                         "write the same graph file; convert them into separate --out folders")
    model = _checkpoint(args, load=True)
    out = output_folder(args.out, "--out")
    suffix = ".npz" if args.format == "npz" else ".pt"

    class Files:
        def __init__(self):
            self.names = names

        def __len__(self):
            return len(args.images)

        def __getitem__(self, index):
            return {"name": names[index], "image": read_image(args.images[index])}

    def convert(name: str, sample: dict) -> None:
        image = sample["image"]
        if args.superpixels:
            graph = superpixel_graph(image, n_segments=args.superpixels)
        elif model is not None:
            import torch

            with torch.no_grad():
                graph = model.to_graph(image[None], radius=args.radius, shape=args.shape)
        else:
            graph = pixel_graph(image, radius=args.radius, shape=args.shape,
                                kernel=args.kernel, sigma_xy=args.sigma_xy,
                                sigma_rgb=args.sigma_rgb)
        save_graph(graph, out / (name + suffix), format=args.format)

    failures = for_each_sample(Files(), convert, desc="graph", progress=not args.quiet,
                               outputs=lambda name: [out / (name + suffix)])
    done = len(args.images) - len(failures)
    return _summary(args, f"wrote {done} of {len(args.images)} graphs into {out}",
                    {"items": len(args.images), "succeeded": done, "out": str(out)}, failures)


_WEAK = {"box": "boxes", "boxes": "boxes", "points": "points", "scribbles": "scribbles",
         "tags": "tags"}
_CAM_COMMANDS = {"boxes": ("segment", "train-affinity"), "points": ("train-affinity",),
                 "scribbles": ("train-affinity",), "tags": ("segment", "train-affinity")}
"""The data-set commands that read --cams for each weak kind: boxes seed M_g from them
(thesis Eq. 3.5), points and scribbles train the affinity CNN on their seeds (§3.6.1), tags
need them."""


def _folder(args, weak: str):
    """The data set of a data-set command (--images, --annotations, --cams)."""
    from graphseg.data import SegmentationFolder

    if weak == "tags" and args.cams is None:
        raise ValueError("--weak tags needs --cams DIR (class activation maps NAME.npy)")
    if args.cams is not None and args.command not in _CAM_COMMANDS[weak]:
        uses = " and ".join(_CAM_COMMANDS[weak]) or "no command"
        raise ValueError(f"--cams does not apply to {args.command} --weak {args.weak}: "
                         f"with --weak {args.weak} it is read by {uses} only; drop --cams")
    return SegmentationFolder(images=args.images, annotations=args.annotations, weak=weak,
                              with_mask=False, cams=args.cams)


def _segment(args) -> int:
    from graphseg.pipelines import segment_dataset
    from graphseg.pipelines.distributed import ranks

    weak = _WEAK[args.weak]
    dataset = _folder(args, weak)
    with ranks() as (rank, world):
        failures = segment_dataset(dataset, args.out, weak=weak, method=args.method,
                                   resume=args.resume, progress=not args.quiet,
                                   checkpoint=_checkpoint(args), shard=(rank, world),
                                   figures=args.figures, preset=args.preset,
                                   instances=args.instances)
        return _dataset_summary(args, "segmented", dataset, failures, rank, world)


def _dataset_summary(args, verb: str, dataset, failures, rank: int, world: int) -> int:
    """The summary of a data-set command, printed by rank 0 with the failures of every rank;
    every rank returns the same exit code."""
    from graphseg.pipelines.distributed import gather_failures

    failures = gather_failures(failures, dataset.names)
    done = len(dataset) - len(failures)
    text = (f"{verb} {done} of {len(dataset)} images into {args.out}"
            + (f" with {world} processes" if world > 1 else ""))
    record = {"items": len(dataset), "succeeded": done, "out": args.out, "processes": world}
    if rank == 0:
        return _summary(args, text, record, failures)
    return 1 if failures else 0


def _train_affinity(args) -> int:
    from graphseg._io import output_file
    from graphseg.data import LabelMaps
    from graphseg.pipelines import train_affinity_dataset
    from graphseg.pipelines.distributed import ranks

    weak = _WEAK[args.weak]
    if args.backbone_weights is not None and args.backbone is None:
        raise ValueError("--backbone-weights needs --backbone (the network they belong to)")
    output_file(args.out, "--out")
    if args.targets is None and args.band is not None:
        raise ValueError("--band applies to --targets only")
    targets = None if args.targets is None else LabelMaps(args.targets)
    dataset = _folder(args, weak)
    with ranks() as (rank, world):
        run = train_affinity_dataset(dataset, weak=weak, out=args.out, epochs=args.epochs,
                                     lr=args.lr, size=args.size, progress=not args.quiet,
                                     resume=args.resume, preset=args.preset,
                                     backbone=args.backbone,
                                     backbone_weights=args.backbone_weights,
                                     targets=targets,
                                     band=2 if args.band is None else args.band)
    if rank != 0:
        return 1 if run.failures else 0
    loss = f", last loss {run.history[-1]:.4f}" if run.history else ""
    done = len(dataset) - len(run.failures)
    text = (f"trained on {done} of {len(dataset)} images"
            + (f" with {world} processes" if world > 1 else "")
            + f": {run.epochs} epochs{loss}, saved to {args.out}")
    record = {"items": len(dataset), "succeeded": done, "out": args.out, "processes": world,
              "epochs": run.epochs, "losses": run.history}
    return _summary(args, text, record, run.failures)


def _propagate(args) -> int:
    from graphseg.data import PropagationFolder
    from graphseg.pipelines import propagate_dataset
    from graphseg.pipelines.distributed import ranks

    if args.preset is not None and args.seeds is not None:
        raise ValueError("--preset applies to --cams; seed maps take no preset")
    if args.preset == "irn" and args.boundaries is None:
        raise ValueError("--preset irn needs --boundaries DIR (IRN boundary maps NAME.npy)")
    if (args.method == "unia") != (args.attention is not None):
        raise ValueError("--method unia needs --attention DIR, and --attention applies to "
                         "--method unia only")
    dataset = PropagationFolder(args.images, seeds=args.seeds, cams=args.cams,
                                boundaries=args.boundaries, attention=args.attention)
    probabilities = args.format if args.command == "propagate" else args.probabilities
    with ranks() as (rank, world):
        failures = propagate_dataset(
            dataset, args.out, method=args.method, probabilities=probabilities,
            resume=args.resume, progress=not args.quiet, shard=(rank, world),
            figures=args.figures, preset=args.preset, num_classes=args.num_classes,
            radius=args.radius, sigma_xy=args.sigma_xy, sigma_rgb=args.sigma_rgb,
            stride=args.stride)
        return _dataset_summary(args, "propagated", dataset, failures, rank, world)


def _bench(args) -> int:
    import json
    import subprocess
    import time
    from pathlib import Path

    from graphseg._io import atomic_path
    from graphseg.pipelines._runner import Failure

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if not folder.is_dir():
        raise OSError(f"graphseg bench runs the scripts of benchmarks/ in a source checkout of "
                      f"graphseg; there is none at {folder}")
    records, failures, names = [], [], args.only or sorted(BENCHMARKS)
    for name in names:
        command = [sys.executable, str(folder / f"bench_{name}.py")]
        command += [] if args.full else BENCHMARKS[name]
        if args.data and name in ("propagation", "superpixel"):
            command += ["--data", args.data]
        if not args.quiet:
            print(f"bench {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        lines = []
        for line in result.stdout.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                lines.append(line)
                continue
            records.append({"benchmark": name, **record} if isinstance(record, dict)
                           else {"benchmark": name, "value": record})
        if not args.json and lines:
            print("\n".join(lines))
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            failures.append(Failure(name, f"exit code {result.returncode}: {reason}"))
            print(f"bench {name}: failed ({reason})", file=sys.stderr)
        elif not args.quiet:
            print(f"bench {name}: done in {seconds:.0f} s", file=sys.stderr)
    if args.out:
        with atomic_path(args.out) as temporary:
            temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = len(names) - len(failures)
    text = (f"ran {done} of {len(names)} benchmarks, {len(records)} results"
            + (f" in {args.out}" if args.out else ""))
    record = {"items": len(names), "succeeded": done, "out": args.out, "results": len(records)}
    if args.out is None:
        record["records"] = records
    return _summary(args, text, record, failures)


def _evaluate(args) -> int:
    import json

    from graphseg.pipelines import evaluate_folder

    boxes = None
    if args.annotations:
        with open(args.annotations) as handle:
            document = json.load(handle)
        entries = document.get("images") if isinstance(document, dict) else None
        if not isinstance(entries, dict):
            raise ValueError(f"--annotations {args.annotations} must be a JSON object with an "
                             '"images" object {NAME: {...}}')
        boxes = {name: entry["boxes"] for name, entry in entries.items()
                 if isinstance(entry, dict) and "boxes" in entry}
    scores = evaluate_folder(args.pred, args.masks, num_classes=args.num_classes, boxes=boxes)
    if args.json:
        print(json.dumps(scores))
    else:
        def percent(value):
            return "n/a" if value is None else f"{100 * value:.2f}%"

        print(f"images {scores['images']}: mIoU {percent(scores['miou'])}, foreground IoU "
              f"{percent(scores['foreground_iou'])}, error {percent(scores['error'])}"
              + (f", box-interior error {percent(scores['box_error'])}"
                 if args.annotations else ""))
        if scores["missing"]:
            print(f"no prediction for {len(scores['missing'])} masks: "
                  f"{', '.join(scores['missing'][:10])}")
    return 1 if scores["missing"] else 0


def _demo(args) -> int:
    from graphseg.demo import run_demo, run_propagation_demo

    run_demo(args.out, radius=args.radius)
    run_propagation_demo(args.out)
    return 0


_COMMANDS = {"demo": _demo, "segment": _segment, "evaluate": _evaluate,
             "train-affinity": _train_affinity, "graph": _graph, "propagate": _propagate,
             "pseudo-labels": _propagate, "bench": _bench}


class _Stopped(BaseException):
    """SIGTERM, raised where the process is so that ``finally`` blocks and the atomic writers
    remove their temporary files."""


def _stop(signum, frame) -> None:
    raise _Stopped


def main(argv: list[str] | None = None) -> int:
    import signal

    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError, KeyError, ImportError) as exc:
        print(f"graphseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"graphseg {args.command}: interrupted; files written so far are complete "
              "(--resume continues)", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Stopped:
        print(f"graphseg {args.command}: terminated; files written so far are complete "
              "(--resume continues)", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
