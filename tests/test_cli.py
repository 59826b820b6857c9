import os
import subprocess
import sys

import pytest

from graphseg._io import atomic_path
from graphseg.cli import main


def test_demo_writes_figure(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nodes 262,144" in out and "edges 20,793,680" in out
    assert "scribbles propagated" in out and "reaching 100% of the pixels" in out
    for name in ("pixel_graph.png", "propagation.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixel_graph.png", "propagation.png"]


def test_demo_bad_radius_is_reported(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--radius", "0"]) == 2
    assert "radius must be > 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "graphseg", "demo", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--out" in result.stdout


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.png"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")
    assert not list(tmp_path.iterdir())
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]
