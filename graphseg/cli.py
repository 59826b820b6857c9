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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
