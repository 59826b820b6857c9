"""WindowGraph, pixel_graph and feature_graph against brute-force dense constructions."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphseg import WindowGraph, feature_graph, opposite_offsets, pixel_graph, window_offsets

pytestmark = pytest.mark.usefixtures("each_backend")

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def brute_dense(features, offsets, pair, self_weight=None):
    """Dense (N, N) adjacency from a loop over pixel pairs: A[p, q] = pair(p, q) for q = p + o."""
    channels, height, width = features.shape
    nodes = height * width
    dense = torch.zeros(nodes, nodes, dtype=torch.float64)
    for y in range(height):
        for x in range(width):
            p = y * width + x
            if self_weight is not None:
                dense[p, p] = self_weight
            for dy, dx in offsets.tolist():
                qy, qx = y + dy, x + dx
                if 0 <= qy < height and 0 <= qx < width:
                    dense[p, qy * width + qx] = pair(features[:, y, x], features[:, qy, qx],
                                                     dy, dx)
    return dense


def gaussian(sigma_xy, sigma_rgb):
    def pair(a, b, dy, dx):
        return math.exp(-(dy * dy + dx * dx) / (2 * sigma_xy**2)
                        - float(((a - b) ** 2).sum()) / (2 * sigma_rgb**2))
    return pair


def l1_pair(a, b, dy, dx):
    return math.exp(-float((a - b).abs().mean()))


def cosine_pair(a, b, dy, dx):
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture
def image():
    return torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("shape", ["disk", "psa", "square"])
def test_gaussian_kernel(image, shape):
    graph = pixel_graph(image, radius=2, shape=shape, sigma_xy=1.5, sigma_rgb=0.3)
    expected = brute_dense(image, window_offsets(2, shape), gaussian(1.5, 0.3))
    torch.testing.assert_close(graph.to_dense(), expected)


def test_gaussian_imagenet_normalisation(image):
    graph = pixel_graph(image, radius=2, normalize="imagenet", sigma_xy=6.0, sigma_rgb=0.1)
    normalised = (image - IMAGENET_MEAN.double()) / IMAGENET_STD.double()
    expected = brute_dense(normalised, window_offsets(2), gaussian(6.0, 0.1))
    torch.testing.assert_close(graph.to_dense(), expected)


@pytest.mark.parametrize(("kernel", "pair"), [("l1", l1_pair), ("cosine", cosine_pair)])
def test_l1_and_cosine_kernels(image, kernel, pair):
    graph = pixel_graph(image, radius=2, kernel=kernel, self_weight=1.0)
    expected = brute_dense(image, window_offsets(2), pair, self_weight=1.0)
    torch.testing.assert_close(graph.to_dense(), expected)


def test_feature_graph_l1_threshold_and_features():
    features = torch.rand(1, 16, 5, 5, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64) * 8
    graph = feature_graph(features, radius=3, kind="l1", threshold=0.05, keep_features=True)
    dense = brute_dense(features[0], window_offsets(3), l1_pair)
    expected = torch.where(dense > 0.05, dense, torch.zeros_like(dense))
    torch.testing.assert_close(graph.to_dense(), expected)
    assert (graph.to_dense() == 0).any() and (graph.to_dense() > 0.05).any()
    data = graph.to_pyg()
    torch.testing.assert_close(data.x, features[0].reshape(16, -1).t())


def test_uint8_hwc_input_equals_float_chw():
    array = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    from_uint8 = pixel_graph(array, radius=2)
    from_float = pixel_graph(torch.from_numpy(array).permute(2, 0, 1).float() / 255, radius=2)
    torch.testing.assert_close(from_uint8.weight, from_float.weight)


@pytest.mark.parametrize("shape", ["disk", "psa", "square"])
def test_symmetric_kernel_reverse_edges(image, shape):
    graph = pixel_graph(image, radius=3, shape=shape)
    offsets, weight = graph.offsets, graph.weight[0]
    height, width = graph.image_size
    for k, k_rev in enumerate(opposite_offsets(offsets).tolist()):
        dy, dx = offsets[k].tolist()
        for y in range(max(0, -dy), min(height, height - dy)):
            for x in range(max(0, -dx), min(width, width - dx)):
                assert weight[k, y, x] == pytest.approx(weight[k_rev, y + dy, x + dx])
    dense = graph.to_dense()
    torch.testing.assert_close(dense, dense.t())


def test_window_larger_than_image():
    graph = pixel_graph(torch.rand(3, 2, 3), radius=5)
    assert graph.num_offsets == 80
    assert graph.num_edges == 6 * 5  # every other pixel of a 2x3 image is within radius 5
    torch.testing.assert_close(graph.to_dense(), graph.to_dense().t())


def test_border_entries_are_zero_at_corners():
    graph = pixel_graph(torch.rand(1, 3, 8, 8), radius=3)
    offsets = graph.offsets.tolist()
    up_left = offsets.index([-1, -1])
    down_right = offsets.index([3, 0])
    assert graph.weight[0, up_left, 0, 0] == 0 and graph.weight[0, up_left, 1, 1] > 0
    assert (graph.weight[0, down_right, 5:, :] == 0).all()
    assert (graph.weight[0, down_right, :5, :] > 0).all()
    corner_edges = (graph.weight[0, :, 0, 0] > 0).sum()
    assert corner_edges == sum(1 for dy, dx in offsets if dy >= 0 and dx >= 0)


def test_constructor_zeroes_outside_entries():
    offsets = window_offsets(1, "square")
    graph = WindowGraph(torch.ones(1, 8, 3, 3), offsets)
    assert graph.weight.sum() == graph.num_edges == 2 * 12 + 2 * 8  # 12 axial, 8 diagonal pairs


def test_batch_of_images_is_block_diagonal():
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, 4, 5, generator=generator, dtype=torch.float64)
    graph = pixel_graph(images, radius=2, self_weight=0.5)
    dense = graph.to_dense()
    for b in range(3):
        single = pixel_graph(images[b], radius=2, self_weight=0.5).to_dense()
        block = slice(20 * b, 20 * (b + 1))
        torch.testing.assert_close(dense[block, block], single)
    assert dense.count_nonzero() == 3 * pixel_graph(images[0], radius=2,
                                                    self_weight=0.5).to_dense().count_nonzero()


def test_aggregate_is_matvec(image):
    graph = pixel_graph(image, radius=2, self_weight=0.7)
    values = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    expected = (graph.to_dense() @ values[0].reshape(4, -1).t()).t().reshape(1, 4, 6, 7)
    torch.testing.assert_close(graph.aggregate(values), expected)


def test_to_pyg_edges_match_brute_force(image):
    graph = pixel_graph(image, radius=2, shape="psa", self_weight=1.0)
    data = graph.to_pyg()
    dense = brute_dense(image, window_offsets(2, "psa"), gaussian(6.0, 0.1), self_weight=1.0)
    target, source = dense.nonzero(as_tuple=True)
    assert data.num_nodes == 42
    assert data.edge_index.shape[1] == len(target) == graph.num_edges + 42
    assert torch.equal(data.edge_index[1], data.edge_index[1].sort().values)  # target sorted
    got = dict(zip(zip(data.edge_index[0].tolist(), data.edge_index[1].tolist(), strict=True),
                   data.edge_weight.tolist(), strict=True))
    pairs = zip(source.tolist(), target.tolist(), strict=True)
    want = {(s, t): float(dense[t, s]) for s, t in pairs}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value)
    assert data.pos[8].tolist() == [1.0, 1.0]  # node 8 = (y 1, x 1) in a 7-wide image


def test_pyg_message_passing_equals_aggregate(image):
    from torch_geometric.nn import MessagePassing

    class WeightedSum(MessagePassing):
        def __init__(self):
            super().__init__(aggr="add")

        def forward(self, x, edge_index, edge_weight):
            return self.propagate(edge_index, x=x, edge_weight=edge_weight)

        def message(self, x_j, edge_weight):
            return edge_weight.unsqueeze(1) * x_j

    graph = pixel_graph(image, radius=2, self_weight=0.3)
    data = graph.to_pyg()
    values = torch.randn(1, 5, 6, 7, dtype=torch.float64)
    out = WeightedSum()(values[0].reshape(5, -1).t(), data.edge_index, data.edge_weight)
    torch.testing.assert_close(out.t().reshape(1, 5, 6, 7), graph.aggregate(values))


def test_to_pyg_batch_and_remove_zeros():
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    graph = pixel_graph(images, radius=2, threshold=0.5)
    batch = graph.to_pyg()
    assert batch.num_graphs == 2 and batch.num_nodes == 32
    kept = graph.to_pyg(remove_zeros=True)
    assert kept.num_edges == int((graph.weight > 0).sum())
    assert (kept.edge_weight > 0.5).all()


def test_sparse_scipy_networkx_round_trips(image):
    import networkx as nx

    graph = pixel_graph(image, radius=2, self_weight=0.2)
    dense = graph.to_dense()
    torch.testing.assert_close(graph.to_sparse_csr().to_dense(), dense)
    np.testing.assert_allclose(graph.to_scipy().toarray(), dense.numpy())
    nxg = graph.to_networkx()
    assert nxg.number_of_nodes() == 42
    assert nxg.number_of_edges() == graph.num_edges + 42
    back = nx.to_scipy_sparse_array(nxg, nodelist=range(42), weight="weight").toarray()
    np.testing.assert_allclose(back.T, dense.numpy())  # networkx rows are sources
    assert nxg.nodes[8]["pos"] == (1, 1)
    undirected = pixel_graph(image, radius=2).to_networkx(directed=False)
    assert undirected.number_of_edges() == graph.num_edges // 2


def test_to_dgl_optional(image):
    graph = pixel_graph(image, radius=2)
    try:
        import dgl  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match="to_dgl\\(\\) needs DGL"):
            graph.to_dgl()
        pytest.skip("DGL cannot be imported beside this torch")
    dgl_graph = graph.to_dgl()
    assert dgl_graph.num_edges() == graph.num_edges


def test_to_dense_refuses_large_graphs():
    graph = pixel_graph(torch.rand(3, 64, 64), radius=1)
    with pytest.raises(ValueError, match=r"to_dense\(\) would allocate a 4096x4096.*sparse"):
        graph.to_dense(max_entries=1000)


def test_normalizations(image):
    graph = pixel_graph(image, radius=2, self_weight=1.0)
    dense = graph.to_dense()
    row = graph.normalize("row").to_dense()
    torch.testing.assert_close(row.sum(1), torch.ones(42, dtype=torch.float64))
    torch.testing.assert_close(row, dense / dense.sum(1, keepdim=True))
    inv_sqrt = dense.sum(1).rsqrt()
    torch.testing.assert_close(graph.normalize("sym").to_dense(),
                               inv_sqrt[:, None] * dense * inv_sqrt[None, :])
    asymmetric = graph.normalize("row")
    col = asymmetric.normalize("col").to_dense()
    torch.testing.assert_close(col.sum(0), torch.ones(42, dtype=torch.float64))
    torch.testing.assert_close(col, row / row.sum(0, keepdim=True))
    torch.testing.assert_close(graph.degree()[0].reshape(-1), dense.sum(1))
    torch.testing.assert_close(asymmetric.in_degree()[0].reshape(-1), row.sum(0))


def test_normalize_isolated_pixel_keeps_zeros():
    graph = WindowGraph(torch.zeros(1, 4, 3, 3, dtype=torch.float64), window_offsets(1))
    assert torch.equal(graph.normalize("row").weight, graph.weight)
    assert torch.isfinite(graph.normalize("sym").weight).all()


def test_power(image):
    graph = pixel_graph(image, radius=2, self_weight=1.0)
    torch.testing.assert_close(graph.power(8).to_dense(), graph.to_dense() ** 8)


@pytest.mark.parametrize("beta", [0.5, 1, 2, 3, 8, 16, 10.0])
def test_power_every_exponent_with_its_gradient(beta):
    # Powers of two are taken by squaring, the rest by pow: both equal w ** beta, and the
    # gradient is beta w ** (beta - 1) either way.
    weight = torch.rand(1, 4, 5, 6, dtype=torch.float64) + 0.1
    self_weight = torch.rand(1, 1, 5, 6, dtype=torch.float64) + 0.1
    graph = WindowGraph(weight, window_offsets(1), self_weight=self_weight)
    inside = graph.weight != 0  # edges leaving the image are dropped
    powered = graph.power(beta)
    torch.testing.assert_close(powered.weight, graph.weight ** beta, rtol=1e-14, atol=0)
    torch.testing.assert_close(powered.self_weight, self_weight ** beta, rtol=1e-14, atol=0)
    leaf = weight.clone().requires_grad_(True)
    WindowGraph(leaf, window_offsets(1)).power(beta).weight.sum().backward()
    expected = torch.where(inside, beta * weight ** (beta - 1), 0.0)
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=0)


def test_gradients_flow_through_feature_graph():
    features = torch.rand(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f: feature_graph(f, radius=2, kind="cosine").normalize("row").weight, (features,))


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    radius=st.integers(1, 3),
    shape=st.sampled_from(["disk", "psa", "square", "rings"]),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes(height, width, radius, shape, batch, seed):
    if height == width == 1 or (shape == "psa" and radius < 2):
        return
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, height, width, generator=generator, dtype=torch.float64)
    kwargs = {"shape": "rings", "dilations": [1, 2]} if shape == "rings" else {
        "radius": radius, "shape": shape}
    graph = pixel_graph(images, sigma_xy=2.0, sigma_rgb=0.4, **kwargs)
    offsets = graph.offsets
    for b in range(batch):
        expected = brute_dense(images[b], offsets, gaussian(2.0, 0.4))
        block = slice(b * height * width, (b + 1) * height * width)
        torch.testing.assert_close(graph.to_dense()[block, block], expected)
    data = graph.to_pyg()
    assert data.num_edges == graph.num_edges
    values = torch.randn(batch, 2, height, width, generator=generator, dtype=torch.float64)
    flat = graph.to_sparse_csr() @ values.permute(0, 2, 3, 1).reshape(-1, 2)
    torch.testing.assert_close(flat.reshape(batch, height, width, 2).permute(0, 3, 1, 2),
                               graph.aggregate(values))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: pixel_graph(torch.rand(4)), ValueError,
         r"image as a torch tensor must have shape"),
        (lambda: pixel_graph(torch.rand(2, 1, 3, 4, 4)), ValueError,
         r"image as a torch tensor must have shape"),
        (lambda: pixel_graph(torch.rand(1, 1, 8, 8), normalize="imagenet"),
         ValueError, "needs 3 colour channels"),
        (lambda: pixel_graph(torch.ones(3, 8, 8, dtype=torch.int32)),
         TypeError, "image must be uint8, uint16, bool or float"),
        (lambda: pixel_graph(np.zeros((8, 8, 3), dtype=np.int16)),
         TypeError, "image must be uint8, uint16, bool or float"),
        (lambda: pixel_graph("astronaut.png"), TypeError,
         "image must be a numpy array .*, a PIL image or a torch tensor"),
        (lambda: pixel_graph(torch.full((3, 8, 8), float("inf"))),
         ValueError, "image contains NaN or Inf"),
        (lambda: pixel_graph(torch.rand(3, 0, 8)), ValueError, "image is empty"),
        (lambda: pixel_graph(torch.rand(3, 8, 8), radius=0), ValueError, "radius must be > 0"),
        (lambda: pixel_graph(torch.rand(3, 1, 1), radius=2),
         ValueError, r"radius=2 is too large for the 1x1 image"),
        (lambda: pixel_graph(torch.rand(3, 8, 8), kernel="bilateral"),
         ValueError, "kernel must be one of"),
        (lambda: pixel_graph(torch.rand(3, 8, 8), sigma_rgb=0), ValueError, "sigma_rgb must be"),
        (lambda: pixel_graph(torch.rand(3, 8, 8), normalize="unit"),
         ValueError, "normalize must be None or 'imagenet'"),
        (lambda: pixel_graph(torch.rand(3, 8, 8), threshold=-1), ValueError, "threshold"),
        (lambda: pixel_graph(torch.rand(3, 8, 8), self_weight=torch.rand(2, 8, 8)),
         ValueError, r"self_weight must have shape \(1, 1, 8, 8\)"),
        (lambda: feature_graph(torch.rand(1, 8, 8)), ValueError, "features must have shape"),
        (lambda: feature_graph(torch.rand(1, 2, 8, 8), kind="l2"), ValueError, "kind must be"),
        (lambda: WindowGraph(torch.rand(1, 3, 4, 4), window_offsets(1)),
         ValueError, "weight has 3 offsets"),
        (lambda: pixel_graph(torch.rand(3, 4, 4), radius=2).aggregate(torch.rand(2, 1, 4, 4)),
         ValueError, "values and graph weight must share batch size"),
        (lambda: pixel_graph(torch.rand(3, 4, 4), radius=2).power(0), ValueError, "beta"),
        (lambda: pixel_graph(torch.rand(3, 4, 4), radius=2).normalize("l2"),
         ValueError, "mode must be one of"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
