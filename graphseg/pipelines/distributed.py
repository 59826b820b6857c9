"""``torch.distributed`` for the data-set commands: the rank and world of the default process
group, a gloo group for the length of a command run under ``torchrun``, and the failures of
every rank."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch.distributed as dist

from graphseg.pipelines._runner import Failure

__all__ = ["gather_failures", "process_group", "ranks"]


def process_group() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def ranks() -> Iterator[tuple[int, int]]:
    """(rank, world size) of this process: under ``torchrun`` (WORLD_SIZE > 1) a gloo process
    group is set up for the block and torn down after it; otherwise (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield 0, 1
        return
    dist.init_process_group("gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def gather_failures(failures: list[Failure], names=None) -> list[Failure]:
    """The failures of every rank of the default process group (when one is initialised), on
    every rank, in the order of ``names``."""
    if process_group()[1] == 1:
        return failures
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, failures)
    order = {name: i for i, name in enumerate(names or [])}
    merged = [failure for part in every for failure in part]
    return sorted(merged, key=lambda failure: order.get(failure.name, len(order)))
