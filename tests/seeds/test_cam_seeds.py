"""CAM utilities on hand-made maps."""

import pytest
import torch

from graphseg.seeds import (
    add_background,
    multiscale_cam,
    normalize_cam,
    reliable_seeds,
    top_fraction,
    topk_seeds,
)


def row_probs(*channels):
    """A (1, C, 1, N) score map from C equal-length lists."""
    return torch.tensor(channels, dtype=torch.float64).unsqueeze(0).unsqueeze(2)


def test_multiscale_cam_sizes_and_average():
    sizes = []

    def cam_fn(x):
        sizes.append(tuple(x.shape[2:]))
        return x[:, :2] * 2

    image = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    single = multiscale_cam(cam_fn, image, scales=[1.0])
    torch.testing.assert_close(single, image[:, :2] * 2)
    sizes.clear()
    cams = multiscale_cam(cam_fn, image)
    assert sizes == [(5, 6), (10, 12), (15, 18), (20, 24)]
    assert cams.shape == (2, 2, 10, 12)


def test_multiscale_cam_flip_maps_back():
    def ramp(x):
        columns = torch.arange(x.shape[3], dtype=x.dtype).expand(x.shape[0], 1, x.shape[2], -1)
        return columns.contiguous()

    cams = multiscale_cam(ramp, torch.rand(1, 3, 4, 6), scales=[1.0], flip=True)
    # the mirrored run's ramp, mirrored back, runs the other way: the mean is constant
    torch.testing.assert_close(cams, torch.full((1, 1, 4, 6), 2.5))


def test_normalize_cam_per_class_max_and_tags():
    cams = row_probs([-1.0, 1.0, 2.0, 4.0], [0.5, 0.25, 0.0, 0.0])
    out = normalize_cam(cams, eps=0.0 + 1e-12)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[0.0, 0.25, 0.5, 1.0],
                                                           [1.0, 0.5, 0.0, 0.0]],
                                                          dtype=torch.float64))
    tagged = normalize_cam(cams, tags=torch.tensor([[True, False]]))
    assert (tagged[0, 1] == 0).all() and tagged[0, 0].max() > 0.99
    with pytest.raises(ValueError, match=r"tags must be a \(1, 2\) tensor"):
        normalize_cam(cams, tags=torch.ones(1, 3))


def test_add_background_formula():
    cams = row_probs([0.0, 0.5, 1.0], [0.2, 0.1, 0.0])
    probs = add_background(cams, gamma=2.0)
    torch.testing.assert_close(probs[0, 0, 0], torch.tensor([0.64, 0.25, 0.0],
                                                            dtype=torch.float64))
    torch.testing.assert_close(probs[:, 1:], cams)
    with pytest.raises(ValueError, match="cams must be max-normalised into"):
        add_background(cams * 3)


def test_reliable_seeds_share_alpha_quantile_and_crf():
    scores = [0.55, 0.6, 0.7, 0.8, 0.9]
    probs = row_probs([1 - s for s in scores], scores)
    # thesis §2.3.1: 40% of the 5 class-1 pixels, i.e. the 2 most confident (0.8, 0.9)
    assert reliable_seeds(probs)[0, 0].tolist() == [255, 255, 255, 1, 1]
    assert reliable_seeds(probs, fraction=0.6)[0, 0].tolist() == [255, 255, 1, 1, 1]
    assert reliable_seeds(probs, alpha=0.75)[0, 0].tolist() == [255, 255, 255, 1, 1]
    # the older per-class quantile cut: above the 40% quantile (0.66) of the confidences
    assert reliable_seeds(probs, quantile=0.4)[0, 0].tolist() == [255, 255, 1, 1, 1]
    crf = torch.tensor([[[1, 1, 1, 0, 1]]])
    assert reliable_seeds(probs, crf_labels=crf)[0, 0].tolist() == [255, 255, 255, 255, 1]
    with pytest.raises(ValueError, match="crf_labels and probs"):
        reliable_seeds(probs, crf_labels=torch.zeros(1, 1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="either alpha"):
        reliable_seeds(probs, alpha=0.5, quantile=0.4)
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
        reliable_seeds(probs, fraction=1.5)


def test_reliable_seeds_keep_40_percent_of_each_class_counted():
    """Thesis §2.3.1: "α is chosen with 40% pixels selected as labeled pixels for each class"."""
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 7, 9, generator=generator, dtype=torch.float64)
    seeds = reliable_seeds(probs)
    for b in range(2):
        confidence, labels = probs[b].max(dim=0)
        for cls in range(3):
            pixels = [(y, x) for y in range(7) for x in range(9) if labels[y, x] == cls]
            ranked = sorted(pixels, key=lambda p: -float(confidence[p]))
            count = int(0.4 * len(pixels) + 0.5)
            top = set(ranked[:count])
            kept = {p for p in pixels if seeds[b][p] == cls}
            assert kept == top, (b, cls)
            assert len(kept) == round(0.4 * len(pixels))
        assert ((seeds[b] == 255) | (seeds[b] == labels)).all()


def test_topk_seeds_dynamic_threshold_and_background():
    fg = [0.1 * i for i in range(1, 11)]
    background = [0.0] * 10 + [0.85, 0.75]
    probs = row_probs(background, fg + [0.05, 0.05])
    seeds = topk_seeds(probs)
    # 10 class-1 pixels: the cut is the 7th smallest (0.7), strictly above it stay
    assert seeds[0, 0].tolist() == [255] * 7 + [1, 1, 1] + [0, 255]
    assert topk_seeds(probs, background_threshold=0.7)[0, 0, 10:].tolist() == [0, 0]
    # ranked like the others, the 2 background pixels cut at their larger score: none stays
    assert topk_seeds(probs, background_threshold=None)[0, 0, 10:].tolist() == [255, 255]


def test_top_fraction_ignores_low_scores_and_small_classes():
    scores = torch.tensor([[[0.005, 0.2, 0.3, 0.4, 0.5, 0.9]]])
    labels = torch.tensor([[[1, 1, 1, 1, 1, 2]]])
    keep = top_fraction(scores, labels, 0.5, min_score=0.01)
    # 4 pixels count (0.005 does not): the cut is the score at rank 2 (0.4); the single
    # class-2 pixel gives rank 0 and keeps nothing
    assert keep[0, 0].tolist() == [False, False, False, False, True, False]
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
        top_fraction(scores, labels, 1.5)
