"""Topologies: presets and YAML files -> a typed ``networkx.DiGraph`` (see :mod:`.model`).

Entry points:

* :func:`load_topology` ``(ref, nodes=None, overrides=())``: ``ref`` is a preset name
  (``dgx-h100``; see :func:`list_presets`) or a path to a topology YAML file; ``nodes``
  replaces the server count; ``overrides`` are ``--set`` items such as
  ``backend.oversubscription=2`` or ``node.nvlink_bandwidth=300GB/s``.
* :func:`build_topology` for an already validated spec, :func:`summarize` for the device,
  link, tier and bisection figures that ``netsim topology show`` prints.

Presets are YAML files shipped inside the package (``netsim/data/topologies``; the
repository's ``topologies/`` is a link to that folder), so an installed netsim finds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import networkx as nx

from netsim.config.topology import TopologySpec, load_topology_spec
from netsim.errors import TopologyError
from netsim.limits import MAX_ACCELERATORS, SizeEstimate, check_count, check_fits, estimate_topology, size_check_enabled
from netsim.topology.build import build_topology
from netsim.topology.summary import TopologySummary, bisection_bandwidth, summarize

__all__ = [
    "PRESET_DIR",
    "TopologySummary",
    "bisection_bandwidth",
    "build_topology",
    "list_presets",
    "load_topology",
    "load_topology_spec_ref",
    "preset_path",
    "summarize",
]

PRESET_DIR = Path(__file__).resolve().parent.parent / "data" / "topologies"
"""Folder of the preset topology YAML files."""


def list_presets() -> list[str]:
    """Names of the shipped topology presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _looks_like_path(ref: str | Path) -> bool:
    text = str(ref)
    return (
        isinstance(ref, Path) or "/" in text or "\\" in text or text.endswith((".yaml", ".yml")) or Path(text).is_file()
    )


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; TopologyError listing the presets if there is none."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TopologyError(
            f"unknown topology preset {name!r}; available presets: {', '.join(list_presets())} "
            "(or give the path of a topology YAML file)"
        )
    return path


def load_topology_spec_ref(
    ref: str | Path, nodes: int | None = None, overrides: Sequence[str] = ()
) -> tuple[TopologySpec, str]:
    """Resolve ``ref`` (preset or path) and return the validated spec and its source label."""
    if _looks_like_path(ref):
        path, source = Path(ref), str(ref)
    else:
        path, source = preset_path(str(ref)), f"topologies/{ref}.yaml"
    spec = load_topology_spec(path, overrides=overrides, num_nodes=nodes, source=source)
    return spec, source


def load_topology(ref: str | Path, nodes: int | None = None, overrides: Sequence[str] = ()) -> nx.DiGraph:
    """Load a preset or YAML file, apply ``nodes`` and ``overrides``, build and validate the graph.

    Raises:
        TopologyError: unknown preset (the message lists the available ones), disconnected graph.
        SpecError: malformed file, bad value, bad override (message names file and field).
    """
    spec, source = load_topology_spec_ref(ref, nodes, overrides)
    check_fits(estimate_spec(spec), enabled=size_check_enabled(), source=source)
    return build_topology(spec, source=source)


def estimate_spec(spec: TopologySpec) -> SizeEstimate:
    """Devices and links ``spec`` will build (before building it; see :mod:`netsim.limits`)."""
    nodes = getattr(spec, "nodes", None)
    if isinstance(nodes, list):  # an explicit graph
        return SizeEstimate(str(spec.name), devices=len(nodes), links=2 * len(getattr(spec, "links", [])))
    node = spec.node  # type: ignore[union-attr]
    acc = int(node.accelerators)
    host_nics = node.host_nics.count if node.host_nics is not None else 0
    num_nodes = int(spec.num_nodes)  # type: ignore[union-attr]
    check_count(num_nodes * acc, MAX_ACCELERATORS, "num_nodes * node.accelerators", what="accelerators")
    est = estimate_topology(num_nodes, 3 * acc + 3 + host_nics, what=f"topology {spec.name} ({num_nodes:,} nodes)")
    mesh = acc * int(getattr(node, "group_size", 0) or 0)  # HCCS full meshes: group_size links per NPU
    return SizeEstimate(est.what, devices=est.devices, links=est.links + num_nodes * mesh)
