"""`netsim flows`: replay a list of point-to-point flows on a topology."""

from __future__ import annotations

from pathlib import Path

import typer

from netsim.cli.common import (
    check_out_dir,
    console,
    force_option,
    load_graph,
    network_setup,
    nodes_option,
    routing_option,
    set_option,
    topology_option,
)


def register(app: typer.Typer) -> None:
    @app.command("flows")
    def flows_cmd(
        flows_csv: Path = typer.Argument(
            ..., help="CSV with columns src,dst,bytes,start_s[,path,traffic_class,label] (README: Flows)."
        ),
        topology: str = topology_option(),
        nodes: int | None = nodes_option(),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (flows.csv, links.csv, ...)."),
        overrides: list[str] = set_option(),
        routing: str | None = routing_option(),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        calibration: Path | None = typer.Option(None, "--calibration", help="Calibration YAML to apply."),
        line_rate: bool = typer.Option(
            False,
            "--line-rate",
            help="Run the links at line rate (the wire bound) "
            "instead of the preset's achieved efficiency per link class.",
        ),
        force: bool = force_option(),
    ) -> None:
        """Simulate the flows of FLOWS.csv on a topology; write per-flow and per-link tables."""
        from netsim.network.flowfile import read_flows, run_flows

        check_out_dir(out, force)
        graph = load_graph(topology, nodes, overrides)
        table = read_flows(flows_csv)
        kw, _ = network_setup(graph, calibration, routing, seed, cost_model="ideal" if line_rate else None)
        result = run_flows(graph, table, out, force=force, **kw)
        console.print(
            f"{result.num_flows} flows, makespan {result.makespan_s * 1e6:.3f} us, "
            f"busiest link {result.busiest_link} at {result.busiest_peak:.1%} peak utilisation"
        )
        console.print(f"wrote {out}/flows.csv and {out}/links.csv")
