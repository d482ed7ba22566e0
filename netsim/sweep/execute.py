"""Running a sweep: serially, in a local process pool, or on a Dask distributed cluster.

:func:`run_sweep` writes into an output folder::

    <out>/sweep.yaml            the expanded sweep: fields and points (index, id, values)
    <out>/points/<id>/          one ``netsim run`` directory per point (written atomically)
    <out>/failed/<id>.txt       the error of each point that failed (traceback for bugs)
    <out>/results.csv|.parquet  one row per point (:mod:`netsim.sweep.results`)
    <out>/compare/              comparison report of the points (baseline: the first finished one)

Resuming: a point whose ``points/<id>/summary.json`` exists is finished and is not run again.
Run directories are renamed into place only when complete (:func:`netsim.io.atomic_dir`), so
an interrupted sweep leaves no half-written point that looks finished; running the same sweep
again runs only the missing points (and the failed ones again).

Executors:

* ``workers=1`` (or a single point to run): in this process, one point after the other;
* default: a :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` processes (default:
  the CPU count, at most one per point) started with ``forkserver`` (``spawn`` where there is
  none), never ``fork``: the simulator's state is not shared.  When the sweep is interrupted
  (an exception out of ``progress``, Ctrl-C), queued points are dropped and the workers are
  terminated at once; their unfinished run directories are temporary and removed next time;
* ``scheduler=ADDRESS`` (or a ``dask.distributed.Client``): one Dask task per point on that
  cluster.  The workers need netsim installed and must see the output folder at the same path
  (a shared filesystem), since each writes its point's run directory there.

Every executor runs the same function, :func:`run_point`, so a point's files do not depend on
where it ran.  A point that raises :class:`~netsim.errors.NetsimError` is recorded as
``failed`` with its one-line message; any other exception (a bug) as ``error``, with its
traceback in ``failed/<id>.txt``; neither stops the other points.

Nothing here prints: ``progress(done, total, result)`` is called once at the start
(``result=None``, ``done`` = points already finished) and once per point run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from netsim.errors import NetsimError
from netsim.io import atomic_dir, atomic_file, claim_dir
from netsim.sweep.results import build_table, write_results
from netsim.sweep.spec import Sweep, SweepPoint

__all__ = ["PointResult", "PointTask", "SweepOutcome", "SweepProgress", "is_finished", "run_point", "run_sweep"]

Status = Literal["ok", "failed", "error"]


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to run one point (plain, picklable data)."""

    index: int
    id: str
    scenario: dict[str, Any]
    source: str
    base_dir: str
    out: str
    report: bool


@dataclass(frozen=True)
class PointResult:
    """How one point went.

    Attributes:
        status: ``ok``, ``failed`` (a NetsimError: bad input for this point) or ``error`` (a bug).
        error: the one-line message ("" when ok).
        traceback: the traceback of an ``error`` ("" otherwise).
        wall_s: seconds the point took where it ran (0 for a reused point).
        worker: ``host:pid`` of the process that ran it ("" for a reused point).
        reused: finished by an earlier invocation; not run this time.
    """

    index: int
    id: str
    status: Status
    error: str = ""
    traceback: str = ""
    wall_s: float = 0.0
    worker: str = ""
    reused: bool = False


SweepProgress = Callable[[int, int, PointResult | None], None]
"""``progress(done, total, result)``: once at the start (``result=None``), then per point."""


@dataclass
class SweepOutcome:
    """What a sweep produced.

    Attributes:
        path: the output folder.
        table: the result table (also in ``results.csv`` / ``results.parquet``).
        results: one :class:`PointResult` per point, in point order.
        compare: ``compare/report.html`` if the comparison report was written.
        executor: ``serial``, ``process`` or ``dask`` (what ran the points of this call), or
            ``none`` when every point was finished already.
        wall_s: seconds this call took.
    """

    path: Path
    table: pd.DataFrame
    results: list[PointResult] = field(default_factory=list)
    compare: Path | None = None
    executor: str = "serial"
    wall_s: float = 0.0

    @property
    def ran(self) -> list[str]:
        """Ids of the points run by this call."""
        return [r.id for r in self.results if not r.reused]

    @property
    def reused(self) -> list[str]:
        """Ids of the points finished earlier and not run again."""
        return [r.id for r in self.results if r.reused]

    @property
    def failed(self) -> list[str]:
        """Ids of the points that failed (status ``failed`` or ``error``)."""
        return [r.id for r in self.results if r.status != "ok"]


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a complete run directory (renamed into place with its summary)."""
    return (run_dir / "summary.json").is_file()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_point(task: PointTask) -> PointResult:
    """Run one point into ``task.out`` (the function every executor calls; never raises
    for a failed point)."""
    from netsim.config.common import validate_model
    from netsim.config.scenario import ScenarioSpec
    from netsim.report import write_report
    from netsim.run import run_scenario

    worker = f"{socket.gethostname()}:{os.getpid()}"
    t0 = time.perf_counter()
    try:
        spec = validate_model(ScenarioSpec, task.scenario, source=task.source)
        spec = spec.with_origin(task.source, Path(task.base_dir))
        # force: an unfinished point of this sweep
        run_scenario(spec, task.out, report=write_report if task.report else None, force=True)
    except NetsimError as exc:
        return PointResult(task.index, task.id, "failed", exc.one_line(), "", time.perf_counter() - t0, worker)
    except Exception as exc:
        return PointResult(
            task.index,
            task.id,
            "error",
            _one_line(f"internal error: {type(exc).__name__}: {exc}"),
            traceback.format_exc(),
            time.perf_counter() - t0,
            worker,
        )
    return PointResult(task.index, task.id, "ok", "", "", time.perf_counter() - t0, worker)


# --------------------------------------------------------------------------- executors


def _serial(tasks: Sequence[PointTask]) -> Iterator[PointResult]:
    for task in tasks:
        yield run_point(task)


def _mp_context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["netsim.run"])  # workers fork from a process that imported it
        return ctx
    return multiprocessing.get_context("spawn")


def _process_pool(tasks: Sequence[PointTask], workers: int) -> Iterator[PointResult]:
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context())
    clean = False
    try:
        futures = {pool.submit(run_point, t): t for t in tasks}
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                yield fut.result()
            except BrokenProcessPool as exc:
                yield PointResult(
                    task.index,
                    task.id,
                    "error",
                    _one_line(f"internal error: a worker process died ({exc})"),
                    traceback.format_exc(),
                )
        clean = True
    finally:
        if not clean:
            # interrupted: drop the queued points and stop the running ones now (their run
            # directories are temporary until complete; the next run removes them)
            procs = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                with contextlib.suppress(Exception):
                    proc.terminate()
        else:
            pool.shutdown(wait=True)


def _dask(tasks: Sequence[PointTask], scheduler: Any) -> Iterator[PointResult]:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ModuleNotFoundError:
        raise NetsimError(
            "running on a Dask cluster needs dask.distributed: pip install 'moe-netsim[dask]'", field="--scheduler"
        ) from None
    own = not isinstance(scheduler, Client)
    if own:
        try:
            client = Client(str(scheduler))  # waits up to distributed.comm.timeouts.connect
        except (OSError, TimeoutError) as exc:
            raise NetsimError(
                f"cannot connect to the Dask scheduler at {scheduler!r}: {_one_line(str(exc))}", field="--scheduler"
            ) from None
    else:
        client = scheduler
    futures: list[Any] = []
    try:
        by_key: dict[Any, PointTask] = {}
        token = uuid.uuid4().hex[:8]  # two sweeps on one cluster never share a task key
        for t in tasks:
            fut = client.submit(run_point, t, key=f"netsim-point-{t.id}-{token}", pure=False)
            by_key[fut.key] = t
            futures.append(fut)
        for fut in dask_completed(futures):
            task = by_key[fut.key]
            try:
                yield fut.result()
            except Exception as exc:  # e.g. KilledWorker: the point crashed its worker
                yield PointResult(
                    task.index,
                    task.id,
                    "error",
                    _one_line(f"internal error: {type(exc).__name__}: {exc}"),
                    traceback.format_exc(),
                )
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(pending)
        if own:
            with contextlib.suppress(Exception):
                client.close()


# --------------------------------------------------------------------------- the sweep


def _clean_leftovers(points_dir: Path) -> None:
    """Remove temporary directories of runs killed before their rename (``.<id>.tmp-*``)."""
    if not points_dir.is_dir():
        return
    for child in points_dir.iterdir():
        if child.name.startswith(".") and (".tmp-" in child.name or ".old-" in child.name) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def _write_manifest(sweep: Sweep, out: Path) -> None:
    with atomic_file(out / "sweep.yaml") as fh:
        yaml.safe_dump(sweep.manifest(), fh, sort_keys=False, allow_unicode=True)


def _record_failures(results: Sequence[PointResult], failed_dir: Path) -> None:
    for r in results:
        log = failed_dir / f"{r.id}.txt"
        if r.status == "ok":
            if log.exists():
                log.unlink()
            continue
        failed_dir.mkdir(parents=True, exist_ok=True)
        text = f"point {r.index} ({r.id}): {r.status}\n{r.error}\n"
        if r.traceback:
            text += "\n" + r.traceback
        with atomic_file(log) as fh:
            fh.write(text)


def _write_compare(points: Sequence[SweepPoint], points_dir: Path, out: Path) -> Path | None:
    from netsim.report import write_compare

    if not points:
        return None
    dirs = [points_dir / p.id for p in points]
    with atomic_dir(out, force=True, kind="compare") as tmp:  # inside the sweep's own folder
        write_compare(dirs, tmp, baseline=dirs[0])
    return out / "report.html"


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: Any = None,
    reports: bool = True,
    compare: bool = True,
    progress: SweepProgress | None = None,
    force: bool = False,
) -> SweepOutcome:
    """Run the points of ``sweep`` not finished yet and write the results into ``out``.

    Args:
        sweep: the expanded sweep (:func:`netsim.sweep.load_sweep`).
        out: the output folder (created; reused for resuming).
        workers: processes of the local pool; 1 runs in this process.  Default: the CPU
            count (at most one per point to run).  Not used with ``scheduler``.
        scheduler: a Dask scheduler address (``tcp://host:8786``) or a
            ``dask.distributed.Client``; runs one task per point on that cluster.
        reports: write each point's report (``report.html``, figures) besides its tables.
        compare: write the comparison report ``compare/`` (baseline: the first finished point).
        progress: ``fn(done, total, result)`` (see the module docstring).
        force: replace an existing netsim folder of another kind at ``out`` (a sweep folder
            is resumed without it; a folder netsim did not write is always refused).

    Returns:
        The outcome; check :attr:`SweepOutcome.failed`.
    """
    if workers is not None and workers < 1:
        raise NetsimError(f"must be >= 1 (got {workers})", field="--workers")
    t0 = time.perf_counter()
    out_dir = claim_dir(out, kind="sweep", force=force).resolve()
    points_dir = out_dir / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(sweep, out_dir)
    _clean_leftovers(points_dir)

    results: dict[int, PointResult] = {}
    tasks: list[PointTask] = []
    for p in sweep.points:
        if is_finished(points_dir / p.id):
            results[p.index] = PointResult(p.index, p.id, "ok", reused=True)
        else:
            tasks.append(PointTask(p.index, p.id, p.scenario, p.source, p.base_dir, str(points_dir / p.id), reports))
    total = len(sweep.points)
    note = progress or (lambda _d, _t, _r: None)
    note(len(results), total, None)

    stream: Iterator[PointResult]
    if not tasks:
        executor, stream = "none", iter(())
    elif scheduler is not None:
        executor, stream = "dask", _dask(tasks, scheduler)
    else:
        n = min(workers if workers is not None else (os.cpu_count() or 1), len(tasks))
        if n <= 1:
            executor, stream = "serial", _serial(tasks)
        else:
            executor, stream = "process", _process_pool(tasks, n)
    try:
        for res in stream:
            results[res.index] = res
            note(len(results), total, res)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()

    ordered = [results[p.index] for p in sweep.points]
    _record_failures(ordered, out_dir / "failed")
    table = build_table(sweep, points_dir, {r.index: (r.status, r.error) for r in ordered})
    write_results(table, out_dir)
    report = None
    if compare:
        ok = [p for p, r in zip(sweep.points, ordered, strict=True) if r.status == "ok"]
        report = _write_compare(ok, points_dir, out_dir / "compare")
    return SweepOutcome(out_dir, table, ordered, report, executor, time.perf_counter() - t0)
