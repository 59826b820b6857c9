"""Box seeds: GrabCut M_B, the fusion rules M_F (Eq. 3.4) and M_g (Eq. 3.5), branch by branch
and against pixel-by-pixel references written from the equations."""

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
    """A red square on a green patch in the box; blue around the box, green again far away
    (the box padded by 5 px, so that the padded ring is blue)."""
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
    whole = grabcut_seeds(image, box, padding=5)[0]
    assert (whole[14:22, 12:20] == 1).all() and (whole == 1).sum() == 64
    # a window grown by 16 px (the minimum ring; rows 0..46, cols 0..44) holds no green
    # background: the whole box is foreground, as GrabCut on the cropped image finds
    window = grabcut_seeds(image, box, padding=5, context=0.1)[0]
    assert (window[10:26, 8:24] == 1).all() and (window == 1).sum() == 256
    cropped = grabcut_seeds(np.ascontiguousarray(image[:47, :45]), box, padding=5)[0]
    assert torch.equal(window[:47, :45], cropped) and (window[:, 45:] == 0).all()
    # a window reaching the far green sees it again
    assert torch.equal(grabcut_seeds(image, box, padding=5, context=3.0)[0], whole)
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


def literal_owner(boxes, height, width):
    """The smallest box holding each pixel (-1 outside), by brute force over the boxes."""
    owner = [[-1] * width for _ in range(height)]
    for y in range(height):
        for x in range(width):
            best = None
            for k, box in enumerate(boxes):
                x0, y0, x1, y1 = box["box"]
                area = (x1 - x0 + 1) * (y1 - y0 + 1)
                if x0 <= x <= x1 and y0 <= y <= y1 and (best is None or area < best[0]):
                    best = (area, k)
            if best is not None:
                owner[y][x] = best[1]
    return owner


def literal_fusion(m_b, m_i, boxes):
    """Eq. 3.4 (DESIGN §6 "Box seeds"), pixel by pixel: outside every box M_B; inside, M_I
    where it agrees with M_B; M_B where the box class is absent from M_I inside the box;
    otherwise unknown."""
    height, width = len(m_b), len(m_b[0])
    owner = literal_owner(boxes, height, width)
    out = [[U] * width for _ in range(height)]
    for y in range(height):
        for x in range(width):
            k = owner[y][x]
            if k < 0:
                out[y][x] = m_b[y][x]
                continue
            x0, y0, x1, y1 = boxes[k]["box"]
            present = any(m_i[yy][xx] == boxes[k]["cls"]
                          for yy in range(y0, y1 + 1) for xx in range(x0, x1 + 1))
            if m_i[y][x] == m_b[y][x]:
                out[y][x] = m_i[y][x]
            elif not present:
                out[y][x] = m_b[y][x]
    return out


def literal_confident(m_i, scores, fraction=0.4, background=0.8, min_score=0.01):
    """M'_I: per foreground class, the pixels strictly above the score of rank
    int(n * (1 - fraction)) in the ascending list of its n scores above min_score (the A²GNN
    code's infer_SEAM.py cut); background above ``background``."""
    height, width = len(m_i), len(m_i[0])
    out = [[U] * width for _ in range(height)]
    for cls in {v for row in m_i for v in row} - {U}:
        pixels = [(y, x) for y in range(height) for x in range(width) if m_i[y][x] == cls]
        if cls == 0:
            for y, x in pixels:
                if scores[y][x] > background:
                    out[y][x] = 0
            continue
        ranked = sorted(scores[y][x] for y, x in pixels if scores[y][x] > min_score)
        rank = int(len(ranked) * (1 - fraction))
        if rank < 1:
            continue
        for y, x in pixels:
            if scores[y][x] > ranked[rank]:
                out[y][x] = cls
    return out


def random_case(generator, height=5, width=9):
    boxes = []
    for _ in range(int(generator.integers(1, 4))):
        x0, x1 = sorted(generator.integers(0, width, 2).tolist())
        y0, y1 = sorted(generator.integers(0, height, 2).tolist())
        boxes.append({"cls": int(generator.integers(1, 4)), "box": [x0, y0, x1, y1]})
    owner = literal_owner(boxes, height, width)
    m_b = [[0 if owner[y][x] < 0 else
            int(generator.choice([boxes[owner[y][x]]["cls"], U])) for x in range(width)]
           for y in range(height)]
    m_i = generator.integers(0, 4, (height, width)).tolist()
    scores = generator.random((height, width)).round(3).tolist()
    return boxes, m_b, m_i, scores


def test_fuse_box_seeds_matches_eq_3_4_pixel_by_pixel():
    generator = np.random.default_rng(0)
    for _ in range(40):
        boxes, m_b, m_i, _ = random_case(generator)
        fused = fuse_box_seeds(torch.tensor([m_b]), torch.tensor([m_i]), boxes)
        assert fused[0].tolist() == literal_fusion(m_b, m_i, boxes)


def test_confident_box_seeds_literal_and_subset_of_fused():
    generator = np.random.default_rng(1)
    fewer = outside = 0
    for _ in range(60):
        boxes, m_b, m_i, scores = random_case(generator)
        m_f = literal_fusion(m_b, m_i, boxes)
        confident_fused = literal_fusion(m_b, literal_confident(m_i, scores), boxes)
        expected = [[m_f[y][x] if confident_fused[y][x] == m_f[y][x] else U
                     for x in range(len(m_f[0]))] for y in range(len(m_f))]
        m_g = confident_box_seeds(torch.tensor([m_f]), torch.tensor([m_b]), torch.tensor([m_i]),
                                  torch.tensor([scores], dtype=torch.float64), [boxes])
        assert m_g[0].tolist() == expected
        # M_g ⊆ M_F: every pixel M_g labels, M_F labels with the same class
        for y in range(len(m_f)):
            for x in range(len(m_f[0])):
                assert m_g[0, y, x] == U or m_g[0, y, x] == m_f[y][x]
        labelled_g = int((m_g != U).sum())
        labelled_f = sum(v != U for row in m_f for v in row)
        assert labelled_g <= labelled_f
        fewer += labelled_g < labelled_f
        outside += any(c not in (U, f)
                       for row_c, row_f in zip(confident_fused, m_f, strict=True)
                       for c, f in zip(row_c, row_f, strict=True))
    # "M_g has fewer annotated nodes" than M_F (30 of these 60 cases); Eq. 3.4 redone with
    # M'_I alone labels pixels outside M_F in some (the fallback branch), which M_g drops
    assert fewer >= 25 and outside >= 1


def test_confident_box_seeds_each_branch():
    boxes = [{"cls": 1, "box": [0, 0, 5, 0]}, {"cls": 2, "box": [6, 0, 8, 0]}]
    box_seeds = torch.tensor([[[1, 1, 1, 1, U, 1, 2, 2, 2, 0, 0]]])
    cam_seeds = torch.tensor([[[1, 1, 1, 1, 1, 0, 0, 2, 0, 0, 0]]])
    scores = torch.tensor([[[0.2, 0.3, 0.6, 0.9, 0.8, 0.9, 0.5, 0.1, 0.5, 0.95, 0.5]]])
    fused = fuse_box_seeds(box_seeds, cam_seeds, boxes)
    # box 1: M_I agrees on x = 0..3; box 2: class 2 appears in M_I (x = 7), agrees there only
    assert fused.tolist() == [[[1, 1, 1, 1, U, U, U, 2, U, 0, 0]]]
    seeds = confident_box_seeds(fused, box_seeds, cam_seeds, scores, boxes)
    # M'_I: class 1 has 5 pixels, cut at rank int(5 * 0.6) = 3 (score 0.8): only x = 3 (0.9);
    # class 2's single pixel gives rank 0 (none); background only where above 0.8 (x = 5, 9).
    # Box 1 keeps the agreeing x = 3. Box 2: class 2 is absent from M'_I, so Eq. 3.4's
    # fallback would give M_B at x = 6, 8 where M_F is unknown: M_g drops them (M_g ⊆ M_F)
    # and keeps x = 7, where M_F has 2. Outside the boxes M_B stays, confident or not.
    assert seeds.tolist() == [[[U, U, U, 1, U, U, U, 2, U, 0, 0]]]
    with pytest.raises(TypeError, match="needs the boxes M_B came from"):
        confident_box_seeds(fused, box_seeds, cam_seeds, scores)


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
