"""``netsim calibrate nccl``: fit link efficiencies and the collective latency to nccl-tests logs.

::

    netsim calibrate nccl all_reduce_1n.log all_reduce_2n.log --topology dgx-h100 --out cal.yaml
        [--nodes N] [--algo ring] [--routing ecmp] [--set key=value ...] [--max-sizes 6]
        [--collective-cost nccl|ideal]

Under the ``nccl`` cost model (the default) the fit finds the link efficiencies and the scale of
NCCL's latencies; under ``ideal`` the efficiencies and a per-step latency.

Every run in the logs (op, ranks and hosts from the log itself) is simulated on the topology
with as many nodes as the run had hosts (``--nodes`` only for logs without ``#  Rank`` lines)
and the ranks-per-host first GPUs of each node.  The fit (see :mod:`netsim.calibration.fit`)
prints the error per message size and writes the calibration YAML atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from netsim.cli.common import (
    check_out_files,
    cost_option,
    force_option,
    load_graph,
    nodes_option,
    routing_option,
    set_option,
    topology_option,
)
from netsim.errors import NetsimError

if TYPE_CHECKING:
    import networkx as nx

    from netsim.calibration.fit import Calibration, FitCase
    from netsim.calibration.nccl import NcclRun


def register(app: typer.Typer) -> None:
    calibrate_app = typer.Typer(help="Fit model parameters to measurements.", no_args_is_help=True)

    @calibrate_app.command("nccl")
    def nccl_cmd(
        logs: list[Path] = typer.Argument(..., help="nccl-tests logs (stdout of *_perf)."),
        topology: str = topology_option(),
        nodes: int | None = nodes_option(),
        out: Path = typer.Option(..., "--out", "-o", help="Calibration YAML to write."),
        algo: str | None = typer.Option(None, "--algo", "-a", help="Algorithm to simulate (default: the op's)."),
        op: str | None = typer.Option(None, "--op", help="Collective of logs that do not say (e.g. all_reduce)."),
        overrides: list[str] = set_option(),
        routing: str | None = routing_option(),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        max_sizes: int = typer.Option(6, "--max-sizes", min=2, help="Sizes per run used in the optimisation."),
        collective_cost: str | None = cost_option(),
        force: bool = force_option(),
    ) -> None:
        """Fit per-link-class efficiency and the collective latency to nccl-tests LOGS."""
        check_out_files(force, out=out)
        _calibrate_nccl(logs, topology, nodes, out, algo, op, overrides, routing, seed, max_sizes, collective_cost)

    app.add_typer(calibrate_app, name="calibrate")


def _calibrate_nccl(
    logs: list[Path],
    topology: str,
    nodes: int | None,
    out: Path,
    algo: str | None,
    op: str | None,
    overrides: list[str],
    routing: str | None,
    seed: int,
    max_sizes: int,
    collective_cost: str | None,
) -> None:
    """Read the logs, fit the calibration to their runs, print the errors and write ``out``."""
    from netsim.calibration.fit import fit_calibration
    from netsim.calibration.nccl import read_nccl_runs
    from netsim.collectives.setup import default_routing

    runs = read_nccl_runs(logs, op=op)
    graphs: dict[int, nx.DiGraph] = {}
    cases = [_fit_case(run, topology, nodes, algo, overrides, graphs) for run in runs]
    cost = collective_cost or "nccl"
    if cost not in ("nccl", "ideal"):
        raise NetsimError(f"unknown collective cost model {cost!r}; allowed: nccl, ideal", field="--collective-cost")
    route = routing or default_routing(next(iter(graphs.values())))
    cal = fit_calibration(
        cases,
        routing=route,
        seed=seed,
        max_sizes=max_sizes,
        topology=topology,
        nodes=max(graphs) if graphs else nodes,
        source_logs=[str(p) for p in logs],
        cost_model=cost,
        progress=lambda m: typer.echo(f"# {m}"),
    )
    _print_fit(cal)
    cal.save(out)
    typer.echo(f"# wrote {out}")


def _run_nodes(run: NcclRun, nodes: int | None) -> int:
    """The nodes a logged run spans: its hosts, or ``--nodes`` for a log without ``#  Rank`` lines."""
    if not run.hosts and nodes is None:
        raise NetsimError(
            f"line {run.line}: the run has no '#  Rank' lines (nccl-tests prints one per rank), "
            "so its hosts are unknown: pass --nodes",
            source=run.source,
        )
    run_nodes = run.nnodes if run.hosts else (nodes or 1)
    if run.hosts and nodes is not None and nodes != run.nnodes:
        raise NetsimError(
            f"line {run.line}: the run has ranks on {run.nnodes} hosts but --nodes is {nodes}", source=run.source
        )
    if run.nranks % run_nodes:
        raise NetsimError(
            f"line {run.line}: {run.nranks} ranks do not divide over {run_nodes} nodes", source=run.source
        )
    return run_nodes


def _fit_case(
    run: NcclRun,
    topology: str,
    nodes: int | None,
    algo: str | None,
    overrides: list[str],
    graphs: dict[int, nx.DiGraph],
) -> FitCase:
    """The fit case of one logged run: its topology (built once per node count, kept in
    ``graphs``), its ranks' GPUs and its measured sizes > 0."""
    import numpy as np

    from netsim.calibration.fit import FitCase
    from netsim.collectives.executor import accelerators
    from netsim.collectives.registry import get_algorithm
    from netsim.limits import check_fits, estimate_collective, size_check_enabled
    from netsim.topology import estimate_spec, load_topology_spec_ref

    get_algorithm(run.op, algo)
    run_nodes = _run_nodes(run, nodes)
    if topology:  # refuse a run too large for this machine before building its topology
        spec, _ = load_topology_spec_ref(topology, run_nodes, tuple(overrides))
        check_fits(
            estimate_collective(estimate_spec(spec), run.op, run.nranks),
            enabled=size_check_enabled(),
            source=run.source,
        )
    if run_nodes not in graphs:
        graphs[run_nodes] = load_graph(topology, run_nodes, overrides)
    graph = graphs[run_nodes]
    per = run.nranks // run_nodes
    devices = accelerators(graph, per_node=per)
    if len(devices) != run.nranks:
        raise NetsimError(
            f"line {run.line}: the run has {run.nranks} ranks ({per} per node) but "
            f"{topology} with {run_nodes} nodes has {len(devices)} such GPUs",
            source=run.source,
        )
    df = run.rows[run.rows["size_bytes"] > 0]
    if df.empty:
        raise NetsimError(f"line {run.line}: no row with a size > 0", source=run.source)
    if len(df) < len(run.rows):  # size-0 rows time only the launch: nothing to fit a bandwidth to
        typer.echo(f"# {run.source} line {run.line}: {len(run.rows) - len(df)} row(s) of size 0 ignored")
    return FitCase(
        graph=graph,
        op=run.op,
        devices=devices,
        algo=algo,
        sizes_bytes=df["size_bytes"].to_numpy(dtype=np.int64),
        measured_s=df["oop_time_us"].to_numpy(dtype=float) * 1e-6,
        source=run.source,
        nnodes=run_nodes,
    )


def _print_fit(cal: Calibration) -> None:
    """The error per measured size, then the fitted parameters and what the logs left open."""
    typer.echo(
        f"# {'source':<28s} {'op':<14s} {'ranks':>5s} {'nodes':>5s} {'size':>12s} "
        f"{'measured_us':>12s} {'simulated_us':>12s} {'error':>8s}"
    )
    for p in cal.points:
        src = p.source if len(p.source) <= 28 else "..." + p.source[-25:]
        typer.echo(
            f"  {src:<28s} {p.op:<14s} {p.nranks:5d} {p.nnodes:5d} {p.size_bytes:12d} "
            f"{p.measured_us:12.2f} {p.simulated_us:12.2f} {p.rel_error * 100:7.2f}%"
        )
    eff = ", ".join(f"{k}={v:.4f}" for k, v in sorted(cal.link_efficiency.items())) or "none"
    lat = (
        f"step latency: {cal.step_latency_s * 1e6:.4f} us"
        if cal.cost_model == "ideal"
        else f"NCCL latency scale: {cal.latency_scale:.4f}"
    )
    typer.echo(f"# {cal.cost_model} cost model; link efficiency: {eff}; {lat}; rms log error: {cal.rms_log_error:.4f}")
    if cal.unconstrained_classes:
        typer.echo(
            f"# not constrained by these logs (the preset's value stays): {', '.join(cal.unconstrained_classes)}"
        )
