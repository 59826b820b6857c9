"""IAL's region classifier f^m (graphseg.nn.unary): mask pooling, the loss L_m and its use in
mining."""

import math

import pytest
import torch

from graphseg.nn.unary import RegionClassifier, UnaryNet, region_loss, region_pool
from graphseg.seeds import mine_confident_regions

U = 255


def test_region_pool_is_the_mean_feature_of_each_region():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    regions = torch.randint(0, 3, (2, 4, 5), generator=generator)
    regions[:, 0, 0] = 2  # region 2 exists in both images: ids 0..2 and 3..5
    pooled = region_pool(features, regions)
    assert pooled.shape == (6, 3)
    for b in range(2):
        for r in range(3):
            members = [(y, x) for y in range(4) for x in range(5) if regions[b, y, x] == r]
            for c in range(3):
                expected = (sum(float(features[b, c, y, x]) for y, x in members) / len(members)
                            if members else 0.0)
                assert float(pooled[b * 3 + r, c]) == pytest.approx(expected, abs=1e-12)


def test_region_loss_is_the_cross_entropy_over_the_mined_regions():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-2.0, 1.0, 0.0],
                           [1.5, 1.5, -0.5]], dtype=torch.float64)
    labels = torch.tensor([0, U, 1, 2])
    terms = []
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        if label == U:
            continue
        terms.append(-math.log(math.exp(row[label]) / sum(math.exp(v) for v in row)))
    assert float(region_loss(logits, labels)) == pytest.approx(sum(terms) / len(terms),
                                                               rel=1e-12)
    assert float(region_loss(logits, torch.full((4,), U))) == 0.0


def test_region_classifier_drops_a_mined_region_that_looks_like_another_class():
    # five regions in a row; A, B and E share one feature vector, C and D another. The argmax
    # mining calls A, B class 0 and C, D, E class 1: f^m, trained on those five labels, puts
    # E's features with A and B (two to one) and mining drops E.
    regions = torch.tensor([[[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]]])
    prediction = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]])
    look = torch.tensor([0, 0, 1, 1, 0])  # the feature vector of each region
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[look[regions[0, 0]]].t()[None, :, None]
    candidates = mine_confident_regions(prediction, regions)
    assert candidates.tolist() == prediction.tolist()
    labels = candidates[0, 0, ::2].clone()
    torch.manual_seed(0)
    classifier = RegionClassifier(2, 2).fit(features, regions, labels, steps=200, lr=0.1)
    predicted = classifier(features, regions).argmax(1)
    assert predicted.tolist() == [0, 0, 1, 1, 0]
    mined = mine_confident_regions(prediction, regions, classified=predicted[regions])
    assert mined.tolist() == [[[0, 0, 0, 0, 1, 1, 1, 1, U, U]]]
    assert repr(classifier) == "RegionClassifier(features=2, num_classes=2)"


def test_region_classifier_takes_the_unary_features():
    unary = UnaryNet(3, stride=2)
    image = torch.rand(1, 3, 16, 16)
    features = unary.embed(image)
    regions = torch.arange(4).repeat_interleave(16).view(1, 8, 8)
    logits = RegionClassifier(unary.features, 3)(features, regions)
    assert logits.shape == (4, 3)


def test_pooling_a_batch_in_pieces_gives_the_regions_in_the_same_order():
    # what the folder-level mining relies on: region ids are shifted image by image, so the
    # mean features of pieces of a batch, concatenated, are those of the whole batch
    generator = torch.Generator().manual_seed(3)
    features = torch.rand(5, 4, 6, 7, generator=generator)
    regions = torch.randint(0, 5, (5, 6, 7), generator=generator)
    whole = region_pool(features, regions)
    pieces = torch.cat([region_pool(features[s : s + 2], regions[s : s + 2])
                        for s in range(0, 5, 2)])
    torch.testing.assert_close(pieces, whole, rtol=0, atol=0)
    labels = torch.randint(0, 2, (len(whole),), generator=generator)
    torch.manual_seed(0)
    fitted = RegionClassifier(4, 2).fit(features, regions, labels, steps=20)
    torch.manual_seed(0)
    pooled = RegionClassifier(4, 2).fit_pooled(pieces, labels, steps=20)
    assert all(torch.equal(a, b) for a, b in zip(fitted.parameters(), pooled.parameters(),
                                                  strict=True))
