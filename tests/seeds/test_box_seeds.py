"""Box seeds: GrabCut M_B, the fusion rules M_F (Eq. 3.4) and M_g (Eq. 3.5) branch by branch."""

import numpy as np
import pytest
import torch

from graphseg.seeds import (
    box_interior,
    box_owner,
    confident_box_seeds,
    fuse_box_seeds,
    grabcut_seeds,
)

U = 255


def scene():
    """A 48x56 image: a red square (class 1) and a green bar (class 2) on a noisy blue ground."""
    generator = np.random.default_rng(0)
    image = np.zeros((48, 56, 3), dtype=np.float64)
    image[:] = (0.1, 0.2, 0.8)
    image[10:26, 8:24] = (0.9, 0.1, 0.1)
    image[30:40, 30:52] = (0.1, 0.9, 0.2)
    image += generator.normal(0, 0.03, image.shape)
    image = (image.clip(0, 1) * 255).round().astype(np.uint8)
    boxes = [{"cls": 1, "box": [8, 10, 23, 25]}, {"cls": 2, "box": [28, 28, 53, 41]}]
    return image, boxes


def test_grabcut_seeds_rules():
    image, boxes = scene()
    seeds = grabcut_seeds(image, boxes)
    assert seeds.shape == (1, 48, 56) and seeds.dtype == torch.int64
    inside = box_interior(boxes, 48, 56)[0]
    assert (seeds[0][~inside] == 0).all()
    assert set(seeds[0][inside].unique().tolist()) <= {1, 2, U}
    # the objects are found and the background inside box 2 stays unknown
    assert (seeds[0, 11:25, 9:23] == 1).all()
    assert (seeds[0, 31:39, 31:51] == 2).all()
    assert (seeds[0, 28:30, 28:54] == U).all()
    assert torch.equal(grabcut_seeds(image, boxes), seeds)


def test_grabcut_float_batch_and_tiny_boxes():
    image, boxes = scene()
    batch = torch.from_numpy(image).permute(2, 0, 1).float().div(255).expand(2, -1, -1, -1)
    seeds = grabcut_seeds(batch, [boxes, []], padding=0)
    assert (seeds[1] == 0).all()
    tiny = grabcut_seeds(image, [{"cls": 1, "box": [3, 3, 4, 4]}], padding=0)
    # four pixels cannot fit a 5-component colour model: the box stays unknown
    assert (tiny[0, 3:5, 3:5] == U).all() and (tiny == U).sum() == 4


def test_grabcut_context_window():
    """A red square on a green patch in the box; blue around the box, green again far away."""
    generator = np.random.default_rng(0)
    image = np.zeros((48, 80, 3))
    image[:] = (0.1, 0.2, 0.8)
    image[10:26, 8:24] = (0.1, 0.8, 0.2)
    image[14:22, 12:20] = (0.9, 0.1, 0.1)
    image[:, 50:] = (0.1, 0.8, 0.2)
    image = ((image + generator.normal(0, 0.03, image.shape)).clip(0, 1) * 255).round()
    image = image.astype(np.uint8)
    box = [{"cls": 1, "box": [8, 10, 23, 25]}]
    # the whole image: the far green is background, so the green patch is too
    whole = grabcut_seeds(image, box)[0]
    assert (whole[14:22, 12:20] == 1).all() and (whole == 1).sum() == 64
    # a window grown by 16 px (the minimum ring; rows 0..46, cols 0..44) holds no green
    # background: the whole box is foreground, as GrabCut on the cropped image finds
    window = grabcut_seeds(image, box, context=0.1)[0]
    assert (window[10:26, 8:24] == 1).all() and (window == 1).sum() == 256
    cropped = grabcut_seeds(np.ascontiguousarray(image[:47, :45]), box)[0]
    assert torch.equal(window[:47, :45], cropped) and (window[:, 45:] == 0).all()
    # a window reaching the far green sees it again
    assert torch.equal(grabcut_seeds(image, box, context=3.0)[0], whole)
    for bad, error in ((-0.1, ValueError), (float("inf"), ValueError), ("wide", TypeError)):
        with pytest.raises(error, match="context must be"):
            grabcut_seeds(image, box, context=bad)


def test_overlapping_boxes_smaller_wins():
    boxes = [{"cls": 1, "box": [0, 0, 5, 3]}, {"cls": 2, "box": [3, 1, 6, 2]}]
    owner = box_owner(boxes, 4, 8)[0]
    assert owner[0].tolist() == [0, 0, 0, 0, 0, 0, -1, -1]
    assert owner[1].tolist() == [0, 0, 0, 1, 1, 1, 1, -1]
    image = np.zeros((30, 30, 3), np.uint8)
    image[5:25, 5:25] = 200
    image[10:20, 10:20] = (200, 0, 0)
    seeds = grabcut_seeds(image, [{"cls": 3, "box": [5, 5, 24, 24]},
                                  {"cls": 2, "box": [9, 9, 20, 20]}])
    assert (seeds[0, 11:19, 11:19] == 2).all()


def test_fuse_box_seeds_each_branch():
    boxes = [{"cls": 1, "box": [0, 0, 3, 1]}, {"cls": 2, "box": [4, 0, 6, 1]}]
    box_seeds = torch.tensor([[[1, 1, U, U, 2, U, 2, 0],
                               [1, U, 1, U, U, 2, U, 0]]])
    cam_seeds = torch.tensor([[[1, 0, 1, U, 0, 0, 0, 1],
                               [1, 1, U, 0, 0, 0, 0, 0]]])
    fused = fuse_box_seeds(box_seeds, cam_seeds, boxes)
    expected = torch.tensor([[[1, U, U, U, 2, U, 2, 0],
                              [1, U, U, U, U, 2, U, 0]]])
    # x = 7: outside every box, M_B (0) even though M_I says 1;
    # box 1 (class 1 present in M_I): M_I where it equals M_B, unknown elsewhere;
    # box 2 (class 2 absent from M_I): M_B
    assert torch.equal(fused, expected)


def test_fuse_box_seeds_nested_boxes_use_the_smallest():
    boxes = [{"cls": 1, "box": [0, 0, 5, 0]}, {"cls": 2, "box": [2, 0, 3, 0]}]
    box_seeds = torch.tensor([[[1, U, 2, U, U, 1]]])
    cam_seeds = torch.tensor([[[1, 1, 1, 1, 0, 0]]])
    # class 2 never appears in M_I inside its box: its pixels take M_B; class 1 does appear
    assert fuse_box_seeds(box_seeds, cam_seeds, boxes).tolist() == [[[1, U, 2, U, U, U]]]


def test_confident_box_seeds_each_branch():
    fused = torch.tensor([[[0, 1, U, U, U, U, U, U, U, U, U, U]]])
    box_seeds = torch.tensor([[[0, 1, U, 1, 1, 1, 1, 1, 1, 1, 1, 1]]])
    cam_seeds = torch.tensor([[[0, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, U]]])
    scores = torch.tensor([[[0.9, 0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95, 0.99]]])
    seeds = confident_box_seeds(fused, box_seeds, cam_seeds, scores)
    # branch 1 keeps M_F = M_B; branch 2 adds the 3 most confident of the 9 class-1 M_I pixels
    # (cut at rank int(9 * 0.6) = 5, score 0.6); the rest stays unknown
    assert seeds.tolist() == [[[0, 1, U, U, U, U, U, U, 1, 1, 1, U]]]


def test_bad_boxes_raise_clear_errors():
    image, _ = scene()
    with pytest.raises(ValueError, match=r"boxes\[0\]\[0\]\['box'\] lies outside the 48x56"):
        grabcut_seeds(image, [{"cls": 1, "box": [0, 0, 56, 10]}])
    with pytest.raises(ValueError, match=r"boxes\[0\]\[0\]\['box'\] is empty"):
        grabcut_seeds(image, [{"cls": 1, "box": [10, 5, 9, 8]}])
    with pytest.raises(ValueError, match=r"\['cls'\] must be a foreground class id >= 1 and "
                                         r"< num_classes=3, got 3"):
        grabcut_seeds(image, [{"cls": 3, "box": [0, 0, 5, 5]}], num_classes=3)
    with pytest.raises(ValueError, match="foreground class id >= 1"):
        box_owner([{"cls": 0, "box": [0, 0, 5, 5]}], 10, 10)
    with pytest.raises(TypeError, match=r"boxes\[0\]\[0\] must be a dict"):
        box_owner([[0, 0, 5, 5]], 10, 10)
    with pytest.raises(ValueError, match=r"one list of box dicts per image \(2 images\)"):
        grabcut_seeds(torch.rand(2, 3, 8, 8), [[]])
    with pytest.raises(ValueError, match="cam_seeds and box_seeds must have the same"):
        fuse_box_seeds(torch.zeros(1, 4, 4, dtype=torch.int64),
                       torch.zeros(1, 4, 5, dtype=torch.int64), [])
    with pytest.raises(TypeError, match="cam_scores must be a float tensor"):
        zeros = torch.zeros(1, 4, 4, dtype=torch.int64)
        confident_box_seeds(zeros, zeros, zeros, zeros)
