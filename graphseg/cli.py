"""The ``graphseg`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


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
    segment.add_argument("--method", help="box: grabcut (default), harmonic, a2gnn, ial, "
                         "pce-potts; points and scribbles: harmonic (default), random-walk, "
                         "a2gnn, ial, pce-potts; tags: a2gnn (default), random-walk")
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument("--resume", action="store_true", help="skip images already written")
    segment.add_argument("--quiet", action="store_true", help="no progress bar")
    segment.add_argument("--checkpoint", help="affinity CNN from train-affinity: --method a2gnn "
                         "then runs on the learned pixel graph instead of superpixels (and "
                         "the random walk of --weak tags on it)")

    train_affinity = commands.add_parser(
        "train-affinity",
        help="train the affinity CNN on the seeds of a folder's weak labels",
        description="Builds seeds from the --weak labels of every image (GrabCut in the boxes, "
        "clicks or scribbles expanded to superpixels, or the confident pixels of the CAMs of "
        "the tags), resizes them to --size, trains the affinity CNN "
        "and writes its state dict to OUT atomically after every epoch (--resume continues "
        "from it). A failed image is reported and left out. Exit code 0 only when every image "
        "gave seeds.",
        epilog="example: graphseg train-affinity --images data/grabcut/images --annotations "
        "data/grabcut/annotations.json --weak box --out affinity.pt",
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
    train_affinity.add_argument("--quiet", action="store_true", help="no progress bar")

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
    return parser


def _add_folder_arguments(parser) -> None:
    """The images, annotation file and weak-label kind of a data-set command."""
    parser.add_argument("--images", required=True, help="folder of RGB images")
    parser.add_argument("--annotations", required=True,
                        help='JSON file {"num_classes": N, "images": {NAME: {...}}}')
    parser.add_argument("--weak", required=True, choices=sorted(_WEAK),
                        help="weak-label kind to read")
    parser.add_argument("--cams", help="folder of class activation maps NAME.npy, float "
                        "(C, h, w) with channel c-1 for class c (needed by --weak tags)")


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
    graph.add_argument("--radius", type=int, default=5, help="window radius (default: 5)")
    graph.add_argument("--shape", default="disk", help="offset family: disk, psa, square, rings")
    graph.add_argument("--kernel", default="gaussian", help="gaussian, l1 or cosine")
    graph.add_argument("--sigma-xy", type=float, default=6.0, help="position bandwidth (px)")
    graph.add_argument("--sigma-rgb", type=float, default=0.1,
                       help="colour bandwidth, colour in [0, 1]")
    graph.add_argument("--superpixels", type=int, metavar="N",
                       help="build the graph of about N SLIC superpixels instead")
    graph.add_argument("--format", default="pyg", choices=("pyg", "window", "npz"))
    graph.add_argument("--quiet", action="store_true", help="no progress bar")


def _graph(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from graphseg.data import read_image
    from graphseg.graph import pixel_graph, save_graph, superpixel_graph

    if args.format == "window" and args.superpixels:
        raise ValueError("--format window holds pixel graphs only; drop --superpixels or use "
                         "--format pyg or npz")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".npz" if args.format == "npz" else ".pt"
    failed = 0
    bar = tqdm(args.images, desc="graph", disable=args.quiet)
    for name in bar:
        try:
            image = read_image(name)
            if args.superpixels:
                graph = superpixel_graph(image, n_segments=args.superpixels)
            else:
                graph = pixel_graph(image, radius=args.radius, shape=args.shape,
                                    kernel=args.kernel, sigma_xy=args.sigma_xy,
                                    sigma_rgb=args.sigma_rgb)
            save_graph(graph, out / (Path(name).stem + suffix), format=args.format)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            failed += 1
            bar.write(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"wrote {len(args.images) - failed} of {len(args.images)} graphs into {out}"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


_WEAK = {"box": "boxes", "boxes": "boxes", "points": "points", "scribbles": "scribbles",
         "tags": "tags"}


def _folder(args, weak: str):
    """The data set of a data-set command (--images, --annotations, --cams)."""
    from graphseg.data import SegmentationFolder

    if weak == "tags" and args.cams is None:
        raise ValueError("--weak tags needs --cams DIR (class activation maps NAME.npy)")
    return SegmentationFolder(images=args.images, annotations=args.annotations, weak=weak,
                              with_mask=False, cams=args.cams)


def _segment(args) -> int:
    from graphseg.pipelines import segment_dataset

    weak = _WEAK[args.weak]
    dataset = _folder(args, weak)
    with _ranks() as (rank, world):
        failures = segment_dataset(dataset, args.out, weak=weak, method=args.method,
                                   resume=args.resume, progress=not args.quiet,
                                   checkpoint=args.checkpoint, shard=(rank, world))
        failed = _total(len(failures), world)
    if rank == 0:
        print(f"segmented {len(dataset) - failed} of {len(dataset)} images into {args.out}"
              + (f" with {world} processes" if world > 1 else "")
              + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


@contextlib.contextmanager
def _ranks():
    """(rank, world size) of this process: under ``torchrun`` (WORLD_SIZE > 1) a gloo process
    group is set up for the run and torn down after it; otherwise (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield 0, 1
        return
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def _total(count: int, world: int) -> int:
    """The sum of ``count`` over the ranks (every rank gets it)."""
    if world == 1:
        return count
    import torch
    import torch.distributed as dist

    total = torch.tensor([count])
    dist.all_reduce(total)
    return int(total)


def _train_affinity(args) -> int:
    import dataclasses

    from graphseg.pipelines import SETTINGS, train_affinity_dataset

    weak = _WEAK[args.weak]
    dataset = _folder(args, weak)
    settings = dataclasses.replace(SETTINGS[weak], affinity_size=args.size)
    run = train_affinity_dataset(dataset, weak=weak, out=args.out, epochs=args.epochs,
                                 lr=args.lr, size=args.size, settings=settings,
                                 progress=not args.quiet, resume=args.resume)
    loss = f", last loss {run.history[-1]:.4f}" if run.history else ""
    print(f"trained on {len(dataset) - len(run.failures)} of {len(dataset)} images: "
          f"{run.epochs} epochs{loss}, saved to {args.out}"
          + (f"; {len(run.failures)} failed" if run.failures else ""))
    return 1 if run.failures else 0


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "graph":
        try:
            return _graph(args)
        except (ValueError, OSError) as exc:
            print(f"graphseg graph: error: {exc}", file=sys.stderr)
            return 2
    if args.command in ("segment", "evaluate"):
        try:
            return _segment(args) if args.command == "segment" else _evaluate(args)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            print(f"graphseg {args.command}: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "train-affinity":
        try:
            return _train_affinity(args)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            print(f"graphseg train-affinity: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "demo":
        from graphseg.demo import run_demo, run_propagation_demo

        try:
            run_demo(args.out, radius=args.radius)
            run_propagation_demo(args.out)
        except (ValueError, TypeError, OSError) as exc:
            print(f"graphseg demo: error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
