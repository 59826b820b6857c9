"""train_affinity inside DistributedDataParallel: two gloo processes on loopback."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_nn_train import two_colour_problem
from torch.nn.parallel import DistributedDataParallel

from graphseg.nn import AffinityCNN, ResNetBackbone, affinity_loss, train_affinity
from graphseg.nn.train import resample_seeds
from graphseg.seeds import pair_labels

LR = 1e-2


def _model():
    torch.manual_seed(0)
    return AffinityCNN(ResNetBackbone(widths=(8, 8, 8), stem_width=8, stride=2),
                       reductions=(8, 8, 8))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank, world, port, shards, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        train_affinity(DistributedDataParallel(model), shards[rank], epochs=1, lr=LR,
                       radius=2, shape="disk", progress=False)
        torch.save({"parameters": [p.detach() for p in model.parameters()]},
                   f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _run(shards, path):
    mp.spawn(_worker, args=(len(shards), _free_port(), shards, str(path)), nprocs=len(shards))
    return [torch.load(f"{path}.{rank}", weights_only=True)["parameters"]
            for rank in range(len(shards))]


def _loss(model, image, seeds):
    features = model(image).affinity
    pairs = pair_labels(resample_seeds(seeds, tuple(features.shape[2:])), radius=2)
    return affinity_loss(features, pairs, image=image, variant="official")


def test_ddp_step_is_the_step_on_the_mean_gradient(tmp_path):
    problems = [two_colour_problem(seed)[:2] for seed in (1, 2)]
    ranks = _run([[problems[0]], [problems[1]]], tmp_path / "ddp")
    # the reference: one Adam step on the mean of the two images' losses
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=5e-4)
    model.train()
    loss = (_loss(model, *problems[0]) + _loss(model, *problems[1])) / 2
    loss.backward()
    optimizer.step()
    expected = [p.detach() for p in model.parameters()]
    for parameters in ranks:  # both ranks hold the same weights
        for got, want in zip(parameters, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # and they differ from a step on either image alone
    alone = _model()
    optimizer = torch.optim.Adam(alone.parameters(), lr=LR, weight_decay=5e-4)
    alone.train()
    _loss(alone, *problems[0]).backward()
    optimizer.step()
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in
               zip(alone.parameters(), expected, strict=True))


def test_ddp_with_shards_of_unequal_length_finishes(tmp_path):
    problems = [two_colour_problem(seed)[:2] for seed in (1, 2, 3)]
    ranks = _run([problems[:2], problems[2:]], tmp_path / "uneven")
    for got, want in zip(*ranks, strict=True):
        assert bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, want)  # the joined rank kept in step
