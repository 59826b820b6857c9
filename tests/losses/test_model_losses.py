"""The losses of the learned models (graphseg.losses.affinity, .seed, .pairwise and .mp) against
the thesis's equations written out on tiny inputs."""

import math

import pytest
import torch

from graphseg import WindowGraph, pixel_graph, window_offsets
from graphseg.losses import (
    affinity_contrast_loss,
    affinity_loss,
    affinity_regular_loss,
    consistency_check,
    mp_loss,
    mp_pixels,
    potts_loss,
    seed_cross_entropy,
)
from graphseg.seeds import pair_labels

pytestmark = pytest.mark.usefixtures("each_backend")

# a 1x4 strip: seeds bg, bg, fg, fg -> pairs (0,1) background, (1,2) negative, (2,3) foreground
STRIP_SEEDS = torch.tensor([[[0, 0, 1, 1]]])
STRIP_FEATURES = torch.tensor([[[[0.0, 1.0, 1.0, 3.0]], [[0.0, 0.0, 2.0, 2.0]]]],
                              dtype=torch.float64)  # distances / d: 0.5, 1.0, 1.0


def strip_pairs():
    return pair_labels(STRIP_SEEDS, radius=1, shape="square")


def test_affinity_contrast_paper_by_hand():
    loss = affinity_contrast_loss(STRIP_FEATURES, strip_pairs(), variant="paper")
    positive = (0.5 + 1.0) / 2  # -log D = ‖ΔF‖₁ / d, each pair counted in both directions
    negative = -math.log(1 - math.exp(-1.0))
    assert float(loss) == pytest.approx(positive + negative, rel=1e-12)


def test_affinity_contrast_official_by_hand():
    loss = affinity_contrast_loss(STRIP_FEATURES, strip_pairs(), variant="official")
    eps = 1e-5
    expected = (-math.log(math.exp(-0.5) + eps) / 4 - math.log(math.exp(-1.0) + eps) / 4
                - math.log(1 + eps - math.exp(-1.0)) / 2)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_affinity_contrast_finite_on_identical_negatives():
    features = torch.zeros(1, 2, 1, 4, dtype=torch.float64, requires_grad=True)
    for variant in ("paper", "official"):
        loss = affinity_contrast_loss(features, strip_pairs(), variant=variant)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(features.grad).all()


def test_affinity_regular_by_hand():
    image = torch.tensor([[[[0.0, 0.2, 0.2, 1.0]]] * 3], dtype=torch.float64)
    sigma_xy, sigma_rgb = 2.0, 0.5
    total, count = 0.0, 0
    distance = [0.5, 1.0, 1.0]  # between pixels (0,1), (1,2), (2,3)
    for i in range(3):
        colour = 3 * float(image[0, 0, 0, i + 1] - image[0, 0, 0, i]) ** 2
        g = math.exp(-1 / (2 * sigma_xy**2) - colour / (2 * sigma_rgb**2))
        total += 2 * g * distance[i]  # both directions
        count += 2
    offsets = window_offsets(1, "square")
    paper = affinity_regular_loss(STRIP_FEATURES, image, offsets, variant="paper",
                                  sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, normalize=None)
    official = affinity_regular_loss(STRIP_FEATURES, image, offsets, sigma_xy=sigma_xy,
                                     sigma_rgb=sigma_rgb, normalize=None)
    assert float(paper) == pytest.approx(total, rel=1e-12)
    assert float(official) == pytest.approx(total / count, rel=1e-12)
    combined = affinity_loss(STRIP_FEATURES, strip_pairs(), image=image, lam=3.0,
                             sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, normalize=None)
    contrast = affinity_contrast_loss(STRIP_FEATURES, strip_pairs())
    assert float(combined) == pytest.approx(float(contrast) + 3 * float(official), rel=1e-12)


def test_affinity_regular_resizes_image():
    image = torch.rand(1, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    features = torch.rand(1, 4, 2, 4, dtype=torch.float32)
    offsets = window_offsets(1)
    small = torch.nn.functional.interpolate(image, size=(2, 4), mode="bilinear",
                                            align_corners=False)
    torch.testing.assert_close(affinity_regular_loss(features, image, offsets),
                               affinity_regular_loss(features, small, offsets))


def brute_potts(probs, graph):
    batch, classes, height, width = probs.shape
    total = 0.0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for k, (dy, dx) in enumerate(graph.offsets.tolist()):
                    if 0 <= y + dy < height and 0 <= x + dx < width:
                        g = float(graph.weight[b, k, y, x])
                        for c in range(classes):
                            total += (g * float(probs[b, c, y, x])
                                      * (1 - float(probs[b, c, y + dy, x + dx])))
    return total / (batch * height * width)


def test_potts_equals_brute_force_and_pyg():
    generator = torch.Generator().manual_seed(1)
    graph = pixel_graph(torch.rand(2, 3, 5, 6, generator=generator, dtype=torch.float64),
                        radius=2, self_weight=1.0)
    probs = torch.rand(2, 3, 5, 6, generator=generator, dtype=torch.float64).softmax(1)
    loss = potts_loss(probs, graph)
    assert float(loss) == pytest.approx(brute_potts(probs, graph), rel=1e-10)
    single = WindowGraph(graph.weight[:1], graph.offsets, self_weight=1.0)
    flat = potts_loss(probs[0].flatten(1).t(), single.to_pyg())
    assert float(flat) == pytest.approx(float(potts_loss(probs[:1], single)), rel=1e-10)


def test_potts_zero_on_constant_labels_and_gradient():
    graph = pixel_graph(torch.rand(3, 5, 6), radius=2)
    constant = torch.zeros(1, 3, 5, 6)
    constant[:, 1] = 1
    assert float(potts_loss(constant, graph)) == 0.0
    probs = torch.rand(1, 3, 5, 6, requires_grad=True)
    potts_loss(probs.softmax(1), graph).backward()
    assert probs.grad.abs().sum() > 0


def test_seed_cross_entropy_variants():
    logits = torch.tensor([[[[2.0, 0.0, 1.0, 0.5]], [[0.0, 1.0, 3.0, 0.5]]]])
    seeds = torch.tensor([[[0, 0, 1, 255]]])
    nll = -logits.log_softmax(1)[0, :, 0]  # (C, W)
    paper = seed_cross_entropy(logits, seeds, variant="paper")
    official = seed_cross_entropy(logits, seeds, variant="official")
    torch.testing.assert_close(paper, (nll[0, 0] + nll[0, 1] + nll[1, 2]) / 3)
    torch.testing.assert_close(official, (nll[0, 0] + nll[0, 1]) / 2 + nll[1, 2])
    torch.testing.assert_close(
        seed_cross_entropy(logits[0, :, 0].t(), seeds[0, 0], variant="official"), official)


def brute_mp(probs, cls, x0, y0, x1, y1):
    chosen = set()
    for y in range(y0, y1 + 1):
        row = [float(probs[cls, y, x]) for x in range(x0, x1 + 1)]
        chosen.add((y, x0 + row.index(max(row))))
    for x in range(x0, x1 + 1):
        col = [float(probs[cls, y, x]) for y in range(y0, y1 + 1)]
        chosen.add((y0 + col.index(max(col)), x))
    return chosen


def test_mp_pixels_hand_made_box():
    logits = torch.zeros(1, 2, 5, 6)
    logits[0, 1, 1, 2] = 5  # the best pixel of row 1 and of column 2
    logits[0, 1, 3, 4] = 4  # the best of row 3 and of column 4
    logits[0, 1, 2, 1] = 3  # the best of row 2 and of column 1
    boxes = [{"cls": 1, "box": [1, 1, 4, 3]}]  # x 1..4, y 1..3
    (pixels,) = mp_pixels(logits, boxes)[0]
    chosen = {(int(p) // 6, int(p) % 6) for p in pixels}
    # column 3 is flat inside the box: its first row (1) wins
    assert chosen == {(1, 2), (3, 4), (2, 1), (1, 3)}
    logits = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(2))
    boxes = [[{"cls": 1, "box": [0, 1, 4, 5]}, {"cls": 2, "box": [3, 0, 6, 2]}],
             [{"cls": 2, "box": [2, 2, 2, 4]}]]
    probs = logits.softmax(1)
    for b, image_boxes in enumerate(mp_pixels(logits, boxes)):
        for box, pixels in zip(boxes[b], image_boxes, strict=True):
            expected = brute_mp(probs[b], box["cls"], *box["box"])
            assert {(int(p) // 7, int(p) % 7) for p in pixels} == expected


def test_mp_loss_by_hand():
    logits = torch.zeros(1, 2, 3, 3)
    logits[0, 1, 0, 0] = 2.0
    logits[0, 1, 1, 1] = 1.0
    features = torch.zeros(1, 2, 3, 3)
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 1, 1] = torch.tensor([1.0, 1.0])
    boxes = [{"cls": 1, "box": [0, 0, 1, 1]}]  # rows/cols 0..1: picks (0,0) and (1,1)
    ce = -(logits[0, :, 0, 0].log_softmax(0)[1] + logits[0, :, 1, 1].log_softmax(0)[1]) / 2
    expected = ce + (1 - 1 / math.sqrt(2))
    torch.testing.assert_close(mp_loss(logits, features, boxes), expected)
    assert float(mp_loss(logits, features, [])) == 0.0


def test_consistency_check_hand_made():
    logits = torch.zeros(1, 3, 4, 5)
    logits[0, 1, 1, 1] = 4.0  # MP pixels of the class-1 box concentrate on (1, 1)
    features = torch.zeros(1, 2, 4, 5)
    features[0, 0] = 1.0  # everything points along +x ...
    features[0, :, 2, 2] = torch.tensor([-1.0, 0.2])  # ... but (2, 2) and (1, 3) point away
    features[0, :, 1, 3] = torch.tensor([-1.0, 0.0])
    seeds = torch.full((1, 4, 5), 255)
    seeds[0, 1, 1] = 1
    seeds[0, 2, 2] = 1  # class 1, opposite to the prototype: pruned
    seeds[0, 1, 3] = 2  # another class inside the box: kept
    seeds[0, 3, 4] = 1  # outside the box: kept
    boxes = [{"cls": 1, "box": [0, 0, 3, 2]}]
    pruned = consistency_check(seeds, logits, features, boxes)
    expected = seeds.clone()
    expected[0, 2, 2] = 255
    assert torch.equal(pruned, expected)
    assert int(seeds[0, 2, 2]) == 1  # input untouched


def test_bad_arguments():
    pairs = strip_pairs()
    with pytest.raises(TypeError, match="pairs must be the PairLabels"):
        affinity_contrast_loss(STRIP_FEATURES, pairs.background)
    with pytest.raises(ValueError, match=r"pairs must be \(B, K, H, W\) = \(1, 8, 1, 5\)"):
        affinity_contrast_loss(torch.rand(1, 2, 1, 5), pairs)
    with pytest.raises(ValueError, match="variant must be one of"):
        affinity_contrast_loss(STRIP_FEATURES, pairs, variant="thesis")
    with pytest.raises(ValueError, match=r"seeds must have shape \(1, 1, 4\)"):
        seed_cross_entropy(torch.rand(1, 2, 1, 4), torch.zeros(1, 1, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="seeds must be an int64 tensor"):
        seed_cross_entropy(torch.rand(1, 2, 1, 4), torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match=r"seeds must hold class ids in \[0, 2\)"):
        seed_cross_entropy(torch.rand(1, 2, 1, 4), torch.full((1, 1, 4), 3))
    with pytest.raises(ValueError, match=r"boxes\[0\]\[0\]\['box'\] lies outside"):
        mp_loss(torch.rand(1, 2, 3, 3), torch.rand(1, 4, 3, 3),
                [{"cls": 1, "box": [0, 0, 3, 1]}])
    with pytest.raises(ValueError, match="must be a foreground class id"):
        mp_pixels(torch.rand(1, 2, 3, 3), [{"cls": 2, "box": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match=r"probs must be a float \(16, C\) tensor"):
        potts_loss(torch.rand(15, 2), pixel_graph(torch.rand(3, 4, 4), radius=1).to_pyg())
    with pytest.raises(TypeError, match="graph must be a WindowGraph, an EdgeGraph"):
        potts_loss(torch.rand(1, 2, 4, 4), torch.rand(3))
