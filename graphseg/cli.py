"""The ``graphseg`` command line."""

from __future__ import annotations

import argparse
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
        help="segment a folder of images from weak labels (boxes or clicks)",
        description="Writes OUT/NAME.png (uint8 class ids) for every image of the annotation "
        "file. Only the --weak labels are read. A failed image is reported on its own line and "
        "the others are still processed; every PNG is written atomically. Exit code 0 only "
        "when every image succeeded.",
        epilog="example: graphseg segment --images data/grabcut/images --annotations "
        "data/grabcut/annotations.json --weak box --method grabcut --out pred",
    )
    segment.add_argument("--images", required=True, help="folder of RGB images")
    segment.add_argument("--annotations", required=True,
                         help='JSON file {"num_classes": N, "images": {NAME: {...}}}')
    segment.add_argument("--weak", required=True, choices=sorted(_WEAK),
                         help="weak-label kind to read")
    segment.add_argument("--method", help="box: grabcut (default), harmonic, a2gnn, ial, "
                         "pce-potts; points: harmonic (default), random-walk, a2gnn, ial, "
                         "pce-potts")
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument("--resume", action="store_true", help="skip images already written")
    segment.add_argument("--quiet", action="store_true", help="no progress bar")

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
    return parser


_WEAK = {"box": "boxes", "boxes": "boxes", "points": "points"}


def _segment(args) -> int:
    from graphseg.data import SegmentationFolder
    from graphseg.pipelines import segment_dataset

    weak = _WEAK[args.weak]
    dataset = SegmentationFolder(images=args.images, annotations=args.annotations, weak=weak,
                                 with_mask=False)
    failures = segment_dataset(dataset, args.out, weak=weak, method=args.method,
                               resume=args.resume, progress=not args.quiet)
    done = len(dataset) - len(failures)
    print(f"segmented {done} of {len(dataset)} images into {args.out}"
          + (f"; {len(failures)} failed" if failures else ""))
    return 1 if failures else 0


def _evaluate(args) -> int:
    import json

    from graphseg.pipelines import evaluate_folder

    boxes = None
    if args.annotations:
        with open(args.annotations) as handle:
            entries = json.load(handle).get("images", {})
        boxes = {name: entry["boxes"] for name, entry in entries.items() if "boxes" in entry}
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
    if args.command in ("segment", "evaluate"):
        try:
            return _segment(args) if args.command == "segment" else _evaluate(args)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            print(f"graphseg {args.command}: error: {exc}", file=sys.stderr)
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
