"""``netsim topology``: build a preset or YAML topology and show, export or draw it.

::

    netsim topology list
    netsim topology show dgx-h100 --nodes 4 [--set backend.oversubscription=2 ...]
                         [--json] [--graphml out.graphml] [--plot out.png]

``show`` prints rich tables (devices, links, switch tiers with oversubscription, back-end
bisection bandwidth); ``--json`` prints the same as one JSON object instead (keys
``devices``, ``links``, ``tiers``, ``bisection_bandwidth_Bps``, ...).  Every input problem
raises a :class:`~netsim.errors.NetsimError`, which the root CLI prints as one line (exit 2);
files are written atomically and only after the topology has been built and the plot format
checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from netsim.cli.common import check_out_files, console, force_option, nodes_option, set_option
from netsim.units import format_bandwidth

if TYPE_CHECKING:
    from rich.console import Console

    from netsim.topology.summary import TopologySummary


def _bw(bw_Bps: float | None) -> str:
    return "-" if bw_Bps is None else format_bandwidth(bw_Bps)


def _capacity_range(row: dict[str, Any]) -> str:
    lo, hi = row["capacity_Bps_min"], row["capacity_Bps_max"]
    return _bw(lo) if lo == hi else f"{_bw(lo)} - {_bw(hi)}"


def render_summary(s: TopologySummary, console: Console) -> None:
    """Print a topology summary as rich tables."""
    acc = s.accelerator
    console.print(
        f"[bold]{s.name}[/bold]: {s.num_nodes} nodes x {s.accelerators_per_node} {acc.get('name', 'accelerators')}, "
        f"{s.num_devices} devices, {s.num_links} links"
    )
    if s.description:
        console.print(s.description)
    if acc:
        peaks = ", ".join(f"{k} {v / 1e12:.4g}" for k, v in acc.get("peak_flops", {}).items())
        console.print(f"peak TFLOPS: {peaks}")
        console.print(f"memory: {acc.get('memory_bytes', 0) / 1e9:.4g} GB at {_bw(acc.get('memory_Bps'))}")
    else:
        console.print("no accelerator data (an explicit graph for network studies: `netsim flows`)")

    devices = Table(title="Devices", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("kind", "role"):
        devices.add_column(col)
    devices.add_column("count", justify="right")
    for d in s.devices:
        devices.add_row(d["kind"], d["role"], str(d["count"]))
    console.print(devices)

    links = Table(title="Links (directed; capacity per direction)", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("network", "class", "tier"):
        links.add_column(col)
    for col in ("links", "capacity each", "total"):
        links.add_column(col, justify="right")
    for r in s.links:
        cells = (r["network"], r["link_class"], r["tier"], str(r["count"]), _capacity_range(r))
        links.add_row(*cells, _bw(r["total_capacity_Bps"]))
    console.print(links)

    if s.tiers:
        tiers = Table(title="Switch tiers", box=box.SIMPLE_HEAD, title_justify="left")
        for col in ("network", "tier"):
            tiers.add_column(col)
        for col in ("switches", "down", "up", "oversub."):
            tiers.add_column(col, justify="right")
        for t in s.tiers:
            ratio = t["oversubscription"]
            tiers.add_row(
                t["network"],
                f"{t['tier']} {t['role']}",
                str(t["switches"]),
                _bw(t["down_Bps"]),
                _bw(t["up_Bps"]) if t["up_Bps"] else "-",
                f"{ratio:.3g}:1" if ratio is not None else "-",
            )
        console.print(tiers)

    split = "servers" if s.num_nodes >= 2 else "accelerators"
    console.print(
        f"bisection bandwidth: [bold]{_bw(s.bisection_bandwidth_Bps)}[/bold] per direction "
        f"(between the halves of the {split})"
    )


def register(app: typer.Typer) -> None:
    """Add the ``topology`` sub-app to the root CLI."""
    topo = typer.Typer(
        name="topology",
        help="Build, inspect and export cluster topologies (presets or YAML files).",
        no_args_is_help=True,
    )

    @topo.command("list")
    def list_cmd() -> None:
        """List the topology presets with their descriptions."""
        from netsim.config.common import load_mapping
        from netsim.topology import list_presets, preset_path

        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("preset")
        table.add_column("description")
        for name in list_presets():
            data = load_mapping(preset_path(name))
            table.add_row(name, str(data.get("description", "")))
        console.print(table)

    @topo.command("show")
    def show_cmd(
        ref: str = typer.Argument(..., metavar="PRESET_OR_FILE", help="Preset name or topology YAML file."),
        nodes: int | None = nodes_option(),
        overrides: list[str] = set_option(),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
        graphml: Path | None = typer.Option(None, "--graphml", help="Also write the graph as GraphML."),
        plot: Path | None = typer.Option(None, "--plot", help="Also draw the graph (PNG, SVG or PDF)."),
        force: bool = force_option(),
    ) -> None:
        """Build a topology and print its devices, links, tiers and bisection bandwidth."""
        from netsim.topology import load_topology, summarize
        from netsim.topology.export import check_graphml_path, check_plot_path, plot_topology, write_graphml
        from netsim.topology.faults import fault_summary

        check_out_files(force, graphml=graphml, plot=plot)
        if plot is not None:
            check_plot_path(plot)
        if graphml is not None:
            check_graphml_path(graphml)
        g = load_topology(ref, nodes=nodes, overrides=overrides)
        summary = summarize(g)
        if plot is not None:
            plot_topology(g, plot)
        if graphml is not None:
            write_graphml(g, graphml)
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
        else:
            render_summary(summary, console)
            faults = fault_summary(g)
            if faults:  # netsim.topology.faults: what runs below its rate
                console.print(faults["line"], markup=False)

    app.add_typer(topo, name="topology")
