import pytest
import torch

from graphseg import opposite_offsets, window_offsets


@pytest.mark.parametrize(
    ("radius", "shape", "count"),
    [(5, "disk", 80), (4, "disk", 48), (3, "disk", 28), (5, "psa", 68), (5, "square", 120),
     (1, "square", 8), (1, "disk", 4)],
)
def test_counts(radius, shape, count):
    offsets = window_offsets(radius, shape)
    assert offsets.shape == (count, 2)
    assert offsets.dtype == torch.int64
    assert len(set(map(tuple, offsets.tolist()))) == count
    assert not (offsets == 0).all(1).any()


def test_rings_default_and_custom():
    assert window_offsets(shape="rings").shape == (48, 2)
    rings = window_offsets(shape="rings", dilations=[2, 3])
    assert rings.shape == (16, 2)
    assert set(rings.abs().max(1).values.tolist()) == {2, 3}


def test_disk_definition():
    offsets = window_offsets(4, "disk")
    assert (offsets.square().sum(1) <= 16).all()
    assert [4, 0] in offsets.tolist() and [3, 3] not in offsets.tolist()


def test_psa_half_disk_then_negations():
    offsets = window_offsets(5, "psa")
    half, rest = offsets[:34], offsets[34:]
    assert torch.equal(rest, -half)
    assert half[:4].tolist() == [[0, 1], [0, 2], [0, 3], [0, 4]]
    assert (half[4:, 0] >= 1).all() and (half.square().sum(1) < 25).all()


@pytest.mark.parametrize("shape", ["disk", "psa", "square"])
def test_closed_under_negation(shape):
    offsets = window_offsets(4, shape)
    opposite = opposite_offsets(offsets)
    assert (opposite >= 0).all()
    assert torch.equal(offsets[opposite], -offsets)


def test_opposite_missing_is_minus_one():
    opposite = opposite_offsets(torch.tensor([[0, 1], [1, 0], [0, -1]]))
    assert opposite.tolist() == [2, -1, 0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"radius": 0}, ValueError, "radius must be > 0"),
        ({"radius": -2}, ValueError, "radius"),
        ({"radius": 2.5}, TypeError, "radius must be a whole number"),
        ({"radius": None}, ValueError, "radius is required"),
        ({"radius": 3, "shape": "hexagon"}, ValueError, "shape must be one of"),
        ({"radius": 1, "shape": "psa"}, ValueError, "radius must be >= 2"),
        ({"radius": 3, "shape": "rings"}, ValueError, "radius must be None"),
        ({"shape": "rings", "dilations": []}, ValueError, "at least one"),
        ({"shape": "rings", "dilations": [1, 1]}, ValueError, "distinct"),
        ({"shape": "rings", "dilations": [0]}, ValueError, "dilations must be > 0"),
        ({"radius": 3, "dilations": [1]}, ValueError, "dilations apply to shape='rings'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        window_offsets(**kwargs)
