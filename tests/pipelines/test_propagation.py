import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scenes import NAMES, make_scene, write_scene_set, write_seed_maps

from graphseg.data import PropagationFolder, read_image
from graphseg.graph import pixel_graph
from graphseg.pipelines import PROPAGATE_METHODS, propagate_dataset, propagate_image
from graphseg.propagate import crf, ial_refine, random_walk
from graphseg.seeds import rasterize_scribbles


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory):
    return write_seed_maps(write_scene_set(tmp_path_factory.mktemp("propagation")))


def _scene(i=0):
    image, truth, labels = make_scene(i)
    seeds = rasterize_scribbles([labels["scribbles"]], *truth.shape, radius=1)[0]
    return image, torch.from_numpy(truth.astype(np.int64)), seeds, labels["cams"]


def _iou(labels, truth):
    fg, gt = labels == 1, truth == 1
    return float((fg & gt).sum() / (fg | gt).sum())


# --- propagate_image -----------------------------------------------------------------------

# each method from the scribbles; the refinements of one-hot seeds (par, crf, one IAL E-step)
# only move labels a few pixels, so they are held to the share of pixels they label right
SEED_QUALITY = {"random-walk": 0.95, "harmonic": 0.9, "label-spreading": 0.85}


@pytest.mark.parametrize("method", [m for m in PROPAGATE_METHODS if m != "unia"])
def test_propagate_image_from_seeds(method):
    image, truth, seeds, _ = _scene()
    # the 40 x 48 scene is walked at full resolution: its stride-4 grid (10 x 12) mixes the
    # rectangle's cells with the background's
    stride = 1 if method == "random-walk" else None
    probs = propagate_image(image, seeds=seeds, method=method, stride=stride)
    assert probs.shape == (1, 2, *truth.shape)
    assert torch.allclose(probs.sum(1), torch.ones(1, *truth.shape), atol=1e-5)
    assert float(probs.min()) >= 0
    labels = probs[0].argmax(0)
    if method in SEED_QUALITY:
        assert _iou(labels, truth) >= SEED_QUALITY[method]
    known = seeds != 255
    assert (labels[known] == seeds[known]).float().mean() >= 0.95


def test_unia_walks_cams_only():
    image, _, seeds, _ = _scene()
    with pytest.raises(ValueError, match="give cams, not seeds"):
        propagate_image(image, seeds=seeds, method="unia", attention=torch.rand(3, 10, 12))


def test_seed_refinements_are_the_propagate_functions():
    image, _, seeds, _ = _scene()
    start = F.one_hot(torch.where(seeds == 255, 0, seeds), 2).permute(2, 0, 1)[None].float()
    start = torch.where((seeds == 255)[None, None], torch.full_like(start, 0.5), start)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    assert torch.allclose(propagate_image(image, seeds=seeds, method="crf"),
                          crf(batch, start, preset="psa"), atol=1e-6)
    expected = ial_refine(pixel_graph(batch, radius=5), start)
    assert torch.allclose(propagate_image(image, seeds=seeds, method="ial"),
                          expected / expected.sum(1, keepdim=True), atol=1e-6)


def test_seed_random_walk_is_the_pooled_walk():
    image, truth, seeds, _ = _scene()
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    grid = (10, 12)  # 40 x 48 at stride 4
    onehot = F.one_hot(torch.where(seeds == 255, 0, seeds), 2).permute(2, 0, 1)[None].float()
    values = F.adaptive_avg_pool2d(onehot * (seeds != 255), grid)
    graph = pixel_graph(F.adaptive_avg_pool2d(batch, grid), radius=5, self_weight=1.0)
    walked = F.interpolate(random_walk(graph, values, beta=1.0, num_steps=256),
                           size=truth.shape, mode="bilinear", align_corners=False)
    expected = walked / walked.sum(1, keepdim=True)
    assert torch.allclose(propagate_image(image, seeds=seeds, method="random-walk"), expected,
                          atol=1e-5)


@pytest.mark.parametrize(("method", "preset"), [("random-walk", None), ("random-walk", "psa"),
                                                ("random-walk", "a2gnn"), ("harmonic", None),
                                                ("label-spreading", None), ("crf", "a2gnn"),
                                                ("par", None), ("ial", None)])
def test_propagate_image_from_cams(method, preset):
    image, truth, _, cams = _scene()
    probs = propagate_image(image, cams=cams, method=method, preset=preset)
    assert probs.shape == (1, 2, *truth.shape)
    assert torch.allclose(probs.sum(1), torch.ones(1, *truth.shape), atol=1e-5)
    labels = probs[0].argmax(0)
    # the CAM is a bump that fades before the rectangle's edges: the object is found, its
    # extent is the method's
    assert labels[truth.shape[0] // 2 - 9, truth.shape[1] // 2 - 1] == 1
    assert (labels[truth == 1] == 1).float().mean() >= 0.3
    assert (labels[truth == 0] == 0).float().mean() >= 0.9


def test_cam_background_follows_the_preset():
    image, _, _, cams = _scene()
    # t = 0 steps at full resolution: the walk returns its start
    psa = propagate_image(image, cams=cams, method="random-walk", preset="psa", num_steps=0,
                          stride=1)
    a2gnn = propagate_image(image, cams=cams, method="random-walk", preset="a2gnn",
                            num_steps=0, stride=1)
    # (1 - cam)^16 < (1 - cam)^6: the psa background is smaller wherever the CAM is positive
    inside = cams[0] > 0.2
    assert bool((psa[0, 0][inside] < a2gnn[0, 0][inside]).all())


def test_irn_walk_stops_at_the_boundary(scene_set):
    image, truth, _, cams = _scene()
    boundary = np.load(scene_set / "boundaries" / f"{NAMES[0]}.npy")
    # at full resolution: the one-pixel edges of the 40 x 48 scene blur away on a stride-4 grid
    probs = propagate_image(image, cams=cams, method="random-walk", preset="irn",
                            boundary=boundary, stride=1)
    labels = probs[0].argmax(0)
    assert _iou(labels, truth) >= 0.7
    with pytest.raises(ValueError, match="boundary"):
        propagate_image(image, cams=cams, method="random-walk", preset="irn")


def test_harmonic_leaves_unseeded_classes_at_zero():
    image, truth, seeds, _ = _scene()
    probs = propagate_image(image, seeds=seeds, method="harmonic", num_classes=4)
    assert probs.shape == (1, 4, *truth.shape)
    assert float(probs[:, 2:].abs().max()) == 0
    assert _iou(probs[0].argmax(0), truth) >= 0.9


def test_propagate_image_errors():
    image, truth, seeds, cams = _scene()
    with pytest.raises(ValueError, match="exactly one of seeds"):
        propagate_image(image, method="harmonic")
    with pytest.raises(ValueError, match="exactly one of seeds"):
        propagate_image(image, seeds=seeds, cams=cams, method="harmonic")
    with pytest.raises(ValueError, match="method"):
        propagate_image(image, seeds=seeds, method="diffusion")
    with pytest.raises(ValueError, match="seeds take no preset"):
        propagate_image(image, seeds=seeds, method="random-walk", preset="psa")
    with pytest.raises(ValueError, match="CRF has the presets"):
        propagate_image(image, cams=cams, method="crf", preset="irn")
    with pytest.raises(ValueError, match="image's size"):
        propagate_image(image, seeds=seeds[:-1], method="harmonic")
    with pytest.raises(ValueError, match="no seed"):
        propagate_image(image, seeds=torch.full_like(seeds, 255), method="harmonic")
    with pytest.raises(ValueError, match="num_classes"):
        propagate_image(image, seeds=seeds, method="harmonic", num_classes=1)
    with pytest.raises(ValueError, match=r"float \(C, h, w\)"):
        propagate_image(image, cams=cams[0], method="harmonic")
    with pytest.raises(ValueError, match="stride"):
        propagate_image(image, cams=cams, method="random-walk", stride=0)
    # used to blame the radius
    with pytest.raises(ValueError, match="stride=1000 leaves a 1x1 grid .* below 48"):
        propagate_image(image, seeds=seeds, method="random-walk", stride=1000)
    with pytest.raises(ValueError, match="stride applies to method 'random-walk'"):
        propagate_image(image, seeds=seeds, method="harmonic", stride=4)
    with pytest.raises(ValueError, match="num_classes - 1 = 3 foreground maps"):
        propagate_image(image, cams=cams, method="crf", num_classes=4)
    with pytest.raises(ValueError, match="aspect ratio of its 40x48"):
        propagate_image(image, cams=cams[:, :5], method="crf")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(ids=st.lists(st.integers(0, 2000).filter(lambda c: c != 255), min_size=2, max_size=4,
                    unique=True),
       method=st.sampled_from(["harmonic", "label-spreading"]))
def test_seed_maps_with_any_class_ids(ids, method):
    # ids of 255 classes and beyond used to crash (a 256-entry remap) or demand every class
    image = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(len(ids)))
    seeds = torch.full((6, 7), 255)
    for i, cls in enumerate(ids):
        seeds[i, i] = cls
    probs = propagate_image(image, seeds=seeds, method=method)
    assert probs.shape == (1, max(ids) + 1, 6, 7)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 6, 7))
    absent = torch.ones(max(ids) + 1, dtype=torch.bool)
    absent[ids] = False
    assert bool((probs[0, absent] == 0).all())
    if method == "harmonic":  # seeds keep their class
        for i, cls in enumerate(ids):
            assert int(probs[0, :, i, i].argmax()) == cls


def test_seed_maps_with_gapped_class_ids():
    image, truth, seeds, _ = _scene()
    gapped = torch.where(seeds == 1, 13, seeds)
    for method in ("harmonic", "label-spreading"):
        probs = propagate_image(image, seeds=gapped, method=method)
        assert probs.shape == (1, 14, *truth.shape)
        assert _iou(probs[0].argmax(0) == 13, truth) >= 0.9


# --- data set ------------------------------------------------------------------------------

def test_propagation_folder_reads_what_is_asked(scene_set):
    folder = PropagationFolder(scene_set / "images", seeds=scene_set / "seeds",
                               boundaries=scene_set / "boundaries")
    assert folder.names == NAMES and len(folder) == 3
    sample = folder[1]
    assert sorted(sample) == ["boundary", "image", "name", "seeds"]
    assert sample["seeds"].shape == sample["boundary"].shape == sample["image"].shape[1:]
    cams = PropagationFolder(scene_set / "images", cams=scene_set / "cams", names=["img2"])
    assert sorted(cams[0]) == ["cams", "image", "name"] and cams.names == ["img2"]
    with pytest.raises(FileNotFoundError, match="seeds folder"):
        PropagationFolder(scene_set / "images", seeds=scene_set / "nowhere")
    with pytest.raises(ValueError, match="unknown"):
        PropagationFolder(scene_set / "images", names=["img9"])


def test_propagate_dataset_writes_probabilities_and_labels(scene_set, tmp_path):
    folder = PropagationFolder(scene_set / "images", seeds=scene_set / "seeds")
    out, figures = tmp_path / "out", tmp_path / "figures"
    assert propagate_dataset(folder, out, method="harmonic", progress=False,
                             figures=figures) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{s}" for n in NAMES for s in (".npy", ".png"))
    for i, name in enumerate(NAMES):
        probs = np.load(out / f"{name}.npy")
        with Image.open(out / f"{name}.png") as png:
            labels = np.asarray(png)
        expected = propagate_image(read_image(scene_set / "images" / f"{name}.png"),
                                   seeds=folder[i]["seeds"], method="harmonic")[0]
        assert probs.dtype == np.float32 and np.allclose(probs, expected.numpy(), atol=1e-6)
        assert (labels == probs.argmax(0)).all()
        with Image.open(figures / f"{name}.png") as figure:
            assert figure.width > 2 * figure.height  # three panels side by side
    torch_out = tmp_path / "torch"
    assert propagate_dataset(folder, torch_out, method="label-spreading", progress=False,
                             probabilities="pt") == []
    tensor = torch.load(torch_out / f"{NAMES[0]}.pt", weights_only=True)
    assert tensor.shape == (2, *folder[0]["seeds"].shape)
    labels_only = tmp_path / "labels"
    assert propagate_dataset(folder, labels_only, method="harmonic", probabilities=None,
                             progress=False) == []
    assert sorted(p.suffix for p in labels_only.iterdir()) == [".png"] * 3


def test_propagate_dataset_reports_failures_and_resumes(scene_set, tmp_path):
    import shutil

    root = tmp_path / "set"
    shutil.copytree(scene_set, root)
    (root / "seeds" / "img1.png").unlink()
    (root / "images" / "img2.png").write_bytes(b"not a PNG")
    folder = PropagationFolder(root / "images", seeds=root / "seeds")
    out = tmp_path / "out"
    failures = propagate_dataset(folder, out, method="harmonic", progress=False)
    assert [f.name for f in failures] == ["img1", "img2"]
    assert "img1.png" in failures[0].reason
    assert sorted(p.name for p in out.iterdir()) == ["img0.npy", "img0.png"]
    stamp = (out / "img0.png").stat().st_mtime_ns
    failures = propagate_dataset(folder, out, method="harmonic", progress=False, resume=True)
    assert [f.name for f in failures] == ["img1", "img2"]
    assert (out / "img0.png").stat().st_mtime_ns == stamp


def test_propagate_dataset_leaves_no_partial_file(scene_set, tmp_path, monkeypatch):
    import graphseg.pipelines.dataset as dataset

    def broken(path, labels):
        with dataset.atomic_path(path) as temporary:
            temporary.write_bytes(b"half a PNG")
            raise OSError("disk full")

    monkeypatch.setattr(dataset, "write_label_png", broken)
    folder = PropagationFolder(scene_set / "images", seeds=scene_set / "seeds")
    out = tmp_path / "out"
    failures = propagate_dataset(folder, out, method="harmonic", progress=False,
                                 probabilities=None)
    assert len(failures) == 3 and "disk full" in failures[0].reason
    assert list(out.iterdir()) == []


def test_propagate_dataset_shards_split_the_images(scene_set, tmp_path):
    folder = PropagationFolder(scene_set / "images", cams=scene_set / "cams")
    for index in (0, 1):
        assert propagate_dataset(folder, tmp_path / "out", method="random-walk",
                                 preset="a2gnn", progress=False, shard=(index, 2)) == []
        written = sorted(p.stem for p in (tmp_path / "out").glob("*.png"))
        assert written == (["img0", "img2"] if index == 0 else NAMES)
    with pytest.raises(ValueError, match="probabilities"):
        propagate_dataset(folder, tmp_path / "x", method="harmonic", probabilities="h5")
