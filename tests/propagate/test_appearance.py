"""Colour models of the seeds (graphseg.propagate.appearance)."""

import numpy as np
import pytest
import torch

from graphseg.propagate import colour_posterior, fuse_appearance


def brute_posterior(image, seeds, num_classes, bins, floor):
    """The same histograms with explicit loops over classes and cells."""
    _, height, width = image.shape
    cells = bins**3
    level = (image.clamp(0, 1) * (bins - 1)).round().long()
    cell = (level[0] * bins + level[1]) * bins + level[2]
    histograms = []
    for k in range(num_classes):
        counts = np.zeros((bins, bins, bins))
        for y in range(height):
            for x in range(width):
                if seeds[y, x] == k:
                    c = int(cell[y, x])
                    counts[c // (bins * bins), (c // bins) % bins, c % bins] += 1
        smooth = np.zeros_like(counts)
        for i in range(bins):
            for j in range(bins):
                for m in range(bins):
                    block = counts[max(0, i - 1):i + 2, max(0, j - 1):j + 2, max(0, m - 1):m + 2]
                    smooth[i, j, m] = block.mean()
        flat = smooth.reshape(-1)
        flat = flat / flat.sum() if flat.sum() > 0 else np.full(cells, 1 / cells)
        histograms.append((1 - floor) * flat + floor / cells)
    likelihood = np.stack([h[cell.numpy()] for h in histograms])
    return likelihood / likelihood.sum(0, keepdims=True)


def test_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 9, 11, generator=gen)
    seeds = torch.randint(0, 4, (9, 11), generator=gen)
    seeds[seeds == 3] = 255
    seeds[0, 0] = 2
    got = colour_posterior(image[None], seeds, num_classes=4, bins=4, floor=0.01)
    want = brute_posterior(image, seeds, 4, 4, 0.01)
    assert got.shape == (1, 4, 9, 11)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-5, atol=1e-7)
    # class 3 has no seeds: a uniform histogram
    assert torch.allclose(got.sum(1), torch.ones(1, 9, 11))


def test_separates_two_colours_and_batches_independently():
    red = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1).expand(3, 6, 6)
    blue = torch.tensor([0.1, 0.1, 0.9]).view(3, 1, 1).expand(3, 6, 6)
    image = torch.cat([red, blue], 2)  # left red, right blue
    seeds = torch.full((6, 12), 255)
    seeds[0, 0], seeds[0, 11] = 0, 1
    posterior = colour_posterior(image, seeds)
    assert bool((posterior[0, 0, :, :6] > 0.99).all())
    assert bool((posterior[0, 1, :, 6:] > 0.99).all())
    # the second image's seeds swap the classes: its posterior swaps, the first one's does not
    batch = colour_posterior(torch.stack([image, image]),
                             torch.stack([seeds, torch.where(seeds == 255, 255, 1 - seeds)]))
    assert torch.allclose(batch[0], posterior[0])
    assert torch.allclose(batch[1], posterior[0].flip(0))


def test_fuse_is_a_product_of_experts():
    probs = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)
    posterior = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1)
    fused = fuse_appearance(probs, posterior, weight=1.0)
    want = torch.tensor([0.18, 0.08]) / 0.26
    assert torch.allclose(fused.view(2), want, atol=1e-6)
    assert torch.allclose(fuse_appearance(probs, posterior, weight=0.0), probs)


def test_bad_inputs():
    image = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="seeds"):
        colour_posterior(image, torch.zeros(1, 5, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="seeds"):
        colour_posterior(image, torch.full((4, 4), 3), num_classes=2)
    with pytest.raises(ValueError, match="floor"):
        colour_posterior(image, torch.zeros(4, 4, dtype=torch.int64), floor=1.0)
    with pytest.raises(ValueError, match="bins"):
        colour_posterior(image, torch.zeros(4, 4, dtype=torch.int64), bins=0)
    with pytest.raises(ValueError, match="same shape"):
        fuse_appearance(torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4), weight=1.0)
    with pytest.raises(ValueError, match="weight"):
        fuse_appearance(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4), weight=-1.0)
