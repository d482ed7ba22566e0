"""``netsim import kineto|vidur`` and ``netsim replay-chakra``: measured traces in, results out.

``netsim import kineto TRACE.json --out ops.csv [--within NAME] [--start-us/--end-us]
[--kinds cpu_op,kernel]`` aggregates a PyTorch profiler trace into per-op durations
(:mod:`netsim.traces.kineto`).  ``netsim import vidur DIR --out TABLE`` turns Vidur's measured
operator timings (one GPU's profiling folder) into a kernel table with a fitted GEMM surface
(:mod:`netsim.traces.vidur`).  ``netsim replay-chakra DIR --topology PRESET --nodes N --out
RUN`` replays per-rank Chakra JSON traces on a simulated cluster (:mod:`netsim.traces.chakra`)
and writes per-rank times, per-node times, link and flow records atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from netsim.cli.common import (
    check_out_dir,
    check_out_files,
    console,
    force_option,
    load_graph,
    network_setup,
    nodes_option,
    set_option,
    topology_option,
)
from netsim.errors import NetsimError
from netsim.units import format_bytes, format_duration


def register(app: typer.Typer) -> None:
    """Add the ``import`` sub-app (``kineto``) and ``replay-chakra`` to the netsim app."""
    imp = typer.Typer(
        name="import",
        help="Import measured traces (PyTorch profiler / Kineto) into netsim tables.",
        no_args_is_help=True,
    )
    app.add_typer(imp, name="import")

    @imp.command("kineto")
    def import_kineto(
        trace: Path = typer.Argument(..., metavar="TRACE.json", help="Chrome trace from export_chrome_trace."),
        out: Path = typer.Option(..., "--out", "-o", help="Per-op summary table (.csv or .parquet)."),
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
        top: int = typer.Option(15, "--top", min=0, help="Rows to print per kind."),
        force: bool = force_option(),
    ) -> None:
        """Aggregate a PyTorch profiler (Kineto) trace into per-op durations."""
        check_out_files(force, out=out, events=events_out)
        from netsim.traces.kineto import load_kineto, select_events, summarize_ops, write_table_file

        kind_list = None if kinds.strip() == "all" else tuple(k.strip() for k in kinds.split(",") if k.strip())
        tr = load_kineto(trace)
        ev = select_events(tr, kinds=kind_list, start_us=start_us, end_us=end_us, within=within)
        summary = summarize_ops(ev)
        write_table_file(summary, out)
        if events_out is not None:
            write_table_file(ev, events_out)
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
        span_us = float((ev["ts_us"] + ev["dur_us"]).max() - ev["ts_us"].min())
        typer.echo(f"wrote {out} ({len(summary)} ops from {len(ev)} events spanning {format_duration(span_us * 1e-6)})")

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
        import shlex

        check_out_files(force, out=out)
        from netsim.cli import invoked_args
        from netsim.traces.vidur import read_vidur

        table = read_vidur(
            directory,
            tokens_per_octave=tokens_per_octave,
            command="netsim " + " ".join(shlex.quote(a) for a in invoked_args),
            fit_surface=not no_surface,
        )
        table.save(out)
        rt = Table(title=f"{table.meta['vidur_device']}: {len(table.meta['models'])} models, "
                   f"{table.meta['source_measurements']} operator timings", title_justify="left")
        for col in ("kernel", "dtype", "pass", "rows", "min time", "max time"):
            rt.add_column(col, justify="left" if col in ("kernel", "dtype", "pass") else "right")
        for (kernel, dtype, pass_), g in table.df.groupby(["kernel", "dtype", "pass"], sort=True):
            rt.add_row(str(kernel), str(dtype), str(pass_), str(len(g)), format_duration(float(g["time_s"].min())),
                       format_duration(float(g["time_s"].max())))
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

    @app.command("replay-chakra")
    def replay_chakra_cmd(
        trace_dir: Path = typer.Argument(..., metavar="DIR", help="Directory of per-rank Chakra JSON traces."),
        topology: str | None = topology_option(),
        nodes: int | None = nodes_option(),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (written atomically)."),
        routing: str | None = typer.Option(None, "--routing", help="shortest, ecmp, ecmp-pair, spray or pxn."),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        ranks_per_node: int | None = typer.Option(
            None,
            "--ranks-per-node",
            min=1,
            help="Place k ranks on each server (default: fill servers in turn).",
        ),
        compute_scale: float = typer.Option(1.0, "--compute-scale", min=0.0, help="Multiply compute durations."),
        calibration: Path | None = typer.Option(None, "--calibration", help="Fitted link efficiencies (JSON)."),
        overrides: list[str] = set_option(),
        force: bool = force_option(),
    ) -> None:
        """Replay per-rank Chakra execution traces on a simulated cluster."""
        from netsim.traces.chakra import load_chakra, replay_chakra, write_replay

        check_out_dir(out, force)
        if not math.isfinite(compute_scale):
            raise NetsimError(f"must be a finite number >= 0 (got {compute_scale})", field="--compute-scale")
        trace = load_chakra(trace_dir)
        graph = load_graph(topology, nodes, overrides)
        kw, _ = network_setup(graph, calibration, routing, seed)
        res = replay_chakra(
            trace,
            graph,
            None,
            ranks_per_node=ranks_per_node,
            routing=kw.get("routing", "ecmp"),
            seed=kw.get("seed", 0),
            efficiency=kw.get("efficiency"),
            compute_scale=compute_scale,
        )
        write_replay(res, out, force=force)
        rt = Table(title=f"{trace.num_ranks} ranks on {graph.graph.get('name')} ({graph.graph.get('num_nodes')} nodes)")
        for col in ("rank", "device", "end", "compute", "comm", "overlap", "idle", "comm bytes"):
            rt.add_column(col, justify="left" if col == "device" else "right")
        for r in res.ranks.to_dict("records"):
            rt.add_row(
                str(r["rank"]),
                str(r["device"]),
                format_duration(r["end_s"]),
                format_duration(r["compute_s"]),
                format_duration(r["communication_s"]),
                format_duration(r["overlap_s"]),
                format_duration(r["idle_s"]),
                format_bytes(r["comm_bytes"]),
            )
        console.print(rt)
        s = res.summary
        typer.echo(
            f"makespan {format_duration(s['makespan_s'])}, {s['collectives']} collectives, "
            f"{s['p2p_transfers']} send/recv, {s['flows']} flows, "
            f"{format_bytes(s['network_bytes'])} on the network"
        )
        typer.echo(f"wrote {out}")
