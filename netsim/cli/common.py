"""Options and helpers shared by several subcommands (topology, calibration, output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
import typer
from rich.console import Console

from netsim.errors import NetsimError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

TOPOLOGY_HELP = "Topology preset name (see `netsim presets`) or path to a topology YAML file."


def topology_option(default: str | None = None) -> Any:
    return typer.Option(default, "--topology", "-t", help=TOPOLOGY_HELP)


def nodes_option(default: int | None = None) -> Any:
    return typer.Option(default, "--nodes", "-n", min=1, help="Number of servers (nodes).")


def set_option() -> Any:
    return typer.Option(
        [], "--set", help="Override a topology field, e.g. --set backend.oversubscription=2 (repeatable)."
    )


def load_graph(topology: str | None, nodes: int | None, overrides: list[str] | None = None) -> nx.DiGraph:
    """Build the topology graph for a CLI command (preset name or YAML path)."""
    if not topology:
        raise NetsimError("--topology is required (a preset name or a YAML file)", field="--topology")
    from netsim.topology import load_topology

    return load_topology(topology, nodes=nodes, overrides=tuple(overrides or ()))


def engine_kwargs(calibration: Path | None, routing: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments for :class:`netsim.network.Network` from CLI options."""
    kw: dict[str, Any] = {}
    if calibration is not None:
        from netsim.calibration.fit import load_calibration

        kw.update(load_calibration(calibration).engine_kwargs())
    if routing is not None:
        kw["routing"] = routing
    if seed is not None:
        kw["seed"] = seed
    return kw
