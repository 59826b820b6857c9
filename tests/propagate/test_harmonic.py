import numpy as np
import pytest
import torch
from skimage.segmentation import random_walker

from graphseg import WindowGraph, pixel_graph, window_offsets
from graphseg.propagate import harmonic, random_walker_graph

pytestmark = pytest.mark.usefixtures("each_backend")


def dense_harmonic(dense, seeds, classes):
    """Direct solve of L_uu x_u = -L_ul x_l with numpy."""
    dense = (dense + dense.T) / 2
    np.fill_diagonal(dense, 0)
    laplacian = np.diag(dense.sum(1)) - dense
    known = seeds != 255
    fixed = np.eye(classes)[np.where(known, seeds, 0)] * known[:, None]
    out = fixed.copy()
    unknown = ~known
    rhs = -laplacian[np.ix_(unknown, known)] @ fixed[known]
    out[unknown] = np.linalg.solve(laplacian[np.ix_(unknown, unknown)], rhs)
    return out


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 9, 11, generator=generator, dtype=torch.float64)
    seeds = torch.full((1, 9, 11), 255, dtype=torch.int64)
    seeds[0, 1, 1], seeds[0, 7, 9], seeds[0, 4, 5], seeds[0, 8, 0] = 0, 1, 2, 1
    return image, seeds


@pytest.mark.parametrize("preconditioner", ["multigrid", "jacobi", "none"])
def test_matches_direct_solve(problem, preconditioner):
    image, seeds = problem
    graph = pixel_graph(image, radius=2, sigma_rgb=0.3)
    out = harmonic(graph, seeds, tol=1e-10, preconditioner=preconditioner)
    expected = dense_harmonic(graph.to_dense().numpy(), seeds.reshape(-1).numpy(), 3)
    np.testing.assert_allclose(out[0].reshape(3, -1).t().numpy(), expected, atol=1e-6)


def test_asymmetric_graph_uses_symmetrised_laplacian(problem):
    image, seeds = problem
    graph = pixel_graph(image, radius=2).normalize("row")  # row-normalised: not symmetric
    out = harmonic(graph, seeds, tol=1e-10)
    expected = dense_harmonic(graph.to_dense().numpy(), seeds.reshape(-1).numpy(), 3)
    np.testing.assert_allclose(out[0].reshape(3, -1).t().numpy(), expected, atol=1e-6)


def test_invariants(problem):
    image, seeds = problem
    out = harmonic(pixel_graph(image, radius=2), seeds, tol=1e-8)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 9, 11, dtype=torch.float64))
    assert (out >= 0).all()
    known = seeds[0] != 255
    assert torch.equal(out[0].argmax(0)[known], seeds[0][known])


def test_pyg_graph_gives_equal_result(problem):
    image, seeds = problem
    graph = pixel_graph(image, radius=2)
    out = harmonic(graph, seeds, tol=1e-10)
    flat = harmonic(graph.to_pyg(), seeds.reshape(-1), tol=1e-10)
    torch.testing.assert_close(flat.t().reshape(1, 3, 9, 11), out, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multigrid' needs a WindowGraph"):
        harmonic(graph.to_pyg(), seeds.reshape(-1), preconditioner="multigrid")


def test_disconnected_halves_keep_their_labels():
    offsets = window_offsets(1, "square")
    weight = torch.ones(1, 8, 6, 8, dtype=torch.float64)
    for k, (_, dx) in enumerate(offsets.tolist()):
        # cut every edge that crosses between columns 3 and 4
        if dx > 0:
            weight[0, k, :, 3] = 0
        if dx < 0:
            weight[0, k, :, 4] = 0
    graph = WindowGraph(weight, offsets)
    seeds = torch.full((1, 6, 8), 255)
    seeds[0, 0, 0], seeds[0, 5, 7] = 0, 1
    labels = harmonic(graph, seeds, tol=1e-10)[0].argmax(0)
    assert (labels[:, :4] == 0).all() and (labels[:, 4:] == 1).all()


def test_component_without_seed_is_uniform():
    weight = torch.zeros(1, 4, 1, 4, dtype=torch.float64)
    offsets = window_offsets(1)
    graph = WindowGraph(weight, offsets)
    seeds = torch.tensor([[[0, 1, 255, 255]]])
    out = harmonic(graph, seeds)
    torch.testing.assert_close(out[0, :, 0, 2:], torch.full((2, 2), 0.5, dtype=torch.float64))


def test_float32_multigrid_matches_float64():
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        image = torch.rand(3, 20, 20, generator=generator, dtype=torch.float64)
        seeds = torch.full((1, 20, 20), 255)
        seeds[0, 2, 3], seeds[0, 15, 17], seeds[0, 9, 9] = 0, 1, 2
        exact = harmonic(pixel_graph(image, radius=1, sigma_rgb=0.3), seeds, tol=1e-10)
        single = harmonic(pixel_graph(image.float(), radius=1, sigma_rgb=0.3), seeds, tol=1e-5)
        torch.testing.assert_close(single.double(), exact, atol=2e-3, rtol=0)


def test_image_without_seeds_in_a_batch_is_uniform(problem):
    image, seeds = problem
    both = torch.cat([seeds, torch.full_like(seeds, 255)])
    out = harmonic(pixel_graph(torch.stack([image, image]), radius=2), both, tol=1e-8)
    torch.testing.assert_close(out[1], torch.full_like(out[1], 1 / 3))
    torch.testing.assert_close(out[0].sum(0), torch.ones(9, 11, dtype=torch.float64))


def test_single_class_and_relabelling(problem):
    image, seeds = problem
    graph = pixel_graph(image, radius=2)
    ones = harmonic(graph, torch.where(seeds == 255, seeds, 0))
    torch.testing.assert_close(ones, torch.ones(1, 1, 9, 11, dtype=torch.float64))
    out = harmonic(graph, seeds, tol=1e-9)
    permutation = torch.tensor([2, 0, 1])
    relabelled = torch.where(seeds == 255, seeds, permutation[seeds.clamp_max(2)])
    swapped = harmonic(graph, relabelled, tol=1e-9)
    torch.testing.assert_close(swapped[:, permutation], out, atol=1e-6, rtol=0)


def test_weak_link_is_shared_not_given_to_the_last_class():
    image = torch.zeros(3, 12, 24, dtype=torch.float64)
    image[:, :, 12:] = 1.0  # two colour halves, both seeds on the left
    seeds = torch.full((1, 12, 24), 255)
    seeds[0, 2, 2], seeds[0, 9, 2] = 0, 1
    out = harmonic(random_walker_graph(image), seeds, tol=1e-10)
    right = out[0, :, :, 12:].mean((1, 2))
    assert abs(float(right[0] - right[1])) < 0.2


def test_batch_of_images(problem):
    image, seeds = problem
    images = torch.stack([image, image.flip(2)])
    both = torch.cat([seeds, seeds.flip(2)])
    out = harmonic(pixel_graph(images, radius=2), both, tol=1e-10)
    single = harmonic(pixel_graph(image.flip(2), radius=2), seeds.flip(2), tol=1e-10)
    torch.testing.assert_close(out[1:], single, atol=1e-6, rtol=0)


def test_random_walker_graph_matches_scikit_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    image[:, 15:] //= 4
    labels = np.zeros((24, 30), dtype=np.int64)
    labels[2, 2], labels[20, 27], labels[12, 14] = 1, 2, 3
    expected = random_walker(image, labels, beta=130, mode="bf", channel_axis=-1,
                             return_full_prob=True)
    seeds = torch.from_numpy(np.where(labels == 0, 255, labels - 1))[None]
    graph = random_walker_graph(torch.from_numpy(image).permute(2, 0, 1).double() / 255)
    out = harmonic(graph, seeds, tol=1e-10)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("seeds", "kwargs", "error", "match"),
    [
        (torch.full((1, 9, 11), 255), {}, ValueError, "seeds has no seed"),
        (None, {"num_classes": 5}, ValueError, r"classes \[3, 4\] have no seed"),
        (None, {"num_classes": 2}, ValueError, "holds class 2 but num_classes=2"),
        (torch.zeros(1, 9, 10, dtype=torch.int64), {}, ValueError,
         r"seeds must have shape \(1, 9, 11\)"),
        (torch.zeros(1, 9, 11), {}, TypeError, "seeds must be an integer tensor"),
        (torch.full((1, 9, 11), -1), {}, ValueError, "class ids >= 0"),
        (None, {"tol": 0}, ValueError, "tol must be > 0"),
        (None, {"preconditioner": "ilu"}, ValueError, "preconditioner must be one of"),
    ],
)
def test_bad_inputs(problem, seeds, kwargs, error, match):
    image, good = problem
    with pytest.raises(error, match=match):
        harmonic(pixel_graph(image, radius=2), good if seeds is None else seeds, **kwargs)


def test_skipped_class_is_an_error(problem):
    image, seeds = problem
    seeds = seeds.clone()
    seeds[seeds == 1] = 3
    with pytest.raises(ValueError, match=r"classes \[1\] have no seed"):
        harmonic(pixel_graph(image, radius=2), seeds)


def test_a_class_cut_off_by_a_sharp_edge_still_converges(monkeypatch):
    # float32 edge weights across a sharp colour edge underflow to ~e^-60: the foreground's
    # right-hand side is then ~1e-17, which no float32 residual can match relatively; the
    # stopping rule must not wait for it (it once ran to max_iter)
    from graphseg.propagate import _multigrid

    generator = torch.Generator().manual_seed(0)
    image = torch.tensor([40.0, 120.0, 200.0]).view(3, 1, 1).repeat(1, 40, 48)
    image[:, 7:33, 9:39] = torch.tensor([220.0, 80.0, 30.0]).view(3, 1, 1)
    image = ((image + 8 * torch.randn(3, 40, 48, generator=generator)).clamp(0, 255) / 255)
    # GrabCut-like box seeds: the object is foreground, a ring around it unknown; the
    # foreground seeds touch unknown pixels only across the edge
    seeds = torch.zeros(1, 40, 48, dtype=torch.int64)
    seeds[0, 4:36, 6:42] = 255
    seeds[0, 7:33, 9:39] = 1
    calls = []
    original = _multigrid.Multigrid.__call__
    monkeypatch.setattr(_multigrid.Multigrid, "__call__",
                        lambda self, rhs: calls.append(1) or original(self, rhs))
    probs = harmonic(pixel_graph(image[None], radius=2, sigma_xy=2.0, sigma_rgb=0.1), seeds)
    assert len(calls) < 100
    labels = probs.argmax(1)[0]
    assert bool((labels[7:33, 9:39] == 1).all())
    assert bool((labels[4:7] == 0).all()) and bool((labels[33:36] == 0).all())
