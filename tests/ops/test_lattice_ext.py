"""The compiled permutohedral lattice of graphseg_ext against the tensor-op lattice of
graphseg.propagate.lattice and against the algorithm of Adams, Baek & Davis written out with a
dictionary of vertices.

Skipped as a whole when the extension is not built, unless ``GRAPHSEG_REQUIRE_EXT=1``, which
turns a missing extension into a failure.
"""

import math

import pytest
import torch
from conftest import skip_module_without_ext

import graphseg_ext
from graphseg.ops import use_backend
from graphseg.propagate import PermutohedralLattice
from graphseg.propagate import lattice as lattice_module

skip_module_without_ext()

TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}


def features_of(points, dim, seed, spread=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(points, dim, generator=generator, dtype=torch.float64) * spread


def both(features):
    compiled = PermutohedralLattice(features)
    with use_backend("reference"):
        reference = PermutohedralLattice(features)
    assert compiled._ext is not None and reference._ext is None
    return compiled, reference


def literal_filter(features, values):
    """Adams et al. (2010) §3.1 and Alg. 1 for one point at a time, in Python floats and a dict
    of vertices: elevate, find the enclosing simplex by rounding and ranking, splat with the
    barycentric weights, blur with [1/2, 1, 1/2] along the d + 1 directions in order, slice
    with the same weights, times 1 / (1 + 2^-d)."""
    d = len(features[0])
    lattice, corners = {}, []
    for f, v in zip(features, values, strict=True):
        scaled = [f[i] * (d + 1) * math.sqrt(2 / 3) / math.sqrt((i + 1) * (i + 2))
                  for i in range(d)]
        elevated = [sum(scaled[i:]) - i * scaled[i - 1] if i else sum(scaled)
                    for i in range(d + 1)]
        rem0 = [min((math.floor(x / (d + 1)) * (d + 1), math.ceil(x / (d + 1)) * (d + 1)),
                    key=lambda r, x=x: (abs(x - r), r)) for x in elevated]
        delta = [x - r for x, r in zip(elevated, rem0, strict=True)]
        order = sorted(range(d + 1), key=lambda i: -delta[i])
        rank = [order.index(i) for i in range(d + 1)]
        total = round(sum(rem0) / (d + 1))
        for i in range(d + 1):
            if total > 0 and rank[i] >= d + 1 - total:
                rem0[i], rank[i] = rem0[i] - (d + 1), rank[i] + total - (d + 1)
            elif total < 0 and rank[i] < -total:
                rem0[i], rank[i] = rem0[i] + (d + 1), rank[i] + total + (d + 1)
            else:
                rank[i] += total
        bary = [0.0] * (d + 2)
        for i in range(d + 1):
            bary[d - rank[i]] += (elevated[i] - rem0[i]) / (d + 1)
            bary[d + 1 - rank[i]] -= (elevated[i] - rem0[i]) / (d + 1)
        bary[0] += 1 + bary[d + 1]
        mine = []
        for k in range(d + 1):
            key = tuple(rem0[i] + (k if rank[i] <= d - k else k - (d + 1)) for i in range(d))
            lattice[key] = lattice.get(key, 0) + bary[k] * v
            mine.append((key, bary[k]))
        corners.append(mine)
    for j in range(d + 1):
        step = tuple(-d if i == j else 1 for i in range(d))
        lattice = {key: value + 0.5 * (
            lattice.get(tuple(a + s for a, s in zip(key, step, strict=True)), 0)
            + lattice.get(tuple(a - s for a, s in zip(key, step, strict=True)), 0))
            for key, value in lattice.items()}
    return [sum(w * lattice[key] for key, w in mine) / (1 + 2.0**-d) for mine in corners]


@pytest.mark.parametrize("dim, points, seed", [(1, 9, 0), (2, 13, 1), (3, 7, 2), (5, 11, 3),
                                              (2, 1, 4), (5, 1, 5)])
@pytest.mark.parametrize("backend", ["extension", "reference"])
def test_filter_is_the_algorithm_written_out(dim, points, seed, backend):
    features = features_of(points, dim, seed)
    values = features_of(points, 1, seed + 10)[:, 0]
    # the lattice is built from the features with their gaps closed (a lone point is moved to
    # the origin; these close sets are kept as they are)
    closed = lattice_module._close_gaps(features, lattice_module._reach(dim))
    assert points == 1 or torch.equal(closed, features)
    expected = torch.tensor(literal_filter(closed.tolist(), values.tolist()),
                            dtype=torch.float64)
    with use_backend(backend):
        got = PermutohedralLattice(features).filter(values[:, None])[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim, points", [(2, 1), (2, 63), (5, 1), (5, 97), (1, 40), (3, 55),
                                         (7, 41)])
def test_the_same_lattice_as_the_reference(dim, points):
    # equal up to the numbering of the vertices: the same weights, the same partition of the
    # simplex corners into vertices and the same neighbours
    compiled, reference = both(features_of(points, dim, dim + points))
    assert compiled.num_vertices == reference.num_vertices
    # equal up to float64 rounding: the compiled build may fuse multiply-adds (FMA) where the
    # tensor ops round twice, which moves a weight by a few units in the last place (1.2e-15
    # on a 5-D weight of 0.11 on an AVX-512 CPU)
    torch.testing.assert_close(compiled.weight, reference.weight, rtol=0, atol=1e-14)
    renumber = torch.full((reference.num_vertices + 1,), -1, dtype=torch.int64)
    renumber[reference.index.reshape(-1)] = compiled.index.reshape(-1).long()
    renumber[-1] = compiled.num_vertices  # no neighbour is no neighbour
    assert bool((renumber >= 0).all())
    assert torch.equal(renumber[reference.index], compiled.index.long())
    assert torch.equal(renumber[reference.neighbours],
                       compiled.neighbours.long()[:, :, renumber[:-1]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim, points, channels", [
    (2, 1, 3), (2, 101, 1), (2, 77, 2), (5, 1, 2), (5, 89, 3), (5, 64, 4), (5, 53, 21),
    (2, 300, 37), (4, 45, 5), (9, 30, 2)])
def test_filter_and_transpose_match_the_reference(dim, points, channels, dtype):
    compiled, reference = both(features_of(points, dim, points + channels))
    generator = torch.Generator().manual_seed(channels)
    values = torch.randn(points, channels, generator=generator, dtype=dtype)
    for reverse in (False, True):
        got = compiled._apply(values, reverse=reverse)
        if dtype == torch.float64:
            torch.testing.assert_close(got, reference._apply(values, reverse=reverse),
                                       **TOL[dtype])
            continue
        # float32: within its rounding of the sums, against the float64 filter, whose terms
        # are bounded by the filter of |values|
        exact = reference._apply(values.double(), reverse=reverse)
        scale = reference._apply(values.double().abs(), reverse=reverse)
        assert bool(((got.double() - exact).abs()
                     <= 16 * torch.finfo(torch.float32).eps * scale + 1e-30).all())


@pytest.mark.parametrize("dim", [2, 5])
def test_gradient_is_the_reference_gradient_and_passes_gradcheck(dim):
    compiled, reference = both(features_of(23, dim, 7))
    generator = torch.Generator().manual_seed(dim)
    values = torch.randn(23, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(23, 3, generator=generator, dtype=torch.float64)
    grads = [torch.autograd.grad(lattice.filter(values), values, upstream)[0]
             for lattice in (compiled, reference)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(compiled.filter, (values,))


def test_op_gradient_is_the_transpose_with_distinct_weights():
    lattice = PermutohedralLattice(features_of(31, 5, 8))
    generator = torch.Generator().manual_seed(8)
    before = torch.rand(31, 1, generator=generator, dtype=torch.float64) + 0.5
    after = torch.rand(31, 1, generator=generator, dtype=torch.float64) + 0.5
    splat, slice_ = lattice.weight * before, lattice.weight * after
    values = torch.randn(31, 2, generator=generator, dtype=torch.float64, requires_grad=True)

    def op(v):
        return graphseg_ext.lattice_filter(v, lattice.index, splat, slice_, lattice.neighbours)

    assert torch.autograd.gradcheck(op, (values,))
    torch.library.opcheck(torch.ops.graphseg_ext.lattice_filter,
                          (values, lattice.index, splat, slice_, lattice.neighbours, False))
    # b ⊙ filter(a ⊙ v), as the CRF's normalised kernels use it
    torch.testing.assert_close(op(values), after * lattice.filter(before * values))


@pytest.mark.parametrize("channels", [2, 21])
@pytest.mark.parametrize("threads", [1, 2])
def test_filter_sum_of_planar_values(channels, threads):
    # min(base + Σ after ⊙ filter(before ⊙ values), upper) over a 2-D and a 5-D lattice, with
    # planar (C, N) values and base handed over as (N, C) views, against the filters one by one
    lattices = [PermutohedralLattice(features_of(57, 2, 9)),
                PermutohedralLattice(features_of(57, 5, 10))]
    generator = torch.Generator().manual_seed(channels)
    planar = torch.randn(channels, 57, generator=generator)
    base = torch.randn(channels, 57, generator=generator)
    terms = [(lattice, torch.rand(57, 1, generator=generator) + 0.5,
              torch.rand(57, 1, generator=generator) + 0.5) for lattice in lattices]
    expected = base.t() + sum(after * lattice.filter(before * planar.t())
                              for lattice, before, after in terms)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        total = lattice_module._FilterSum(terms, 0.5)
        assert total._ext is not None
        got = total(planar.t(), base.t())
    finally:
        torch.set_num_threads(previous)
    assert got.t().is_contiguous()
    torch.testing.assert_close(got, expected.clamp_max(0.5), **TOL[torch.float32])


def test_features_beyond_int32_coordinates_use_the_reference():
    far = features_of(20, 2, 10) + 1e9
    lattice = PermutohedralLattice(far)
    assert lattice._ext is None
    values = torch.ones(20, 1, dtype=torch.float64)
    assert bool((lattice.filter(values) > 0).all())


def test_bad_arguments_are_named():
    ops = torch.ops.graphseg_ext
    with pytest.raises(TypeError, match="features must be float64"):
        ops.lattice_build(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="features must have shape"):
        ops.lattice_build(torch.zeros(4, 33, dtype=torch.float64))
    index, weight, neighbours = ops.lattice_build(features_of(6, 2, 11))
    values = torch.zeros(6, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="index must have shape"):
        ops.lattice_filter(values[:5], index, weight, weight, neighbours)
    with pytest.raises(TypeError, match="values and splat_weight must share a dtype"):
        ops.lattice_filter(values.float(), index, weight, weight, neighbours)
    with pytest.raises(ValueError, match="neighbours must have shape"):
        ops.lattice_filter(values, index, weight, weight, neighbours[:2])
    with pytest.raises(TypeError, match="index and neighbours must be int32"):
        ops.lattice_filter(values, index.long(), weight, weight, neighbours)
    with pytest.raises(ValueError, match="base must have the shape of values"):
        graphseg_ext.lattice_filter_sum(values, values[:, :1], [index], [weight], [weight],
                                        [neighbours])
    with pytest.raises(ValueError, match="must be lists of one tensor per lattice"):
        graphseg_ext.lattice_filter_sum(values, values, [index], [weight], [], [neighbours])


def test_wide_features_keep_their_gaps_closed_before_the_compiled_build():
    # far-apart groups reach the compiled build with their gaps closed: each group is
    # filtered as if alone
    group = features_of(8, 5, 12)
    values = torch.rand(16, 2, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    together = PermutohedralLattice(torch.cat([group, group + 1e6]))
    assert together._ext is not None
    torch.testing.assert_close(together.filter(values)[:8],
                               PermutohedralLattice(group).filter(values[:8]))
    assert lattice_module._close_gaps(torch.cat([group, group + 1e6]), 100.0).abs().max() < 1e3


def literal_diagonal(features):
    """The filter's weight of each point on itself by brute force: the algorithm written out
    (literal_filter) applied to each unit vector, read at its point."""
    points = len(features)
    return torch.tensor([literal_filter(features, [float(i == j) for j in range(points)])[i]
                         for i in range(points)], dtype=torch.float64)


def with_threads(threads, fn):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim, points, spread", [(1, 17, 3.0), (2, 23, 1.5), (3, 19, 4.0),
                                                 (5, 21, 2.0), (9, 13, 2.0), (2, 1, 1.0),
                                                 (5, 1, 1.0)])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_diagonal_is_the_tensor_op_and_the_brute_force_diagonal(dim, points, spread,
                                                                         dtype, threads):
    features = features_of(points, dim, 20 + dim, spread)
    if points > 6:
        features[:4] = features[5]  # points sharing a simplex, with the same weights
        features[6] = features[5] + 1e-3  # the same simplex, other weights
    closed = lattice_module._close_gaps(features, lattice_module._reach(dim))
    expected = literal_diagonal(closed.tolist())
    compiled = PermutohedralLattice(features.to(dtype))
    assert compiled._ext is not None
    got = with_threads(threads, compiled.diagonal)
    with use_backend("reference"):
        reference = PermutohedralLattice(features.to(dtype))
        tensor_ops = reference.diagonal()
    assert got.dtype == tensor_ops.dtype == dtype
    torch.testing.assert_close(got, tensor_ops, **TOL[dtype])
    torch.testing.assert_close(got.double(), expected, **TOL[dtype])
    torch.testing.assert_close(tensor_ops.double(), expected, **TOL[dtype])
    # the op itself, on the float64 weights
    index, weight, neighbours = graphseg_ext.lattice_build(closed)
    direct = with_threads(threads, lambda: graphseg_ext.lattice_diagonal(index, weight,
                                                                         neighbours))
    torch.testing.assert_close(direct, expected, **TOL[torch.float64])


@pytest.mark.parametrize("dim, spread", [(5, 1.0), (9, 1.5)])
def test_compiled_diagonal_on_many_points_is_the_same_on_any_threads(dim, spread):
    # enough points for chunks on two threads and, at d = 9, more distinct simplices than the
    # cache of blocks holds (evictions); d = 5: an image in raster order (neighbouring pixels
    # share their simplex)
    generator = torch.Generator().manual_seed(dim)
    if dim == 5:
        ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
        colour = torch.rand(3, 48, 64, generator=generator, dtype=torch.float64) * 4
        features = torch.cat([torch.stack([ys.flatten(), xs.flatten()], 1).double() / 5,
                              colour.flatten(1).t()], 1)
    else:
        features = torch.rand(4500, dim, generator=generator, dtype=torch.float64) * spread
    compiled = PermutohedralLattice(features)
    one = with_threads(1, compiled.diagonal)
    two = with_threads(2, compiled.diagonal)
    assert torch.equal(one, two)
    with use_backend("reference"):
        torch.testing.assert_close(one, PermutohedralLattice(features).diagonal(),
                                   **TOL[torch.float64])


def test_diagonal_op_checks_its_arguments():
    ops = torch.ops.graphseg_ext
    index, weight, neighbours = ops.lattice_build(features_of(9, 3, 30))
    torch.library.opcheck(ops.lattice_diagonal, (index, weight, neighbours))
    with pytest.raises(ValueError, match="index must have shape"):
        ops.lattice_diagonal(index[:, 0], weight, neighbours)
    with pytest.raises(TypeError, match="index and neighbours must be int32"):
        ops.lattice_diagonal(index.long(), weight, neighbours)
    with pytest.raises(ValueError, match="weight must have index's shape"):
        ops.lattice_diagonal(index, weight[:5], neighbours)
    with pytest.raises(TypeError, match="weight must be float32 or float64"):
        ops.lattice_diagonal(index, weight.half(), neighbours)
    with pytest.raises(ValueError, match="neighbours must have shape"):
        ops.lattice_diagonal(index, weight, neighbours[:3])
    outside = index.clone()
    outside[4, 2] = neighbours.shape[2]
    with pytest.raises(ValueError, match="index holds vertex .* outside"):
        ops.lattice_diagonal(outside, weight, neighbours)
    # vertices of one simplex in the wrong order: not neighbours of one another
    with pytest.raises(ValueError, match="not neighbours in the table"):
        ops.lattice_diagonal(index.flip(1).contiguous(), weight, neighbours)
