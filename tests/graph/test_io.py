"""Graph files (save_graph / load_graph) and the ``graphseg graph`` command."""

import numpy as np
import pytest
import torch
from PIL import Image

from graphseg.cli import main
from graphseg.graph import (
    WindowGraph,
    load_graph,
    pixel_graph,
    save_graph,
    superpixel_graph,
)


@pytest.fixture
def image():
    return torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))


def test_every_format_round_trips_the_edges(tmp_path, image):
    graph = pixel_graph(image, radius=2, self_weight=0.5)
    reference = graph.to_pyg()
    for fmt, name in (("pyg", "g.pt"), ("npz", "g.npz")):
        loaded = load_graph(save_graph(graph, tmp_path / name, format=fmt))
        assert loaded.num_nodes == 12 * 16
        assert torch.equal(loaded.edge_index, reference.edge_index)
        torch.testing.assert_close(loaded.edge_weight, reference.edge_weight)
        torch.testing.assert_close(loaded.pos, reference.pos.to(loaded.pos.dtype))
    window = load_graph(save_graph(graph, tmp_path / "w.pt", format="window"))
    assert isinstance(window, WindowGraph)
    assert torch.equal(window.weight, graph.weight) and torch.equal(window.offsets,
                                                                    graph.offsets)
    values = torch.rand(1, 2, 12, 16)
    torch.testing.assert_close(window.aggregate(values), graph.aggregate(values))
    # the pyg file needs no trusted classes
    state = torch.load(tmp_path / "g.pt", weights_only=True)
    assert isinstance(state, dict) and "edge_index" in state


def test_superpixel_graph_keeps_its_node_features(tmp_path, image):
    graph = superpixel_graph(image, n_segments=8)
    loaded = load_graph(save_graph(graph, tmp_path / "s.pt"))
    torch.testing.assert_close(loaded.x, graph.to_pyg().x)
    assert torch.equal(loaded.edge_index, graph.edge_index)


def test_bad_arguments(tmp_path, image):
    graph = pixel_graph(image, radius=1)
    with pytest.raises(ValueError, match="format must be one of"):
        save_graph(graph, tmp_path / "g.pt", format="csv")
    with pytest.raises(TypeError, match="format='window' needs a WindowGraph"):
        save_graph(graph.to_pyg(), tmp_path / "g.pt", format="window")
    with pytest.raises(TypeError, match="graph must be a WindowGraph"):
        save_graph("graph", tmp_path / "g.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a graph file"):
        load_graph(tmp_path / "other.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt"]


@pytest.mark.parametrize(("name", "content", "match"), [
    ("text.pt", b"101 hello", "is not a graph file .*torch.load could not read it"),
    ("empty.pt", b"", "is not a graph file .*torch.load could not read it"),
    ("garbage.npz", b"PK not a zip", "is not a graph file .*NumPy could not read it"),
    ("list.pt", None, "holds a list"),
    ("window.pt", {"kind": "graphseg_graph", "format": "window", "weight": torch.zeros(3)},
     "is not a valid graph file.*"),
    ("pyg.pt", {"kind": "graphseg_graph", "format": "pyg"}, "has no edge_index"),
])
def test_load_graph_refuses_what_save_graph_did_not_write(tmp_path, name, content, match):
    # a mismatched or garbage file raised RuntimeError, KeyError or EOFError from inside
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save([1, 2] if content is None else content, path)
    with pytest.raises(ValueError, match=match):
        load_graph(path)
    np.savez(tmp_path / "edges.npz", edge_weight=np.zeros(3))
    with pytest.raises(ValueError, match="lacks num_nodes or edge_index"):
        load_graph(tmp_path / "edges.npz")


def test_graph_command_converts_each_image_and_reports_failures(tmp_path, capsys):
    pixels = (np.random.default_rng(0).random((10, 14, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    out = tmp_path / "graphs"
    code = main(["graph", str(tmp_path / "good.png"), str(tmp_path / "corrupt.png"),
                 str(tmp_path / "missing.png"), "--out", str(out), "--radius", "2",
                 "--format", "window", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert "corrupt.png" in captured.err and "missing.png" in captured.err
    assert "wrote 1 of 3 graphs" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["good.pt"]
    loaded = load_graph(out / "good.pt")
    expected = pixel_graph(torch.from_numpy(pixels).permute(2, 0, 1).float()[None] / 255,
                           radius=2)
    torch.testing.assert_close(loaded.weight, expected.weight)
    assert main(["graph", str(tmp_path / "good.png"), "--out", str(out), "--superpixels", "6",
                 "--format", "npz", "--quiet"]) == 0
    assert load_graph(out / "good.npz").x.shape[1] == 9  # RGB, Lab, centroid, size
    assert main(["graph", str(tmp_path / "good.png"), "--out", str(out), "--superpixels", "6",
                 "--format", "window"]) == 2
    assert "--format window holds pixel graphs only" in capsys.readouterr().err
