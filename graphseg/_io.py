"""File output that never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_label_png(path: str | os.PathLike, labels) -> None:
    """Writes an ``(H, W)`` map of class ids (a tensor or array, values 0–255) as a grey uint8
    PNG, atomically."""
    import numpy as np
    from PIL import Image

    array = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
    with atomic_path(path) as temporary:
        Image.fromarray(array.astype(np.uint8)).save(temporary, format="PNG")
