"""Thread counts for the iterative solves.

A conjugate-gradient iteration with a multigrid preconditioner runs dozens of short parallel
regions. Each ends at a barrier, so a team of two on two cores waits for a whole scheduler time
slice whenever another process holds the second core; measured on 2 cores beside one CPU-bound
process, two threads made ``harmonic`` five times slower than one. The solves therefore run small
vectors on one thread and take the other threads only while their cores are free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# elements of a solve vector (batch × classes × pixels) below which one thread is faster even on
# an idle machine: the work per parallel region no longer pays for waking the team
SERIAL_WORK = 1 << 16
# pause before free_threads(confirm=True) looks at a busy core again
CONFIRM_SECONDS = 0.01


def _running_elsewhere() -> int | None:
    """Runnable tasks of other processes now: the kernel's instant count of runnable tasks (the
    fourth field of ``/proc/loadavg``) less this process's own running threads. None where
    ``/proc`` is not Linux's."""
    try:
        # This process's running threads are counted before and after the system's count: an
        # OpenMP worker that stops spinning after the last parallel op, or starts, between the
        # reads would otherwise pass for another process's task (measured: 3.5% of the looks
        # right after a torch op on 2 threads gave up a core).
        own = _running_threads()
        with open("/proc/loadavg") as load:
            running = int(load.read().split()[3].split("/")[0])
        own = max(own, _running_threads())
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - own)


def _running_threads() -> int:
    """This process's threads in the running state."""
    own = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                # the state follows the command name, which may itself hold spaces or ")"
                own += stat.read().rpartition(")")[2].split()[0] == "R"
        except FileNotFoundError:  # the thread ended since the listing
            continue
    return own


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def free_threads(limit: int, *, confirm: bool = False) -> int:
    """How many of ``limit`` threads have a core of their own now (at least 1): the cores this
    process may run on less the runnable tasks of other processes, like OpenMP's dynamic
    adjustment of the team size. Without Linux's ``/proc``, ``limit``.

    ``confirm``: for a long call, a core seen busy is looked at again after
    :data:`CONFIRM_SECONDS` and given up only if still busy: short tasks of other processes
    (kernel workers among them; often right after large allocations) would otherwise halve a
    whole multi-second random walk."""
    elsewhere = _running_elsewhere()
    if elsewhere is None:
        return max(1, limit)
    if confirm and elsewhere > 0:
        time.sleep(CONFIRM_SECONDS)
        elsewhere = min(elsewhere, _running_elsewhere() or 0)
    return max(1, min(limit, _usable_cores() - elsewhere))


def solve_threads(work: int, limit: int) -> int:
    """Threads for a solve step whose vectors hold ``work`` elements: one below
    :data:`SERIAL_WORK`, else the free ones among ``limit``."""
    if work < SERIAL_WORK or limit == 1:
        return 1
    return free_threads(limit)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Runs the block with ``count`` torch intra-op threads and restores the previous count,
    also when the block changed it."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
