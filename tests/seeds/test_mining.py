"""Confident-region mining with the region classifier's classes (IAL: a mined region whose
predicted class disagrees is dropped)."""

import pytest
import torch

from graphseg.seeds import mine_confident_regions

U = 255
REGIONS = torch.tensor([[[0] * 5 + [1] * 5 + [2] * 5]]).view(1, 3, 5)
PREDICTION = torch.tensor([[[1, 1, 1, 1, 2],        # region 0: 80% class 1 -> mined 1
                            [3, 3, 3, 0, 0],        # region 1: 60% class 3 -> not mined
                            [4, 4, 4, 4, 4]]])      # region 2: class 4 -> mined 4


def test_a_region_the_classifier_puts_in_another_class_is_dropped():
    assert mine_confident_regions(PREDICTION, REGIONS).tolist() == [[[1] * 5, [U] * 5, [4] * 5]]
    classified = torch.tensor([1, 3, 0])[REGIONS]  # agrees on 0, disagrees on 2
    mined = mine_confident_regions(PREDICTION, REGIONS, classified=classified)
    assert mined.tolist() == [[[1] * 5, [U] * 5, [U] * 5]]
    agreeing = torch.tensor([1, 0, 4])[REGIONS]
    assert mine_confident_regions(PREDICTION, REGIONS, classified=agreeing).tolist() == [
        [[1] * 5, [U] * 5, [4] * 5]]


def test_one_disagreeing_pixel_drops_the_whole_region():
    classified = torch.tensor([1, 0, 4])[REGIONS]
    classified[0, 2, 4] = 2
    mined = mine_confident_regions(PREDICTION, REGIONS, classified=classified)
    assert mined.tolist() == [[[1] * 5, [U] * 5, [U] * 5]]


def test_classified_must_match_the_regions():
    with pytest.raises(ValueError, match="classified and regions must have the same"):
        mine_confident_regions(PREDICTION, REGIONS, classified=torch.zeros(1, 2, 5,
                                                                           dtype=torch.long))
