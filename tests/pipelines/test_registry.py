"""The registry of recipes, the presets that compose them per weak kind, and the names of
graphseg 0.1 that moved (kept for one release with a DeprecationWarning)."""

import dataclasses
import importlib
import sys
import warnings

import pytest
import torch
from scenes import make_scene

import graphseg
from graphseg.cli import _methods_help
from graphseg.pipelines import (
    DEFAULT_METHOD,
    LABEL_KEYS,
    METHODS,
    PRESETS,
    A2GNNConfig,
    FinishConfig,
    HarmonicConfig,
    PointSeeds,
    Preset,
    get_recipe,
    list_recipes,
    register_recipe,
    registry,
    segment,
)
from graphseg.pipelines.registry import all_recipes, methods_table


def test_methods_defaults_cli_and_docs_table_come_from_the_registry():
    assert set(METHODS) == set(PRESETS) == set(LABEL_KEYS) == {"boxes", "points", "scribbles",
                                                               "tags"}
    for weak, methods in METHODS.items():
        assert methods == tuple(list_recipes(weak)) and DEFAULT_METHOD[weak] in methods
        assert all(weak in get_recipe(weak, m).kinds for m in methods)
    help_text = _methods_help()
    table = methods_table()
    for recipe in all_recipes():
        assert f"`{recipe.name}`" in table and recipe.summary in table
        for weak in recipe.kinds:
            assert recipe.name in help_text.split(f"{weak}: ")[1].split(";")[0]
    assert table.count("\n") == len(all_recipes()) + 2
    for weak in METHODS:
        # the command line labels folders: its default is the folder's
        shown = help_text.split(f"{weak}: ")[1].split(";")[0]
        assert f"{PRESETS[weak].folder_default} (default)" in shown
        assert shown.count("(default)") == 1
    assert "| boxes (default for one image) |" in table.split("`grabcut`")[1].split("\n")[0]
    assert "| boxes (default for a folder) |" in table.split("`box-network`")[1].split("\n")[0]


def test_every_recipe_has_a_frozen_config_and_the_presets_name_real_ones():
    for recipe in all_recipes():
        if recipe.config is not None:
            config = recipe.config()
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(config, dataclasses.fields(config)[0].name, None)
    for weak, preset in PRESETS.items():
        assert preset.method in METHODS[weak]
        for config in preset.configs:
            assert registry.is_recipe_config(config)
        assert len({type(c) for c in preset.configs}) == len(preset.configs)


def test_unknown_weak_kinds_and_methods_are_refused_with_the_registry_names():
    image, _, labels = make_scene(0)
    with pytest.raises(ValueError,
                       match=r"method must be one of \['a2gnn', 'ial', 'random-walk'\]"):
        segment(image, labels, weak="tags", method="grabcut")
    with pytest.raises(ValueError, match="weak must be one of"):
        segment(image, labels, weak="box")
    with pytest.raises(TypeError, match="method 'harmonic' takes a HarmonicConfig, got "
                                        "A2GNNConfig"):
        segment(image, labels, weak="points", config=A2GNNConfig())


def test_a_config_changes_one_recipe_and_nothing_else():
    preset = PRESETS["points"]
    sharper = preset.replace(A2GNNConfig(epochs=7), PointSeeds(radius=2))
    assert sharper.config("a2gnn").epochs == 7 and sharper.seeds.radius == 2
    assert sharper.config("harmonic") == preset.config("harmonic")
    assert sharper.finish == preset.finish and preset.config("a2gnn").epochs == 100
    assert preset.config("ial") == type(preset.config("ial"))()  # the recipe's default
    with pytest.raises(TypeError, match="takes seed, finish and recipe configs, got BoxSeeds"):
        preset.replace(graphseg.pipelines.BoxSeeds())
    # config= on one call is the same as a preset holding it
    image, _, labels = make_scene(1)
    config = HarmonicConfig(graph=dataclasses.replace(preset.config("harmonic").graph,
                                                      radius=1))
    assert torch.equal(segment(image, labels, weak="points", config=config),
                       segment(image, labels, weak="points", preset=preset.replace(config)))


def test_a_new_recipe_registers_itself_for_its_kinds(monkeypatch):
    monkeypatch.setattr(registry, "_RECIPES", dict(registry._RECIPES))

    @dataclasses.dataclass(frozen=True)
    class EverythingConfig:
        cls: int = 1

    @register_recipe("everything", kinds=("points",), config=EverythingConfig,
                     summary="every pixel the first foreground class")
    def everything(image, inputs, config, *, model=None, details=None):
        probs = torch.zeros(1, len(inputs.classes), *image.shape[2:])
        probs[:, config.cls] = 1
        return probs

    assert "everything" in METHODS["points"] and "everything" not in METHODS["boxes"]
    assert "`everything`" in methods_table() and "everything" in _methods_help()
    image, _, labels = make_scene(0)
    pred = segment(image, labels, weak="points", method="everything",
                   preset=dataclasses.replace(PRESETS["points"], finish=FinishConfig()))
    assert set(pred.unique().tolist()) == {1}
    with pytest.raises(ValueError, match="already registered"):
        register_recipe("everything", kinds=("points",), config=None, summary="")(everything)


def test_the_names_that_moved_still_import_with_a_warning_naming_the_new_place():
    for module, new_place in (("graphseg.pipelines.weak", "graphseg.pipelines"),
                              ("graphseg.pipelines.ial", "graphseg.pipelines"),
                              ("graphseg.pipelines.regularized", "graphseg.pipelines"),
                              ("graphseg.nn.losses", "graphseg.losses")):
        sys.modules.pop(module, None)
        with pytest.warns(DeprecationWarning, match=new_place):
            importlib.import_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from graphseg.nn.losses import potts_loss
        from graphseg.pipelines.ial import IALConfig, UnaryNet
        from graphseg.pipelines.weak import segment as old_segment
    assert potts_loss is graphseg.losses.potts_loss and old_segment is segment
    assert IALConfig is graphseg.pipelines.IALConfig and UnaryNet is graphseg.nn.UnaryNet


def test_the_settings_of_0_1_are_the_presets_and_still_run():
    with pytest.warns(DeprecationWarning, match="PRESETS"):
        from graphseg.pipelines import SETTINGS, Settings
    for weak, preset in PRESETS.items():
        old: Preset = SETTINGS[weak].to_preset(weak)
        assert (old.seeds, old.method, old.finish) == (preset.seeds, preset.method,
                                                       preset.finish)
        for method in METHODS[weak]:
            assert old.config(method) == preset.config(method), (weak, method)
    image, _, labels = make_scene(2)
    with pytest.warns(DeprecationWarning, match="settings= is deprecated"):
        old = segment(image, labels, weak="points", settings=Settings(epochs=5, hidden=8),
                      method="a2gnn")
    new = Settings(epochs=5, hidden=8).to_preset("points")
    assert new.config("a2gnn").epochs == 5
    assert torch.equal(old, segment(image, labels, weak="points", method="a2gnn", preset=new))
