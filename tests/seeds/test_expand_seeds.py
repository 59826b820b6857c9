"""Point rasterisation, superpixel expansion of scribbles/points, and IAL region mining."""

import numpy as np
import pytest
import torch

from graphseg.graph import SuperpixelGraph
from graphseg.seeds import (
    expand_seeds,
    mine_confident_regions,
    rasterize_points,
    rasterize_scribbles,
)

U = 255
REGIONS = torch.tensor([[[0, 0, 1, 1, 2],
                         [0, 0, 1, 1, 2],
                         [3, 3, 3, 2, 2]]])


def test_rasterize_points_rounding_and_disks():
    seeds = rasterize_points([{"x": 1.4, "y": 0.6, "cls": 3}, {"x": 3.5, "y": 2.0, "cls": 0}],
                             3, 5)
    assert seeds.tolist() == [[[U, U, U, U, U], [U, 3, U, U, U], [U, U, U, U, 0]]]
    disks = rasterize_points([[{"x": 1.0, "y": 1.0, "cls": 1}, {"x": 3.0, "y": 1.0, "cls": 2}]],
                             3, 5, radius=1)
    # the disks touch at x = 2, where the points are equally near: the first listed wins
    assert disks.tolist() == [[[U, 1, U, 2, U], [1, 1, 1, 2, 2], [U, 1, U, 2, U]]]


def test_rasterize_points_errors():
    with pytest.raises(ValueError, match=r"points\[0\]\[0\] lies outside the 3x5"):
        rasterize_points([{"x": 5.0, "y": 1.0, "cls": 1}], 3, 5)
    with pytest.raises(ValueError, match=r"\['cls'\] must be a class id >= 0 and "
                                         r"< num_classes=2, got 4"):
        rasterize_points([{"x": 1.0, "y": 1.0, "cls": 4}], 3, 5, num_classes=2)
    with pytest.raises(TypeError, match=r"points\[0\]\[0\] must be a dict"):
        rasterize_points([(1, 1, 1)], 3, 5)


def test_expand_seeds_unambiguous_regions_only():
    scribble = torch.full_like(REGIONS, U)
    scribble[0, 0, 0] = 1          # region 0: one label -> whole region
    scribble[0, 0, 2] = 1          # region 1: two labels -> ambiguous, only the marks
    scribble[0, 1, 3] = 2
    scribble[0, 2, 0] = 0          # region 3: background
    expanded = expand_seeds(scribble, REGIONS)
    assert expanded.tolist() == [[[1, 1, 1, U, U],
                                  [1, 1, U, 2, U],
                                  [0, 0, 0, U, U]]]


def test_expand_seeds_batch_and_superpixel_graph():
    regions = REGIONS.expand(2, -1, -1).clone()
    points = rasterize_points([[{"x": 4.0, "y": 0.0, "cls": 5}], [{"x": 0.0, "y": 2.0, "cls": 1}]],
                              3, 5)
    expanded = expand_seeds(points, regions)
    assert (expanded[0][REGIONS[0] == 2] == 5).all() and (expanded[0][REGIONS[0] != 2] == U).all()
    assert (expanded[1][REGIONS[0] == 3] == 1).all() and (expanded[1][REGIONS[0] != 3] == U).all()
    graph = SuperpixelGraph(torch.rand(2, 3, 3, 5), regions)
    assert torch.equal(expand_seeds(points, graph), expanded)
    with pytest.raises(ValueError, match="seeds and regions must have the same"):
        expand_seeds(points[:, :2], regions)


def test_mine_confident_regions_ratio():
    regions = torch.tensor([[[0] * 5 + [1] * 5 + [2] * 5]]).view(1, 3, 5)
    prediction = torch.tensor([[[1, 1, 1, 1, 2],        # region 0: 80% class 1 -> sample
                                [3, 3, 3, 0, 0],        # region 1: 60% class 3 -> not
                                [4, 4, 4, 4, U]]])      # region 2: 80% class 4, 255 counted
    mined = mine_confident_regions(prediction, regions)
    assert mined.tolist() == [[[1] * 5, [U] * 5, [4] * 5]]
    assert (mine_confident_regions(prediction, regions, ratio=0.9) == U).all()
    scores = torch.nn.functional.one_hot(prediction.clamp_max(4), 5).permute(0, 3, 1, 2).float()
    assert mine_confident_regions(scores, regions)[0, 0].tolist() == [1] * 5
    with pytest.raises(ValueError, match=r"ratio must lie in \(0.5, 1\]"):
        mine_confident_regions(prediction, regions, ratio=0.4)
    with pytest.raises(ValueError, match="prediction and regions must have the same"):
        mine_confident_regions(prediction, regions[:, :2])


def test_mine_confident_regions_random_against_loop():
    generator = np.random.default_rng(1)
    regions = torch.from_numpy(generator.integers(0, 6, (2, 7, 8)))
    prediction = torch.from_numpy(np.where(generator.random((2, 7, 8)) < 0.9, 1,
                                           generator.integers(0, 3, (2, 7, 8))))
    mined = mine_confident_regions(prediction, regions)
    for b in range(2):
        for region in regions[b].unique().tolist():
            member = regions[b] == region
            values, counts = prediction[b][member].unique(return_counts=True)
            best = int(counts.argmax())
            label = int(values[best]) if counts[best] >= 0.8 * member.sum() else U
            assert (mined[b][member] == label).all()


def test_rasterize_scribbles_draws_connected_strokes():
    seeds = rasterize_scribbles([{"cls": 2, "points": [[0, 1], [6, 1]]},
                                 {"cls": 0, "points": [[3, 0], [3, 4], [5, 4]]}], 5, 7,
                                radius=0)
    # where the strokes cross, both samples lie at distance 0: the first scribble wins
    assert seeds[0, 1].tolist() == [2] * 7
    assert seeds[0, :, 3].tolist() == [0, 2, 0, 0, 0]
    assert seeds[0, 4, 3:6].tolist() == [0, 0, 0]
    assert int((seeds != U).sum()) == 7 + 5 + 2 - 1
    # a single vertex is a point; a radius widens the stroke
    point = rasterize_scribbles([{"cls": 1, "points": [[2.0, 2.0]]}], 5, 5, radius=1)
    assert torch.equal(point, rasterize_points([{"x": 2.0, "y": 2.0, "cls": 1}], 5, 5, radius=1))
    wide = rasterize_scribbles([{"cls": 1, "points": [[0, 2], [4, 2]]}], 5, 5, radius=1)
    assert wide[0, 1:4].eq(1).all() and wide[0, [0, 4]].eq(U).all()


def test_rasterize_scribbles_batches_and_checks():
    batch = rasterize_scribbles([[{"cls": 1, "points": [[0, 0], [2, 0]]}], []], 3, 3)
    assert batch.shape == (2, 3, 3) and bool((batch[1] == U).all())
    with pytest.raises(TypeError, match=r"scribbles\[0\]\[0\]"):
        rasterize_scribbles([{"cls": 1, "line": [[0, 0]]}], 3, 3)
    with pytest.raises(ValueError, match="non-empty"):
        rasterize_scribbles([{"cls": 1, "points": []}], 3, 3)
    with pytest.raises(ValueError, match="outside"):
        rasterize_scribbles([{"cls": 1, "points": [[0, 0], [3, 0]]}], 3, 3)
    with pytest.raises(TypeError, match=r"\['points'\]\[1\]"):
        rasterize_scribbles([{"cls": 1, "points": [[0, 0], [1, 1, 1]]}], 3, 3)
    with pytest.raises(ValueError, match="num_classes"):
        rasterize_scribbles([{"cls": 4, "points": [[0, 0]]}], 3, 3, num_classes=3)


def test_merge_seeds_annotation_wins_then_cam_seeds():
    from graphseg.seeds import merge_seeds

    annotation = torch.tensor([[[1, 1, 0, 255, 255, 255]]])
    cam = torch.tensor([[[1, 0, 255, 2, 255, 0]]])
    merged = merge_seeds(annotation, cam)
    for x in range(6):
        a, c = int(annotation[0, 0, x]), int(cam[0, 0, x])
        assert int(merged[0, 0, x]) == (a if a != 255 else c)
    # x = 1: annotation 1 against CAM 0, the annotation wins
    assert merged.tolist() == [[[1, 1, 0, 2, 255, 0]]]
    with pytest.raises(ValueError, match="cam_seeds and annotation must have the same"):
        merge_seeds(annotation, cam[..., :5])
