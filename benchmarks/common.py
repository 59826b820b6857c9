"""Timing helpers shared by the benchmark scripts (JSON lines on stdout)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

# the evaluation data: $GRAPHSEG_DATA, else shared/data beside the repository
DEFAULT_DATA = Path(os.environ.get(
    "GRAPHSEG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def median_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(record: dict) -> None:
    """Prints one JSON line."""
    print(json.dumps(record), flush=True)


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}
