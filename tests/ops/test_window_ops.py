"""graphseg.ops against brute-force loops over pixel pairs, on both backends."""

import pytest
import torch

from graphseg import ops, window_offsets
from graphseg.ops import reference

pytestmark = pytest.mark.usefixtures("each_backend")


def brute_affinity(features, offsets, kind):
    batch, _, height, width = features.shape
    out = torch.zeros(batch, len(offsets), height, width, dtype=features.dtype)
    for b in range(batch):
        for k, (dy, dx) in enumerate(offsets.tolist()):
            for y in range(height):
                for x in range(width):
                    if 0 <= y + dy < height and 0 <= x + dx < width:
                        a, c = features[b, :, y, x], features[b, :, y + dy, x + dx]
                        out[b, k, y, x] = {"l1": (a - c).abs().sum(),
                                           "l2": ((a - c) ** 2).sum(),
                                           "dot": (a * c).sum()}[kind]
    return out


def brute_aggregate(weight, values, offsets):
    batch, channels, height, width = values.shape
    out = torch.zeros_like(values)
    for b in range(batch):
        for k, (dy, dx) in enumerate(offsets.tolist()):
            for y in range(height):
                for x in range(width):
                    if 0 <= y + dy < height and 0 <= x + dx < width:
                        out[b, :, y, x] += weight[b, k, y, x] * values[b, :, y + dy, x + dx]
    return out


OFFSET_TABLES = {
    "disk2": window_offsets(2, "disk"),
    "psa3": window_offsets(3, "psa"),
    "square1": window_offsets(1, "square"),
    "rings": window_offsets(shape="rings", dilations=[1, 3]),
    "large": torch.tensor([[0, 7], [-9, 0], [2, -1]]),
}


@pytest.mark.parametrize("kind", ["l1", "l2", "dot"])
@pytest.mark.parametrize("table", sorted(OFFSET_TABLES))
def test_local_affinity_matches_brute_force(kind, table):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    offsets = OFFSET_TABLES[table]
    out = ops.local_affinity(features, offsets, kind)
    torch.testing.assert_close(out, brute_affinity(features, offsets, kind))


@pytest.mark.parametrize("table", sorted(OFFSET_TABLES))
def test_window_aggregate_matches_brute_force(table):
    generator = torch.Generator().manual_seed(1)
    offsets = OFFSET_TABLES[table]
    weight = torch.rand(2, len(offsets), 5, 6, generator=generator, dtype=torch.float64)
    values = torch.randn(2, 4, 5, 6, generator=generator, dtype=torch.float64)
    out = ops.window_aggregate(weight, values, offsets)
    torch.testing.assert_close(out, brute_aggregate(weight, values, offsets))


def test_transpose_is_adjoint():
    generator = torch.Generator().manual_seed(2)
    offsets = window_offsets(2, "disk")
    weight = torch.rand(1, len(offsets), 7, 5, generator=generator, dtype=torch.float64)
    v = torch.randn(1, 3, 7, 5, generator=generator, dtype=torch.float64)
    u = torch.randn(1, 3, 7, 5, generator=generator, dtype=torch.float64)
    left = (ops.window_aggregate(weight, v, offsets) * u).sum()
    right = (v * ops.window_aggregate_transpose(weight, u, offsets)).sum()
    torch.testing.assert_close(left, right)


def test_gather_neighbours():
    values = torch.arange(24.0).reshape(1, 2, 3, 4)
    out = reference.gather_neighbours(values, torch.tensor([[0, 1], [1, -1]]))
    assert out[0, 0].tolist() == [[1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]]
    assert out[0, 1].tolist() == [[0, 4, 5, 6], [0, 8, 9, 10], [0, 0, 0, 0]]
    picked = reference.gather_neighbours(values, torch.tensor([[0, 1], [1, -1]]), [1, 0])
    assert picked[0, 0].tolist() == [[13, 14, 15, 0], [17, 18, 19, 0], [21, 22, 23, 0]]
    assert torch.equal(picked[0, 1], out[0, 1])


@pytest.mark.parametrize("kind", ["l1", "l2", "dot"])
def test_local_affinity_gradcheck(kind):
    generator = torch.Generator().manual_seed(3)
    # Random features have no ties, where |a - b| would not be differentiable.
    features = torch.randn(1, 2, 4, 5, generator=generator, dtype=torch.float64)
    features.requires_grad_(True)
    offsets = window_offsets(1, "square")
    assert torch.autograd.gradcheck(lambda f: ops.local_affinity(f, offsets, kind), (features,))


def test_window_aggregate_gradcheck():
    generator = torch.Generator().manual_seed(4)
    offsets = window_offsets(2, "disk")
    weight = torch.rand(2, len(offsets), 4, 3, generator=generator, dtype=torch.float64)
    values = torch.randn(2, 2, 4, 3, generator=generator, dtype=torch.float64)
    weight.requires_grad_(True)
    values.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w, v: ops.window_aggregate(w, v, offsets),
                                    (weight, values))


def test_window_larger_than_image_and_single_pixel():
    offsets = window_offsets(3, "disk")
    features = torch.rand(1, 3, 1, 1)
    assert torch.equal(ops.local_affinity(features, offsets, "l1"), torch.zeros(1, 28, 1, 1))
    weight = torch.rand(1, 28, 2, 1)
    values = torch.rand(1, 2, 2, 1)
    torch.testing.assert_close(ops.window_aggregate(weight, values, offsets),
                               brute_aggregate(weight, values, offsets))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ops.local_affinity(torch.rand(3, 4, 4), window_offsets(1), "l1"),
         ValueError, r"features must have shape \(B, C, H, W\)"),
        (lambda: ops.local_affinity(torch.ones(1, 3, 4, 4, dtype=torch.int64), window_offsets(1)),
         TypeError, "features must be a floating-point tensor"),
        (lambda: ops.local_affinity(torch.full((1, 1, 2, 2), float("nan")), window_offsets(1)),
         ValueError, "features contains NaN or Inf"),
        (lambda: ops.local_affinity(torch.rand(1, 3, 0, 4), window_offsets(1)),
         ValueError, "features is empty"),
        (lambda: ops.local_affinity(torch.rand(1, 3, 4, 4), window_offsets(1), "cos"),
         ValueError, "kind must be one of"),
        (lambda: ops.local_affinity(torch.rand(1, 3, 4, 4), torch.tensor([[0, 0], [0, 1]])),
         ValueError, r"must not contain the centre"),
        (lambda: ops.local_affinity(torch.rand(1, 3, 4, 4), torch.tensor([0.5, 1.0])),
         ValueError, r"offsets must have shape \(K, 2\)"),
        (lambda: ops.local_affinity(torch.rand(1, 3, 4, 4), [[0, 1]]),
         TypeError, "offsets must be a"),
        (lambda: ops.window_aggregate(torch.rand(1, 4, 4, 4), torch.rand(2, 3, 4, 4),
                                      window_offsets(1)),
         ValueError, "weight and values must share batch size"),
        (lambda: ops.window_aggregate(torch.rand(1, 5, 4, 4), torch.rand(1, 3, 4, 4),
                                      window_offsets(1)),
         ValueError, "weight has 5 offsets"),
        (lambda: ops.window_aggregate(torch.rand(1, 4, 4, 4), torch.rand(1, 3, 4, 4).double(),
                                      window_offsets(1)),
         TypeError, "share a dtype"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_backend_switch():
    with ops.use_backend("reference"):
        assert ops.backend() == "reference"
    with pytest.raises(ValueError, match="name must be one of"):
        ops.set_backend("gpu")
