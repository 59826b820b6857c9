"""File output that never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMPORARY_MARK = ".tmp-"
"""Between a file's stem and mkstemp's random letters in the name of its temporary file,
``.STEM.tmp-<random letters>.SUFFIX``, so that a run can find the temporaries a killed one left."""


def remove_temporaries(paths) -> int:
    """Removes the temporary files that an interrupted :func:`atomic_path` left beside
    ``paths`` (one listing per folder); returns how many. Only temporaries of these paths are
    touched, so processes writing other files of the same folders are not disturbed."""
    wanted: dict[Path, set[tuple[str, str]]] = {}
    for path in map(Path, paths):
        wanted.setdefault(path.parent, set()).add((f".{path.stem}{TEMPORARY_MARK}", path.suffix))
    removed = 0
    for folder, keys in wanted.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if not entry.name.startswith(".") or TEMPORARY_MARK not in entry.name:
                continue
            head, _, tail = entry.name.rpartition(TEMPORARY_MARK)
            letters, dot, suffix = tail.partition(".")
            if (f"{head}{TEMPORARY_MARK}", dot + suffix) in keys and letters:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def load_state(path: str | os.PathLike, what: str, *,
               map_location: str | object = "cpu") -> dict:
    """A dict of tensors saved with ``torch.save``, read with ``weights_only=True`` (a file
    cannot run code). Whatever the file holds instead (text, a truncated or foreign file, a
    pickled object) is refused with a ``ValueError`` that says it is not ``what`` and why."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises a different type for every kind of bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a {what}: torch.load could not read it "
                         f"({type(error).__name__}: {reason[:200]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a {what}: it holds a {type(state).__name__}, not a "
                         "dict of tensors")
    return state


def output_folder(path: str | os.PathLike, name: str) -> Path:
    """Creates the folder a command writes into (before any work), refusing a path that is a
    file or cannot be created, with the argument's name."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{name} {path} is a file, not a folder") from None
    except OSError as error:
        raise OSError(f"{name} {path} cannot be created: {error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{name} {path} is not writable")
    return path


def output_file(path: str | os.PathLike, name: str) -> Path:
    """Checks, before any work, that a file can be written at ``path``: not a folder, its
    folder creatable and writable."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name} {path} is a folder; give a file name")
    output_folder(path.parent, f"the folder of {name}")
    return path


def readable(path: str | os.PathLike) -> bool:
    """Whether an output file exists and reads back whole: a PNG decodes, a ``.npy`` holds an
    array of its declared size, a ``.pt`` loads (weights only), a ``.json`` parses. Resume
    trusts no other."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as handle:
                handle.load()
        elif path.suffix == ".npy":
            import numpy as np

            np.load(path, mmap_mode="r", allow_pickle=False)
        elif path.suffix == ".pt":
            import torch

            torch.load(path, weights_only=True)
        elif path.suffix == ".json":
            import json

            with open(path, encoding="utf-8") as handle:
                json.load(handle)
        else:
            return path.stat().st_size > 0
    except Exception:  # any decoding failure means: not done, write it again
        return False
    return True


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give under the current umask (mkstemp's
    temporary files are private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is renamed onto ``path`` in one
    step, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}{TEMPORARY_MARK}", suffix=path.suffix,
                                   dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


PNG_CLASSES = 255
"""Class ids a label PNG holds: 0–254 (uint8; 255 marks void or unknown pixels)."""


def check_png_classes(num_classes: int, what: str = "num_classes") -> None:
    """Refuses a class count whose ids do not fit a label PNG, before any work is done."""
    if num_classes > PNG_CLASSES:
        raise ValueError(f"{what} is {num_classes}, but label PNGs hold class ids 0–"
                         f"{PNG_CLASSES - 1} (uint8, {PNG_CLASSES} = void): at most "
                         f"{PNG_CLASSES} classes")


def write_label_png(path: str | os.PathLike, labels) -> None:
    """Writes an ``(H, W)`` map of class ids 0–254 (a tensor or array) as a grey uint8 PNG,
    atomically; any other value is refused, never wrapped."""
    import numpy as np
    from PIL import Image

    array = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
    if array.size and (array.min() < 0 or array.max() >= PNG_CLASSES):
        raise ValueError(f"label map for {os.fspath(path)} holds class id "
                         f"{array.max() if array.max() >= PNG_CLASSES else array.min()}; "
                         f"label PNGs hold 0–{PNG_CLASSES - 1} ({PNG_CLASSES} = void)")
    with atomic_path(path) as temporary:
        Image.fromarray(array.astype(np.uint8)).save(temporary, format="PNG")
