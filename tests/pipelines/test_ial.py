"""IAL's EM loop on a small synthetic problem, its energy, reports and checkpoints."""

from itertools import pairwise

import numpy as np
import pytest
import torch
from PIL import Image
from scenes import write_scene_set

from graphseg import pixel_graph
from graphseg.cli import main
from graphseg.graph.superpixel import superpixels
from graphseg.nn import AffinityCNN, ResNetBackbone, UnaryNet
from graphseg.nn.train import resample_seeds
from graphseg.pipelines import PRESETS, FinishConfig, IALConfig, ial_em, reference_energy
from graphseg.pipelines._common import working
from graphseg.pipelines.recipes.ial import _mine, _refine
from graphseg.propagate import ial_refine
from graphseg.seeds import mine_confident_regions

SMALL = IALConfig(rounds=3, size=64, unary_steps=60, pairwise_steps=40, n_segments=40)


def problem(seed=0, height=48, width=64):
    """A rectangle of one colour on another with pixel noise; seeds on 10% of the pixels, 10% of
    them wrong."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.zeros(height, width, dtype=torch.long)
    truth[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    colours = torch.tensor([[0.2, 0.5, 0.8], [0.9, 0.3, 0.1]])
    image = colours[truth].permute(2, 0, 1) + 0.08 * torch.randn(3, height, width,
                                                                 generator=generator)
    seeds = torch.full((height, width), 255)
    picked = torch.rand(height, width, generator=generator) < 0.1
    noisy = torch.where(torch.rand(height, width, generator=generator) < 0.1, 1 - truth, truth)
    seeds[picked] = noisy[picked]
    return image.clamp(0, 1), seeds, truth


def test_reference_energy_matches_the_dense_quadratic_form():
    image = torch.rand(1, 3, 5, 6, dtype=torch.float64)
    graph = pixel_graph(image, radius=2)
    probs = torch.rand(1, 3, 5, 6, dtype=torch.float64).softmax(1)
    dense = graph.to_dense()
    weight = (dense + dense.t()) / 2
    weight = weight - torch.diag(torch.diag(weight))
    laplacian = torch.diag(weight.sum(1)) - weight
    flat = probs[0].reshape(3, -1)
    expected = float(sum(flat[c] @ laplacian @ flat[c] for c in range(3))) / 30
    assert reference_energy(probs, graph) == pytest.approx(expected, rel=1e-10)
    assert reference_energy(torch.ones(1, 1, 5, 6, dtype=torch.float64), graph) == pytest.approx(
        0.0, abs=1e-12)


def test_em_rounds_lower_the_energy_and_improve_the_pseudo_labels():
    # convergence is not guaranteed while the graph is learned (DESIGN §6): this instance is
    # one where the rounds help, as they did on the real images
    image, seeds, truth = problem()
    result = ial_em(image, seeds, config=SMALL, truth=truth)
    assert result.labels.shape == truth.shape and result.probs.shape == (2, 48, 64)
    torch.testing.assert_close(result.probs.sum(0), torch.ones(48, 64))
    assert [r.round for r in result.reports] == [0, 1, 2, 3]
    assert len(result.round_labels) == 4
    assert torch.equal(result.round_labels[-1], result.labels)
    energies = [r.energy for r in result.reports]
    assert all(later < earlier for earlier, later in pairwise(energies))
    accuracy = [float((labels == truth).float().mean()) for labels in result.round_labels]
    assert accuracy[-1] >= accuracy[0] + 0.02 and accuracy[-1] >= 0.95
    assert all(0 < r.confident_share <= 1 for r in result.reports)


def test_checkpoint_resumes_where_the_run_stopped(tmp_path):
    image, seeds, truth = problem(2)
    path = tmp_path / "ial.pt"
    one = ial_em(image, seeds, config=IALConfig(**{**SMALL.__dict__, "rounds": 2}),
                 truth=truth, checkpoint=path)
    assert path.exists()
    state = torch.load(path, weights_only=True)
    assert int(state["round"]) == 1 and state["reports"].shape == (2, 4)
    resumed = ial_em(image, seeds, config=SMALL, truth=truth, checkpoint=path)
    # rounds 0 and 1 come from the checkpoint; rounds 2 and 3 ran now
    assert [r.round for r in resumed.reports] == [0, 1, 2, 3]
    assert resumed.reports[0].energy == pytest.approx(one.reports[0].energy)
    assert len(resumed.round_labels) == 2


def test_bad_inputs():
    image, seeds, _ = problem()
    with pytest.raises(ValueError, match="seeds has no seed"):
        ial_em(image, torch.full_like(seeds, 255), config=SMALL)
    with pytest.raises(ValueError, match="single image"):
        ial_em(torch.stack([image, image]), seeds, config=SMALL)
    with pytest.raises(ValueError, match="rounds must be > 0"):
        ial_em(image, seeds, config=IALConfig(rounds=0))
    with pytest.raises(ValueError, match="energy_weight must be >= 0"):
        ial_em(image, seeds, config=IALConfig(energy_weight=-1.0))


def test_e_step_variants_of_the_config():
    # "paper": the pairwise network's G = I − D + W (rows above 1 normalised) applied once;
    # "scaled": I − L / d_max applied ten times; refine_steps overrides the count
    torch.manual_seed(0)
    pairwise = AffinityCNN(ResNetBackbone(widths=(8, 8, 8), stem_width=8, stride=2),
                           reductions=(8, 8, 8))
    image = torch.rand(1, 3, 16, 20)
    unary = torch.randn(1, 2, 8, 10).softmax(1)
    graph = pairwise.to_graph(image, radius=3, threshold=None)
    paper, _ = _refine(pairwise, image, unary, IALConfig())
    torch.testing.assert_close(paper, ial_refine(graph, unary))
    scaled, _ = _refine(pairwise, image, unary, IALConfig(variant="scaled"))
    torch.testing.assert_close(scaled, ial_refine(graph, unary, variant="scaled", num_steps=10))
    twice, _ = _refine(pairwise, image, unary, IALConfig(refine_steps=2))
    torch.testing.assert_close(twice, ial_refine(graph, unary, num_steps=2))
    assert not torch.allclose(paper, scaled)
    for out in (paper, scaled, twice):
        assert out.min() >= 0
        torch.testing.assert_close(out.sum(1), torch.ones(1, 8, 10))
    image, seeds, _ = problem()
    with pytest.raises(ValueError, match="variant must be one of"):
        ial_em(image, seeds, config=IALConfig(variant="official"))
    with pytest.raises(ValueError, match="refine_steps must be > 0"):
        ial_em(image, seeds, config=IALConfig(refine_steps=0))


def test_mining_keeps_only_regions_the_region_classifier_agrees_with():
    image, seeds, _ = problem()
    config = IALConfig(size=32, n_segments=40)
    small = working(image[None], config.size)
    unary = UnaryNet(2, stride=2)
    grid = (small.shape[2] // 2, small.shape[3] // 2)
    regions = resample_seeds(superpixels(small, n_segments=config.n_segments), grid)
    # α_u: the truth-like rectangle, so that several regions are mined
    alpha_u = torch.zeros(1, 2, *grid)
    alpha_u[:, 1, grid[0] // 4: 3 * grid[0] // 4, grid[1] // 4: 3 * grid[1] // 4] = 1
    alpha_u[:, 0] = 1 - alpha_u[:, 1]
    candidates = mine_confident_regions(alpha_u, regions, ratio=config.ratio)
    mined = _mine(unary, small, alpha_u, regions, config)
    kept = mined != 255
    assert kept.any() and torch.equal(mined[kept], candidates[kept])


# reached 0.988 on scene 0 (training seed 0, the extension backend, a loaded 2-core machine)
TAGS_IOU = 0.75
TAGS_SMALL = IALConfig(rounds=2, size=48, unary_steps=80, pairwise_steps=20, n_segments=40)


def test_cli_segment_tags_with_ial(tmp_path, monkeypatch, capsys):
    # graphseg segment --weak tags --method ial --cams DIR: the unary network starts from the
    # CAMs' confident seeds M'_I
    root = write_scene_set(tmp_path / "set", count=1)
    monkeypatch.setitem(PRESETS, "tags", PRESETS["tags"].replace(TAGS_SMALL, FinishConfig()))
    out = tmp_path / "pred"
    assert main(["segment", "--images", str(root / "images"), "--annotations",
                 str(root / "annotations.json"), "--weak", "tags", "--method", "ial",
                 "--cams", str(root / "cams"), "--out", str(out), "--quiet"]) == 0
    assert "segmented 1 of 1" in capsys.readouterr().out
    with Image.open(out / "img0.png") as pred, Image.open(root / "masks" / "img0.png") as mask:
        pred, mask = np.asarray(pred), np.asarray(mask)
    iou = ((pred == 1) & (mask == 1)).sum() / ((pred == 1) | (mask == 1)).sum()
    assert iou >= TAGS_IOU, iou
