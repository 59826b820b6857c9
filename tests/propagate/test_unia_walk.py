"""UniA's CAM random walk on the Sinkhorn-normalised attention, against the formula written out."""

import math

import pytest
import torch

from graphseg.propagate import unia_random_walk


def _sinkhorn_loops(a, iterations=500):
    n = len(a)
    m = [row[:] for row in a]
    for _ in range(iterations):
        for i in range(n):
            total = sum(m[i])
            m[i] = [v / total for v in m[i]]
        for j in range(n):
            total = sum(m[i][j] for i in range(n))
            for i in range(n):
                m[i][j] /= total
    return m


def _walk_loops(a, cams, steps, alpha):
    """cams: list over classes of lists over the N tokens (already on the grid)."""
    m = _sinkhorn_loops(a)
    n = len(a)
    sym = [[(m[i][j] + m[j][i]) / 2 for j in range(n)] for i in range(n)]
    background = [(1 - max(c[i] for c in cams)) ** alpha for i in range(n)]
    scores = [background] + [list(c) for c in cams]
    for _ in range(steps):
        scores = [[sum(sym[i][j] * s[j] for j in range(n)) for i in range(n)] for s in scores]
    return scores


def test_the_walk_is_the_formula_on_a_tiny_grid():
    gen = torch.Generator().manual_seed(0)
    attention = torch.rand(4, 4, generator=gen, dtype=torch.float64) + 0.1
    cams = torch.rand(2, 2, 2, generator=gen, dtype=torch.float64)  # C = 2 on a 2x2 grid
    out = unia_random_walk(cams[None], attention=attention[None], grid=(2, 2), num_steps=3,
                           alpha=2.0, tol=0.0, num_iter=500)
    expected = _walk_loops(attention.tolist(), [cams[c].flatten().tolist() for c in range(2)],
                           3, 2.0)
    assert out.shape == (1, 3, 2, 2)
    assert torch.allclose(out[0].flatten(1), torch.tensor(expected, dtype=torch.float64),
                          atol=1e-9)


def test_features_give_the_softmax_attention_and_heads_are_averaged():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(1, 5, 2, 3, generator=gen, dtype=torch.float64)
    cams = torch.rand(1, 1, 4, 6, generator=gen, dtype=torch.float64)
    tokens = features.flatten(2)[0].T
    attention = torch.tensor([[math.exp(float(tokens[i] @ tokens[j]) / math.sqrt(5))
                               for j in range(6)] for i in range(6)], dtype=torch.float64)
    attention = attention / attention.sum(1, keepdim=True)
    by_features = unia_random_walk(cams, features=features)
    by_attention = unia_random_walk(cams, attention=attention[None], grid=(2, 3))
    assert by_features.shape == (1, 2, 4, 6)
    assert torch.allclose(by_features, by_attention, atol=1e-10)
    heads = torch.stack([attention, attention.T.contiguous()])[None]
    assert torch.allclose(unia_random_walk(cams, attention=heads, grid=(2, 3)),
                          unia_random_walk(cams, attention=(heads[0].mean(0))[None],
                                           grid=(2, 3)))


def test_zero_steps_return_the_pooled_start_and_bad_inputs_are_refused():
    cams = torch.rand(1, 2, 4, 4)
    attention = torch.rand(1, 4, 4) + 0.1
    start = unia_random_walk(cams, attention=attention, grid=(2, 2), num_steps=0)
    assert start.shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="exactly one"):
        unia_random_walk(cams)
    with pytest.raises(ValueError, match="grid"):
        unia_random_walk(cams, attention=attention)
    with pytest.raises(ValueError, match="holds 6 tokens"):
        unia_random_walk(cams, attention=attention, grid=(2, 3))
    with pytest.raises(ValueError, match="batch size"):
        unia_random_walk(cams, attention=attention.repeat(2, 1, 1), grid=(2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        unia_random_walk(cams, attention=-attention, grid=(2, 2))


def test_propagate_image_runs_unia_from_attention_or_features():
    from graphseg.pipelines import propagate_image

    gen = torch.Generator().manual_seed(2)
    image = torch.rand(3, 16, 16, generator=gen)
    cams = torch.rand(2, 4, 4, generator=gen)
    attention = torch.rand(4, 4, 4, 4, generator=gen) + 0.05
    probs = propagate_image(image, cams=cams, method="unia", attention=attention)
    assert probs.shape == (1, 3, 16, 16)
    assert torch.allclose(probs.sum(1), torch.ones(1, 16, 16), atol=1e-5)
    heads = attention[None].repeat(2, 1, 1, 1, 1)
    assert torch.allclose(propagate_image(image, cams=cams, method="unia", attention=heads),
                          probs, atol=1e-6)
    features = torch.randn(8, 4, 4, generator=gen)
    assert propagate_image(image, cams=cams, method="unia", attention=features,
                           num_steps=1).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="needs attention"):
        propagate_image(image, cams=cams, method="unia")
    with pytest.raises(ValueError, match="give cams, not seeds"):
        propagate_image(image, seeds=torch.zeros(16, 16, dtype=torch.int64), method="unia",
                        attention=attention)
    with pytest.raises(ValueError, match="attention applies to method 'unia'"):
        propagate_image(image, cams=cams, method="par", attention=attention)
    with pytest.raises(ValueError, match=r"\(h, w, h, w\)"):
        propagate_image(image, cams=cams, method="unia", attention=torch.rand(4, 4, 3, 5))
