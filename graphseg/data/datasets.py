"""Readers of segmentation data sets with weak labels, as torch Datasets.

A sample is a dict: ``name``, ``image`` ``(3, H, W)`` float32 in [0, 1], ``mask`` ``(H, W)``
int64 (255 = void; left out with ``with_mask=False``) and one entry per weak-label kind asked
for in ``weak`` — nothing else. A reader keeps only the asked kinds in memory, so a run with
``weak="points"`` cannot see boxes or tags.
"""

from __future__ import annotations

import copy
import json
import os
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from graphseg import _checks

__all__ = [
    "IMAGE_SUFFIXES",
    "LabelMaps",
    "PropagationFolder",
    "VOC_CLASSES",
    "WEAK_KINDS",
    "SegmentationFolder",
    "VOCSegmentation",
    "collate_samples",
    "read_cams",
    "read_image",
    "read_label_map",
]

WEAK_KINDS = ("tags", "boxes", "points", "scribbles")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _weak_kinds(weak) -> tuple[str, ...]:
    if weak is None:
        return ()
    kinds = (weak,) if isinstance(weak, str) else tuple(weak)
    for kind in kinds:
        _checks.check_choice("weak", kind, WEAK_KINDS)
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"weak must not repeat a kind, got {list(kinds)}")
    return kinds


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file as a ``(3, H, W)`` float32 tensor in [0, 1] (RGB).

    Read with Pillow and converted as every image is (:data:`graphseg._checks.IMAGE_FORMS`):
    16-bit files keep their depth (divided by 65535), alpha is dropped, grey and palette images
    become RGB."""
    from PIL import Image

    with Image.open(path) as handle:
        return _checks.as_image_batch(handle, f"image {os.fspath(path)}", channels=3)[0]


def read_label_map(path: str | os.PathLike, size: tuple[int, int] | None = None, *,
                   what: str = "mask", reference: str = "its image") -> Tensor:
    """A PNG of uint8 class ids (palette or grey) as an ``(H, W)`` int64 tensor; ``size``
    (H, W), when given, must match. ``what`` and ``reference`` name the map and the source of
    ``size`` in error messages (e.g. ``"prediction"``, ``"its ground truth"``)."""
    from PIL import Image

    with Image.open(path) as handle:
        if handle.mode not in ("P", "L"):
            raise ValueError(f"{what} {path} must be a palette (P) or grey (L) PNG of class ids, "
                             f"got mode {handle.mode}")
        array = np.asarray(handle)
    if size is not None and array.shape != tuple(size):
        raise ValueError(f"{what} {path} has size {array.shape[0]}x{array.shape[1]} but "
                         f"{reference} has size {size[0]}x{size[1]} (HxW)")
    return torch.from_numpy(array.astype(np.int64))


class LabelMaps(Mapping):
    """The label maps ``FOLDER/NAME.png`` of a folder (uint8 class ids, 255 = unknown, as
    ``graphseg segment --out`` writes them) by image name, each read when it is looked up
    (:func:`read_label_map`): pseudo-labels for
    :func:`graphseg.pipelines.train_affinity_dataset`'s ``targets``.

    Args:
        folder: the folder of PNGs.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"label map folder {self.folder} is not a directory")

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.png"

    def __getitem__(self, name: str) -> Tensor:
        path = self._path(name)
        if not path.is_file():
            raise KeyError(name)
        return read_label_map(path, what="label map")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._path(name).is_file()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(path.stem for path in self.folder.glob("*.png")))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.png"))


def image_files(folder: Path) -> dict[str, Path | list[Path]]:
    """The image files of a folder by name (stem); a name that two files share (``a.png`` and
    ``a.jpg``) maps to the list of both, which :func:`image_file` refuses."""
    files: dict[str, Path | list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            known = files.get(path.stem)
            files[path.stem] = path if known is None else [
                *(known if isinstance(known, list) else [known]), path]
    return files


def image_file(files: dict, name: str) -> Path:
    """The file of ``name`` in :func:`image_files`, refusing an ambiguous name."""
    path = files[name]
    if isinstance(path, list):
        raise ValueError(f"image name {name!r} is ambiguous: "
                         f"{', '.join(p.name for p in path)} share it; keep one of them")
    return path


def _read_npy(path: str | os.PathLike, what: str, shape: str,
              ndims: tuple[int, ...] | None = None) -> Tensor:
    """A float ``.npy`` array with ``ndims`` dimensions (default: those of ``shape``) as
    float32 (no pickles loaded)."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{what} {path} is not a plain .npy array: {error}") from error
    ndims = (shape.count(",") + 1,) if ndims is None else ndims
    if array.ndim not in ndims or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} {path} must be a float {shape} array, got dtype {array.dtype} "
                         f"and shape {array.shape}")
    return torch.from_numpy(array.astype(np.float32))


def read_cams(path: str | os.PathLike) -> Tensor:
    """A ``.npy`` file of class activation maps as a ``(C, h, w)`` float32 tensor (no pickled
    objects are loaded)."""
    return _read_npy(path, "cams", "(C, h, w)")


class _WeakLabelDataset(Dataset, ABC):
    """Shared sample assembly; subclasses give the paths and the weak labels."""

    num_classes: int

    def __init__(self, names: list[str], weak, with_mask: bool) -> None:
        self.names = names
        self.weak = _weak_kinds(weak)
        self.with_mask = bool(with_mask)

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def _image_path(self, name: str) -> Path:
        """The image file of ``name``."""

    @abstractmethod
    def _mask_path(self, name: str) -> Path:
        """The ground-truth mask file of ``name``."""

    @abstractmethod
    def _weak_labels(self, name: str, height: int, width: int) -> dict:
        """The asked weak labels of ``name``, checked against the image size."""

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        name = self.names[index]
        image = read_image(self._image_path(name))
        height, width = image.shape[1:]
        sample = {"name": name, "image": image}
        if self.with_mask:
            sample["mask"] = read_label_map(self._mask_path(name), (height, width))
        sample.update(self._weak_labels(name, height, width))
        return sample

    def _checked(self, name: str, labels: dict, height: int, width: int) -> dict:
        """Validates boxes, points and scribbles against the image size and the class count."""
        if "boxes" in labels:
            _checks.check_boxes(labels["boxes"], 1, height, width, name=f"{name} boxes",
                                num_classes=self.num_classes)
        if "points" in labels:
            _checks.check_points(labels["points"], 1, height, width, name=f"{name} points",
                                 num_classes=self.num_classes)
        if "scribbles" in labels:
            _checks.check_scribbles(labels["scribbles"], 1, height, width,
                                    name=f"{name} scribbles", num_classes=self.num_classes)
        if "tags" in labels:
            for cls in labels["tags"]:
                _checks.check_class(f"{name} tags", cls, self.num_classes, lowest=1)
        return labels

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(images={len(self)}, classes={self.num_classes}, "
                f"weak={list(self.weak)}, with_mask={self.with_mask})")


class SegmentationFolder(_WeakLabelDataset):
    """Reader of the shared evaluation layout::

        ROOT/images/NAME.png|jpg   RGB image
        ROOT/masks/NAME.png        uint8 class ids, 255 = void
        ROOT/annotations.json      {"num_classes": N, "images": {NAME: {"classes": [...],
                                    "boxes": [{"cls", "box"}], "points": [{"x", "y", "cls"}],
                                    "scribbles": [{"cls", "points": [[x, y], ...]}]}}}

    Weak kinds: ``"tags"`` (the ``classes`` list, foreground ids), ``"boxes"`` (inclusive
    [x0, y0, x1, y1]), ``"points"`` (pixel coordinates, class 0 = background) and
    ``"scribbles"`` (polylines in pixel coordinates, class 0 = background).

    Args:
        root: the set's folder, e.g. ``shared/data/grabcut`` (None when the three paths below
            are given).
        weak: one kind, a list of kinds, or None for no weak labels.
        with_mask: include the ground-truth mask (evaluation); False keeps it unread.
        names: restrict to these images, in this order (default: all, sorted).
        images, annotations, masks: the image folder, the annotation file and the mask folder,
            when they are not ``root``'s ``images/``, ``annotations.json`` and ``masks/``.
        cams: a folder of class activation maps ``NAME.npy`` (float ``(C, h, w)``, channel c-1
            = foreground class c), read into each sample's ``"cams"``: needed by
            ``weak="tags"``, read beside ``"boxes"`` (confident box seeds M_g) and beside
            ``"points"`` / ``"scribbles"`` (the affinity CNN's seeds, thesis §3.6.1); an image
            without its file fails when it is read.

    Example:
        >>> points = SegmentationFolder("shared/data/voc14", weak="points")  # doctest: +SKIP
        >>> sorted(points[0])  # doctest: +SKIP
        ['image', 'mask', 'name', 'points']
    """

    _KEYS = {"tags": "classes", "boxes": "boxes", "points": "points", "scribbles": "scribbles"}

    def __init__(self, root: str | os.PathLike | None = None, *, weak=None,
                 with_mask: bool = True, names: Sequence[str] | None = None,
                 images: str | os.PathLike | None = None,
                 annotations: str | os.PathLike | None = None,
                 masks: str | os.PathLike | None = None,
                 cams: str | os.PathLike | None = None) -> None:
        if root is None and (images is None or annotations is None
                             or (with_mask and masks is None)):
            raise ValueError("root is required unless images, annotations and (with_mask) "
                             "masks are all given")
        self.root = None if root is None else Path(root)
        self._cam_dir = None if cams is None else Path(cams)
        if self._cam_dir is not None and not self._cam_dir.is_dir():
            raise FileNotFoundError(f"cams folder {self._cam_dir} does not exist")
        annotation_file = Path(annotations) if annotations else self.root / "annotations.json"
        self._mask_dir = Path(masks) if masks else (self.root / "masks" if self.root else None)
        if not annotation_file.is_file():
            raise FileNotFoundError(f"annotation file {annotation_file} does not exist (root "
                                    "must hold annotations.json, images/ and masks/)")
        with open(annotation_file) as handle:
            annotations = json.load(handle)
        entries = self._check_annotations(annotation_file, annotations)
        self.num_classes = annotations["num_classes"]
        available = sorted(entries) if names is None else list(names)
        unknown = [n for n in available if n not in entries]
        if unknown:
            raise ValueError(f"names must be images of {annotation_file}, got unknown "
                             f"{unknown[:5]}")
        super().__init__(available, weak, with_mask)
        for kind in self.weak:
            if not any(self._KEYS[kind] in entries[n] for n in available):
                raise ValueError(f"weak={kind!r} but no image of {annotation_file} has "
                                 f"{self._KEYS[kind]!r} labels")
        # only the asked kinds are kept: later code cannot reach the others
        self._labels = {n: {kind: copy.deepcopy(entries[n].get(self._KEYS[kind], []))
                            for kind in self.weak} for n in available}
        image_dir = Path(images) if images else self.root / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir} does not exist")
        self._files = image_files(image_dir)
        missing = [n for n in available if n not in self._files]
        if missing:
            raise FileNotFoundError(f"{image_dir} lacks the images {missing[:5]} listed in "
                                    f"{annotation_file}")

    @staticmethod
    def _check_annotations(annotation_file: Path, annotations) -> dict:
        """The ``images`` entries of a parsed annotation file, after checking its layout."""
        if not isinstance(annotations, dict):
            raise ValueError(f"{annotation_file} must hold a JSON object with 'num_classes' and "
                             f"'images' keys, got {type(annotations).__name__}")
        if "images" not in annotations or "num_classes" not in annotations:
            raise ValueError(f"{annotation_file} must have 'num_classes' and 'images' keys, "
                             f"got {sorted(annotations)}")
        num_classes = annotations["num_classes"]
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{annotation_file}: 'num_classes' must be a whole number >= 1, "
                             f"got {num_classes!r}")
        entries = annotations["images"]
        if not isinstance(entries, dict):
            raise ValueError(f"{annotation_file}: 'images' must be an object mapping image names "
                             f"to their labels, got {type(entries).__name__}")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{annotation_file}: images[{name!r}] must be an object of "
                                 f"weak labels, got {entry!r}")
        return entries

    def _image_path(self, name: str) -> Path:
        return image_file(self._files, name)

    def _mask_path(self, name: str) -> Path:
        return self._mask_dir / f"{name}.png"

    def _weak_labels(self, name: str, height: int, width: int) -> dict:
        labels = self._checked(name, copy.deepcopy(self._labels[name]), height, width)
        if self._cam_dir is not None:
            labels["cams"] = read_cams(self._cam_dir / f"{name}.npy")
        return labels


class VOCSegmentation(_WeakLabelDataset):
    """Reader of the PASCAL VOC layout::

        ROOT/JPEGImages/NAME.jpg
        ROOT/SegmentationClass/NAME.png        palette PNG, 255 = void
        ROOT/Annotations/NAME.xml              objects: name, bndbox (1-based, inclusive)
        ROOT/ImageSets/Segmentation/SPLIT.txt  one name per line

    Weak kinds: ``"tags"`` (the distinct object classes of the XML) and ``"boxes"`` (converted
    to 0-based inclusive [x0, y0, x1, y1]). VOC has no point labels.

    Args:
        root: the VOC2012 folder (or a VOCdevkit holding VOC2012).
        split: the ImageSets/Segmentation list to read (``train``, ``val``, ``trainval``...).
        weak: ``"tags"``, ``"boxes"``, both, or None.
        with_mask: include SegmentationClass masks.
        skip_difficult: drop objects flagged difficult from tags and boxes.
    """

    num_classes = len(VOC_CLASSES)

    def __init__(self, root: str | os.PathLike, *, split: str = "train", weak=None,
                 with_mask: bool = True, skip_difficult: bool = False) -> None:
        root = Path(root)
        if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
            root = root / "VOC2012"
        self.root = root
        if not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"root must be a PASCAL VOC folder with JPEGImages/, got "
                                    f"{root}")
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"split {split!r} has no list: {listing} does not exist")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        super().__init__(names, weak, with_mask)
        for kind in ("points", "scribbles"):
            if kind in self.weak:
                raise ValueError(f"weak={kind!r} is not available in the PASCAL VOC layout (no "
                                 f"{kind[:-1]} labels); use 'tags' or 'boxes'")
        self.split = split
        self.skip_difficult = bool(skip_difficult)

    def _image_path(self, name: str) -> Path:
        return self.root / "JPEGImages" / f"{name}.jpg"

    def _mask_path(self, name: str) -> Path:
        return self.root / "SegmentationClass" / f"{name}.png"

    def _objects(self, name: str) -> list[tuple[int, list[int]]]:
        path = self.root / "Annotations" / f"{name}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"weak={list(self.weak)} needs {path}, which does not exist")
        objects = []
        for node in ET.parse(path).getroot().iter("object"):
            label = (node.findtext("name") or "").strip()
            if label not in VOC_CLASSES[1:]:
                raise ValueError(f"{path}: unknown class {label!r}; expected one of "
                                 f"{list(VOC_CLASSES[1:])}")
            if self.skip_difficult and (node.findtext("difficult") or "0").strip() == "1":
                continue
            box = node.find("bndbox")
            if box is None:
                raise ValueError(f"{path}: object {label!r} has no bndbox")
            # VOC bounds are 1-based and inclusive
            bounds = [round(float(box.findtext(key))) - 1
                      for key in ("xmin", "ymin", "xmax", "ymax")]
            objects.append((VOC_CLASSES.index(label), bounds))
        return objects

    def _weak_labels(self, name: str, height: int, width: int) -> dict:
        if not self.weak:
            return {}
        objects = self._objects(name)
        labels = {}
        if "tags" in self.weak:
            labels["tags"] = sorted({cls for cls, _ in objects})
        if "boxes" in self.weak:
            labels["boxes"] = [{"cls": cls, "box": box} for cls, box in objects]
        return self._checked(name, labels, height, width)


class PropagationFolder(Dataset):
    """The images of a folder, each with its seed map, its CAMs or its boundary map from
    folders beside it (what ``graphseg propagate`` reads)::

        IMAGES/NAME.png|jpg       RGB image
        SEEDS/NAME.png            uint8 class ids, 255 = unknown          -> sample["seeds"]
        CAMS/NAME.npy             float (C, h, w), channel c-1 = class c  -> sample["cams"]
        BOUNDARIES/NAME.npy       float (h, w) in [0, 1] (IRN)            -> sample["boundary"]
        ATTENTION/NAME.npy        float (h, w, h, w) / (heads, h, w, h, w) token attention,
                                  or (D, h, w) token features (UniA)      -> sample["attention"]

    A sample holds ``name``, ``image`` ``(3, H, W)`` float32 in [0, 1] and the entries of the
    folders given; an image whose file is missing or invalid fails when it is read.

    Args:
        images: the image folder.
        seeds, cams, boundaries, attention: the folders of the per-image inputs (None: not
            read).
        names: restrict to these images, in this order (default: every image, sorted).
    """

    def __init__(self, images: str | os.PathLike, *, seeds: str | os.PathLike | None = None,
                 cams: str | os.PathLike | None = None,
                 boundaries: str | os.PathLike | None = None,
                 attention: str | os.PathLike | None = None,
                 names: Sequence[str] | None = None) -> None:
        image_dir = Path(images)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"images folder {image_dir} does not exist")
        self._folders = {}
        for key, folder in (("seeds", seeds), ("cams", cams), ("boundary", boundaries),
                            ("attention", attention)):
            if folder is not None:
                if not Path(folder).is_dir():
                    raise FileNotFoundError(f"{key} folder {folder} does not exist")
                self._folders[key] = Path(folder)
        self._files = image_files(image_dir)
        self.names = sorted(self._files) if names is None else list(names)
        unknown = [n for n in self.names if n not in self._files]
        if unknown:
            raise ValueError(f"names must be images of {image_dir}, got unknown {unknown[:5]}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        name = self.names[index]
        image = read_image(image_file(self._files, name))
        sample = {"name": name, "image": image}
        if "seeds" in self._folders:
            sample["seeds"] = read_label_map(self._folders["seeds"] / f"{name}.png",
                                             tuple(image.shape[1:]), what="seed map")
        if "cams" in self._folders:
            sample["cams"] = read_cams(self._folders["cams"] / f"{name}.npy")
        if "boundary" in self._folders:
            sample["boundary"] = _read_npy(self._folders["boundary"] / f"{name}.npy",
                                           "boundary", "(h, w)")
        if "attention" in self._folders:
            sample["attention"] = _read_npy(self._folders["attention"] / f"{name}.npy",
                                            "attention",
                                            "(h, w, h, w), (heads, h, w, h, w) or (D, h, w)",
                                            ndims=(3, 4, 5))
        return sample

    def __repr__(self) -> str:
        return f"PropagationFolder(images={len(self)}, inputs={sorted(self._folders)})"


def collate_samples(samples: Sequence[dict]) -> dict:
    """Batches samples for a DataLoader: images ``(B, 3, H, W)`` and masks ``(B, H, W)`` are
    stacked (all images must share one size), names and weak labels become per-image lists (the
    format of :mod:`graphseg.seeds`)."""
    if not samples:
        raise ValueError("samples must not be empty")
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"images of one batch must share a size, got {sorted(sizes)}; use "
                         "batch_size=1 or resize them")
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    return batch
