"""What the pipeline modules share: one image at the boundary, working resolutions, and seed
maps renumbered to the classes they hold."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from graphseg import _checks

UNKNOWN = 255


def single_image(image) -> Tensor:
    """One image as ``(1, 3, H, W)`` (any form of docs/images.md); a batch is refused."""
    image = _checks.as_image_batch(image, "image", channels=3)
    if image.shape[0] != 1:
        raise ValueError(f"image must be a single image, got a batch of {image.shape[0]}")
    return image


def image_and_seeds(image, seeds, num_classes: int | None) -> tuple[Tensor, Tensor, int]:
    """Checks one image and its ``(1, H, W)`` seeds; returns them and the class count
    (default: largest seed + 1)."""
    image = single_image(image)
    seeds = _checks.as_label_batch(seeds, "seeds")
    _checks.same_size("image", image[:, 0], "seeds", seeds)
    if not bool((seeds != UNKNOWN).any()):
        raise ValueError("seeds has no seed: every entry is 255 (unknown)")
    classes = int(seeds[seeds != UNKNOWN].max()) + 1 if num_classes is None else num_classes
    _checks.check_seed_values("seeds", seeds, classes)
    return image, seeds, classes


def renumber(seeds: Tensor) -> tuple[Tensor, Tensor]:
    """The classes with seeds and the seed map renumbered 0..k-1 (255 kept); any class id,
    255 and beyond included in the ids of the classes (a seed map's 255 is unknown)."""
    known = seeds != UNKNOWN
    present = torch.unique(seeds[known])
    if len(present) > UNKNOWN:
        raise ValueError(f"the seeds hold {len(present)} classes; at most {UNKNOWN} classes "
                         f"can be seeded in one image ({UNKNOWN} marks unknown pixels)")
    local = torch.searchsorted(present, torch.where(known, seeds, 0).contiguous())
    return present, torch.where(known, local, UNKNOWN)


def working(image: Tensor, size: int) -> Tensor:
    """The image resized so that its longer side is ``size`` (bilinear, sides at least 8): the
    resolution at which the per-image networks of IAL and the regularized loss train."""
    height, width = image.shape[2:]
    scale = size / max(height, width)
    shape = (max(8, round(height * scale)), max(8, round(width * scale)))
    return F.interpolate(image, size=shape, mode="bilinear", align_corners=False)


def upsample(probs: Tensor, shape: tuple[int, int]) -> Tensor:
    """Bilinear resampling of ``(B, C, h, w)`` maps to ``shape``."""
    return F.interpolate(probs, size=shape, mode="bilinear", align_corners=False)


def working_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the longer side ``size`` and the aspect ratio kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: Tensor, size: int) -> Tensor:
    """The image at the working resolution of the affinity CNN (longer side ``size``,
    antialiased bilinear): the same in training and at inference."""
    target = working_size(*image.shape[2:], size)
    if target == tuple(image.shape[2:]):
        return image
    return F.interpolate(image, size=target, mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


class RegistryView(Mapping):
    """A read-only mapping computed from a registry on every access (``METHODS``,
    ``LABEL_KEYS``, ``DEFAULT_METHOD``), so that what it shows is never listed twice."""

    def __init__(self, keys: Callable[[], Iterable[str]], value: Callable[[str], object]):
        self._keys, self._value = keys, value

    def __getitem__(self, key: str):
        if key not in self._keys():
            raise KeyError(key)
        return self._value(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(list(self._keys()))

    def __repr__(self) -> str:
        return repr(dict(self))
