"""Affinity pair labels (Eq. 3.6-3.7) against a brute-force loop over pixel pairs."""

import pytest
import torch

from graphseg import pixel_graph, window_offsets
from graphseg.seeds import pair_labels

U = 255


def brute(seeds, offsets):
    batch, height, width = seeds.shape
    out = {name: torch.zeros(batch, len(offsets), height, width, dtype=torch.bool)
           for name in ("background", "foreground", "negative")}
    for b in range(batch):
        for k, (dy, dx) in enumerate(offsets.tolist()):
            for y in range(height):
                for x in range(width):
                    qy, qx = y + dy, x + dx
                    if not (0 <= qy < height and 0 <= qx < width):
                        continue
                    i, j = int(seeds[b, y, x]), int(seeds[b, qy, qx])
                    if i == U or j == U:
                        continue
                    if i != j:
                        out["negative"][b, k, y, x] = True
                    elif i == 0:
                        out["background"][b, k, y, x] = True
                    else:
                        out["foreground"][b, k, y, x] = True
    return out


@pytest.mark.parametrize(("radius", "shape"), [(2, "disk"), (3, "psa"), (1, "square")])
def test_pair_labels_match_brute_force(radius, shape):
    generator = torch.Generator().manual_seed(radius)
    seeds = torch.randint(0, 4, (2, 6, 7), generator=generator)
    seeds[torch.rand(2, 6, 7, generator=generator) < 0.3] = U
    labels = pair_labels(seeds, radius=radius, shape=shape)
    offsets = window_offsets(radius, shape)
    assert torch.equal(labels.offsets, offsets)
    expected = brute(seeds, offsets)
    for name, mask in expected.items():
        assert torch.equal(getattr(labels, name), mask), name
    assert torch.equal(labels.positive, expected["background"] | expected["foreground"])
    assert not (labels.positive & labels.negative).any()


def test_pair_labels_line_up_with_window_graph():
    seeds = torch.tensor([[[0, 0, 1], [U, 1, 1]]])
    graph = pixel_graph(torch.rand(1, 3, 2, 3), radius=1, shape="square")
    labels = pair_labels(seeds, offsets=graph.offsets)
    assert labels.negative.shape == graph.weight.shape
    right = graph.offsets.tolist().index([0, 1])
    assert labels.background[0, right, 0].tolist() == [True, False, False]
    assert labels.negative[0, right, 0].tolist() == [False, True, False]
    assert labels.foreground[0, right, 1].tolist() == [False, True, False]


def test_pair_labels_bad_seeds():
    with pytest.raises(TypeError, match="seeds must be an integer"):
        pair_labels(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"seeds must hold class ids in >= 0 or 255"):
        pair_labels(torch.full((1, 3, 3), -1))
