"""The registry of recipes: every method of :func:`~graphseg.pipelines.segment` is a
:class:`Recipe` registered with the weak-label kinds it serves (compare torchvision's
``list_models`` / ``get_model``). :data:`METHODS`, the command line's choices and the docs'
table are read from here, never listed twice."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from graphseg import _checks
from graphseg.data.datasets import WEAK_KINDS
from graphseg.pipelines._common import RegistryView

__all__ = ["METHODS", "FolderModel", "Recipe", "all_recipes", "get_recipe", "get_recipe_config",
           "is_recipe_config", "list_recipes", "methods_table", "register_recipe"]


@dataclass(frozen=True)
class FolderModel:
    """How a recipe that learns across a folder gets its model:
    ``train(samples, config, *, num_classes, progress, checkpoint, resume, failures)`` over
    the folder's samples (an iterable read once), writing its model to ``checkpoint``
    atomically as it goes and, with ``resume``, continuing from what is there, a sample it
    cannot use appended to ``failures`` and left out; ``load(path)`` reads one back;
    ``type`` is the model's class and ``file`` its name in the output folder."""

    train: Callable
    load: Callable
    type: type
    file: str


@dataclass(frozen=True)
class Recipe:
    """One method: ``run(image, inputs, config, *, model, details)`` turns an image and its
    :class:`~graphseg.pipelines.kinds.WeakInput` into ``(1, K, H, W)`` probabilities over
    ``inputs.classes``."""

    name: str
    kinds: tuple[str, ...]
    run: Callable
    config: type | None
    """Its frozen config dataclass (None: it has no options)."""
    summary: str
    """One line for the docs and the command line."""
    learned_graph: tuple[str, ...] = ()
    """The kinds for which a trained affinity CNN (``checkpoint=``) supplies its graph."""
    finishing: bool = True
    """Whether the colour fusion and the CRF of the kind's preset follow it."""
    folder: FolderModel | None = None
    """Set for a recipe that learns a model across the folder it labels (``model=``)."""


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, *, kinds, config: type | None, summary: str,
                    learned_graph=(), finishing: bool = True,
                    folder: FolderModel | None = None) -> Callable:
    """A decorator registering ``run`` as the recipe ``name`` for ``kinds``."""
    for kind in kinds:
        _checks.check_choice("kinds", kind, WEAK_KINDS)

    def register(run: Callable) -> Callable:
        if name in _RECIPES:
            raise ValueError(f"a recipe named {name!r} is already registered")
        _RECIPES[name] = Recipe(name, tuple(kinds), run, config, summary,
                                tuple(learned_graph), finishing, folder)
        return run

    return register


def list_recipes(weak: str | None = None) -> list[str]:
    """The recipes serving ``weak`` (all of them when None), in registration order."""
    if weak is not None:
        _checks.check_choice("weak", weak, WEAK_KINDS)
    return [name for name, recipe in _RECIPES.items() if weak is None or weak in recipe.kinds]


def all_recipes() -> list[Recipe]:
    """Every registered recipe, in registration order."""
    return list(_RECIPES.values())


def get_recipe(weak: str, method: str) -> Recipe:
    """The recipe ``method`` for the weak kind ``weak``, refusing one that does not serve it."""
    _checks.check_choice("weak", weak, WEAK_KINDS)
    _checks.check_choice("method", method, list_recipes(weak))
    return _RECIPES[method]


def get_recipe_config(method: str) -> type | None:
    """The config class of the recipe ``method``."""
    _checks.check_choice("method", method, list(_RECIPES))
    return _RECIPES[method].config


def is_recipe_config(config) -> bool:
    """Whether ``config`` is the config of a registered recipe."""
    return any(recipe.config is type(config) for recipe in _RECIPES.values())


def methods_table() -> str:
    """The Markdown table of every recipe (the docs page of the methods is built from it)."""
    from graphseg.pipelines.presets import PRESETS

    def marked(kind: str, name: str) -> str:
        preset = PRESETS.get(kind)
        if preset is None or name not in (preset.method, preset.folder_default):
            return kind
        if preset.method == preset.folder_default:
            return f"{kind} (default)"
        return f"{kind} (default for {'one image' if name == preset.method else 'a folder'})"

    rows = ["| method | weak kinds | config | learned graph | what it does |",
            "|---|---|---|---|---|"]
    for recipe in all_recipes():
        kinds = ", ".join(marked(k, recipe.name) for k in recipe.kinds)
        config = f"`{recipe.config.__name__}`" if recipe.config else "–"
        learned = ", ".join(recipe.learned_graph) or "–"
        rows.append(f"| `{recipe.name}` | {kinds} | {config} | {learned} | {recipe.summary} |")
    return "\n".join(rows) + "\n"


METHODS: Mapping[str, tuple[str, ...]] = RegistryView(
    lambda: WEAK_KINDS, lambda weak: tuple(list_recipes(weak)))
"""The methods of each weak kind, from the registry."""
