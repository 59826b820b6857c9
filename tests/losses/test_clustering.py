"""Clustering losses against dense N×N computations and brute-force loops."""

import math

import pytest
import torch

from graphseg import WindowGraph, pixel_graph
from graphseg.losses.clustering import (
    BCDLoss,
    EntropyLoss,
    KernelKMeansLoss,
    NormalizedCutLoss,
    bcd_loss,
    entropy_loss,
    kernel_kmeans_loss,
    normalized_cut_loss,
)

pytestmark = pytest.mark.usefixtures("each_backend")

B, C, H, W = 2, 3, 5, 6
EPS = 1e-8


def make(seed=0, batch=B):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, H, W, generator=generator, dtype=torch.float64) * 0.3 + 0.3
    probs = torch.rand(batch, C, H, W, generator=generator, dtype=torch.float64).mul(3).softmax(1)
    return image, probs


def graph_of(image, radius=2, self_weight=None):
    return pixel_graph(image, radius=radius, sigma_xy=3.0, sigma_rgb=0.3,
                       self_weight=self_weight)


def dense_blocks(graph, probs):
    """Per image: the dense (n, n) affinity matrix and the (n, C) soft segments."""
    for b in range(graph.batch_size):
        self_weight = None if graph.self_weight is None else graph.self_weight[b : b + 1]
        single = WindowGraph(graph.weight[b : b + 1], graph.offsets, self_weight=self_weight)
        yield single.to_dense(), probs[b].flatten(1).t()


def dense_ncut(graph, probs):
    total = 0.0
    for dense, segments in dense_blocks(graph, probs):
        degree = dense.sum(1)
        for k in range(segments.shape[1]):
            s = segments[:, k]
            total += float(s @ dense @ (1 - s)) / (float(degree @ s) + EPS)
    return total / graph.batch_size


def dense_kkm(graph, probs):
    total = 0.0
    for dense, segments in dense_blocks(graph, probs):
        for k in range(segments.shape[1]):
            s = segments[:, k]
            total -= float(s @ dense @ s) / (float(s.sum()) + EPS)
    return total / graph.batch_size


# -- entropy ---------------------------------------------------------------------------------


def test_entropy_by_hand_one_hot_uniform_and_gradcheck():
    _, probs = make()
    expected = -sum(float(p) * math.log(float(p)) for p in probs.permute(0, 2, 3, 1).reshape(-1))
    assert float(entropy_loss(probs)) == pytest.approx(expected / (B * H * W), rel=1e-12)
    one_hot = torch.zeros(B, C, H, W, dtype=torch.float64)
    one_hot[:, 1] = 1
    leaf = one_hot.clone().requires_grad_()
    loss = entropy_loss(leaf)
    loss.backward()
    assert float(loss.detach()) == 0.0 and bool(torch.isfinite(leaf.grad).all())
    uniform = torch.full((7, C), 1 / C)
    assert float(entropy_loss(uniform)) == pytest.approx(math.log(C), rel=1e-6)
    assert float(EntropyLoss()(probs)) == float(entropy_loss(probs))
    small = probs[:1, :, :2, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(entropy_loss, (small,))


# -- normalised cut --------------------------------------------------------------------------


def test_normalized_cut_equals_dense_and_pyg():
    image, probs = make()
    for self_weight in (None, 0.5):
        graph = graph_of(image, self_weight=self_weight)
        loss = normalized_cut_loss(probs, graph)
        assert float(loss) == pytest.approx(dense_ncut(graph, probs), rel=1e-10)
    single = WindowGraph(graph.weight[:1], graph.offsets, self_weight=0.5)
    flat = normalized_cut_loss(probs[0].flatten(1).t(), single.to_pyg())
    assert float(flat) == pytest.approx(float(normalized_cut_loss(probs[:1], single)), rel=1e-10)
    assert float(NormalizedCutLoss()(probs, graph)) == float(loss)


def test_normalized_cut_zero_for_one_segment_and_gradcheck():
    image, probs = make()
    graph = graph_of(image)
    everything = torch.zeros(B, C, H, W, dtype=torch.float64)
    everything[:, 0] = 1
    assert float(normalized_cut_loss(everything, graph)) == 0.0
    halves = everything.clone()
    halves[:, :, :, W // 2 :] = 0
    halves[:, 1, :, W // 2 :] = 1
    assert float(normalized_cut_loss(halves, graph)) > 0
    small = probs[:1, :, :3, :4].clone().requires_grad_()
    graph = graph_of(image[:1, :, :3, :4], radius=1, self_weight=0.3)
    assert torch.autograd.gradcheck(lambda p: normalized_cut_loss(p, graph), (small,))


# -- kernel k-means --------------------------------------------------------------------------


def test_kernel_kmeans_equals_dense_and_pyg():
    image, probs = make()
    graph = graph_of(image, self_weight=1.0)
    loss = kernel_kmeans_loss(probs, graph)
    assert float(loss) == pytest.approx(dense_kkm(graph, probs), rel=1e-10)
    assert float(loss) < 0
    single = WindowGraph(graph.weight[:1], graph.offsets, self_weight=1.0)
    flat = kernel_kmeans_loss(probs[0].flatten(1).t(), single.to_pyg())
    assert float(flat) == pytest.approx(float(kernel_kmeans_loss(probs[:1], single)), rel=1e-10)
    assert float(KernelKMeansLoss()(probs, graph)) == float(loss)


def test_kernel_kmeans_prefers_segments_that_follow_graph_clusters():
    # two colour clusters, left and right; the kernel links pixels of one colour
    image = torch.zeros(1, 3, 6, 6, dtype=torch.float64)
    image[:, :, :, 3:] = 1
    graph = pixel_graph(image, radius=2, sigma_xy=3.0, sigma_rgb=0.2)
    aligned = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    aligned[:, 0, :, :3] = 1
    aligned[:, 1, :, 3:] = 1
    across = aligned.transpose(2, 3).contiguous()  # top / bottom halves
    soft = 0.5 * aligned + 0.25
    best = float(kernel_kmeans_loss(aligned, graph))
    assert best < float(kernel_kmeans_loss(across, graph)) - 0.5
    assert best < float(kernel_kmeans_loss(soft, graph)) - 0.5
    assert float(normalized_cut_loss(aligned, graph)) < float(normalized_cut_loss(across, graph))


def test_kernel_kmeans_gradcheck():
    image, probs = make(batch=1)
    graph = graph_of(image[:, :, :3, :4], radius=1)
    small = probs[:, :, :3, :4].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: kernel_kmeans_loss(p, graph), (small,))


# -- BCD -------------------------------------------------------------------------------------


def cos(a, b):
    return float(a @ b) / (float(a.norm()) * float(b.norm()) + 1e-7)


def loop_bcd(features, labels):
    """The batch-based class distance loss written pixel by pixel after RRM's official code."""
    batch = features.shape[0]
    pixels = [[(features[b, :, y, x], int(labels[b, y, x])) for y in range(features.shape[2])
               for x in range(features.shape[3])] for b in range(batch)]
    terms, bg_centres = [], []
    for b in range(batch):
        bg = [f for f, label in pixels[b] if label == 0]
        if bg:
            centre = sum(bg) / len(bg)
            terms.append(sum(1 - cos(f, centre) for f in bg) / len(bg))
            bg_centres.append(centre)
        else:
            terms.append(2.0)
            bg_centres.append(None)
    fg_centres = []
    for k in range(1, 255):  # 255 = unknown
        members = [f for image in pixels for f, label in image if label == k]
        if members:
            centre = sum(members) / len(members)
            terms.append(sum(1 - cos(f, centre) for f in members) / len(members))
            fg_centres.append(centre)
    intra = sum(terms) / len(terms)
    if not fg_centres:
        return intra
    pairs = [1 + cos(a, b) for i, a in enumerate(fg_centres) for j, b in enumerate(fg_centres)
             if i != j]
    fg_fg = sum(pairs) / len(pairs) if pairs else 0.0
    if all(centre is None for centre in bg_centres):
        return intra + fg_fg / 2 + 1
    fg_bg = [1.0 if centre is None else 1 + cos(a, centre) for a in fg_centres
             for centre in bg_centres]
    return intra + fg_fg / 2 + sum(fg_bg) / len(fg_bg) / 2


def paper_bcd(features, labels):
    """Thesis Eq. 2.24–2.26 written from the equations: four means, each with weight 1; the
    foreground intra mean runs over every pixel of the batch; an empty mean is 0."""
    batch, _, height, width = features.shape

    def mean(values):
        return sum(values) / len(values) if values else 0.0

    bg_terms, bg_centres = [], []
    for b in range(batch):
        bg = [features[b, :, y, x] for y in range(height) for x in range(width)
              if labels[b, y, x] == 0]
        if bg:
            centre = sum(bg) / len(bg)
            bg_terms.append(mean([1 - cos(f, centre) for f in bg]))
            bg_centres.append(centre)
    fg_terms, fg_centres = [], []
    for k in range(1, 255):
        members = [features[b, :, y, x] for b in range(batch) for y in range(height)
                   for x in range(width) if labels[b, y, x] == k]
        if members:
            centre = sum(members) / len(members)
            fg_terms.append(mean([1 - cos(f, centre) for f in members]))
            fg_centres.append(centre)
    fg_fg = [1 + cos(a, c) for i, a in enumerate(fg_centres) for j, c in enumerate(fg_centres)
             if i != j]
    fg_bg = [1 + cos(a, c) for a in fg_centres for c in bg_centres]
    return float(mean(bg_terms) + mean(fg_terms) + mean(fg_fg) + mean(fg_bg))


BCD_LABELS = {
    "general": [[[0, 0, 1, 2], [0, 1, 1, 255], [2, 0, 0, 3]],
                [[0, 2, 2, 255], [0, 0, 2, 2], [1, 1, 0, 0]]],
    "image without background": [[[0, 0, 1, 2], [0, 1, 1, 255], [2, 0, 0, 1]],
                                 [[1, 2, 2, 255], [1, 1, 2, 2], [1, 1, 2, 2]]],
    "one foreground class": [[[0, 0, 1, 1], [0, 1, 1, 255], [0, 0, 0, 1]],
                             [[0, 0, 0, 255], [0, 0, 0, 0], [1, 1, 0, 0]]],
    "no background": [[[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2]],
                      [[2, 2, 2, 255], [3, 3, 2, 2], [1, 1, 3, 3]]],
    "background only": [[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 255]],
                        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
}


@pytest.mark.parametrize("case", list(BCD_LABELS))
def test_bcd_equals_loop(case):
    labels = torch.tensor(BCD_LABELS[case])
    features = torch.randn(2, 5, 3, 4, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(7)).requires_grad_()
    loss = bcd_loss(features, labels, variant="official")
    assert float(loss.detach()) == pytest.approx(loop_bcd(features.detach(), labels), rel=1e-10)
    assert float(BCDLoss(variant="official")(features, labels).detach()) == float(loss.detach())
    paper = bcd_loss(features, labels)  # the default is the paper's Eq. 2.24-2.26
    assert float(paper.detach()) == pytest.approx(paper_bcd(features.detach(), labels),
                                                  rel=1e-10)
    assert float(BCDLoss()(features, labels).detach()) == float(paper.detach())
    assert "variant='paper'" in repr(BCDLoss())
    paper.backward()
    assert bool(torch.isfinite(features.grad).all())
    features.grad = None
    loss.backward()  # empty classes and unknown pixels (zero centres) give no NaN
    assert bool(torch.isfinite(features.grad).all())
    assert float(features.grad[labels.unsqueeze(1).expand_as(features) == 255].abs().sum()) == 0


def test_bcd_properties_and_gradcheck():
    labels = torch.tensor(BCD_LABELS["general"])
    features = torch.randn(2, 5, 3, 4, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(8)).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: bcd_loss(f, labels), (features,))
    # every class on its own axis, one vector per class: no intra term, orthogonal centres
    clean = torch.nn.functional.one_hot(labels.clamp_max(3), 4).permute(0, 3, 1, 2).double()
    # official: halves of the two inter means, 1 + cos = 1 each
    assert float(bcd_loss(clean, labels, variant="official")) == pytest.approx(1.0, abs=1e-6)
    # paper: the two inter means with weight 1 each
    assert float(bcd_loss(clean, labels)) == pytest.approx(2.0, abs=1e-6)
    # only the weights differ: paper = intra_bg + intra_fg + fg_fg + fg_bg, official =
    # (balanced intra) + (fg_fg + fg_bg) / 2; with equal centres' cosines both inter means are 2
    same = torch.ones(2, 5, 3, 4, dtype=torch.float64)
    assert float(bcd_loss(same, labels)) == pytest.approx(4.0, abs=1e-6)
    assert float(bcd_loss(same, labels, variant="official")) == pytest.approx(2.0, abs=1e-6)
    # ignored pixels take no part
    moved = features.detach().clone()
    moved[0, :, 1, 3] = 100.0
    expected = float(bcd_loss(features, labels).detach())
    assert float(bcd_loss(moved, labels)) == pytest.approx(expected)
    nothing = bcd_loss(features, torch.full((2, 3, 4), 255))
    assert float(nothing.detach()) == 0.0
    shifted = torch.where(labels == 255, -1, labels)
    assert float(bcd_loss(features, shifted, ignore_index=-1)) == float(
        bcd_loss(features, labels))


# -- bad arguments ---------------------------------------------------------------------------


def test_bad_arguments():
    image, probs = make()
    graph = graph_of(image)
    with pytest.raises(TypeError, match=r"probs must be a float \(B, C, H, W\) or \(N, C\)"):
        entropy_loss(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="probs contains NaN"):
        entropy_loss(torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="probs and graph weight must share batch size"):
        normalized_cut_loss(probs[:, :, :4], graph)
    with pytest.raises(TypeError, match="graph must be a WindowGraph"):
        kernel_kmeans_loss(probs, "graph")
    with pytest.raises(ValueError, match=r"probs must be a float \(30, C\) tensor"):
        kernel_kmeans_loss(probs, graph_of(image[:1]).to_pyg())
    with pytest.raises(ValueError, match="eps must be >= 0"):
        NormalizedCutLoss(eps=-1.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 5, 6\)"):
        bcd_loss(torch.rand(2, 4, 5, 6), torch.zeros(2, 5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        bcd_loss(torch.rand(2, 4, 5, 6), torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="labels must hold class ids"):
        bcd_loss(torch.rand(2, 4, 5, 6), torch.full((2, 5, 6), -3))
    with pytest.raises(TypeError, match="features must be a torch.Tensor"):
        bcd_loss([[0.0]], torch.zeros(2, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="variant must be one of"):
        bcd_loss(torch.rand(2, 4, 5, 6), torch.zeros(2, 5, 6, dtype=torch.long), variant="rrm")
