"""The box network across a folder: box frames, targets, the projection term and the priors
written out on tiny inputs, GrabCut started from a prior, and the recipe end to end."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from scenes import (
    NAMES,
    corner_scene,
    foreground_iou,
    rectangle_scene,
    stripes_scene,
    write_scene_set,
)
from torch import nn

from graphseg.cli import main
from graphseg.data import SegmentationFolder
from graphseg.graph import pixel_graph
from graphseg.losses import potts_loss
from graphseg.pipelines import segment, segment_dataset
from graphseg.pipelines.recipes.box_network import (
    BoxNetwork,
    BoxNetworkConfig,
    _frame_loss,
    _projection_loss,
    _targets,
    box_crops,
    box_network_labels,
    box_priors,
    load_box_network,
    majority,
    network_labels,
    train_box_network,
    train_box_network_dataset,
)
from graphseg.seeds import grabcut_seeds

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def test_a_frame_without_context_is_the_box_and_its_coordinates():
    image = torch.rand(3, 12, 16)
    box = {"cls": 1, "box": [3, 2, 10, 9]}  # 8 x 8 pixels
    frames = box_crops(image, [box], size=8, context=0.0)
    assert frames.shape == (1, 5, 8, 8)
    expected = (image[:, 2:10, 3:11] - MEAN) / STD
    assert torch.allclose(frames[0, :3], expected, atol=1e-5)
    # u runs from -1 on the box's left side to 1 on its right, v likewise from top to bottom
    assert torch.allclose(frames[0, 3, 0], torch.linspace(-1, 1, 8))
    assert torch.allclose(frames[0, 4, :, 0], torch.linspace(-1, 1, 8))
    # with context the frame reaches past the box (zero outside the image)
    wide = box_crops(image, [{"cls": 1, "box": [0, 0, 7, 7]}], size=8, context=0.5)
    assert float(wide[0, 3, 0, 0]) < -1 and (wide[0, :3, 0, 0] == 0).all()


def test_targets_are_the_box_class_inside_and_unknown_in_the_band():
    seeds = torch.zeros(10, 10, dtype=torch.long)
    seeds[2:8, 2:8] = 255
    seeds[3:7, 3:7] = 1  # GrabCut's foreground inside the box
    box = {"cls": 1, "box": [2, 2, 7, 7]}
    plain = _targets(seeds, [box], BoxNetworkConfig(size=6, context=0.0, band=0))[0]
    assert torch.equal(plain, (seeds[2:8, 2:8] == 1).long())
    banded = _targets(seeds, [box], BoxNetworkConfig(size=6, context=0.0, band=1))[0]
    # a pixel is unknown when a 3 x 3 neighbourhood holds both sides: the foreground's rim
    # and the background ring around it
    expected = torch.full((6, 6), 255)
    expected[2:4, 2:4] = 1
    assert torch.equal(banded, expected)


def test_projection_is_minus_log_of_the_largest_probability_of_each_row_and_column():
    probs = torch.zeros(1, 2, 3, 4)
    probs[0, 1] = torch.tensor([[0.1, 0.2, 0.3, 0.9],
                                [0.5, 0.6, 0.1, 0.2],
                                [0.9, 0.9, 0.9, 0.9]])
    probs[0, 0] = 1 - probs[0, 1]
    inside = torch.zeros(1, 3, 4, dtype=torch.bool)
    inside[0, :2, :3] = True  # the box: rows 0-1, columns 0-2
    columns = [max(0.1, 0.5), max(0.2, 0.6), max(0.3, 0.1)]
    rows = [max(0.1, 0.2, 0.3), max(0.5, 0.6, 0.1)]
    literal = (-sum(math.log(p) for p in columns) / 3 - sum(math.log(p) for p in rows) / 2)
    assert float(_projection_loss(probs, inside)) == pytest.approx(literal, rel=1e-5)


def test_the_frame_loss_adds_the_weighted_projection_and_potts_terms():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 6)
    frames = torch.randn(2, 5, 6, 6)
    targets = torch.randint(0, 2, (2, 6, 6))
    targets[0, 0] = 255
    inside = torch.zeros(2, 6, 6, dtype=torch.bool)
    inside[:, 1:5, 1:5] = True
    probs = logits.softmax(1)
    colour = (frames[:, :3] * STD + MEAN).clamp(0, 1)
    literal = (torch.nn.functional.cross_entropy(logits, targets, ignore_index=255)
               + 0.5 * _projection_loss(probs, inside)
               + 2.0 * potts_loss(probs, pixel_graph(colour, radius=2, sigma_xy=2.0,
                                                     sigma_rgb=0.1)))
    config = BoxNetworkConfig(projection=0.5, potts=2.0)
    assert float(_frame_loss(logits, frames, targets, inside, config)) == pytest.approx(
        float(literal), rel=1e-5)
    plain = BoxNetworkConfig(projection=0.0, potts=0.0)
    assert float(_frame_loss(logits, frames, targets, inside, plain)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, targets, ignore_index=255)), rel=1e-6)


def test_network_labels_take_the_smallest_box_where_its_probability_exceeds_a_half():
    boxes = [{"cls": 1, "box": [0, 0, 3, 2]}, {"cls": 2, "box": [2, 1, 3, 2]}]
    probs = torch.zeros(2, 3, 5)
    probs[0] = 0.8  # the large box everywhere, column 4 (outside both boxes) included
    probs[1, 1, 2], probs[1, 1, 3], probs[1, 2, 2], probs[1, 2, 3] = 0.9, 0.4, 0.6, 0.5
    expected = torch.tensor([[1, 1, 1, 1, 0],
                             [1, 1, 2, 0, 0],
                             [1, 1, 2, 0, 0]])
    assert torch.equal(network_labels(probs, boxes), expected)


def test_majority_of_three_label_maps_with_unknown_as_background():
    box_seeds = torch.tensor([[0, 1, 255, 2, 1]])
    started = torch.tensor([[1, 1, 0, 255, 2]])
    network = torch.tensor([[0, 2, 1, 2, 3]])
    # 0/1/0 -> 0; 1/1/2 -> 1; 0/0/1 -> 0; 2/0/2 -> 2; all differ -> GrabCut from the network
    assert torch.equal(majority(box_seeds, started, network), torch.tensor([[0, 1, 0, 2, 2]]))


class Constant(nn.Module):
    """Logits of a fixed object probability everywhere."""

    def __init__(self, p):
        super().__init__()
        self.logit = math.log(p / (1 - p))

    def forward(self, frames):
        logits = torch.zeros(frames.shape[0], 2, *frames.shape[2:])
        logits[:, 1] = self.logit
        return logits


def test_priors_hold_the_network_probability_inside_each_box_only():
    image = torch.rand(3, 20, 30)
    boxes = [{"cls": 1, "box": [2, 3, 12, 15]}, {"cls": 2, "box": [15, 1, 28, 9]}]
    priors = box_priors(Constant(0.7), image, boxes)
    assert priors.shape == (2, 20, 30)
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = box["box"]
        inside = torch.zeros(20, 30, dtype=torch.bool)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert torch.allclose(priors[k][inside], torch.tensor(0.7), atol=1e-5)
        assert (priors[k][~inside] == 0).all()


def scene_with_a_green_patch():
    """A red square on a green patch in the box, blue around; GrabCut in a window that holds
    no green background takes the whole box for the object."""
    rng = np.random.default_rng(0)
    image = np.zeros((48, 80, 3))
    image[:] = (0.1, 0.2, 0.8)
    image[10:26, 8:24] = (0.1, 0.8, 0.2)
    image[14:22, 12:20] = (0.9, 0.1, 0.1)
    image = ((image + rng.normal(0, 0.03, image.shape)).clip(0, 1) * 255).round()
    return image.astype(np.uint8), [{"cls": 1, "box": [8, 10, 23, 25]}]


def test_grabcut_starts_from_the_prior():
    image, box = scene_with_a_green_patch()
    plain = grabcut_seeds(image, box, padding=5, context=0.1)[0]
    assert (plain[10:26, 8:24] == 1).all()
    prior = torch.zeros(48, 80)
    prior[14:22, 12:20] = 0.9  # the prior calls only the red square the object
    started = grabcut_seeds(image, box, padding=5, context=0.1, priors=[[prior]])[0]
    assert (started[14:22, 12:20] == 1).all() and int((started == 1).sum()) == 64
    for bad in ([[prior, prior]], [[prior[:10]]], [[prior * float("nan")]], []):
        with pytest.raises(ValueError, match="priors"):
            grabcut_seeds(image, box, priors=bad)


SMALL = BoxNetworkConfig(size=32, epochs=8, batch_size=4, band=1, rounds=2, widths=(8, 16, 16))


def test_the_recipe_labels_a_folder_and_is_repeatable():
    # rectangles (GrabCut separates them; the network's prior must keep that) and striped
    # legged shapes (GrabCut started from the prior gives up and falls back to the box)
    scenes = [rectangle_scene(i) for i in range(3)] + [stripes_scene(i) for i in range(4)]
    samples = [{"name": f"s{i}", "image": image, "boxes": boxes}
               for i, (image, _, boxes) in enumerate(scenes)]
    details = {}
    labels = box_network_labels(samples, SMALL, num_classes=2, progress=False, details=details)
    assert sorted(labels) == [s["name"] for s in samples]
    assert isinstance(details["model"], BoxNetwork) and len(details["seeds"]) == len(scenes)
    scores = [foreground_iou(labels[f"s{i}"], truth) for i, (_, truth, _) in enumerate(scenes)]
    # measured over config seeds 0-4: rectangles 1.000 each, mean 0.869-0.871 (GrabCut's
    # seeds alone: 0.869); the thresholds sit under the worst
    assert min(scores[:3]) >= 0.98 and float(np.mean(scores)) >= 0.84
    again = box_network_labels(samples, SMALL, num_classes=2, progress=False)
    assert all(torch.equal(labels[name], again[name]) for name in labels)


def test_the_recipe_corrects_its_seeds_where_the_folder_knows_better():
    # ten disks with a green blob on a box corner: in eight the blob reaches out of the box and
    # GrabCut's seeds leave it out; in two (images 2 and 7) it stays inside, GrabCut has seen no
    # green background and takes it for the disk. Across the folder the network learns that
    # green is background; GrabCut started from it, and so the vote, leave the blob out.
    kinds = [True, True, False, True, True, True, True, False, True, True]
    scenes = [corner_scene(i, reaching_out) for i, reaching_out in enumerate(kinds)]
    samples = [{"name": f"s{i}", "image": image, "boxes": boxes}
               for i, (image, _, boxes) in enumerate(scenes)]
    details = {}
    labels = box_network_labels(samples, replace(SMALL, epochs=30), num_classes=2,
                                progress=False, details=details)
    scores = [foreground_iou(labels[f"s{i}"], truth) for i, (_, truth, _) in enumerate(scenes)]
    seeds = [foreground_iou(details["seeds"][f"s{i}"], truth)
             for i, (_, truth, _) in enumerate(scenes)]
    inside = [i for i, reaching_out in enumerate(kinds) if not reaching_out]
    # measured over config seeds 0-7: the seeds 0.971 on images 2 and 7 and 1.0 elsewhere; the
    # recipe 0.992-1.0 on images 2 and 7 and 1.0 elsewhere
    assert all(seeds[i] < 0.975 for i in inside)
    assert all(scores[i] >= 0.985 for i in inside)
    assert min(scores) >= 0.985 and float(np.mean(scores)) > float(np.mean(seeds))


def test_training_refuses_mismatched_inputs_and_configs_check_their_fields():
    with pytest.raises(ValueError, match="frames must be"):
        train_box_network(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one"):
        train_box_network(torch.zeros(0, 5, 8, 8), torch.zeros(0, 8, 8, dtype=torch.long))
    for field, value in (("size", 0), ("rounds", 0), ("band", -1), ("lr", 0.0),
                         ("potts", -1.0)):
        with pytest.raises(ValueError, match=field):
            BoxNetworkConfig(**{field: value})


def write_folder(tmp_path):
    write_scene_set(tmp_path / "set")
    return SegmentationFolder(tmp_path / "set", weak="boxes", with_mask=False)


def test_segment_dataset_trains_on_the_folder_keeps_the_network_and_resumes(tmp_path,
                                                                             monkeypatch):
    dataset = write_folder(tmp_path)
    out = tmp_path / "out"
    assert segment_dataset(dataset, out, weak="boxes", method="box-network", config=SMALL,
                           progress=False) == []
    model = load_box_network(out / "box_network.pt")
    assert model.widths == SMALL.widths
    samples = [dataset[i] for i in range(len(dataset))]
    expected = box_network_labels(samples, SMALL, num_classes=2, progress=False)
    for name in NAMES:
        labels = torch.from_numpy(np.asarray(Image.open(out / f"{name}.png")).astype(np.int64))
        assert torch.equal(labels, expected[name])
        # one image with the kept network: the recipe through segment()
        sample = dataset[NAMES.index(name)]
        assert torch.equal(segment(sample["image"], {"boxes": sample["boxes"]}, weak="boxes",
                                   method="box-network", config=SMALL, num_classes=2,
                                   checkpoint=out / "box_network.pt"), expected[name])
    # resuming with the network there does not train again
    from graphseg.pipelines.recipes import box_network

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(box_network, "train_box_network", no_training)
    (out / f"{NAMES[1]}.png").unlink()
    done = []
    segment_dataset(dataset, out, weak="boxes", method="box-network", config=SMALL,
                    progress=False, resume=True, on_result=lambda name, *_: done.append(name))
    assert done == [NAMES[1]]


def test_an_interrupted_training_resumes_to_the_same_network(tmp_path):
    scenes = [rectangle_scene(i) for i in range(2)] + [stripes_scene(0)]
    samples = [{"name": f"s{i}", "image": image, "boxes": boxes}
               for i, (image, _, boxes) in enumerate(scenes)]
    whole = train_box_network_dataset(samples, SMALL, progress=False)
    path = tmp_path / "net.pt"
    # stopped after the first of two rounds: the checkpoint holds that round
    train_box_network_dataset(samples, replace(SMALL, rounds=1), progress=False,
                              checkpoint=path)
    assert load_box_network(path).rounds_done == 1
    resumed = train_box_network_dataset(iter(samples), SMALL, progress=False, checkpoint=path,
                                        resume=True)
    assert resumed.rounds_done == 2 and load_box_network(path).rounds_done == 2
    expected = whole.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in resumed.state_dict().items())

    def unread():
        raise AssertionError("read the samples of a finished training")
        yield

    finished = train_box_network_dataset(unread(), SMALL, progress=False, checkpoint=path,
                                         resume=True)
    assert all(torch.equal(value, expected[key]) for key, value in finished.state_dict().items())
    # without resume the checkpoint is trained anew and overwritten
    train_box_network_dataset(samples, replace(SMALL, rounds=1), progress=False,
                              checkpoint=path)
    assert load_box_network(path).rounds_done == 1


def test_a_corrupt_image_is_reported_and_the_others_still_train_and_label(tmp_path):
    dataset = write_folder(tmp_path)
    (tmp_path / "set" / "images" / f"{NAMES[0]}.png").write_bytes(b"not a png")
    failures = segment_dataset(dataset, tmp_path / "out", weak="boxes", method="box-network",
                               config=SMALL, progress=False)
    assert [f.name for f in failures] == [NAMES[0]]
    assert (tmp_path / "out" / "box_network.pt").is_file()
    assert all((tmp_path / "out" / f"{name}.png").is_file() for name in NAMES[1:])


def test_the_recipe_needs_its_network_and_checkpoints_are_checked(tmp_path):
    image, _, boxes = rectangle_scene(0)
    with pytest.raises(ValueError, match="learns across a folder"):
        segment(image, {"boxes": boxes}, weak="boxes", method="box-network")
    garbage = tmp_path / "x.pt"
    garbage.write_text("text")
    with pytest.raises(ValueError, match="not a graphseg box-network checkpoint"):
        load_box_network(garbage)
    torch.save({"weight": torch.zeros(1)}, garbage)
    with pytest.raises(ValueError, match="box_network_widths"):
        load_box_network(garbage)
    with pytest.raises(TypeError, match="checkpoint of method 'box-network'"):
        segment(image, {"boxes": boxes}, weak="boxes", method="box-network", checkpoint=3)


def test_cli_segment_box_network(tmp_path, capsys):
    write_scene_set(tmp_path / "set")
    out = tmp_path / "pred"
    assert main(["segment", "--images", str(tmp_path / "set" / "images"), "--annotations",
                 str(tmp_path / "set" / "annotations.json"), "--out", str(out), "--quiet",
                 "--weak", "box", "--method", "box-network"]) == 0
    assert (out / "box_network.pt").is_file()
    for name in NAMES:
        assert np.asarray(Image.open(out / f"{name}.png")).max() == 1
