"""RRM's fully connected dense energy (thesis Eq. 2.18-2.21) against loops over all pixel pairs."""

import math

import pytest
import torch

from graphseg import _checks
from graphseg.losses import FullyConnectedEnergyLoss, fully_connected_energy_loss

B, C, H, W = 2, 3, 3, 4


def make(seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, H, W, generator=generator, dtype=torch.float64) * 0.2 + 0.4
    probs = torch.rand(B, C, H, W, generator=generator, dtype=torch.float64).mul(3).softmax(1)
    seeds = torch.randint(0, C, (B, H, W), generator=generator)
    seeds[torch.rand(B, H, W, generator=generator) < 0.5] = 255
    return image, probs, seeds


def loop_energy(probs, image, seeds=None, sigma_d=100.0, sigma_r=15.0):
    """Eq. 2.18-2.21 pair by pair: S(i) sum_{j != i} G(i, j) sum_c P_c(i) (1 - P_c(j)), colour
    on 0-255, summed per image and averaged over the images."""
    batch, _, height, width = probs.shape
    pixels = [(y, x) for y in range(height) for x in range(width)]
    total = 0.0
    for b in range(batch):
        for y, x in pixels:
            gate = 1.0
            if seeds is not None and seeds[b, y, x] != 255:
                gate = 1 - float(probs[b, :, y, x].max())
            for qy, qx in pixels:
                if (qy, qx) == (y, x):
                    continue
                colour = float(((image[b, :, y, x] - image[b, :, qy, qx]) * 255).square().sum())
                kernel = math.exp(-((y - qy) ** 2 + (x - qx) ** 2) / (2 * sigma_d**2)
                                  - colour / (2 * sigma_r**2))
                potts = float((probs[b, :, y, x] * (1 - probs[b, :, qy, qx])).sum())
                total += gate * kernel * potts
    return total / batch


@pytest.mark.parametrize("with_seeds", [False, True])
def test_exact_equals_loop_over_all_pairs(with_seeds):
    image, probs, seeds = make()
    seeds = seeds if with_seeds else None
    loss = fully_connected_energy_loss(probs, image, seeds=seeds, method="exact")
    assert float(loss) == pytest.approx(loop_energy(probs, image, seeds), rel=1e-12)
    per_pixel = fully_connected_energy_loss(probs, image, seeds=seeds, method="exact",
                                            normalization="pixels")
    assert float(per_pixel) == pytest.approx(float(loss) / (H * W), rel=1e-12)
    narrow = fully_connected_energy_loss(probs, image, seeds=seeds, method="exact",
                                         sigma_xy=1.0, sigma_rgb=5.0)
    assert float(narrow) == pytest.approx(loop_energy(probs, image, seeds, 1.0, 5.0), rel=1e-12)


def test_gradient_equals_dense_form_with_detached_filter():
    image, probs, seeds = make(1)
    flat_image = image.flatten(2) * 255
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).double()

    def dense(p):
        flat = p.flatten(2)
        gate = torch.where(seeds.flatten(1) != 255, 1 - flat.detach().amax(1),
                           torch.ones(B, H * W, dtype=torch.float64))
        total = 0
        for b in range(B):
            kernel = torch.exp(-torch.cdist(pos, pos).square() / (2 * 100.0**2)
                               - torch.cdist(flat_image[b].t(), flat_image[b].t()).square()
                               / (2 * 15.0**2))
            kernel = kernel - torch.diag(torch.diagonal(kernel))
            total = total + (gate[b] * (flat[b].t() * (kernel @ (1 - flat[b].t()))).sum(1)).sum()
        return total / B

    leaf = probs.clone().requires_grad_()
    fully_connected_energy_loss(leaf, image, seeds=seeds, method="exact").backward()
    reference = probs.clone().requires_grad_()
    dense(reference).backward()
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-9, atol=1e-12)
    small = probs[:1].clone().requires_grad_()
    for method in ("exact", "coarse"):
        assert torch.autograd.gradcheck(
            lambda p, m=method: fully_connected_energy_loss(p, image[:1], method=m, cell=2),
            (small,))


def test_coarse_grid():
    image, probs, seeds = make(2)
    exact = fully_connected_energy_loss(probs, image, seeds=seeds, method="exact")
    # cells of one pixel are the exact sum
    one = fully_connected_energy_loss(probs, image, seeds=seeds, method="coarse", cell=1)
    assert float(one) == pytest.approx(float(exact), rel=1e-12)
    # an image and predictions constant on 2x2 cells: only the positions inside a cell are
    # approximated, which sigma_d = 100 hardly sees
    blocky_image = image[:, :, :2, :2].repeat_interleave(2, 2).repeat_interleave(2, 3)
    blocky_probs = probs[:, :, :2, :2].repeat_interleave(2, 2).repeat_interleave(2, 3)
    coarse = fully_connected_energy_loss(blocky_probs, blocky_image, method="coarse", cell=2)
    reference = fully_connected_energy_loss(blocky_probs, blocky_image, method="exact")
    assert float(coarse) == pytest.approx(float(reference), rel=1e-4)
    assert float(coarse) != float(reference)
    # colour cubes: stripes of two colours inside every 2x2 cell; split by colour, each node
    # holds one colour and the sum is nearly exact; a purely spatial grid mixes them
    stripes = torch.zeros(1, 3, 4, 6, dtype=torch.float64)
    stripes[:, :, :, 1::2] = 0.8
    stripe_probs = probs[:1, :, :1, :].expand(-1, -1, 4, -1)[..., :6].contiguous()
    stripe_probs = torch.cat([stripe_probs, stripe_probs[..., :2]], 3)[..., :6]
    reference = fully_connected_energy_loss(stripe_probs, stripes, method="exact")
    split = fully_connected_energy_loss(stripe_probs, stripes, method="coarse", cell=2,
                                        colour_bin=5.0)
    mixed = fully_connected_energy_loss(stripe_probs, stripes, method="coarse", cell=2,
                                        colour_bin=None)
    assert abs(float(split) / float(reference) - 1) < 0.05
    assert abs(float(mixed) / float(reference) - 1) > 0.5
    # the same one-hot prediction everywhere costs nothing
    constant = torch.zeros(B, C, 5, 7, dtype=torch.float64)
    constant[:, 1] = 1
    for method in ("exact", "coarse"):
        assert float(fully_connected_energy_loss(constant, torch.rand(B, 3, 5, 7),
                                                 method=method)) == 0.0
    # an image at another size is resized to the predictions
    big = torch.nn.functional.interpolate(image, size=(6, 8), mode="bilinear")
    assert torch.isfinite(fully_connected_energy_loss(probs, big))


def test_module_refusals_and_memory():
    image, probs, seeds = make(3)
    module = FullyConnectedEnergyLoss(method="exact", normalization="pixels")
    assert float(module(probs, image, seeds)) == float(fully_connected_energy_loss(
        probs, image, seeds=seeds, method="exact", normalization="pixels"))
    assert "method='exact'" in repr(module) and "normalization='pixels'" in repr(module)
    with pytest.raises(ValueError, match=r"accepts at most max_pixels=11 pixels .* got 3x4"):
        fully_connected_energy_loss(probs, image, method="exact", max_pixels=11)
    with pytest.raises(ValueError, match="method must be one of"):
        fully_connected_energy_loss(probs, image, method="window")
    with pytest.raises(ValueError, match="normalization must be one of"):
        FullyConnectedEnergyLoss(normalization="mean")
    with pytest.raises(ValueError, match=r"image must be a \(B, 3, H, W\) batch with B = 2"):
        fully_connected_energy_loss(probs, image[:1])
    with pytest.raises(ValueError, match=r"seeds must have shape \(2, 3, 4\)"):
        fully_connected_energy_loss(probs, image, seeds=seeds[:, :2])
    _checks.set_memory_limit(1024)
    try:
        with pytest.raises(_checks.MemoryLimitError, match="fully_connected_energy_loss"):
            fully_connected_energy_loss(probs, image, method="exact")
    finally:
        _checks.set_memory_limit(None)
