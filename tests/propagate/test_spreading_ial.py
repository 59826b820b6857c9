import pytest
import torch
from torch_geometric.nn.models import LabelPropagation

from graphseg import pixel_graph
from graphseg.propagate import ial_refine, label_spreading

pytestmark = pytest.mark.usefixtures("each_backend")


@pytest.fixture
def graph():
    image = torch.rand(3, 7, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return pixel_graph(image, radius=2)


def seeds_map():
    seeds = torch.full((1, 7, 8), 255)
    seeds[0, 0, 0], seeds[0, 6, 7], seeds[0, 3, 3] = 0, 1, 2
    return seeds


def test_label_spreading_equals_dense_iteration(graph):
    dense = graph.to_dense()
    degree = dense.sum(1).rsqrt()
    sym = degree[:, None] * dense * degree[None, :]
    start = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).double()
    y0 = torch.zeros(56, 3, dtype=torch.float64)
    y0[0], y0[55], y0[27] = start
    values = y0
    for _ in range(20):
        values = 0.9 * sym @ values + 0.1 * y0
    out = label_spreading(graph, seeds_map(), alpha=0.9, num_steps=20)
    torch.testing.assert_close(out[0].reshape(3, -1).t(), values)
    closed = 0.1 * torch.linalg.solve(torch.eye(56, dtype=torch.float64) - 0.9 * sym, y0)
    converged = label_spreading(graph, seeds_map(), alpha=0.9, num_steps=400)
    torch.testing.assert_close(converged[0].reshape(3, -1).t(), closed)


def test_label_spreading_matches_pyg_label_propagation(graph):
    seeds = seeds_map()
    data = graph.normalize("sym").to_pyg()
    flat = seeds.reshape(-1)
    mask = flat != 255
    model = LabelPropagation(num_layers=15, alpha=0.8)
    expected = model(torch.where(mask, flat, 0), data.edge_index, mask=mask,
                     edge_weight=data.edge_weight.float())
    out = label_spreading(graph.to(torch.float32), seeds, alpha=0.8, num_steps=15, clamp=True)
    torch.testing.assert_close(out[0].reshape(3, -1).t(), expected)


def test_label_spreading_probs_and_pyg_input(graph):
    probs = torch.rand(1, 2, 7, 8, dtype=torch.float64)
    out = label_spreading(graph, probs, num_steps=5)
    flat = label_spreading(graph.to_pyg(), probs[0].reshape(2, -1).t(), num_steps=5)
    torch.testing.assert_close(flat.t().reshape(1, 2, 7, 8), out)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        label_spreading(graph, probs, alpha=1.0)


def dense_ial(dense):
    dense = dense.clone()
    dense.fill_diagonal_(0)
    laplacian = torch.diag(dense.sum(1)) - dense
    return torch.eye(len(dense), dtype=dense.dtype) - laplacian / dense.sum(1).max()


def test_ial_refine_laplacian(graph):
    probs = torch.softmax(torch.randn(1, 4, 7, 8, dtype=torch.float64), 1)
    with_self = pixel_graph(torch.rand(3, 7, 8, dtype=torch.float64), radius=2, self_weight=2.0)
    for g in (graph, with_self):
        matrix = dense_ial(g.to_dense())
        assert (matrix >= 0).all()
        torch.testing.assert_close(matrix.sum(1), torch.ones(56, dtype=torch.float64))
        out = ial_refine(g, probs, variant="scaled")
        torch.testing.assert_close(out[0].reshape(4, -1).t(), matrix @ probs[0].reshape(4, -1).t())
        torch.testing.assert_close(out.sum(1), torch.ones(1, 7, 8, dtype=torch.float64))
    flat = ial_refine(graph.to_pyg(), probs[0].reshape(4, -1).t(), variant="scaled")
    torch.testing.assert_close(flat.t().reshape(1, 4, 7, 8),
                               ial_refine(graph, probs, variant="scaled"))


def test_ial_refine_row(graph):
    probs = torch.softmax(torch.randn(1, 3, 7, 8, dtype=torch.float64), 1)
    dense = graph.to_dense()
    expected = (dense / dense.sum(1, keepdim=True)) @ probs[0].reshape(3, -1).t()
    out = ial_refine(graph, probs, variant="row")
    torch.testing.assert_close(out[0].reshape(3, -1).t(), expected)
    with pytest.raises(ValueError, match="variant must be one of"):
        ial_refine(graph, probs, variant="sym")
