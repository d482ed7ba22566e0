"""``netsim import kineto|vidur`` and ``netsim replay-chakra``: measured traces in, results out.

``netsim import kineto TRACE.json --out ops.csv [--within NAME] [--start-us/--end-us]
[--kinds cpu_op,kernel]`` aggregates a PyTorch profiler trace into per-op durations
(:mod:`netsim.traces.kineto`).  ``netsim import vidur DIR --out TABLE`` turns Vidur's measured
operator timings (one GPU's profiling folder) into a kernel table with a fitted GEMM surface
(:mod:`netsim.traces.vidur`).  ``netsim replay-chakra DIR --topology PRESET --nodes N --out
RUN`` replays per-rank Chakra traces (``.et`` or JSON) on a simulated cluster through the same
replay as ``netsim run`` (:mod:`netsim.traces.chakra_plan`) and writes a run directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

from netsim.cli.common import (
    check_out_dir,
    check_out_files,
    console,
    cost_option,
    force_option,
    load_graph,
    network_setup,
    nodes_option,
    report_writer,
    routing_option,
    set_option,
    topology_option,
)
from netsim.errors import NetsimError, SpecError
from netsim.units import format_bytes, format_duration


def register(app: typer.Typer) -> None:
    """Add the ``import`` sub-app (``kineto``) and ``replay-chakra`` to the netsim app."""
    imp = typer.Typer(
        name="import",
        help="Import measured traces (PyTorch profiler / Kineto) into netsim tables.",
        no_args_is_help=True,
    )
    app.add_typer(imp, name="import")
    _register_import(imp)
    _register_replay(app)


def _register_import(imp: typer.Typer) -> None:
    """``netsim import kineto`` and ``netsim import vidur``."""

    @imp.command("kineto")
    def import_kineto(
        trace: Path = typer.Argument(..., metavar="TRACE.json", help="Chrome trace from export_chrome_trace."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Per-op summary table (.csv or .parquet)."),
        kernel_table: Path | None = typer.Option(
            None,
            "--kernel-table",
            help="Also write the ops that are catalogue kernels as a kernel table "
            "(.csv or .parquet) for netsim run --kernels (needs record_shapes=True).",
        ),
        step_range: str | None = typer.Option(
            None,
            "--step-range",
            help="record_function range that is one step (default: ProfilerStep#*, else the whole trace).",
        ),
        within: str | None = typer.Option(
            None, "--within", help="Only events inside record_function ranges of this name (wildcards ok)."
        ),
        start_us: float | None = typer.Option(None, "--start-us", help="Window start, us after the first event."),
        end_us: float | None = typer.Option(None, "--end-us", help="Window end, us after the first event."),
        kinds: str = typer.Option(
            "cpu_op,kernel,gpu_mem,annotation",
            "--kinds",
            help="Event kinds: cpu_op, kernel, gpu_mem, runtime, annotation, python, other, or 'all'.",
        ),
        events_out: Path | None = typer.Option(None, "--events", help="Also write the selected events."),
        classes: Path | None = typer.Option(
            None,
            "--classes",
            help="Write the GPU kernel time by class (GEMM, attention, FP8 casts, norms, other, "
            "communication; .csv or .parquet): what a layer validation case compares.",
        ),
        per: float = typer.Option(1.0, "--per", help="Divide the --classes times by this (layers in the trace)."),
        streams: str | None = typer.Option(
            None, "--streams", help="--classes: only kernels on these streams (comma-separated trace tids)."
        ),
        top: int = typer.Option(15, "--top", min=0, help="Rows to print per kind."),
        force: bool = force_option(),
    ) -> None:
        """Aggregate a PyTorch profiler (Kineto) trace into per-op durations, a kernel table and/or
        the GPU time by kernel class."""
        check_out_files(force, out=out, events=events_out, classes=classes)
        _check_kineto_options(out, kernel_table, events_out, classes, step_range, start_us, end_us, streams)
        stream_list = [x.strip() for x in streams.split(",") if x.strip()] if streams is not None else None
        _import_kineto(
            trace,
            out,
            kernel_table,
            step_range,
            within,
            start_us,
            end_us,
            kinds,
            events_out,
            top,
            classes=classes,
            per=per,
            streams=stream_list,
        )

    @imp.command("vidur")
    def import_vidur(
        directory: Path = typer.Argument(..., metavar="DIR", help="Vidur profiling folder of one GPU (.../h100)."),
        out: Path = typer.Option(..., "--out", "-o", help="Kernel table to write (.csv or .parquet)."),
        tokens_per_octave: int | None = typer.Option(
            None, "--tokens-per-octave", min=1, help="Keep token counts at least 2^(1/N) apart (default: all)."
        ),
        no_surface: bool = typer.Option(False, "--no-surface", help="Do not fit the GEMM surface."),
        force: bool = force_option(),
    ) -> None:
        """Import Vidur's measured forward-pass operator timings as a kernel table."""
        check_out_files(force, out=out)
        _import_vidur(directory, out, tokens_per_octave, no_surface)

    @imp.command("liger")
    def import_liger(
        csv: Path = typer.Argument(..., metavar="CSV", help="Liger-Kernel's benchmark/data/all_benchmark_data.csv."),
        gpu: str = typer.Option(
            "NVIDIA H100 80GB HBM3", "--gpu", help="The gpu_name whose measurements to import (exactly as in the CSV)."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Kernel table to write (.csv or .parquet)."),
        force: bool = force_option(),
    ) -> None:
        """Import Liger-Kernel's benchmarks of Megatron's SwiGLU and cross-entropy kernels (forward and
        backward) as a kernel table."""
        check_out_files(force, out=out)
        _import_liger(csv, gpu, out)


def _register_replay(app: typer.Typer) -> None:
    """``netsim replay-chakra``."""

    @app.command("replay-chakra")
    def replay_chakra_cmd(
        trace_path: Path = typer.Argument(
            ..., metavar="DIR", help="Directory of per-rank Chakra traces (.et or JSON), or one file."
        ),
        topology: str | None = topology_option(),
        nodes: int | None = nodes_option(),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (atomically)."),
        routing: str | None = routing_option(),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        ranks_per_node: int | None = typer.Option(
            None, "--ranks-per-node", min=1, help="Place k ranks on each server (default: fill servers in turn)."
        ),
        ranks: int | None = typer.Option(
            None, "--ranks", min=1, help="Run a single-rank trace on N ranks (every rank runs it: SPMD)."
        ),
        compute_scale: float = typer.Option(1.0, "--compute-scale", min=0.0, help="Multiply GPU compute durations."),
        calibration: Path | None = typer.Option(None, "--calibration", help="Fitted link efficiencies (JSON)."),
        collective_cost: str | None = cost_option(),
        overrides: list[str] = set_option(),
        no_report: bool = typer.Option(False, "--no-report", help="Skip report.html / figures."),
        force: bool = force_option(),
    ) -> None:
        """Replay Chakra execution traces on a simulated cluster; writes a run directory."""
        _replay_chakra(
            trace_path,
            topology,
            nodes,
            out,
            routing,
            seed,
            ranks_per_node,
            ranks,
            compute_scale,
            calibration,
            collective_cost,
            overrides,
            no_report,
            force,
        )


def _check_kineto_options(
    out: Path | None,
    kernel_table: Path | None,
    events_out: Path | None,
    classes: Path | None,
    step_range: str | None,
    start_us: float | None,
    end_us: float | None,
    streams: str | None = None,
) -> None:
    """The options of ``import kineto`` that the trace does not decide, checked before it is read."""
    import math

    for flag, path in (
        ("--out", out),
        ("--kernel-table", kernel_table),
        ("--events", events_out),
        ("--classes", classes),
    ):
        if path is not None and path.suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise SpecError(f"write a .csv or .parquet file (got {path.name!r})", field=flag)
    for flag, value in (("--start-us", start_us), ("--end-us", end_us)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise SpecError(f"must be a finite number of us >= 0 (got {value})", field=flag)
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise SpecError(f"must be after --start-us {start_us:g} (got {end_us:g})", field="--end-us")
    if step_range is not None and kernel_table is None:
        raise SpecError("sets the step of --kernel-table; give --kernel-table with it", field="--step-range")
    if streams is not None:
        if classes is None:
            raise SpecError("selects the kernels of --classes; give --classes with it", field="--streams")
        if not any(x.strip() for x in streams.split(",")):
            raise SpecError("name at least one stream (a kernel's trace tid, comma-separated)", field="--streams")


def _import_kineto(
    trace: Path,
    out: Path | None,
    kernel_table: Path | None,
    step_range: str | None,
    within: str | None,
    start_us: float | None,
    end_us: float | None,
    kinds: str,
    events_out: Path | None,
    top: int,
    *,
    classes: Path | None = None,
    per: float = 1.0,
    streams: list[str] | None = None,
) -> None:
    """Load the trace; write the kernel table, the per-op summary (and the selected events) and/or
    the kernel time by class."""
    from netsim.traces.kineto import load_kineto, select_events, summarize_ops, write_table_file

    if out is None and kernel_table is None and classes is None:
        raise SpecError("give --out (per-op summary), --kernel-table and/or --classes", field="--out")
    kind_list = None if kinds.strip() == "all" else tuple(k.strip() for k in kinds.split(",") if k.strip())
    tr = load_kineto(trace)
    if kernel_table is not None:
        _write_kernel_table(tr, kernel_table, step_range)
    if classes is not None:
        _write_classes(tr, classes, per, streams)
    if out is None:
        return
    ev = select_events(tr, kinds=kind_list, start_us=start_us, end_us=end_us, within=within)
    summary = summarize_ops(ev)
    write_table_file(summary, out)
    if events_out is not None:
        write_table_file(ev, events_out)
    _print_op_summary(summary, top)
    span_us = float((ev["ts_us"] + ev["dur_us"]).max() - ev["ts_us"].min())
    typer.echo(f"wrote {out} ({len(summary)} ops from {len(ev)} events spanning {format_duration(span_us * 1e-6)})")


def _write_classes(tr: Any, path: Path, per: float, streams: list[str] | None) -> None:
    """Write and print the GPU kernel time by class (netsim.traces.kernel_classes)."""
    from netsim.traces.kernel_classes import class_breakdown
    from netsim.traces.kineto import write_table_file

    df = class_breakdown(tr, per=per, streams=streams)
    write_table_file(df, path)
    rt = Table(title=f"GPU kernel time by class{f' (per {per:g})' if per != 1 else ''}", title_justify="left")
    for col in ("class", "kernels", "summed", "busy"):
        rt.add_column(col, justify="left" if col == "class" else "right")
    for r in df.to_dict("records"):
        rt.add_row(str(r["class"]), str(r["kernels"]), format_duration(r["sum_s"]), format_duration(r["busy_s"]))
    console.print(rt)
    typer.echo(f"wrote {path}")


def _print_op_summary(summary: pd.DataFrame, top: int) -> None:
    """One table per event kind: its ``top`` ops by total time."""
    for kind, g in summary.groupby("kind", sort=False):
        if top == 0:
            break
        rt = Table(title=f"{kind}: {len(g)} ops, {int(g['count'].sum())} events", title_justify="left")
        for col in ("name", "count", "total", "self", "mean", "median", "share"):
            rt.add_column(col, justify="left" if col == "name" else "right", overflow="fold")
        for r in g.head(top).to_dict("records"):
            rt.add_row(
                str(r["name"])[:60],
                str(r["count"]),
                format_duration(r["total_s"]),
                format_duration(r["self_s"]),
                format_duration(r["mean_s"]),
                format_duration(r["median_s"]),
                f"{100 * r['share']:.1f}%",
            )
        console.print(rt)


def _import_vidur(directory: Path, out: Path, tokens_per_octave: int | None, no_surface: bool) -> None:
    """Read Vidur's profiling folder into a kernel table, write it and print what it holds."""
    import shlex

    from netsim.cli import invoked_args
    from netsim.traces.vidur import read_vidur

    table = read_vidur(
        directory,
        tokens_per_octave=tokens_per_octave,
        command="netsim " + " ".join(shlex.quote(a) for a in invoked_args),
        fit_surface=not no_surface,
    )
    table.save(out)
    rt = Table(
        title=f"{table.meta['vidur_device']}: {len(table.meta['models'])} models, "
        f"{table.meta['source_measurements']} operator timings",
        title_justify="left",
    )
    for col in ("kernel", "dtype", "pass", "rows", "min time", "max time"):
        rt.add_column(col, justify="left" if col in ("kernel", "dtype", "pass") else "right")
    for (kernel, dtype, pass_), g in table.df.groupby(["kernel", "dtype", "pass"], sort=True):
        rt.add_row(
            str(kernel),
            str(dtype),
            str(pass_),
            str(len(g)),
            format_duration(float(g["time_s"].min())),
            format_duration(float(g["time_s"].max())),
        )
    console.print(rt)
    for key, surf in (table.meta.get("gemm_surface") or {}).items():
        st = surf["stats"]
        typer.echo(
            f"GEMM surface {key}: large-GEMM asymptote {surf['peak_flops'] / 1e12:.0f} TFLOP/s, memory "
            f"{surf['memory_Bps'] / 1e12:.2f} TB/s, t0 {surf['t0_s'] * 1e6:.1f} us; error on its "
            f"{int(st['points'])} points: median {st['median_abs_pct']:.1f}%, 90th percentile "
            f"{st['p90_abs_pct']:.1f}%"
        )
    typer.echo(f"wrote {out} ({len(table)} rows)")


def _import_liger(csv: Path, gpu: str, out: Path) -> None:
    """Read Liger-Kernel's benchmark CSV into a kernel table, write it and print what it holds."""
    import shlex

    from netsim.cli import invoked_args
    from netsim.traces.liger import read_liger

    table = read_liger(csv, gpu, command="netsim " + " ".join(shlex.quote(a) for a in invoked_args))
    table.save(out)
    rt = Table(title=f"{gpu}: Liger-Kernel's measurements of Megatron's kernels", title_justify="left")
    for col in ("kernel", "pass", "rows", "min time", "max time", "best B/s"):
        rt.add_column(col, justify="left" if col in ("kernel", "pass") else "right")
    df = table.df
    for (kernel, pass_), g in df.groupby(["kernel", "pass"], sort=True):
        rt.add_row(
            str(kernel),
            str(pass_),
            str(len(g)),
            format_duration(float(g["time_s"].min())),
            format_duration(float(g["time_s"].max())),
            f"{float((g['bytes'] / g['time_s']).max()) / 1e12:.2f} TB/s",
        )
    console.print(rt)
    for cell in table.meta.get("skipped", []):
        typer.echo(f"skipped (no backward without both): {cell}")
    typer.echo(f"wrote {out} ({len(table)} rows)")


def _replay_chakra(
    trace_path: Path,
    topology: str | None,
    nodes: int | None,
    out: Path,
    routing: str | None,
    seed: int,
    ranks_per_node: int | None,
    ranks: int | None,
    compute_scale: float,
    calibration: Path | None,
    collective_cost: str | None,
    overrides: list[str],
    no_report: bool,
    force: bool,
) -> None:
    """Load the traces, replay them on the cluster into run directory ``out`` and print the ranks."""
    from netsim.traces.chakra import load_chakra
    from netsim.traces.chakra_plan import replay_chakra

    check_out_dir(out, force)
    if not math.isfinite(compute_scale):
        raise NetsimError(f"must be a finite number >= 0 (got {compute_scale})", field="--compute-scale")
    trace = load_chakra(trace_path, ranks=ranks)
    graph = load_graph(topology, nodes, overrides)
    kw, setup = network_setup(graph, calibration, routing, seed, cost_model=collective_cost)
    outcome = replay_chakra(
        trace,
        graph,
        out,
        engine_kwargs=kw,
        setup=setup,
        ranks_per_node=ranks_per_node,
        compute_scale=compute_scale,
        report=None if no_report else report_writer(),
        force=force,
    )
    _print_trace_run(outcome.summary, outcome.tables["ranks"], out)


def _write_kernel_table(tr: Any, path: Path, step_range: str | None) -> None:
    """Write the kernel table of a Kineto trace and print what it holds and the measured step."""
    import shlex

    from netsim.cli import invoked_args
    from netsim.traces.kineto_kernels import kernel_table_from_kineto

    table = kernel_table_from_kineto(
        tr, step_range=step_range, command="netsim " + " ".join(shlex.quote(a) for a in invoked_args)
    )
    table.save(path)
    kt = Table(
        title=f"kernel table: {table.meta['operator_calls']} operator calls ({table.meta['time_source']})",
        title_justify="left",
    )
    for col in ("kernel", "dtype", "pass", "rows", "calls", "min time", "max time"):
        kt.add_column(col, justify="left" if col in ("kernel", "dtype", "pass") else "right")
    for (kernel, dtype, pass_), g in table.df.groupby(["kernel", "dtype", "pass"], sort=True):
        kt.add_row(
            str(kernel),
            str(dtype),
            str(pass_),
            str(len(g)),
            str(int(g["repeats"].sum())),
            format_duration(float(g["time_s"].min())),
            format_duration(float(g["time_s"].max())),
        )
    console.print(kt)
    typer.echo(f"measured step: {format_duration(table.meta['measured_step_s'])} ({table.meta['measured_step']})")
    typer.echo(f"wrote {path} ({len(table)} rows)")


def _print_trace_run(s: dict[str, Any], ranks: pd.DataFrame, out: Path) -> None:
    """The per-rank breakdown and one line on the trace and its traffic."""
    from netsim.collectives.setup import cost_summary_line

    tr = s["trace"]
    servers = f"{s['num_nodes']} node{'s' if s['num_nodes'] != 1 else ''}"
    rt = Table(
        title=f"{tr['ranks']} ranks on {s['topology']} ({servers}): step (makespan) "
        f"{format_duration(s['step_time_s'])}",
        title_justify="left",
    )
    for col in ("rank", "device", "compute", "comm", "overlap", "idle"):
        rt.add_column(col, justify="left" if col == "device" else "right")
    for r in ranks.to_dict("records"):
        rt.add_row(
            str(r["rank"]),
            str(r["device"]),
            *(format_duration(r[f"{k}_s"]) for k in ("compute", "communication", "overlap", "idle")),
        )
    console.print(rt)
    console.print(cost_summary_line(s["collective_cost"]), markup=False)
    net_bytes = sum(s["bytes_by_class"].values())
    typer.echo(
        f"trace: {tr['nodes']} nodes ({', '.join(tr['forms'])}), {tr['compute_ops']} GPU compute and "
        f"{tr['host_ops']} CPU ops; collectives: {tr['simulated_collectives']} simulated, "
        f"{tr['measured_collectives']} at their measured time, {tr['single_rank_collectives']} of one rank; "
        f"send/recv: {tr['p2p_transfers']}; {s['num_flows']} flows, {format_bytes(net_bytes)} on the network"
    )
    if tr["single_rank_collectives"] and tr["ranks"] == 1:
        typer.echo("(a single-rank trace: its collectives move nothing; --ranks N runs it on N ranks)")
    typer.echo(f"wrote {out}")
