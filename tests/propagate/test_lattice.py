"""The permutohedral lattice (graphseg.propagate.lattice) against the dense Gaussian filter
written out pair by pair, and the fully connected CRF on it against a dense mean field and
against pydensecrf where it is installed; each test runs with the compiled lattice of
graphseg_ext and with the tensor-op one."""

import numpy as np
import pytest
import torch

from graphseg.propagate import CRF_PRESETS, PermutohedralLattice, crf, dense_crf, lattice_filter
from graphseg.propagate import lattice as lattice_module

pytestmark = pytest.mark.usefixtures("each_backend")


def dense_gaussian(features, values):
    """Σ_j exp(−‖f_i − f_j‖² / 2) v_j, pair by pair."""
    out = torch.zeros_like(values)
    for i in range(len(features)):
        for j in range(len(features)):
            weight = torch.exp(-((features[i] - features[j]) ** 2).sum() / 2)
            out[i] += weight * values[j]
    return out


def normalised(filtered, ones):
    return filtered / ones


def grid_features(height, width, scale, colour=None):
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    features = [xs.reshape(-1) / scale, ys.reshape(-1) / scale]
    if colour is not None:
        features += [colour[c].reshape(-1) for c in range(colour.shape[0])]
    return torch.stack(features, 1)


@pytest.mark.parametrize("height, width, channels, bound", [
    # position only (d = 2) and position + colour (d = 5), odd sizes; relative errors of the
    # normalised filter measured over seeds 0-4: 2-D 0.007-0.013, 5-D 0.053-0.069
    (7, 9, 0, 0.02), (9, 5, 3, 0.1)])
def test_normalised_filter_is_the_dense_gaussian_within_the_lattice_error(
        height, width, channels, bound):
    generator = torch.Generator().manual_seed(0)
    colour = torch.rand(channels, height, width, generator=generator, dtype=torch.float64) * 3
    features = grid_features(height, width, 2.5, colour if channels else None)
    values = torch.rand(len(features), 2, generator=generator, dtype=torch.float64)
    ones = torch.ones(len(features), 1, dtype=torch.float64)
    lattice = PermutohedralLattice(features)
    got = normalised(lattice.filter(values), lattice.filter(ones))
    expected = normalised(dense_gaussian(features, values), dense_gaussian(features, ones))
    error = float((got - expected).norm() / expected.norm())
    assert error < bound


def test_identical_points_are_filtered_exactly_and_one_point_is_itself():
    # every point in one simplex with the same weights: the filter is a multiple of the sum,
    # normalised it is the mean, as the dense filter gives
    features = torch.full((5, 3), 0.37, dtype=torch.float64)
    values = torch.arange(10, dtype=torch.float64).view(5, 2)
    filtered = lattice_filter(features, values)
    ones = lattice_filter(features, torch.ones(5, 1, dtype=torch.float64))
    torch.testing.assert_close(filtered / ones, values.mean(0).expand(5, 2))
    single = lattice_filter(torch.tensor([[1.5, -2.0]]), torch.tensor([[2.0, 3.0]]))
    norm = lattice_filter(torch.tensor([[1.5, -2.0]]), torch.tensor([[1.0]]))
    torch.testing.assert_close(single / norm, torch.tensor([[2.0, 3.0]]))


def test_far_apart_points_do_not_mix_and_weights_are_barycentric():
    features = torch.tensor([[0.0, 0.0], [0.3, 0.1], [40.0, 40.0]], dtype=torch.float64)
    values = torch.tensor([[1.0], [2.0], [100.0]], dtype=torch.float64)
    lattice = PermutohedralLattice(features)
    assert bool((lattice.weight >= -1e-12).all())
    torch.testing.assert_close(lattice.weight.sum(1), torch.ones(3, dtype=torch.float64))
    out = lattice.filter(values)
    # the far point reads only itself; the two near ones only each other
    alone = lattice.filter(torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64))
    assert float(alone[0]) == 0 and float(alone[1]) == 0
    torch.testing.assert_close(out[2], 100 * alone[2])


def test_gradient_passes_gradcheck():
    generator = torch.Generator().manual_seed(1)
    features = torch.rand(11, 5, generator=generator, dtype=torch.float64) * 2
    lattice = PermutohedralLattice(features)
    values = torch.rand(11, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lattice.filter, (values,))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="features must be a float"):
        PermutohedralLattice(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="features must be finite"):
        PermutohedralLattice(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="at least one dimension"):
        PermutohedralLattice(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="values must be"):
        PermutohedralLattice(torch.zeros(3, 2)).filter(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="values must be floating point"):
        PermutohedralLattice(torch.zeros(3, 2)).filter(torch.zeros(3, 1, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_values_are_filtered_in_float32(dtype):
    generator = torch.Generator().manual_seed(4)
    lattice = PermutohedralLattice(torch.rand(30, 3, generator=generator) * 3)
    values = torch.rand(30, 2, generator=generator).to(dtype)
    out = lattice.filter(values)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), lattice.filter(values.float()).to(dtype).float())


def test_features_of_any_range_are_filtered_as_the_dense_gaussian():
    # far-apart groups (gaps shortened before the lattice), beyond float64's fractions
    # (moved to 0), and wider than one int64 code (rows of coordinates); across groups
    # nothing mixes: the lowest group keeps its place and its filter exactly, the other one
    # is moved (the lattice is not translation invariant) and filtered within the lattice's
    # error
    generator = torch.Generator().manual_seed(2)
    group = torch.rand(6, 5, generator=generator, dtype=torch.float64)
    values = torch.rand(12, 2, generator=generator, dtype=torch.float64)
    ones = torch.ones(6, 1, dtype=torch.float64)
    expected = normalised(dense_gaussian(group, values[6:]), dense_gaussian(group, ones))
    for offset in (1e3, 1e250):
        features = torch.cat([group, group + offset])
        filtered = lattice_filter(features, values)
        norm = lattice_filter(features, torch.ones(12, 1, dtype=torch.float64))
        if offset < 1e10:
            torch.testing.assert_close(filtered[:6], lattice_filter(group, values[:6]))
        moved = normalised(filtered[6:], norm[6:])
        assert float((moved - expected).norm() / expected.norm()) < 0.1
    single = lattice_filter(torch.tensor([[7e301, -3e300]], dtype=torch.float64),
                            torch.tensor([[4.0]], dtype=torch.float64))
    assert torch.isfinite(single).all() and float(single) > 0


def test_vertices_named_by_rows_equal_vertices_named_by_codes(monkeypatch):
    # a lattice too wide for int64 codes names its vertices by rows of coordinates: forced
    # here on features that codes hold, the two give the same filter
    generator = torch.Generator().manual_seed(3)
    features = torch.rand(50, 5, generator=generator, dtype=torch.float64) * 4
    values = torch.rand(50, 3, generator=generator, dtype=torch.float64)
    by_codes = lattice_filter(features, values)
    monkeypatch.setattr(lattice_module, "_CODE_BITS", 0)
    torch.testing.assert_close(lattice_filter(features, values), by_codes)


def dense_mean_field(image, probs, settings):
    """The fully connected CRF's mean field written out: both Gaussian kernels over every
    pixel pair (self included), symmetric-normalised, Potts compatibility."""
    _, channels, height, width = probs.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    position = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
    colour = image[0].reshape(3, -1).t() * 255
    kernels = []
    for features in (position / settings["smooth_sxy"],
                     torch.cat([position / settings["app_sxy"],
                                colour / settings["app_srgb"]], 1)):
        k = torch.exp(-torch.cdist(features, features).square() / 2)
        norm = k.sum(1).rsqrt()
        kernels.append(norm[:, None] * k * norm[None, :])
    unary = probs[0].reshape(channels, -1).t().clamp_min(1e-5).log()
    q = unary.softmax(1)
    for _ in range(settings["num_iter"]):
        q = (unary + settings["smooth_compat"] * kernels[0] @ q
             + settings["app_compat"] * kernels[1] @ q).softmax(1)
    return q.t().reshape(1, channels, height, width)


def scene(height, width, seed):
    """Two colour regions, a noisy unary that leans to the truth."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.full((1, 3, height, width), 0.2, dtype=torch.float64)
    image[:, 0, :, width // 2:] = 0.8
    image += 0.05 * torch.rand(image.shape, generator=generator, dtype=torch.float64)
    truth = torch.zeros(height, width, dtype=torch.long)
    truth[:, width // 2:] = 1
    logits = 0.6 * torch.nn.functional.one_hot(truth, 2).permute(2, 0, 1)[None] + torch.randn(
        1, 2, height, width, generator=generator, dtype=torch.float64)
    return image, logits.softmax(1), truth


@pytest.mark.parametrize("preset", ["psa", "a2gnn"])
def test_lattice_crf_follows_the_dense_mean_field(preset):
    image, probs, truth = scene(18, 23, 2)
    expected = dense_mean_field(image, probs, CRF_PRESETS[preset])
    got = crf(image, probs, preset=preset)
    # the lattice approximates the Gaussians (test above); the marginals stay close to the
    # exact ones (largest difference 1e-4 to 1.1e-3 over seeds 2-6, every label equal)
    assert float((got - expected).abs().max()) < 0.01
    agreement = float((got.argmax(1) == expected.argmax(1)).double().mean())
    assert agreement > 0.99
    assert float((got.argmax(1)[0] == truth).double().mean()) > float(
        (probs.argmax(1)[0] == truth).double().mean())


def test_one_pixel_image_is_the_literal_update():
    probs = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    image = torch.rand(1, 3, 1, 1, dtype=torch.float64)
    settings = CRF_PRESETS["psa"]
    q = probs.clone()
    for _ in range(settings["num_iter"]):  # both kernels give the pixel itself, normalised
        q = torch.softmax(probs.log() + (settings["smooth_compat"] + settings["app_compat"]) * q,
                          1)
    for method in ("lattice", "window"):
        torch.testing.assert_close(crf(image, probs, method=method), q)


def test_lattice_crf_batches_and_refuses_unknown_methods():
    first, probs_a, _ = scene(10, 12, 3)
    second, probs_b, _ = scene(10, 12, 4)
    both = crf(torch.cat([first, second]), torch.cat([probs_a, probs_b]))
    torch.testing.assert_close(both[1:], crf(second, probs_b))
    with pytest.raises(ValueError, match="method must be one of"):
        crf(first, probs_a, method="exact")


def test_dense_crf_is_the_lattice_crf_on_pydensecrf_inputs():
    image, probs, _ = scene(15, 19, 6)
    rgb = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # (H, W, 3) uint8
    q = dense_crf(rgb, probs[0].numpy().astype(np.float32), num_iter=5, sxy_bilateral=50,
                  srgb_bilateral=5)
    assert isinstance(q, np.ndarray) and q.dtype == np.float32 and q.shape == (2, 15, 19)
    expected = crf(torch.from_numpy(rgb).permute(2, 0, 1)[None] / 255, probs.float(),
                   method="lattice", num_iter=5, app_sxy=50, app_srgb=5)
    np.testing.assert_allclose(q, expected[0].numpy(), atol=1e-6)
    assert isinstance(dense_crf(rgb, probs[0]), torch.Tensor)
    with pytest.raises(ValueError, match="compat_bilateral must be a number"):
        dense_crf(rgb, probs[0], compat_bilateral=np.eye(2))
    with pytest.raises(ValueError, match="probs must be a float"):
        dense_crf(rgb, probs[0].numpy().argmax(0))


def test_lattice_crf_equals_pydensecrf():
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    from pydensecrf.utils import unary_from_softmax

    image, probs, _ = scene(31, 40, 5)
    settings = CRF_PRESETS["psa"]
    rgb = (image[0].permute(1, 2, 0) * 255).round()
    model = dcrf.DenseCRF2D(40, 31, 2)
    model.setUnaryEnergy(np.ascontiguousarray(
        unary_from_softmax(probs[0].numpy().astype(np.float32))))
    model.addPairwiseGaussian(sxy=settings["smooth_sxy"], compat=settings["smooth_compat"])
    model.addPairwiseBilateral(sxy=settings["app_sxy"], srgb=settings["app_srgb"],
                               rgbim=np.ascontiguousarray(rgb.to(torch.uint8).numpy()),
                               compat=settings["app_compat"])
    peer = torch.from_numpy(np.array(model.inference(settings["num_iter"]))).view(1, 2, 31, 40)
    got = crf(rgb.permute(2, 0, 1)[None] / 255, probs.float())
    assert torch.equal(got.argmax(1), peer.argmax(1))
    assert float((got - peer).abs().max()) < 1e-3


@pytest.mark.parametrize("dim, scale", [(1, 3.0), (2, 1.0), (3, 4.0), (5, 2.0), (7, 3.0),
                                        (12, 1e6)])
def test_diagonal_is_the_filter_of_each_unit_vector_read_at_its_point(dim, scale):
    # dense and sparse lattices (vertices missing on the blur's paths), and one too wide for
    # int64 vertex codes; the diagonal of the filter's matrix, column by column
    generator = torch.Generator().manual_seed(dim)
    features = torch.rand(60, dim, generator=generator, dtype=torch.float64) * scale
    features[:5] = features[5]  # points sharing a simplex
    lattice = PermutohedralLattice(features)
    expected = torch.diagonal(lattice.filter(torch.eye(60, dtype=torch.float64)))
    torch.testing.assert_close(lattice.diagonal(), expected, rtol=1e-12, atol=1e-15)
    single = PermutohedralLattice(torch.tensor([[0.3, 0.7]], dtype=torch.float32))
    assert single.diagonal().dtype == torch.float32
    torch.testing.assert_close(single.diagonal(), single.filter(torch.ones(1, 1))[:, 0])


def test_gaps_found_without_sorting_are_the_gaps_a_sort_finds():
    # the binned check may only say "no gaps" where the sorted values have none wider than
    # the gap; a dense grid has none, one moved block opens one
    generator = torch.Generator().manual_seed(7)
    grid = grid_features(40, 50, 3.0)
    moved = grid.clone()
    moved[moved[:, 0] > 8, 0] += 30
    cases = {"grid": grid, "moved": moved,
             "clusters": torch.cat([torch.rand(30, 2, generator=generator, dtype=torch.float64),
                                    torch.rand(30, 2, generator=generator, dtype=torch.float64)
                                    + 26])}
    gap = lattice_module._reach(2)
    found = {}
    for name, features in cases.items():
        low, high = torch.aminmax(features, dim=0)
        found[name] = lattice_module._no_gaps(features, low, high, gap)
        widest = float(features.sort(0).values.diff(dim=0).amax())
        assert not found[name] or widest <= gap
    assert found == {"grid": True, "moved": False, "clusters": False}


def test_scaled_filter_is_the_filter_between_the_factors():
    # s ⊙ K (s ⊙ v) against the filter's matrix K (column j: the filter of unit vector j);
    # planar values (classes in planes) stay planar through the compiled filter
    generator = torch.Generator().manual_seed(5)
    lattice = PermutohedralLattice(torch.rand(40, 5, generator=generator,
                                              dtype=torch.float64) * 2)
    matrix = lattice.filter(torch.eye(40, dtype=torch.float64))
    planar = torch.rand(3, 40, generator=generator, dtype=torch.float64)
    scale = torch.rand(40, generator=generator, dtype=torch.float64) + 0.5
    got = lattice.filter(planar.t(), scale=scale)
    torch.testing.assert_close(got, (scale[:, None] * matrix * scale) @ planar.t())
    if lattice._ext is not None:
        assert got.t().is_contiguous()
    values = planar.t().clone().requires_grad_()
    upstream = torch.rand(40, 3, generator=generator, dtype=torch.float64)
    grad = torch.autograd.grad(lattice.filter(values, scale=scale), values, upstream)[0]
    torch.testing.assert_close(grad, (scale[:, None] * matrix * scale).t() @ upstream)
    assert torch.autograd.gradcheck(lambda v: lattice.filter(v, scale=scale), (values,))
    with pytest.raises(ValueError, match="scale must be a float"):
        lattice.filter(planar.t(), scale=scale[:5])
    with pytest.raises(ValueError, match="scale must be a float"):
        lattice.filter(planar.t(), scale=torch.ones(40, dtype=torch.long))
