"""``netsim collective``: simulate one collective over a range of sizes, nccl-tests style.

::

    netsim collective all_reduce --topology dgx-h100 --nodes 2 [--algo ring]
        [--min-bytes 1MiB --max-bytes 8GiB --step-factor 2] [--gpus-per-node K]
        [--csv out.csv] [--log sim.log] [--calibration CAL.yaml] [--set key=value ...]
        [--routing ecmp] [--chunk-bytes 512KiB] [--channels C] [--pair n0.g0,n1.g0]
        [--model exact|stream|coflow] [--collective-cost nccl|ideal] [--proto LL|LL128|Simple]
        [--step-latency 5us]  (ideal cost model only)

Every size runs on a fresh network under the collective cost model (``nccl`` by default: NCCL's
algorithm and protocol choice, latencies and bandwidth limits, links at the preset's achieved
efficiency; ``ideal``: the wire bound).  stdout is the nccl-tests table (size, count, type,
redop, root, then time (us), algbw and busbw (GB/s) and #wrong for out-of-place and in-place)
followed by ``# Avg bus bandwidth``; ``--csv`` writes ``op,algo,size_bytes,time_us,algbw_GBps,
busbw_GBps`` and ``--log`` a complete nccl-tests log (with ``#  Rank`` lines) that
``netsim calibrate nccl`` reads back.  Files are written atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from netsim.cli.common import (
    check_out_files,
    cost_option,
    force_option,
    load_graph,
    network_setup,
    nodes_option,
    routing_option,
    set_option,
    topology_option,
)
from netsim.errors import NetsimError
from netsim.units import parse_bytes, parse_duration

CLI_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv")


def register(app: typer.Typer) -> None:
    @app.command("collective")
    def collective_cmd(
        op: str = typer.Argument(..., help=f"Collective: {', '.join(CLI_OPS)}."),
        topology: str = topology_option(),
        nodes: int | None = nodes_option(),
        algo: str | None = typer.Option(
            None,
            "--algo",
            "-a",
            help="Algorithm (default: NCCL's choice per size under "
            "the nccl cost model; ring / direct / shift under ideal).",
        ),
        min_bytes: str = typer.Option("1MiB", "--min-bytes", "-b", help="Smallest size (e.g. 1MiB)."),
        max_bytes: str = typer.Option("8GiB", "--max-bytes", "-e", help="Largest size (e.g. 8GiB)."),
        step_factor: float = typer.Option(2.0, "--step-factor", "-f", help="Size multiplier between rows."),
        gpus_per_node: int | None = typer.Option(
            None, "--gpus-per-node", "-g", min=1, help="Use only the first K GPUs of every node."
        ),
        csv: Path | None = typer.Option(None, "--csv", help="Write the results as CSV."),
        log: Path | None = typer.Option(None, "--log", help="Write a complete nccl-tests style log."),
        calibration: Path | None = typer.Option(None, "--calibration", help="Calibration YAML to apply."),
        overrides: list[str] = set_option(),
        routing: str | None = routing_option(),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        chunk_bytes: str | None = typer.Option(None, "--chunk-bytes", help="Pipeline chunk size (e.g. 512KiB)."),
        step_latency: str | None = typer.Option(
            None, "--step-latency", help="Software latency per step (e.g. 5us); the ideal cost model only."
        ),
        collective_cost: str | None = cost_option(),
        proto: str | None = typer.Option(
            None, "--proto", help="Force NCCL's protocol: LL, LL128 or Simple (as NCCL_PROTO; nccl cost model)."
        ),
        channels: int | None = typer.Option(None, "--channels", min=1, help="Parallel rings of ring algorithms."),
        model: str = typer.Option(
            "exact",
            "--model",
            help="Collective model: exact, stream (ring phases as one "
            "flow per link) or coflow (stream, and all-to-all phases as one coflow); for scale.",
        ),
        pair: str | None = typer.Option(
            None, "--pair", help="sendrecv: the two devices, e.g. n0.g0,n1.g0 (default: first and last)."
        ),
        force: bool = force_option(),
    ) -> None:
        """Simulate collective OP for a range of sizes and print the nccl-tests table."""
        check_out_files(force, csv=csv, log=log)
        opts = _Request(
            op,
            topology,
            nodes,
            algo,
            gpus_per_node,
            csv,
            log,
            calibration,
            overrides,
            routing,
            seed,
            collective_cost,
            proto,
            channels,
            model,
            pair,
        )
        _collective(opts, min_bytes, max_bytes, step_factor, chunk_bytes, step_latency)


@dataclass(frozen=True)
class _Request:
    """The options of one ``netsim collective`` call that pass through unchanged."""

    op: str
    topology: str
    nodes: int | None
    algo: str | None
    gpus_per_node: int | None
    csv: Path | None
    log: Path | None
    calibration: Path | None
    overrides: list[str]
    routing: str | None
    seed: int
    collective_cost: str | None
    proto: str | None
    channels: int | None
    model: str
    pair: str | None


def _check_op(op: str, algo: str | None, model: str) -> None:
    """The collective, its algorithm (if forced) and the collective model exist."""
    from netsim.collectives.executor import check_model
    from netsim.collectives.registry import get_algorithm

    if op not in CLI_OPS:
        raise NetsimError(f"unknown collective {op!r}; allowed: {', '.join(CLI_OPS)}", field="OP")
    if algo is not None:
        get_algorithm(op, algo)
    check_model(model)


def _size_list(min_bytes: str, max_bytes: str, step_factor: float) -> list[int]:
    """The message sizes from ``--min-bytes`` to ``--max-bytes`` by ``--step-factor`` (checked)."""
    from netsim.collectives.nccl_tests import sizes_between
    from netsim.limits import MAX_COLLECTIVE_SIZES, check_count, check_quantity

    lo = check_quantity(parse_bytes(min_bytes, "--min-bytes"), "bytes", "--min-bytes")
    hi = check_quantity(parse_bytes(max_bytes, "--max-bytes"), "bytes", "--max-bytes")
    if not step_factor > 1 or not math.isfinite(step_factor):
        raise NetsimError(f"the step factor must be > 1 and finite (got {step_factor:g})", field="--step-factor")
    if 0 < lo <= hi:
        check_count(
            int(math.log(hi / lo) / math.log(step_factor)) + 1,
            MAX_COLLECTIVE_SIZES,
            "--step-factor",
            what="message sizes from --min-bytes to --max-bytes",
        )
    return sizes_between(lo, hi, step_factor)


def _chunk_and_latency(chunk_bytes: str | None, step_latency: str | None) -> tuple[float | None, float | None]:
    """``--chunk-bytes`` and ``--step-latency`` parsed and checked (None where not given)."""
    from netsim.limits import check_quantity

    chunk = parse_bytes(chunk_bytes, "--chunk-bytes") if chunk_bytes is not None else None
    if chunk is not None:
        check_quantity(chunk, "bytes", "--chunk-bytes")
    lat = parse_duration(step_latency, "--step-latency") if step_latency is not None else None
    if lat is not None and lat < 0:
        raise NetsimError(f"must be >= 0, got {step_latency!r}", field="--step-latency")
    if lat is not None:
        check_quantity(lat, "duration", "--step-latency")
    return chunk, lat


def _devices(graph: Any, o: _Request) -> list[str]:
    """The ranks: every accelerator (the first ``-g`` of each node), or for sendrecv the
    ``--pair`` (default: first and last)."""
    from netsim.collectives.executor import accelerators

    devices = accelerators(graph, per_node=o.gpus_per_node)
    if not devices:
        raise NetsimError("the topology has no accelerators", source=o.topology)
    if o.op != "sendrecv":
        if o.pair is not None:
            raise NetsimError("--pair applies to sendrecv only", field="--pair")
        return list(devices)
    if o.pair is None:
        return [devices[0], devices[-1]]
    devices = [d.strip() for d in o.pair.split(",")]
    if len(devices) != 2 or devices[0] == devices[1]:
        raise NetsimError(f"expected two different devices like n0.g0,n1.g0, got {o.pair!r}", field="--pair")
    for d in devices:
        if d not in graph or graph.nodes[d].get("kind") != "accelerator":
            raise NetsimError(f"unknown accelerator {d!r}", field="--pair")
    return devices


def _comments(graph: Any, o: _Request, devices: list[str], setup: Any, routing: str) -> tuple[list[str], str]:
    """The two ``#`` lines that head the table (what runs where, the cost model) and the name
    of the library whose choices the nccl cost model makes."""
    from netsim.collectives.registry import get_algorithm

    n_nodes = len({graph.nodes[d].get("node") for d in devices})
    name = graph.graph.get("name", o.topology)
    plural = "s" if n_nodes > 1 else ""
    library = str(getattr(setup.cost, "settings", {}).get("library", "nccl")).upper()
    algo_text = o.algo or (f"{library}'s choice per size" if setup.name == "nccl" else get_algorithm(o.op, None).name)
    comments = [
        f"netsim collective {o.op}: algo {algo_text}, {len(devices)} ranks on {n_nodes} node{plural} of {name}, "
        f"routing {routing}" + (f", collective model {o.model}" if o.model != "exact" else ""),
        setup.summary_line() + (f"; calibration {o.calibration}" if o.calibration is not None else ""),
    ]
    return comments, library


def _collective(
    o: _Request, min_bytes: str, max_bytes: str, step_factor: float, chunk_bytes: str | None, step_latency: str | None
) -> None:
    """Check the request, simulate every size and print the table (and write --csv / --log)."""
    from netsim.collectives.nccl_tests import HEADER_LINES, format_choices, format_row, format_trailer, iter_sweep

    _check_op(o.op, o.algo, o.model)
    sizes = _size_list(min_bytes, max_bytes, step_factor)
    chunk, lat = _chunk_and_latency(chunk_bytes, step_latency)
    _check_size(o.topology, o.nodes, o.overrides, o.op, o.gpus_per_node, o.channels)
    graph = load_graph(o.topology, o.nodes, o.overrides)
    kw, setup = network_setup(graph, o.calibration, o.routing, o.seed, cost_model=o.collective_cost, step_latency_s=lat)
    devices = _devices(graph, o)
    comments, library = _comments(graph, o, devices, setup, kw["routing"])
    sweep = iter(
        iter_sweep(
            graph,
            o.op,
            devices,
            sizes,
            algo=o.algo,
            chunk_bytes=chunk,
            channels=o.channels,
            model=o.model,
            cost=setup.cost,
            proto=o.proto,
            **kw,
        )
    )
    rows = [_first_row(sweep)]  # a protocol or algorithm the request cannot run fails before any output
    for c in comments:
        typer.echo(f"# {c}")
    typer.echo("#")
    for h in HEADER_LINES:
        typer.echo(h)
    typer.echo(format_row(rows[0]))
    for row in sweep:
        rows.append(row)
        typer.echo(format_row(row))
    for t in format_trailer(rows):
        typer.echo(t)
    if setup.name == "nccl":
        typer.echo(f"# {library}'s choice: " + "; ".join(format_choices(rows)))
    _write_files(o, graph, devices, rows, comments, sizes, step_factor)


#: the option behind a field a collective's check names
_OPTION_OF = {"proto": "--proto", "algo": "--algo"}


def _first_row(sweep: Any) -> Any:
    """The sweep's first row, an error naming the option (``--proto``) rather than its field."""
    from netsim.errors import NetsimError

    try:
        return next(sweep)
    except NetsimError as exc:
        if exc.field in _OPTION_OF:
            exc.field = _OPTION_OF[exc.field]
            exc.args = (exc.one_line(),)
        raise


def _write_files(
    o: _Request,
    graph: Any,
    devices: list[str],
    rows: list[Any],
    comments: list[str],
    sizes: list[int],
    step_factor: float,
) -> None:
    """``--csv`` (the result rows) and ``--log`` (a complete nccl-tests log), each atomically."""
    from netsim.collectives.nccl_tests import format_log, rows_frame
    from netsim.io import atomic_file
    from netsim.topology.model import host_name

    if o.csv is not None:
        with atomic_file(o.csv) as fh:
            rows_frame(rows).to_csv(fh, index=False, float_format="%.6f")
        typer.echo(f"# wrote {o.csv}")
    if o.log is not None:
        hosts = [host_name(int(graph.nodes[d].get("node", 0))) for d in devices]
        text = format_log(
            rows,
            hosts=hosts,
            comments=["synthetic nccl-tests log: simulated by netsim (not a measurement)", *comments],
            min_bytes=sizes[0],
            max_bytes=sizes[-1],
            factor=step_factor,
        )
        with atomic_file(o.log) as fh:
            fh.write(text)
        typer.echo(f"# wrote {o.log}")


def _check_size(
    topology: str | None,
    nodes: int | None,
    overrides: list[str],
    op: str,
    gpus_per_node: int | None,
    channels: int | None,
) -> None:
    """Refuse ``-g`` beyond the servers' accelerators, and a collective too large for this
    machine's memory, from the topology spec alone (before the graph is built)."""
    from netsim.limits import check_fits, estimate_collective, size_check_enabled
    from netsim.topology import estimate_spec, load_topology_spec_ref

    if not topology:
        raise NetsimError("--topology is required (a preset name or a YAML file)", field="--topology")
    spec, _ = load_topology_spec_ref(topology, nodes, tuple(overrides))
    node = getattr(spec, "node", None)
    if node is None:  # an explicit graph: its accelerators are known once it is built
        return
    per_node = int(node.accelerators)
    if gpus_per_node is not None and gpus_per_node > per_node:
        raise NetsimError(
            f"the servers of {topology} have {per_node} accelerators; cannot use {gpus_per_node}",
            field="--gpus-per-node",
        )
    ranks = 2 if op == "sendrecv" else int(spec.num_nodes) * (gpus_per_node or per_node)  # type: ignore[union-attr]
    check_fits(
        estimate_collective(estimate_spec(spec), op, ranks, channels=channels or 1), enabled=size_check_enabled()
    )
