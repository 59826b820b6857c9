"""Box pseudo-labels → one instance mask per box."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scenes import NAMES, write_scene_set

from graphseg.data import SegmentationFolder
from graphseg.pipelines import box_instances, segment_dataset


def _literal_instances(labels, boxes):
    """Instance of each pixel, written from the rule: the smallest box that contains the pixel
    and has the pixel's class (ties: the later box in the list, as in the seeds)."""
    height, width = labels.shape
    out = np.zeros((height, width), np.int64)
    for y in range(height):
        for x in range(width):
            best = None
            for k, entry in enumerate(boxes):
                x0, y0, x1, y1 = entry["box"]
                if x0 <= x <= x1 and y0 <= y <= y1 and labels[y, x] == entry["cls"]:
                    area = (x1 - x0 + 1) * (y1 - y0 + 1)
                    if best is None or area <= best[0]:
                        best = (area, k + 1)
            out[y, x] = 0 if best is None else best[1]
    return out


def test_each_box_claims_its_class_inside_it_and_the_smaller_box_wins():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (12, 14))
    boxes = [{"cls": 1, "box": [0, 0, 9, 9]}, {"cls": 1, "box": [5, 4, 12, 10]},
             {"cls": 2, "box": [2, 2, 7, 11]}, {"cls": 2, "box": [13, 11, 13, 11]}]
    instances, table = box_instances(torch.from_numpy(labels), boxes)
    expected = _literal_instances(labels, boxes)
    assert np.array_equal(instances.numpy(), expected)
    assert [row["id"] for row in table] == [1, 2, 3, 4]
    assert [row["cls"] for row in table] == [1, 1, 2, 2]
    assert [row["pixels"] for row in table] == [int((expected == k).sum()) for k in range(1, 5)]
    assert table[1]["box"] == [5, 4, 12, 10]


def test_bad_inputs_are_refused():
    labels = torch.zeros(6, 6, dtype=torch.int64)
    with pytest.raises(ValueError, match="boxes is empty"):
        box_instances(labels, [])
    with pytest.raises(ValueError, match="box"):
        box_instances(labels, [{"cls": 1, "box": [0, 0, 9, 2]}])
    with pytest.raises(TypeError, match="labels"):
        box_instances(labels.float(), [{"cls": 1, "box": [0, 0, 2, 2]}])


def test_segment_dataset_writes_instance_maps_and_tables(tmp_path):
    write_scene_set(tmp_path / "set")
    dataset = SegmentationFolder(tmp_path / "set", weak="boxes", with_mask=False)
    failures = segment_dataset(dataset, tmp_path / "out", weak="boxes", method="harmonic",
                               progress=False, instances=True)
    assert failures == []
    for name in NAMES:
        labels = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        instances = np.asarray(Image.open(tmp_path / "out" / "instances" / f"{name}.png"))
        table = json.loads((tmp_path / "out" / "instances" / f"{name}.json").read_text())
        (entry,) = table["instances"]
        x0, y0, x1, y1 = entry["box"]
        inside = np.zeros_like(labels, bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        assert np.array_equal(instances == 1, inside & (labels == 1))
        assert entry["pixels"] == int((instances == 1).sum()) > 0
    # a missing table is redone on resume; the finished images are not
    (tmp_path / "out" / "instances" / f"{NAMES[0]}.json").unlink()
    done = []
    segment_dataset(dataset, tmp_path / "out", weak="boxes", method="harmonic", progress=False,
                    instances=True, resume=True, on_result=lambda name, *_: done.append(name))
    assert done == [NAMES[0]]
    with pytest.raises(ValueError, match="instances needs weak='boxes'"):
        segment_dataset(dataset, tmp_path / "out2", weak="points", instances=True,
                        progress=False)
