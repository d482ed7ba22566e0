"""``netsim sweep``: run a grid of scenarios and collect one result table.

::

    netsim sweep SWEEP.yaml [--out DIR] [--workers N] [--scheduler ADDRESS] [--no-reports]
                            [--dry-run] [--quiet]

Every point is validated before anything runs (a bad value is one line naming the sweep file,
the field and the point, exit 2).  Points run in a local process pool (``--workers``, default
the CPU count; ``--workers 1`` runs them one after the other in this process) or on a Dask
cluster (``--scheduler tcp://host:8786``).  The output folder (default ``sweeps/<name>``)
holds one run directory per point, ``results.csv`` / ``results.parquet`` and a comparison
report; running the command again runs only the points not finished yet.  The command exits
2 when a point failed, after writing the results of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from netsim.cli.common import check_out_dir, console, err_console, force_option
from netsim.cli.progress import PhaseProgress
from netsim.errors import NetsimError
from netsim.units import format_duration

if TYPE_CHECKING:
    from netsim.sweep.execute import SweepOutcome
    from netsim.sweep.spec import Sweep


def _points_table(sweep: Any, statuses: dict[int, str], table: Any) -> Table:
    """Point, varied values, step time and what happened to it in this call."""
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    t.add_column("#", justify="right", no_wrap=True, min_width=len(str(len(sweep.points) - 1)))
    headers = [_header(f, sweep.fields) for f in sweep.fields]
    cells = [[_inline(p.values[f]) for p in sweep.points] for f in sweep.fields]
    need = [max(len(h), *(len(c) for c in col)) for h, col in zip(headers, cells, strict=True)]
    room = console.width - len(str(len(sweep.points))) - 9 - 6 - 2 * (len(need) + 3)
    cap = _cap(need, room)
    for h in headers:  # long values are cut, with an ellipsis, to fit the terminal
        t.add_column(h, no_wrap=True, overflow="ellipsis", max_width=cap)
    t.add_column("step time", justify="right", no_wrap=True, min_width=9)
    t.add_column("status", no_wrap=True, min_width=6)
    for i, p in enumerate(sweep.points):
        row: list[str | Text] = [str(p.index), *(Text(col[i]) for col in cells)]
        st = table["step_time_s"].iloc[i] if "step_time_s" in table.columns else None
        row.append(format_duration(float(st)) if st is not None and st == st else "-")
        row.append(statuses.get(p.index, "-"))
        t.add_row(*row)
    return t


def _cap(need: Sequence[int], room: int) -> int:
    """The largest column width ``c`` with ``sum(min(n, c) for n in need) <= room`` (at least 8)."""
    if not need or sum(need) <= room:
        return max(need, default=8)
    c = max(need)
    while c > 8 and sum(min(n, c) for n in need) > room:
        c -= 1
    return c


def _show(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _header(field: str, fields: Sequence[str]) -> str:
    """The last component of a dotted field (the one before ``name``), if unambiguous."""

    def short(f: str) -> str:
        parts = f.split(".")
        return parts[-2] if len(parts) > 1 and parts[-1] == "name" else parts[-1]

    mine = short(field)
    return mine if sum(short(f) == mine for f in fields) == 1 else field


def _inline(value: Any) -> str:
    """A swept value as the table shows it (text as it is, anything else as YAML flow)."""
    from netsim.config.common import flow_value

    return value if isinstance(value, str) else flow_value(value)


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_cmd(
        sweep_file: Path = typer.Argument(..., help="Sweep YAML: a base scenario and a grid of fields."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: sweeps/<name>)."),
        workers: int | None = typer.Option(
            None, "--workers", "-j", min=1, help="Local worker processes (default: CPU count; 1 = serial)."
        ),
        scheduler: str | None = typer.Option(
            None, "--scheduler", help="Dask scheduler address (tcp://host:8786): run the points there."
        ),
        no_reports: bool = typer.Option(
            False, "--no-reports", help="Skip each point's report and the comparison report."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the points; run nothing."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
        force: bool = force_option(),
    ) -> None:
        """Run a grid of scenarios (process pool or Dask) into one result table."""
        _sweep(sweep_file, out, workers, scheduler, no_reports, dry_run, quiet, force)


def _sweep(
    sweep_file: Path,
    out: Path | None,
    workers: int | None,
    scheduler: str | None,
    no_reports: bool,
    dry_run: bool,
    quiet: bool,
    force: bool,
) -> None:
    """Load and check the sweep; list its points (``dry_run``) or run them and print the outcome."""
    from netsim.sweep import load_sweep

    if workers is not None and scheduler is not None:
        raise NetsimError("give --workers or --scheduler, not both", field="--workers")
    sweep = load_sweep(sweep_file)
    out_dir = out if out is not None else Path("sweeps") / sweep.name
    if not dry_run:
        check_out_dir(out_dir, force, resume="sweep")
    excluded = f", {sweep.excluded} excluded" if sweep.excluded else ""
    header = f"[bold]sweep {sweep.name}[/bold]: {len(sweep.points)} points{excluded} ({sweep.source})"
    if dry_run:
        console.print(header, soft_wrap=True)
        for p in sweep.points:
            console.print(f"{p.index:>4}  {p.id}  {p.describe()}", soft_wrap=True, markup=False)
        return
    statuses: dict[int, str] = {}
    outcome = _run_points(sweep, out_dir, workers, scheduler, no_reports, quiet, force, statuses)
    for r in outcome.results:
        if r.reused:
            statuses[r.index] = "reused"
    console.print(header, soft_wrap=True)
    console.print(_points_table(sweep, statuses, outcome.table))
    _print_outcome(outcome)


def _run_points(
    sweep: Sweep,
    out_dir: Path,
    workers: int | None,
    scheduler: str | None,
    no_reports: bool,
    quiet: bool,
    force: bool,
    statuses: dict[int, str],
) -> SweepOutcome:
    """Run the sweep's points with a progress display, noting in ``statuses`` what happened to each."""
    from netsim.sweep import PointResult, run_sweep

    def record(result: PointResult | None) -> None:
        if result is not None:
            statuses[result.index] = "reused" if result.reused else result.status if result.status != "ok" else "ran"

    with PhaseProgress(err_console, f"netsim sweep {sweep.name}", enabled=not quiet) as bar:

        def progress(done: int, total: int, result: PointResult | None) -> None:
            record(result)
            last = "" if result is None else f"{done}/{total} points, {result.id}: {result.status}"
            bar("points", done / max(total, 1), last)

        return run_sweep(
            sweep,
            out_dir,
            workers=workers,
            scheduler=scheduler,
            reports=not no_reports,
            compare=not no_reports,
            progress=progress,
            force=force,
        )


def _print_outcome(outcome: SweepOutcome) -> None:
    """What ran, where the results are; an error naming the first failed point if any failed."""
    ran, reused = len(outcome.ran), len(outcome.reused)
    how = f" ({outcome.executor})" if ran else ""
    console.print(
        f"ran {ran} point(s){how}, reused {reused}, failed {len(outcome.failed)} in {format_duration(outcome.wall_s)}",
        soft_wrap=True,
    )
    console.print(f"results: {_show(outcome.path / 'results.csv')} (and .parquet)", soft_wrap=True, markup=False)
    console.print(f"run directories: {_show(outcome.path / 'points')}/<id>", soft_wrap=True, markup=False)
    if outcome.compare is not None:
        console.print(f"compare report: {_show(outcome.compare)}", soft_wrap=True, markup=False)
    if outcome.failed:
        first = next(r for r in outcome.results if r.status != "ok")
        raise NetsimError(
            f"{len(outcome.failed)} of {len(outcome.results)} points failed (point {first.index}: "
            f"{first.error}); see the status and error columns",
            source=_show(outcome.path / "results.csv"),
        )
