"""The loop shared by the data-set commands: shards, resume, one failure per bad image
(the process group of ``torchrun`` is in :mod:`graphseg.pipelines.distributed`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from graphseg._io import readable, remove_temporaries

__all__ = ["ITEM_ERRORS", "Failure", "check_shard", "for_each_sample", "sample_labels",
           "shard_indices"]

ITEM_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError)
"""What one bad image may raise (unreadable file, invalid labels); anything else stops the
run."""


@dataclass(frozen=True)
class Failure:
    """An image that could not be processed, and why."""

    name: str
    reason: str


def check_shard(shard) -> tuple[int, int]:
    """``(index, count)`` with ``0 <= index < count``."""
    if (not isinstance(shard, tuple) or len(shard) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
            or not 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be a tuple (index, count) of ints with 0 <= index < "
                         f"count, got {shard!r}")
    return shard


def shard_indices(length: int, shard: tuple[int, int]) -> list[int]:
    """The indices of ``shard`` among ``length`` items: those a ``DistributedSampler`` with
    ``shuffle=False`` gives the rank ``index`` of ``count``, without the padding it repeats to
    even the ranks out (each image is processed exactly once)."""
    from torch.utils.data import DistributedSampler

    index, count = check_shard(shard)
    if length == 0:
        return []
    sampler = DistributedSampler(range(length), num_replicas=count, rank=index, shuffle=False)
    return list(sampler)[:len(range(index, length, count))]


def for_each_sample(dataset, process: Callable[[str, dict], None], *, desc: str,
                    shard: tuple[int, int] = (0, 1), progress: bool = True,
                    outputs: Callable[[str], list[Path]] | None = None,
                    resume: bool = False) -> list[Failure]:
    """Calls ``process(name, sample)`` on the samples of ``dataset`` in ``shard``.

    ``outputs(name)`` lists the files that processing ``name`` writes. Before the loop, the
    temporary files that an interrupted run left beside them are removed; with ``resume``, a
    sample whose every output exists and reads back whole (:func:`graphseg._io.readable`) is
    skipped without being read — a truncated file, or an output the earlier run was not asked
    for, makes it run again. An image whose reading or processing raises one of
    :data:`ITEM_ERRORS` is reported on the progress bar's stream on stderr and recorded; the
    others are still processed.

    Returns:
        The failures, in order.
    """
    shard_index, shard_count = check_shard(shard)
    names = getattr(dataset, "names", None)
    where = f" [shard {shard_index + 1}/{shard_count}]" if shard_count > 1 else ""
    indices = shard_indices(len(dataset), shard)

    def name_of(index: int) -> str:
        return names[index] if names is not None else str(index)

    if outputs is not None:
        remove_temporaries(path for index in indices for path in outputs(name_of(index)))
    failures: list[Failure] = []
    bar = tqdm(indices, desc=desc + where, disable=not progress)
    for index in bar:
        name = name_of(index)
        if resume and outputs is not None and all(readable(p) for p in outputs(name)):
            continue
        try:
            sample = dataset[index]
            name = sample.get("name", name)
            process(name, sample)
        except ITEM_ERRORS as error:
            failures.append(Failure(name, f"{type(error).__name__}: {error}"))
            bar.write(f"{name}: {type(error).__name__}: {error}", file=sys.stderr)
    return failures


def sample_labels(sample: dict, keys) -> dict:
    """The entries ``keys`` of a data-set sample that it holds (the labels a weak kind
    reads; a missing one is reported by the kind)."""
    return {key: sample[key] for key in keys if sample.get(key) is not None}
