import pytest
import torch
from torch_geometric.utils import dense_to_sparse

from graphseg import EdgeGraph, WindowGraph, window_offsets
from graphseg.propagate import random_walk
from graphseg.propagate.unia import (
    mutual_complementing_refinement,
    sinkhorn,
    sinkhorn_graph,
    unia_affinity,
)

TIGHT = {"num_iter": 500, "tol": 1e-12}


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def window_graph(height=5, width=6, radius=1, shape="square", self_weight=True, seed=0):
    """A directed (non-symmetric) windowed graph with random positive weights."""
    offsets = window_offsets(radius, shape)
    weight = rand(2, offsets.shape[0], height, width, seed=seed) + 0.1
    own = rand(2, 1, height, width, seed=seed + 1) + 0.1 if self_weight else None
    return WindowGraph(weight, offsets, self_weight=own)


def assert_doubly_stochastic(rows, columns, atol=1e-9):
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=atol, rtol=0)
    torch.testing.assert_close(columns, torch.ones_like(columns), atol=atol, rtol=0)


# -- dense Sinkhorn --------------------------------------------------------------------------


def test_dense_rows_and_columns_sum_to_one():
    attention = rand(3, 7, 7)
    out = sinkhorn(attention, **TIGHT)
    assert out.shape == attention.shape
    assert_doubly_stochastic(out.sum(-1), out.sum(-2))
    single = sinkhorn(attention[1], **TIGHT)
    assert single.shape == (7, 7)
    torch.testing.assert_close(single, out[1])


def test_dense_is_a_diagonal_scaling():
    attention = rand(6, 6, seed=3)
    out = sinkhorn(attention, **TIGHT)
    # diag(u) A diag(v): the ratios out / A factor into an outer product
    ratio = out / attention
    torch.testing.assert_close(ratio * ratio[0, 0], ratio[:, :1] * ratio[:1, :])


def test_one_iteration_is_one_row_then_one_column_normalisation():
    attention = rand(2, 5, 5, seed=4)
    rows = attention / attention.sum(-1, keepdim=True)
    expected = rows / rows.sum(-2, keepdim=True)
    torch.testing.assert_close(sinkhorn(attention, num_iter=1), expected)


def test_tolerance_stops_early_and_zero_rows_stay_zero():
    attention = rand(5, 5, seed=5)
    attention[2] = 0
    attention[:, 2] = 0
    out = sinkhorn(attention, num_iter=10_000, tol=1e-6)
    assert torch.equal(out[2], torch.zeros(5, dtype=out.dtype))
    assert torch.equal(out[:, 2], torch.zeros(5, dtype=out.dtype))
    keep = [0, 1, 3, 4]
    rows, columns = out.sum(-1)[keep], out.sum(-2)[keep]
    assert_doubly_stochastic(rows, columns, atol=1e-6)
    # loose tolerance: the rows stop short of 1, the columns are exact after the column step
    loose = sinkhorn(rand(8, 8, seed=6) ** 4, tol=0.05)
    assert (loose.sum(-1) - 1).abs().max() > 1e-6
    torch.testing.assert_close(loose.sum(-2), torch.ones(8, dtype=loose.dtype))


def test_dense_gradcheck():
    attention = rand(2, 4, 4, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: sinkhorn(a, num_iter=6, tol=0), (attention,))


@pytest.mark.parametrize(
    ("attention", "error", "match"),
    [
        ([[1.0]], TypeError, "attention must be a"),
        (torch.ones(2, 3, 4), ValueError, r"square \(B, N, N\)"),
        (torch.ones(3, 3, dtype=torch.int64), TypeError, "floating-point"),
        (-torch.ones(3, 3), ValueError, "non-negative"),
        (torch.full((3, 3), float("nan")), ValueError, "NaN"),
    ],
)
def test_dense_bad_inputs(attention, error, match):
    with pytest.raises(error, match=match):
        sinkhorn(attention)


def test_bad_options():
    with pytest.raises(ValueError, match="num_iter must be > 0"):
        sinkhorn(torch.ones(3, 3), num_iter=0)
    with pytest.raises(TypeError, match="num_iter must be a whole number"):
        sinkhorn(torch.ones(3, 3), num_iter=2.5)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        sinkhorn_graph(window_graph(), tol=-1.0)


# -- windowed Sinkhorn -----------------------------------------------------------------------


@pytest.mark.usefixtures("each_backend")
@pytest.mark.parametrize(("radius", "shape", "self_weight"),
                         [(1, "square", True), (2, "disk", False)])
def test_windowed_matches_dense(radius, shape, self_weight):
    graph = window_graph(radius=radius, shape=shape, self_weight=self_weight)
    out = sinkhorn_graph(graph, **TIGHT)
    assert isinstance(out, WindowGraph) and out.weight.shape == graph.weight.shape
    assert_doubly_stochastic(out.degree(), out.in_degree())
    dense = graph.to_dense()
    torch.testing.assert_close(out.to_dense(), sinkhorn(dense, **TIGHT), atol=1e-10, rtol=0)


def test_pyg_graph_matches_dense():
    graph = window_graph()
    out = sinkhorn_graph(graph.to_pyg(), **TIGHT)
    assert isinstance(out, EdgeGraph)
    assert_doubly_stochastic(out.degree().flatten(), out.in_degree().flatten())
    # the batch is block diagonal; Sinkhorn acts on each block alone
    expected = sinkhorn(graph.to_dense(), **TIGHT)
    source, target = out.edge_index
    torch.testing.assert_close(out.edge_weight, expected[target, source], atol=1e-10, rtol=0)


@pytest.mark.usefixtures("each_backend")
def test_windowed_gradcheck():
    offsets = window_offsets(1, "square")
    weight = (rand(1, 8, 3, 3, seed=8) + 0.1).requires_grad_()

    def scaled(w):
        return sinkhorn_graph(WindowGraph(w, offsets, self_weight=1.0), num_iter=4, tol=0).weight

    assert torch.autograd.gradcheck(scaled, (weight,), fast_mode=True)


def test_windowed_bad_inputs():
    graph = window_graph()
    with pytest.raises(ValueError, match="graph weight must be non-negative"):
        sinkhorn_graph(WindowGraph(-graph.weight, graph.offsets))
    with pytest.raises(ValueError, match="graph self_weight must be non-negative"):
        sinkhorn_graph(WindowGraph(graph.weight, graph.offsets, self_weight=-1.0))
    with pytest.raises(TypeError, match="graph must be a WindowGraph"):
        sinkhorn_graph("graph")


# -- UniA affinity ---------------------------------------------------------------------------


def test_unia_affinity_dense_is_symmetric_doubly_stochastic_and_walkable():
    attention = rand(1, 12, 12, seed=9)
    affinity = unia_affinity(attention, **TIGHT)
    torch.testing.assert_close(affinity, affinity.transpose(1, 2))
    assert_doubly_stochastic(affinity.sum(-1), affinity.sum(-2))
    graph = EdgeGraph(*dense_to_sparse(affinity[0]), num_nodes=12)
    probs = rand(12, 3, seed=10)
    out = random_walk(graph, probs, beta=1, num_steps=3)
    torch.testing.assert_close(out, torch.linalg.matrix_power(affinity[0], 3) @ probs)


@pytest.mark.usefixtures("each_backend")
def test_unia_affinity_windowed_is_symmetric_and_walkable():
    graph = window_graph(radius=2, shape="disk")
    affinity = unia_affinity(graph, **TIGHT)
    assert isinstance(affinity, WindowGraph)
    dense = affinity.to_dense()
    torch.testing.assert_close(dense, dense.t())
    assert_doubly_stochastic(affinity.degree(), affinity.in_degree())
    expected = unia_affinity(graph.to_dense(), **TIGHT)
    torch.testing.assert_close(dense, expected, atol=1e-10, rtol=0)
    probs = rand(2, 3, 5, 6, seed=11)
    out = random_walk(affinity, probs, beta=1, num_steps=4)
    flat = probs.permute(1, 0, 2, 3).reshape(3, -1).t()
    walked = torch.linalg.matrix_power(dense, 4) @ flat
    torch.testing.assert_close(out, walked.t().reshape(3, 2, 5, 6).permute(1, 0, 2, 3))


def test_unia_affinity_needs_symmetric_offsets():
    offsets = torch.tensor([[0, 1], [1, 0]])
    graph = WindowGraph(rand(1, 2, 3, 3) + 0.1, offsets, self_weight=1.0)
    with pytest.raises(ValueError, match="closed under negation"):
        unia_affinity(graph)


# -- mutual complementing refinement ---------------------------------------------------------


def released_dr(cam, refined, affinity):
    """UniA's ``dr`` (model/dense_refinement.py) transcribed: label arithmetic with masks."""
    tamp_info_ = ((refined != 0) * (refined != 255)) * refined
    bkg_info_ = (((affinity != 0) * (affinity != 255)) * affinity) == 0
    tamp_info = tamp_info_ * bkg_info_
    final = tamp_info + (tamp_info == 0) * affinity
    prior_mask = ((cam != 0) * (cam != 255)) * (refined == cam)
    return (prior_mask == 0) * final + prior_mask * cam


def columns(*cases):
    """Hand-made (P, R, A, expected) cases → four (1, 1, n) maps."""
    return [torch.tensor([[list(case)]]) for case in zip(*cases, strict=True)]


OFFICIAL_CASES = [
    (1, 1, 1, 1),  # agree
    (0, 2, 0, 2),  # R's foreground fills A's background
    (255, 2, 255, 2),  # ... and A's ignore
    (0, 0, 3, 3),  # R's background never overrides A
    (255, 255, 0, 0),  # R's ignore never overrides A
    (0, 1, 2, 2),  # conflict of R and A: A wins
    (1, 1, 2, 1),  # conflict, but CAM and PAR agree on a foreground class: it wins
    (3, 1, 0, 1),  # CAM disagrees with PAR: no prior
    (1, 255, 255, 255),  # CAM alone does not complement
    (255, 255, 255, 255),  # all ignore
]


def test_mcr_official_by_hand():
    cam, refined, affinity, expected = columns(*OFFICIAL_CASES)
    out = mutual_complementing_refinement(cam, refined, affinity)
    assert out.dtype == torch.int64
    assert out.tolist() == expected.tolist()
    early = mutual_complementing_refinement(cam, refined, affinity, cam_prior=False)
    assert early[0, 0, 6] == 2 and early[0, 0, 7] == 1


def test_mcr_official_equals_released_arithmetic():
    g = torch.Generator().manual_seed(12)
    values = torch.tensor([0, 1, 2, 3, 255])
    maps = [values[torch.randint(0, 5, (3, 16, 16), generator=g)] for _ in range(3)]
    torch.testing.assert_close(mutual_complementing_refinement(*maps), released_dr(*maps))


def test_mcr_consensus_by_hand():
    cases = [
        (1, 1, 1, 1),  # agree
        (0, 0, 0, 0),  # agree on background
        (255, 2, 2, 2),  # one uncertain map complemented
        (255, 255, 0, 0),  # two uncertain maps complemented
        (0, 1, 255, 255),  # conflict
        (1, 2, 1, 255),  # conflict despite a majority
        (255, 255, 255, 255),  # all ignore
    ]
    cam, refined, affinity, expected = columns(*cases)
    out = mutual_complementing_refinement(cam, refined, affinity, variant="consensus")
    assert out.tolist() == expected.tolist()


def test_mcr_accepts_single_maps():
    cam = torch.tensor([[0, 1], [255, 2]], dtype=torch.int32)
    out = mutual_complementing_refinement(cam, cam.numpy(), cam)
    assert out.shape == (1, 2, 2) and out.tolist() == [cam.tolist()]


def test_mcr_bad_inputs():
    good = torch.zeros(1, 2, 2, dtype=torch.int64)
    with pytest.raises(TypeError, match="refined_label must be an integer"):
        mutual_complementing_refinement(good, good.float(), good)
    with pytest.raises(ValueError, match="cam_label and affinity_label must have the same"):
        mutual_complementing_refinement(good, good, torch.zeros(1, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"cam_label must hold class ids in >= 0 or 255"):
        mutual_complementing_refinement(good - 1, good, good)
    with pytest.raises(ValueError, match="variant must be one of"):
        mutual_complementing_refinement(good, good, good, variant="paper")
