"""`netsim flows`: replay a list of point-to-point flows on a topology."""

from __future__ import annotations

from pathlib import Path

import typer

from netsim.cli.common import console, engine_kwargs, load_graph, nodes_option, set_option, topology_option


def register(app: typer.Typer) -> None:
    @app.command("flows")
    def flows_cmd(
        flows_csv: Path = typer.Argument(
            ..., help="CSV with columns src,dst,bytes,start_s[,path,traffic_class,label] (README: Flows)."),
        topology: str = topology_option(),
        nodes: int | None = nodes_option(),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (flows.csv, links.csv, ...)."),
        overrides: list[str] = set_option(),
        routing: str = typer.Option("ecmp", "--routing", help="shortest | ecmp | ecmp-pair | spray | pxn"),
        seed: int = typer.Option(0, "--seed", help="Seed of the ECMP hash."),
        calibration: Path | None = typer.Option(None, "--calibration", help="Calibration YAML to apply."),
    ) -> None:
        """Simulate the flows of FLOWS.csv on a topology; write per-flow and per-link tables."""
        from netsim.network.flowfile import read_flows, run_flows

        graph = load_graph(topology, nodes, overrides)
        table = read_flows(flows_csv)
        result = run_flows(graph, table, out, **engine_kwargs(calibration, routing, seed))
        console.print(
            f"{result.num_flows} flows, makespan {result.makespan_s * 1e6:.3f} us, "
            f"busiest link {result.busiest_link} at {result.busiest_peak:.1%} peak utilisation"
        )
        console.print(f"wrote {out}/flows.csv and {out}/links.csv")
