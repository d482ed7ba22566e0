"""``netsim profile`` and ``netsim validate-kernels``: measure kernels, check a kernel table.

``netsim profile --device cpu --out netsim/data/kernels/cpu-x.csv`` times the kernel catalogue
with torch over the default grid (on cpu each series up to 20 ms a call, under a minute;
``--full``: every shape, minutes; ``--quick``: a grid of seconds) and writes a kernel table
(CSV or Parquet by extension) atomically.  ``netsim validate-kernels TABLE`` re-measures the
table's kernels on this device and prints the prediction error per kernel.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from netsim.cli.common import check_out_files, force_option
from netsim.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd

    from netsim.calibration.kernels import KernelTable
    from netsim.calibration.profiler import ProfileOptions


def _split_list(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeated and comma-separated option values -> tuple (None when not given)."""
    if not values:
        return None
    out = tuple(v.strip() for item in values for v in item.split(",") if v.strip())
    return out or None


def _progress(console: Console) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    _register_profile(app)
    _register_validate(app)


def _register_profile(app: typer.Typer) -> None:
    """``netsim profile``."""

    @app.command("profile")
    def profile(
        out: Path = typer.Option(..., "--out", "-o", help="Output kernel table (.csv or .parquet)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        quick: bool = typer.Option(False, "--quick", help="Small grid and short budget (seconds)."),
        full: bool = typer.Option(
            False,
            "--full",
            help="cpu: every shape of the grid with a 0.2 s budget (minutes; the shipped table's recipe). "
            "Default: each series stops before a shape that takes over 20 ms a call, 0.05 s budget.",
        ),
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
            help="Seconds of timing per shape and pass (default cpu 0.05, cpu --full 0.2, cuda 0.1, quick 0.02).",
        ),
        threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
        soak_s: float = typer.Option(
            0.0,
            "--soak-s",
            help="Seconds of back-to-back large GEMMs before timing, so the device runs at the clocks it "
            "sustains under load (the metadata keeps the soak's GEMM rate and, on NVIDIA GPUs, clocks, "
            "power and throttle reasons). Default 0: none.",
        ),
        force: bool = force_option(),
    ) -> None:
        """Time the kernel catalogue with torch and write a kernel table."""
        check_out_files(force, out=out)
        if full and quick:
            raise SpecError("--full and --quick exclude each other", field="--full")
        _profile(out, device, quick, dtype, kernels, budget_s, threads, full, soak_s)


def _register_validate(app: typer.Typer) -> None:
    """``netsim validate-kernels``."""

    @app.command("validate-kernels")
    def validate_kernels(
        table_path: Path = typer.Argument(..., metavar="TABLE", help="Kernel table (.csv or .parquet)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        quick: bool = typer.Option(
            False,
            "--quick",
            help="At most 3 shapes per kernel and kind, among those the table predicts under 50 ms "
            "(all passes), short budget.",
        ),
        kernels: list[str] | None = typer.Option(None, "--kernels", help="Only these kernels."),
        points: str = typer.Option("both", "--points", help="grid (the table's shapes), mid (between them) or both."),
        budget_s: float | None = typer.Option(None, "--budget-s", help="Seconds of timing per shape and pass."),
        threads: int | None = typer.Option(
            None, "--threads", help="torch intra-op threads (default: the table's, for a CPU table on cpu)."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Also write per-point results (.csv)."),
        holdout: str | None = typer.Option(
            None,
            "--holdout",
            help="No device: refit the GEMM surface without each model ('model') or every "
            "other token count ('alternate') and predict the held-out points.",
        ),
        published: bool = typer.Option(
            False,
            "--published",
            help="No device: predict published GEMM and attention measurements (published-gemm.csv, "
            "published-attention.csv).",
        ),
        published_file: Path | None = typer.Option(
            None, "--published-file", help="Other published measurements (either file's format)."
        ),
        topology: str | None = typer.Option(
            None,
            "--topology",
            "-t",
            help="Preset whose accelerator compute profile --published uses "
            "(default: dgx-h100 for an h100 table, dgx-a100 for an a100 table).",
        ),
        dtype: str | None = typer.Option(None, "--dtype", help="GEMM dtype for --holdout (default: the table's)."),
        force: bool = force_option(),
    ) -> None:
        """Check a kernel table: re-measure it on this device, or (no device) hold points out of the
        GEMM surface fit, or predict published GEMM and attention measurements."""
        check_out_files(force, out=out)
        if holdout is not None or published:
            _offline_reports(table_path, holdout, published, published_file, topology, dtype, out)
            return
        _measure_report(table_path, device, quick, kernels, points, budget_s, threads, out)


def _profile(
    out: Path,
    device: str,
    quick: bool,
    dtype: list[str] | None,
    kernels: list[str] | None,
    budget_s: float | None,
    threads: int | None,
    full: bool = False,
    soak_s: float = 0.0,
) -> None:
    """Check the options, time the catalogue (progress bar on stderr), write and summarise the table."""
    from netsim.calibration.profiler import default_grid, profile_kernels, require_torch

    options = _profile_options(device, quick, dtype, kernels, budget_s, threads, full, soak_s)
    require_torch()
    console = Console(stderr=True)
    kern = options.kernels
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
    if (sk := table.meta.get("soak")) is not None:
        clocks = [
            f"{st['sm_clock_mhz']:.0f} MHz"
            for st in (sk.get("gpu_before"), sk.get("gpu_after"), sk.get("gpu_after_measuring"))
            if st and st.get("sm_clock_mhz") is not None
        ]
        typer.echo(
            f"soak: {sk['seconds']:.1f} s of {sk['gemm_n']}^3 {sk['dtype']} GEMMs, {sk['tflops_first_s']:.1f} -> "
            f"{sk['tflops_last_s']:.1f} TFLOP/s (first -> last second)"
            + (f"; SM clock {' -> '.join(clocks)} (before, after the soak, after measuring)" if clocks else "")
        )
    typer.echo(f"wrote {out} ({len(table)} rows, {table.meta.get('wall_s', 0):.1f} s)")


def _profile_options(
    device: str,
    quick: bool,
    dtype: list[str] | None,
    kernels: list[str] | None,
    budget_s: float | None,
    threads: int | None,
    full: bool = False,
    soak_s: float = 0.0,
) -> ProfileOptions:
    """The profiler's options from the command line, checked before torch is imported."""
    from netsim.calibration.kernels import KERNELS
    from netsim.calibration.profiler import ProfileOptions

    if budget_s is not None and budget_s <= 0:
        raise SpecError(f"must be > 0 (got {budget_s})", field="--budget-s")
    if threads is not None and threads < 1:
        raise SpecError(f"must be >= 1 (got {threads})", field="--threads")
    if not (math.isfinite(soak_s) and 0 <= soak_s <= 3600):
        raise SpecError(f"must be between 0 and 3600 seconds (got {soak_s})", field="--soak-s")
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
        full=full,
        soak_s=soak_s,
        command="netsim " + " ".join(shlex.quote(a) for a in _invoked_args()),
    )
    options.resolved_dtypes()  # validate before importing torch
    if device not in ("cpu", "cuda"):
        raise SpecError(f"unknown device {device!r}; allowed: cpu, cuda", field="--device")
    return options


def _offline_reports(
    table_path: Path,
    holdout: str | None,
    published: bool,
    published_file: Path | None,
    topology: str | None,
    dtype: str | None,
    out: Path | None,
) -> None:
    """The checks that need no device: held-out surface points and/or published measurements."""
    from netsim.calibration.kernels import KernelTable

    table = KernelTable.load(table_path)
    if holdout is not None:
        _holdout_report(table, str(table_path), holdout, dtype, out)
    if published:
        _published_report(table, str(table_path), published_file, topology, out if holdout is None else None)


def _measure_report(
    table_path: Path,
    device: str,
    quick: bool,
    kernels: list[str] | None,
    points: str,
    budget_s: float | None,
    threads: int | None,
    out: Path | None,
) -> None:
    """Re-measure a table's shapes on this device and print the prediction error."""
    from netsim.calibration.kernels import KernelTable
    from netsim.calibration.profiler import ProfileOptions, cpu_times
    from netsim.calibration.validate import QUICK_MAX_PER_KERNEL, QUICK_MAX_POINT_S, validate_table, validation_points
    from netsim.io import atomic_file

    table = KernelTable.load(table_path)
    kern = _split_list(kernels)
    max_per, max_s = (QUICK_MAX_PER_KERNEL, QUICK_MAX_POINT_S) if quick else (None, None)
    todo = validation_points(table, kernels=kern, points=points, max_per_kernel=max_per, max_point_s=max_s)
    if budget_s is not None and budget_s <= 0:
        raise SpecError(f"must be > 0 (got {budget_s})", field="--budget-s")
    meta = table.meta
    if threads is None and device == "cpu" and meta.get("device") == "cpu" and meta.get("threads"):
        threads = int(meta["threads"])
    if threads is not None and threads < 1:
        raise SpecError(f"must be >= 1 (got {threads})", field="--threads")
    # every requested shape, with the full budget unless --quick
    options = ProfileOptions(device=device, quick=quick, full=not quick, budget_s=budget_s, threads=threads)
    console = Console(stderr=True)
    if meta.get("device") and meta.get("device") != device:
        console.print(f"note: the table was measured on {meta.get('device')}, validating on {device}")
    cpu0 = cpu_times()
    t0 = time.perf_counter()
    with _progress(console) as bar:
        task = bar.add_task("measuring", total=len(todo), label="")

        def step(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, label=label, refresh=True)

        results = validate_table(
            table, options, kernels=kern, points=points, max_per_kernel=max_per, max_point_s=max_s, progress=step
        )
    cpu1 = cpu_times()
    if device == "cpu" and cpu0 is not None and cpu1 is not None:
        _warn_if_disturbed(cpu0, cpu1, time.perf_counter() - t0, threads)
    _print_errors(results, table_path, device)
    if out is not None:
        with atomic_file(out) as fh:
            results.to_csv(fh, index=False, float_format="%.6g")
        typer.echo(f"wrote {out}")


def _warn_if_disturbed(
    cpu0: tuple[float, float], cpu1: tuple[float, float], wall_s: float, threads: int | None
) -> None:
    """Warn when other processes kept more cores busy than the measurement left free
    (``cpu0``/``cpu1``: the machine's and this process's CPU seconds before and after)."""
    other_cores = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / max(wall_s, 1e-9)
    spare = max((os.cpu_count() or 1) - (threads or os.cpu_count() or 1), 0)
    if other_cores > spare + 0.1:
        typer.echo(
            f"warning: other processes kept {other_cores:.2f} cores busy while measuring; "
            "the errors below include that disturbance",
            err=True,
        )


def _print_errors(results: pd.DataFrame, table_path: Path, device: str) -> None:
    """The prediction error per kernel, dtype and pass, and the median over all points."""
    from netsim.calibration.validate import overall_median_abs_pct, summarize

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


def _write_csv(df: object, out: Path) -> None:
    import pandas as pd

    from netsim.io import atomic_file

    assert isinstance(df, pd.DataFrame)
    with atomic_file(out) as fh:
        df.to_csv(fh, index=False, float_format="%.6g")
    typer.echo(f"wrote {out}")


def _holdout_report(table: object, name: str, by: str, dtype: str | None, out: Path | None) -> None:
    """Surface error on held-out GEMM points, per held-out group."""
    from netsim.calibration.validate import holdout_errors, summarize_errors

    res = holdout_errors(table, by, dtype=dtype)  # type: ignore[arg-type]
    summary = summarize_errors(res, "group")
    rt = Table(title=f"GEMM surface error on held-out points of {name} (fit without them)")
    for col in ("held out", "points", "median |err| %", "p90 |err| %", "max |err| %", "mean err %"):
        rt.add_column(col, justify="left" if col == "held out" else "right")
    for r in summary.to_dict("records"):
        rt.add_row(
            str(r["group"]),
            str(r["points"]),
            f"{r['median_abs_pct']:.1f}",
            f"{r['p90_abs_pct']:.1f}",
            f"{r['max_abs_pct']:.1f}",
            f"{r['mean_pct']:+.1f}",
        )
    Console(width=120).print(rt)
    err = res["error_pct"].abs()
    typer.echo(
        f"all {len(res)} held-out points: median |error| {err.median():.1f}%, 90th percentile {err.quantile(0.9):.1f}%"
    )
    if out is not None:
        _write_csv(res, out)


_DEFAULT_TOPOLOGY = {"h100": "dgx-h100", "a100": "dgx-a100"}


def _published_report(table: object, name: str, path: Path | None, topology: str | None, out: Path | None) -> None:
    """Published measurements on this table's GPU against netsim: GEMMs with the compute model
    built on the table, the attention core with its compute profile's curves (a ``path`` of
    either format replaces that format's shipped file and skips the other)."""
    import pandas as pd

    from netsim.calibration.kernels import KernelTable
    from netsim.calibration.published import SAME_COMPUTE, load_published, load_published_attention
    from netsim.topology import load_topology

    assert isinstance(table, KernelTable)
    gpu = str(table.meta.get("vidur_device") or table.meta.get("gpu") or "").lower()
    preset = topology or _DEFAULT_TOPOLOGY.get(gpu)
    if preset is None:
        raise SpecError(f"cannot tell which GPU {name} measured; give --topology PRESET", field="--topology")
    gemm_rows: pd.DataFrame | None
    attn_rows: pd.DataFrame | None
    if path is None:  # both shipped files
        gemm_rows, attn_rows = load_published(), load_published_attention()
    elif "impl" in _csv_columns(path):  # the user's attention measurements
        gemm_rows, attn_rows = None, load_published_attention(path)
    else:  # the user's GEMM measurements
        gemm_rows, attn_rows = load_published(path), None

    def ours(rows: pd.DataFrame | None) -> pd.DataFrame | None:
        return None if rows is None else rows[rows["gpu"].map(lambda g: SAME_COMPUTE.get(g, g)) == gpu]

    gemm_rows, attn_rows = ours(gemm_rows), ours(attn_rows)
    if (gemm_rows is None or gemm_rows.empty) and (attn_rows is None or attn_rows.empty):
        raise SpecError(
            f"no published measurements for {gpu or 'this GPU'} in {path or 'published-gemm.csv'}", field="--published"
        )
    acc = load_topology(preset, nodes=1).graph["accelerator"]
    parts = []
    if gemm_rows is not None and not gemm_rows.empty:
        parts.append(_published_gemm_table(acc, table, name, gemm_rows))
    if attn_rows is not None and not attn_rows.empty:
        parts.append(_published_attention_table(acc, attn_rows, str(path or "published-attention.csv")))
    if out is not None:
        _write_csv(pd.concat(parts, ignore_index=True), out)


def _csv_columns(path: Path) -> list[str]:
    """The header of a published-measurements CSV (``#`` lines skipped); [] when unreadable
    (the loader then names the problem)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip() and not line.startswith("#"):
                    return [c.strip() for c in line.split(",")]
    except (OSError, UnicodeDecodeError):
        return []
    return []


def _published_summary(res: pd.DataFrame, what: str) -> None:
    """The one-line summary under a published-measurements table."""
    typer.echo(
        f"{len(res)} published {what} measurements: median |error| {res['error_pct'].abs().median():.1f}% "
        "(error in time: + = netsim slower than published)"
    )


def _published_gemm_table(acc: dict, table: KernelTable, name: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Print published GEMMs against the compute model built on ``table``; the results frame."""
    from netsim.calibration.models import make_compute_model
    from netsim.calibration.published import published_errors

    model = make_compute_model(acc, table, default_dtype="bfloat16")
    res = published_errors(model, rows)
    rt = Table(title=f"published GEMMs vs {getattr(model, 'name', name)}")
    for col in ("source", "gpu", "dtype", "shape", "published", "netsim", "err %"):
        rt.add_column(col, justify="right" if col in ("published", "netsim", "err %") else "left")
    for r in res.to_dict("records"):
        shape = f"{r['m']}x{r['n']}x{r['k']}" + (f" x{r['groups']} experts" if r["kind"] == "grouped" else "")
        rt.add_row(
            str(r["source"])[:28],
            r["gpu"],
            r["dtype"],
            shape,
            f"{r['published_tflops']:.0f} TF",
            f"{r['predicted_tflops']:.0f} TF",
            f"{r['error_pct']:+.1f}",
        )
    Console(width=130).print(rt)
    _published_summary(res, "GEMM")
    return res


def _published_attention_table(acc: dict, rows: pd.DataFrame, src: str) -> pd.DataFrame:
    """Print published attention measurements against the accelerator's compute profile's
    curves; the results frame (``kind`` = attention)."""
    from netsim.calibration.profiles import COMPUTE_PROFILES
    from netsim.calibration.published import published_attention_errors
    from netsim.units import parse_bandwidth

    compute = acc.get("compute") or {}
    profile = COMPUTE_PROFILES.get(str(compute.get("profile") or "roofline"))
    if not profile.attention_kernels:
        raise SpecError(f"compute profile {profile.name!r} has no attention curves to check", field="--topology")
    mem = parse_bandwidth(acc.get("memory_Bps", 0), "accelerator.memory_bandwidth")
    res = published_attention_errors(profile, rows, mem, field=f"{src}: impl")
    rt = Table(title=f"published attention (causal) vs the {profile.name} profile's curves")
    for col in ("source", "gpu", "kernel", "b x h x s x d", "pass", "published", "netsim", "err %"):
        rt.add_column(col, justify="right" if col in ("published", "netsim", "err %") else "left")
    for r in res.to_dict("records"):
        rt.add_row(
            str(r["source"])[:28],
            r["gpu"],
            r["impl"],
            f"{r['batch']}x{r['heads']}x{r['seq']}x{r['head_dim']}",
            r["pass"],
            f"{r['published_tflops']:.0f} TF",
            f"{r['predicted_tflops']:.0f} TF",
            f"{r['error_pct']:+.1f}",
        )
    Console(width=130).print(rt)
    _published_summary(res, "attention")
    return res.assign(kind="attention")


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
