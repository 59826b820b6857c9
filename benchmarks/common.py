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


def cpu_model() -> str:
    """The CPU's model name (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_clone() -> str | None:
    """The instruction-set clone of graphseg_ext's CPU kernels that runs here (None: not built)."""
    import graphseg_ext

    return graphseg_ext.cpu_clone() if graphseg_ext.is_available() else None


def copy_bandwidth(*, repeats: int = 5) -> dict:
    """Median bandwidth of a 256 MiB tensor copy (bytes read + written per second), the memory
    floor's yardstick; measure it in the same run as what it is compared with."""
    src = torch.rand(64 << 20)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats=repeats)
    moved = 2 * src.nbytes
    return {"case": "memcpy", "bytes_moved": moved, "median_ms": round(seconds * 1e3, 3),
            "gib_per_s": round(moved / seconds / 2**30, 2), "threads": torch.get_num_threads(),
            "bytes_per_s": moved / seconds}


def multiply_add_rate(*, repeats: int = 5) -> dict:
    """Median float32 multiply-adds per second of a 1024 x 1024 matrix product (torch's BLAS,
    near the cores' arithmetic peak), the arithmetic floor's yardstick; measure it in the same run
    as what it is compared with: on a shared machine the peak moves with the neighbours' load."""
    a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
    out = torch.empty(1024, 1024)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), repeats=repeats)
    count = 1024**3
    return {"case": "sgemm", "multiply_adds": count, "median_ms": round(seconds * 1e3, 3),
            "g_multiply_adds_per_s": round(count / seconds / 1e9, 1),
            "threads": torch.get_num_threads(), "multiply_adds_per_s": count / seconds}


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            "cpu_clone": cpu_clone()}
