"""Background report work: a forked child's result, the parent's fallback and its errors."""

from __future__ import annotations

import os

import pytest

from netsim.errors import NetsimError
from netsim.report.background import Background, can_fork


def test_result_comes_from_a_child_where_forking_is_possible() -> None:
    parent = os.getpid()
    job = Background(lambda: (os.getpid(), [1, 2, 3]))
    pid, value = job.result()
    assert value == [1, 2, 3]
    assert (pid != parent) == can_fork()


def test_a_failing_job_is_run_again_by_the_parent_and_raises_there() -> None:
    pids: list[int] = []

    def job() -> int:
        pids.append(os.getpid())  # only the parent's own run is seen here (a child's list is its copy)
        raise NetsimError("bad ops table", source="trace")

    with pytest.raises(NetsimError, match="bad ops table"):
        Background(job).result()
    assert pids == [os.getpid()]


def test_cancel_stops_the_child_and_leaves_no_result() -> None:
    job = Background(lambda: 1)
    job.cancel()
    assert job.result() == 1  # no child any more: the parent runs the job
