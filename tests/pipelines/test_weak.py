"""End-to-end pipelines (graphseg.pipelines) on a tiny generated data set (tests/scenes.py)."""

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scenes import NAMES, H, W, make_scene, write_scene_set

from graphseg import metrics
from graphseg.data import SegmentationFolder
from graphseg.data.datasets import read_label_map
from graphseg.pipelines import (
    METHODS,
    PRESETS,
    A2GNNConfig,
    BoxSeeds,
    Failure,
    FinishConfig,
    IALConfig,
    PointSeeds,
    Preset,
    RegularizedConfig,
    ScribbleSeeds,
    TagSeeds,
    evaluate_folder,
    segment,
    segment_dataset,
    weak_seeds,
)
from graphseg.pipelines import dataset as dataset_module
from graphseg.seeds import box_interior

# small settings: every recipe at its defaults but fewer superpixels and epochs (a2gnn trains
# in a fraction of a second on these images, ial in about one), and no finishing
FAST = {weak: Preset({"boxes": BoxSeeds(), "points": PointSeeds(n_segments=300),
                      "scribbles": ScribbleSeeds(n_segments=300), "tags": TagSeeds()}[weak],
                     PRESETS[weak].method, FinishConfig(),
                     (A2GNNConfig(epochs=20, hidden=16, n_segments=300),
                      IALConfig(rounds=2, size=48, unary_steps=80, pairwise_steps=20,
                                n_segments=40),
                      RegularizedConfig(size=48, steps=60)))
        for weak in PRESETS}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = write_scene_set(tmp_path_factory.mktemp("scenes"))
    made = [make_scene(i) for i in range(len(NAMES))]
    return SimpleNamespace(root=root, images=[m[0] for m in made],
                           truths=[torch.from_numpy(m[1]).long() for m in made],
                           labels=[m[2] for m in made])


@pytest.fixture
def scene_copy(scenes, tmp_path):
    """A private copy of the data set that a test may damage."""
    return shutil.copytree(scenes.root, tmp_path / "set")


def foreground_iou(pred, truth):
    return metrics.foreground_iou(metrics.confusion_matrix(pred, truth, num_classes=2))


def listing(folder):
    """Every entry of a folder, hidden (temporary) files included."""
    return sorted(os.listdir(folder))


# --- segment: every method on every image ------------------------------------------------

# reached: grabcut / harmonic / random-walk 1.00 on every scene; a box filled entirely with
# foreground scores 0.58-0.64, an all-foreground map 0.19-0.30 and the expanded point seeds
# alone 0.27-0.39. The learned methods reached, per image over seeds 0-4 of their training
# (A²GNN's, IALConfig's, RegularizedConfig's) with the extension and the reference backend on
# one thread, the extension on two threads or on ATen's non-vectorised kernels, and the previous
# releases of the dependencies (numpy 2.3, scipy 1.16, scikit-image 0.25, OpenCV 4.14, PyG 2.7,
# Pillow 12.3): a2gnn 0.96-0.98 (about ten pixels lost to superpixels straddling the edge), ial
# (networks trained from scratch on a tiny budget) 0.87-1.00 from boxes, 0.80-1.00 from points
# and 0.83-1.00 from scribbles, pce-potts 0.87-1.00 from boxes and scribbles and 0.88-1.00 from
# points but for two seeds in thirty, which spread the foreground over the unseeded band below
# the rectangle (0.60 and 0.64 on the last scene)
PCE_POTTS = 0.75
QUALITY = {("boxes", "grabcut"): 0.9, ("boxes", "harmonic"): 0.9, ("boxes", "a2gnn"): 0.85,
           ("boxes", "ial"): 0.8,
           ("points", "harmonic"): 0.9, ("points", "random-walk"): 0.9,
           ("points", "a2gnn"): 0.85, ("points", "ial"): 0.75,
           ("boxes", "pce-potts"): PCE_POTTS, ("points", "pce-potts"): 0.55,
           # scribbles reached the points' scores; tags 1.00 from the CAMs
           ("scribbles", "harmonic"): 0.9, ("scribbles", "random-walk"): 0.9,
           ("scribbles", "a2gnn"): 0.85, ("scribbles", "ial"): 0.75,
           ("scribbles", "pce-potts"): PCE_POTTS,
           ("tags", "a2gnn"): 0.9, ("tags", "random-walk"): 0.85,
           ("tags", "ial"): 0.75}


@pytest.mark.parametrize(("weak", "method"), sorted(QUALITY))
def test_segment_every_method_is_accurate(scenes, weak, method):
    for image, truth, labels in zip(scenes.images, scenes.truths, scenes.labels, strict=True):
        if weak != "tags":  # the scenes' CAMs would make box seeds M_g (tests/pipelines/
            labels = {k: v for k, v in labels.items() if k != "cams"}  # test_kinds.py)
        pred = segment(image, labels, weak=weak, method=method, preset=FAST[weak])
        assert pred.shape == (H, W) and pred.dtype == torch.int64
        assert set(pred.unique().tolist()) == {0, 1}
        assert foreground_iou(pred, truth) >= QUALITY[weak, method], (weak, method)
        if weak == "boxes":
            inside = box_interior([labels["boxes"]], H, W)[0]
            assert not bool(pred[~inside].any()), "a box method labelled a pixel outside the box"


# recipes that learn across a folder: their quality tests are in their own modules
FOLDER_TESTS = {("boxes", "box-network"): "test_box_network.py",
                **{(weak, "ial-folder"): "test_ial_folder.py"
                   for weak in ("boxes", "points", "scribbles")}}


def test_methods_table_matches_the_tests():
    from pathlib import Path

    from graphseg.pipelines import get_recipe

    methods = [(weak, m) for weak, ms in METHODS.items() for m in ms]
    folder = [(weak, m) for weak, m in methods if get_recipe(weak, m).folder is not None]
    assert sorted(FOLDER_TESTS) == sorted(folder)
    assert all((Path(__file__).parent / FOLDER_TESTS[key]).is_file() for key in folder)
    assert sorted(QUALITY) == sorted(set(methods) - set(folder))


@pytest.mark.parametrize(("weak", "method"), [("boxes", "harmonic"), ("points", None),
                                              ("scribbles", None), ("tags", None)])
def test_default_settings_with_colour_model_and_crf(scenes, weak, method):
    # the shipped settings fuse the colour model and/or run the CRF after the method
    assert PRESETS[weak].finish.colour_weight > 0 or PRESETS[weak].finish.crf is not None
    for image, truth, labels in zip(scenes.images, scenes.truths, scenes.labels, strict=True):
        pred = segment(image, labels, weak=weak, method=method)
        assert foreground_iou(pred, truth) >= 0.9


def test_scribble_seeds_follow_the_strokes(scenes):
    image, truth, labels = scenes.images[0], scenes.truths[0], scenes.labels[0]
    seeds = weak_seeds(image, labels, weak="scribbles", preset=FAST["scribbles"])
    # every seed agrees with the truth (superpixels hold one colour here) and both classes
    # have seeds along their strokes
    known = seeds[0] != 255
    assert torch.equal(seeds[0][known], truth[known])
    stroke = labels["scribbles"][0]["points"]
    assert int(seeds[0, round(stroke[0][1]), round(stroke[0][0])]) == 1
    assert int(seeds[0, 2, W // 2]) == 0


def test_tags_without_cams_or_with_wrong_cams(scenes):
    image, labels = scenes.images[0], scenes.labels[0]
    with pytest.raises(ValueError, match="'cams'"):
        segment(image, {"tags": [1]}, weak="tags")
    with pytest.raises(ValueError, match="num_classes - 1 = 2"):
        segment(image, labels, weak="tags", num_classes=3)
    with pytest.raises(ValueError, match="cams"):
        segment(image, {"tags": [1], "cams": torch.zeros(5, 5)}, weak="tags")
    with pytest.raises(ValueError, match="tags"):
        segment(image, {"tags": [2], "cams": labels["cams"]}, weak="tags")


def test_tags_untagged_classes_are_dropped(scenes):
    image, labels = scenes.images[0], scenes.labels[0]
    # a second CAM channel fires everywhere but its class is not tagged: it must not appear
    cams = torch.cat([labels["cams"], torch.ones_like(labels["cams"])])
    pred = segment(image, {"tags": [1], "cams": cams}, weak="tags", preset=FAST["tags"])
    assert set(pred.unique().tolist()) == {0, 1}
    # CAMs at a quarter of the resolution are resized to the image
    small = torch.nn.functional.avg_pool2d(labels["cams"][None], 4)[0]
    pred = segment(image, {"tags": [1], "cams": small}, weak="tags", method="random-walk",
                   preset=FAST["tags"])
    assert foreground_iou(pred, scenes.truths[0]) >= 0.85


def test_segment_default_method_and_input_forms(scenes):
    image, truth, labels = scenes.images[0], scenes.truths[0], scenes.labels[0]
    as_tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    by_default = segment(image, labels, weak="boxes")
    assert torch.equal(by_default, segment(image, labels, weak="boxes", method="grabcut"))
    assert torch.equal(by_default, segment(as_tensor, labels, weak="boxes"))
    assert torch.equal(by_default, segment(as_tensor[None], labels, weak="boxes"))
    points = segment(image, labels, weak="points", preset=FAST["points"])
    assert torch.equal(points, segment(image, labels, weak="points", method="harmonic",
                                       preset=FAST["points"]))
    assert foreground_iou(points, truth) >= 0.9


def test_segment_with_a_second_foreground_class(scenes):
    image, truth, labels = scenes.images[1], scenes.truths[1], scenes.labels[1]
    boxes = {"boxes": [{"cls": 3, "box": labels["boxes"][0]["box"]}]}
    pred = segment(image, boxes, weak="boxes", method="harmonic", num_classes=4,
                   preset=FAST["boxes"])
    assert set(pred.unique().tolist()) == {0, 3}
    assert torch.equal(pred == 3, truth == 1)
    points = {"points": [dict(p, cls=2 if p["cls"] else 0) for p in labels["points"]]}
    pred = segment(image, points, weak="points", method="a2gnn", preset=FAST["points"])
    assert set(pred.unique().tolist()) <= {0, 2} and 2 in pred.unique().tolist()


# --- only the asked weak kind is read ------------------------------------------------------

def test_segment_needs_the_asked_kind(scenes):
    boxes_only = {"boxes": scenes.labels[0]["boxes"]}
    with pytest.raises(ValueError, match="'points'"):
        segment(scenes.images[0], boxes_only, weak="points")
    with pytest.raises(ValueError, match="'boxes'"):
        segment(scenes.images[0], {"points": scenes.labels[0]["points"]}, weak="boxes")


def test_segment_ignores_the_other_kind(scenes):
    image, labels = scenes.images[2], scenes.labels[2]
    # the other kind is garbage: it must not even be checked
    garbage_points = {"boxes": labels["boxes"], "points": [{"x": 999, "y": -5, "cls": 7}]}
    assert torch.equal(segment(image, garbage_points, weak="boxes"),
                       segment(image, {"boxes": labels["boxes"]}, weak="boxes"))
    garbage_boxes = {"points": labels["points"], "boxes": [{"cls": 9, "box": [50, 50, 0, 0]}]}
    assert torch.equal(segment(image, garbage_boxes, weak="points", preset=FAST["points"]),
                       segment(image, {"points": labels["points"]}, weak="points",
                               preset=FAST["points"]))


def test_points_run_never_sees_boxes(scenes, tmp_path, monkeypatch):
    dataset = SegmentationFolder(scenes.root, weak="points")
    sample = dataset[0]
    assert sorted(sample) == ["image", "mask", "name", "points"]
    assert sample["points"] == scenes.labels[0]["points"]
    seen = []
    real_segment = dataset_module.segment

    def spy(image, labels, **kwargs):
        seen.append((sorted(labels), kwargs["weak"]))
        return real_segment(image, labels, **kwargs)

    monkeypatch.setattr(dataset_module, "segment", spy)
    failures = segment_dataset(SegmentationFolder(scenes.root, weak="points", with_mask=False),
                               tmp_path / "out", weak="points",
                               method="random-walk", progress=False, preset=FAST["points"])
    assert failures == []
    assert seen == [(["points"], "points")] * len(NAMES)
    # a boxes-only data set cannot feed a points run
    with pytest.raises(KeyError):
        SegmentationFolder(scenes.root, weak="boxes")[0]["points"]


def test_tags_run_reads_tags_and_cams_from_the_folder(scenes, tmp_path, monkeypatch):
    dataset = SegmentationFolder(scenes.root, weak="tags", cams=scenes.root / "cams",
                                 with_mask=False)
    assert sorted(dataset[0]) == ["cams", "image", "name", "tags"]
    seen = []
    real_segment = dataset_module.segment

    def spy(image, labels, **kwargs):
        seen.append(sorted(labels))
        return real_segment(image, labels, **kwargs)

    monkeypatch.setattr(dataset_module, "segment", spy)
    failures = segment_dataset(dataset, tmp_path / "out", weak="tags", method="random-walk",
                               progress=False, preset=FAST["tags"])
    assert failures == [] and seen == [["cams", "tags"]] * len(NAMES)
    for name, truth in zip(NAMES, scenes.truths, strict=True):
        assert foreground_iou(read_label_map(tmp_path / "out" / f"{name}.png"), truth) >= 0.85


def test_tags_run_reports_a_missing_cam_file(scene_copy, tmp_path):
    (scene_copy / "cams" / f"{NAMES[1]}.npy").unlink()
    dataset = SegmentationFolder(scene_copy, weak="tags", cams=scene_copy / "cams")
    failures = segment_dataset(dataset, tmp_path / "out", weak="tags", method="random-walk",
                               progress=False, preset=FAST["tags"])
    assert [f.name for f in failures] == [NAMES[1]]
    assert listing(tmp_path / "out") == [f"{NAMES[0]}.png", f"{NAMES[2]}.png"]


# --- bad inputs -----------------------------------------------------------------------------

def test_segment_rejects_bad_inputs(scenes):
    image, labels = scenes.images[0], scenes.labels[0]
    with pytest.raises(ValueError, match="method"):
        segment(image, labels, weak="boxes", method="random-walk")  # a points-only method
    with pytest.raises(ValueError, match="method"):
        segment(image, labels, weak="points", method="grabcut")
    with pytest.raises(ValueError, match="weak"):
        segment(image, labels, weak="box")
    with pytest.raises(ValueError, match="empty"):
        segment(image, {"points": []}, weak="points")
    with pytest.raises(ValueError, match="outside"):
        segment(image, {"boxes": [{"cls": 1, "box": [10, 10, W, 20]}]}, weak="boxes")
    with pytest.raises(ValueError, match="outside"):
        segment(image, {"boxes": [{"cls": 1, "box": [-1, 0, 5, 5]}]}, weak="boxes")
    with pytest.raises(ValueError, match="outside"):
        segment(image, {"points": [{"x": 3, "y": H, "cls": 1}]}, weak="points")
    with pytest.raises(ValueError):
        segment(image, labels, weak="boxes", num_classes=1)  # class 1 not below 1
    with pytest.raises(ValueError, match="labels"):
        segment(image, [labels], weak="boxes")
    with pytest.raises(ValueError):
        segment(np.stack([image, image]), labels, weak="boxes")  # a batch, not one image


def test_segment_dataset_shards_split_the_images(scenes, tmp_path):
    dataset = SegmentationFolder(scenes.root, weak="boxes", with_mask=False)
    seen = {}
    for index in range(2):
        segment_dataset(dataset, tmp_path / "out", weak="boxes", progress=False,
                        shard=(index, 2), on_result=lambda name, *_, i=index: seen.setdefault(
                            i, []).append(name))
    assert seen == {0: [NAMES[0], NAMES[2]], 1: [NAMES[1]]}
    # the default method of a folder of boxes learns across it and keeps its network there
    assert listing(tmp_path / "out") == ["box_network.pt"] + [f"{name}.png" for name in NAMES]
    for bad in [(2, 2), (-1, 2), (0, 0), [0, 1], (0.0, 1)]:
        with pytest.raises(ValueError, match="shard"):
            segment_dataset(dataset, tmp_path / "out", weak="boxes", shard=bad)


def test_segment_dataset_rejects_unknown_method(scenes, tmp_path):
    dataset = SegmentationFolder(scenes.root, weak="boxes", with_mask=False)
    with pytest.raises(ValueError, match="method"):
        segment_dataset(dataset, tmp_path / "out", weak="boxes", method="nope", progress=False)


# --- segment_dataset ------------------------------------------------------------------------

def test_segment_dataset_writes_what_segment_returns(scenes, tmp_path):
    dataset = SegmentationFolder(scenes.root, weak="boxes", with_mask=False)
    results = []
    out = tmp_path / "nested" / "out"
    failures = segment_dataset(dataset, out, weak="boxes", method="harmonic", progress=False,
                               preset=FAST["boxes"], on_result=lambda *args: results.append(args))
    assert failures == []
    assert listing(out) == [f"{name}.png" for name in NAMES]
    assert [name for name, _, _ in results] == NAMES
    for i, name in enumerate(NAMES):
        with Image.open(out / f"{name}.png") as handle:
            assert handle.mode == "L" and handle.size == (W, H)
            written = np.asarray(handle)
        assert written.dtype == np.uint8
        expected = segment(scenes.images[i], scenes.labels[i], weak="boxes", method="harmonic",
                           num_classes=2, preset=FAST["boxes"])
        assert torch.equal(torch.from_numpy(written.astype(np.int64)), expected)
        assert torch.equal(results[i][1], expected)
        assert isinstance(results[i][2], float) and results[i][2] >= 0
        assert foreground_iou(expected, scenes.truths[i]) >= 0.9


def test_segment_dataset_reports_a_corrupt_image_and_goes_on(scene_copy, tmp_path):
    dataset = SegmentationFolder(scene_copy, weak="boxes", with_mask=False)
    (scene_copy / "images" / "img1.png").write_bytes(b"\x89PNG not really an image" * 10)
    out = tmp_path / "out"
    done = []
    failures = segment_dataset(dataset, out, weak="boxes", progress=False,
                               on_result=lambda name, *_: done.append(name))
    assert len(failures) == 1 and isinstance(failures[0], Failure)
    assert failures[0].name == "img1" and failures[0].reason
    assert done == ["img0", "img2"]
    assert listing(out) == ["box_network.pt", "img0.png", "img2.png"]


def test_segment_dataset_reports_invalid_labels(scene_copy, tmp_path):
    annotations = json.loads((scene_copy / "annotations.json").read_text())
    annotations["images"]["img0"]["boxes"] = [{"cls": 1, "box": [0, 0, W + 5, 10]}]
    (scene_copy / "annotations.json").write_text(json.dumps(annotations))
    dataset = SegmentationFolder(scene_copy, weak="boxes", with_mask=False)
    failures = segment_dataset(dataset, tmp_path / "out", weak="boxes", progress=False)
    assert [f.name for f in failures] == ["img0"]
    assert "outside" in failures[0].reason
    assert listing(tmp_path / "out") == ["box_network.pt", "img1.png", "img2.png"]


def test_segment_dataset_leaves_no_partial_file(scenes, tmp_path, monkeypatch):
    real_save = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):
        if "img1" in str(fp):
            with open(fp, "wb") as handle:
                handle.write(b"\x89PNG half")
            raise OSError("disk full")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    dataset = SegmentationFolder(scenes.root, weak="boxes", with_mask=False)
    out = tmp_path / "out"
    failures = segment_dataset(dataset, out, weak="boxes", progress=False)
    assert [f.name for f in failures] == ["img1"] and "disk full" in failures[0].reason
    assert listing(out) == ["box_network.pt", "img0.png", "img2.png"]


def test_segment_dataset_resume_skips_written_images(scenes, tmp_path):
    dataset = SegmentationFolder(scenes.root, weak="points", with_mask=False)
    out = tmp_path / "out"
    first = []
    assert segment_dataset(dataset, out, weak="points", progress=False, preset=FAST["points"],
                           on_result=lambda name, *_: first.append(name)) == []
    assert first == NAMES
    stamps = {name: (out / f"{name}.png").stat().st_mtime_ns for name in NAMES}
    (out / "img1.png").unlink()
    again = []
    assert segment_dataset(dataset, out, weak="points", progress=False, preset=FAST["points"],
                           resume=True, on_result=lambda name, *_: again.append(name)) == []
    assert again == ["img1"]
    assert listing(out) == [f"{name}.png" for name in NAMES]
    for name in ("img0", "img2"):
        assert (out / f"{name}.png").stat().st_mtime_ns == stamps[name]
    # without resume every image is segmented again
    everything = []
    segment_dataset(dataset, out, weak="points", progress=False, preset=FAST["points"],
                    on_result=lambda name, *_: everything.append(name))
    assert everything == NAMES


# --- evaluate_folder ------------------------------------------------------------------------

def write_map(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path)


def test_evaluate_perfect_predictions(scenes):
    scores = evaluate_folder(scenes.root / "masks", scenes.root / "masks")
    assert scores["images"] == len(NAMES) and scores["missing"] == []
    assert scores["miou"] == 1.0 and scores["foreground_iou"] == 1.0
    assert scores["error"] == 0.0 and scores["box_error"] is None
    boxes = {name: labels["boxes"] for name, labels in zip(NAMES, scenes.labels, strict=True)}
    assert evaluate_folder(scenes.root / "masks", scenes.root / "masks",
                           boxes=boxes)["box_error"] == 0.0


def test_evaluate_hand_computed_scores(tmp_path):
    mask = [[0, 0, 1],
            [1, 1, 255]]
    pred = [[0, 1, 1],
            [1, 0, 0]]
    write_map(tmp_path / "masks" / "a.png", mask)
    write_map(tmp_path / "pred" / "a.png", pred)
    # scored pixels: 5; confusion [t, p] = [[1, 1], [1, 2]]
    # IoU0 = 1 / (1 + 1 + 1) = 1/3, IoU1 = 2 / (2 + 1 + 1) = 1/2, errors 2 of 5
    scores = evaluate_folder(tmp_path / "pred", tmp_path / "masks")
    assert scores["images"] == 1 and scores["missing"] == []
    assert scores["miou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert scores["foreground_iou"] == pytest.approx(1 / 2)
    assert scores["error"] == pytest.approx(2 / 5)
    # the box covers columns 1-2 of both rows: (0,1) wrong, (0,2) right, (1,1) wrong, (1,2) void
    boxed = evaluate_folder(tmp_path / "pred", tmp_path / "masks",
                            boxes={"a": [{"cls": 1, "box": [1, 0, 2, 1]}]})
    assert boxed["box_error"] == pytest.approx(2 / 3)
    assert boxed["error"] == scores["error"]
    # the void pixel is not scored: any prediction there changes nothing
    write_map(tmp_path / "pred" / "a.png", [[0, 1, 1], [1, 0, 1]])
    assert evaluate_folder(tmp_path / "pred", tmp_path / "masks") == scores
    # an explicit class count adds an absent class, which the mean over present classes skips
    assert evaluate_folder(tmp_path / "pred", tmp_path / "masks",
                           num_classes=5)["miou"] == pytest.approx(scores["miou"])


def test_evaluate_pools_the_confusion_over_images(tmp_path):
    write_map(tmp_path / "masks" / "a.png", [[0, 1], [1, 1]])
    write_map(tmp_path / "pred" / "a.png", [[0, 1], [1, 1]])  # perfect
    write_map(tmp_path / "masks" / "b.png", [[0, 0], [0, 1]])
    write_map(tmp_path / "pred" / "b.png", [[0, 0], [0, 0]])  # misses its only foreground
    scores = evaluate_folder(tmp_path / "pred", tmp_path / "masks")
    # pooled confusion [[4, 0], [1, 3]]: IoU0 = 4/5, IoU1 = 3/4
    assert scores["miou"] == pytest.approx((4 / 5 + 3 / 4) / 2)
    # foreground IoU and error are per image, then averaged: (1 + 0) / 2, (0 + 1/4) / 2
    assert scores["foreground_iou"] == pytest.approx(0.5)
    assert scores["error"] == pytest.approx(1 / 8)


def test_evaluate_lists_missing_predictions(scenes, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(scenes.root / "masks" / "img1.png", pred / "img1.png")
    scores = evaluate_folder(pred, scenes.root / "masks")
    assert scores["images"] == 1
    assert scores["missing"] == ["img0", "img2"]
    assert scores["miou"] == 1.0


def test_evaluate_rejects_bad_folders(scenes, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_folder(tmp_path / "empty", scenes.root / "masks")
    with pytest.raises(FileNotFoundError, match="pred_dir"):
        evaluate_folder(tmp_path / "nowhere", scenes.root / "masks")
    write_map(tmp_path / "small" / "img0.png", np.zeros((H - 1, W)))
    with pytest.raises(ValueError, match="size"):
        evaluate_folder(tmp_path / "small", scenes.root / "masks")


def test_segment_then_evaluate(scenes, tmp_path):
    dataset = SegmentationFolder(scenes.root, weak="boxes", with_mask=False)
    assert segment_dataset(dataset, tmp_path / "pred", weak="boxes", progress=False) == []
    boxes = {name: labels["boxes"] for name, labels in zip(NAMES, scenes.labels, strict=True)}
    scores = evaluate_folder(tmp_path / "pred", scenes.root / "masks", num_classes=2,
                             boxes=boxes)
    assert scores["images"] == len(NAMES) and scores["missing"] == []
    assert scores["foreground_iou"] >= 0.9 and scores["miou"] >= 0.9
    assert scores["error"] <= 0.05 and scores["box_error"] <= 0.1
    assert torch.equal(read_label_map(tmp_path / "pred" / "img0.png", (H, W)) == 1,
                       scenes.truths[0] == 1)


def test_class_ids_beyond_255_segment_but_do_not_reach_a_png(scenes, tmp_path):
    # a point of class 300 crashed segment with IndexError
    image, truth, labels = scenes.images[0], scenes.truths[0], scenes.labels[0]
    points = [dict(p, cls=300 if p["cls"] else 0) for p in labels["points"]]
    pred = segment(image, {"points": points}, weak="points", method="harmonic",
                   preset=FAST["points"])
    assert set(pred.unique().tolist()) == {0, 300}
    assert foreground_iou((pred == 300).long(), truth) >= 0.9

    class Wide(list):
        num_classes = 301

    with pytest.raises(ValueError, match="num_classes is 301.*at most 255 classes"):
        segment_dataset(Wide(), tmp_path / "out", weak="points", progress=False)
    assert not (tmp_path / "out").exists()
