"""Input checks shared by the public functions. Each raises ``TypeError`` or ``ValueError`` with a
message naming the argument, what was expected and what was given; internals trust their inputs."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import Tensor

VARIANTS = ("paper", "official")
"""What a paper-derived choice can follow: the paper's text or the authors' released code."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _describe(value) -> str:
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


# -- memory ---------------------------------------------------------------------------------

MEMORY_FRACTION = 0.5
"""The default memory limit: this share of the machine's memory (of the GPU's, for CUDA)."""
_memory_limit: int | None = None


class MemoryLimitError(ValueError, MemoryError):
    """An operation whose estimated peak memory is above :func:`memory_limit`, refused before
    it allocates (a ``ValueError``, so commands report it as a usage error or a failed item,
    and a ``MemoryError``)."""


def _parse_bytes(text: str) -> int:
    units = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
             "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
             "tib": 2**40}
    number = text.strip().lower().rstrip("bikmgt ")
    unit = text.strip().lower()[len(number):].strip()
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise ValueError(f"a memory limit must be a number of bytes with an optional unit "
                         f"(e.g. 12GiB, 8GB, 512MiB), got {text!r}") from None
    if not value > 0:
        raise ValueError(f"a memory limit must be positive, got {text!r}")
    return int(value)


def set_memory_limit(limit: int | str | None) -> None:
    """Sets the memory that a single graphseg operation may plan to use: bytes, a string such
    as ``"12GiB"``, or None for the default (:data:`MEMORY_FRACTION` of the machine's memory;
    the environment variable ``GRAPHSEG_MEMORY_LIMIT`` overrides the default too)."""
    global _memory_limit
    if limit is not None and not isinstance(limit, str):
        check_positive("limit", limit, integer=True)
    _memory_limit = _parse_bytes(limit) if isinstance(limit, str) else limit


def memory_limit(device=None) -> int:
    """The limit of :func:`check_memory` for ``device`` (CPU by default), in bytes."""
    import os

    if _memory_limit is not None:
        return _memory_limit
    if os.environ.get("GRAPHSEG_MEMORY_LIMIT"):
        return _parse_bytes(os.environ["GRAPHSEG_MEMORY_LIMIT"])
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        return int(MEMORY_FRACTION * torch.cuda.get_device_properties(device).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume 16 GiB
        total = 16 * 2**30
    return int(MEMORY_FRACTION * total)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def check_memory(nbytes: float, what: str, remedy: str, device=None) -> None:
    """Refuses, before allocating, an operation whose estimated peak is above
    :func:`memory_limit`, with the estimate and what to change."""
    limit = memory_limit(device)
    if nbytes > limit:
        raise MemoryLimitError(
            f"{what} would need about {_gib(nbytes)} of memory, above the limit of "
            f"{_gib(limit)} (graphseg.set_memory_limit or GRAPHSEG_MEMORY_LIMIT raise it): "
            f"{remedy}")


def check_finite(name: str, tensor: Tensor) -> None:
    if not tensor.is_floating_point() or not tensor.numel():
        return
    # one pass over the tensor (NaN and ±inf reach its extremes) where isfinite().all() takes
    # five, each a parallel region of its own
    if not bool(torch.isfinite(torch.stack(torch.aminmax(tensor.detach()))).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_tensor4d(
    name: str, tensor, *, what: str = "(B, C, H, W)", floating: bool = True
) -> Tensor:
    """A 4-D tensor, floating point when asked, finite, with a non-empty image plane."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {what}, got {_describe(tensor)}")
    if tensor.dim() != 4:
        raise ValueError(f"{name} must have shape {what}, got shape {tuple(tensor.shape)}")
    if floating and not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if tensor.shape[2] == 0 or tensor.shape[3] == 0:
        raise ValueError(f"{name} is empty: height and width must be positive, "
                         f"got shape {tuple(tensor.shape)}")
    check_finite(name, tensor)
    return tensor


_IMAGE_CHANNELS = (1, 3, 4)
_RANGE_SLACK = 1e-3  # interpolation overshoot tolerated (and clipped) around [0, 1]


def _pil_array(image, name: str) -> np.ndarray:
    """A PIL image as a channel-last numpy array of its own bit depth."""
    mode = image.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA", "F") or mode.startswith("I;16"):
        array = np.asarray(image)
    elif mode == "I":  # 32-bit integers: what older Pillow makes of 16-bit grey PNGs
        array = np.asarray(image)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"{name} is a 32-bit integer PIL image (mode 'I') with values in "
                             f"[{array.min()}, {array.max()}]; expected 16-bit data in "
                             "[0, 65535] (convert it to 'L' or 'RGB' first)")
        array = array.astype(np.uint16)
    elif mode in ("P", "PA"):
        array = np.asarray(image.convert("RGBA" if mode == "PA" or "transparency"
                                         in image.info else "RGB"))
    else:  # CMYK, YCbCr, LAB, HSV, RGBX...
        array = np.asarray(image.convert("RGB"))
    if array.ndim == 3 and array.shape[2] == 2:  # LA: grey and alpha
        array = array[:, :, :1]
    return array


def _numpy_image(array: np.ndarray, name: str) -> Tensor:
    """A channel-last numpy image as a ``(C, H, W)`` tensor of its dtype (bool as uint8)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in _IMAGE_CHANNELS:
        hint = ""
        if array.ndim == 3 and array.shape[0] in _IMAGE_CHANNELS:
            hint = (": it looks channel-first; numpy images are channel-last, pass "
                    "np.moveaxis(image, 0, -1) or a torch tensor")
        elif array.ndim == 4:
            hint = ": a batch goes in as a (B, C, H, W) torch tensor"
        raise ValueError(f"{name} as a numpy array must have shape (H, W) or (H, W, C) with C "
                         f"1, 3 or 4 (channel-last), got shape {array.shape}{hint}")
    if not array.dtype.isnative:  # big-endian 16-bit PIL modes
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16) and not np.issubdtype(array.dtype,
                                                                      np.floating):
        raise TypeError(f"{name} must be uint8, uint16, bool or float in [0, 1], got "
                        f"{_describe(array)}; convert it, e.g. image.astype(np.uint8) for 0–255 "
                        "values")
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch warns on read-only memory (PIL's buffers)
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def _check_range(name: str, image: Tensor) -> Tensor:
    """A float image in [0, 1] (a slack of 1e-3 is clipped); anything else is refused with the
    conversion to use."""
    low, high = (float(v) for v in torch.aminmax(image))
    if low >= -_RANGE_SLACK and high <= 1 + _RANGE_SLACK:
        return image.clamp(0, 1) if low < 0 or high > 1 else image
    if low >= 0 and high <= 255:
        advice = "0–255 values: divide by 255, or pass a uint8 array"
    elif low >= 0 and high <= 65535:
        advice = "0–65535 values: divide by 65535, or pass a uint16 array"
    else:
        advice = ("a normalised image (e.g. ImageNet mean/std): pass the [0, 1] image and, "
                  "where a function offers it, normalize='imagenet'")
    raise ValueError(f"{name} is a float image with values in [{low:.4g}, {high:.4g}]; float "
                     f"images must lie in [0, 1]. This looks like {advice}")


def as_image_batch(image, name: str = "image", *, channels: int | None = None) -> Tensor:
    """Converts an image in any of the forms below to a ``(B, C, H, W)`` float tensor in [0, 1]
    (the table of docs/images.md; one function, used by every public entry point).

    - numpy arrays (scikit-image, imageio, OpenCV after BGR→RGB) are channel-last: ``(H, W)``
      or ``(H, W, C)``;
    - PIL images of any mode (16-bit grey keeps its depth, palettes become RGB);
    - torch tensors are channel-first: ``(C, H, W)``, ``(B, C, H, W)`` or ``(H, W)``.

    C is 1 (grey), 3 (RGB) or 4 (RGBA: alpha is dropped). uint8 is divided by 255, uint16 by
    65535, bool is 0 or 1; floats must lie in [0, 1] (a 1e-3 overshoot from interpolation is
    clipped): 0–255 floats, normalised images and other integer dtypes are refused with the
    conversion to use. The result is float32, except that float64 tensors stay float64.
    ``channels=3`` asks for colour: a grey image is repeated over three channels (the RGB image
    with R = G = B).
    """
    if "PIL.Image" in sys.modules and isinstance(image, sys.modules["PIL.Image"].Image):
        image = _numpy_image(_pil_array(image, name), name)
    elif isinstance(image, np.ndarray):
        # float32 like a uint8 image of the same picture (scikit-image's floats are float64)
        image = _numpy_image(image, name)
        image = image.float() if image.is_floating_point() else image
    elif isinstance(image, Tensor):
        if image.dim() == 2:
            image = image.unsqueeze(0)
        if image.dim() not in (3, 4):
            raise ValueError(f"{name} as a torch tensor must have shape (C, H, W), "
                             f"(B, C, H, W) or (H, W), got shape {tuple(image.shape)}")
        plane = image.shape[-3]
        if plane not in _IMAGE_CHANNELS:
            hint = ""
            if image.shape[-1] in _IMAGE_CHANNELS:
                hint = (": it looks channel-last; torch tensors are channel-first, pass "
                        "image.permute(2, 0, 1) (or the numpy array)")
            raise ValueError(f"{name} must have 1, 3 or 4 channels (grey, RGB, RGBA) in "
                             f"dimension -3 (torch tensors are channel-first), got shape "
                             f"{tuple(image.shape)}{hint}")
        if image.dtype == torch.bool:
            image = image.to(torch.uint8) * 255
        elif not (image.is_floating_point() or image.dtype in (torch.uint8, torch.uint16)):
            raise TypeError(f"{name} must be uint8, uint16, bool or float in [0, 1], got "
                            f"{_describe(image)}; convert it, e.g. image.to(torch.uint8) for "
                            "0–255 values")
    else:
        raise TypeError(f"{name} must be a numpy array (H, W[, C]), a PIL image or a torch "
                        f"tensor ([B,] C, H, W), got {_describe(image)}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.shape[2] == 0 or image.shape[3] == 0:
        raise ValueError(f"{name} is empty: height and width must be positive, "
                         f"got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    elif image.dtype == torch.uint16:
        image = image.to(torch.int32).float() / 65535.0
    elif image.dtype != torch.float64:
        image = image.float()
    check_finite(name, image)
    image = _check_range(name, image)
    if image.shape[1] == 4:
        image = image[:, :3]
    if channels is not None and image.shape[1] != channels:
        if channels == 3 and image.shape[1] == 1:
            image = image.repeat(1, 3, 1, 1)
        else:
            raise ValueError(f"{name} must have {channels} channels, got shape "
                             f"{tuple(image.shape)}")
    return image


def check_probabilities(name: str, probs: Tensor, *, tol: float = 1e-3) -> None:
    """Per-pixel class probabilities over dimension 1: non-negative, summing to 1 within
    ``tol`` (logits, scores and one-hot maps with unknown pixels are refused)."""
    low = float(probs.min())
    if low < 0:
        raise ValueError(f"{name} must be probabilities (non-negative, summing to 1 over "
                         f"dimension 1), got a value of {low:.4g}: apply softmax to logits")
    error = float((probs.sum(1) - 1).abs().max())
    if error > tol:
        raise ValueError(f"{name} must be probabilities summing to 1 over dimension 1 (the "
                         f"classes), but a pixel's sum is off by {error:.4g}: normalise them, "
                         "e.g. probs / probs.sum(1, keepdim=True)")


def normalize_image(image: Tensor, normalize: str | None, name: str = "normalize") -> Tensor:
    """Applies the named colour normalisation to a ``(B, 3, H, W)`` image in [0, 1]."""
    if normalize is None:
        return image
    if normalize == "imagenet":
        if image.shape[1] != 3:
            raise ValueError(f"{name}='imagenet' needs 3 colour channels, got {image.shape[1]}")
        mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (image - mean) / std
    raise ValueError(f"{name} must be None or 'imagenet', got {normalize!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False,
                   finite: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be a {'whole number' if integer else 'number'}, "
                        f"got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if finite and value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_offsets(offsets, name: str = "offsets") -> Tensor:
    """A ``(K, 2)`` int64 tensor of (dy, dx) offsets without the centre."""
    if isinstance(offsets, np.ndarray):
        offsets = torch.from_numpy(offsets)
    if not isinstance(offsets, Tensor):
        raise TypeError(f"{name} must be a (K, 2) int64 tensor, got {_describe(offsets)}")
    if offsets.dim() != 2 or offsets.shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2), got shape {tuple(offsets.shape)}")
    if offsets.is_floating_point() or offsets.is_complex() or offsets.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {offsets.dtype}")
    offsets = offsets.to(torch.int64)
    if offsets.numel() and bool((offsets == 0).all(dim=1).any()):
        raise ValueError(f"{name} must not contain the centre (0, 0): the self weight is separate")
    return offsets


def same_batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"{name_a} and {name_b} must share batch size and image size, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got {a.device} "
                         f"and {b.device}")


def check_companion(name: str, tensor: Tensor, expected: tuple, like: Tensor,
                    like_name: str = "probs") -> None:
    """``tensor`` must have shape ``expected`` and sit on ``like``'s device."""
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)} to match {like_name} of "
                         f"shape {tuple(like.shape)}, got {tuple(tensor.shape)}")
    if tensor.device != like.device:
        raise ValueError(f"{name} must be on the device of {like_name} ({like.device}), got "
                         f"{tensor.device}")


def as_label_batch(labels, name: str = "labels", *, what: str = "(B, H, W)") -> Tensor:
    """An integer map as a ``(B, H, W)`` int64 tensor; a single ``(H, W)`` map (tensor or numpy
    array) gets a batch dimension."""
    if isinstance(labels, np.ndarray):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise TypeError(f"{name} must be an integer map of shape {what}, "
                            f"got {_describe(labels)}")
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be an integer torch.Tensor or numpy array of shape {what}, "
                        f"got {_describe(labels)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor of shape {what}, "
                        f"got dtype {labels.dtype}")
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    if labels.dim() != 3:
        raise ValueError(f"{name} must have shape {what} or (H, W), "
                         f"got shape {tuple(labels.shape)}")
    if labels.shape[1] == 0 or labels.shape[2] == 0:
        raise ValueError(f"{name} is empty: height and width must be positive, "
                         f"got shape {tuple(labels.shape)}")
    return labels.to(torch.int64)


def check_seed_map(seeds, expected: tuple, what: str) -> None:
    """``seeds`` is an integer tensor of shape ``expected`` (``what`` names what it must
    match)."""
    if not isinstance(seeds, Tensor) or seeds.is_floating_point() or seeds.dtype == torch.bool:
        raise TypeError(f"seeds must be an int64 tensor of shape {expected} (255 = unknown), "
                        f"got {_describe(seeds)}")
    if tuple(seeds.shape) != tuple(expected):
        raise ValueError(f"seeds must have shape {tuple(expected)} to match {what}, got "
                         f"{tuple(seeds.shape)}")


def check_seed_values(name: str, seeds: Tensor, num_classes: int | None,
                      ignore_index: int = 255) -> None:
    """Seed values are class ids in [0, num_classes) or ``ignore_index`` (unknown)."""
    known = seeds[seeds != ignore_index]
    if known.numel() == 0:
        return
    low, high = int(known.min()), int(known.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        bad = low if low < 0 else high
        raise ValueError(f"{name} must hold class ids in {bound} or {ignore_index} (unknown), "
                         f"got the value {bad}")


def same_size(name_a: str, a: Tensor, name_b: str, b: Tensor, *, dims: int = 3) -> None:
    """The last ``dims`` dimensions (batch and image size for label maps) agree."""
    if tuple(a.shape[-dims:]) != tuple(b.shape[-dims:]) or a.dim() < dims or b.dim() < dims:
        raise ValueError(f"{name_a} and {name_b} must have the same batch and image size, got "
                         f"shapes {tuple(a.shape)} and {tuple(b.shape)}")


def _as_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def check_class(name: str, cls, num_classes: int | None, *, lowest: int) -> int:
    cls = _as_int(name, cls)
    if cls == 255:
        # drawn into a seed map, the class would silently become "unknown"
        raise ValueError(f"{name} must not be 255, the value of unknown pixels in seed maps")
    if cls < lowest or (num_classes is not None and cls >= num_classes):
        upper = f" and < num_classes={num_classes}" if num_classes is not None else ""
        kind = "a foreground class id" if lowest == 1 else "a class id"
        raise ValueError(f"{name} must be {kind} >= {lowest}{upper}, got {cls}")
    return cls


def _per_image(name: str, items, batch: int, kind: str) -> list:
    """One list per image; a flat list of dicts is accepted for a batch of one."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a list with one list of {kind} per image, "
                        f"got {type(items).__name__}")
    if batch == 1 and (len(items) == 0 or isinstance(items[0], dict)):
        items = [items]
    if len(items) != batch:
        raise ValueError(f"{name} must hold one list of {kind} per image ({batch} images), "
                         f"got {len(items)} lists")
    for b, entries in enumerate(items):
        if not isinstance(entries, (list, tuple)):
            raise TypeError(f"{name}[{b}] must be a list of {kind}, got {type(entries).__name__}")
    return [list(entries) for entries in items]


def check_boxes(boxes, batch: int, height: int, width: int, *, name: str = "boxes",
                num_classes: int | None = None) -> list[list[tuple[int, int, int, int, int]]]:
    """Boxes ``{"cls": c, "box": [x0, y0, x1, y1]}`` (inclusive pixel bounds, c >= 1) per image.

    Returns, per image, tuples ``(cls, x0, y0, x1, y1)``."""
    checked = []
    for b, entries in enumerate(_per_image(name, boxes, batch, "box dicts")):
        image_boxes = []
        for i, entry in enumerate(entries):
            where = f"{name}[{b}][{i}]"
            if not isinstance(entry, dict) or "cls" not in entry or "box" not in entry:
                raise TypeError(f"{where} must be a dict {{'cls': c, 'box': [x0, y0, x1, y1]}}, "
                                f"got {entry!r}")
            cls = check_class(f"{where}['cls']", entry["cls"], num_classes, lowest=1)
            box = entry["box"]
            if isinstance(box, (Tensor, np.ndarray)):
                box = box.tolist()
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                raise ValueError(f"{where}['box'] must be [x0, y0, x1, y1], got {box!r}")
            x0, y0, x1, y1 = (_as_int(f"{where}['box']", v) for v in box)
            if x1 < x0 or y1 < y0:
                raise ValueError(f"{where}['box'] is empty: expected x0 <= x1 and y0 <= y1 "
                                 f"(inclusive bounds), got {[x0, y0, x1, y1]}")
            if x0 < 0 or y0 < 0 or x1 >= width or y1 >= height:
                raise ValueError(f"{where}['box'] lies outside the {height}x{width} (HxW) image: "
                                 f"expected 0 <= x0 <= x1 <= {width - 1} and "
                                 f"0 <= y0 <= y1 <= {height - 1}, got {[x0, y0, x1, y1]}")
            image_boxes.append((cls, x0, y0, x1, y1))
        checked.append(image_boxes)
    return checked


def _check_xy(where: str, x, y, height: int, width: int) -> tuple[float, float]:
    """A position in pixel coordinates inside a ``height`` x ``width`` image."""
    if not all(isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, bool) for v in (x, y)):
        raise TypeError(f"{where} coordinates must be numbers, got x={x!r}, y={y!r}")
    if not (-0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5):
        raise ValueError(f"{where} lies outside the {height}x{width} (HxW) image: "
                         f"expected -0.5 <= x < {width - 0.5} and "
                         f"-0.5 <= y < {height - 0.5}, got x={x}, y={y}")
    return float(x), float(y)


def check_points(points, batch: int, height: int, width: int, *, name: str = "points",
                 num_classes: int | None = None) -> list[list[tuple[float, float, int]]]:
    """Points ``{"x": x, "y": y, "cls": c}`` (pixel coordinates, c >= 0) per image.

    Returns, per image, tuples ``(x, y, cls)``."""
    checked = []
    for b, entries in enumerate(_per_image(name, points, batch, "point dicts")):
        image_points = []
        for i, entry in enumerate(entries):
            where = f"{name}[{b}][{i}]"
            if not isinstance(entry, dict) or not {"x", "y", "cls"} <= entry.keys():
                raise TypeError(f"{where} must be a dict {{'x': x, 'y': y, 'cls': c}}, "
                                f"got {entry!r}")
            cls = check_class(f"{where}['cls']", entry["cls"], num_classes, lowest=0)
            image_points.append((*_check_xy(where, entry["x"], entry["y"], height, width),
                                 cls))
        checked.append(image_points)
    return checked


def check_scribbles(scribbles, batch: int, height: int, width: int, *,
                    name: str = "scribbles", num_classes: int | None = None
                    ) -> list[list[tuple[int, list[tuple[float, float]]]]]:
    """Scribbles ``{"cls": c, "points": [[x, y], ...]}`` (a polyline in pixel coordinates,
    c >= 0, class 0 = background) per image.

    Returns, per image, tuples ``(cls, [(x, y), ...])``."""
    checked = []
    for b, entries in enumerate(_per_image(name, scribbles, batch, "scribble dicts")):
        image_scribbles = []
        for i, entry in enumerate(entries):
            where = f"{name}[{b}][{i}]"
            if not isinstance(entry, dict) or not {"cls", "points"} <= entry.keys():
                raise TypeError(f"{where} must be a dict {{'cls': c, 'points': [[x, y], ...]}}, "
                                f"got {entry!r}")
            cls = check_class(f"{where}['cls']", entry["cls"], num_classes, lowest=0)
            line = entry["points"]
            if isinstance(line, (Tensor, np.ndarray)):
                line = line.tolist()
            if not isinstance(line, (list, tuple)) or not line:
                raise ValueError(f"{where}['points'] must be a non-empty list of [x, y], "
                                 f"got {line!r}")
            vertices = []
            for k, vertex in enumerate(line):
                if not isinstance(vertex, (list, tuple)) or len(vertex) != 2:
                    raise TypeError(f"{where}['points'][{k}] must be [x, y], got {vertex!r}")
                vertices.append(_check_xy(f"{where}['points'][{k}]", *vertex, height, width))
            image_scribbles.append((cls, vertices))
        checked.append(image_scribbles)
    return checked
