"""Affinity pair labels (Eq. 3.6-3.7) against a brute-force loop over pixel pairs, and the band
of unknown pixels along the borders of pseudo-labels."""

import pytest
import torch

from graphseg import pixel_graph, window_offsets
from graphseg.seeds import border_band, pair_labels

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


# --- border_band --------------------------------------------------------------------------

def test_border_band_unknowns_the_pixels_near_another_label_written_out():
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1],
                           [0, 0, 0, 0, 1, 1, 1, 1],
                           [2, 2, 2, 2, 2, 2, 2, 2]])
    banded = border_band(labels, 1)
    # pixel (y, x) is unknown iff its 3x3 square (cut at the image's edges) holds two values
    expected = labels.clone()
    for y in range(3):
        for x in range(8):
            square = labels[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
            if len(square.unique()) > 1:
                expected[y, x] = 255
    assert torch.equal(banded, expected)
    assert banded[0, 0] == 0 and banded[0, 7] == 1 and banded[0, 3] == 255
    # a batch is banded image by image; band 0 leaves the labels as they are
    batch = torch.stack([labels, labels.flip(1)])
    assert torch.equal(border_band(batch, 1), torch.stack([expected, expected.flip(1)]))
    assert torch.equal(border_band(labels, 0), labels)


def test_border_band_widens_with_band_and_grows_unknown_regions():
    labels = torch.zeros(1, 9, 9, dtype=torch.int64)
    labels[0, 4, 4] = 255
    for band in (1, 2, 3):
        banded = border_band(labels, band)[0]
        inside = torch.zeros(9, 9, dtype=torch.bool)
        inside[4 - band:5 + band, 4 - band:5 + band] = True
        assert torch.equal(banded == 255, inside)
        assert (banded[~inside] == 0).all()


def test_border_band_rejects_bad_input():
    with pytest.raises(ValueError, match="band"):
        border_band(torch.zeros(3, 3, dtype=torch.int64), -1)
    with pytest.raises(ValueError, match="labels must be an integer"):
        border_band(torch.zeros(3, 3), 1)
    with pytest.raises(ValueError, match="labels must be an integer"):
        border_band(torch.zeros(1, 1, 3, 3, dtype=torch.int64), 1)
