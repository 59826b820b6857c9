"""Input checks shared by the public functions. Each raises ``TypeError`` or ``ValueError`` with a
message naming the argument, what was expected and what was given; internals trust their inputs."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _describe(value) -> str:
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def check_finite(name: str, tensor: Tensor) -> None:
    if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
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


def as_image_batch(image, name: str = "image", *, channels: int | None = None) -> Tensor:
    """Converts an image to a ``(B, C, H, W)`` float tensor.

    Accepts a ``(B, C, H, W)`` or ``(C, H, W)`` float tensor (values in [0, 1] for colour images),
    and a ``(H, W, 3)`` / ``(H, W)`` uint8 numpy array or tensor, which is divided by 255.
    ``channels`` fixes the channel count when given.
    """
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            if image.ndim == 2:
                image = image[:, :, None]
            if image.ndim != 3:
                raise ValueError(f"{name} as a uint8 array must have shape (H, W, 3) or (H, W), "
                                 f"got shape {image.shape}")
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        elif np.issubdtype(image.dtype, np.floating):
            image = torch.from_numpy(np.ascontiguousarray(image))
        else:
            raise TypeError(f"{name} must be a uint8 (H, W, 3) array or a float (C, H, W) "
                            f"array/tensor, got {_describe(image)}")
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {_describe(image)}")
    if image.dtype == torch.uint8:
        if image.dim() == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3):
            image = image.permute(2, 0, 1)
        image = image.float() / 255.0
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1] "
                        f"(or uint8), got dtype {image.dtype}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), (C, H, W) or (H, W, 3), "
                         f"got shape {tuple(image.shape)}")
    if channels is not None and image.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(image.shape)}")
    return check_tensor4d(name, image)


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


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be a {'whole number' if integer else 'number'}, "
                        f"got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


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
