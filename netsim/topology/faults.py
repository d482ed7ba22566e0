"""What runs below its nominal rate: degraded links and slow accelerators.

A cluster is rarely all at line rate.  A port that trained down to a lower speed, a flapping
cable or a congested uplink moves less than the preset's achieved rate; a GPU with throttled
clocks computes slower than its siblings, and every collective it joins waits for it (the
straggler of MegaScale, arXiv 2402.15627, section 5).  A topology names them
(:class:`~netsim.config.topology.DegradedLinkSpec`, :class:`~netsim.config.topology.SlowDeviceSpec`):

* ``degraded_links``: every link between a device matching ``a`` and one matching ``b``
  (shell-style patterns over device names, both directions) gets the edge attribute ``degrade``,
  the fraction of its achieved rate left; the flow engine multiplies it into the link's capacity
  (:meth:`netsim.network.links.LinkTable.from_graph`).  NCCL's tuner keeps reading the nominal
  ``capacity_Bps``: it picks algorithms and channels from the topology it detects at start-up,
  not from a link that slows down later.
* ``slow_devices``: every accelerator matching ``device`` gets the node attribute ``speed``; the
  training-step builder divides the compute ops of the ranks on it by it
  (:class:`netsim.workload.emit.OpEmitter`).

A pattern that matches nothing, or a slow-device pattern that matches a device that is not an
accelerator, is a one-line error naming the field: a typo must not silently leave the cluster
healthy.  Several entries on one link or device multiply.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import networkx as nx

from netsim.errors import TopologyError

__all__ = ["apply_faults", "degraded_links", "device_speeds", "fault_summary"]


def apply_faults(graph: nx.DiGraph, spec: object, *, source: str | None = None) -> None:
    """Mark ``spec``'s degraded links and slow devices on ``graph`` (module doc)."""
    for i, d in enumerate(getattr(spec, "degraded_links", None) or []):
        hit = 0
        for u, v, data in graph.edges(data=True):
            su, sv = str(u), str(v)
            if (fnmatchcase(su, d.a) and fnmatchcase(sv, d.b)) or (fnmatchcase(sv, d.a) and fnmatchcase(su, d.b)):
                data["degrade"] = float(data.get("degrade", 1.0)) * d.bandwidth
                hit += 1
        if not hit:
            raise TopologyError(
                f"no link between devices matching {d.a!r} and {d.b!r} (device names look like {_examples(graph)})",
                source=source,
                field=f"degraded_links[{i}]",
            )
    for i, s in enumerate(getattr(spec, "slow_devices", None) or []):
        names = [n for n in graph.nodes if fnmatchcase(str(n), s.device)]
        if not names:
            raise TopologyError(
                f"no device matches {s.device!r} (accelerators look like {_examples(graph, 'accelerator')})",
                source=source,
                field=f"slow_devices[{i}].device",
            )
        bad = [str(n) for n in names if graph.nodes[n].get("kind") != "accelerator"]
        if bad:
            raise TopologyError(
                f"{s.device!r} matches {bad[0]}, which is not an accelerator (only accelerators compute)",
                source=source,
                field=f"slow_devices[{i}].device",
            )
        for n in names:
            graph.nodes[n]["speed"] = float(graph.nodes[n].get("speed", 1.0)) * s.speed


def degraded_links(graph: nx.DiGraph) -> list[tuple[str, str, float]]:
    """``(u, v, fraction left)`` of every degraded link (one entry per direction)."""
    return [(str(u), str(v), float(d["degrade"])) for u, v, d in graph.edges(data=True) if "degrade" in d]


def device_speeds(graph: nx.DiGraph) -> dict[str, float]:
    """The speed of every slow accelerator (the others run at 1)."""
    return {str(n): float(d["speed"]) for n, d in graph.nodes(data=True) if "speed" in d}


def fault_summary(graph: nx.DiGraph) -> dict[str, Any]:
    """The topology's degraded links and slow accelerators, with a line for the console and the
    report (``netsim run``, ``netsim topology show``); empty when everything runs at its rate."""
    links = degraded_links(graph)
    speeds = device_speeds(graph)
    if not links and not speeds:
        return {}
    pairs = sorted({(min(u, v), max(u, v), f) for u, v, f in links})
    parts = []
    if pairs:
        parts.append(f"{len(pairs)} link(s) degraded ({_listed(f'{u}-{v} x{f:g}' for u, v, f in pairs)})")
    if speeds:
        parts.append(f"{len(speeds)} slow accelerator(s) ({_listed(f'{d} x{v:g}' for d, v in sorted(speeds.items()))})")
    return {
        "degraded_links": [{"a": u, "b": v, "bandwidth": f} for u, v, f in pairs],
        "slow_devices": dict(sorted(speeds.items())),
        "line": "faults: " + "; ".join(parts),
    }


def _listed(items: Iterable[str], most: int = 4) -> str:
    """The first ``most`` of ``items``, with ``...`` for the rest."""
    items = list(items)
    return ", ".join(items[:most]) + (", ..." if len(items) > most else "")


def _examples(graph: nx.DiGraph, kind: str | None = None) -> str:
    return _listed((str(n) for n, d in graph.nodes(data=True) if kind is None or d.get("kind") == kind), 3)
