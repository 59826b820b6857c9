"""The command line of the paper recipes: --preset, --instances and UniA's --attention."""

import json

import numpy as np
import pytest
from PIL import Image
from scenes import write_scene_set

from graphseg.cli import main
from graphseg.pipelines import propagate_image


def _segment(root, out, *extra):
    return ["segment", "--images", str(root / "images"), "--annotations",
            str(root / "annotations.json"), "--out", str(out), "--quiet", *extra]


def test_segment_writes_instances_beside_the_labels(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set")
    out = tmp_path / "pred"
    assert main(_segment(root, out, "--weak", "box", "--instances")) == 0
    for name in ("img0", "img1", "img2"):
        labels = np.asarray(Image.open(out / f"{name}.png"))
        instances = np.asarray(Image.open(out / "instances" / f"{name}.png"))
        (entry,) = json.loads((out / "instances" / f"{name}.json").read_text())["instances"]
        assert entry["cls"] == 1 and entry["pixels"] == int((instances == 1).sum()) > 0
        assert np.all(labels[instances == 1] == 1)
    capsys.readouterr()
    assert main(_segment(root, tmp_path / "x", "--weak", "points", "--instances")) == 2
    assert "instances needs weak='boxes'" in capsys.readouterr().err


def test_segment_preset_runs_the_source_and_refuses_unknown_ones(tmp_path, capsys,
                                                                  monkeypatch):
    from graphseg.pipelines import dataset

    seen = []
    original = dataset.segment_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs["preset"])
        return original(*args, **{**kwargs, "method": "harmonic"})

    monkeypatch.setattr(dataset, "segment_dataset", spy)
    monkeypatch.setattr("graphseg.pipelines.segment_dataset", spy)
    root = write_scene_set(tmp_path / "set")
    assert main(_segment(root, tmp_path / "pred", "--weak", "box", "--preset", "paper")) == 0
    assert seen == ["paper"]
    with pytest.raises(SystemExit):
        main(_segment(root, tmp_path / "pred", "--weak", "box", "--preset", "thesis"))
    assert "invalid choice: 'thesis'" in capsys.readouterr().err


def test_train_affinity_preset_trains_the_sources_window(tmp_path, monkeypatch):
    from graphseg.pipelines import affinity

    windows = []

    def spy(network, batches, **kwargs):
        windows.append((kwargs["radius"], kwargs["shape"], kwargs["variant"]))
        return [0.0]

    monkeypatch.setattr(affinity, "train_affinity", spy)
    root = write_scene_set(tmp_path / "set")
    for preset in ("paper", "official"):
        assert main(["train-affinity", "--images", str(root / "images"), "--annotations",
                     str(root / "annotations.json"), "--weak", "box", "--epochs", "1",
                     "--out", str(tmp_path / f"{preset}.pt"), "--quiet", "--preset",
                     preset]) == 0
    assert windows == [(5, "disk", "paper"), (4, "square", "official")]


def test_pseudo_labels_unia_from_token_features(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set")
    (root / "features").mkdir()
    for name in ("img0", "img1", "img2"):
        cams = np.load(root / "cams" / f"{name}.npy")
        image = np.asarray(Image.open(root / "images" / f"{name}.png").resize(
            cams.shape[::-1][:2], Image.BILINEAR), np.float32) / 255
        # centred colour as token features: colour-alike tokens attend to each other (the
        # walk then reaches 1.00 on every scene; uncentred [0, 1] colour attends everywhere)
        np.save(root / "features" / f"{name}.npy",
                8 * np.moveaxis(image - image.mean((0, 1)), -1, 0))
    out = tmp_path / "unia"
    args = ["pseudo-labels", "--images", str(root / "images"), "--cams", str(root / "cams"),
            "--out", str(out), "--quiet", "--method", "unia"]
    assert main([*args, "--attention", str(root / "features")]) == 0
    for name in ("img0", "img1", "img2"):  # the library call on the files read
        pred = np.asarray(Image.open(out / f"{name}.png"))
        probs = propagate_image(Image.open(root / "images" / f"{name}.png"), method="unia",
                                cams=np.load(root / "cams" / f"{name}.npy"),
                                attention=np.load(root / "features" / f"{name}.npy"))
        assert np.array_equal(pred, probs[0].argmax(0).numpy())
        truth = np.asarray(Image.open(root / "masks" / f"{name}.png"))
        assert (pred == truth).mean() > 0.95
    capsys.readouterr()
    assert main(args) == 2
    assert "--attention" in capsys.readouterr().err
