"""``--cams`` beside boxes, points and scribbles: where it applies and the usage errors."""

import os

import pytest
from scenes import write_scene_set

from graphseg.cli import main


def _args(command, root, out, weak, *extra):
    return [command, "--images", str(root / "images"), "--annotations",
            str(root / "annotations.json"), "--weak", weak, "--out", str(out), "--quiet",
            *extra]


@pytest.mark.parametrize("weak", ["points", "scribbles"])
def test_segment_refuses_cams_for_points_and_scribbles(tmp_path, capsys, weak):
    root = write_scene_set(tmp_path / "set", count=1)
    out = tmp_path / "pred"
    assert main(_args("segment", root, out, weak, "--cams", str(root / "cams"))) == 2
    err = capsys.readouterr().err
    assert f"--cams does not apply to segment --weak {weak}" in err
    assert "train-affinity only" in err
    assert not out.exists()


def test_segment_boxes_with_cams_uses_the_confident_seeds(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set", count=1)
    out = tmp_path / "pred"
    assert main(_args("segment", root, out, "box", "--cams", str(root / "cams"),
                      "--method", "grabcut")) == 0
    assert "segmented 1 of 1" in capsys.readouterr().out
    assert os.listdir(out) == ["img0.png"]
    # a CAM file missing for an image fails that image
    (root / "cams" / "img0.npy").unlink()
    assert main(_args("segment", root, tmp_path / "again", "box", "--cams",
                      str(root / "cams"), "--method", "grabcut")) == 1


def test_train_affinity_reads_cams_beside_points(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set", count=1)
    out = tmp_path / "affinity.pt"
    assert main(_args("train-affinity", root, out, "points", "--cams", str(root / "cams"),
                      "--epochs", "1", "--size", "32")) == 0
    assert "trained on 1 of 1 images" in capsys.readouterr().out and out.exists()
    (root / "cams" / "img0.npy").unlink()
    assert main(_args("train-affinity", root, tmp_path / "b.pt", "points", "--cams",
                      str(root / "cams"), "--epochs", "1", "--size", "32")) == 2
    assert "no image gave seeds" in capsys.readouterr().err
