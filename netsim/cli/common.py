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


def force_option() -> Any:
    return typer.Option(
        False, "--force", help="Replace an existing output: a file, or a folder that netsim wrote (never another)."
    )


def check_out_dir(path: Path, force: bool, field: str = "--out", resume: str | None = None) -> Path:
    """Refuse, before any work, an output folder netsim may not write (see :mod:`netsim.io`)."""
    from netsim.io import check_output_dir

    return check_output_dir(path, force=force, field=field, resume=resume)


def check_out_files(force: bool, **paths: Path | None) -> None:
    """Refuse, before any work, output files netsim may not write; keys are option names
    (``graphml=...`` checks ``--graphml``)."""
    from netsim.io import check_output_file

    for name, path in paths.items():
        if path is not None:
            check_output_file(path, force=force, field="--" + name.replace("_", "-"))


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
        from netsim.limits import INT64_MAX

        if not 0 <= seed <= INT64_MAX:
            raise NetsimError(f"must be in 0..2**63-1 (got {seed})", field="--seed")
        kw["seed"] = seed
    return kw
