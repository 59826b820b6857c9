import math

import pytest
import torch

from graphseg.propagate import crf, crf_kernels, par, par_affinity

pytestmark = pytest.mark.usefixtures("each_backend")

RING = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def brute_par_affinity(image, dilations, w1, w2):
    _, channels, height, width = image.shape
    offsets = [(d * dy, d * dx) for d in dilations for dy, dx in RING]
    distance = torch.tensor([math.hypot(dy, dx) for dy, dx in offsets], dtype=image.dtype)
    position = torch.softmax(-(distance / distance.std() / w1) ** 2, 0)
    out = torch.zeros(1, len(offsets), height, width, dtype=image.dtype)
    for y in range(height):
        for x in range(width):
            neighbours = torch.stack([
                image[0, :, min(max(y + dy, 0), height - 1), min(max(x + dx, 0), width - 1)]
                for dy, dx in offsets], 1)  # (C, K), replicate border
            std = neighbours.std(1, keepdim=True)
            logits = -((neighbours - image[0, :, y, x, None]).abs() / (std + 1e-8) / w1) ** 2
            out[0, :, y, x] = torch.softmax(logits.mean(0), 0) + w2 * position
    return out


def test_par_affinity_matches_brute_force():
    image = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    out = par_affinity(image, dilations=(1, 2), w1=0.3, w2=0.01)
    torch.testing.assert_close(out, brute_par_affinity(image, (1, 2), 0.3, 0.01))


def test_par_affinity_float32_low_contrast():
    image = 0.7 + 1e-3 * torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(5),
                                    dtype=torch.float64)
    exact = par_affinity(image, dilations=(1, 2))
    single = par_affinity(image.float(), dilations=(1, 2))
    torch.testing.assert_close(single.double(), exact, atol=2e-3, rtol=0)


def test_par_iterates_with_replicate_border():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 6, 7, generator=generator, dtype=torch.float64)
    masks = torch.rand(1, 2, 6, 7, generator=generator, dtype=torch.float64)
    affinity = brute_par_affinity(image, (1, 3), 0.3, 0.01)
    offsets = [(d * dy, d * dx) for d in (1, 3) for dy, dx in RING]
    expected = masks.clone()
    for _ in range(3):
        new = torch.zeros_like(expected)
        for y in range(6):
            for x in range(7):
                for k, (dy, dx) in enumerate(offsets):
                    yy, xx = min(max(y + dy, 0), 5), min(max(x + dx, 0), 6)
                    new[0, :, y, x] += affinity[0, k, y, x] * expected[0, :, yy, xx]
        expected = new
    torch.testing.assert_close(par(image, masks, dilations=(1, 3), num_iter=3), expected)


def test_par_upsamples_masks_align_corners():
    image = torch.rand(1, 3, 16, 16)
    masks = torch.rand(1, 4, 4, 4)
    out = par(image, masks, num_iter=0, dilations=(1, 2))
    expected = torch.nn.functional.interpolate(masks, size=(16, 16), mode="bilinear",
                                               align_corners=True)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="masks has batch size 2"):
        par(image, torch.rand(2, 4, 4, 4))


def test_constant_image_par_keeps_constant_masks():
    image = torch.full((1, 3, 9, 9), 0.4, dtype=torch.float64)
    masks = torch.full((1, 2, 9, 9), 0.5, dtype=torch.float64)
    out = par(image, masks, dilations=(1, 2), num_iter=4)
    torch.testing.assert_close(out, masks * 1.01**4)  # rows of PAR's affinity sum to 1 + w2


def test_crf_kernels_are_normalised_gaussians():
    image = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(2),
                       dtype=torch.float64)
    smooth, appearance = crf_kernels(image, smooth_sxy=1.0, app_sxy=2.0, app_srgb=40.0)
    nodes = 36
    raw = torch.eye(nodes, dtype=torch.float64)
    for p in range(nodes):
        for q in range(nodes):
            dy, dx = q // 6 - p // 6, q % 6 - p % 6
            if p != q and dy * dy + dx * dx <= 4:  # disk radius ceil(1.5 * 1)
                raw[p, q] = math.exp(-(dy * dy + dx * dx) / 2)
    degree = raw.sum(1).rsqrt()
    torch.testing.assert_close(smooth.to_dense(), degree[:, None] * raw * degree[None, :])
    raw = torch.eye(nodes, dtype=torch.float64)
    colour = image[0].reshape(3, -1).t() * 255
    for offset in appearance.offsets.tolist():
        dy, dx = offset
        distance = max(abs(dy), abs(dx))
        area = 1.0 if dy * dy + dx * dx <= 4 else 1.5 * math.pi / 8 * distance**2
        for p in range(nodes):
            y, x = divmod(p, 6)
            if 0 <= y + dy < 6 and 0 <= x + dx < 6:
                q = (y + dy) * 6 + x + dx
                raw[p, q] = area * math.exp(-(dy * dy + dx * dx) / (2 * 2.0**2)
                                            - float((colour[p] - colour[q]).square().sum())
                                            / (2 * 40.0**2))
    degree = raw.sum(1).rsqrt()
    torch.testing.assert_close(appearance.to_dense(), degree[:, None] * raw * degree[None, :])


def test_crf_properties():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 20, 24, generator=generator, dtype=torch.float64)
    probs = torch.softmax(torch.randn(1, 3, 20, 24, generator=generator, dtype=torch.float64), 1)
    out = crf(image, probs, preset="a2gnn", num_iter=5)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 20, 24, dtype=torch.float64))
    untouched = crf(image, probs, smooth_compat=0, app_compat=0)
    torch.testing.assert_close(untouched, probs)
    # a constant image and uniform probabilities are a fixed point
    flat = crf(torch.full_like(image, 0.5), torch.full_like(probs, 1 / 3), num_iter=3)
    torch.testing.assert_close(flat, torch.full_like(probs, 1 / 3))


def test_crf_smooths_noisy_labels():
    generator = torch.Generator().manual_seed(4)
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, :, 16:] = 1.0
    truth = (torch.arange(32) >= 16).long().expand(32, 32)
    noisy = torch.where(torch.rand(32, 32, generator=generator) < 0.2, 1 - truth, truth)
    probs = torch.nn.functional.one_hot(noisy, 2).permute(2, 0, 1)[None].float() * 0.4 + 0.3
    refined = crf(image, probs)[0].argmax(0)
    assert (refined == truth).float().mean() > (noisy == truth).float().mean() + 0.15


def test_crf_bad_inputs():
    with pytest.raises(ValueError, match="preset must be one of"):
        crf(torch.rand(3, 8, 8), torch.rand(1, 2, 8, 8), preset="deeplab")
    with pytest.raises(ValueError, match="probs and image must share"):
        crf(torch.rand(3, 8, 8), torch.rand(1, 2, 8, 9))
    with pytest.raises(ValueError, match="app_srgb must be > 0"):
        crf(torch.rand(3, 8, 8), torch.rand(1, 2, 8, 8), app_srgb=0)
