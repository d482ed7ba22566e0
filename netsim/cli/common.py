"""Options and helpers shared by several subcommands (topology, calibration, output)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from netsim.errors import NetsimError

if TYPE_CHECKING:  # the command modules stay light: `netsim --help` imports no numpy/networkx
    import networkx as nx

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


def report_writer() -> Callable[[Path], object]:
    """The report layer's writer, for commands that write a run directory (imported only when a
    report is asked for: it pulls in matplotlib)."""
    from netsim.report import write_report

    return write_report


def load_graph(topology: str | None, nodes: int | None, overrides: list[str] | None = None) -> nx.DiGraph:
    """Build the topology graph for a CLI command (preset name or YAML path)."""
    if not topology:
        raise NetsimError("--topology is required (a preset name or a YAML file)", field="--topology")
    from netsim.topology import load_topology

    return load_topology(topology, nodes=nodes, overrides=tuple(overrides or ()))


ROUTING_HELP = (
    "Network path policy: shortest, ecmp, ecmp-pair, spray, pxn, dmodk or dmodk-pxn (default: the topology's, pxn on "
    "the NVIDIA presets as NCCL routes, else ecmp)."
)


def routing_option() -> Any:
    return typer.Option(None, "--routing", help=ROUTING_HELP)


def _known_cost_model(value: str | None) -> str | None:
    """``--collective-cost`` names a registered cost model (checked before the command's work)."""
    if value is not None:
        from netsim.collectives.cost import COST_MODELS

        COST_MODELS.canonical(value, field="--collective-cost")
    return value


def cost_option() -> Any:
    return typer.Option(
        None,
        "--collective-cost",
        help="Collective cost model: nccl (NCCL's algorithms, protocols "
        "and latencies; links at the preset's achieved efficiency) or ideal (the wire bound). "
        "Default: the topology's (nccl for every preset).",
        callback=_known_cost_model,
    )


def network_setup(
    graph: nx.DiGraph,
    calibration: Path | None,
    routing: str | None = None,
    seed: int | None = None,
    *,
    cost_model: str | None = None,
    step_latency_s: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """The ``Network`` keywords and the :class:`~netsim.collectives.setup.CollectiveSetup` of a
    command: the topology's collective cost model (or ``cost_model``), a calibration's fitted
    numbers on top, the routing policy and seed."""
    from netsim.collectives.setup import collective_setup, default_routing

    kw: dict[str, Any] = {}
    cal_kw: dict[str, Any] = {}
    if calibration is not None:
        from netsim.calibration.fit import load_calibration

        cal_kw = load_calibration(calibration).setup_kwargs()
        if cost_model is not None and cost_model != cal_kw["cost_model"]:
            raise NetsimError(
                f"the calibration was fitted with the {cal_kw['cost_model']} cost model, not {cost_model}",
                field="--collective-cost",
            )
    if cost_model is not None:
        cal_kw["cost_model"] = cost_model
    if step_latency_s is not None:
        cal_kw["step_latency_s"] = step_latency_s
        cal_kw.setdefault("cost_model", "ideal")
    setup = collective_setup(graph, source="--collective-cost" if cost_model else None, **cal_kw)
    if setup.efficiency:
        kw["efficiency"] = dict(setup.efficiency)
    if routing is not None:
        from netsim.network.path_policy import PATH_POLICIES

        PATH_POLICIES.canonical(routing, field="--routing")
    kw["routing"] = routing if routing is not None else default_routing(graph)
    if seed is not None:
        from netsim.limits import INT64_MAX

        if not 0 <= seed <= INT64_MAX:
            raise NetsimError(f"must be in 0..2**63-1 (got {seed})", field="--seed")
        kw["seed"] = seed
    return kw, setup


def scenario_ref(
    scenario: Path | None, topology: str | None, nodes: int | None, workload: str | None
) -> tuple[Any, list[str]]:
    """What a command's scenario options name, as ``load_scenario`` takes it: a scenario file,
    None (the built-in scenario) or a mapping from ``--topology``/``--workload``; and the
    ``nodes=N`` item to add after the command's own ``--set`` items (empty for a mapping, which
    holds the nodes itself)."""
    nodes_item = [f"nodes={nodes}"] if nodes is not None else []
    if scenario is not None:
        if topology or workload:
            raise NetsimError("give either a scenario file or --topology/--workload, not both", field="SCENARIO")
        return scenario, nodes_item
    if topology is None and workload is None:
        return None, nodes_item
    if topology is None or workload is None:
        raise NetsimError("--topology and --workload go together (or give a scenario file)", field="--topology")
    name = f"{Path(workload).stem}-{Path(topology).stem}" + (f"-{nodes}n" if nodes else "")
    data: dict[str, Any] = {"name": name, "topology": topology, "workload": workload}
    if nodes is not None:
        data["nodes"] = nodes
    return data, []


def csv_list(value: str, cast: type = str, field: str | None = None) -> tuple[Any, ...]:
    """``"1, 2,4"`` -> ``(1, 2, 4)`` with ``cast`` (``""``: no items); an empty item (``"1,,2"``,
    a trailing comma) or a value ``cast`` cannot read is a one-line error naming ``field``."""
    if not value.strip():
        return ()
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise NetsimError(f"{value!r} has an empty item; give a comma-separated list like 1,2,4", field=field)
    try:
        return tuple(cast(v) for v in items)
    except ValueError:
        raise NetsimError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}", field=field) from None
