"""Metrics against hand-computed confusion matrices."""

import math

import numpy as np
import pytest
import torch

from graphseg.metrics import (
    confusion_matrix,
    error_rate,
    foreground_iou,
    mean_iou,
    per_class_iou,
    seed_scores,
)

V = 255
TARGET = torch.tensor([[0, 0, 1, 1, 2],
                       [0, 1, 1, V, 2]])
PRED = torch.tensor([[0, 1, 1, 1, 0],
                     [0, 1, 2, 0, 2]])


def test_confusion_matrix_by_hand():
    confusion = confusion_matrix(PRED, TARGET, num_classes=4)
    # rows: truth, columns: prediction; the void pixel is not scored
    expected = torch.tensor([[2, 1, 0, 0],
                             [0, 3, 1, 0],
                             [1, 0, 1, 0],
                             [0, 0, 0, 0]])
    assert torch.equal(confusion, expected)
    batched = confusion_matrix(torch.stack([PRED, PRED]), np.stack([TARGET, TARGET]),
                               num_classes=4)
    assert torch.equal(batched, 2 * expected)


def test_iou_metrics_by_hand():
    confusion = confusion_matrix(PRED, TARGET, num_classes=4)
    iou = per_class_iou(confusion)
    assert iou[:3].tolist() == pytest.approx([2 / 4, 3 / 5, 1 / 3])
    assert math.isnan(iou[3])
    assert mean_iou(confusion) == pytest.approx((2 / 4 + 3 / 5 + 1 / 3) / 3)
    # class 3 only predicted: counted (IoU 0) by "union", not by "present"
    spurious = confusion.clone()
    spurious[0, 3] = 2
    assert mean_iou(spurious, classes="present") == pytest.approx((2 / 6 + 3 / 5 + 1 / 3) / 3)
    assert mean_iou(spurious, classes="union") == pytest.approx((2 / 6 + 3 / 5 + 1 / 3) / 4)
    # foreground = classes 1 and 2 merged: hits 3 + 1 + 0 (1->2 is still foreground) = 5
    assert foreground_iou(confusion) == pytest.approx(5 / (9 - 2))


def test_error_rate_whole_and_region():
    assert error_rate(PRED, TARGET) == pytest.approx(3 / 9)
    region = torch.zeros_like(TARGET, dtype=torch.bool)
    region[:, 3:] = True
    assert error_rate(PRED, TARGET, region=region) == pytest.approx(1 / 3)
    assert math.isnan(error_rate(PRED, torch.full_like(TARGET, V)))


def test_seed_scores_partial_labels():
    seeds = torch.tensor([[0, V, 1, V, 2],
                          [V, 1, 2, 0, V]])
    confusion = confusion_matrix(seeds, TARGET, num_classes=3, unlabelled=V)
    assert confusion.shape == (3, 4)
    assert torch.equal(confusion, torch.tensor([[1, 0, 0, 2],
                                                [0, 2, 1, 1],
                                                [0, 0, 1, 1]]))
    scores = seed_scores(confusion)
    assert scores.precision == pytest.approx(4 / 5)
    assert scores.recall == pytest.approx(4 / 9)
    assert scores.coverage == pytest.approx(5 / 9)
    assert scores.class_precision.tolist() == pytest.approx([1.0, 1.0, 1 / 2])
    assert scores.class_recall.tolist() == pytest.approx([1 / 3, 2 / 4, 1 / 2])


def test_metric_errors():
    with pytest.raises(ValueError, match="pred and target must have the same batch and image"):
        confusion_matrix(PRED[:, :4], TARGET, num_classes=3)
    with pytest.raises(ValueError, match=r"pred must hold class ids in \[0, 3\) at scored pixels, "
                                         r"got the value 255; for partially labelled"):
        confusion_matrix(torch.full_like(PRED, V), TARGET, num_classes=3)
    with pytest.raises(ValueError, match=r"target must hold class ids in \[0, 2\)"):
        confusion_matrix(PRED, TARGET, num_classes=2)
    with pytest.raises(ValueError, match=r"confusion must be a square"):
        per_class_iou(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"confusion must be a \(C, C \+ 1\)"):
        seed_scores(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="pred must be an integer"):
        error_rate(PRED.float(), TARGET)
