"""Benchmark of the compiled window ops (graphseg_ext) against pure-PyTorch formulations.

Prints one JSON line per measurement: first the machine (CPU model, and the instruction-set clone
of the kernels that runs: AVX-512, AVX2 or baseline), then the measured memcpy bandwidth, then per
case the median time of the extension, of graphseg's reference ops and (for local_affinity) of the
other pure-PyTorch formulations below, all measured in this run, with their ratios, the bandwidth
floor of the case (bytes that must move / memcpy bandwidth) and the peak memory of each
implementation.

Cases (DESIGN §3, §7): local_affinity 512×512 C=3 and 64×64 C=448, window_aggregate 512×512 C=21,
each with the disk window of radius 5 (K = 80), float32, forward and backward.

Memory is the growth of the resident set during one call, measured in a fresh subprocess
(``/proc/self/clear_refs`` resets the high-water mark), so that it counts every allocation: torch
tensors, the extension's scratch copies and page-cache-free temporaries alike.

Usage::

    python benchmarks/bench_ops.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_ops.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import copy_bandwidth, machine

import graphseg_ext
from graphseg import window_offsets
from graphseg.ops import reference

THREADS = 2
RADIUS = 5
CASES = {
    "local_affinity_512x512_c3": ("local_affinity", (1, 3, 512, 512)),
    "local_affinity_64x64_c448": ("local_affinity", (1, 448, 64, 64)),
    "window_aggregate_512x512_c21": ("window_aggregate", (1, 21, 512, 512)),
}
KIND = "l1"
# Goals of the issue, as (compared implementation, minimum speed-up) per case and pass; the
# floor goal applies to the 512×512 C=3 affinity.
GOALS = {
    ("local_affinity_512x512_c3", "forward"): ("best_pytorch", 4.0),
    ("local_affinity_64x64_c448", "forward"): ("reference", 6.0),
    ("window_aggregate_512x512_c21", "forward"): ("reference", 3.0),
}
BACKWARD_GOAL = 2.0
FLOOR_GOAL = ("local_affinity_512x512_c3", 2.5)


def _pair_sum(kind: str, a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    if kind == "l1":
        return (a - b).abs().sum(dim)
    if kind == "l2":
        return (a - b).square().sum(dim)
    return (a * b).sum(dim)


def _valid_mask(offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, H, W) 1 where the neighbour is inside the image: input-independent, built once."""
    mask = torch.zeros(offsets.shape[0], height, width)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        y0, y1, x0, x1 = reference.valid_box(dy, dx, height, width)
        if y1 > y0 and x1 > x0:
            mask[k, y0:y1, x0:x1] = 1
    return mask


def _pair_into(kind: str, a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor):
    if kind == "dot":
        return torch.mul(a, b, out=scratch)
    diff = torch.sub(a, b, out=scratch)
    return diff.abs_() if kind == "l1" else diff.square_()


def affinity_padded_slices(features, offsets, kind, mask, out=None):
    """Zero-padded input, one full-image shifted slice per offset computed in one reused scratch
    buffer and reduced straight into the output, borders masked at the end."""
    _, _, height, width = features.shape
    r = int(offsets.abs().max())
    padded = F.pad(features, (r, r, r, r))
    scratch = torch.empty_like(features)
    if out is None:
        out = features.new_empty(features.shape[0], offsets.shape[0], height, width)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        shifted = padded[:, :, r + dy:r + dy + height, r + dx:r + dx + width]
        torch.sum(_pair_into(kind, features, shifted, scratch), dim=1, out=out[:, k])
    return out.mul_(mask)


def affinity_unfold(features, offsets, kind, mask, out=None):
    """F.unfold of the full (2r+1)² window, the K offsets picked out, one fused reduction."""
    batch, channels, height, width = features.shape
    r = int(offsets.abs().max())
    side = 2 * r + 1
    cols = F.unfold(features, side, padding=r).view(batch, channels, side * side, height, width)
    index = (offsets[:, 0] + r) * side + offsets[:, 1] + r
    result = _pair_sum(kind, features.unsqueeze(2), cols.index_select(2, index), 1).mul_(mask)
    return result if out is None else out.copy_(result)


def aggregate_padded_slices(weight, values, offsets):
    """Zero-padded values, in-place multiply-adds of full-image shifted slices."""
    _, _, height, width = values.shape
    r = int(offsets.abs().max())
    padded = F.pad(values, (r, r, r, r))
    out = torch.zeros_like(values)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        out.addcmul_(weight[:, k:k + 1], padded[:, :, r + dy:r + dy + height,
                                                 r + dx:r + dx + width])
    return out


def _inputs(case: str, seed: int = 0):
    op, shape = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    offsets = window_offsets(RADIUS)
    batch, channels, height, width = shape
    tensors = {"offsets": offsets}
    if op == "local_affinity":
        tensors["features"] = torch.rand(shape, generator=gen)
        tensors["grad"] = torch.rand(batch, offsets.shape[0], height, width, generator=gen)
        tensors["mask"] = _valid_mask(offsets, height, width)
    else:
        tensors["weight"] = torch.rand(batch, offsets.shape[0], height, width, generator=gen)
        tensors["values"] = torch.rand(shape, generator=gen)
        tensors["grad"] = torch.rand(shape, generator=gen)
    return op, tensors


def _forward_impls(case: str) -> dict[str, Callable[[], torch.Tensor]]:
    """Forward implementations of a case, each a closure over freshly made inputs."""
    op, t = _inputs(case)
    off = t["offsets"]
    if op == "local_affinity":
        f, mask = t["features"], t["mask"]
        out = torch.empty_like(t["grad"])
        return {
            "ext": lambda: graphseg_ext.local_affinity(f, off, KIND),
            "ext_out": lambda: graphseg_ext.local_affinity(f, off, KIND, out=out),
            "reference": lambda: reference.local_affinity(f, off, KIND),
            "padded_slices": lambda: affinity_padded_slices(f, off, KIND, mask),
            "padded_slices_out": lambda: affinity_padded_slices(f, off, KIND, mask, out=out),
            "unfold": lambda: affinity_unfold(f, off, KIND, mask),
        }
    w, v = t["weight"], t["values"]
    out = torch.empty_like(v)
    return {
        "ext": lambda: graphseg_ext.window_aggregate(w, v, off),
        "ext_out": lambda: graphseg_ext.window_aggregate(w, v, off, out=out),
        "reference": lambda: reference.window_aggregate(w, v, off),
        "padded_slices": lambda: aggregate_padded_slices(w, v, off),
    }


def _backward_impls(case: str, forward_too: bool) -> dict[str, Callable[[], object]]:
    """Backward (or forward + backward) through the extension and through the reference."""
    op, t = _inputs(case)
    off, grad = t["offsets"], t["grad"]
    if op == "local_affinity":
        inputs = (t["features"].requires_grad_(),)
        forwards = {"ext": lambda: graphseg_ext.local_affinity(inputs[0], off, KIND),
                    "reference": lambda: reference.local_affinity(inputs[0], off, KIND)}
    else:
        inputs = (t["weight"].requires_grad_(), t["values"].requires_grad_())
        forwards = {"ext": lambda: graphseg_ext.window_aggregate(*inputs, off),
                    "reference": lambda: reference.window_aggregate(*inputs, off)}
    impls = {}
    for name, forward in forwards.items():
        if forward_too:
            impls[name] = lambda forward=forward: torch.autograd.grad(forward(), inputs, grad)
        else:
            result = forward()
            impls[name] = lambda result=result: torch.autograd.grad(result, inputs, grad,
                                                                    retain_graph=True)
    return impls


def _impls(case: str, pass_: str) -> dict[str, Callable[[], object]]:
    if pass_ == "forward":
        return _forward_impls(case)
    return _backward_impls(case, forward_too=pass_ == "forward_backward")


def _median_ms(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    fn()  # warm-up: code paths, scratch buffers, lazy initialisation
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _floor_bytes(case: str, pass_: str) -> int:
    op, shape = CASES[case]
    batch, channels, height, width = shape
    image = batch * channels * height * width * 4
    window = batch * window_offsets(RADIUS).shape[0] * height * width * 4
    if op == "local_affinity":
        forward = image + window  # read features, write (B, K, H, W)
        backward = window + 2 * image  # read grad and features, write grad_features
    else:
        forward = window + 2 * image  # read weight and values, write out
        backward = 2 * window + 4 * image  # read grad, weight, values; write both grads
    return {"forward": forward, "backward": backward,
            "forward_backward": forward + backward}[pass_]


def _probe_memory(case: str, pass_: str, impl: str) -> None:
    """Subprocess entry: prints the resident-set growth (bytes) of one call."""
    torch.set_num_threads(THREADS)
    small = torch.rand(1, 2, 8, 8, requires_grad=True)
    off = window_offsets(1)
    for fn in (graphseg_ext.local_affinity, reference.local_affinity):  # load code, not data
        fn(small, off, KIND).sum().backward()
    fn = _impls(case, pass_)[impl]

    def resident(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} missing from /proc/self/status")

    before = resident("VmRSS:")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    result = fn()
    print(json.dumps(resident("VmHWM:") - before))
    del result


def _peak_memory(case: str, pass_: str, impl: str) -> int | None:
    command = [sys.executable, __file__, "--probe", case, pass_, impl]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"memory probe failed for {case} {pass_} {impl}: {done.stderr[-400:]}",
              file=sys.stderr)
        return None
    return int(done.stdout.strip().splitlines()[-1])


def _run_case(case: str, pass_: str, bandwidth: float, repeats: int, budget_s: float) -> dict:
    op, shape = CASES[case]
    impls = _impls(case, pass_)
    times = {name: round(_median_ms(fn, repeats, budget_s), 3) for name, fn in impls.items()}
    del impls
    memory = {name: _peak_memory(case, pass_, name) for name in times}
    floor_ms = _floor_bytes(case, pass_) / bandwidth * 1e3
    row = {
        "case": case, "op": op, "pass": pass_, "shape": list(shape), "kind": KIND if
        op == "local_affinity" else None, "offsets": f"disk r={RADIUS}",
        "K": int(window_offsets(RADIUS).shape[0]), "dtype": "float32", "threads": THREADS,
        "median_ms": times, "peak_memory_mb": {name: None if b is None else round(b / 2**20, 1)
                                               for name, b in memory.items()},
        "floor_ms": round(floor_ms, 3),
        "ext_over_floor": round(times["ext"] / floor_ms, 2),
        "speedup_vs_reference": round(times["reference"] / times["ext"], 2),
    }
    if "ext_out" in times:
        row["ext_out_over_floor"] = round(times["ext_out"] / floor_ms, 2)
        row["ext_out_speedup_vs_reference"] = round(times["reference"] / times["ext_out"], 2)
    pytorch = {n: ms for n, ms in times.items() if not n.startswith("ext")}
    fresh = {n: ms for n, ms in pytorch.items() if not n.endswith("_out")}
    best = min(fresh, key=fresh.get)
    row["best_pytorch"] = best
    row["speedup_vs_best_pytorch"] = round(fresh[best] / times["ext"], 2)
    if "ext_out" in times:
        best_out = min(pytorch, key=pytorch.get)
        row["best_pytorch_any"] = best_out
        row["ext_out_speedup_vs_best_pytorch_any"] = round(pytorch[best_out] / times["ext_out"], 2)
    goals = []
    if (case, pass_) in GOALS:
        peer, factor = GOALS[case, pass_]
        ratio = row["speedup_vs_best_pytorch" if peer == "best_pytorch" else
                    "speedup_vs_reference"]
        goals.append({"goal": f">= {factor}x faster than {peer}", "ratio": ratio,
                      "met": ratio >= factor})
        if "ext_out" in times:
            ratio_out = row["ext_out_speedup_vs_best_pytorch_any" if peer == "best_pytorch"
                            else "ext_out_speedup_vs_reference"]
            goals.append({"goal": f">= {factor}x faster than {peer} (ext with out=, peers "
                                  "with or without out=)", "ratio": ratio_out,
                          "met": ratio_out >= factor})
    if pass_ == "backward":
        goals.append({"goal": f">= {BACKWARD_GOAL}x faster than autograd through the reference",
                      "ratio": row["speedup_vs_reference"],
                      "met": row["speedup_vs_reference"] >= BACKWARD_GOAL})
    if case == FLOOR_GOAL[0] and pass_ == "forward":
        for key in ("ext_over_floor", "ext_out_over_floor"):
            goals.append({"goal": f"{key} <= {FLOOR_GOAL[1]}", "ratio": row[key],
                          "met": row[key] <= FLOOR_GOAL[1]})
    row["goals"] = goals
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--probe", nargs=3, metavar=("CASE", "PASS", "IMPL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        _probe_memory(*args.probe)
        return
    if not graphseg_ext.is_available():
        sys.exit("graphseg_ext is not built: nothing to benchmark")
    torch.set_num_threads(THREADS)
    repeats, budget_s = (5, 2.0) if args.quick else (15, 8.0)
    print(json.dumps({"case": "machine", **machine()}), flush=True)
    copy = copy_bandwidth(repeats=repeats)
    bandwidth = copy.pop("bytes_per_s")
    print(json.dumps(copy), flush=True)
    for case in CASES:
        for pass_ in ("forward", "backward", "forward_backward"):
            print(json.dumps(_run_case(case, pass_, bandwidth, repeats, budget_s)), flush=True)


if __name__ == "__main__":
    main()
