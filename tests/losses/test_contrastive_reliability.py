import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphseg import feature_graph
from graphseg.losses.contrastive import ContrastiveAffinityLoss, contrastive_affinity_loss
from graphseg.losses.reliability import (
    DynamicThreshold,
    ReliabilityWeightedCrossEntropy,
    cam_perplexity,
    perplexity_reliability,
    reliability_weighted_cross_entropy,
    reliability_weights,
    search_threshold,
)
from graphseg.seeds import pair_labels


def generator(seed):
    return torch.Generator().manual_seed(seed)


def random_pairs(shape, seed):
    """Disjoint random positive / negative masks."""
    draw = torch.randint(0, 3, shape, generator=generator(seed))
    return draw == 1, draw == 2


# -- contrastive affinity loss ---------------------------------------------------------------


def brute_force(affinity, positive, negative, tau, pair_dim):
    """The InfoNCE sum written anchor by anchor, positive by positive."""
    affinity = affinity.movedim(pair_dim, -1).reshape(-1, affinity.shape[pair_dim])
    positive = positive.movedim(pair_dim, -1).reshape(affinity.shape)
    negative = negative.movedim(pair_dim, -1).reshape(affinity.shape)
    total, count = 0.0, 0
    for row, pos, neg in zip(affinity.tolist(), positive.tolist(), negative.tolist(),
                             strict=True):
        negatives = sum(math.exp(k / tau) for k, is_neg in zip(row, neg, strict=True) if is_neg)
        for q, is_pos in zip(row, pos, strict=True):
            if is_pos:
                total -= math.log(math.exp(q / tau) / (math.exp(q / tau) + negatives))
                count += 1
    return total / max(count, 1)


@pytest.mark.parametrize(("shape", "pair_dim"), [((2, 5, 3, 4), 1), ((2, 6, 6), 2)])
@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_contrastive_equals_brute_force(shape, pair_dim, tau):
    affinity = torch.rand(shape, generator=generator(0), dtype=torch.float64) * 2 - 1
    positive, negative = random_pairs(shape, 1)
    negative[..., 0] = False  # some anchors without negatives, rows (dense) or columns
    loss = contrastive_affinity_loss(affinity, positive, negative, tau=tau)
    expected = brute_force(affinity, positive, negative, tau, pair_dim)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_contrastive_single_anchor_by_hand():
    affinity = torch.tensor([[0.9, 0.2, -0.5]] * 3, dtype=torch.float64).unsqueeze(0)
    positive = torch.zeros(1, 3, 3, dtype=torch.bool)
    negative = torch.zeros_like(positive)
    positive[0, 0, 0] = True
    negative[0, 0, 1:] = True
    expected = math.log1p(math.exp((0.2 - 0.9) / 0.1) + math.exp((-0.5 - 0.9) / 0.1))
    assert float(contrastive_affinity_loss(affinity, positive, negative)) == pytest.approx(
        expected, rel=1e-12)


def test_contrastive_decreases_when_positives_align():
    seeds = torch.tensor([[[0, 0, 0, 1, 1, 1]] * 4])  # left background, right foreground
    pairs = pair_labels(seeds, radius=2, shape="square")
    noise = torch.randn(1, 8, 4, 6, generator=generator(2), dtype=torch.float64)
    prototypes = torch.randn(2, 8, generator=generator(3), dtype=torch.float64)
    aligned = prototypes[seeds[0]].permute(2, 0, 1).unsqueeze(0) + 0.05 * noise
    losses = []
    for features in (noise, aligned):
        affinity = feature_graph(features, kind="cosine", offsets=pairs.offsets).weight
        losses.append(float(contrastive_affinity_loss(affinity, pairs.positive, pairs.negative)))
    assert losses[1] < 0.5 * losses[0]


def test_contrastive_empty_sets_and_gradient():
    affinity = torch.rand(1, 4, 2, 2, generator=generator(4), dtype=torch.float64,
                          requires_grad=True)
    none = torch.zeros(1, 4, 2, 2, dtype=torch.bool)
    loss = contrastive_affinity_loss(affinity, none, none)
    loss.backward()
    assert float(loss.detach()) == 0 and torch.equal(affinity.grad, torch.zeros_like(affinity))
    positive = none.clone()
    positive[0, 0] = True  # positives whose anchors have no negative: log 1 = 0 each
    assert float(contrastive_affinity_loss(affinity, positive, none)) == 0


def printed_form(affinity, positive, negative, tau):
    """UniA Eq. 16 as transcribed (no logarithm, τ, the image's whole negative set S⁻),
    written positive by positive with explicit loops over each image."""
    total, count = 0.0, 0
    for a, pos, neg in zip(affinity, positive, negative, strict=True):
        values = a.flatten().tolist()
        is_pos, is_neg = pos.flatten().tolist(), neg.flatten().tolist()
        negatives = sum(math.exp(k / tau) for k, n in zip(values, is_neg, strict=True) if n)
        for q, p in zip(values, is_pos, strict=True):
            if p:
                total -= math.exp(q / tau) / (math.exp(q / tau) + negatives)
                count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (2, 6, 6)])
@pytest.mark.parametrize("tau", [0.1, 0.7])
def test_contrastive_paper_equals_printed_form(shape, tau):
    affinity = torch.rand(shape, generator=generator(11), dtype=torch.float64) * 2 - 1
    positive, negative = random_pairs(shape, 12)
    negative[1] = False  # an image without negatives: every share is 1
    loss = contrastive_affinity_loss(affinity, positive, negative, tau=tau, variant="paper")
    assert float(loss) == pytest.approx(printed_form(affinity, positive, negative, tau),
                                        rel=1e-12)
    assert -1 <= float(loss) <= 0
    # not the InfoNCE form: no logarithm, negatives of the whole image
    infonce = contrastive_affinity_loss(affinity, positive, negative, tau=tau)
    assert float(infonce) > 0 and abs(float(infonce) - float(loss)) > 1e-3
    # τ matters (the printed form has a temperature)
    other = contrastive_affinity_loss(affinity, positive, negative, tau=2 * tau, variant="paper")
    assert abs(float(other) - float(loss)) > 1e-6
    small = affinity[:1, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: contrastive_affinity_loss(
        a, positive[:1, :3], negative[:1, :3], tau=0.5, variant="paper"), (small,))


def test_contrastive_paper_decreases_when_positives_rise():
    affinity = torch.tensor([[[0.2, -0.1], [0.0, 0.3]]], dtype=torch.float64)
    positive = torch.tensor([[[True, False], [False, True]]])
    negative = ~positive
    low = contrastive_affinity_loss(affinity, positive, negative, variant="paper")
    high = contrastive_affinity_loss(affinity + positive * 0.5, positive, negative,
                                     variant="paper")
    assert float(high) < float(low)


def test_contrastive_gradcheck():
    affinity = (torch.rand(2, 4, 3, 3, generator=generator(5), dtype=torch.float64) * 2 - 1)
    positive, negative = random_pairs(affinity.shape, 6)
    affinity.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: contrastive_affinity_loss(a, positive, negative, tau=0.5), (affinity,))


def test_contrastive_module_equals_function():
    affinity = torch.rand(1, 5, 5, generator=generator(7))
    positive, negative = random_pairs(affinity.shape, 8)
    module = ContrastiveAffinityLoss(tau=0.3)
    assert "tau=0.3" in repr(module)
    torch.testing.assert_close(module(affinity, positive, negative),
                               contrastive_affinity_loss(affinity, positive, negative, tau=0.3))
    paper = ContrastiveAffinityLoss(tau=0.3, variant="paper")
    assert "variant='paper'" in repr(paper)
    torch.testing.assert_close(paper(affinity, positive, negative), contrastive_affinity_loss(
        affinity, positive, negative, tau=0.3, variant="paper"))


def test_contrastive_bad_inputs():
    affinity = torch.rand(1, 4, 2, 2)
    positive, negative = random_pairs(affinity.shape, 9)
    with pytest.raises(TypeError, match=r"affinity must be a \(B, K, H, W\)"):
        contrastive_affinity_loss(affinity[0, 0], positive, negative)
    with pytest.raises(TypeError, match="positive must be a bool tensor"):
        contrastive_affinity_loss(affinity, positive.float(), negative)
    with pytest.raises(ValueError, match="negative must have the shape of affinity"):
        contrastive_affinity_loss(affinity, positive, negative[:, :2])
    with pytest.raises(ValueError, match="must not share an entry"):
        contrastive_affinity_loss(affinity, positive | negative, negative)
    with pytest.raises(ValueError, match="tau must be > 0"):
        contrastive_affinity_loss(affinity, positive, negative, tau=0.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        ContrastiveAffinityLoss(tau=-1.0)
    with pytest.raises(ValueError, match="variant must be one of"):
        contrastive_affinity_loss(affinity, positive, negative, variant="official")


# -- perplexity and reliability --------------------------------------------------------------

HALF = [0.5, 0.5]
# one image, 2 classes, 2x2 pixels: one-hot, uniform / uniform, one-hot
PROBS = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.0, 0.5], [0.5, 0.0]]],
                     dtype=torch.float64).unsqueeze(0)
LOG2 = math.log(2)


def test_perplexity_by_hand():
    torch.testing.assert_close(cam_perplexity(PROBS, reduction="none"),
                               torch.tensor([[[1.0, 2.0], [2.0, 1.0]]], dtype=torch.float64))
    assert float(cam_perplexity(PROBS)[0]) == pytest.approx(math.sqrt(2), rel=1e-12)
    # class 0 holds mass 1, .5, .5, 1 (entropies 0, l, l, 0); class 1 mass .5, .5
    per_class = cam_perplexity(PROBS, reduction="class")[0].tolist()
    assert per_class == pytest.approx([math.exp(LOG2 / 3), 2.0], rel=1e-12)
    mask = torch.tensor([[[True, False], [False, False]]])
    assert float(cam_perplexity(PROBS, mask=mask)[0]) == pytest.approx(1.0)
    empty = cam_perplexity(PROBS, mask=torch.zeros_like(mask))
    assert float(empty[0]) == 2.0  # no evidence: the largest perplexity


def test_reliability_by_hand():
    perplexity = torch.tensor([1.0, math.sqrt(2), 2.0], dtype=torch.float64)
    torch.testing.assert_close(perplexity_reliability(perplexity, 2),
                               torch.tensor([1.0, math.sqrt(2) - 1, 0.0], dtype=torch.float64))
    torch.testing.assert_close(perplexity_reliability(perplexity, 2, beta=2.0),
                               torch.tensor([1.0, (math.sqrt(2) - 1) ** 2, 0.0],
                                            dtype=torch.float64))
    # C = 4, PP = 2 (two equally likely classes): (4/2 - 1) / 3
    assert float(perplexity_reliability(torch.tensor([2.0]), 4)) == pytest.approx(1 / 3)


def test_reliability_weights_by_hand():
    image = reliability_weights(PROBS)
    torch.testing.assert_close(image, torch.full((1, 2, 2), math.sqrt(2) - 1,
                                                 dtype=torch.float64))
    pixel = reliability_weights(PROBS, reduction="none")
    torch.testing.assert_close(pixel, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]],
                                                   dtype=torch.float64))
    labels = torch.tensor([[[0, 1], [255, 0]]])
    per_class = reliability_weights(PROBS, labels, reduction="class")
    # labelled pixels only: class 0 mass 1, .5, 1 with entropy on the .5 pixel; class 1 mass .5
    class0 = 2 / math.exp(LOG2 * 0.5 / 2.5) - 1
    assert per_class[0, 0, 0] == pytest.approx(class0) and per_class[0, 1, 1] == pytest.approx(
        class0)
    assert per_class[0, 0, 1] == pytest.approx(0.0, abs=1e-12)


def ce(logits, label):
    return -F.log_softmax(logits, 0)[label].item()


def test_weighted_cross_entropy_by_hand():
    logits = torch.randn(2, 3, 1, 3, generator=generator(10), dtype=torch.float64)
    labels = torch.tensor([[[0, 2, 255]], [[0, 0, 1]]])
    pixel = [[ce(logits[b, :, 0, x], labels[b, 0, x]) if labels[b, 0, x] != 255 else 0.0
              for x in range(3)] for b in range(2)]
    w = torch.tensor([0.5, 0.25], dtype=torch.float64)
    background = (0.5 * pixel[0][0] + 0.25 * (pixel[1][0] + pixel[1][1])) / 3
    foreground = (0.5 * pixel[0][1] + 0.25 * pixel[1][2]) / 2
    loss = reliability_weighted_cross_entropy(logits, labels, w)
    assert float(loss) == pytest.approx(0.5 * background + 0.5 * foreground, rel=1e-12)
    loss = reliability_weighted_cross_entropy(logits, labels, w, fg_alpha=0.8)
    assert float(loss) == pytest.approx(0.2 * background + 0.8 * foreground, rel=1e-12)
    single = (0.5 * (pixel[0][0] + pixel[0][1]) + 0.25 * sum(pixel[1])) / 5
    loss = reliability_weighted_cross_entropy(logits, labels, w, fg_alpha=None)
    assert float(loss) == pytest.approx(single, rel=1e-12)
    per_class = torch.tensor([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0]], dtype=torch.float64)
    expected = 0.5 * (pixel[0][0] + pixel[1][0] + pixel[1][1]) / 3 + 0.5 * (
        2 * pixel[0][1] + 3 * pixel[1][2]) / 2
    loss = reliability_weighted_cross_entropy(logits, labels, per_class)
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    # unit weights give CoSA's unweighted seg_loss
    ones = torch.ones(2, 1, 3, dtype=torch.float64)
    plain = 0.5 * F.cross_entropy(logits, torch.where(labels == 0, 0, 255), ignore_index=255) \
        + 0.5 * F.cross_entropy(logits, torch.where(labels == 0, 255, labels), ignore_index=255)
    torch.testing.assert_close(reliability_weighted_cross_entropy(logits, labels, ones), plain)


def test_weighted_cross_entropy_gradient_and_module():
    probs = torch.softmax(torch.randn(2, 3, 3, 3, generator=generator(11),
                                      dtype=torch.float64), 1)
    labels = probs.argmax(1)
    labels[0, 0] = 255
    logits = torch.randn(2, 3, 3, 3, generator=generator(12), dtype=torch.float64,
                         requires_grad=True)
    module = ReliabilityWeightedCrossEntropy(reduction="class", beta=2.0)
    assert "reduction='class'" in repr(module) and "beta=2.0" in repr(module)
    weight = reliability_weights(probs, labels, reduction="class", beta=2.0)
    torch.testing.assert_close(module(logits, labels, probs),
                               reliability_weighted_cross_entropy(logits, labels, weight))
    assert torch.autograd.gradcheck(
        lambda z: reliability_weighted_cross_entropy(z, labels, weight), (logits,), fast_mode=True)


def test_reliability_bad_inputs():
    with pytest.raises(ValueError, match="probs must sum to 1 over the classes"):
        cam_perplexity(PROBS * 2)
    with pytest.raises(ValueError, match="probs must be non-negative"):
        cam_perplexity(PROBS - 0.5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        reliability_weights(PROBS, reduction="pixel")
    with pytest.raises(ValueError, match=r"labels must have shape \(1, 2, 2\)"):
        reliability_weights(PROBS, torch.zeros(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"labels must hold class ids in \[0, 2\)"):
        reliability_weights(PROBS, torch.full((1, 2, 2), 2))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        perplexity_reliability(torch.ones(2), 1)
    logits = torch.zeros(1, 2, 2, 2)
    labels = torch.zeros(1, 2, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"weight must have shape \(1,\) per image"):
        reliability_weighted_cross_entropy(logits, labels, torch.ones(3))
    with pytest.raises(ValueError, match="weight must be non-negative"):
        reliability_weighted_cross_entropy(logits, labels, -torch.ones(1))
    with pytest.raises(ValueError, match="fg_alpha must lie in"):
        reliability_weighted_cross_entropy(logits, labels, torch.ones(1), fg_alpha=1.5)


# -- searched threshold ----------------------------------------------------------------------


def trimodal(seed, size=600):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0.1, 0.05, size), rng.normal(0.45, 0.1, size // 2),
             rng.normal(0.9, 0.05, size)]
    return np.clip(np.concatenate(parts), 0, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_search_threshold_matches_cosa_rungmm(seed):
    mixture = pytest.importorskip("sklearn.mixture")
    queue = trimodal(seed)
    # CoSA utils/seg_helper.py rungmm(queue, modal=3, filter_thre=0.05)
    kept = queue[queue > 0.05].reshape(-1, 1)
    gmm = mixture.GaussianMixture(
        3, weights_init=[1 / 3] * 3, precisions_init=[[[1.0]]] * 3,
        means_init=[[kept.min()], [np.median(kept)], [kept.max()]])
    prediction = gmm.fit_predict(kept)
    expected = (kept[prediction == 0].max(), kept[prediction == 2].min())
    assert search_threshold(torch.from_numpy(queue)) == pytest.approx(expected, rel=1e-9)


def test_search_threshold_separates_modes():
    low, high = search_threshold(torch.from_numpy(trimodal(2)), max_iter=200, tol=1e-6)
    assert 0.15 < low < high < 0.85


def test_dynamic_threshold_ema():
    tracker = DynamicThreshold(size=3, low=0.25, high=0.7, decay=0.9)
    batch = torch.from_numpy(trimodal(3, 300)).float().reshape(3, -1)
    found = search_threshold(batch)
    low, high = tracker.update(batch)
    assert low == pytest.approx(0.9 * 0.25 + 0.1 * found[0])
    assert high == pytest.approx(0.9 * 0.7 + 0.1 * found[1])
    assert set(tracker.state_dict()) == {"low", "high"}
    tracker(batch[:1])  # the queue keeps the last 3 images
    assert len(tracker._queue) == 3 and torch.equal(tracker._queue[-1], batch[0].double())


def test_threshold_bad_inputs():
    with pytest.raises(ValueError, match="at least 3 values above filter_threshold"):
        search_threshold(torch.tensor([0.01, 0.02, 0.5, 0.6]))
    with pytest.raises(TypeError, match="scores must be a float tensor"):
        search_threshold(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="low and high must satisfy"):
        DynamicThreshold(low=0.8, high=0.2)
    with pytest.raises(ValueError, match="decay must lie in"):
        DynamicThreshold(decay=1.5)
