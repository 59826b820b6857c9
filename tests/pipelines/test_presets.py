"""preset="paper" / "official": one switch selects every choice of one source."""

import pytest
import torch
from scenes import make_scene

from graphseg.pipelines import (
    PRESET_SOURCES,
    PRESETS,
    A2GNNConfig,
    IALConfig,
    RandomWalkConfig,
    RegularizedConfig,
    segment,
    source_preset,
)
from graphseg.pipelines.presets import resolve_preset

KINDS = ("boxes", "points", "scribbles", "tags")
# the table of docs/paper_presets.md, per source: attention/losses variant, learned-graph window
# (shape, inference radius per kind, training radius), edge threshold, affinity loss, CRF,
# schedule (epochs, lr, lambda_reg, width) for boxes and for the other kinds
TABLE = {
    "paper": {"variant": "paper", "shape": "disk", "radius": dict.fromkeys(KINDS, 5),
              "train_radius": 5, "threshold": 1e-3, "crf": "psa", "loss_size": "graph",
              "boxes": (100, 0.03, 0.01, 256), "other": (100, 0.03, 0.01, 256)},
    "official": {"variant": "official", "shape": "square",
                 "radius": {"boxes": 4, "scribbles": 4, "points": 3, "tags": 3},
                 "train_radius": 4, "threshold": None, "crf": "a2gnn", "loss_size": "image",
                 "boxes": (300, 0.035, 0.01, 256), "other": (100, 0.03, 0.3, 256)},
}


@pytest.mark.parametrize("weak", KINDS)
@pytest.mark.parametrize("source", ["paper", "official"])
def test_each_source_selects_what_the_table_says(weak, source):
    row = TABLE[source]
    preset = source_preset(weak, source)
    assert preset.method == "a2gnn"
    assert preset.seeds == PRESETS[weak].seeds
    assert (preset.finish.crf, preset.finish.colour_weight) == (row["crf"], 0.0)
    a2gnn = preset.config("a2gnn")
    assert (a2gnn.variant, a2gnn.loss_size) == (row["variant"], row["loss_size"])
    assert (a2gnn.epochs, a2gnn.lr, a2gnn.lambda_reg, a2gnn.hidden) == row[
        "boxes" if weak == "boxes" else "other"]
    learned = a2gnn.learned
    assert (learned.shape, learned.radius, learned.training_radius, learned.threshold,
            learned.variant) == (row["shape"], row["radius"][weak], row["train_radius"],
                                 row["threshold"], row["variant"])
    # the CAMs' random walk (tags) and the walk recipe run on the same learned graph
    assert preset.config("random-walk").learned == learned == a2gnn.walk.learned
    assert preset.config("ial").variant == "paper"
    assert preset.config("pce-potts") == RegularizedConfig.paper()
    assert resolve_preset(weak, source) == preset


def test_graphseg_is_the_shipped_presets_and_unknown_sources_are_refused():
    assert PRESET_SOURCES == ("graphseg", "paper", "official")
    for weak in KINDS:
        assert source_preset(weak, "graphseg") is PRESETS[weak]
        assert resolve_preset(weak, None) is PRESETS[weak]
    with pytest.raises(ValueError, match="preset must be one of"):
        source_preset("boxes", "thesis")
    with pytest.raises(TypeError, match="Preset or one of"):
        resolve_preset("boxes", 3)
    # a source's preset still takes one recipe's change
    changed = source_preset("points", "paper").replace(IALConfig(rounds=1))
    assert changed.config("ial").rounds == 1
    assert changed.config("a2gnn") == A2GNNConfig.paper("points")
    assert isinstance(changed.config("random-walk"), RandomWalkConfig)


def test_segment_runs_a_source_by_name(monkeypatch):
    from graphseg.pipelines import finishing
    from graphseg.pipelines.recipes import a2gnn

    calls = []

    def spy(function, name):
        def wrapped(*args, **kwargs):
            calls.append((name, kwargs.get("variant", kwargs.get("preset"))))
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(a2gnn, "fit_a2gnn", spy(a2gnn.fit_a2gnn, "a2gnn"))
    monkeypatch.setattr(finishing, "crf", spy(finishing.crf, "crf"))
    image, truth, labels = make_scene(0)
    config = A2GNNConfig.paper("boxes", epochs=6, hidden=16)
    result = segment(image, labels, weak="boxes", preset="paper", config=config)
    assert result.shape == truth.shape
    assert calls == [("a2gnn", "paper"), ("crf", "psa")]  # not graphseg's grabcut
    assert float((result == torch.as_tensor(truth)).float().mean()) > 0.8
