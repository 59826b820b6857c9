"""A²GNN and the affinity CNN as the thesis ("paper") or the released code ("official"): the
L_reg kernel written out pair by pair, and what each variant selects in the trainers and the
pipeline configs (docs/paper_presets.md)."""

import math
from dataclasses import replace

import pytest
import torch
from scenes import write_scene_set
from torch_geometric.data import Data

from graphseg import WindowGraph
from graphseg.data import SegmentationFolder
from graphseg.losses import mp_loss, potts_loss
from graphseg.nn import A2GNN, AffinityCNN, ResNetBackbone, fit_a2gnn, train_affinity
from graphseg.nn import train as train_module
from graphseg.nn.train import (
    A2GNN_SETTINGS,
    a2gnn_kernel_graph,
    a2gnn_settings,
    resample_seeds,
)
from graphseg.pipelines import PRESETS
from graphseg.pipelines import affinity as affinity_pipeline
from graphseg.pipelines._common import resize_image
from graphseg.pipelines.recipes import A2GNNConfig, LearnedGraph
from graphseg.pipelines.recipes import a2gnn as recipe
from graphseg.propagate import CRF_PRESETS
from graphseg.seeds import border_band

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalised(image, y, x):
    return [(float(image[0, c, y, x]) - MEAN[c]) / STD[c] for c in range(3)]


def literal_l_reg(image, probs, inside, mean):
    """Eq. 3.22 (Potts form) with G(i, j) = exp(-|p_i - p_j|² / 2·6² - |c_i - c_j|² / 2·0.1²)
    on ImageNet-normalised colour, summed over every pixel i and every other pixel j with
    ``inside(dy, dx)``; divided by the number of pixels when ``mean``."""
    _, classes, height, width = probs.shape
    total = 0.0
    for yi in range(height):
        for xi in range(width):
            ci = normalised(image, yi, xi)
            for yj in range(height):
                for xj in range(width):
                    dy, dx = yj - yi, xj - xi
                    if (dy, dx) == (0, 0) or not inside(dy, dx):
                        continue
                    cj = normalised(image, yj, xj)
                    colour = sum((a - b) ** 2 for a, b in zip(ci, cj, strict=True))
                    g = math.exp(-(dy * dy + dx * dx) / 72 - colour / 0.02)
                    total += g * sum(float(probs[0, c, yi, xi]) * (1 - float(probs[0, c, yj, xj]))
                                     for c in range(classes))
    return total / (height * width) if mean else total


def tiny_problem(height=4, width=5, seed=0, dtype=torch.float64):
    """A near-uniform image, random probabilities and a 3x3-window graph with features."""
    generator = torch.Generator().manual_seed(seed)
    # colours close enough (0.02 apart) for the σ_rgb = 0.1 kernel to be far from 0
    image = 0.5 + 0.02 * torch.randn(1, 3, height, width, generator=generator, dtype=torch.float64)
    probs = torch.randn(1, 3, height, width, generator=generator,
                        dtype=torch.float64).softmax(1)
    graph = WindowGraph(torch.ones(1, 8, height, width, dtype=dtype),
                        torch.tensor([[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                                      if (dy, dx) != (0, 0)]),
                        x=torch.rand(1, 4, height, width, generator=generator, dtype=dtype))
    return image, probs, graph


@pytest.mark.parametrize(("variant", "inside", "mean"), [
    ("paper", lambda dy, dx: dy * dy + dx * dx <= 25, False),  # disk r = 5, plain sum
    ("official", lambda dy, dx: abs(dy) <= 5 and abs(dx) <= 5, True),  # 11x11 square, 1/N
])
def test_l_reg_is_the_colour_position_kernel_pair_by_pair(variant, inside, mean):
    image, probs, graph = tiny_problem(4, 7)
    kernel = a2gnn_kernel_graph(graph, image, variant=variant)
    loss = train_module._reg_loss(probs, kernel, A2GNN_SETTINGS[variant]["reg_reduction"])
    expected = literal_l_reg(image, probs, inside, mean)
    assert expected > 1  # the kernel is far from 0 on this image
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_l_reg_kernel_at_the_graph_resolution():
    # a 2x larger image is resized (bilinear) to the graph before the kernel is taken
    image, probs, graph = tiny_problem(3, 4, seed=1)
    large = torch.nn.functional.interpolate(image, scale_factor=2, mode="nearest")
    small = torch.nn.functional.interpolate(large, size=(3, 4), mode="bilinear",
                                            align_corners=False)
    kernel = a2gnn_kernel_graph(graph, large, variant="paper")
    assert kernel.image_size == (3, 4)
    loss = potts_loss(probs, kernel) * 12
    expected = literal_l_reg(small, probs, lambda dy, dx: dy * dy + dx * dx <= 25, False)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_l_reg_on_region_nodes_uses_mean_colour_and_centroid():
    # four 2x2 regions of a 4x4 grid; edges 0-1, 0-2, 1-3 in both directions
    generator = torch.Generator().manual_seed(3)
    image = 0.5 + 0.03 * torch.randn(1, 3, 4, 4, generator=generator, dtype=torch.float64)
    pixels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]).unsqueeze(0)
    edges = torch.tensor([[0, 1, 0, 2, 1, 3], [1, 0, 2, 0, 3, 1]])
    data = Data(x=torch.rand(4, 2, dtype=torch.float64), edge_index=edges, num_nodes=4)
    kernel = a2gnn_kernel_graph(data, image, pixels=pixels)
    colour, centroid = {}, {}
    for node in range(4):
        cells = [(y, x) for y in range(4) for x in range(4) if int(pixels[0, y, x]) == node]
        colour[node] = [sum(normalised(image, y, x)[c] for y, x in cells) / len(cells)
                        for c in range(3)]
        centroid[node] = (sum(y for y, _ in cells) / len(cells),
                          sum(x for _, x in cells) / len(cells))
    for (source, target), weight in zip(kernel.edge_index.t().tolist(),
                                        kernel.edge_weight.tolist(), strict=True):
        position = sum((a - b) ** 2 for a, b in zip(centroid[source], centroid[target],
                                                    strict=True))
        shade = sum((a - b) ** 2 for a, b in zip(colour[source], colour[target], strict=True))
        assert weight == pytest.approx(math.exp(-position / 72 - shade / 0.02), rel=1e-9)
    assert kernel.edge_index.shape[1] == 6


def test_fit_a2gnn_default_kernel_and_refusals():
    image, _, graph = tiny_problem(4, 4, seed=2, dtype=torch.float32)
    seeds = torch.full((1, 4, 4), 255)
    seeds[0, 0, 0], seeds[0, 3, 3] = 0, 1
    for variant in ("paper", "official"):
        from_image = fit_a2gnn(graph, seeds, image=image, epochs=4, hidden=8, variant=variant)
        explicit = fit_a2gnn(graph, seeds, epochs=4, hidden=8, variant=variant,
                             reg_graph=a2gnn_kernel_graph(graph, image, variant=variant))
        torch.testing.assert_close(from_image, explicit, rtol=0, atol=0)
    with pytest.raises(ValueError, match="lambda_reg > 0 needs L_reg's kernel: give image="):
        fit_a2gnn(graph, seeds, epochs=2, hidden=8)
    fit_a2gnn(graph, seeds, epochs=2, hidden=8, lambda_reg=0)  # no L_reg, no kernel needed
    with pytest.raises(ValueError, match="image= builds L_reg's kernel on a pixel graph"):
        fit_a2gnn(graph.to_pyg(), seeds.reshape(-1), epochs=2, hidden=8, image=image)


class Recorder:
    """Records the calls of a function it wraps."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.function(*args, **kwargs)


@pytest.mark.parametrize(("variant", "boxed", "epochs", "lr", "lam", "prunes"), [
    ("paper", False, 100, 0.03, 0.01, 0),
    ("paper", True, 100, 0.03, 0.01, 50),  # consistency checking in stage 2
    ("official", False, 100, 0.03, 0.3, 0),
    ("official", True, 300, 0.035, 0.01, 300),  # pruning from the first epoch
])
def test_fit_a2gnn_takes_every_choice_from_the_variant(monkeypatch, variant, boxed, epochs, lr,
                                                       lam, prunes):
    image, _, graph = tiny_problem(4, 4, seed=4, dtype=torch.float32)
    seeds = torch.full((1, 4, 4), 255)
    seeds[0, 0, 0], seeds[0, 3, 3], seeds[0, 2, 3] = 0, 1, 1
    boxes = [[{"cls": 1, "box": [2, 2, 3, 3]}]] if boxed else None
    # the model records the width asked for and is built 4 wide, to keep the test fast
    built = Recorder(lambda *args, **kwargs: A2GNN(*args, **{**kwargs, "hidden": 4}))
    optimisers = Recorder(torch.optim.Adam)
    checks = Recorder(train_module.consistency_check)
    regs = Recorder(train_module._reg_loss)
    monkeypatch.setattr(train_module, "A2GNN", built)
    monkeypatch.setattr(train_module.torch.optim, "Adam", optimisers)
    monkeypatch.setattr(train_module, "consistency_check", checks)
    monkeypatch.setattr(train_module, "_reg_loss", regs)
    history = []
    fit_a2gnn(graph, seeds, boxes=boxes, image=image, variant=variant, history=history)
    assert len(history) == epochs
    (_, model_kwargs), = built.calls
    assert model_kwargs["hidden"] == 256 and model_kwargs["variant"] == variant
    (_, adam_kwargs), = optimisers.calls
    assert adam_kwargs["lr"] == lr and adam_kwargs["weight_decay"] == 5e-4
    assert a2gnn_settings(variant, boxes=boxed)["lambda_reg"] == lam
    assert len(checks.calls) == prunes
    assert all(kwargs["variant"] == variant for _, kwargs in checks.calls)
    assert len(regs.calls) == epochs - epochs // 2  # L_reg in stage 2 only
    reduction = regs.calls[0][0][2]
    assert reduction == ("sum" if variant == "paper" else "mean")
    # an argument given overrides the variant's value
    history.clear()
    fit_a2gnn(graph, seeds, boxes=boxes, image=image, variant=variant, history=history,
              epochs=6, hidden=8, lr=0.01)
    assert len(history) == 6 and built.calls[-1][1]["hidden"] == 8
    assert optimisers.calls[-1][1]["lr"] == 0.01


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fit_a2gnn_loss_resolution(monkeypatch, variant):
    # seeds and a box at twice the graph's resolution: official upsamples the logits to them,
    # the paper resamples seeds and box to the graph's nodes
    image, _, graph = tiny_problem(4, 4, seed=5, dtype=torch.float32)
    seeds = torch.full((1, 8, 8), 255)
    seeds[0, :2, :2], seeds[0, 6:, 6:] = 0, 1
    boxes = [[{"cls": 1, "box": [4, 4, 7, 7]}]]
    ce, mp = Recorder(train_module.seed_cross_entropy), Recorder(train_module.mp_loss)
    monkeypatch.setattr(train_module, "seed_cross_entropy", ce)
    monkeypatch.setattr(train_module, "mp_loss", mp)
    probs = fit_a2gnn(graph, seeds, boxes=boxes, image=image, variant=variant, epochs=2,
                      hidden=8)
    assert probs.shape == (1, 2, 4, 4)
    logits, current = ce.calls[0][0]
    size = (8, 8) if variant == "official" else (4, 4)
    assert tuple(logits.shape[2:]) == size and tuple(current.shape[1:]) == size
    assert ce.calls[0][1]["variant"] == variant and mp.calls[0][1]["variant"] == variant
    box = mp.calls[0][0][2][0][0]["box"]
    assert box == ([4, 4, 7, 7] if variant == "official" else [2, 2, 3, 3])
    if variant == "paper":
        assert int(current[0, 0, 0]) == 0 and int(current[0, 3, 3]) == 1


def test_official_mp_loss_keeps_duplicates_and_the_diagonal():
    logits = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    logits[0, 1, 0, 0] = 2.0
    logits[0, 1, 1, 1] = 1.0
    features = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 1, 1] = torch.tensor([1.0, 1.0])
    boxes = [{"cls": 1, "box": [0, 0, 1, 1]}]
    # row maxima (0,0), (1,1), then column maxima (0,0), (1,1), duplicates kept
    listed = [(0, 0), (1, 1), (0, 0), (1, 1)]
    ce = sum(-float(logits[0, :, y, x].log_softmax(0)[1]) for y, x in listed) / len(listed)
    unit = {(0, 0): (1.0, 0.0), (1, 1): (1 / math.sqrt(2), 1 / math.sqrt(2))}
    pairs = [1 - sum(a * b for a, b in zip(unit[p], unit[q], strict=True)) + 1e-5
             for p in listed for q in listed]
    expected = ce + sum(pairs) / len(pairs)
    assert float(mp_loss(logits, features, boxes, variant="official")) == pytest.approx(
        expected, rel=1e-12)
    paper = float(mp_loss(logits, features, boxes, variant="paper"))
    assert paper != pytest.approx(expected, rel=1e-3)


def small_affinity_cnn():
    return AffinityCNN(ResNetBackbone(widths=(8, 8, 8), stem_width=8, stride=2),
                       reductions=(8, 8, 8))


@pytest.mark.parametrize(("variant", "radius", "shape"), [("paper", 5, "disk"),
                                                           ("official", 4, "square")])
def test_train_affinity_window_and_loss_follow_the_variant(monkeypatch, variant, radius, shape):
    pairs = Recorder(train_module.pair_labels)
    losses = Recorder(train_module.affinity_loss)
    monkeypatch.setattr(train_module, "pair_labels", pairs)
    monkeypatch.setattr(train_module, "affinity_loss", losses)
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    seeds = (torch.arange(24).view(1, 1, 24) >= 12).long().expand(1, 24, 24).clone()
    torch.manual_seed(0)
    train_affinity(small_affinity_cnn(), [(image, seeds)], epochs=1, lr=1e-3, variant=variant,
                   progress=False)
    assert pairs.calls[0][1] == {"radius": radius, "shape": shape}
    assert losses.calls[0][1]["variant"] == variant


def test_configs_of_each_variant():
    for weak in ("boxes", "points", "scribbles", "tags"):
        paper = A2GNNConfig.paper(weak)
        assert (paper.variant, paper.epochs, paper.lr, paper.lambda_reg, paper.hidden,
                paper.loss_size) == ("paper", 100, 0.03, 0.01, 256, "graph")
        assert paper.learned == LearnedGraph(radius=5, shape="disk", threshold=1e-3,
                                             variant="paper")
        assert paper.learned.training_radius == 5 and paper.walk.learned == paper.learned
        assert paper.crf == "psa"
        official = A2GNNConfig.official(weak)
        boxed = weak == "boxes"
        assert (official.variant, official.epochs, official.lr, official.lambda_reg,
                official.hidden, official.loss_size) == (
            "official", 300 if boxed else 100, 0.035 if boxed else 0.03,
            0.01 if boxed else 0.3, 256, "image")
        assert official.learned.shape == "square" and official.learned.threshold is None
        assert official.learned.radius == (4 if weak in ("boxes", "scribbles") else 3)
        assert official.learned.training_radius == 4
        assert official.learned.variant == "official" and official.crf == "a2gnn"
    psa, code = CRF_PRESETS[A2GNNConfig.paper("tags").crf], CRF_PRESETS["a2gnn"]
    assert (psa["smooth_sxy"], psa["smooth_compat"], psa["app_sxy"], psa["app_srgb"],
            psa["app_compat"]) == (3, 3, 80, 13, 10)
    assert (code["smooth_sxy"], code["smooth_compat"], code["app_sxy"], code["app_srgb"],
            code["app_compat"]) == (2, 3, 50, 5, 10)
    assert A2GNNConfig.official("points", epochs=7).epochs == 7
    # the shipped default is unchanged: official layers, thesis schedule, width 64
    default = A2GNNConfig()
    assert (default.variant, default.epochs, default.lr, default.lambda_reg, default.hidden,
            default.loss_size) == ("official", 100, 0.03, 0.01, 64, "graph")
    with pytest.raises(ValueError, match="variant must be one of"):
        A2GNNConfig(variant="code")
    with pytest.raises(ValueError, match="loss_size must be one of"):
        A2GNNConfig(loss_size="pixels")
    with pytest.raises(ValueError, match="weak must be one of"):
        LearnedGraph.paper("masks")


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_recipe_passes_the_config_to_fit_a2gnn(monkeypatch, variant):
    calls = []

    def fake_fit(graph, seeds, **kwargs):
        calls.append((graph, seeds, kwargs))
        return torch.full((1, kwargs["num_classes"], *graph.image_size), 0.5)

    monkeypatch.setattr(recipe, "fit_a2gnn", fake_fit)
    image = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(1))
    local = torch.full((1, 40, 60), 255)
    local[0, :5, :5], local[0, 30:, 40:] = 0, 1
    boxes = [{"cls": 1, "box": [40, 30, 59, 39]}]
    config = (A2GNNConfig.paper if variant == "paper" else A2GNNConfig.official)(
        "boxes", learned=LearnedGraph(size=30, radius=2))
    torch.manual_seed(0)
    model = small_affinity_cnn().eval()
    recipe.a2gnn_probabilities(image, local, 2, config, boxes=boxes, model=model)
    graph, seeds, kwargs = calls[0]
    assert graph.image_size == (10, 15)  # working image 20 x 30, stride 2
    assert tuple(seeds.shape[1:]) == ((10, 15) if variant == "paper" else (20, 30))
    assert kwargs["variant"] == variant and kwargs["hidden"] == 256
    assert kwargs["epochs"] == (100 if variant == "paper" else 300)
    assert kwargs["image"] is image


@pytest.mark.parametrize(("variant", "radius", "shape"), [("paper", 5, "disk"),
                                                           ("official", 4, "square")])
def test_train_affinity_dataset_takes_the_learned_graph_of_the_preset(monkeypatch, tmp_path,
                                                                      variant, radius, shape):
    calls = []

    def fake_train(model, batches, **kwargs):
        calls.append(kwargs)
        return [0.0]

    monkeypatch.setattr(affinity_pipeline, "train_affinity", fake_train)
    write_scene_set(tmp_path / "set", count=1)
    # points: the official inference window is 3, its training window 4
    config = (A2GNNConfig.paper if variant == "paper" else A2GNNConfig.official)("points")
    affinity_pipeline.train_affinity_dataset(
        SegmentationFolder(tmp_path / "set", weak="points", with_mask=False), weak="points",
        out=tmp_path / "a.pt", epochs=1, preset=PRESETS["points"].replace(config),
        progress=False)
    (kwargs,) = calls
    assert (kwargs["radius"], kwargs["shape"], kwargs["variant"]) == (radius, shape, variant)


def test_learned_graph_at_image_resolution_is_the_resized_features_written_out():
    torch.manual_seed(0)
    model = small_affinity_cnn().eval()
    image = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(2))
    learned = LearnedGraph(size=30, radius=2, shape="disk", threshold=None,
                           resolution="image", beta=4.0)
    graph = learned.build(image, model)
    assert graph.image_size == (40, 60)
    with torch.no_grad():
        out = model(resize_image(image, 30))
    features = torch.nn.functional.interpolate(out.affinity, size=(40, 60), mode="bilinear",
                                               align_corners=False)
    nodes = torch.nn.functional.interpolate(out.nodes, size=(40, 60), mode="bilinear",
                                            align_corners=False)
    torch.testing.assert_close(graph.x, nodes)
    d = features.shape[1]
    # D_ij = exp(-||F_i - F_j||_1 / d) (Eq. 3.14) raised to beta, on a few pixel pairs
    for k, (dy, dx) in enumerate(graph.offsets.tolist()):
        for y, x in [(0, 0), (7, 11), (20, 30), (39, 59)]:
            if not (0 <= y + dy < 40 and 0 <= x + dx < 60):
                continue
            distance = (features[0, :, y, x] - features[0, :, y + dy, x + dx]).abs().sum() / d
            assert math.isclose(float(graph.weight[0, k, y, x]),
                                math.exp(-float(distance)) ** 4, rel_tol=1e-4, abs_tol=1e-7)


def test_learned_graph_beta_raises_the_node_graph_to_a_power():
    torch.manual_seed(0)
    model = small_affinity_cnn().eval()
    image = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(3))
    plain = LearnedGraph(size=30, radius=2).build(image, model)
    with torch.no_grad():
        expected = model.to_graph(resize_image(image, 30), radius=2, shape="square",
                                  threshold=1e-3)
    torch.testing.assert_close(plain.weight, expected.weight)  # beta 1: the thesis's graph
    sharp = LearnedGraph(size=30, radius=2, beta=8.0).build(image, model)
    torch.testing.assert_close(sharp.weight, expected.weight ** 8)
    with pytest.raises(ValueError, match="resolution"):
        LearnedGraph(resolution="pixels")
    with pytest.raises(ValueError, match="beta"):
        LearnedGraph(beta=0.0)


def test_train_affinity_dataset_learns_from_targets_away_from_their_borders(monkeypatch,
                                                                            tmp_path):
    seen = []

    def fake_train(model, batches, **kwargs):
        seen.append(list(batches))
        return [0.0]

    monkeypatch.setattr(affinity_pipeline, "train_affinity", fake_train)
    write_scene_set(tmp_path / "set", count=3)
    dataset = SegmentationFolder(tmp_path / "set", weak="boxes")
    names = dataset.names
    targets = {name: dataset[i]["mask"].long() for i, name in enumerate(names)}
    run = affinity_pipeline.train_affinity_dataset(
        dataset, weak="boxes", out=tmp_path / "a.pt", epochs=1, size=24, progress=False,
        targets=targets, band=1)
    assert not run.failures
    for (image, seeds), name in zip(seen[0], names, strict=True):
        labels = resample_seeds(targets[name][None], tuple(image.shape[2:]))
        assert torch.equal(seeds, border_band(labels, 1))
        assert (seeds == 255).any() and (seeds == 1).any() and (seeds == 0).any()
    # an image without a label map, or with one of another size, is reported and left out
    partial = {names[0]: targets[names[0]], names[1]: targets[names[1]][:-1]}
    run = affinity_pipeline.train_affinity_dataset(
        dataset, weak="boxes", out=tmp_path / "b.pt", epochs=1, size=24, progress=False,
        targets=partial)
    assert [f.name for f in run.failures] == names[1:]
    assert "must be" in run.failures[0].reason and "no label map" in run.failures[1].reason
    assert len(seen[1]) == 1
    with pytest.raises(ValueError, match="targets must map"):
        affinity_pipeline.train_affinity_dataset(
            dataset, weak="boxes", out=tmp_path / "c.pt", epochs=1, targets=[1, 2])
    with pytest.raises(ValueError, match="band"):
        affinity_pipeline.train_affinity_dataset(
            dataset, weak="boxes", out=tmp_path / "c.pt", epochs=1, targets=targets, band=-1)


def test_learned_graph_times_the_rgb_kernel_at_image_resolution():
    torch.manual_seed(0)
    model = small_affinity_cnn().eval()
    image = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(4))
    learned = LearnedGraph(size=30, radius=2, shape="disk", resolution="image", beta=2.0)
    alone = learned.build(image, model)
    both = replace(learned, rgb=True).build(image, model)
    # w_ij = D_ij^beta * exp(-|p_i - p_j|^2 / (2 * 2^2) - |c_i - c_j|^2 / (2 * 0.1^2))
    for k, (dy, dx) in enumerate(both.offsets.tolist()):
        y, x = 20, 30
        colour = float(((image[0, :, y, x] - image[0, :, y + dy, x + dx]) ** 2).sum())
        kernel = math.exp(-(dy * dy + dx * dx) / 8.0 - colour / (2 * 0.01))
        assert math.isclose(float(both.weight[0, k, y, x]),
                            float(alone.weight[0, k, y, x]) * kernel, rel_tol=1e-4,
                            abs_tol=1e-12)
    with pytest.raises(ValueError, match="resolution='image'"):
        LearnedGraph(rgb=True)
    # a channel-last uint8 array is the same image
    pixels = (image[0] * 255).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    torch.testing.assert_close(learned.build(array, model).weight,
                               learned.build(pixels.float() / 255, model).weight)
