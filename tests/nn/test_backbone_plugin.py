"""Backbones named by a string (graphseg.nn.build_backbone) with weights from a local file, in
the affinity CNN, its checkpoints, train_affinity_dataset and the train-affinity command.

The networks are built here: ``f"{__name__}:tiny_backbone"`` names a builder of this module
(already imported, so importing it again by name finds it). torchvision and timm are checked
with stand-ins of their entry points, and with the real packages where they import."""

import copy
import sys
import types

import pytest
import torch
from scenes import H, W, write_scene_set
from torch import nn

from graphseg.cli import main
from graphseg.data import SegmentationFolder
from graphseg.nn import AffinityCNN, BackboneAdapter, build_backbone
from graphseg.pipelines import affinity as affinity_module
from graphseg.pipelines import affinity_model, load_affinity, train_affinity_dataset
from graphseg.pipelines.affinity import BACKBONE_KEY

SPEC = f"{__name__}:tiny_backbone"
CHANNELS = (6, 8, 10)


def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyStages(nn.Module):
    """Three stages at strides 2, 4, 8 after a stride-2 stem."""

    def __init__(self, widths=CHANNELS):
        super().__init__()
        self.stem = _conv(3, 4, 2)
        self.stage1 = _conv(4, widths[0], 1)
        self.stage2 = _conv(widths[0], widths[1], 2)
        self.stage3 = _conv(widths[1], widths[2], 2)

    def forward(self, image):
        a = self.stage1(self.stem(image))
        b = self.stage2(a)
        return [a, b, self.stage3(b)]


class TwoMaps(TinyStages):
    def forward(self, image):
        return super().forward(image)[:2]


def tiny_backbone():
    return TinyStages()


def declared_backbone():
    network = TinyStages()
    network.out_channels = CHANNELS
    return network


def misdeclared_backbone():
    network = TinyStages()
    network.out_channels = (6, 8, 11)
    return network


def two_maps():
    return TwoMaps()


def not_a_module():
    return 42


NOT_CALLABLE = 3


class FullNetwork(nn.Module):
    """A classifier whose stages sit in one nn.Sequential, as in timm's models."""

    def __init__(self):
        super().__init__()
        self.stem = _conv(3, 4, 2)
        self.stages = nn.Sequential(_conv(4, 6, 1), _conv(6, 8, 2), _conv(8, 10, 2))
        self.head = nn.Linear(10, 5)


class FlatStages(nn.Module):
    """FullNetwork's feature extractor the way timm's features_only builds one: the top-level
    Sequential flattened into stages_0..2, the head left out."""

    def __init__(self):
        super().__init__()
        full = FullNetwork()
        self.stem = full.stem
        for i, stage in enumerate(full.stages):
            self.add_module(f"stages_{i}", stage)

    def forward(self, image):
        a = self.stages_0(self.stem(image))
        b = self.stages_1(a)
        return [a, b, self.stages_2(b)]


def flat_backbone():
    return FlatStages()


def _randomised(network, seed):
    """``network`` with random weights and batch-norm statistics (none left at their
    defaults, so a missed entry shows)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in network.state_dict().items():
            if value.is_floating_point():
                low = 0.5 if key.endswith("running_var") else -0.5
                value.copy_(torch.rand(value.shape, generator=generator) + low)
    return network


def _assert_holds(state, network):
    own = network.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory):
    return write_scene_set(tmp_path_factory.mktemp("scenes"))


@pytest.fixture
def weights(tmp_path):
    """A file of random TinyStages weights, and its state dict."""
    state = _randomised(TinyStages(), 1).state_dict()
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    return path, state


# --- build_backbone -------------------------------------------------------------------------

def test_user_backbone_reads_its_channels_from_a_dry_run():
    backbone = build_backbone(SPEC)
    assert isinstance(backbone, BackboneAdapter) and isinstance(backbone.module, TinyStages)
    assert backbone.out_channels == CHANNELS and backbone.spec == SPEC
    assert backbone.module.training and SPEC in repr(backbone)
    maps = backbone(torch.rand(2, 3, 32, 40))
    assert [tuple(m.shape) for m in maps] == [(2, 6, 16, 20), (2, 8, 8, 10), (2, 10, 4, 5)]
    assert build_backbone(f"{__name__}:declared_backbone").out_channels == CHANNELS
    with pytest.raises(ValueError, match=r"backbone .*declares the channels \(6, 8, 11\)"):
        build_backbone(f"{__name__}:misdeclared_backbone")


def test_weights_load_exactly(weights, tmp_path):
    path, state = weights
    assert not all(torch.equal(build_backbone(SPEC).module.state_dict()[k], v)
                   for k, v in state.items())
    loaded = build_backbone(SPEC, weights=path)
    _assert_holds(state, loaded.module)
    assert loaded.module.training  # the dry run's eval mode is undone
    # the same state dict inside a training checkpoint, with a classifier head beside it
    for key in ("state_dict", "model"):
        wrapped = tmp_path / f"{key}.pt"
        torch.save({key: {**state, "fc.weight": torch.zeros(5, 10), "fc.bias": torch.zeros(5)},
                    "epoch": torch.tensor(3)}, wrapped)
        _assert_holds(state, build_backbone(SPEC, weights=str(wrapped)).module)


def test_weights_of_a_flattened_feature_network(tmp_path):
    # a full classifier's checkpoint (stages.0, head) loads into its feature extractor
    full = _randomised(FullNetwork(), 2)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    loaded = build_backbone(f"{__name__}:flat_backbone", weights=tmp_path / "full.pt")
    own = loaded.module.state_dict()
    for key, value in full.state_dict().items():
        if key.startswith("head."):
            continue
        flat = key.replace("stages.", "stages_", 1)
        assert torch.equal(own[flat], value), key


@pytest.mark.parametrize("spec", [
    "nocolon", "torchvision:", ":tiny_backbone", f"{__name__}:", "no_such_module_xyz:build",
    f"{__name__}:missing", f"{__name__}:not_a_module", f"{__name__}:two_maps",
    f"{__name__}:NOT_CALLABLE", "my module:build", "torchvision:vgg16", "timm:hf-hub:org/model",
])
def test_bad_specs_name_the_backbone(spec):
    with pytest.raises(ValueError, match="backbone"):
        build_backbone(spec)


def test_bad_spec_types_and_messages():
    with pytest.raises(TypeError, match="backbone must be a string"):
        build_backbone(None)
    with pytest.raises(ValueError, match="resnet, resnext, wide_resnet"):
        build_backbone("torchvision:vgg16")
    with pytest.raises(ValueError, match="returned a int, not a torch.nn.Module"):
        build_backbone(f"{__name__}:not_a_module")
    with pytest.raises(ValueError, match="must return a list of 3"):
        build_backbone(f"{__name__}:two_maps")
    with pytest.raises(ValueError, match="No module named 'no_such_module_xyz'"):
        build_backbone("no_such_module_xyz:build")


def test_bad_weights_name_the_weights(weights, tmp_path):
    path, state = weights
    cases = {
        "shape": ({**state, "stage2.0.weight": torch.zeros(8, 7, 3, 3)}, "size mismatch"),
        "missing": ({k: v for k, v in state.items() if k != "stage3.0.bias"},
                    "lack entries .*stage3.0.bias"),
        "extra": ({**state, "stage1.3.weight": torch.zeros(2)}, "extra entries .*stage1.3"),
        "text": ({**state, "note": "not a tensor"}, "not a state dict: its entry 'note'"),
        "other network": (TinyStages(widths=(6, 8, 12)).state_dict(), "size mismatch"),
    }
    for bad, message in cases.values():
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=f"weights .*bad.pt .*{message}"):
            build_backbone(SPEC, weights=tmp_path / "bad.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="tensor.pt is not a weights file"):
        build_backbone(SPEC, weights=tmp_path / "tensor.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt is not a weights file"):
        build_backbone(SPEC, weights=tmp_path / "garbage.pt")
    with pytest.raises(FileNotFoundError, match="weights .*absent.pt does not exist"):
        build_backbone(SPEC, weights=tmp_path / "absent.pt")


# --- torchvision and timm -------------------------------------------------------------------

class StandInResNet(nn.Module):
    """torchvision's ResNet layout: stem, layer1..4 (strides 4..32), pooling, classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _conv(4, 4, 1)
        self.layer2 = _conv(4, 8, 2)
        self.layer3 = _conv(8, 16, 2)
        self.layer4 = _conv(16, 32, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)


def _stand_in_torchvision(calls):
    def get_model(name, **kwargs):
        calls.append((name, kwargs))
        if name != "resnet_standin":
            raise ValueError(f"Unknown model {name}")
        return StandInResNet()

    module = types.ModuleType("torchvision")
    module.models = types.SimpleNamespace(get_model=get_model)
    return module


def test_torchvision_resnets_give_layer2_to_layer4(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "torchvision", _stand_in_torchvision(calls))
    backbone = build_backbone("torchvision:resnet_standin")
    assert calls == [("resnet_standin", {"weights": None})]  # never a download
    assert backbone.out_channels == (8, 16, 32)
    assert not hasattr(backbone.module, "fc") and not hasattr(backbone.module, "avgpool")
    maps = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(m.shape[2:]) for m in maps] == [(8, 12), (4, 6), (2, 3)]
    resnet = _randomised(StandInResNet(), 3)
    torch.save(resnet.state_dict(), tmp_path / "resnet.pt")  # fc.* included
    loaded = build_backbone("torchvision:resnet_standin", weights=tmp_path / "resnet.pt")
    _assert_holds({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")},
                  loaded.module)
    with pytest.raises(ValueError, match="backbone 'torchvision:resnet_unknown'.*Unknown model"):
        build_backbone("torchvision:resnet_unknown")


def test_timm_networks_give_their_last_three_levels(monkeypatch):
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        network = FlatStages()
        network.feature_info = types.SimpleNamespace(channels=lambda: [6, 8, 10])
        return network

    stand_in = types.ModuleType("timm")
    stand_in.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", stand_in)
    backbone = build_backbone("timm:convnext_standin")
    assert calls == [("convnext_standin", {"pretrained": False, "features_only": True,
                                           "out_indices": (-3, -2, -1)})]
    assert backbone.out_channels == CHANNELS


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_a_package_that_fails_to_import_says_how_to_install_it(package, monkeypatch,
                                                                tmp_path):
    # PyPI's torchvision beside another torch build fails with a RuntimeError, timm with it
    (tmp_path / f"{package}.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, package, raising=False)
    with pytest.raises(ImportError, match=f"needs {package}.*RuntimeError: operator "
                                          f"torchvision::nms.*pip install {package}"):
        build_backbone(f"{package}:resnet18")
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=f"needs {package}"):
        build_backbone(f"{package}:resnet18")


def _installed(name):
    try:
        return pytest.importorskip(name)
    except Exception as error:  # e.g. torchvision built for another torch: RuntimeError
        pytest.skip(f"{name} does not import here: {type(error).__name__}: {error}")


def test_real_torchvision_resnet18(tmp_path):
    torchvision = _installed("torchvision")
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pt")
    backbone = build_backbone("torchvision:resnet18", weights=tmp_path / "resnet18.pt")
    assert backbone.out_channels == (128, 256, 512)
    _assert_holds({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")},
                  backbone.module)
    maps = backbone(torch.rand(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(128, 8, 8), (256, 4, 4), (512, 2, 2)]


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_real_timm_networks_load_a_classifier_checkpoint(name, tmp_path):
    timm = _installed("timm")
    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    backbone = build_backbone(f"timm:{name}", weights=tmp_path / "full.pt")
    features = timm.create_model(name, pretrained=False, features_only=True)
    assert backbone.out_channels == tuple(features.feature_info.channels()[-3:])
    with torch.no_grad():
        image = torch.rand(1, 3, 64, 64)
        expected = full.eval().forward_features(image)
        deepest = backbone.eval()(image)[-1]
    torch.testing.assert_close(deepest, expected)


# --- the affinity CNN, its checkpoints and training -----------------------------------------

def test_affinity_model_with_a_backbone(weights, tmp_path):
    path, state = weights
    model = affinity_model(backbone=SPEC)
    assert isinstance(model, AffinityCNN) and not model.training
    out = model(torch.rand(1, 3, 32, 32))
    assert out.affinity.shape == (1, 128, 16, 16) and out.nodes.shape == (1, 24, 16, 16)
    again, other = affinity_model(backbone=SPEC), affinity_model(backbone=SPEC, seed=1)
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(again.state_dict()[key], value), key
    assert not torch.equal(other.state_dict()["backbone.module.stem.0.weight"],
                           model.state_dict()["backbone.module.stem.0.weight"])
    _assert_holds(state, affinity_model(backbone=SPEC, backbone_weights=path).backbone.module)
    with pytest.raises(ValueError, match="backbone_weights .*give backbone too"):
        affinity_model(backbone_weights=path)


def test_state_dict_names_its_backbone(tmp_path):
    model = affinity_model(backbone=SPEC)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state[BACKBONE_KEY] == SPEC
    assert BACKBONE_KEY not in affinity_model().state_dict()
    # the same layers under another name are refused
    with pytest.raises(ValueError, match="saved with backbone .*tiny_backbone"):
        affinity_model(backbone=f"{__name__}:declared_backbone").load_state_dict(state)
    # a user network runs code when rebuilt: the checkpoint alone does not load it
    with pytest.raises(ValueError, match="pass backbone=.*tiny_backbone"):
        load_affinity(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="backbone is .*declared_backbone.*trained with"):
        load_affinity(tmp_path / "model.pt", backbone=f"{__name__}:declared_backbone")
    loaded = load_affinity(tmp_path / "model.pt", backbone=SPEC)
    assert loaded.backbone.spec == SPEC
    for bad, message in (("no_such_module_xyz:build", "cannot be built here.*no_such_module"),
                         (7, "names its backbone with a int")):
        torch.save({**state, BACKBONE_KEY: bad}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=message):
            load_affinity(tmp_path / "bad.pt", backbone=bad)


def test_training_writes_a_checkpoint_that_rebuilds_the_model(scene_root, weights, tmp_path,
                                                              monkeypatch):
    path, state = weights
    saved = []
    real_save = affinity_module.save_checkpoint

    def spy(model, target):
        saved.append(copy.deepcopy(model))
        real_save(model, target)

    monkeypatch.setattr(affinity_module, "save_checkpoint", spy)
    dataset = SegmentationFolder(scene_root, weak="boxes", with_mask=False)
    out = tmp_path / "affinity.pt"
    run = train_affinity_dataset(dataset, weak="boxes", out=out, epochs=1, size=48,
                                 progress=False, backbone=SPEC, backbone_weights=path)
    assert run.epochs == 1 and len(run.history) == 1 and len(saved) == 1
    assert torch.load(out, weights_only=True)[BACKBONE_KEY] == SPEC
    loaded = load_affinity(out, backbone=SPEC)
    assert loaded.backbone.spec == SPEC and int(loaded.epochs_trained) == 1
    trained = saved[0].eval()
    image = torch.rand(1, 3, H, W)
    with torch.no_grad():
        expected, got = trained(image), loaded(image)
    assert torch.equal(got.affinity, expected.affinity) and torch.equal(got.nodes, expected.nodes)
    # it started from the weights file: with a vanishing learning rate it is still there
    train_affinity_dataset(dataset, weak="boxes", out=tmp_path / "still.pt", epochs=1,
                           size=48, lr=1e-9, progress=False, backbone=SPEC,
                           backbone_weights=path)
    network = load_affinity(tmp_path / "still.pt", backbone=SPEC).backbone.module
    for name, parameter in network.named_parameters():
        torch.testing.assert_close(parameter, state[name], atol=1e-6, rtol=0)


def test_resume_keeps_the_backbone(scene_root, tmp_path):
    dataset = SegmentationFolder(scene_root, weak="boxes", with_mask=False)
    kwargs = dict(weak="boxes", size=48, progress=False)
    first = train_affinity_dataset(dataset, out=tmp_path / "a.pt", epochs=1, backbone=SPEC,
                                   **kwargs)
    second = train_affinity_dataset(dataset, out=tmp_path / "a.pt", epochs=2, resume=True,
                                    backbone=SPEC, **kwargs)
    assert len(second.history) == 1 and second.epochs == 2
    resumed = torch.load(tmp_path / "a.pt", weights_only=True)
    assert resumed[BACKBONE_KEY] == SPEC and int(resumed["epochs_trained"]) == 2
    straight = train_affinity_dataset(dataset, out=tmp_path / "b.pt", epochs=2, backbone=SPEC,
                                      **kwargs)
    assert straight.history == pytest.approx(first.history + second.history, rel=1e-4)
    uninterrupted = torch.load(tmp_path / "b.pt", weights_only=True)
    for key, value in uninterrupted.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(resumed[key].float(), value.float(), atol=1e-5), key
    stamp = (tmp_path / "a.pt").stat().st_mtime_ns
    for other, message in ((None, "trained with backbone .*tiny_backbone.*pass backbone="),
                           (f"{__name__}:declared_backbone",
                            "backbone is .*trained with .*tiny_backbone")):
        with pytest.raises(ValueError, match=message):
            train_affinity_dataset(dataset, out=tmp_path / "a.pt", epochs=3, resume=True,
                                   backbone=other, **kwargs)
    assert (tmp_path / "a.pt").stat().st_mtime_ns == stamp
    train_affinity_dataset(dataset, out=tmp_path / "c.pt", epochs=1, **kwargs)
    with pytest.raises(ValueError, match=r"None \(AFFINITY_ARCHITECTURE\)"):
        train_affinity_dataset(dataset, out=tmp_path / "c.pt", epochs=2, resume=True,
                               backbone=SPEC, **kwargs)


def test_cli_trains_with_a_backbone_and_graph_reads_it(scene_root, weights, tmp_path,
                                                       capsys):
    from graphseg.graph import load_graph

    path, _ = weights
    checkpoint = tmp_path / "affinity.pt"
    args = ["train-affinity", "--images", str(scene_root / "images"), "--annotations",
            str(scene_root / "annotations.json"), "--weak", "box", "--out", str(checkpoint),
            "--epochs", "1", "--size", "48", "--quiet"]
    assert main([*args, "--backbone", SPEC, "--backbone-weights", str(path)]) == 0
    assert "1 epochs" in capsys.readouterr().out
    assert torch.load(checkpoint, weights_only=True)[BACKBONE_KEY] == SPEC
    image = scene_root / "images" / "img0.png"
    graph_args = ["graph", str(image), "--out", str(tmp_path / "graphs"), "--checkpoint",
                  str(checkpoint), "--radius", "2", "--shape", "square", "--format", "window",
                  "--quiet"]
    # the checkpoint names code to run: it loads only when the user names it too
    assert main(graph_args) == 2
    assert "pass backbone=" in capsys.readouterr().err
    assert not (tmp_path / "graphs" / "img0.pt").exists()
    assert main([*graph_args, "--backbone", SPEC]) == 0
    graph = load_graph(tmp_path / "graphs" / "img0.pt")
    # the tiny network's finest map is at stride 2, its nodes the 24 channels of its maps
    assert graph.weight.shape == (1, 24, H // 2, W // 2) and graph.x.shape[1] == 24
    assert main([*args, "--backbone-weights", str(path)]) == 2
    assert "--backbone-weights needs --backbone" in capsys.readouterr().err
    assert main([*args, "--backbone", "nocolon"]) == 2
    assert "backbone must be" in capsys.readouterr().err


def test_cli_reports_a_missing_package(scene_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert main(["train-affinity", "--images", str(scene_root / "images"), "--annotations",
                 str(scene_root / "annotations.json"), "--weak", "box", "--out",
                 str(tmp_path / "a.pt"), "--epochs", "1", "--size", "48", "--quiet",
                 "--backbone", "timm:convnext_tiny"]) == 2
    assert "needs timm" in capsys.readouterr().err and not (tmp_path / "a.pt").exists()
