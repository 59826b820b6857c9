"""RRM's fully connected dense energy (thesis Eq. 2.18-2.21) against loops over all pixel pairs."""

import math

import pytest
import torch

from graphseg import _checks, ops
from graphseg.losses import FullyConnectedEnergyLoss, fully_connected_energy_loss
from graphseg.propagate import PermutohedralLattice

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


def dense_form(probs, seeds, kernels):
    """The energy with dense (n, n) kernels per image, their diagonals dropped, and the soft
    filter detached: sum_i S(i) sum_c P_c(i) (K (1 - P_c))(i), averaged over the images."""
    flat = probs.flatten(2)
    gate = torch.where(seeds.flatten(1) != 255, 1 - flat.detach().amax(1),
                       torch.ones(B, H * W, dtype=torch.float64))
    total = 0
    for b, kernel in enumerate(kernels):
        kernel = kernel - torch.diag(torch.diagonal(kernel))
        total = total + (gate[b] * (flat[b].t() * (kernel @ (1 - flat[b].t()))).sum(1)).sum()
    return total / B


def reference_kernels(method, image):
    """Per image the (n, n) kernel of the method: G written out, or the lattice filter's
    matrix rescaled by its diagonal, K_ij / sqrt(K_ii K_jj)."""
    if method == "exact":
        ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1).double()
        colour = image.flatten(2).transpose(1, 2) * 255
        return [torch.exp(-torch.cdist(pos, pos).square() / (2 * 100.0**2)
                          - torch.cdist(colour[b], colour[b]).square() / (2 * 15.0**2))
                for b in range(B)]
    kernels = []
    for b in range(B):
        kernel = lattice_kernel(image[b], 100.0, 15.0)
        scale = torch.diagonal(kernel).rsqrt()
        kernels.append(scale[:, None] * kernel * scale[None, :])
    return kernels


@pytest.mark.parametrize("method, seed, backend", [("exact", 1, "auto"), ("lattice", 5, "auto"),
                                                   ("lattice", 5, "reference")])
def test_gradient_equals_dense_form_with_detached_filter(method, seed, backend):
    # the lattice's two backends: the compiled one where it is built, and tensor operations
    image, probs, seeds = make(seed)
    leaf = probs.clone().requires_grad_()
    with ops.use_backend(backend):
        fully_connected_energy_loss(leaf, image, seeds=seeds, method=method).backward()
    reference = probs.clone().requires_grad_()
    dense_form(reference, seeds, reference_kernels(method, image)).backward()
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-9, atol=1e-12)


def test_gradcheck():
    # without seeds: the detached filter is no function of P that finite differences see
    image, probs, _ = make(1)
    small = probs[:1].clone().requires_grad_()
    for options in ({"method": "exact"}, {"method": "coarse", "cell": 2},
                    {"method": "lattice", "sigma_xy": 2.0, "sigma_rgb": 5.0}):
        assert torch.autograd.gradcheck(
            lambda p, o=options: fully_connected_energy_loss(p, image[:1], **o), (small,))


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
    for method in ("exact", "coarse", "lattice"):
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
    with pytest.raises(ValueError, match=r"method must be one of \['coarse', 'exact', "
                                         r"'lattice'\], got 'window'"):
        fully_connected_energy_loss(probs, image, method="window")
    with pytest.raises(ValueError, match="method must be one of"):
        FullyConnectedEnergyLoss(method="paper")
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


# -- method="lattice" -------------------------------------------------------------------------


def lattice_kernel(image, sigma_d, sigma_r):
    """The lattice filter of one image as a dense matrix (the filter of every unit vector) on
    the features (y, x) / sigma_d, rgb * 255 / sigma_r, pixels in row-major order."""
    height, width = image.shape[1:]
    features = [[y / sigma_d, x / sigma_d, *(image[:, y, x] * 255 / sigma_r).tolist()]
                for y in range(height) for x in range(width)]
    lattice = PermutohedralLattice(torch.tensor(features, dtype=torch.float64))
    return lattice.filter(torch.eye(height * width, dtype=torch.float64))


def loop_lattice_energy(probs, image, seeds=None, sigma_d=100.0, sigma_r=15.0):
    """The lattice form pair by pair: S(i) sum_{j != i} K_ij / sqrt(K_ii K_jj) sum_c P_c(i)
    (1 - P_c(j)) with K the lattice filter's matrix, summed per image, averaged."""
    batch, _, height, width = probs.shape
    pixels = [(y, x) for y in range(height) for x in range(width)]
    total = 0.0
    for b in range(batch):
        kernel = lattice_kernel(image[b], sigma_d, sigma_r)
        for i, (y, x) in enumerate(pixels):
            gate = 1.0
            if seeds is not None and seeds[b, y, x] != 255:
                gate = 1 - float(probs[b, :, y, x].max())
            for j, (qy, qx) in enumerate(pixels):
                if i == j:
                    continue
                weight = float(kernel[i, j]) / math.sqrt(float(kernel[i, i] * kernel[j, j]))
                potts = float((probs[b, :, y, x] * (1 - probs[b, :, qy, qx])).sum())
                total += gate * weight * potts
    return total / batch


@pytest.mark.parametrize("with_seeds", [False, True])
def test_lattice_equals_loop_over_the_rescaled_lattice_kernel(with_seeds):
    image, probs, seeds = make(4)
    seeds = seeds if with_seeds else None
    loss = fully_connected_energy_loss(probs, image, seeds=seeds, method="lattice")
    assert float(loss) == pytest.approx(loop_lattice_energy(probs, image, seeds), rel=1e-12)
    # narrow bandwidths: the lattice sees the pixels far apart
    narrow = fully_connected_energy_loss(probs, image, seeds=seeds, method="lattice",
                                         sigma_xy=1.0, sigma_rgb=5.0)
    assert float(narrow) == pytest.approx(
        loop_lattice_energy(probs, image, seeds, 1.0, 5.0), rel=1e-12)
    per_pixel = fully_connected_energy_loss(probs, image, seeds=seeds, method="lattice",
                                            normalization="pixels")
    assert float(per_pixel) == pytest.approx(float(loss) / (H * W), rel=1e-12)


def test_lattice_against_exact():
    # one colour and sigma_d far wider than the image: the pixels lie within 3e-4 of each
    # other in feature space, the rescaled lattice kernel is 1 within 3e-6, G within 1e-7
    _, probs, seeds = make(6)
    flat = torch.full((B, 3, H, W), 0.3, dtype=torch.float64)
    lattice = fully_connected_energy_loss(probs, flat, seeds=seeds, method="lattice",
                                          sigma_xy=1e4)
    exact = fully_connected_energy_loss(probs, flat, seeds=seeds, method="exact", sigma_xy=1e4)
    assert float(lattice) == pytest.approx(float(exact), rel=1e-6)
    # a 16x16 image of colour ramps and smooth predictions: relative errors of the value
    # measured over seeds 0-4: 0.6-2.4 %, gradient cosines 0.9938-0.9950
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 16, dtype=torch.float64)
    image = torch.stack([ramp[:, None].expand(16, 16), ramp[None, :].expand(16, 16),
                         torch.full((16, 16), 0.5, dtype=torch.float64)])[None]
    image = (image + 0.05 * torch.rand(1, 3, 16, 16, generator=generator,
                                       dtype=torch.float64)).clamp(0, 1)
    logits = torch.randn(1, C, 4, 4, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear").mul(3)
    values, grads = [], []
    for method in ("exact", "lattice"):
        leaf = smooth.softmax(1).requires_grad_()
        loss = fully_connected_energy_loss(leaf, image, method=method)
        loss.backward()
        values.append(float(loss.detach()))
        grads.append(leaf.grad.flatten())
    assert abs(values[1] / values[0] - 1) < 0.05
    assert float(torch.nn.functional.cosine_similarity(*grads, dim=0)) > 0.99
