"""The compiled window ops of graphseg_ext against the pure-PyTorch reference.

Skipped as a whole when the extension is not built, unless ``GRAPHSEG_REQUIRE_EXT=1``, which
turns a missing extension into a failure.
"""

import platform
import random

import pytest
import torch
from conftest import skip_module_without_ext

import graphseg_ext
from graphseg import window_offsets
from graphseg.ops import reference

skip_module_without_ext()

KINDS = ("l1", "l2", "dot")
OFFSETS = {
    "disk1": window_offsets(1),
    "disk3": window_offsets(3),
    "psa3": window_offsets(3, "psa"),
    "square2": window_offsets(2, "square"),
    "rings124": window_offsets(shape="rings", dilations=[1, 2, 4]),
}
# (B, C, H, W): 1×1 and batch 0, images smaller than the window, rows longer than a vector,
# channel counts on both sides of the planar / channels-last switch of the pair kernels (56),
# channel groups with remainders.
SHAPES = [
    (1, 1, 1, 1),
    (0, 3, 5, 6),
    (2, 3, 2, 3),
    (1, 2, 7, 1),
    (2, 3, 9, 13),
    (1, 13, 10, 45),
    (2, 5, 12, 64),
    (1, 30, 6, 11),
    (1, 64, 6, 11),
    (2, 70, 9, 37),
]
TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-4}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def _rand(shape, dtype, seed, layout="contiguous"):
    gen = torch.Generator().manual_seed(seed)
    if layout == "noncontiguous":
        b, c, h, w = shape
        return torch.randn((b, c, w, h), generator=gen, dtype=dtype).transpose(2, 3)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _ref_window_dot(left, right, offsets):
    batch, _, height, width = left.shape
    out = left.new_zeros(batch, offsets.shape[0], height, width)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        y0, y1, x0, x1 = reference.valid_box(dy, dx, height, width)
        if y1 > y0 and x1 > x0:
            out[:, k, y0:y1, x0:x1] = (left[:, :, y0:y1, x0:x1]
                                       * right[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]).sum(1)
    return out


def _grads(out, inputs, grad):
    # The reference builds no graph when every neighbour lies outside the image.
    if not out.requires_grad:
        return tuple(torch.zeros_like(t) for t in inputs)
    grads = torch.autograd.grad(out, inputs, grad, allow_unused=True)
    return tuple(torch.zeros_like(t) if g is None else g
                 for t, g in zip(inputs, grads, strict=True))


def _random_cases(count, seed):
    rng = random.Random(seed)
    names = sorted(OFFSETS)
    return [(rng.choice(SHAPES), rng.choice(names), rng.choice((torch.float32, torch.float64)),
             rng.choice(("contiguous", "channels_last", "noncontiguous"))) for _ in range(count)]


def test_extension_loaded():
    assert graphseg_ext.is_available(), "graphseg_ext._C failed to load"


def test_supports():
    assert graphseg_ext.supports(torch.zeros(1))
    assert graphseg_ext.supports(torch.zeros(1, dtype=torch.float64))
    assert not graphseg_ext.supports(torch.zeros(1, dtype=torch.float16))
    assert not graphseg_ext.supports(torch.zeros(1, dtype=torch.int64))
    assert not graphseg_ext.supports(torch.zeros(1, device="meta"))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("offsets", sorted(OFFSETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_forward_matches_reference(shape, offsets, dtype):
    off = OFFSETS[offsets]
    features = _rand(shape, dtype, 0)
    weight = _rand((shape[0], off.shape[0], *shape[2:]), dtype, 1)
    other = _rand(shape, dtype, 2)
    for kind in KINDS:
        torch.testing.assert_close(graphseg_ext.local_affinity(features, off, kind),
                                   reference.local_affinity(features, off, kind), **TOL[dtype])
    torch.testing.assert_close(graphseg_ext.window_aggregate(weight, features, off),
                               reference.window_aggregate(weight, features, off), **TOL[dtype])
    torch.testing.assert_close(graphseg_ext.window_aggregate_transpose(weight, features, off),
                               reference.window_aggregate_transpose(weight, features, off),
                               **TOL[dtype])
    torch.testing.assert_close(graphseg_ext.window_dot(features, other, off),
                               _ref_window_dot(features, other, off), **TOL[dtype])


@pytest.mark.parametrize(("shape", "offsets", "dtype", "layout"), _random_cases(24, seed=3),
                         ids=str)
def test_gradients_match_reference(shape, offsets, dtype, layout):
    off = OFFSETS[offsets]
    features = _rand(shape, dtype, 4, layout).requires_grad_()
    weight = _rand((shape[0], off.shape[0], *shape[2:]), dtype, 5, layout).requires_grad_()
    grad_pair = _rand((shape[0], off.shape[0], *shape[2:]), dtype, 6)
    grad_values = _rand(shape, dtype, 7)
    for kind in KINDS:
        ours = graphseg_ext.local_affinity(features, off, kind)
        ref = reference.local_affinity(features, off, kind)
        torch.testing.assert_close(ours, ref, **TOL[dtype])
        torch.testing.assert_close(_grads(ours, (features,), grad_pair),
                                   _grads(ref, (features,), grad_pair), **TOL[dtype])
    ours = graphseg_ext.window_aggregate(weight, features, off)
    ref = reference.window_aggregate(weight, features, off)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    torch.testing.assert_close(_grads(ours, (weight, features), grad_values),
                               _grads(ref, (weight, features), grad_values), **TOL[dtype])


@pytest.mark.parametrize("width", [11, 21, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gathers_never_read_across_the_row_border(width, dtype):
    # The gathers read the input in place: a lane whose neighbour lies beyond the left or right
    # border must not read the adjacent row, or the infinities there would turn into NaN.
    off = OFFSETS["disk3"]
    gen = torch.Generator().manual_seed(width)
    values = torch.rand(1, 3, 6, width, dtype=dtype, generator=gen)
    values[:, :, 1::2, 0] = float("inf")
    values[:, :, 0::2, -1] = float("-inf")
    weight = torch.rand(1, off.shape[0], 6, width, dtype=dtype, generator=gen)
    for ours, ref in ((graphseg_ext.window_aggregate, reference.window_aggregate),
                      (graphseg_ext.window_aggregate_transpose,
                       reference.window_aggregate_transpose)):
        expected = ref(weight, values, off)
        assert expected.isfinite().any()
        torch.testing.assert_close(ours(weight, values, off), expected, equal_nan=True)
    features = values.clone().requires_grad_()
    grad = torch.rand(1, off.shape[0], 6, width, dtype=dtype, generator=gen)
    for kind in ("l1", "dot"):
        ours = torch.autograd.grad(graphseg_ext.local_affinity(features, off, kind), features,
                                   grad)[0]
        ref = torch.autograd.grad(reference.local_affinity(features, off, kind), features,
                                  grad)[0]
        torch.testing.assert_close(ours, ref, equal_nan=True)


# float32 window_aggregate has its own AVX-512 kernel for windows with -16 <= dx <= 15; other
# windows and float64 run the planar gather.
WIDE_OFFSETS = {
    "disk5": window_offsets(5),
    "reach_edges": torch.tensor([[0, -16], [0, 15], [-1, -1], [1, 0], [2, -7], [-3, 9]]),
    "beyond_reach": torch.tensor([[0, 17], [1, -24], [0, 1]]),
}


@pytest.mark.parametrize("offsets", sorted(WIDE_OFFSETS))
@pytest.mark.parametrize("channels", [1, 8, 9, 21])
def test_window_aggregate_float32_windows_and_widths(offsets, channels):
    off = WIDE_OFFSETS[offsets]
    for width in (15, 16, 33, 70):
        weight = _rand((2, off.shape[0], 7, width), torch.float32, seed=width)
        values = _rand((2, channels, 7, width), torch.float32, seed=width + 1)
        torch.testing.assert_close(graphseg_ext.window_aggregate(weight, values, off),
                                   reference.window_aggregate(weight, values, off),
                                   **TOL[torch.float32])


def test_large_output_is_streamed_correctly():
    # Outputs above 8 MiB are written with non-temporal stores.
    off = window_offsets(5)
    features = _rand((1, 2, 160, 200), torch.float32, 8)
    torch.testing.assert_close(graphseg_ext.local_affinity(features, off, "l2"),
                               reference.local_affinity(features, off, "l2"), **TOL[torch.float32])


def test_offsets_of_any_integer_dtype():
    features = _rand((1, 3, 6, 7), torch.float64, 9)
    off = window_offsets(2)
    torch.testing.assert_close(graphseg_ext.local_affinity(features, off.int(), "l1"),
                               graphseg_ext.local_affinity(features, off, "l1"))


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_local_affinity(kind):
    features = _rand((2, 3, 5, 6), torch.float64, 10).requires_grad_()
    off = OFFSETS["rings124"]
    assert torch.autograd.gradcheck(lambda f: graphseg_ext.local_affinity(f, off, kind),
                                    (features,))


def test_gradcheck_window_ops():
    off = window_offsets(2)
    weight = _rand((2, off.shape[0], 5, 6), torch.float64, 11).requires_grad_()
    values = _rand((2, 3, 5, 6), torch.float64, 12).requires_grad_()
    other = _rand((2, 3, 5, 6), torch.float64, 13).requires_grad_()
    for fn, inputs in [(graphseg_ext.window_aggregate, (weight, values)),
                       (graphseg_ext.window_aggregate_transpose, (weight, values)),
                       (graphseg_ext.window_dot, (values, other))]:
        assert torch.autograd.gradcheck(lambda a, b, fn=fn: fn(a, b, off), inputs)
        assert torch.autograd.gradgradcheck(lambda a, b, fn=fn: fn(a, b, off), inputs)


@pytest.mark.parametrize("kind", ["l1", "l2", "dot"])
def test_local_affinity_higher_derivatives(kind):
    off = window_offsets(1)
    features = _rand((1, 2, 4, 5), torch.float64, 14).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda f: graphseg_ext.local_affinity(f, off, kind), (features,))
    # a Hessian-vector product equals the reference's
    direction = _rand((1, 2, 4, 5), torch.float64, 18)
    weights = _rand((1, off.shape[0], 4, 5), torch.float64, 19)

    def hvp(fn):
        (grad,) = torch.autograd.grad((fn(features, off, kind) * weights).square().sum(),
                                      features, create_graph=True)
        return torch.autograd.grad((grad * direction).sum(), features)[0]

    torch.testing.assert_close(hvp(graphseg_ext.local_affinity), hvp(reference.local_affinity))

    # third order: the gradient of a Hessian-vector product, and gradgradcheck of the gradient
    # (a fourth power, so that even the piecewise-linear l1 has a third derivative)
    def third(fn):
        (grad,) = torch.autograd.grad((fn(features, off, kind) * weights).pow(4).sum(),
                                      features, create_graph=True)
        (hv,) = torch.autograd.grad((grad * direction).sum(), features, create_graph=True)
        return torch.autograd.grad(hv.square().sum(), features)[0]

    expected = third(reference.local_affinity)
    assert expected.abs().max() > 0
    torch.testing.assert_close(third(graphseg_ext.local_affinity), expected)
    assert torch.autograd.gradgradcheck(
        lambda f: torch.autograd.grad((graphseg_ext.local_affinity(f, off, kind) * weights)
                                      .pow(4).sum(), f, create_graph=True)[0], (features,))


def _opcheck_cases():
    off = window_offsets(2)
    features = _rand((2, 3, 5, 6), torch.float64, 15).requires_grad_()
    wide = _rand((1, 64, 4, 5), torch.float64, 16).requires_grad_()
    weight = _rand((2, off.shape[0], 5, 6), torch.float64, 17).requires_grad_()
    ops = torch.ops.graphseg_ext
    pair_out = torch.empty(2, off.shape[0], 5, 6, dtype=torch.float64)
    cases = [(ops.local_affinity.default, (f, off, kind)) for f in (features, wide)
             for kind in KINDS]
    cases += [
        (ops.local_affinity_backward.default, (weight.detach(), features.detach(), off, "l1")),
        (ops.local_affinity_out.default, (features.detach(), off, "l2", pair_out)),
        (ops.window_aggregate.default, (weight, features, off)),
        (ops.window_aggregate_out.default,
         (weight.detach(), features.detach(), off, torch.empty_like(features.detach()))),
        (ops.window_aggregate_transpose.default, (weight, features, off)),
        (ops.window_aggregate_transpose_out.default,
         (weight.detach(), features.detach(), off, torch.empty_like(features.detach()))),
        (ops.window_dot.default, (features, features.detach().flip(3).requires_grad_(), off)),
        (ops.window_dot_out.default,
         (features.detach(), features.detach().flip(2), off, pair_out.clone())),
        (ops.window_aggregate_power.default, (weight.detach(), features.detach(), off, 3)),
    ]
    return cases


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_out_buffers():
    off = window_offsets(3)
    features = _rand((2, 4, 9, 40), torch.float32, 18)
    weight = _rand((2, off.shape[0], 9, 40), torch.float32, 19)
    out = torch.full((2, off.shape[0], 9, 40), float("nan"))
    assert graphseg_ext.local_affinity(features, off, "l1", out=out) is out
    torch.testing.assert_close(out, graphseg_ext.local_affinity(features, off, "l1"))
    assert graphseg_ext.window_dot(features, features, off, out=out) is out
    torch.testing.assert_close(out, graphseg_ext.local_affinity(features, off, "dot"))
    out = torch.full_like(features, float("nan"))
    assert graphseg_ext.window_aggregate(weight, features, off, out=out) is out
    torch.testing.assert_close(out, graphseg_ext.window_aggregate(weight, features, off))
    assert graphseg_ext.window_aggregate_transpose(weight, features, off, out=out) is out
    torch.testing.assert_close(out, graphseg_ext.window_aggregate_transpose(weight, features, off))


def test_out_buffer_errors():
    off = window_offsets(1, "square")
    features = _rand((1, 2, 4, 5), torch.float32, 20)
    weight = torch.ones(1, 8, 4, 5)
    with pytest.raises(ValueError, match="out must have shape"):
        graphseg_ext.local_affinity(features, off, "l1", out=torch.empty(1, 8, 4, 4))
    with pytest.raises(TypeError, match="share a dtype"):
        graphseg_ext.local_affinity(features, off, "l1",
                                    out=torch.empty(1, 8, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        graphseg_ext.local_affinity(features, off, "l1",
                                    out=torch.empty(1, 8, 5, 4).transpose(2, 3))
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        graphseg_ext.window_aggregate(weight.requires_grad_(), features, off,
                                      out=torch.empty_like(features))
    with pytest.raises(RuntimeError, match="single memory location"):
        graphseg_ext.window_aggregate(weight.detach(), features, off, out=features)


def test_argument_errors():
    off = window_offsets(1, "square")
    features = _rand((1, 2, 4, 5), torch.float32, 21)
    with pytest.raises(ValueError, match="kind must be one of"):
        graphseg_ext.local_affinity(features, off, "cosine")
    with pytest.raises(ValueError, match="shape \\(B, C, H, W\\)"):
        graphseg_ext.local_affinity(features[0], off, "l1")
    with pytest.raises(ValueError, match="offsets must have shape \\(K, 2\\)"):
        graphseg_ext.local_affinity(features, off[:, :1], "l1")
    with pytest.raises(ValueError, match="must share B, H and W"):
        graphseg_ext.window_aggregate(torch.ones(1, 8, 4, 4), features, off)
    with pytest.raises(ValueError, match="8 window entries"):
        graphseg_ext.window_aggregate(torch.ones(1, 8, 4, 5), features, off[:4])
    with pytest.raises(TypeError, match="share a dtype"):
        graphseg_ext.window_aggregate(torch.ones(1, 8, 4, 5, dtype=torch.float64), features, off)
    with pytest.raises(RuntimeError, match="Half"):
        graphseg_ext.local_affinity(features.half(), off, "l1")


def test_cpu_clone_names_a_clone():
    assert graphseg_ext.cpu_clone().split(" ")[0] in ("x86-64-v4", "x86-64-v3", "default",
                                                      "single")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the kernels flush subnormals through the x86 SSE control register")
@pytest.mark.parametrize("dtype, tiny", [(torch.float32, 1e-39), (torch.float64, 1e-310)])
def test_subnormals_read_as_zero_in_the_kernels_and_the_caller_keeps_them(dtype, tiny):
    # K = 8 weights of a subnormal value: their sum of products with ones is a normal number,
    # 8e-39 (float32), unless each subnormal weight reads as 0, as in the kernels
    offsets = window_offsets(1, shape="square")
    weight = torch.full((1, 8, 6, 20), tiny, dtype=dtype)
    assert 0 < tiny < torch.finfo(dtype).tiny  # subnormal
    values = torch.ones(1, 2, 6, 20, dtype=dtype)
    assert float(reference.window_aggregate(weight, values, offsets)[0, 0, 3, 3]) > 0
    out = graphseg_ext.window_aggregate(weight, values, offsets)
    assert bool((out == 0).all())
    walked = graphseg_ext.window_aggregate_power(weight, values, offsets, 3)
    assert bool((walked == 0).all())
    # the calling thread still computes with subnormals afterwards
    half = torch.tensor([tiny], dtype=dtype) * 0.5
    assert float(half) > 0


def _dense_operator(weight, offsets):
    """The (H W, H W) matrix of the window operator of one batch item, entry by entry:
    A[p, p + o_k] += weight[k, p] for neighbours inside the image."""
    count, height, width = weight.shape
    dense = weight.new_zeros(height * width, height * width)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        for y in range(height):
            for x in range(width):
                if 0 <= y + dy < height and 0 <= x + dx < width:
                    dense[y * width + x, (y + dy) * width + x + dx] += weight[k, y, x]
    return dense


def test_window_aggregate_power_equals_the_matrix_power():
    # A self entry (0, 0) as the random walk adds it; 7x6 is smaller than the 5-row reach.
    offsets = torch.cat([window_offsets(2), torch.zeros(1, 2, dtype=torch.int64)])
    weight = _rand((2, offsets.shape[0], 7, 6), torch.float64, 30).abs()
    values = _rand((2, 3, 7, 6), torch.float64, 31)
    for steps, per_pass in [(0, 0), (1, 0), (5, 0), (5, 2), (6, 4)]:
        out = graphseg_ext.window_aggregate_power(weight, values, offsets, steps,
                                                  steps_per_pass=per_pass)
        for b in range(2):
            power = torch.linalg.matrix_power(_dense_operator(weight[b], offsets), steps)
            expected = (power @ values[b].reshape(3, -1).t()).t().reshape(3, 7, 6)
            torch.testing.assert_close(out[b], expected, rtol=1e-10, atol=1e-12)


# (B, C, H, W), offsets, steps, steps per pass: one pixel, one class, rows shorter than a
# vector, odd sizes, images shorter than the window and than the halos of a pass, passes with
# unequal steps, channel groups with remainders (21 as in the random walk, 30), bands of 64 and
# more rows (one per thread).
POWER_CASES = [
    ((1, 1, 1, 1), "disk1", 3, 0),
    ((1, 1, 9, 13), "disk3", 4, 0),
    ((2, 3, 5, 3), "square2", 7, 3),
    ((1, 2, 7, 1), "psa3", 5, 2),
    ((2, 5, 12, 64), "rings124", 9, 4),
    ((1, 21, 40, 37), "disk3", 11, 0),
    ((1, 30, 17, 20), "disk1", 8, 8),
    ((1, 7, 70, 23), "disk3", 10, 5),
    ((2, 4, 131, 19), "psa3", 13, 0),
]


@pytest.mark.parametrize(("shape", "offsets", "steps", "per_pass"), POWER_CASES,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_window_aggregate_power_matches_repeated_aggregation(shape, offsets, steps, per_pass,
                                                             dtype):
    batch, channels, height, width = shape
    off = torch.cat([OFFSETS[offsets], torch.zeros(1, 2, dtype=torch.int64)])
    weight = _rand((batch, off.shape[0], height, width), dtype, 32).abs()
    weight = weight / weight.sum(1, keepdim=True)  # rows of a transition: values stay bounded
    values = _rand(shape, dtype, 33)
    expected = values
    for _ in range(steps):
        expected = reference.window_aggregate(weight, expected, off)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # bands of 64 rows and more run on threads of their own
    try:
        out = graphseg_ext.window_aggregate_power(weight, values, off, steps,
                                                  steps_per_pass=per_pass)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out, expected, **TOL[dtype])


def test_window_aggregate_power_is_the_same_for_every_band_split():
    # Rows pair up with the same partner row in every band, so the result depends neither on the
    # threads, nor on the steps per pass, nor on where the bands end (they move between passes
    # with the threads' speed): bitwise equal. A reach of 5 rows (odd) and 300 rows (two bands).
    off = torch.cat([window_offsets(5), torch.zeros(1, 2, dtype=torch.int64)])
    weight = _rand((1, off.shape[0], 300, 77), torch.float32, 36).abs()
    values = _rand((1, 7, 300, 77), torch.float32, 37)
    threads = torch.get_num_threads()
    outs = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for per_pass in (1, 2, 3, 4):
                outs.append(graphseg_ext.window_aggregate_power(weight, values, off, 9,
                                                                steps_per_pass=per_pass))
    finally:
        torch.set_num_threads(threads)
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_window_aggregate_power_skips_entries_without_neighbours():
    # Offsets that never have a neighbour inside the image: their NaN weights must never be read.
    off = torch.cat([window_offsets(3), torch.tensor([[0, 0], [40, 0], [0, -30]])])
    weight = _rand((1, off.shape[0], 33, 17), torch.float64, 34).abs()
    weight[:, -2:] = float("nan")
    values = _rand((1, 3, 33, 17), torch.float64, 35)
    expected = values
    for _ in range(6):
        expected = reference.window_aggregate(weight[:, :-2], expected, off[:-2])
    out = graphseg_ext.window_aggregate_power(weight, values, off, 6, steps_per_pass=3)
    torch.testing.assert_close(out, expected)


def test_window_aggregate_power_errors():
    off = window_offsets(1, "square")
    weight, values = torch.ones(1, 8, 4, 5), torch.ones(1, 2, 4, 5)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        graphseg_ext.window_aggregate_power(weight, values, off, -1)
    with pytest.raises(ValueError, match="steps_per_pass must be >= 0"):
        graphseg_ext.window_aggregate_power(weight, values, off, 2, steps_per_pass=-2)
    with pytest.raises(ValueError, match="must share B, H and W"):
        graphseg_ext.window_aggregate_power(torch.ones(1, 8, 4, 4), values, off, 2)
    with pytest.raises(TypeError, match="share a dtype"):
        graphseg_ext.window_aggregate_power(weight.double(), values, off, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=str)
def test_cuda_matches_cpu(dtype):
    if not graphseg_ext.supports(torch.zeros(1, device="cuda", dtype=dtype)):
        pytest.skip("graphseg_ext was built without CUDA kernels")
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1}.get(dtype, 1e-4)
    off = window_offsets(shape="rings", dilations=[1, 3])
    features = _rand((2, 5, 11, 23), torch.float64, 22)
    weight = _rand((2, off.shape[0], 11, 23), torch.float64, 23)
    gpu = {"features": features.cuda().to(dtype).requires_grad_(),
           "weight": weight.cuda().to(dtype).requires_grad_()}
    cpu = {name: t.detach().cpu().double().requires_grad_() for name, t in gpu.items()}
    for kind in KINDS:
        ours = graphseg_ext.local_affinity(gpu["features"], off, kind)
        ref = graphseg_ext.local_affinity(cpu["features"], off, kind)
        torch.testing.assert_close(ours.double().cpu(), ref, rtol=tol, atol=tol)
        grad = torch.ones_like(ref)
        torch.testing.assert_close(
            torch.autograd.grad(ours, gpu["features"], grad.to(ours))[0].double().cpu(),
            torch.autograd.grad(ref, cpu["features"], grad)[0], rtol=tol, atol=tol)
    ours = graphseg_ext.window_aggregate(gpu["weight"], gpu["features"], off)
    ref = graphseg_ext.window_aggregate(cpu["weight"], cpu["features"], off)
    torch.testing.assert_close(ours.double().cpu(), ref, rtol=tol, atol=tol)
    grads = torch.autograd.grad(ours, (gpu["weight"], gpu["features"]), torch.ones_like(ours))
    ref_grads = torch.autograd.grad(ref, (cpu["weight"], cpu["features"]), torch.ones_like(ref))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a.double().cpu(), b, rtol=tol, atol=tol)
