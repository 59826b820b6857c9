"""Readers on a tiny VOC-layout folder and a tiny shared-layout folder written here, and on
the shared evaluation data when it is present."""

import json

import numpy as np
import pytest
import torch
from conftest import DATA_DIR
from PIL import Image
from torch.utils.data import DataLoader

from graphseg.data import LabelMaps, SegmentationFolder, VOCSegmentation, collate_samples

XML = """<annotation><size><width>{w}</width><height>{h}</height></size>{objects}</annotation>"""
OBJECT = ("<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
          "<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
          "</bndbox></object>")


def write_voc(root, objects_by_name, size=(12, 16)):
    height, width = size
    for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    generator = np.random.default_rng(0)
    for name, objects in objects_by_name.items():
        pixels = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((height, width), np.uint8)
        mask[2:6, 3:9] = 15
        mask[0, :] = 255
        palette = Image.fromarray(mask, mode="P")
        palette.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        palette.save(root / "SegmentationClass" / f"{name}.png")
        body = "".join(OBJECT.format(**o) for o in objects)
        (root / "Annotations" / f"{name}.xml").write_text(XML.format(w=width, h=height,
                                                                     objects=body))
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(objects_by_name) + "\n")


PERSON = {"name": "person", "difficult": 0, "x0": 4, "y0": 3, "x1": 9, "y1": 6}
DOG = {"name": "dog", "difficult": 1, "x0": 1, "y0": 1, "x1": 16, "y1": 12}


@pytest.fixture
def voc(tmp_path):
    write_voc(tmp_path / "VOC2012", {"a": [PERSON, DOG, PERSON], "b": [PERSON]})
    return tmp_path


def test_voc_reader_images_masks_tags_and_boxes(voc):
    dataset = VOCSegmentation(voc, weak=("tags", "boxes"))
    assert len(dataset) == 2 and dataset.num_classes == 21
    sample = dataset[0]
    assert set(sample) == {"name", "image", "mask", "tags", "boxes"}
    assert sample["name"] == "a"
    assert sample["image"].shape == (3, 12, 16) and sample["image"].dtype == torch.float32
    assert 0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1
    assert sample["mask"].dtype == torch.int64
    assert set(sample["mask"].unique().tolist()) == {0, 15, 255}
    assert sample["tags"] == [12, 15]
    # 1-based inclusive VOC bounds become 0-based inclusive
    assert sample["boxes"][0] == {"cls": 15, "box": [3, 2, 8, 5]}
    assert sample["boxes"][1] == {"cls": 12, "box": [0, 0, 15, 11]}
    hard = VOCSegmentation(voc, weak="boxes", skip_difficult=True)[0]
    assert [b["cls"] for b in hard["boxes"]] == [15, 15]


def test_voc_reader_gives_only_the_asked_kind(voc):
    tags = VOCSegmentation(voc / "VOC2012", weak="tags")[1]
    assert set(tags) == {"name", "image", "mask", "tags"}
    for path in (voc / "VOC2012" / "Annotations").iterdir():
        path.unlink()
    plain = VOCSegmentation(voc, weak=None, with_mask=False)[0]
    assert set(plain) == {"name", "image"}


def test_voc_reader_as_dataloader(voc):
    loader = DataLoader(VOCSegmentation(voc, weak="boxes"), batch_size=2,
                        collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 12, 16) and batch["mask"].shape == (2, 12, 16)
    assert batch["name"] == ["a", "b"] and len(batch["boxes"]) == 2


def test_voc_reader_errors(voc, tmp_path):
    with pytest.raises(ValueError, match="weak='points' is not available"):
        VOCSegmentation(voc, weak="points")
    with pytest.raises(ValueError, match="weak='scribbles' is not available"):
        VOCSegmentation(voc, weak="scribbles")
    with pytest.raises(ValueError, match="weak must be one of"):
        VOCSegmentation(voc, weak="clicks")
    with pytest.raises(FileNotFoundError, match="split 'val' has no list"):
        VOCSegmentation(voc, split="val")
    (voc / "VOC2012/Annotations/b.xml").write_text(XML.format(
        w=16, h=12, objects=OBJECT.format(name="unicorn", difficult=0, x0=1, y0=1, x1=2, y1=2)))
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        VOCSegmentation(voc, weak="tags")[1]
    (voc / "VOC2012/Annotations/b.xml").write_text(XML.format(
        w=16, h=12, objects=OBJECT.format(name="cat", difficult=0, x0=1, y0=1, x1=17, y1=2)))
    with pytest.raises(ValueError, match=r"b boxes\[0\]\[0\]\['box'\] lies outside the 12x16"):
        VOCSegmentation(voc, weak="boxes")[1]
    Image.fromarray(np.zeros((11, 16), np.uint8)).save(voc / "VOC2012/SegmentationClass/b.png")
    with pytest.raises(ValueError, match=r"has size 11x16 but its image has size 12x16"):
        VOCSegmentation(voc)[1]


def write_folder(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in ("x", "y"):
        Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.eye(6, 8, dtype=np.uint8)).save(root / "masks" / f"{name}.png")
    annotations = {"format": "test", "num_classes": 3, "images": {
        "x": {"classes": [1], "boxes": [{"cls": 1, "box": [0, 0, 5, 5]}],
              "points": [{"x": 1.0, "y": 1.0, "cls": 1}, {"x": 6.0, "y": 4.0, "cls": 0}]},
        "y": {"classes": [2], "boxes": [{"cls": 2, "box": [1, 1, 2, 2]}], "points": []}}}
    (root / "annotations.json").write_text(json.dumps(annotations))


def test_folder_reader_keeps_only_the_asked_kind(tmp_path):
    root = tmp_path / "set"
    write_folder(root)
    dataset = SegmentationFolder(root, weak="points")
    # the annotation file is read once; the other kinds are not kept
    (root / "annotations.json").write_text("{}")
    sample = dataset[0]
    assert set(sample) == {"name", "image", "mask", "points"}
    assert sample["points"][1] == {"x": 6.0, "y": 4.0, "cls": 0}
    held = repr(vars(dataset))
    assert "'boxes'" not in held and "'classes'" not in held and "'box'" not in held
    sample["points"].clear()
    assert len(dataset[0]["points"]) == 2


def test_folder_reader_kinds_names_and_errors(tmp_path):
    root = tmp_path / "set"
    write_folder(root)
    both = SegmentationFolder(root, weak=["tags", "boxes"], names=["y"])
    assert len(both) == 1 and both[0]["tags"] == [2] and both[0]["boxes"][0]["cls"] == 2
    assert set(SegmentationFolder(root, with_mask=False)[1]) == {"name", "image"}
    with pytest.raises(ValueError, match=r"names must be images of .*\['z'\]"):
        SegmentationFolder(root, names=["z"])
    with pytest.raises(ValueError, match="weak must not repeat a kind"):
        SegmentationFolder(root, weak=["tags", "tags"])
    annotations = json.loads((root / "annotations.json").read_text())
    annotations["images"]["x"]["boxes"][0]["cls"] = 7
    for entry in annotations["images"].values():
        del entry["points"]
    (root / "annotations.json").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="weak='points' but no image of"):
        SegmentationFolder(root, weak="points")
    with pytest.raises(ValueError, match=r"x boxes\[0\]\[0\]\['cls'\] must be a foreground "
                                         r"class id >= 1 and < num_classes=3, got 7"):
        SegmentationFolder(root, weak="boxes")[0]
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        SegmentationFolder(tmp_path / "missing")


def test_folder_reader_scribbles_and_cams(tmp_path):
    root = tmp_path / "set"
    write_folder(root)
    annotations = json.loads((root / "annotations.json").read_text())
    annotations["images"]["x"]["scribbles"] = [{"cls": 1, "points": [[0, 0], [7, 5]]}]
    annotations["images"]["y"]["scribbles"] = [{"cls": 2, "points": [[0, 0], [8, 5]]}]
    (root / "annotations.json").write_text(json.dumps(annotations))
    (root / "cams").mkdir()
    np.save(root / "cams" / "x.npy", np.ones((2, 3, 4), np.float32))
    np.save(root / "cams" / "y.npy", np.ones((3, 4), np.float32))
    scribbles = SegmentationFolder(root, weak="scribbles", with_mask=False)
    sample = scribbles[0]
    assert sorted(sample) == ["image", "name", "scribbles"]
    assert sample["scribbles"] == [{"cls": 1, "points": [[0, 0], [7, 5]]}]
    with pytest.raises(ValueError, match=r"y scribbles\[0\]\[0\]\['points'\]\[1\] lies outside"):
        scribbles[1]
    tags = SegmentationFolder(root, weak="tags", cams=root / "cams")
    sample = tags[0]
    assert sample["tags"] == [1] and sample["cams"].shape == (2, 3, 4)
    assert sample["cams"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"y.npy must be a float \(C, h, w\) array"):
        tags[1]
    (root / "cams" / "y.npy").unlink()
    with pytest.raises(FileNotFoundError):
        tags[1]
    with pytest.raises(FileNotFoundError, match="cams folder"):
        SegmentationFolder(root, weak="tags", cams=root / "nowhere")


def shared_set(name):
    root = DATA_DIR / name
    if not (root / "annotations.json").is_file():
        pytest.skip(f"shared data set {root} is absent (set GRAPHSEG_DATA to its folder)")
    return root


def test_shared_grabcut_boxes():
    dataset = SegmentationFolder(shared_set("grabcut"), weak="boxes")
    assert len(dataset) == 50 and dataset.num_classes == 2
    sample = dataset[0]
    assert set(sample) == {"name", "image", "mask", "boxes"}
    assert sample["image"].shape[1:] == sample["mask"].shape
    assert set(sample["mask"].unique().tolist()) <= {0, 1, 255}
    x0, y0, x1, y1 = sample["boxes"][0]["box"]
    foreground = torch.nonzero(sample["mask"] == 1)
    assert (foreground[:, 0].min(), foreground[:, 0].max()) == (y0, y1)
    assert (foreground[:, 1].min(), foreground[:, 1].max()) == (x0, x1)


def test_shared_voc14_points_only():
    dataset = SegmentationFolder(shared_set("voc14"), weak="points", with_mask=False)
    assert len(dataset) == 14 and dataset.num_classes == 21
    for sample in (dataset[0], dataset[13]):
        assert set(sample) == {"name", "image", "points"}
        assert sample["points"] and all(set(p) == {"x", "y", "cls"} for p in sample["points"])
    assert "'boxes'" not in repr(vars(dataset))


def test_label_maps_read_a_folder_of_pngs_by_name(tmp_path):
    labels = np.array([[0, 1, 255], [2, 0, 1]], dtype=np.uint8)
    Image.fromarray(labels, mode="L").save(tmp_path / "b.png")
    Image.fromarray(labels[::-1].copy(), mode="L").save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not a label map")
    maps = LabelMaps(tmp_path)
    assert list(maps) == ["a", "b"] and len(maps) == 2
    assert "a" in maps and "c" not in maps and 3 not in maps
    assert maps["b"].dtype == torch.int64
    assert torch.equal(maps["b"], torch.from_numpy(labels.astype(np.int64)))
    with pytest.raises(KeyError):
        maps["c"]
    Image.new("RGB", (3, 2)).save(tmp_path / "c.png")
    with pytest.raises(ValueError, match="label map .*c.png must be a palette"):
        maps["c"]
    with pytest.raises(ValueError, match="is not a directory"):
        LabelMaps(tmp_path / "missing")
