"""Seed and pairwise losses against brute-force loops and dense N×N computations."""

import math

import pytest
import torch

from graphseg import WindowGraph, pixel_graph
from graphseg.losses import (
    DenseEnergyLoss,
    DFRLoss,
    DFRObjective,
    FeatureDistanceLoss,
    FeatureRegularLoss,
    PartialCrossEntropyLoss,
    QuadraticPairwiseLoss,
    dense_energy_loss,
    dfr_kernel,
    dfr_loss,
    dfr_objective,
    dfr_pseudo_labels,
    feature_distance_loss,
    feature_regular_loss,
    partial_cross_entropy,
    quadratic_pairwise_loss,
)
from graphseg.nn import potts_loss

pytestmark = pytest.mark.usefixtures("each_backend")

B, C, H, W = 2, 3, 5, 6
MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1)


def make(seed=0, batch=B):
    """A smooth random image (so that the Gaussian weights are not all ~0), probabilities,
    seeds with unknowns, and features, all float64."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, H, W, generator=generator, dtype=torch.float64) * 0.3 + 0.3
    probs = torch.rand(batch, C, H, W, generator=generator, dtype=torch.float64).mul(3).softmax(1)
    seeds = torch.randint(0, C, (batch, H, W), generator=generator)
    seeds[torch.rand(batch, H, W, generator=generator) < 0.5] = 255
    features = torch.rand(batch, 4, H, W, generator=generator, dtype=torch.float64)
    return image, probs, seeds, features


def graph_of(image, radius=2, self_weight=None):
    return pixel_graph(image, radius=radius, sigma_xy=3.0, sigma_rgb=0.3,
                       self_weight=self_weight)


def neighbours(graph):
    """(b, y, x, qy, qx, weight) for every in-image window edge, by a loop."""
    batch, _, height, width = graph.weight.shape
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for k, (dy, dx) in enumerate(graph.offsets.tolist()):
                    if 0 <= y + dy < height and 0 <= x + dx < width:
                        yield b, y, x, y + dy, x + dx, float(graph.weight[b, k, y, x])


# -- partial cross-entropy -------------------------------------------------------------------


def test_partial_cross_entropy_by_hand_and_ignore_index():
    logits = torch.randn(B, C, H, W, dtype=torch.float64, generator=torch.Generator()
                         .manual_seed(3))
    seeds = make()[2]
    nll = -logits.log_softmax(1)
    known = [(b, y, x) for b in range(B) for y in range(H) for x in range(W)
             if seeds[b, y, x] != 255]
    expected = sum(float(nll[b, seeds[b, y, x], y, x]) for b, y, x in known) / len(known)
    assert float(partial_cross_entropy(logits, seeds)) == pytest.approx(expected, rel=1e-12)
    shifted = torch.where(seeds == 255, -1, seeds)
    assert float(partial_cross_entropy(logits, shifted, ignore_index=-1)) == pytest.approx(
        expected, rel=1e-12)
    assert float(PartialCrossEntropyLoss()(logits, seeds)) == pytest.approx(expected, rel=1e-12)
    empty = partial_cross_entropy(logits.requires_grad_(), torch.full((B, H, W), 255))
    assert float(empty.detach()) == 0.0
    empty.backward()  # still in the graph


def test_partial_cross_entropy_gradcheck():
    logits = torch.randn(1, C, 3, 4, dtype=torch.float64, requires_grad=True)
    seeds = torch.tensor([[[0, 255, 2, 1], [255, 255, 1, 0], [2, 2, 255, 255]]])
    assert torch.autograd.gradcheck(lambda x: partial_cross_entropy(x, seeds), (logits,))


# -- quadratic pairwise ----------------------------------------------------------------------


def test_quadratic_equals_loop_and_pyg():
    image, probs, _, _ = make()
    graph = graph_of(image, self_weight=1.0)  # self loops contribute nothing
    total = sum(weight * float(((probs[b, :, y, x] - probs[b, :, qy, qx]) ** 2).sum())
                for b, y, x, qy, qx, weight in neighbours(graph))
    assert float(quadratic_pairwise_loss(probs, graph)) == pytest.approx(total / (B * H * W),
                                                                          rel=1e-10)
    single = WindowGraph(graph.weight[:1], graph.offsets, self_weight=1.0)
    flat = quadratic_pairwise_loss(probs[0].flatten(1).t(), single.to_pyg())
    assert float(flat) == pytest.approx(float(quadratic_pairwise_loss(probs[:1], single)),
                                        rel=1e-10)
    assert float(QuadraticPairwiseLoss()(probs, graph)) == float(
        quadratic_pairwise_loss(probs, graph))


def test_quadratic_zero_on_constant_and_gradcheck():
    image, probs, _, _ = make()
    graph = graph_of(image)
    constant = probs[:, :, :1, :1].expand(-1, -1, H, W)
    assert float(quadratic_pairwise_loss(constant, graph)) == 0.0
    small = probs[:1, :, :3, :4].clone().requires_grad_()
    graph = graph_of(image[:1, :, :3, :4], radius=1)
    assert torch.autograd.gradcheck(lambda p: quadratic_pairwise_loss(p, graph), (small,))


# -- dense energy (Potts) with the soft filter -----------------------------------------------


def dense_potts(probs, graph, seeds=None):
    """(1/N) Σ_i S(i) Σ_j A[i, j] Σ_c P_c(i)(1 − P_c(j)) with the dense N×N adjacency."""
    dense = graph.without_self_loops().to_dense()
    flat = probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1])
    filt = torch.ones(flat.shape[0], dtype=flat.dtype)
    if seeds is not None:
        seeded = seeds.reshape(-1) != 255
        filt[seeded] = 1 - flat[seeded].max(1).values
    return float((filt * (flat * (dense @ (1 - flat))).sum(1)).sum()) / flat.shape[0]


def test_dense_energy_equals_dense_reference():
    image, probs, seeds, _ = make()
    graph = graph_of(image, self_weight=2.0)
    assert float(dense_energy_loss(probs, graph)) == pytest.approx(dense_potts(probs, graph),
                                                                   rel=1e-10)
    filtered = dense_energy_loss(probs, graph, seeds=seeds)
    assert float(filtered) == pytest.approx(dense_potts(probs, graph, seeds), rel=1e-10)
    assert float(filtered) < float(dense_energy_loss(probs, graph))
    assert float(DenseEnergyLoss()(probs, graph, seeds)) == float(filtered)
    assert float(dense_energy_loss(probs, graph)) == float(potts_loss(probs, graph))


def test_dense_energy_pyg_and_ignore_index():
    image, probs, seeds, _ = make(batch=1)
    graph = graph_of(image)
    flat = dense_energy_loss(probs[0].flatten(1).t(), graph.to_pyg(), seeds=seeds.reshape(-1))
    assert float(flat) == pytest.approx(float(dense_energy_loss(probs, graph, seeds=seeds)),
                                        rel=1e-10)
    shifted = torch.where(seeds == 255, -1, seeds)
    assert float(dense_energy_loss(probs, graph, seeds=shifted, ignore_index=-1)) == float(
        dense_energy_loss(probs, graph, seeds=seeds))


def test_dense_energy_zero_on_constant_one_hot_and_filter_is_constant():
    image, probs, seeds, _ = make()
    graph = graph_of(image)
    constant = torch.zeros(B, C, H, W, dtype=torch.float64)
    constant[:, 2] = 1
    assert float(dense_energy_loss(constant, graph)) == 0.0
    assert float(dense_energy_loss(constant, graph, seeds=seeds)) == 0.0
    # S(i) carries no gradient: the gradient equals that of the Potts loss with S as a weight
    leaf = probs.clone().requires_grad_()
    dense_energy_loss(leaf, graph, seeds=seeds).backward()
    filt = torch.where(seeds != 255, 1 - probs.amax(1), torch.ones_like(probs[:, 0]))
    reference = probs.clone().requires_grad_()
    potts_loss(reference, graph, node_weight=filt).backward()
    torch.testing.assert_close(leaf.grad, reference.grad)


def test_dense_energy_gradcheck():
    # the soft filter is a constant of the loss, so gradcheck sees it as a fixed node weight
    image, probs, _, _ = make(batch=1)
    graph = graph_of(image[:, :, :3, :4], radius=1)
    small = probs[:, :, :3, :4].clone().requires_grad_()
    filt = torch.rand(1, 3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: dense_energy_loss(p, graph), (small,))
    assert torch.autograd.gradcheck(lambda p: potts_loss(p, graph, node_weight=filt), (small,))


# -- DFR -------------------------------------------------------------------------------------


def test_dfr_kernel_equals_loop_and_is_detached():
    image, _, _, features = make()
    features = features.requires_grad_()
    kernel = dfr_kernel(image, features, radius=1, sigma_xy=6.0, sigma_rgb=0.5, sigma_feat=0.7)
    assert kernel.offsets.shape[0] == 8  # square window
    assert not kernel.weight.requires_grad
    normalised = (image - MEAN) / STD
    for b, y, x, qy, qx, weight in neighbours(kernel):
        dy, dx = qy - y, qx - x
        colour = float(((normalised[b, :, y, x] - normalised[b, :, qy, qx]) ** 2).sum())
        deep = float(((features[b, :, y, x] - features[b, :, qy, qx]) ** 2).sum().detach())
        expected = math.exp(-(dy * dy + dx * dx) / 72 - colour / 0.5 - deep / (2 * 0.49))
        assert weight == pytest.approx(expected, rel=1e-10)
    assert dfr_kernel(image, features).offsets.shape[0] == 120  # square, r = 5


def test_dfr_loss_is_potts_on_the_dynamic_kernel():
    image, probs, _, features = make()
    features = features.requires_grad_()
    leaf = probs.clone().requires_grad_()
    loss = dfr_loss(leaf, image, features, radius=2, sigma_feat=1.0)
    kernel = dfr_kernel(image, features, radius=2, sigma_feat=1.0)
    assert float(loss) == pytest.approx(dense_potts(probs, kernel), rel=1e-10)
    loss.backward()
    assert features.grad is None and leaf.grad.abs().sum() > 0
    module = DFRLoss(radius=2, sigma_feat=1.0)
    assert float(module(probs, image, features)) == float(loss)
    assert "sigma_feat=1.0" in repr(module)
    small = probs[:1, :, :3, :4].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: dfr_loss(p, image[:1, :, :3, :4], features[:1, :, :3, :4], radius=1), (small,))


def test_dfr_pseudo_labels_are_confident_predictions_only():
    probs = torch.tensor([[[[0.99, 0.50, 0.01, 0.30]], [[0.01, 0.50, 0.99, 0.70]]]],
                         dtype=torch.float64)
    seeds = torch.tensor([[[255, 255, 0, 1]]])
    # Eq. 4.7: M from the predictions above gamma = 0.98 only; the seeds take no part
    assert dfr_pseudo_labels(probs).tolist() == [[[0, 255, 1, 255]]]
    assert dfr_pseudo_labels(probs, seeds).tolist() == [[[0, 255, 1, 255]]]
    assert dfr_pseudo_labels(probs, confidence=0.6).tolist() == [[[0, 255, 1, 1]]]
    # the merge option: a seed wins over a confident prediction
    merged = dfr_pseudo_labels(probs, seeds, merge_seeds=True)
    assert merged.tolist() == [[[0, 255, 0, 1]]]
    with pytest.raises(ValueError, match="seeds are required for merge_seeds=True"):
        dfr_pseudo_labels(probs, merge_seeds=True)


def test_feature_distance_loss_by_hand():
    # a 1x4 strip: labels bg, bg, fg, fg -> pairs (0,1) bg, (1,2) negative, (2,3) fg (both ways)
    labels = torch.tensor([[[0, 0, 1, 1]]])
    features = torch.tensor([[[[0.0, 1.0, 1.0, 3.0]], [[0.0, 0.0, 2.0, 2.0]]]],
                            dtype=torch.float64)  # L1 / d: 0.5, 1.0, 1.0
    loss = feature_distance_loss(features, labels, radius=1)
    expected = 0.5 + 1.0 + 2 * -math.log(1 - math.exp(-1.0))  # weights 1, 1, 2
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert float(FeatureDistanceLoss(radius=1)(features, labels)) == float(loss)
    unknown = torch.tensor([[[0, 0, 255, 1]]])  # only the background pair is left
    assert float(feature_distance_loss(features, unknown, radius=1)) == pytest.approx(0.5)
    image, _, seeds, feats = make(batch=1)
    feats = feats[:, :, :3, :4].clone().requires_grad_()
    labels = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 255], [2, 2, 0, 1]]])
    assert torch.autograd.gradcheck(lambda f: feature_distance_loss(f, labels, radius=1),
                                    (feats,))


def test_feature_regular_loss_equals_loop_both_pair_sets():
    image, _, seeds, features = make()
    graph = pixel_graph(image, radius=2, shape="square", sigma_xy=6.0, sigma_rgb=0.5,
                        normalize="imagenet")
    everything, labelled = 0.0, 0.0
    for b, y, x, qy, qx, weight in neighbours(graph):
        term = weight * float((features[b, :, y, x] - features[b, :, qy, qx]).abs().sum()) / 4
        everything += term
        if seeds[b, y, x] != 255 and seeds[b, qy, qx] != 255:
            labelled += term
    loss = feature_regular_loss(features, image, pairs="all", radius=2)
    assert float(loss) == pytest.approx(everything / (B * H * W), rel=1e-10)
    assert float(FeatureRegularLoss(pairs="all", radius=2)(features, image)) == float(loss)
    subset = feature_regular_loss(features, image, labels=seeds, radius=2)  # R_A by default
    assert float(subset) == pytest.approx(labelled / (B * H * W), rel=1e-10)
    assert float(FeatureRegularLoss(radius=2)(features, image, seeds)) == float(subset)
    assert 0 < float(subset) < float(loss)
    small = features[:1, :, :3, :4].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f: feature_regular_loss(f, image[:1, :, :3, :4], pairs="all", radius=1), (small,))


def test_dfr_objective_is_eq_4_1():
    image, _, seeds, features = make()
    logits = torch.randn(B, C, H, W, dtype=torch.float64, generator=torch.Generator()
                         .manual_seed(5)) * 4
    probs = logits.softmax(1)
    # M of Eq. 4.7 written from the equation: argmax where max prob > 0.98, else unknown
    best, arg = probs.max(1)
    head = torch.where(best > 0.98, arg, torch.full_like(arg, 255))
    assert bool((head != 255).any()) and bool(((head != 255) & (seeds == 255)).any())
    # L = L_pce + 1e-2 L_dfr + 1e-3 (L_fd + L_fr over R_A(M))
    expected = (partial_cross_entropy(logits, seeds)
                + 1e-2 * dfr_loss(probs, image, features, radius=2)
                + 1e-3 * (feature_distance_loss(features, head, radius=2)
                          + feature_regular_loss(features, image, labels=head, radius=2)))
    total = dfr_objective(logits, features, image, seeds, radius=2)
    assert float(total) == pytest.approx(float(expected), rel=1e-12)
    module = DFRObjective(radius=2)
    assert float(module(logits, features, image, seeds)) == float(total)
    assert "lambda_head=0.001" in repr(module) and "head_labels='confident'" in repr(module)
    only_ce = dfr_objective(logits, features, image, seeds, lambda_dfr=0, lambda_head=0,
                            radius=2)
    assert float(only_ce) == pytest.approx(float(partial_cross_entropy(logits, seeds)))
    # the options: seeds merged into M, L_fr over every window pair R
    merged = torch.where(seeds != 255, seeds, head)
    options = dfr_objective(logits, features, image, seeds, radius=2, head_labels="merged",
                            pairs="all")
    assert float(options) == pytest.approx(float(
        partial_cross_entropy(logits, seeds) + 1e-2 * dfr_loss(probs, image, features, radius=2)
        + 1e-3 * (feature_distance_loss(features, merged, radius=2)
                  + feature_regular_loss(features, image, pairs="all", radius=2))), rel=1e-12)
    with pytest.warns(DeprecationWarning, match="lambda_head"):
        old = dfr_objective(logits, features, image, seeds, radius=2, lambda_fr=1e-3)
    assert float(old) == float(total)


# -- bad arguments ---------------------------------------------------------------------------


def test_bad_arguments():
    image, probs, seeds, features = make()
    graph = graph_of(image)
    with pytest.raises(TypeError, match="graph must be a WindowGraph"):
        quadratic_pairwise_loss(probs, probs)
    with pytest.raises(ValueError, match=r"probs and graph weight must share batch size"):
        quadratic_pairwise_loss(probs[:1], graph)
    with pytest.raises(ValueError, match=r"probs must be a float \(30, C\) tensor"):
        quadratic_pairwise_loss(torch.rand(29, 3), graph_of(image[:1]).to_pyg())
    with pytest.raises(ValueError, match=r"seeds must have shape \(2, 5, 6\)"):
        dense_energy_loss(probs, graph, seeds=seeds[:, :4])
    with pytest.raises(TypeError, match="seeds must be an int64 tensor"):
        dense_energy_loss(probs, graph, seeds=seeds.double())
    with pytest.raises(ValueError, match=r"seeds must hold class ids in \[0, 3\)"):
        dense_energy_loss(probs, graph, seeds=torch.full((B, H, W), 7))
    with pytest.raises(TypeError, match="ignore_index must be a whole number"):
        partial_cross_entropy(probs, seeds, ignore_index=2.5)
    with pytest.raises(ValueError, match=r"seeds must hold class ids in \[0, 3\) or -1"):
        partial_cross_entropy(probs, seeds, ignore_index=-1)  # 255 is no class here
    with pytest.raises(ValueError, match=r"node_weight must have shape \(2, 5, 6\)"):
        potts_loss(probs, graph, node_weight=torch.ones(2, 5))
    with pytest.raises(ValueError, match="probs contains NaN"):
        dense_energy_loss(torch.full_like(probs, float("nan")), graph)
    with pytest.raises(ValueError, match="image must have the batch size of features"):
        dfr_loss(probs, image[:1], features)
    with pytest.raises(ValueError, match="sigma_feat must be > 0"):
        dfr_kernel(image, features, sigma_feat=0)
    with pytest.raises(ValueError, match="confidence must be in"):
        dfr_pseudo_labels(probs, seeds, confidence=1.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 5, 6\)"):
        feature_distance_loss(features, seeds[:, :3])
    with pytest.raises(ValueError, match="pairs must be one of"):
        feature_regular_loss(features, image, pairs="R_A")
    with pytest.raises(ValueError, match="labels are required for pairs='labelled'"):
        feature_regular_loss(features, image)
    with pytest.raises(ValueError, match="head_labels must be one of"):
        dfr_objective(probs, features, image, seeds, head_labels="seeds")
    with pytest.raises(ValueError, match="radius must be > 0"):
        FeatureDistanceLoss(radius=0)
    with pytest.raises(ValueError, match="lambda_dfr must be >= 0"):
        DFRObjective(lambda_dfr=-1.0)
