"""Folders of images through the shared runner (shards, resume, failures, atomic files):
:func:`segment_dataset` (weak labels → one PNG of class ids per image, by
:func:`~graphseg.pipelines.segment`) and :func:`propagate_dataset` (seed maps or CAMs →
probabilities and labels, by :func:`~graphseg.pipelines.propagate_image`)."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphseg import _checks
from graphseg._io import atomic_path, check_png_classes, output_folder, write_label_png
from graphseg.figures import save_result_figure
from graphseg.pipelines._runner import Failure, check_shard, for_each_sample, sample_labels
from graphseg.pipelines.instances import box_instances, write_instances
from graphseg.pipelines.kinds import LABEL_KEYS
from graphseg.pipelines.presets import Preset, resolve_preset
from graphseg.pipelines.propagation import (
    PROBABILITY_FORMATS,
    cam_start,
    check_options,
    propagate_image,
)
from graphseg.pipelines.registry import get_recipe
from graphseg.pipelines.segmentation import recipe_model, segment

__all__ = ["propagate_dataset", "segment_dataset"]


def segment_dataset(dataset, out_dir: str | os.PathLike, *, weak: str,
                    method: str | None = None, resume: bool = False, progress: bool = True,
                    preset: Preset | None = None, config=None,
                    on_result: Callable[[str, Tensor, float], None] | None = None,
                    checkpoint=None, shard: tuple[int, int] = (0, 1),
                    figures: str | os.PathLike | None = None, instances: bool = False,
                    settings=None) -> list[Failure]:
    """Segments every image of a data set and writes ``OUT/NAME.png`` (uint8 class ids).

    Each file is written atomically (a temporary file renamed into place), so an interrupted
    run leaves no partial PNG (and the temporaries of a killed run are removed by the next);
    ``resume`` skips images whose PNG (and figure, when asked) reads back whole. Class ids must
    fit a label PNG (``dataset.num_classes`` <= 255, checked before the first image). An image
    that fails (unreadable, invalid labels) is reported and the others are still processed.
    Every image is segmented on its own with fixed seeds, so a data set split into shards (one
    process per shard, e.g. the ranks of ``torchrun``) writes the same files as a single run.

    Args:
        dataset: a :class:`graphseg.data.SegmentationFolder` (or any sequence of samples with
            ``name``, ``image`` and the ``weak`` labels); only ``weak`` labels are read.
        out_dir: output folder (created).
        weak, method, preset, config: as :func:`~graphseg.pipelines.segment`.
        checkpoint: as :func:`~graphseg.pipelines.segment` (a path is loaded once, before the
            first image). A method that learns across the folder (``"box-network"``) without
            one trains its model on ``dataset`` first and writes it to ``OUT`` (with
            ``resume``, a model already there is used).
        resume: skip images whose outputs are all written and readable.
        progress: show a tqdm bar.
        on_result: called as ``on_result(name, labels, seconds)`` after each image.
        shard: ``(index, count)``: process only the images ``index, index + count, ...`` (the
            split of a non-shuffling ``DistributedSampler``, without its padding).
        figures: a folder that receives ``NAME.png``, the image, its seeds and the result side
            by side (:func:`graphseg.figures.save_result_figure`).
        instances: boxes only: also write ``OUT/instances/NAME.png`` (uint8 instance ids, 0 =
            none, k = the k-th box) and ``OUT/instances/NAME.json`` (each instance's class, box
            and pixel count), by :func:`~graphseg.pipelines.box_instances`.
        settings: deprecated; use ``preset``.

    Returns:
        The failures of this shard, in order.
    """
    if instances and weak != "boxes":
        raise ValueError(f"instances needs weak='boxes' (one instance per box), got {weak!r}")
    preset = resolve_preset(weak, preset, settings)
    method = preset.folder_default if method is None else method
    recipe = get_recipe(weak, method)
    check_shard(shard)
    model = recipe_model(checkpoint, weak, recipe)
    num_classes = getattr(dataset, "num_classes", None)
    if num_classes is not None:
        check_png_classes(num_classes, "the data set's num_classes")
    out = output_folder(out_dir, "out_dir")
    if figures is not None:
        output_folder(figures, "figures")
    if recipe.folder is not None and model is None:
        model = _folder_model(dataset, out, recipe, config or preset.config(recipe.name),
                              weak=weak, num_classes=num_classes, resume=resume,
                              progress=progress)

    def process(name: str, sample: dict) -> None:
        start = time.perf_counter()
        found: dict = {}
        labels = segment(sample["image"], sample_labels(sample, LABEL_KEYS[weak]), weak=weak,
                         method=method, num_classes=num_classes, preset=preset, config=config,
                         checkpoint=model, details=found)
        seconds = time.perf_counter() - start
        write_label_png(out / f"{name}.png", labels)
        if instances:
            write_instances(out / "instances" / f"{name}.png",
                            out / "instances" / f"{name}.json",
                            *box_instances(labels, sample["boxes"]))
        if figures is not None:
            save_result_figure(Path(figures) / f"{name}.png", sample["image"], found["seeds"],
                               labels, title=f"{name}: {weak}/{method}")
        if on_result is not None:
            on_result(name, labels, seconds)

    def outputs(name: str) -> list[Path]:
        files = [out / f"{name}.png"]
        if instances:
            files += [out / "instances" / f"{name}.png", out / "instances" / f"{name}.json"]
        return files + ([] if figures is None else [Path(figures) / f"{name}.png"])

    return for_each_sample(dataset, process, desc=f"segment {weak}/{method}", shard=shard,
                           progress=progress, outputs=outputs, resume=resume)


def _folder_model(dataset, out: Path, recipe, config, *, weak: str, num_classes: int | None,
                  resume: bool, progress: bool):
    """The model of a recipe that learns across the folder, trained on every usable sample
    of the folder (an unreadable one, or one with invalid labels, is left out here and
    reported when its turn to be labelled comes) and written to ``OUT/<file>`` as it trains;
    ``resume`` continues from that file. Every shard trains on the whole folder, with fixed
    seeds, so all shards use one model."""

    def readable():
        for index in range(len(dataset)):
            try:
                sample = dataset[index]
            except Exception:  # reported by the runner with the image's name
                continue
            yield {"name": sample["name"], "image": sample["image"],
                   **sample_labels(sample, LABEL_KEYS[weak])}

    return recipe.folder.train(readable(), config, num_classes=num_classes, progress=progress,
                               checkpoint=out / recipe.folder.file, resume=resume,
                               failures=[])


_OPTIONS = {"preset", "num_classes", "radius", "sigma_xy", "sigma_rgb", "stride", "beta",
            "num_steps"}
"""The options of :func:`propagate_image` that :func:`propagate_dataset` passes on."""


def _save_probabilities(path: Path, probs: Tensor, fmt: str) -> None:
    array = probs[0].to(torch.float32).cpu()
    with atomic_path(path) as temporary:
        if fmt == "npy":
            with open(temporary, "wb") as handle:
                np.save(handle, array.numpy())
        else:
            torch.save(array, temporary)


def propagate_dataset(dataset, out_dir: str | os.PathLike, *, method: str,
                      probabilities: str | None = "npy", resume: bool = False,
                      progress: bool = True, shard: tuple[int, int] = (0, 1),
                      figures: str | os.PathLike | None = None, **options) -> list[Failure]:
    """Propagates every sample of a data set and writes ``OUT/NAME.png`` (uint8 argmax) and,
    unless ``probabilities`` is None, ``OUT/NAME.npy`` or ``.pt`` (float32 ``(K, H, W)``).

    Every file is written atomically (the temporaries of a killed run are removed by the
    next), and ``resume`` skips an image only when every asked output (PNG, probabilities,
    figure) reads back whole. The options are checked, and a class count that does not fit a
    label PNG (over 255) refused, before the first image. A failed image is reported and the
    others go on.
    Images are independent, so the shards of ``torchrun`` ranks write the files of a single
    run.

    Args:
        dataset: a :class:`graphseg.data.PropagationFolder` (or any sequence of samples with
            ``name``, ``image`` and ``seeds`` or ``cams``, optionally ``boundary`` and
            ``attention``).
        out_dir: output folder (created).
        method: one of :data:`PROPAGATE_METHODS`.
        probabilities: ``"npy"``, ``"pt"`` or None (labels only).
        resume, progress, shard, figures: as :func:`graphseg.pipelines.segment_dataset`.
        **options: passed to :func:`propagate_image` (``preset``, ``num_classes``,
            ``radius``, ``sigma_xy``, ``sigma_rgb``, ``stride``, ``beta``, ``num_steps``).

    Returns:
        The failures of this shard, in order.
    """
    defaults = {name: parameter.default for name, parameter
                in inspect.signature(propagate_image).parameters.items() if name in _OPTIONS}
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise TypeError(f"propagate_dataset got unknown options {unknown}; expected some of "
                        f"{sorted(_OPTIONS)}")
    check_options(method, **{**defaults, **options})
    if options.get("num_classes") is not None:
        check_png_classes(options["num_classes"])
    if probabilities is not None:
        _checks.check_choice("probabilities", probabilities, PROBABILITY_FORMATS)
    out = output_folder(out_dir, "out_dir")
    if figures is not None:
        output_folder(figures, "figures")

    def process(name: str, sample: dict) -> None:
        probs = propagate_image(sample["image"], seeds=sample.get("seeds"),
                                cams=sample.get("cams"), method=method,
                                boundary=sample.get("boundary"),
                                attention=sample.get("attention"), **options)
        check_png_classes(probs.shape[1], "the class count (CAM channels + 1)")
        labels = probs[0].argmax(0)
        if probabilities is not None:
            _save_probabilities(out / f"{name}.{probabilities}", probs, probabilities)
        write_label_png(out / f"{name}.png", labels)
        if figures is not None:
            start = sample.get("seeds")
            if start is None:
                start = cam_start(sample["cams"], *labels.shape, options.get("preset"))
            save_result_figure(Path(figures) / f"{name}.png", sample["image"], start, labels,
                               title=f"{name}: {method}")

    def outputs(name: str) -> list[Path]:
        files = [out / f"{name}.png"]
        if probabilities is not None:
            files.append(out / f"{name}.{probabilities}")
        return files + ([] if figures is None else [Path(figures) / f"{name}.png"])

    return for_each_sample(dataset, process, desc=f"propagate {method}", shard=shard,
                           progress=progress, outputs=outputs, resume=resume)
