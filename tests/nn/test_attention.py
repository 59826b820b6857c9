import math

import pytest
import torch

from graphseg import WindowGraph, feature_graph
from graphseg.nn import AffinityAttentionConv, affinity_attention

pytestmark = pytest.mark.usefixtures("each_backend")


def brute_attention(x, weight, offsets, cos_scale, edge_scale, variant, threshold):
    """Pixel by pixel: S(i), the logits of thesis Eq. 3.17–3.19 / the official code, softmax."""
    batch, channels, height, width = x.shape
    out = torch.zeros_like(x)
    for b in range(batch):
        for y in range(height):
            for xx in range(width):
                hi = x[b, :, y, xx]
                members = [(hi, 1.0)]
                for k, (dy, dx) in enumerate(offsets.tolist()):
                    if 0 <= y + dy < height and 0 <= xx + dx < width:
                        members.append((x[b, :, y + dy, xx + dx], float(weight[b, k, y, xx])))
                logits, values = [], []
                for hj, edge in members:
                    norm = max(float(hi.norm()), 1e-12) * max(float(hj.norm()), 1e-12)
                    cos = float(hi @ hj) / norm
                    if variant == "paper":
                        if edge <= threshold:
                            continue
                        logits.append(cos_scale * cos + edge_scale * (cos > 0) * edge)
                    else:
                        if cos < 0:
                            continue
                        logits.append(cos_scale * cos + edge_scale * edge)
                    values.append(hj)
                top = max(logits)
                exps = [math.exp(v - top) for v in logits]
                out[b, :, y, xx] = sum(e * v for e, v in zip(exps, values, strict=True)) / sum(exps)
    return out


def tiny_graph(seed, shape="square", radius=1, threshold=None):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 4, 5, 6, generator=generator, dtype=torch.float64)
    graph = feature_graph(features, radius=radius, shape=shape, threshold=threshold)
    # signed node features so that some cosines are negative (the official mask M)
    x = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    return graph, x


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize(("shape", "radius"), [("square", 1), ("disk", 2)])
def test_window_layer_equals_brute_force(variant, shape, radius):
    graph, x = tiny_graph(0, shape, radius, threshold=0.3)
    out = affinity_attention(x, graph, cos_scale=0.7, edge_scale=2.0, variant=variant,
                             threshold=0.3)
    expected = brute_attention(x, graph.weight, graph.offsets, 0.7, 2.0, variant, 0.3)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_message_passing_equals_window_layer(variant):
    torch.manual_seed(1)
    graph, x = tiny_graph(1, "disk", 2, threshold=1e-3)
    graph = WindowGraph(graph.weight.float(), graph.offsets, self_weight=1.0)
    x = x.float()
    conv = AffinityAttentionConv(variant=variant, threshold=0.2)
    windowed = conv.forward_window(x, graph)
    pyg = graph.to_pyg()
    flat = x.permute(0, 2, 3, 1).reshape(-1, 3)
    message = conv(flat, pyg.edge_index, pyg.edge_weight)
    torch.testing.assert_close(message, windowed.permute(0, 2, 3, 1).reshape(-1, 3),
                               atol=1e-5, rtol=1e-5)


def test_gradients_and_zero_features():
    graph, x = tiny_graph(2)
    x[0, :, 1, 1] = 0  # a dead node: cosine 0 with everything, still attends to itself
    x.requires_grad_(True)
    conv = AffinityAttentionConv(variant="official").double()
    out = conv.forward_window(x, graph)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and conv.cos_scale.grad is not None
    assert torch.autograd.gradcheck(
        lambda v: affinity_attention(v, graph, cos_scale=0.5, variant="paper"),
        (torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True),))


def test_rows_are_convex_combinations():
    graph, _ = tiny_graph(3)
    ones = torch.ones(2, 1, 5, 6, dtype=torch.float64)
    for variant in ("paper", "official"):
        torch.testing.assert_close(affinity_attention(ones, graph, variant=variant), ones)


def test_parameters_and_repr():
    torch.manual_seed(0)
    official = AffinityAttentionConv()
    assert 0 <= float(official.cos_scale.detach()) <= 1
    assert float(AffinityAttentionConv(variant="paper").cos_scale.detach()) == 1.0
    assert repr(official) == ("AffinityAttentionConv(variant='official', edge_scale=10.0, "
                              "threshold=0.001)")


def test_bad_arguments():
    graph, x = tiny_graph(4)
    with pytest.raises(ValueError, match="variant must be one of"):
        AffinityAttentionConv(variant="github")
    with pytest.raises(TypeError, match="graph must be a WindowGraph, got Data"):
        affinity_attention(x, graph.to_pyg())
    with pytest.raises(ValueError, match=r"x and graph weight must share batch size"):
        affinity_attention(x[:, :, :4], graph)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        affinity_attention(x, graph, threshold=-1.0)
