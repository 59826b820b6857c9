import math

import pytest
import torch
import torch.nn.functional as F

from graphseg import WindowGraph, feature_graph, pixel_graph, window_offsets
from graphseg.ops import reference
from graphseg.propagate import (
    background_channel,
    irn_affinity,
    psa_border_mask,
    random_walk,
)

pytestmark = pytest.mark.usefixtures("each_backend")


def dense_walk(dense, values, beta, steps):
    """psa's formulation: column-normalise A^β, square it, right-multiply row vectors."""
    powered = dense**beta
    trans = powered / powered.sum(0, keepdim=True)
    matrix = torch.linalg.matrix_power(trans, steps)
    return values @ matrix


@pytest.fixture
def graph():
    features = torch.rand(1, 8, 6, 7, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    return feature_graph(features, radius=3, shape="psa", self_weight=1.0)


def test_equals_dense_psa_formulation(graph):
    cams = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = random_walk(graph, cams, beta=8, num_steps=16)
    expected = dense_walk(graph.to_dense(), cams[0].reshape(3, -1), 8, 16).reshape(1, 3, 6, 7)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_pyg_graph_gives_equal_result(graph):
    cams = torch.rand(1, 2, 6, 7, dtype=torch.float64)
    out = random_walk(graph, cams, beta=4, num_steps=5)
    flat = random_walk(graph.to_pyg(), cams[0].reshape(2, -1).t(), beta=4, num_steps=5)
    torch.testing.assert_close(flat.t().reshape(1, 2, 6, 7), out)


def test_mass_and_gradient(graph):
    cams = torch.rand(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    # rows of T sum to 1: constants are fixed points
    ones = torch.ones(1, 1, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(random_walk(graph, ones, num_steps=7), ones)
    assert torch.autograd.gradcheck(lambda c: random_walk(graph, c, beta=2, num_steps=2), (cams,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_compiled_walk_equals_step_by_step(dtype):
    # Without gradients the extension runs all the steps in one kernel; with them, or with the
    # reference backend, each step is one window_aggregate plus the self loop.
    generator = torch.Generator().manual_seed(4)
    features = torch.rand(2, 3, 37, 29, generator=generator, dtype=dtype)
    graph = feature_graph(features, radius=3, self_weight=1.0)
    probs = torch.rand(2, 5, 37, 29, generator=generator, dtype=dtype)
    out = random_walk(graph, probs, beta=4, num_steps=12)
    step = graph.power(4).normalize("row")
    expected = probs
    for _ in range(12):
        expected = (reference.window_aggregate(step.weight, expected, step.offsets)
                    + step.self_weight * expected)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(out, expected, **tol)
    with torch.enable_grad():
        traced = random_walk(graph, probs.clone().requires_grad_(), beta=4, num_steps=12)
        # a gradient through the self weight alone also takes the step-by-step path
        self_weight = torch.ones(2, 1, 37, 29, dtype=dtype, requires_grad=True)
        learned = random_walk(WindowGraph(graph.weight, graph.offsets, self_weight=self_weight),
                              probs, beta=4, num_steps=12)
    torch.testing.assert_close(traced.detach(), expected, **tol)
    torch.testing.assert_close(learned.detach(), expected, **tol)
    assert learned.requires_grad


def test_background_channel():
    cams = torch.tensor([[[[0.2, 1.0]], [[0.5, 0.1]]]])
    torch.testing.assert_close(background_channel(cams, alpha=2),
                               torch.tensor([[[[0.25, 0.0]]]]))


def test_psa_preset_paper_pipeline():
    generator = torch.Generator().manual_seed(2)
    graph = feature_graph(torch.rand(1, 4, 4, 5, generator=generator, dtype=torch.float64),
                          radius=3, shape="psa")
    cams = torch.rand(1, 2, 16, 20, generator=generator, dtype=torch.float64)
    out = random_walk(graph, cams, preset="psa", num_steps=8)
    values = torch.cat([(1 - cams.amax(1, keepdim=True)) ** 16, cams], 1)
    small = F.avg_pool2d(values, 4)
    dense = graph.to_dense() + torch.eye(20, dtype=torch.float64)  # preset adds the self loop
    walked = dense_walk(dense, small[0].reshape(3, -1), 8, 8).reshape(1, 3, 4, 5)
    expected = F.interpolate(walked, size=(16, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


def psa_official_dense(features, radius):
    """psa's own pair construction: pairs from the crop only, symmetrised, plus identity."""
    _, _, height, width = features.shape
    nodes = height * width
    dense = torch.eye(nodes, dtype=features.dtype)
    half = window_offsets(radius, "psa")[: len(window_offsets(radius, "psa")) // 2]
    for y in range(0, height - radius + 1):
        for x in range(radius - 1, width - radius + 1):
            for dy, dx in half.tolist():
                a = features[0, :, y, x]
                b = features[0, :, y + dy, x + dx]
                value = math.exp(-float((a - b).abs().mean()))
                dense[y * width + x, (y + dy) * width + x + dx] = value
                dense[(y + dy) * width + x + dx, y * width + x] = value
    return dense


def test_psa_preset_official_padding_and_border_crop():
    generator = torch.Generator().manual_seed(3)
    features = torch.rand(1, 4, 7, 10, generator=generator, dtype=torch.float64)
    graph = feature_graph(features, radius=5, shape="psa", self_weight=1.0)
    cams = torch.rand(1, 2, 50, 75, generator=generator, dtype=torch.float64)  # pads to 56x80
    out = random_walk(graph, cams, preset="psa", variant="official", num_steps=4)
    values = torch.cat([(1 - cams.amax(1, keepdim=True)) ** 16, cams], 1)
    values = F.pad(values, (0, 5, 0, 6))
    small = F.avg_pool2d(values, 8)
    dense = psa_official_dense(features, 5)
    walked = dense_walk(dense, small[0].reshape(3, -1), 8, 4).reshape(1, 3, 7, 10)
    expected = F.interpolate(walked, size=(56, 80), mode="bilinear",
                             align_corners=False)[:, :, :50, :75]
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="needs a graph of 5x10"):
        random_walk(graph, cams[:, :, :40], preset="psa", variant="official")


def test_psa_border_mask_counts():
    mask = psa_border_mask(20, 30, 5)
    assert mask.shape == (68, 20, 30)
    # forward pairs: one per crop pixel and direction; reverse edges mirror them
    assert int(mask[:34].sum()) == (20 - 4) * (30 - 8) * 34 == int(mask[34:].sum())


def brute_path_affinity(boundary, radius):
    _, _, height, width = boundary.shape
    offsets = window_offsets(radius, "psa")
    out = torch.zeros(1, len(offsets), height, width, dtype=boundary.dtype)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        for y in range(height):
            for x in range(width):
                if not (0 <= y + dy < height and 0 <= x + dx < width):
                    continue
                worst = 0.0
                for py in range(min(0, dy), max(0, dy) + 1):
                    for px in range(min(0, dx), max(0, dx) + 1):
                        # distance of the grid point to the line through the two pixels
                        if abs(dy * px - dx * py) / math.hypot(dy, dx) < 1:
                            yy, xx = y + py, x + px
                            inside = 0 <= yy < height and 0 <= xx < width
                            worst = max(worst, float(boundary[0, 0, yy, xx]) if inside else 1.0)
                out[0, k, y, x] = 1 - worst
    return out


def test_irn_affinity_matches_brute_force():
    boundary = torch.rand(1, 1, 6, 7, generator=torch.Generator().manual_seed(4),
                          dtype=torch.float64)
    graph = irn_affinity(boundary, radius=3)
    torch.testing.assert_close(graph.weight, brute_path_affinity(boundary, 3))
    dense = graph.to_dense()
    torch.testing.assert_close(dense, dense.t())


def test_irn_preset():
    generator = torch.Generator().manual_seed(5)
    boundary = torch.rand(1, 1, 5, 6, generator=generator, dtype=torch.float64) * 0.5
    graph = irn_affinity(boundary, radius=3)
    cams = torch.rand(1, 2, 20, 24, generator=generator, dtype=torch.float64)
    out = random_walk(graph, cams, preset="irn", boundary=boundary, num_steps=4)
    normalised = cams / cams.amax((2, 3), keepdim=True)
    small = F.avg_pool2d(normalised, 4) * (1 - boundary)
    walked = dense_walk(graph.to_dense(), small[0].reshape(2, -1), 10, 4).reshape(1, 2, 5, 6)
    up = F.interpolate(walked, size=(20, 24), mode="bilinear", align_corners=False)
    up = up / up.max()
    expected = torch.cat([torch.full_like(up[:, :1], 0.25), up], 1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="needs the boundary map"):
        random_walk(graph, cams, preset="irn")


def test_a2gnn_preset_defaults():
    graph = pixel_graph(torch.rand(3, 4, 4), radius=1)
    cams = torch.rand(1, 2, 8, 8)
    out = random_walk(graph, cams, preset="a2gnn")
    assert out.shape == (1, 3, 8, 8)
    values = torch.cat([(1 - cams.amax(1, keepdim=True)) ** 6, cams], 1)
    small = F.avg_pool2d(values, 2)
    dense = graph.to_dense() + torch.eye(16)
    walked = dense_walk(dense.double(), small[0].reshape(3, -1).double(), 8, 64)
    expected = F.interpolate(walked.reshape(1, 3, 4, 4).float(), size=(8, 8), mode="bilinear",
                             align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 0}, ValueError, "beta must be > 0"),
        ({"num_steps": -1}, ValueError, "num_steps"),
        ({"preset": "deeplab"}, ValueError, "preset must be one of"),
        ({"preset": "psa", "variant": "github"}, ValueError, "variant must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    graph = pixel_graph(torch.rand(3, 4, 4), radius=1)
    with pytest.raises(error, match=match):
        random_walk(graph, torch.rand(1, 2, 4, 4), **kwargs)


def test_shape_mismatch():
    graph = pixel_graph(torch.rand(3, 4, 4), radius=1)
    with pytest.raises(ValueError, match="probs and graph weight must share"):
        random_walk(graph, torch.rand(1, 2, 5, 4))
    with pytest.raises(ValueError, match=r"probs must have shape \(16, C\)"):
        random_walk(graph.to_pyg(), torch.rand(15, 2))
    with pytest.raises(TypeError, match="needs a WindowGraph"):
        random_walk(graph.to_pyg(), torch.rand(16, 2), preset="psa")
