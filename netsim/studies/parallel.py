"""Side by side: a study's independent jobs in worker processes, one per core.

A study's lab runs and replays do not depend on each other, and each is deterministic (seeded,
one torch thread in the lab), so running them in separate processes changes nothing in what
they write, only how long the study takes on a machine with more than one core.  Workers are
started with ``spawn``, not ``fork``: torch's thread pools do not survive a fork of a process
that used them.  Each worker imports netsim afresh (about a second of CPU), so one job, or one
core, runs in the calling process instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

#: at most this many worker processes (each holds its own copy of a run's memory)
MAX_WORKERS = 4


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def side_by_side(fn: Callable[[Any], None], jobs: Sequence[Any], workers: int | None = None) -> bool:
    """Run ``fn(job)`` for every job in up to ``workers`` (default: :func:`cores`, at most
    :data:`MAX_WORKERS`) worker processes; ``fn`` must be a module-level function and the jobs
    picklable.  Returns False, having run nothing, when one process would do (fewer than two
    jobs or workers): the caller then runs the jobs itself."""
    n = min(workers if workers is not None else cores(), MAX_WORKERS, len(jobs))
    if n < 2:
        return False
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(fn, jobs))
    return True
