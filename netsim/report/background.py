"""One piece of report work done by a forked process while the report process goes on.

A report's time is mostly its figures (rendered by forked workers, :func:`netsim.report.figures.
render_all`) and its Chrome trace.  The two are independent, so with more than one CPU the trace
is written by a forked child while the parent builds and renders the figures: :class:`Background`
starts a job in a child (which inherits the job and its data by ``fork``; only the job's result
travels back, pickled) and :meth:`Background.result` waits for it.

The job must be deterministic and write its files atomically: when the child fails for any reason
(or forking is impossible: one CPU, no ``fork`` on the platform, a daemon process that may not
have children) the parent runs the job itself, so errors are raised where they would be without a
child and the output is the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: the job a forked child runs (set just before the fork, read by the child)
_JOB: list[Callable[[], Any]] = []


def _run_job() -> tuple[bool, Any]:
    """In the child: (True, result) or (False, None) when the job raised (the parent reruns it)."""
    try:
        return True, _JOB[0]()
    except BaseException:  # any failure: the parent runs the job and raises there
        return False, None


def can_fork() -> bool:
    """More than one usable CPU, ``fork`` available and a process that may have children."""
    import multiprocessing as mp

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus > 1 and "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


class Background(Generic[T]):
    """``job()`` started in a forked child where possible; :meth:`result` returns its value."""

    def __init__(self, job: Callable[[], T]) -> None:
        self._job = job
        self._pool: Any = None
        self._pending: Any = None
        if can_fork():
            import multiprocessing as mp

            _JOB[:] = [job]
            try:
                self._pool = mp.get_context("fork").Pool(1)  # the child is forked here, inheriting _JOB
                self._pending = self._pool.apply_async(_run_job)
            finally:
                _JOB.clear()

    def result(self) -> T:
        """The job's value: the child's, or (no child, or the child failed) the parent's own run."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                ok, value = self._pending.get()
            except Exception:  # e.g. an unpicklable result: run it here instead
                ok, value = False, None
            finally:
                pool.close()
                pool.join()
            if ok:
                return value
        return self._job()

    def cancel(self) -> None:
        """Stop the child (the parent failed before it needed the result)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()
            pool.join()
