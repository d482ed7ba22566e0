"""``netsim profile`` and ``netsim validate-kernels``: measure kernels, check a kernel table.

``netsim profile --device cpu --out netsim/data/kernels/cpu-x.csv`` times the kernel catalogue
with torch over the default grid (``--quick``: a grid of seconds) and writes a kernel table
(CSV or Parquet by extension) atomically.  ``netsim validate-kernels TABLE`` re-measures the
table's kernels on this device and prints the prediction error per kernel.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netsim.cli.common import check_out_files, force_option
from netsim.errors import SpecError


def _split_list(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeated and comma-separated option values -> tuple (None when not given)."""
    if not values:
        return None
    out = tuple(v.strip() for item in values for v in item.split(",") if v.strip())
    return out or None


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[label]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        auto_refresh=False,  # no refresh thread: it would steal the GIL from the timed kernels
    )


def _fmt_rate(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _invoked_args() -> list[str]:
    from netsim.cli import invoked_args

    return invoked_args


def register(app: typer.Typer) -> None:
    """Add ``profile`` and ``validate-kernels`` to the netsim app."""

    @app.command("profile")
    def profile(
        out: Path = typer.Option(..., "--out", "-o", help="Output kernel table (.csv or .parquet)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        quick: bool = typer.Option(False, "--quick", help="Small grid and short budget (seconds)."),
        dtype: list[str] | None = typer.Option(
            None,
            "--dtype",
            help="Dtype(s) to measure, repeatable or comma-separated (default: float32 on cpu, bfloat16 on cuda).",
        ),
        kernels: list[str] | None = typer.Option(
            None, "--kernels", help="Only these kernels (comma-separated or repeated)."
        ),
        budget_s: float | None = typer.Option(
            None,
            "--budget-s",
            help="Seconds of timing per shape and pass (default 0.2 cpu, 0.1 cuda, 0.02 quick).",
        ),
        threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
        force: bool = force_option(),
    ) -> None:
        """Time the kernel catalogue with torch and write a kernel table."""
        check_out_files(force, out=out)
        from netsim.calibration.kernels import KERNELS
        from netsim.calibration.profiler import ProfileOptions, default_grid, profile_kernels, require_torch

        if budget_s is not None and budget_s <= 0:
            raise SpecError(f"must be > 0 (got {budget_s})", field="--budget-s")
        if threads is not None and threads < 1:
            raise SpecError(f"must be >= 1 (got {threads})", field="--threads")
        kern = _split_list(kernels)
        for k in kern or ():
            if k not in KERNELS:
                raise SpecError(f"unknown kernel {k!r}; known: {', '.join(KERNELS)}", field="--kernels")
        options = ProfileOptions(
            device=device,
            dtypes=_split_list(dtype),
            quick=quick,
            kernels=kern,
            budget_s=budget_s,
            threads=threads,
            command="netsim " + " ".join(shlex.quote(a) for a in _invoked_args()),
        )
        options.resolved_dtypes()  # validate before importing torch
        if device not in ("cpu", "cuda"):
            raise SpecError(f"unknown device {device!r}; allowed: cpu, cuda", field="--device")
        require_torch()
        console = Console(stderr=True)
        n_points = len([p for p in default_grid(device, quick) if not kern or p.kernel in kern])
        with _progress(console) as bar:
            task = bar.add_task("profiling", total=n_points * len(options.resolved_dtypes()), label="")

            def step(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, label=label, refresh=True)

            table = profile_kernels(options, progress=step)
        table.save(out)
        _print_profile_summary(table)
        if table.meta.get("disturbed"):
            typer.echo(
                f"warning: other processes kept {table.meta['other_cores']:.2f} cores busy while profiling "
                f"with {table.meta['threads']} threads on {table.meta['cpu_count']} cores; CPU timings are "
                "disturbed (re-run on an idle machine, or with fewer --threads)",
                err=True,
            )
        for s in table.meta.get("skipped", []):
            typer.echo(f"skipped: {s}", err=True)
        typer.echo(f"wrote {out} ({len(table)} rows, {table.meta.get('wall_s', 0):.1f} s)")

    @app.command("validate-kernels")
    def validate_kernels(
        table_path: Path = typer.Argument(..., metavar="TABLE", help="Kernel table (.csv or .parquet)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        quick: bool = typer.Option(False, "--quick", help="At most 3 shapes per kernel and kind, short budget."),
        kernels: list[str] | None = typer.Option(None, "--kernels", help="Only these kernels."),
        points: str = typer.Option("both", "--points", help="grid (the table's shapes), mid (between them) or both."),
        budget_s: float | None = typer.Option(None, "--budget-s", help="Seconds of timing per shape and pass."),
        threads: int | None = typer.Option(
            None, "--threads", help="torch intra-op threads (default: the table's, for a CPU table on cpu)."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Also write per-point results (.csv)."),
        force: bool = force_option(),
    ) -> None:
        """Re-measure a kernel table's kernels on this device and print the prediction error."""
        check_out_files(force, out=out)
        from netsim.calibration.kernels import KernelTable
        from netsim.calibration.profiler import ProfileOptions, cpu_times
        from netsim.calibration.validate import (
            overall_median_abs_pct,
            summarize,
            validate_table,
            validation_points,
        )
        from netsim.io import atomic_file

        table = KernelTable.load(table_path)
        kern = _split_list(kernels)
        max_per = 3 if quick else None
        todo = validation_points(table, kernels=kern, points=points, max_per_kernel=max_per)
        if budget_s is not None and budget_s <= 0:
            raise SpecError(f"must be > 0 (got {budget_s})", field="--budget-s")
        meta = table.meta
        if threads is None and device == "cpu" and meta.get("device") == "cpu" and meta.get("threads"):
            threads = int(meta["threads"])
        if threads is not None and threads < 1:
            raise SpecError(f"must be >= 1 (got {threads})", field="--threads")
        options = ProfileOptions(device=device, quick=quick, budget_s=budget_s, threads=threads)
        console = Console(stderr=True)
        if meta.get("device") and meta.get("device") != device:
            console.print(f"note: the table was measured on {meta.get('device')}, validating on {device}")
        cpu0 = cpu_times()
        t0 = time.perf_counter()
        with _progress(console) as bar:
            task = bar.add_task("measuring", total=len(todo), label="")

            def step(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, label=label, refresh=True)

            results = validate_table(table, options, kernels=kern, points=points, max_per_kernel=max_per, progress=step)
        cpu1 = cpu_times()
        if device == "cpu" and cpu0 is not None and cpu1 is not None:
            other_cores = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / max(time.perf_counter() - t0, 1e-9)
            spare = max((os.cpu_count() or 1) - (threads or os.cpu_count() or 1), 0)
            if other_cores > spare + 0.1:
                typer.echo(
                    f"warning: other processes kept {other_cores:.2f} cores busy while measuring; "
                    "the errors below include that disturbance",
                    err=True,
                )
        summary = summarize(results)
        rt = Table(title=f"prediction error of {table_path} on {device}")
        for col, just in (
            ("kernel", "left"),
            ("dtype", "left"),
            ("pass", "left"),
            ("points", "right"),
            ("median |err| %", "right"),
            ("max |err| %", "right"),
            ("mean err %", "right"),
        ):
            rt.add_column(col, justify=just)  # type: ignore[arg-type]
        for r in summary.to_dict("records"):
            rt.add_row(
                str(r["kernel"]),
                str(r["dtype"]),
                str(r["pass"]),
                str(r["points"]),
                f"{r['median_abs_pct']:.1f}",
                f"{r['max_abs_pct']:.1f}",
                f"{r['mean_pct']:+.1f}",
            )
        Console(width=120).print(rt)
        by_kind = "  ".join(
            f"{kind}: {overall_median_abs_pct(results[results['point'] == kind]):.1f}%"
            for kind in ("grid", "mid")
            if (results["point"] == kind).any()
        )
        typer.echo(f"median |error| over {len(results)} points: {overall_median_abs_pct(results):.1f}%  ({by_kind})")
        if out is not None:
            with atomic_file(out) as fh:
                results.to_csv(fh, index=False, float_format="%.6g")
            typer.echo(f"wrote {out}")


def _print_profile_summary(table: object) -> None:
    """Rows, best achieved FLOP/s and bytes/s per kernel, dtype and pass."""
    from netsim.calibration.kernels import KERNELS, KernelTable

    assert isinstance(table, KernelTable)
    df = table.throughput()
    rt = Table(
        title=f"{table.meta.get('device_name', '')} ({table.meta.get('device', '')}, "
        f"{table.meta.get('threads', '?')} threads, torch {table.meta.get('torch', '?')})"
    )
    for col in ("kernel", "dtype", "pass", "rows", "min time", "max time", "best FLOP/s", "best B/s"):
        rt.add_column(col, justify="left" if col in ("kernel", "dtype", "pass") else "right")
    for (kernel, dtype, pass_), g in df.groupby(["kernel", "dtype", "pass"], sort=False):
        bound = KERNELS[str(kernel)].cost
        rt.add_row(
            str(kernel),
            str(dtype),
            str(pass_),
            str(len(g)),
            f"{g['time_s'].min() * 1e6:.1f} us",
            f"{g['time_s'].max() * 1e3:.2f} ms",
            _fmt_rate(float(g["flops_per_s"].max()), "FLOP/s") + (" *" if bound == "flops" else ""),
            _fmt_rate(float(g["bytes_per_s"].max()), "B/s") + (" *" if bound == "bytes" else ""),
        )
    Console(width=130).print(rt)
