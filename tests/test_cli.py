import os
import subprocess
import sys

import pytest
from PIL import Image
from scenes import write_scene_set

from graphseg._io import atomic_path
from graphseg.cli import main


def test_demo_writes_figure(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nodes 262,144" in out and "edges 20,793,680" in out
    assert "scribbles propagated" in out and "reaching 100% of the pixels" in out
    for name in ("pixel_graph.png", "propagation.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixel_graph.png", "propagation.png"]


def test_demo_bad_radius_is_reported(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--radius", "0"]) == 2
    assert "radius must be > 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "graphseg", "demo", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--out" in result.stdout


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.png"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")
    assert not list(tmp_path.iterdir())
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


# --- segment / evaluate ---------------------------------------------------------------------

def _segment_args(root, out, *extra):
    return ["segment", "--images", str(root / "images"), "--annotations",
            str(root / "annotations.json"), "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(("weak", "method"), [("box", None), ("boxes", "harmonic"),
                                              ("points", None), ("points", "random-walk")])
def test_segment_writes_every_image(tmp_path, capsys, weak, method):
    import numpy as np
    from PIL import Image

    root = write_scene_set(tmp_path / "set")
    out = tmp_path / "pred"
    args = _segment_args(root, out, "--weak", weak) + (["--method", method] if method else [])
    assert main(args) == 0
    assert "segmented 3 of 3" in capsys.readouterr().out
    # the default method of a folder of boxes learns across it and keeps its network there
    kept = ["box_network.pt"] if weak == "box" and method is None else []
    assert sorted(os.listdir(out)) == kept + ["img0.png", "img1.png", "img2.png"]
    for name in sorted(os.listdir(out))[len(kept):]:
        with Image.open(out / name) as pred, Image.open(root / "masks" / name) as mask:
            assert pred.mode == "L"
            pred, mask = np.asarray(pred), np.asarray(mask)
        assert pred.shape == mask.shape and set(np.unique(pred)) <= {0, 1}
        assert (pred == mask).mean() > 0.95


def test_segment_reports_a_corrupt_image(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set")
    (root / "images" / "img1.png").write_bytes(b"garbage, not a PNG")
    out = tmp_path / "pred"
    assert main(_segment_args(root, out, "--weak", "box")) == 1
    captured = capsys.readouterr()
    assert "img1" in captured.out + captured.err
    assert "segmented 2 of 3" in captured.out and "1 failed" in captured.out
    assert sorted(os.listdir(out)) == ["box_network.pt", "img0.png", "img2.png"]
    # resume writes nothing new (the network is reused) and still fails on the corrupt image
    stamps = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)}
    assert main(_segment_args(root, out, "--weak", "box", "--resume")) == 1
    assert {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)} == stamps


def test_segment_usage_errors_exit_2(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set")
    out = tmp_path / "pred"
    missing = tmp_path / "nowhere.json"
    args = ["segment", "--images", str(root / "images"), "--annotations", str(missing),
            "--weak", "box", "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "graphseg segment: error" in err and str(missing) in err
    assert main(_segment_args(root, out, "--weak", "points", "--method", "grabcut")) == 2
    assert "method" in capsys.readouterr().err
    (root / "images" / "img2.png").unlink()  # listed in the annotations, file gone
    assert main(_segment_args(root, out, "--weak", "box")) == 2
    assert "img2" in capsys.readouterr().err
    assert not out.exists() or not os.listdir(out)
    with pytest.raises(SystemExit) as exit_info:
        main(_segment_args(root, out, "--weak", "clicks"))
    assert exit_info.value.code == 2
    assert main(_segment_args(root, out, "--weak", "tags")) == 2
    assert "--cams" in capsys.readouterr().err


@pytest.mark.parametrize(("weak", "extra"), [("scribbles", []), ("tags", ["--cams"])])
def test_segment_scribbles_and_tags(tmp_path, capsys, weak, extra):
    import numpy as np
    from PIL import Image

    root = write_scene_set(tmp_path / "set")
    out = tmp_path / "pred"
    extra = [*extra, str(root / "cams")] if extra else []
    assert main(_segment_args(root, out, "--weak", weak, *extra)) == 0
    assert "segmented 3 of 3" in capsys.readouterr().out
    for name in sorted(os.listdir(root / "masks")):
        with Image.open(out / name) as pred, Image.open(root / "masks" / name) as mask:
            assert (np.asarray(pred) == np.asarray(mask)).mean() > 0.95


def test_segment_under_torchrun_equals_one_process(tmp_path):
    # two ranks on the gloo backend over loopback, each segmenting its shard
    root = write_scene_set(tmp_path / "set")
    (root / "images" / "img1.png").write_bytes(b"not an image")
    single, ranked = tmp_path / "single", tmp_path / "ranked"
    assert main(_segment_args(root, single, "--weak", "points", "--method", "a2gnn")) == 1
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "graphseg", *_segment_args(root, ranked, "--weak", "points", "--method",
                                          "a2gnn")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0, result.stdout + result.stderr
    assert "segmented 2 of 3 images" in result.stdout and "with 2 processes" in result.stdout
    assert "1 failed" in result.stdout and "img1" in result.stdout + result.stderr
    assert sorted(os.listdir(ranked)) == sorted(os.listdir(single)) == ["img0.png", "img2.png"]
    for name in os.listdir(single):
        assert (ranked / name).read_bytes() == (single / name).read_bytes()


def test_evaluate_prints_json(tmp_path, capsys):
    import json
    import shutil

    root = write_scene_set(tmp_path / "set")
    pred = tmp_path / "pred"
    shutil.copytree(root / "masks", pred)
    assert main(["evaluate", "--pred", str(pred), "--masks", str(root / "masks"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert sorted(scores) == ["box_error", "error", "foreground_iou", "images", "miou",
                              "missing"]
    assert scores["images"] == 3 and scores["missing"] == []
    assert scores["miou"] == 1.0 and scores["error"] == 0.0 and scores["box_error"] is None
    (pred / "img2.png").unlink()
    args = ["evaluate", "--pred", str(pred), "--masks", str(root / "masks"), "--json",
            "--annotations", str(root / "annotations.json"), "--num-classes", "2"]
    assert main(args) == 1  # a mask without prediction
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == 2 and scores["missing"] == ["img2"]
    assert scores["box_error"] == 0.0
    assert main(args[:-5]) == 1
    out = capsys.readouterr().out
    assert "images 2: mIoU 100.00%" in out and "img2" in out


def test_segment_then_evaluate_cli(tmp_path, capsys):
    import json

    root = write_scene_set(tmp_path / "set")
    pred = tmp_path / "pred"
    assert main(_segment_args(root, pred, "--weak", "box")) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--masks", str(root / "masks"),
                 "--annotations", str(root / "annotations.json"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["foreground_iou"] >= 0.9 and scores["box_error"] <= 0.1


def test_evaluate_bad_folder_exits_2(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set", count=1)
    assert main(["evaluate", "--pred", str(tmp_path / "nowhere"), "--masks",
                 str(root / "masks")]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "option"), [("segment", "--annotations"),
                                                 ("evaluate", "--masks")])
def test_module_entry_point_help_of_pipelines(command, option):
    result = subprocess.run([sys.executable, "-m", "graphseg", command, "--help"],
                            capture_output=True, text=True, check=True)
    assert option in result.stdout and "example: graphseg" in result.stdout


# --- train-affinity / segment --checkpoint --------------------------------------------------

def _train_args(root, out, *extra):
    return ["train-affinity", "--images", str(root / "images"), "--annotations",
            str(root / "annotations.json"), "--out", str(out), "--epochs", "2", "--size", "64",
            "--quiet", *extra]


def test_train_affinity_then_segment_with_the_checkpoint(tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image

    root = write_scene_set(tmp_path / "set")
    checkpoint = tmp_path / "affinity.pt"
    assert main(_train_args(root, checkpoint, "--weak", "box")) == 0
    out = capsys.readouterr().out
    assert "trained on 3 of 3 images: 2 epochs" in out and str(checkpoint) in out
    assert int(torch.load(checkpoint, weights_only=True)["epochs_trained"]) == 2
    assert main(_train_args(root, checkpoint, "--weak", "box", "--epochs", "3",
                            "--resume")) == 0
    assert "3 epochs" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert main(_segment_args(root, pred, "--weak", "box", "--method", "a2gnn",
                              "--checkpoint", str(checkpoint))) == 0
    assert "segmented 3 of 3" in capsys.readouterr().out
    assert sorted(os.listdir(pred)) == ["img0.png", "img1.png", "img2.png"]
    for name in os.listdir(pred):
        with Image.open(pred / name) as labels, Image.open(root / "masks" / name) as mask:
            labels, mask = np.asarray(labels), np.asarray(mask)
        assert labels.shape == mask.shape and set(np.unique(labels)) <= {0, 1}
        assert (labels == mask).mean() > 0.8
    # a checkpoint with a method that does not use it is a usage error
    assert main(_segment_args(root, tmp_path / "other", "--weak", "box", "--checkpoint",
                              str(checkpoint))) == 2
    assert "a2gnn" in capsys.readouterr().err


def test_train_affinity_reports_a_corrupt_image(tmp_path, capsys):
    import torch

    root = write_scene_set(tmp_path / "set")
    (root / "images" / "img1.png").write_bytes(b"garbage, not a PNG")
    checkpoint = tmp_path / "affinity.pt"
    assert main(_train_args(root, checkpoint, "--weak", "points", "--epochs", "1")) == 1
    captured = capsys.readouterr()
    assert "img1" in captured.out + captured.err
    assert "trained on 2 of 3 images" in captured.out and "1 failed" in captured.out
    assert int(torch.load(checkpoint, weights_only=True)["epochs_trained"]) == 1


def test_train_affinity_learns_from_label_maps_of_a_folder(tmp_path, capsys):
    import shutil

    import torch

    root = write_scene_set(tmp_path / "set")
    # the ground truth stands in for pseudo-labels; one image has none: reported, left out
    targets = tmp_path / "targets"
    shutil.copytree(root / "masks", targets)
    (targets / "img2.png").unlink()
    checkpoint = tmp_path / "affinity.pt"
    assert main(_train_args(root, checkpoint, "--weak", "box", "--targets", str(targets),
                            "--band", "1")) == 1
    captured = capsys.readouterr()
    assert "img2" in captured.err and "no label map" in captured.err
    assert "trained on 2 of 3 images" in captured.out
    assert int(torch.load(checkpoint, weights_only=True)["epochs_trained"]) == 2
    # --band without --targets, or a folder that is not one, are usage errors
    assert main(_train_args(root, tmp_path / "b.pt", "--weak", "box", "--band", "1")) == 2
    assert "--band applies to --targets only" in capsys.readouterr().err
    assert main(_train_args(root, tmp_path / "b.pt", "--weak", "box", "--targets",
                            str(tmp_path / "missing"))) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "b.pt").exists()


def test_train_affinity_usage_errors_exit_2(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set", count=1)
    checkpoint = tmp_path / "affinity.pt"
    assert main(_train_args(root, checkpoint, "--weak", "box", "--epochs", "0")) == 2
    assert "graphseg train-affinity: error" in capsys.readouterr().err
    (root / "images" / "img0.png").write_bytes(b"garbage")
    assert main(_train_args(root, checkpoint, "--weak", "box")) == 2
    assert "no image gave seeds" in capsys.readouterr().err
    assert not checkpoint.exists()


def test_help_of_train_affinity_and_checkpoint(capsys):
    for command, expected in (("train-affinity", "example: graphseg train-affinity"),
                              ("segment", "--checkpoint")):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert expected in capsys.readouterr().out


def test_segment_figures_and_json_summary(tmp_path, capsys):
    import json

    from PIL import Image

    root = write_scene_set(tmp_path / "set")
    (root / "images" / "img1.png").write_bytes(b"not an image")
    figures = tmp_path / "figures"
    assert main(_segment_args(root, tmp_path / "pred", "--weak", "points", "--json",
                              "--figures", str(figures))) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["command"] == "segment" and summary["items"] == 3
    assert summary["succeeded"] == 2 and summary["processes"] == 1
    assert [f["name"] for f in summary["failed"]] == ["img1"]
    assert "img1.png" in summary["failed"][0]["reason"]
    assert sorted(os.listdir(figures)) == ["img0.png", "img2.png"]
    with Image.open(figures / "img0.png") as figure:
        assert figure.width > 2 * figure.height


# --- propagate / pseudo-labels ----------------------------------------------------------------

def _propagate_args(command, root, out, *extra):
    return [command, "--images", str(root / "images"), "--out", str(out), "--quiet", *extra]


def test_propagate_seeds_and_cams(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    out = tmp_path / "harmonic"
    assert main(_propagate_args("propagate", root, out, "--seeds", str(root / "seeds"),
                                "--method", "harmonic")) == 0
    assert "propagated 3 of 3 images" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"img{i}{s}" for i in range(3)
                                             for s in (".npy", ".png"))
    for i in range(3):
        with Image.open(out / f"img{i}.png") as pred, \
                Image.open(root / "masks" / f"img{i}.png") as mask:
            assert (np.asarray(pred) == np.asarray(mask)).mean() > 0.95
        assert np.load(out / f"img{i}.npy").shape == (2, 40, 48)
    walk = tmp_path / "walk"
    assert main(_propagate_args("propagate", root, walk, "--cams", str(root / "cams"),
                                "--method", "random-walk", "--preset", "irn", "--boundaries",
                                str(root / "boundaries"), "--stride", "1", "--format", "pt",
                                "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"command": "propagate", "items": 3, "succeeded": 3, "out": str(walk),
                       "processes": 1, "failed": []}
    assert sorted(p.suffix for p in walk.iterdir()) == [".png"] * 3 + [".pt"] * 3


def test_propagate_reports_missing_inputs_and_usage_errors(tmp_path, capsys):
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    (root / "seeds" / "img2.png").unlink()
    out = tmp_path / "out"
    assert main(_propagate_args("pseudo-labels", root, out, "--seeds", str(root / "seeds"),
                                "--method", "label-spreading")) == 1
    captured = capsys.readouterr()
    assert "img2" in captured.out + captured.err
    assert "propagated 2 of 3 images" in captured.out and "1 failed" in captured.out
    assert sorted(os.listdir(out)) == ["img0.png", "img1.png"]  # labels only
    for extra, message in (
            (["--seeds", str(root / "seeds"), "--preset", "psa"], "no preset"),
            (["--cams", str(root / "cams"), "--preset", "irn"], "--boundaries"),
            (["--cams", str(root / "nowhere")], "cams folder")):
        assert main(_propagate_args("propagate", root, tmp_path / "x", "--method",
                                    "random-walk", *extra)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not os.listdir(tmp_path / "x")
    with pytest.raises(SystemExit):  # --seeds and --cams exclude each other
        main(_propagate_args("propagate", root, out, "--method", "crf", "--seeds", "a",
                             "--cams", "b"))


def _torchrun(*args):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "graphseg", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_pseudo_labels_under_torchrun_equals_one_process(tmp_path):
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    (root / "images" / "img1.png").write_bytes(b"not an image")
    single, ranked = tmp_path / "single", tmp_path / "ranked"
    args = ("--cams", str(root / "cams"), "--method", "random-walk", "--preset", "a2gnn",
            "--probabilities", "npy")
    assert main(_propagate_args("pseudo-labels", root, single, *args)) == 1
    result = _torchrun(*_propagate_args("pseudo-labels", root, ranked, *args))
    assert result.returncode != 0, result.stdout + result.stderr
    assert "propagated 2 of 3 images" in result.stdout and "with 2 processes" in result.stdout
    assert "img1" in result.stdout + result.stderr
    assert sorted(os.listdir(ranked)) == sorted(os.listdir(single)) == [
        "img0.npy", "img0.png", "img2.npy", "img2.png"]
    for name in os.listdir(single):
        assert (ranked / name).read_bytes() == (single / name).read_bytes()


def test_train_affinity_under_torchrun(tmp_path):
    import torch

    from graphseg.pipelines import load_affinity

    root = write_scene_set(tmp_path / "set")
    checkpoint = tmp_path / "affinity.pt"
    result = _torchrun(*_train_args(root, checkpoint, "--weak", "box"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trained on 3 of 3 images with 2 processes: 2 epochs" in result.stdout
    assert result.stdout.count("trained on") == 1  # rank 0 reports
    model = load_affinity(checkpoint)
    assert int(model.epochs_trained) == 2
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --- graph / bench ----------------------------------------------------------------------------

def test_graph_from_a_checkpoint_with_json(tmp_path, capsys):
    import json

    import torch

    from graphseg.graph import load_graph
    from graphseg.nn.train import save_checkpoint
    from graphseg.pipelines import affinity_model

    root = write_scene_set(tmp_path / "set", count=2)
    checkpoint = tmp_path / "affinity.pt"
    save_checkpoint(affinity_model(), checkpoint)
    out = tmp_path / "graphs"
    images = [str(root / "images" / "img0.png"), str(root / "images" / "img1.png"),
              str(tmp_path / "missing.png")]
    assert main(["graph", *images, "--out", str(out), "--checkpoint", str(checkpoint),
                 "--radius", "2", "--shape", "square", "--format", "window", "--json",
                 "--quiet"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["succeeded"] == 2 and [f["name"] for f in summary["failed"]] == ["missing"]
    graph = load_graph(out / "img0.pt")
    model = affinity_model()
    with torch.no_grad():
        expected = model.to_graph(torch.zeros(1, 3, 40, 48), radius=2, shape="square")
    assert graph.weight.shape == expected.weight.shape and graph.weight.shape[1] == 24
    assert main(["graph", images[0], "--out", str(out), "--checkpoint", str(checkpoint),
                 "--superpixels", "10"]) == 2
    assert "--superpixels" in capsys.readouterr().err


def test_bench_runs_a_benchmark_and_collects_json(tmp_path, capsys):
    import json

    out = tmp_path / "bench.jsonl"
    assert main(["bench", "--only", "losses", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "ran 1 of 1 benchmarks" in text and str(out) in text
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["benchmark"] == "losses" for r in records)
    assert any("seconds" in key for r in records for key in r)


@pytest.mark.parametrize("command", ["propagate", "pseudo-labels", "bench", "graph"])
def test_help_of_the_new_commands(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert f"example: graphseg {command}" in help_text and "--json" in help_text


# --- what a new user runs into: wrong options, damaged outputs, clashing names, signals ------

def _annotated_set(tmp_path, num_classes, cls):
    """The generated set with its points relabelled: foreground class ``cls``."""
    import json

    root = write_scene_set(tmp_path / "set")
    document = json.loads((root / "annotations.json").read_text())
    document["num_classes"] = num_classes
    for entry in document["images"].values():
        for point in entry["points"]:
            point["cls"] = cls if point["cls"] else 0
    (root / "annotations.json").write_text(json.dumps(document))
    return root


def test_more_classes_than_a_png_holds_is_refused_up_front(tmp_path, capsys):
    root = _annotated_set(tmp_path, 301, 300)
    out = tmp_path / "out"
    assert main(_segment_args(root, out, "--weak", "points")) == 2
    assert "num_classes is 301" in capsys.readouterr().err
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--radius", "0"], "radius must be > 0"),
    (["--shape", "foo"], "shape must be one of"),
    (["--kernel", "bilateral"], "--kernel must be one of"),
    (["--superpixels", "0"], "--superpixels must be > 0"),  # wrote a pixel graph
    (["--sigma-rgb", "-1"], "--sigma-rgb must be > 0"),
])
def test_graph_options_are_usage_errors_before_any_image(tmp_path, capsys, args, message):
    root = write_scene_set(tmp_path / "set", count=1)
    out = tmp_path / "graphs"
    assert main(["graph", str(root / "images" / "img0.png"), "--out", str(out), "--quiet",
                 *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_graph_refuses_images_that_share_a_name(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set", count=2)
    for folder in ("dupA", "dupB"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.png").write_bytes((root / "images" / "img0.png").read_bytes())
    out = tmp_path / "graphs"
    assert main(["graph", str(tmp_path / "dupA" / "x.png"), str(tmp_path / "dupB" / "x.png"),
                 "--out", str(out), "--quiet"]) == 2
    assert "share the names ['x']" in capsys.readouterr().err
    assert not out.exists()


def test_an_ambiguous_image_name_fails_alone(tmp_path, capsys):
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    with Image.open(root / "images" / "img1.png") as image:
        image.convert("RGB").save(root / "images" / "img1.jpg")
    out = tmp_path / "out"
    assert main(_propagate_args("pseudo-labels", root, out, "--seeds", str(root / "seeds"),
                                "--method", "harmonic")) == 1
    captured = capsys.readouterr()
    assert "image name 'img1' is ambiguous: img1.jpg, img1.png" in captured.err
    assert sorted(os.listdir(out)) == ["img0.png", "img2.png"]


@pytest.mark.parametrize(("args", "message"), [
    (["--stride", "0"], "stride must be > 0"),
    (["--num-classes", "0"], "num_classes must be > 0"),
    (["--num-classes", "300"], "num_classes is 300"),
    (["--radius", "0"], "radius must be > 0"),
    (["--sigma-xy", "0"], "sigma_xy must be > 0"),
])
def test_propagate_options_are_usage_errors_before_any_image(tmp_path, capsys, args, message):
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    out = tmp_path / "out"
    assert main(_propagate_args("propagate", root, out, "--seeds", str(root / "seeds"),
                                "--method", "random-walk", *args)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or os.listdir(out) == []


def test_output_paths_that_cannot_be_written_are_usage_errors(tmp_path, capsys):
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    (tmp_path / "a-file").write_text("x")
    assert main(_propagate_args("propagate", root, tmp_path / "out", "--seeds",
                                str(root / "seeds"), "--method", "harmonic", "--figures",
                                str(tmp_path / "a-file"))) == 2
    err = capsys.readouterr().err
    assert "figures" in err and "is a file, not a folder" in err
    assert main(_train_args(root, tmp_path, "--weak", "box")) == 2  # --out is a folder
    err = capsys.readouterr().err
    assert "is a folder; give a file name" in err and ".tmp-" not in err


def test_segment_with_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    root = write_scene_set(tmp_path / "set", count=1)
    (tmp_path / "text.pt").write_text("101 not a checkpoint\n")
    assert main(_segment_args(root, tmp_path / "out", "--weak", "box", "--method", "a2gnn",
                              "--checkpoint", str(tmp_path / "text.pt"))) == 2
    err = capsys.readouterr().err
    assert "text.pt is not a graphseg affinity checkpoint" in err and "error: 101" not in err


def test_resume_redoes_damaged_and_incomplete_outputs(tmp_path, capsys):
    import numpy as np
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    out = tmp_path / "out"
    args = ("--seeds", str(root / "seeds"), "--method", "harmonic")
    assert main(_propagate_args("pseudo-labels", root, out, *args)) == 0
    whole = (out / "img0.png").read_bytes()
    (out / "img1.png").write_bytes(whole[: len(whole) // 2])  # truncated
    (out / "img2.png").write_bytes(b"")
    stamp = (out / "img0.png").stat().st_mtime_ns
    (out / ".img0.tmp-deadbeef.png").write_bytes(b"left by a killed run")
    assert main(_propagate_args("pseudo-labels", root, out, *args, "--resume")) == 0
    assert (out / "img0.png").stat().st_mtime_ns == stamp  # whole: kept
    assert sorted(os.listdir(out)) == ["img0.png", "img1.png", "img2.png"]
    with Image.open(out / "img1.png") as image:
        image.load()
    # asked for probabilities now: every image runs again and gets its .npy
    assert main(_propagate_args("pseudo-labels", root, out, *args, "--resume",
                                "--probabilities", "npy")) == 0
    assert sorted(os.listdir(out)) == sorted(f"img{i}{s}" for i in range(3)
                                             for s in (".npy", ".png"))
    assert np.load(out / "img2.npy").shape == (2, 40, 48)
    capsys.readouterr()


def test_label_spreading_takes_class_ids_with_gaps(tmp_path, capsys):
    import numpy as np
    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    for path in (root / "seeds").iterdir():  # VOC-like ids: background 0 and horse 13
        with Image.open(path) as image:
            seeds = np.asarray(image).copy()
        seeds[seeds == 1] = 13
        Image.fromarray(seeds).save(path)
    out = tmp_path / "out"
    assert main(_propagate_args("propagate", root, out, "--seeds", str(root / "seeds"),
                                "--method", "label-spreading")) == 0
    with Image.open(out / "img0.png") as pred, Image.open(root / "masks" / "img0.png") as mask:
        assert (np.asarray(pred) == np.asarray(mask) * 13).mean() > 0.95
    probs = np.load(out / "img0.npy")
    assert probs.shape == (14, 40, 48) and np.allclose(probs.sum(0), 1, atol=1e-5)


def test_cams_saved_channel_last_are_named_as_such(tmp_path, capsys):
    import numpy as np

    root = write_scene_set(tmp_path / "set", count=1)
    cams = np.load(root / "cams" / "img0.npy")
    np.save(root / "cams" / "img0.npy", np.moveaxis(np.concatenate([cams] * 3), 0, -1))
    assert main(_propagate_args("propagate", root, tmp_path / "out", "--cams",
                                str(root / "cams"), "--method", "crf")) == 1
    assert "looks channel-last (h, w, C)" in capsys.readouterr().err


def test_evaluate_refuses_255_in_a_prediction_and_names_both_maps(tmp_path, capsys):
    import numpy as np

    root = write_scene_set(tmp_path / "set", count=1)
    pred = tmp_path / "pred"
    pred.mkdir()
    with Image.open(root / "masks" / "img0.png") as mask:
        truth = np.asarray(mask)
    Image.fromarray(np.where(truth == 1, 255, 0).astype(np.uint8)).save(pred / "img0.png")
    # the object painted 255 used to score foreground IoU 1.0
    assert main(["evaluate", "--pred", str(pred), "--masks", str(root / "masks")]) == 2
    assert "holds the value 255, which is not a class id" in capsys.readouterr().err
    Image.fromarray(truth[:, :-1]).save(pred / "img0.png")
    assert main(["evaluate", "--pred", str(pred), "--masks", str(root / "masks")]) == 2
    err = capsys.readouterr().err
    assert "prediction" in err and "its ground truth has size 40x48" in err


def test_sigterm_leaves_complete_files_and_one_line(tmp_path):
    import signal
    import time

    from scenes import write_seed_maps

    root = write_seed_maps(write_scene_set(tmp_path / "set"))
    images = root / "images"
    for i in range(3, 40):  # enough images that the run is still going when stopped
        (images / f"img{i}.png").write_bytes((images / "img0.png").read_bytes())
        (root / "seeds" / f"img{i}.png").write_bytes((root / "seeds" / "img0.png").read_bytes())
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "graphseg", *_propagate_args(
            "pseudo-labels", root, out, "--seeds", str(root / "seeds"), "--method", "crf")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and len(os.listdir(out)) >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "terminated" in stderr and "Traceback" not in stderr
    names = os.listdir(out)
    assert names and all(not n.startswith(".") for n in names)
    for name in names:
        with Image.open(out / name) as image:
            image.load()


def test_train_affinity_size_beyond_memory_is_refused_before_any_image(tmp_path, capsys):
    import time

    root = write_scene_set(tmp_path / "set")
    start = time.perf_counter()
    # --size 100000 asked for about 120 GB only after building every image's seeds
    args = _train_args(root, tmp_path / "a.pt", "--weak", "box")
    args[args.index("--size") + 1] = "100000"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "training the affinity CNN at size=100000 would need about" in err
    assert "lower size" in err and time.perf_counter() - start < 10
    assert not (tmp_path / "a.pt").exists()
