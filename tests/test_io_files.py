"""graphseg._io: label PNGs that never wrap, outputs that resume trusts only when whole, the
temporaries of killed runs, checked output paths and state files that are refused clearly."""

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from graphseg._io import (
    PNG_CLASSES,
    atomic_path,
    check_png_classes,
    load_state,
    output_file,
    output_folder,
    readable,
    remove_temporaries,
    write_label_png,
)


def test_label_pngs_hold_0_to_254_and_refuse_the_rest(tmp_path):
    labels = torch.tensor([[0, 254], [13, 1]])
    write_label_png(tmp_path / "ok.png", labels)
    with Image.open(tmp_path / "ok.png") as image:
        assert np.array_equal(np.asarray(image), labels.numpy())
    # argmax 280 used to be written as 24 (uint8 wrap) with exit 0
    for value in (255, 280, -1):
        with pytest.raises(ValueError, match=f"holds class id {value}.*0–254"):
            write_label_png(tmp_path / "bad.png", torch.tensor([[0, value]]))
    assert sorted(os.listdir(tmp_path)) == ["ok.png"]
    check_png_classes(PNG_CLASSES)
    with pytest.raises(ValueError, match="num_classes is 256.*at most 255 classes"):
        check_png_classes(256)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(buffer, "PNG")
    return buffer.getvalue()


def test_readable_trusts_only_whole_files(tmp_path):
    whole = _png_bytes()
    (tmp_path / "whole.png").write_bytes(whole)
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    np.save(tmp_path / "whole.npy", np.zeros((2, 30, 30), np.float32))
    data = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(data[: len(data) - 100])
    torch.save(torch.zeros(2, 3), tmp_path / "whole.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a tensor file")
    for name in ("whole.png", "whole.npy", "whole.pt"):
        assert readable(tmp_path / name), name
    for name in ("truncated.png", "empty.png", "truncated.npy", "garbage.pt", "missing.png"):
        assert not readable(tmp_path / name), name


def test_remove_temporaries_touches_only_those_of_the_given_paths(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "a.png") as temporary:
        assert temporary.name.startswith(".a.tmp-") and temporary.suffix == ".png"
        raise KeyboardInterrupt  # a Ctrl-C during the write leaves nothing
    assert os.listdir(tmp_path) == []
    stale = [".a.tmp-k3j2h1g0.png", ".a.tmp-zzzzzzzz.npy", ".a.b.tmp-abcdefgh.png"]
    for name in [*stale, ".a.png", "a.png", ".other.tmp-abcdefgh.png"]:
        (tmp_path / name).write_bytes(b"x")
    assert remove_temporaries([tmp_path / "a.png", tmp_path / "a.npy",
                               tmp_path / "a.b.png"]) == 3
    assert sorted(os.listdir(tmp_path)) == [".a.png", ".other.tmp-abcdefgh.png", "a.png"]
    assert remove_temporaries([tmp_path / "missing" / "a.png"]) == 0


def test_output_paths_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    assert output_folder(tmp_path / "new" / "deeper", "out").is_dir()
    with pytest.raises(NotADirectoryError, match="figures .*file is a file, not a folder"):
        output_folder(tmp_path / "file", "figures")
    with pytest.raises(IsADirectoryError, match="--out .* is a folder; give a file name"):
        output_file(tmp_path, "--out")
    with pytest.raises(OSError, match="the folder of --out"):
        output_file(tmp_path / "file" / "model.pt", "--out")
    assert output_file(tmp_path / "sub" / "model.pt", "--out").parent.is_dir()


@pytest.mark.parametrize(("content", "match"), [
    (b"101 plain text\n", "torch.load could not read it"),
    (b"", "torch.load could not read it"),
    (None, "holds a list, not a dict"),
])
def test_load_state_refuses_what_is_not_a_state_dict(tmp_path, content, match):
    path = tmp_path / "file.pt"
    if content is None:
        torch.save([torch.zeros(1)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"file.pt is not a graphseg thing: .*{match}"):
        load_state(path, "graphseg thing")
    with pytest.raises(FileNotFoundError, match="graphseg thing .*missing.pt does not exist"):
        load_state(tmp_path / "missing.pt", "graphseg thing")


@settings(max_examples=50, deadline=None, derandomize=True)
@given(values=st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=12))
def test_any_label_map_is_written_exactly_or_refused(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("png") / "labels.png"
    labels = torch.tensor(values).view(1, -1)
    if min(values) < 0 or max(values) > 254:
        with pytest.raises(ValueError, match="label PNGs hold 0–254"):
            write_label_png(path, labels)
        assert not path.exists()
    else:
        write_label_png(path, labels)
        with Image.open(path) as image:
            assert np.asarray(image).tolist() == [values]
