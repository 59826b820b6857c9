"""One image from weak labels to class ids, in five steps that each call one module::

    labels ─ kinds/ ─> seeds ─ recipes/ ─> probabilities ─ finishing ─> probabilities ─> labels
                                 (graph + propagation)

:func:`segment` reads the recipe from the registry (:func:`get_recipe`), the kind's settings
from :data:`PRESETS` and runs the steps; :func:`weak_seeds` stops after the first.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from graphseg.nn.affinity import AffinityCNN
from graphseg.pipelines._common import single_image
from graphseg.pipelines.affinity import load_affinity
from graphseg.pipelines.finishing import finish
from graphseg.pipelines.kinds import weak_input
from graphseg.pipelines.presets import Preset, resolve_preset
from graphseg.pipelines.registry import Recipe, all_recipes, get_recipe

__all__ = ["affinity_checkpoint", "recipe_model", "segment", "weak_seeds"]


def affinity_checkpoint(checkpoint, weak: str, recipe: Recipe) -> AffinityCNN | None:
    """The affinity CNN of ``checkpoint`` (a model or a path), for a recipe that takes one."""
    if checkpoint is None:
        return None
    if weak not in recipe.learned_graph:
        raise ValueError(f"checkpoint is only used by {_affinity_takers()}, got method "
                         f"{recipe.name!r} for weak {weak!r}")
    if isinstance(checkpoint, AffinityCNN):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return load_affinity(checkpoint)
    raise TypeError("checkpoint must be a path or an AffinityCNN, got "
                    f"{type(checkpoint).__name__}")


def _affinity_takers() -> str:
    """The methods that run on an affinity CNN, in words."""
    return " and ".join(
        f"method {r.name!r}" + ("" if r.learned_graph == r.kinds
                                else f" for weak {', '.join(map(repr, r.learned_graph))}")
        for r in sorted((r for r in all_recipes() if r.learned_graph),
                        key=lambda r: r.learned_graph != r.kinds))


def recipe_model(checkpoint, weak: str, recipe: Recipe):
    """The trained model ``recipe`` runs with: for a recipe that learns across a folder
    (``recipe.folder``), its model or the path of one; else the affinity CNN of
    :func:`affinity_checkpoint`."""
    if recipe.folder is None:
        return affinity_checkpoint(checkpoint, weak, recipe)
    if checkpoint is None or isinstance(checkpoint, recipe.folder.type):
        return checkpoint
    hint = f" (an affinity CNN is used by {_affinity_takers()})"
    if isinstance(checkpoint, (str, os.PathLike)):
        try:
            return recipe.folder.load(checkpoint)
        except ValueError as error:
            raise ValueError(f"{error}{hint}") from None
    raise TypeError(f"checkpoint of method {recipe.name!r} must be a path or a "
                    f"{recipe.folder.type.__name__}, got {type(checkpoint).__name__}"
                    + (hint if isinstance(checkpoint, AffinityCNN) else ""))


def segment(image, labels: dict, *, weak: str, method: str | None = None,
            num_classes: int | None = None, preset: Preset | None = None, config=None,
            details: dict | None = None, checkpoint=None, settings=None) -> Tensor:
    """Segments one image from its weak labels.

    Args:
        image: one image: ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1], or any image
            form of docs/images.md.
        labels: the image's weak labels; only the entries of ``weak``
            (:data:`~graphseg.pipelines.LABEL_KEYS`) are read:

            - ``{"boxes": [{"cls", "box": [x0, y0, x1, y1]}]}`` (inclusive pixel bounds);
            - ``{"points": [{"x", "y", "cls"}]}`` (class 0 = background);
            - ``{"scribbles": [{"cls", "points": [[x, y], ...]}]}`` (polylines);
            - ``{"tags": [c, ...], "cams": (C, h, w)}``: the foreground classes present and
              class activation maps, channel c-1 for class c (C = ``num_classes`` - 1 when
              given), at any resolution (resized bilinearly), non-negative.

        weak: ``"boxes"``, ``"points"``, ``"scribbles"`` or ``"tags"``.
        method: a recipe of ``weak`` (:data:`~graphseg.pipelines.METHODS`; default: the
            preset's).
        num_classes: when given, label classes must be below it.
        preset: the kind's settings (default :data:`PRESETS` ``[weak]``).
        config: the recipe's config, replacing the preset's for this call (e.g.
            ``A2GNNConfig(epochs=20)``).
        details: an optional dict that receives what the method reports: ``"seeds"``, the
            ``(H, W)`` seed map it started from (255 = unknown; for tags, the confident CAM
            seeds M'_I), and ``"ial_reports"``, IAL's per-round reports.
        checkpoint: a trained :class:`~graphseg.nn.AffinityCNN`, or the path of a checkpoint
            of :func:`~graphseg.pipelines.train_affinity_dataset`; ``"a2gnn"`` then trains on
            the learned pixel graph of the image (the config's ``learned`` size and window)
            and the random walk of ``"tags"`` walks on it. ``"box-network"``: the network
            (or the path of ``box_network.pt``) that
            :func:`~graphseg.pipelines.segment_dataset` trained across a folder.
        settings: deprecated; use ``preset`` or ``config``.

    Returns:
        ``(H, W)`` int64 class ids.
    """
    preset = resolve_preset(weak, preset, settings)
    recipe = get_recipe(weak, preset.method if method is None else method)
    if config is not None and recipe.config is not None and not isinstance(config,
                                                                          recipe.config):
        raise TypeError(f"method {recipe.name!r} takes a {recipe.config.__name__}, got "
                        f"{type(config).__name__}")
    model = recipe_model(checkpoint, weak, recipe)
    image = single_image(image)
    # 1. weak labels -> seeds
    inputs = weak_input(image, labels, weak=weak, num_classes=num_classes, config=preset.seeds)
    if details is not None:
        details["seeds"] = inputs.seeds[0]
    if len(inputs.classes) == 1:
        return inputs.labels(torch.ones(1, 1, *image.shape[2:]))
    # 2-3. graph and propagation (or learning) -> probabilities over inputs.classes
    probs = recipe.run(image, inputs, preset.config(recipe.name) if config is None else config,
                       model=model, details=details)
    # 4. finishing: colour model, CRF
    if recipe.finishing:
        probs = finish(image, inputs.local, probs, preset.finish)
    # 5. class ids
    return inputs.labels(probs)


def weak_seeds(image, labels: dict, *, weak: str, num_classes: int | None = None,
               preset: Preset | None = None, settings=None) -> Tensor:
    """The seed map that :func:`segment` and
    :func:`~graphseg.pipelines.train_affinity_dataset` build from weak labels.

    - boxes: GrabCut seeds M_B (thesis Eq. 3.2–3.4, :func:`graphseg.seeds.grabcut_seeds`); with
      ``labels["cams"]`` beside the boxes, the confident seeds M_g ⊆ M_F (Eq. 3.5,
      :func:`graphseg.seeds.confident_box_seeds`);
    - points / scribbles: disks / strokes expanded to SLIC superpixels (thesis §3.6.1,
      :func:`graphseg.seeds.expand_seeds`);
    - tags: the CAM seeds M'_I of ``labels["cams"]`` (:func:`graphseg.seeds.topk_seeds`).

    Returns:
        ``(1, H, W)`` int64 seeds, 255 = unknown.
    """
    preset = resolve_preset(weak, preset, settings)
    return weak_input(single_image(image), labels, weak=weak, num_classes=num_classes,
                      config=preset.seeds).seeds
