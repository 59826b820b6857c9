import importlib

import pytest
import torch

from graphseg import WindowGraph, window_offsets
from graphseg.propagate import _multigrid, _threads, harmonic, random_walker_graph
from graphseg.propagate._multigrid import Multigrid


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("elsewhere", "limit", "expected"), [
    (0, 2, 2), (1, 2, 2), (3, 2, 1), (5, 2, 1), (0, 8, 4), (2, 8, 2), (None, 3, 3)])
def test_free_threads_leaves_the_busy_cores(monkeypatch, elsewhere, limit, expected):
    monkeypatch.setattr(_threads, "_running_elsewhere", lambda: elsewhere)
    monkeypatch.setattr(_threads, "_usable_cores", lambda: 4)
    assert _threads.free_threads(limit) == expected


@pytest.mark.parametrize(("looks", "confirm", "expected"), [
    ([1, 0], True, 2), ([1, 0], False, 1), ([0], True, 2), ([1, 1], True, 1),
    ([2, 1], True, 1), ([1, None], True, 2)])
def test_free_threads_confirms_a_busy_core(monkeypatch, looks, confirm, expected):
    # with confirm, a task seen running once and gone at the second look costs no thread
    seen = iter(looks)
    monkeypatch.setattr(_threads, "_running_elsewhere", lambda: next(seen))
    monkeypatch.setattr(_threads, "_usable_cores", lambda: 2)
    monkeypatch.setattr(_threads, "CONFIRM_SECONDS", 0.0)
    assert _threads.free_threads(2, confirm=confirm) == expected


def test_small_solves_and_single_thread_limits_run_serially(monkeypatch):
    monkeypatch.setattr(_threads, "free_threads", lambda limit: limit)
    assert _threads.solve_threads(_threads.SERIAL_WORK - 1, 2) == 1
    assert _threads.solve_threads(_threads.SERIAL_WORK, 1) == 1
    assert _threads.solve_threads(_threads.SERIAL_WORK, 2) == 2


def test_running_elsewhere_counts_tasks():
    count = _threads._running_elsewhere()
    assert count is None or count >= 0
    if count is not None:
        assert _threads._running_threads() >= 1  # the calling thread runs while it looks


def test_intra_op_threads_restores_the_count(two_threads):
    with pytest.raises(RuntimeError), _threads.intra_op_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == 2
    with _threads.intra_op_threads(2):
        torch.set_num_threads(1)
    assert torch.get_num_threads() == 2


def _large_problem():
    # 3 classes × 160 × 160 = 76800 elements, above SERIAL_WORK, so the threaded path can run
    # smooth colours (a noise image's weights span too many orders for a quick tight solve)
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(1, 3, 5, 5, generator=generator, dtype=torch.float64)
    image = torch.nn.functional.interpolate(coarse, size=(160, 160), mode="bilinear")[0]
    seeds = torch.full((1, 160, 160), 255, dtype=torch.int64)
    seeds[0, 10:20, 10:150], seeds[0, 140:150, 10:150], seeds[0, 60:100, 75:80] = 0, 1, 2
    return random_walker_graph(image), seeds


def _force_free_cores(monkeypatch, free):
    """Two usable cores, ``free`` of them not held by other processes."""
    monkeypatch.setattr(_threads, "_usable_cores", lambda: 2)
    monkeypatch.setattr(_threads, "_running_elsewhere", lambda: 2 - free)


def test_serial_solve_equals_threaded_solve(monkeypatch, two_threads):
    graph, seeds = _large_problem()
    assert seeds.numel() * 3 >= _threads.SERIAL_WORK
    used = []
    aggregate = WindowGraph._aggregate
    monkeypatch.setattr(WindowGraph, "_aggregate",
                        lambda self, z: used.append(torch.get_num_threads()) or aggregate(self, z))
    _force_free_cores(monkeypatch, 2)
    threaded = harmonic(graph, seeds, tol=1e-6)
    assert torch.get_num_threads() == 2
    _force_free_cores(monkeypatch, 1)
    serial = harmonic(graph, seeds, tol=1e-6)
    assert torch.get_num_threads() == 2
    assert set(used) == {1, 2}
    torch.testing.assert_close(serial, threaded, atol=1e-6, rtol=0)


def test_random_walker_graph_is_equal_on_one_thread(monkeypatch, two_threads):
    image = torch.rand(3, 160, 160, generator=torch.Generator().manual_seed(3))
    _force_free_cores(monkeypatch, 2)
    threaded = random_walker_graph(image)
    _force_free_cores(monkeypatch, 1)
    serial = random_walker_graph(image)
    assert torch.get_num_threads() == 2
    torch.testing.assert_close(serial.weight, threaded.weight, atol=1e-6, rtol=1e-5)


def test_serial_coarse_levels_equal_threaded_ones(monkeypatch, two_threads):
    graph, seeds = _large_problem()
    graph = graph.symmetrize().without_self_loops()
    unknown = (seeds == 255).unsqueeze(1).double()
    rhs = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(2),
                     dtype=torch.float64) * unknown
    threads_seen = []
    apply = _multigrid._Level.apply

    def spy(level, x):
        threads_seen.append((x.numel(), torch.get_num_threads()))
        return apply(level, x)

    preconditioner = Multigrid(graph.weight, graph.offsets, unknown)
    serial = preconditioner(rhs)
    monkeypatch.setattr(_multigrid, "SERIAL_WORK", 0)
    threaded = preconditioner(rhs)
    torch.testing.assert_close(serial, threaded, atol=1e-12, rtol=1e-10)
    monkeypatch.setattr(_multigrid, "SERIAL_WORK", _threads.SERIAL_WORK)
    monkeypatch.setattr(_multigrid._Level, "residual", lambda level, r, x: spy(level, x).neg_()
                        .add_(r))
    preconditioner(rhs)
    assert {threads for work, threads in threads_seen if work < _threads.SERIAL_WORK} == {1}
    assert {threads for work, threads in threads_seen if work >= _threads.SERIAL_WORK} == {2}


def test_the_lattice_crf_runs_on_the_free_cores_only(monkeypatch, two_threads):
    graphseg_ext = pytest.importorskip("graphseg_ext")
    from graphseg.propagate import crf
    from graphseg.propagate import lattice as lattice_module

    seen = []
    original = graphseg_ext.lattice_filter_sum

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 24, 32, generator=generator)
    probs = torch.softmax(torch.randn(1, 3, 24, 32, generator=generator), 1)
    results = {}
    for free in (2, 1):
        _force_free_cores(monkeypatch, free)
        monkeypatch.setattr(graphseg_ext, "lattice_filter_sum", recording)
        seen.clear()
        results[free] = crf(image, probs, method="lattice")
        if lattice_module.PermutohedralLattice(torch.zeros(1, 2))._ext is None:
            pytest.skip("the compiled lattice is not in use")
        assert seen and set(seen) == {free}
        assert torch.get_num_threads() == 2  # restored
    torch.testing.assert_close(results[1], results[2])


def test_the_random_walk_runs_on_the_free_cores_only(monkeypatch, two_threads):
    from graphseg.propagate import random_walk

    walk_module = importlib.import_module("graphseg.propagate.random_walk")
    seen = []
    original = walk_module.aggregate_power_fused

    def recording(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(walk_module, "aggregate_power_fused", recording)
    generator = torch.Generator().manual_seed(0)
    graph = WindowGraph(torch.rand(1, 8, 70, 30, generator=generator), window_offsets(1, "square"),
                        self_weight=1.0)
    probs = torch.rand(1, 3, 70, 30, generator=generator)
    results = {}
    for free in (2, 1):
        _force_free_cores(monkeypatch, free)
        seen.clear()
        results[free] = random_walk(graph, probs, num_steps=6)
        if not seen:
            pytest.skip("the compiled multi-step walk is not in use")
        assert set(seen) == {free}
        assert torch.get_num_threads() == 2  # restored
    assert torch.equal(results[1], results[2])
