"""Overlay figures of label maps on images (matplotlib, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from graphseg import _checks
from graphseg._io import atomic_path

__all__ = ["PALETTE", "overlay", "save_panels", "save_result_figure"]

UNKNOWN = 255
PALETTE = np.array([
    [70, 130, 255], [255, 140, 0], [40, 220, 90], [230, 40, 60], [160, 80, 230],
    [250, 230, 40], [0, 210, 210], [240, 80, 200], [140, 90, 40], [150, 150, 150],
], dtype=np.uint8)
"""Colours of classes 0, 1, ... (repeated beyond 10 classes); 255 (unknown) is left clear."""


def _rgb(image) -> np.ndarray:
    """``(H, W, 3)`` uint8 of the first image of any form of docs/images.md."""
    image = _checks.as_image_batch(image, "image", channels=3)[0].detach().cpu()
    return (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def overlay(image, labels, *, alpha: float = 0.55) -> np.ndarray:
    """The image with each labelled pixel blended towards its class colour (255 untouched).

    Args:
        image: an image in any form of docs/images.md (the first of a batch).
        labels: ``(H, W)`` class ids (tensor or array), 255 = unknown.
        alpha: weight of the class colour (1 paints the labels opaque).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    rgb = _rgb(image)
    labels = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels must have the image's size {rgb.shape[:2]}, got "
                         f"{labels.shape}")
    colour = PALETTE[np.where(labels == UNKNOWN, 0, labels) % len(PALETTE)].astype(np.float32)
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colour
    return np.where((labels == UNKNOWN)[..., None], rgb, blended.round()).astype(np.uint8)


def save_panels(path: str | os.PathLike, panels: Sequence[tuple[str, np.ndarray]], *,
                title: str | None = None, dpi: int = 80) -> None:
    """Writes RGB panels side by side, each with its title, as a PNG (atomically)."""
    from matplotlib.figure import Figure

    height, width = panels[0][1].shape[:2]
    scale = 5 / max(height, width)
    figure = Figure(figsize=(len(panels) * width * scale + 0.2, height * scale + 0.6),
                    layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for axis, (name, picture) in zip(axes, panels, strict=True):
        axis.imshow(picture)
        axis.set_title(name)
        axis.set_axis_off()
    if title:
        figure.suptitle(title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")


def save_result_figure(path: str | os.PathLike, image, seeds, labels, *,
                       title: str | None = None) -> None:
    """Image, seeds (opaque, 255 clear) and result overlay side by side, as a PNG."""
    save_panels(path, [("image", _rgb(image)), ("seeds", overlay(image, seeds, alpha=1.0)),
                       ("result", overlay(image, labels))], title=title)
