import pytest
import torch

from graphseg import WindowGraph, feature_graph
from graphseg.nn import A2GNN, GNNOutput, baseline_gnn

pytestmark = pytest.mark.usefixtures("each_backend")


def graph_with_features(seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(1, 5, 7, 8, generator=generator)
    graph = feature_graph(features, radius=2, threshold=1e-3)
    return WindowGraph(graph.weight, graph.offsets, x=features)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_window_and_pyg_inputs_agree(variant):
    torch.manual_seed(0)
    graph = graph_with_features()
    model = A2GNN(5, 3, hidden=16, variant=variant).eval()
    windowed = model(graph)
    assert isinstance(windowed, GNNOutput)
    assert windowed.logits.shape == (1, 3, 7, 8) and windowed.features.shape == (1, 16, 7, 8)
    flat = model(graph.to_pyg())
    assert flat.logits.shape == (56, 3)
    torch.testing.assert_close(flat.logits, windowed.logits[0].flatten(1).t(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(windowed.probs.sum(1), torch.ones(1, 7, 8))


def test_dropout_only_in_training():
    torch.manual_seed(0)
    graph = graph_with_features()
    model = A2GNN(5, 2, hidden=8)
    model.eval()
    torch.testing.assert_close(model(graph).logits, model(graph).logits)
    model.train()
    assert not torch.equal(model(graph).logits, model(graph).logits)


@pytest.mark.parametrize("kind", ["gcn", "gat", "agnn"])
def test_baselines_take_both_inputs(kind):
    torch.manual_seed(0)
    graph = graph_with_features()
    model = baseline_gnn(kind, 5, 16, 3).eval()
    windowed = model(graph)
    assert windowed.logits.shape == (1, 3, 7, 8) and windowed.features.shape == (1, 16, 7, 8)
    flat = model(graph.to_pyg())
    torch.testing.assert_close(flat.logits, windowed.logits[0].flatten(1).t())
    assert kind in repr(model)


def test_repr_and_bad_arguments():
    assert repr(A2GNN(5, 3)) == ("A2GNN(5, 3, hidden=256, num_layers=3, dropout=0.5, "
                                 "variant='official')")
    with pytest.raises(ValueError, match="graph has no node features x"):
        A2GNN(5, 3)(WindowGraph(torch.rand(1, 8, 4, 4), graph_with_features().offsets[:8]))
    with pytest.raises(TypeError, match="graph must be a WindowGraph with node features or a "
                                        "torch_geometric Data"):
        A2GNN(5, 3)(torch.rand(4, 5))
    with pytest.raises(ValueError, match="dropout must be in"):
        A2GNN(5, 3, dropout=1.0)
    with pytest.raises(TypeError, match="hidden must be a whole number"):
        A2GNN(5, 3, hidden=2.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        baseline_gnn("sage", 5, 16, 3)
    with pytest.raises(ValueError, match="hidden must be a multiple of the 8 GAT heads"):
        baseline_gnn("gat", 5, 12, 3)
