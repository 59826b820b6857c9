"""SuperpixelGraph, region_adjacency and superpixels against brute-force scans."""

import sys
import types

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import color, data
from skimage import graph as skgraph

import graphseg
from graphseg.graph import SuperpixelGraph, region_adjacency, superpixel_graph, superpixels
from graphseg.graph import superpixel as sp


def brute_pairs(labels, connectivity):
    """{(i, j): number of neighbouring pixel pairs} over every pixel and every neighbour."""
    height, width = labels.shape
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    pairs = {}
    for y in range(height):
        for x in range(width):
            for dy, dx in steps:
                qy, qx = y + dy, x + dx
                if 0 <= qy < height and 0 <= qx < width and labels[y, x] != labels[qy, qx]:
                    key = (min(labels[y, x], labels[qy, qx]), max(labels[y, x], labels[qy, qx]))
                    pairs[key] = pairs.get(key, 0) + 1
    # each unordered pixel pair was visited from both ends
    return {key: count // 2 for key, count in pairs.items()}


@pytest.fixture
def blobs():
    """A 12x13 label map of 9 irregular regions and an image that is constant on none."""
    generator = np.random.default_rng(0)
    labels = np.kron(generator.integers(0, 9, (4, 5)), np.ones((3, 3), dtype=np.int64))[:, :13]
    labels[5, 4] = 3
    labels[0, 0] = 7
    image = torch.rand(1, 3, 12, 13, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    return labels, image


@pytest.mark.parametrize("connectivity", [4, 8])
def test_adjacency_matches_brute_force(blobs, connectivity):
    labels, _ = blobs
    edges, counts = region_adjacency(labels, connectivity=connectivity, return_counts=True)
    expected = brute_pairs(labels, connectivity)
    got = dict(zip(map(tuple, edges.t().tolist()), counts.tolist(), strict=True))
    assert got == expected
    assert (edges[0] < edges[1]).all()


@pytest.mark.parametrize(("connectivity", "skimage_connectivity"), [(4, 1), (8, 2)])
def test_adjacency_equals_rag_mean_color(connectivity, skimage_connectivity):
    image = np.ascontiguousarray(data.astronaut()[::8, ::8])
    labels = superpixels(image, n_segments=60)[0].numpy()
    assert labels.max() > 20
    rag = skgraph.rag_mean_color(image, labels, connectivity=skimage_connectivity)
    expected = {tuple(sorted(edge)) for edge in rag.edges()}
    got = set(map(tuple, region_adjacency(labels, connectivity=connectivity).t().tolist()))
    assert got == expected


def test_adjacency_batch_offsets_and_labels_kept():
    first = np.array([[0, 0, 2], [0, 2, 2]])
    second = np.array([[1, 0], [1, 0]])
    both = np.stack([np.pad(first, ((0, 0), (0, 0))), np.zeros((2, 3), np.int64)])
    both[1, :, :2] = second
    edges = region_adjacency(both)
    # image 0 has labels 0..2 (3 labels), so image 1's labels start at 3
    assert set(map(tuple, edges.t().tolist())) == {(0, 2), (3, 4)}


def test_graph_nodes_match_brute_force(blobs):
    labels, image = blobs
    graph = SuperpixelGraph(image, labels)
    lab = torch.from_numpy(color.rgb2lab(image[0].permute(1, 2, 0).numpy()))
    for region in range(graph.num_nodes):
        member = torch.from_numpy(labels == region)
        ys, xs = torch.nonzero(member, as_tuple=True)
        assert graph.size[region] == member.sum()
        torch.testing.assert_close(graph.mean_rgb[region], image[0][:, member].mean(1))
        torch.testing.assert_close(graph.mean_lab[region], lab[member].mean(0), atol=1e-3,
                                   rtol=0)
        torch.testing.assert_close(graph.centroid[region],
                                   torch.stack([xs, ys]).double().mean(1))
    x = graph.x
    assert x.shape == (graph.num_nodes, len(sp.FEATURE_NAMES))
    torch.testing.assert_close(x[:, 6], graph.centroid[:, 0] / 13)
    torch.testing.assert_close(x[:, 8].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_rgb_to_lab_matches_skimage():
    image = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(3),
                       dtype=torch.float64)
    image[0, :, 0, 0] = 0.0
    image[0, :, 0, 1] = 1.0
    for b in range(2):
        expected = color.rgb2lab(image[b].permute(1, 2, 0).numpy())
        got = sp.rgb_to_lab(image)[b].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_edges_weights_and_boundary_strength_brute_force(blobs):
    labels, image = blobs
    graph = SuperpixelGraph(image, labels, connectivity=8, bandwidth=0.3)
    pixels = image[0].permute(1, 2, 0)
    contrast = {}
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            for dy, dx in [(0, 1), (1, 0), (1, 1), (1, -1)]:
                qy, qx = y + dy, x + dx
                if 0 <= qy < height and 0 <= qx < width and labels[y, x] != labels[qy, qx]:
                    key = (min(labels[y, x], labels[qy, qx]), max(labels[y, x], labels[qy, qx]))
                    contrast.setdefault(key, []).append(
                        float((pixels[y, x] - pixels[qy, qx]).norm()))
    source, target = graph.edge_index.tolist()
    assert len(source) == 2 * len(contrast)
    for e, (s, t) in enumerate(zip(source, target, strict=True)):
        key = (min(s, t), max(s, t))
        assert graph.boundary_length[e] == len(contrast[key])
        assert graph.boundary_strength[e] == pytest.approx(np.mean(contrast[key]))
        distance = (graph.mean_rgb[s] - graph.mean_rgb[t]).norm()
        assert graph.edge_weight[e] == pytest.approx(float(torch.exp(-distance**2 / 0.18)))
    # PyG order: sorted by target, then source
    order = np.lexsort((source, target))
    assert (order == np.arange(len(source))).all()


def test_boundary_map_and_kernels(blobs):
    labels, image = blobs
    boundary = torch.rand(1, 12, 13, generator=torch.Generator().manual_seed(4))
    graph = SuperpixelGraph(image, labels, kernel="boundary", boundary=boundary, bandwidth=0.5)
    s, t = graph.edge_index[:, 0].tolist()
    cut = [max(boundary[0, y, x], boundary[0, qy, qx])
           for y in range(12) for x in range(13)
           for qy, qx in [(y, x + 1), (y + 1, x)]
           if qy < 12 and qx < 13 and {labels[y, x], labels[qy, qx]} == {s, t}]
    assert graph.boundary_strength[0] == pytest.approx(float(np.mean(cut)))
    assert graph.edge_weight[0] == pytest.approx(float(np.exp(-np.mean(cut) ** 2 / 0.5)))
    lab = SuperpixelGraph(image, labels, kernel="lab")
    distance = (lab.mean_lab[s] - lab.mean_lab[t]).norm()
    assert lab.edge_weight[0] == pytest.approx(float(torch.exp(-distance**2 / 200)))


def test_pool_unpool_exact_on_constant_regions(blobs):
    labels, image = blobs
    graph = SuperpixelGraph(image.float(), labels)
    node_values = torch.randn(graph.num_nodes, 4, generator=torch.Generator().manual_seed(5))
    painted = graph.unpool(node_values)
    assert painted.shape == (1, 4, 12, 13)
    assert torch.equal(graph.pool(painted), node_values)
    assert torch.equal(graph.unpool(graph.pool(painted)), painted)
    scalar = graph.unpool(node_values[:, 0])
    assert scalar.shape == (1, 12, 13)
    assert torch.equal(graph.pool(scalar), node_values[:, 0])


def test_pool_is_differentiable(blobs):
    labels, image = blobs
    graph = SuperpixelGraph(image, labels)
    values = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    graph.pool(values).sum().backward()
    expected = (1 / graph.size)[torch.from_numpy(labels)]
    torch.testing.assert_close(values.grad[0, 0], expected)


@pytest.mark.parametrize("size", [(12, 13), (5, 4), (3, 7)])
def test_pooled_features_equal_nearest_upsampling(blobs, size):
    labels, image = blobs
    features = torch.randn(1, 6, *size, generator=torch.Generator().manual_seed(6),
                           dtype=torch.float64)
    graph = SuperpixelGraph(image, labels, features=features, kernel="feature")
    upsampled = F.interpolate(features, size=(12, 13), mode="nearest")
    torch.testing.assert_close(graph.features, graph.pool(upsampled))
    assert graph.x.shape == (graph.num_nodes, len(sp.FEATURE_NAMES) + 6)
    distance = (graph.features[graph.edge_index[0]] - graph.features[graph.edge_index[1]]).norm(
        dim=1)
    sigma = float(distance.median())
    torch.testing.assert_close(graph.edge_weight, torch.exp(-distance**2 / (2 * sigma**2)))


def test_to_pyg_and_networkx_agree(blobs):
    labels, image = blobs
    graph = SuperpixelGraph(image, labels)
    data = graph.to_pyg()
    torch.testing.assert_close(data.x, graph.x)
    torch.testing.assert_close(data.pos, graph.centroid)
    assert data.num_nodes == graph.num_nodes
    nxg = graph.to_networkx()
    assert nxg.number_of_nodes() == graph.num_nodes
    assert 2 * nxg.number_of_edges() == data.edge_index.shape[1]
    for (s, t), weight in zip(data.edge_index.t().tolist(), data.edge_weight.tolist(),
                              strict=True):
        assert nxg.edges[s, t]["weight"] == pytest.approx(weight)
    for n in range(graph.num_nodes):
        assert nxg.nodes[n]["size"] == graph.size[n]
    assert set(nxg.edges) == {tuple(e) for e in region_adjacency(labels).t().tolist()}
    assert nx.is_connected(nxg)


def test_batch_equals_single_graphs(blobs):
    labels, image = blobs
    other = torch.rand(1, 3, 12, 13, generator=torch.Generator().manual_seed(7),
                       dtype=torch.float64)
    other_labels = np.arange(12 * 13).reshape(12, 13) // 40
    batch = SuperpixelGraph(torch.cat([image, other]), np.stack([labels, other_labels]))
    singles = [SuperpixelGraph(image, labels), SuperpixelGraph(other, other_labels)]
    assert batch.num_regions == [g.num_nodes for g in singles]
    torch.testing.assert_close(batch.x, torch.cat([g.x for g in singles]))
    pyg = batch.to_pyg()
    assert pyg.num_graphs == 2
    for b, single in enumerate(singles):
        part = pyg.get_example(b)
        assert torch.equal(part.edge_index, single.edge_index)
        torch.testing.assert_close(part.edge_weight, single.edge_weight)
    assert batch.batch.tolist() == [0] * singles[0].num_nodes + [1] * singles[1].num_nodes
    assert batch.unpool(batch.pool(torch.cat([image, other]))).shape == (2, 3, 12, 13)


def test_single_region_has_no_edges():
    graph = SuperpixelGraph(torch.rand(3, 4, 5), np.zeros((4, 5), np.int64))
    assert graph.edge_index.shape == (2, 0) and graph.edge_weight.shape == (0,)
    assert graph.to_pyg().num_edges == 0
    assert graph.to_networkx().number_of_nodes() == 1


def test_labels_are_renumbered_contiguously():
    labels = np.array([[5, 5, 9], [2, 9, 9]])
    graph = SuperpixelGraph(torch.rand(3, 2, 3), labels)
    assert graph.labels.tolist() == [[[1, 1, 2], [0, 2, 2]]]
    assert graph.num_nodes == 3
    sparse = SuperpixelGraph(torch.rand(3, 2, 3), labels * 10**6)
    assert sparse.labels.tolist() == graph.labels.tolist()


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixel_graph_end_to_end(method):
    image = np.ascontiguousarray(data.astronaut()[100:164:2, 150:230:2])
    options = {"n_segments": 20} if method == "slic" else {"scale": 50.0, "min_size": 10}
    graph = superpixel_graph(image, method=method, **options)
    assert graph.labels.shape == (1, 32, 40)
    assert graph.num_nodes == int(graph.labels.max()) + 1 > 1
    assert graphseg.superpixel_graph is superpixel_graph
    assert torch.equal(superpixels(image, method=method, **options), graph.labels)


def test_fast_slic_is_used_when_installed(monkeypatch):
    calls = {}

    class FakeSlic:
        def __init__(self, num_components, compactness):
            calls["args"] = (num_components, compactness)

        def iterate(self, image):
            calls["image"] = image
            return np.repeat(np.arange(image.shape[1]) // 4, image.shape[0]).reshape(
                image.shape[1], image.shape[0]).T.astype(np.int32) * 2

    monkeypatch.setitem(sys.modules, "fast_slic", types.SimpleNamespace(Slic=FakeSlic))
    monkeypatch.setattr(sp, "WITH_FAST_SLIC", True)
    labels = superpixels(torch.rand(3, 6, 8), n_segments=7, compactness=3.0)
    assert calls["args"] == (7, 3.0)
    assert calls["image"].dtype == np.uint8 and calls["image"].flags.c_contiguous
    assert labels[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_bad_inputs_name_the_argument(blobs):
    labels, image = blobs
    with pytest.raises(ValueError, match=r"labels must have shape \(1, 12, 13\).*\(1, 12, 12\)"):
        SuperpixelGraph(image, labels[:, :12])
    with pytest.raises(ValueError, match="labels must be non-negative"):
        SuperpixelGraph(image, labels - 1)
    with pytest.raises(TypeError, match="labels must be an integer"):
        SuperpixelGraph(image, labels.astype(np.float32))
    with pytest.raises(ValueError, match="connectivity must be one of"):
        region_adjacency(labels, connectivity=6)
    with pytest.raises(ValueError, match="kernel='feature' needs features"):
        SuperpixelGraph(image, labels, kernel="feature")
    with pytest.raises(ValueError, match="features must have batch size 1"):
        SuperpixelGraph(image, labels, features=torch.rand(2, 4, 3, 3))
    with pytest.raises(ValueError, match="n_segments applies to method='slic' only"):
        superpixels(image, method="felzenszwalb", n_segments=10)
    with pytest.raises(ValueError, match="image must have 1, 3 or 4 channels"):
        superpixels(torch.rand(1, 2, 8, 8))
    graph = SuperpixelGraph(image, labels)
    with pytest.raises(ValueError, match=r"values must have shape \(1, C, 12, 13\)"):
        graph.pool(torch.rand(1, 3, 12, 12))
    with pytest.raises(ValueError, match=r"node_values must have shape \(9, C\)"):
        graph.unpool(torch.rand(8, 2))
