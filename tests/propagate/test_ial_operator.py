"""IAL's E-step α_p = G α_u (graphseg.propagate.ial_refine), each variant against its matrix
written from the equation with explicit loops over the window weights."""

import pytest
import torch

from graphseg import WindowGraph, pixel_graph
from graphseg.graph.offsets import window_offsets
from graphseg.propagate import ial_refine

pytestmark = pytest.mark.usefixtures("each_backend")

H, W = 4, 5
N = H * W


def window_graph(scale, seed=0, self_weight=None):
    """Random non-negative weights on a radius-2 disk, times ``scale``; 0 where the neighbour
    leaves the image (the border rule)."""
    generator = torch.Generator().manual_seed(seed)
    offsets = window_offsets(2, "disk")
    weight = scale * torch.rand(1, len(offsets), H, W, generator=generator, dtype=torch.float64)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        for y in range(H):
            for x in range(W):
                if not (0 <= y + dy < H and 0 <= x + dx < W):
                    weight[0, k, y, x] = 0
    return WindowGraph(weight, offsets, self_weight=self_weight)


def adjacency(graph):
    """W[i][j] from the window weights, self loops dropped (they cancel in L = D − W)."""
    matrix = [[0.0] * N for _ in range(N)]
    for k, (dy, dx) in enumerate(graph.offsets.tolist()):
        for y in range(H):
            for x in range(W):
                if 0 <= y + dy < H and 0 <= x + dx < W:
                    matrix[y * W + x][(y + dy) * W + x + dx] += float(graph.weight[0, k, y, x])
    return matrix


def paper_matrix(weights, cap):
    """G = I − D + W, each row of W divided by max(d_i, 1) when ``cap`` (the spatial propagation
    network's normalisation), by explicit loops."""
    matrix = [[0.0] * N for _ in range(N)]
    for i in range(N):
        degree = sum(weights[i])
        divisor = max(degree, 1.0) if cap else 1.0
        for j in range(N):
            matrix[i][j] = (1.0 if i == j else 0.0) - (degree / divisor if i == j else 0.0) \
                + weights[i][j] / divisor
    return torch.tensor(matrix, dtype=torch.float64)


def apply(matrix, probs, steps=1):
    flat = probs[0].reshape(probs.shape[1], -1).t()
    for _ in range(steps):
        flat = matrix @ flat
    return flat.t().reshape(probs.shape)


def random_probs(classes=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, classes, H, W, generator=generator, dtype=torch.float64).softmax(1)


def test_paper_e_step_is_i_minus_d_plus_w_applied_once():
    graph = window_graph(0.05)  # 16 neighbours at most: every degree below 1
    weights = adjacency(graph)
    assert max(sum(row) for row in weights) < 1
    matrix = paper_matrix(weights, cap=False)
    probs = random_probs()
    out = ial_refine(graph, probs)
    torch.testing.assert_close(out, apply(matrix, probs))
    assert not torch.allclose(out, probs)
    # self weights cancel in L = D − W
    with_self = window_graph(0.05, self_weight=torch.full((1, 1, H, W), 0.3,
                                                          dtype=torch.float64))
    torch.testing.assert_close(ial_refine(with_self, probs), out)


def test_paper_e_step_keeps_probabilities_when_degrees_exceed_one():
    graph = window_graph(1.0)
    weights = adjacency(graph)
    assert max(sum(row) for row in weights) > 3
    literal = paper_matrix(weights, cap=False)
    assert literal.min() < -1  # the printed G is negative here: no probabilities
    matrix = paper_matrix(weights, cap=True)
    assert matrix.min() >= 0
    torch.testing.assert_close(matrix.sum(1), torch.ones(N, dtype=torch.float64))
    probs = random_probs()
    out = ial_refine(graph, probs)
    torch.testing.assert_close(out, apply(matrix, probs))
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.sum(1), torch.ones(1, H, W, dtype=torch.float64))
    assert apply(literal, probs).min() < 0


def test_scaled_variant_is_i_minus_l_over_dmax_for_num_steps():
    # a symmetric kernel graph: G is then symmetric too
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    graph = pixel_graph(image, radius=2)
    weights = adjacency(graph)
    d_max = max(sum(row) for row in weights)
    matrix = torch.tensor([[(1.0 if i == j else 0.0) - ((sum(weights[i]) if i == j else 0.0)
                                                         - weights[i][j]) / d_max
                            for j in range(N)] for i in range(N)], dtype=torch.float64)
    assert matrix.min() >= 0 and torch.allclose(matrix, matrix.t())
    probs = random_probs(seed=4)
    torch.testing.assert_close(ial_refine(graph, probs, variant="scaled"), apply(matrix, probs))
    out = ial_refine(graph, probs, variant="scaled", num_steps=10)
    torch.testing.assert_close(out, apply(matrix, probs, steps=10))
    torch.testing.assert_close(out.sum(1), torch.ones(1, H, W, dtype=torch.float64))


def test_row_variant_is_the_random_walk_step_with_self_weights():
    graph = window_graph(1.0, seed=5, self_weight=torch.full((1, 1, H, W), 2.0,
                                                             dtype=torch.float64))
    weights = adjacency(graph)
    for i in range(N):
        weights[i][i] += 2.0
    matrix = torch.tensor([[w / sum(row) for w in row] for row in weights], dtype=torch.float64)
    probs = random_probs(seed=6)
    torch.testing.assert_close(ial_refine(graph, probs, variant="row"), apply(matrix, probs))


def test_variants_differ_and_the_former_normalization_names_still_work():
    graph = window_graph(1.0, seed=7)
    probs = random_probs(seed=8)
    paper, scaled = ial_refine(graph, probs), ial_refine(graph, probs, variant="scaled")
    assert not torch.allclose(paper, scaled)
    with pytest.warns(DeprecationWarning, match="variant='scaled'"):
        torch.testing.assert_close(ial_refine(graph, probs, normalization="laplacian"), scaled)
    with pytest.warns(DeprecationWarning):
        torch.testing.assert_close(ial_refine(graph, probs, normalization="row"),
                                   ial_refine(graph, probs, variant="row"))


def test_pyg_graph_gives_the_window_result():
    graph = pixel_graph(torch.rand(3, H, W, dtype=torch.float64), radius=2)
    probs = random_probs(seed=9)
    flat = ial_refine(graph.to_pyg(), probs[0].reshape(3, -1).t())
    torch.testing.assert_close(flat.t().reshape(1, 3, H, W), ial_refine(graph, probs))


def test_bad_arguments():
    graph, probs = window_graph(1.0), random_probs()
    with pytest.raises(ValueError, match="variant must be one of"):
        ial_refine(graph, probs, variant="official")
    with pytest.raises(ValueError, match="normalization must be one of"):
        ial_refine(graph, probs, normalization="sym")
    with pytest.raises(ValueError, match="num_steps must be > 0"):
        ial_refine(graph, probs, num_steps=0)
    negative = WindowGraph(-graph.weight, graph.offsets)
    with pytest.raises(ValueError, match="negative weights"):
        ial_refine(negative, probs)
