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
from pathlib import Path

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
        algo: str | None = typer.Option(None, "--algo", "-a", help="Algorithm (default: NCCL's choice per size under "
                                        "the nccl cost model; ring / direct / shift under ideal)."),
        min_bytes: str = typer.Option("1MiB", "--min-bytes", "-b", help="Smallest size (e.g. 1MiB)."),
        max_bytes: str = typer.Option("8GiB", "--max-bytes", "-e", help="Largest size (e.g. 8GiB)."),
        step_factor: float = typer.Option(2.0, "--step-factor", "-f", help="Size multiplier between rows."),
        gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", "-g", min=1,
                                                 help="Use only the first K GPUs of every node."),
        csv: Path | None = typer.Option(None, "--csv", help="Write the results as CSV."),
        log: Path | None = typer.Option(None, "--log", help="Write a complete nccl-tests style log."),
        calibration: Path | None = typer.Option(None, "--calibration", help="Calibration YAML to apply."),
        overrides: list[str] = set_option(),
        routing: str | None = routing_option(),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        chunk_bytes: str | None = typer.Option(None, "--chunk-bytes", help="Pipeline chunk size (e.g. 512KiB)."),
        step_latency: str | None = typer.Option(
            None, "--step-latency", help="Software latency per step (e.g. 5us); the ideal cost model only."),
        collective_cost: str | None = cost_option(),
        proto: str | None = typer.Option(None, "--proto", help="Force NCCL's protocol: LL, LL128 or Simple "
                                         "(as NCCL_PROTO; nccl cost model)."),
        channels: int | None = typer.Option(None, "--channels", min=1, help="Parallel rings of ring algorithms."),
        model: str = typer.Option("exact", "--model", help="Collective model: exact, stream (ring phases as one "
                                  "flow per link) or coflow (stream, and all-to-all phases as one coflow); for scale."),
        pair: str | None = typer.Option(None, "--pair", help="sendrecv: the two devices, e.g. n0.g0,n1.g0 "
                                        "(default: first and last)."),
        force: bool = force_option(),
    ) -> None:
        """Simulate collective OP for a range of sizes and print the nccl-tests table."""
        check_out_files(force, csv=csv, log=log)
        from netsim.collectives.executor import accelerators, check_model
        from netsim.collectives.nccl_tests import (
            HEADER_LINES,
            format_choices,
            format_log,
            format_row,
            format_trailer,
            iter_sweep,
            rows_frame,
            sizes_between,
        )
        from netsim.collectives.registry import get_algorithm
        from netsim.io import atomic_file
        from netsim.limits import MAX_COLLECTIVE_SIZES, check_count, check_quantity
        from netsim.topology.model import host_name

        if op not in CLI_OPS:
            raise NetsimError(f"unknown collective {op!r}; allowed: {', '.join(CLI_OPS)}", field="OP")
        if algo is not None:
            get_algorithm(op, algo)
        check_model(model)
        lo = check_quantity(parse_bytes(min_bytes, "--min-bytes"), "bytes", "--min-bytes")
        hi = check_quantity(parse_bytes(max_bytes, "--max-bytes"), "bytes", "--max-bytes")
        if not step_factor > 1 or not math.isfinite(step_factor):
            raise NetsimError(f"the step factor must be > 1 and finite (got {step_factor:g})", field="--step-factor")
        if 0 < lo <= hi:
            check_count(int(math.log(hi / lo) / math.log(step_factor)) + 1, MAX_COLLECTIVE_SIZES, "--step-factor",
                        what="message sizes from --min-bytes to --max-bytes")
        sizes = sizes_between(lo, hi, step_factor)
        chunk = parse_bytes(chunk_bytes, "--chunk-bytes") if chunk_bytes is not None else None
        if chunk is not None:
            check_quantity(chunk, "bytes", "--chunk-bytes")
        lat = parse_duration(step_latency, "--step-latency") if step_latency is not None else None
        if lat is not None and lat < 0:
            raise NetsimError(f"must be >= 0, got {step_latency!r}", field="--step-latency")
        if lat is not None:
            check_quantity(lat, "duration", "--step-latency")
        _check_size(topology, nodes, overrides, op, gpus_per_node, channels)
        graph = load_graph(topology, nodes, overrides)
        kw, setup = network_setup(graph, calibration, routing, seed, cost_model=collective_cost, step_latency_s=lat)
        devices = accelerators(graph, per_node=gpus_per_node)
        if not devices:
            raise NetsimError("the topology has no accelerators", source=topology)
        if op == "sendrecv":
            if pair is not None:
                devices = [d.strip() for d in pair.split(",")]
                if len(devices) != 2 or devices[0] == devices[1]:
                    raise NetsimError(f"expected two different devices like n0.g0,n1.g0, got {pair!r}", field="--pair")
                for d in devices:
                    if d not in graph or graph.nodes[d].get("kind") != "accelerator":
                        raise NetsimError(f"unknown accelerator {d!r}", field="--pair")
            else:
                devices = [devices[0], devices[-1]]
        elif pair is not None:
            raise NetsimError("--pair applies to sendrecv only", field="--pair")
        n_nodes = len({graph.nodes[d].get("node") for d in devices})
        name = graph.graph.get("name", topology)
        plural = "s" if n_nodes > 1 else ""
        library = str(getattr(setup.cost, "settings", {}).get("library", "nccl")).upper()
        algo_text = algo or (f"{library}'s choice per size" if setup.name == "nccl" else get_algorithm(op, None).name)
        comments = [
            f"netsim collective {op}: algo {algo_text}, {len(devices)} ranks on {n_nodes} node{plural} of {name}, "
            f"routing {kw['routing']}" + (f", collective model {model}" if model != "exact" else ""),
            setup.summary_line() + (f"; calibration {calibration}" if calibration is not None else ""),
        ]
        for c in comments:
            typer.echo(f"# {c}")
        typer.echo("#")
        for h in HEADER_LINES:
            typer.echo(h)
        rows = []
        for row in iter_sweep(graph, op, devices, sizes, algo=algo, chunk_bytes=chunk, channels=channels,
                              model=model, cost=setup.cost, proto=proto, **kw):
            rows.append(row)
            typer.echo(format_row(row))
        for t in format_trailer(rows):
            typer.echo(t)
        if setup.name == "nccl":
            typer.echo(f"# {library}'s choice: " + "; ".join(format_choices(rows)))
        if csv is not None:
            with atomic_file(csv) as fh:
                rows_frame(rows).to_csv(fh, index=False, float_format="%.6f")
            typer.echo(f"# wrote {csv}")
        if log is not None:
            hosts = [host_name(int(graph.nodes[d].get("node", 0))) for d in devices]
            text = format_log(rows, hosts=hosts, comments=[
                "synthetic nccl-tests log: simulated by netsim (not a measurement)", *comments],
                min_bytes=sizes[0], max_bytes=sizes[-1], factor=step_factor)
            with atomic_file(log) as fh:
                fh.write(text)
            typer.echo(f"# wrote {log}")


def _check_size(topology: str | None, nodes: int | None, overrides: list[str], op: str, gpus_per_node: int | None,
                channels: int | None) -> None:
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
        raise NetsimError(f"the servers of {topology} have {per_node} accelerators; cannot use {gpus_per_node}",
                          field="--gpus-per-node")
    ranks = 2 if op == "sendrecv" else int(spec.num_nodes) * (gpus_per_node or per_node)  # type: ignore[union-attr]
    check_fits(estimate_collective(estimate_spec(spec), op, ranks, channels=channels or 1),
               enabled=size_check_enabled())
