import pytest
import torch
from torch import nn

from graphseg import WindowGraph, feature_graph
from graphseg.nn import AffinityCNN, BackboneAdapter, ResNetBackbone, node_features


def small_model(stride=2):
    return AffinityCNN(ResNetBackbone(widths=(8, 8, 16), stem_width=8, stride=stride),
                       reductions=(4, 4, 8))


@pytest.mark.parametrize("stride", [2, 4, 8, 16])
def test_backbone_stride_and_default_head(stride):
    maps = ResNetBackbone(widths=(4, 4, 8), stem_width=4, stride=stride)(torch.rand(1, 3, 32, 48))
    assert [tuple(m.shape) for m in maps] == [(1, c, 32 // stride, 48 // stride)
                                              for c in (4, 4, 8)]
    assert all(bool((m >= 0).all()) for m in maps)


def test_default_model_shapes():
    torch.manual_seed(0)
    model = AffinityCNN()
    out = model(torch.rand(1, 3, 32, 40))
    assert out.affinity.shape == (1, 448, 4, 5)
    assert out.nodes.shape == (1, 448, 4, 5)
    assert model.affinity_channels == 448 and model.node_channels == 448
    assert "ResNetBackbone(widths=(64, 128, 256), stride=8)" in repr(model)


def test_node_features_eq_3_15():
    a = torch.rand(1, 2, 4, 4)
    b = torch.zeros(1, 3, 2, 2)
    b[0, :, 0, 0] = 1.0
    x = node_features([a, b])
    assert x.shape == (1, 5, 4, 4)
    up = torch.nn.functional.interpolate(b, size=(4, 4), mode="bilinear", align_corners=False)
    joint = torch.cat([a, up], 1)
    torch.testing.assert_close(x, joint / (joint.sum(1, keepdim=True) + 1e-5))
    zero = node_features([torch.zeros(1, 2, 3, 3)] * 3)
    assert torch.isfinite(zero).all() and float(zero.abs().sum()) == 0.0


def test_to_graph_is_eq_3_14():
    torch.manual_seed(0)
    model = small_model().eval()
    image = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        graph = model.to_graph(image, radius=2, threshold=0.3)
        out = model(image)
    assert isinstance(graph, WindowGraph) and graph.weight.shape == (1, 12, 8, 10)
    expected = feature_graph(out.affinity, radius=2, kind="l1", threshold=0.3)
    torch.testing.assert_close(graph.weight, expected.weight)
    torch.testing.assert_close(graph.x, out.nodes)
    assert bool(((graph.weight == 0) | (graph.weight > 0.3)).all())


class ThreeStages(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 5, 3, 2, 1)
        self.b = nn.Conv2d(5, 6, 3, 2, 1)
        self.c = nn.Conv2d(6, 7, 3, 2, 1)

    def forward(self, x):
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        return [a, b, torch.relu(self.c(b))]


def test_adapter_resizes_to_finest_map():
    model = AffinityCNN(ThreeStages(), backbone_channels=(5, 6, 7), reductions=(2, 3, 4))
    out = model(torch.rand(2, 3, 16, 16))
    assert out.affinity.shape == (2, 9, 8, 8) and out.nodes.shape == (2, 18, 8, 8)
    assert isinstance(model.backbone, BackboneAdapter)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone_channels must give the channels"):
        AffinityCNN(ThreeStages())
    with pytest.raises(ValueError, match=r"backbone map 1 must have shape \(B, 9, H, W\)"):
        AffinityCNN(ThreeStages(), backbone_channels=(5, 9, 7))(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="the backbone must return a list of 3 feature maps"):
        AffinityCNN(nn.Conv2d(3, 4, 1), backbone_channels=(4, 4, 4))(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="stride must be one of"):
        ResNetBackbone(stride=32)
    with pytest.raises(ValueError, match=r"image must have 1, 3 or 4 channels .*\(1, 2, 8, 8\)"):
        small_model()(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="normalize must be None or .imagenet., got .zscore."):
        AffinityCNN(normalize="zscore")
