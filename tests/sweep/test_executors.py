"""Serial, process-pool and Dask execution give the same files, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netsim.sweep import Sweep, SweepOutcome, load_sweep, run_sweep

from .conftest import MICRO_GRID, write_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return load_sweep(write_sweep(tmp_path_factory.mktemp("sweep"), grid=MICRO_GRID))


@pytest.fixture(scope="module")
def serial(sweep: Sweep, tmp_path_factory: pytest.TempPathFactory) -> SweepOutcome:
    out = run_sweep(sweep, tmp_path_factory.mktemp("serial") / "out", workers=1, reports=False, compare=False)
    assert out.executor == "serial" and out.failed == []
    return out


def _same_files(a: SweepOutcome, b: SweepOutcome) -> None:
    for name in ("results.csv", "results.parquet"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    for pid in a.table["id"]:
        for name in ("summary.json", "scenario.yaml", "links.csv", "ops.parquet"):
            assert (a.path / "points" / pid / name).read_bytes() == (b.path / "points" / pid / name).read_bytes()


def test_process_pool_matches_serial(sweep: Sweep, serial: SweepOutcome, tmp_path: Path) -> None:
    out = run_sweep(sweep, tmp_path / "out", workers=2, reports=False, compare=False)
    assert out.executor == "process" and out.failed == [] and len(out.ran) == 4
    workers = {r.worker.rpartition(":")[2] for r in out.results}
    assert str(os.getpid()) not in workers and len(workers) == 2  # ran in two other processes
    _same_files(serial, out)


def test_dask_cluster_matches_serial(sweep: Sweep, serial: SweepOutcome, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = run_sweep(sweep, tmp_path / "out", scheduler=cluster.scheduler_address, reports=False, compare=False)
        with distributed.Client(cluster) as client:
            worker_pids = {str(pid) for pid in client.run(os.getpid).values()}
    assert out.executor == "dask" and out.failed == [] and len(out.ran) == 4
    ran_on = {r.worker.rpartition(":")[2] for r in out.results}
    assert ran_on <= worker_pids and str(os.getpid()) not in ran_on
    _same_files(serial, out)


def test_unreachable_dask_scheduler_is_a_one_line_error(sweep: Sweep, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    import dask

    from netsim.errors import NetsimError

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(
            NetsimError, match=r"--scheduler: cannot connect to the Dask scheduler at 'tcp://127\.0\.0\.1:9'"
        ),
    ):
        run_sweep(sweep, tmp_path / "out", scheduler="tcp://127.0.0.1:9", reports=False, compare=False)
