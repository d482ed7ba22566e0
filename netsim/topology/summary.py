"""What a topology adds up to: devices, links, per-tier oversubscription, bisection bandwidth.

* **devices**: counts by (kind, role).
* **links**: directed links grouped by (network, class, tier) with their count, per-link
  capacity range and total capacity (sum over directed links, so a cable counts twice).
* **tiers**: for every switch tier of the back-end and front-end, the *down* capacity (links
  into the tier's switches from below: NICs, storage, lower switches) and the *up* capacity
  (links from them to the tier above); ``oversubscription``: ``down / up`` of the tier's most
  oversubscribed switch (1.0 = non-blocking, 2.0 = 2:1): the tier's design, which a partly
  filled last leaf, cabled as a full one, does not dilute.  The top tier has no up capacity.
* **bisection bandwidth**: the maximum flow, in bytes/s and one direction, from the
  accelerators of the first half of the servers (by server index) to those of the second half,
  over the node and back-end links (hosts, storage and the front-end excluded; accelerators may
  relay, as PXN does).  With a single server the split is by accelerator index inside it.
  Because servers are numbered leaf by leaf and pod by pod, this cut separates whole leaves
  (and pods) whenever the counts are even, so it measures the fabric's bisection.

The max-flow runs on :func:`scipy.sparse.csgraph.maximum_flow` (integer capacities, scaled
to fit int32); the reported value is then recomputed exactly in floating point as the capacity
of the minimum cut found, which the tests compare with networkx's max-flow on small cases.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import networkx as nx
import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from netsim.topology.model import NODE_KINDS

_TIER_ROLE = {1: "leaf", 2: "spine", 3: "core"}
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class TopologySummary:
    """Plain-data summary of a topology graph (``to_dict()`` is JSON-serialisable)."""

    name: str
    description: str
    num_nodes: int
    accelerators_per_node: int
    accelerator: dict[str, Any]
    num_devices: int
    num_links: int
    devices: list[dict[str, Any]]
    """``{kind, role, count}`` rows."""
    links: list[dict[str, Any]]
    """``{network, link_class, tier, count, capacity_Bps_min, capacity_Bps_max, total_capacity_Bps}`` rows."""
    tiers: list[dict[str, Any]]
    """``{network, tier, role, switches, down_Bps, up_Bps, oversubscription}`` rows."""
    bisection_bandwidth_Bps: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(g: nx.DiGraph) -> TopologySummary:
    """Summarise a topology graph built per :mod:`netsim.topology.model`."""
    kind_order = {k: i for i, k in enumerate(NODE_KINDS)}
    dev_counts: dict[tuple[str, str], int] = defaultdict(int)
    for _, d in g.nodes(data=True):
        dev_counts[(d["kind"], d["role"])] += 1
    devices = [
        {"kind": k, "role": r, "count": c}
        for (k, r), c in sorted(dev_counts.items(), key=lambda kv: (kind_order.get(kv[0][0], 99), kv[0][1]))
    ]

    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for _, _, d in g.edges(data=True):
        groups[(d["network"], d["link_class"], d["tier"])].append(d["capacity_Bps"])
    net_order = {"node": 0, "backend": 1, "frontend": 2}
    links = [
        {
            "network": net,
            "link_class": cls,
            "tier": tier,
            "count": len(caps),
            "capacity_Bps_min": min(caps),
            "capacity_Bps_max": max(caps),
            "total_capacity_Bps": math.fsum(caps),
        }
        for (net, cls, tier), caps in sorted(groups.items(), key=lambda kv: (net_order.get(kv[0][0], 9), kv[0]))
    ]

    return TopologySummary(
        name=str(g.graph.get("name", "")),
        description=str(g.graph.get("spec", {}).get("description", "")),
        num_nodes=int(g.graph.get("num_nodes", 0)),
        accelerators_per_node=int(g.graph.get("accelerators_per_node", 0)),
        accelerator=dict(g.graph.get("accelerator", {})),
        num_devices=g.number_of_nodes(),
        num_links=g.number_of_edges(),
        devices=devices,
        links=links,
        tiers=tier_oversubscription(g),
        bisection_bandwidth_Bps=bisection_bandwidth(g),
    )


def tier_oversubscription(g: nx.DiGraph) -> list[dict[str, Any]]:
    """Down and up capacity of every switch tier of the back-end and front-end (see module doc)."""
    nodes = g.nodes
    down: dict[tuple[str, int], list[float]] = defaultdict(list)
    up: dict[tuple[str, int], list[float]] = defaultdict(list)
    down_of: dict[str, float] = defaultdict(float)
    up_of: dict[str, float] = defaultdict(float)
    switches: dict[tuple[str, int], int] = defaultdict(int)
    for _, d in g.nodes(data=True):
        if d["kind"] == "switch" and d["network"] in ("backend", "frontend") and d["tier"] >= 1:
            switches[(d["network"], d["tier"])] += 1
    for u, v, d in g.edges(data=True):
        dv = nodes[v]
        if dv["kind"] != "switch" or (dv["network"], dv["tier"]) not in switches:
            continue
        du = nodes[u]
        key = (dv["network"], dv["tier"])
        if du["kind"] != "switch" or du["tier"] < dv["tier"]:
            down[key].append(d["capacity_Bps"])
            down_of[v] += d["capacity_Bps"]
        if du["kind"] == "switch" and du["network"] == dv["network"] and du["tier"] < dv["tier"]:
            up[(du["network"], du["tier"])].append(d["capacity_Bps"])
            up_of[u] += d["capacity_Bps"]
    ratio: dict[tuple[str, int], float] = {}
    for sw, up_Bps in up_of.items():
        key = (nodes[sw]["network"], nodes[sw]["tier"])
        ratio[key] = max(ratio.get(key, 0.0), down_of[sw] / up_Bps)
    rows = []
    for net, tier in sorted(switches, key=lambda k: (k[0] != "backend", k[1])):
        down_Bps = math.fsum(down[(net, tier)])
        up_Bps = math.fsum(up[(net, tier)])
        role = _TIER_ROLE.get(tier, f"tier{tier}")
        rows.append(
            {
                "network": net,
                "tier": tier,
                "role": role if net == "backend" else f"fe-{role}",
                "switches": switches[(net, tier)],
                "down_Bps": down_Bps,
                "up_Bps": up_Bps,
                "oversubscription": ratio.get((net, tier)) if up_Bps > 0 else None,
            }
        )
    return rows


def bisection_halves(g: nx.DiGraph) -> tuple[list[str], list[str]]:
    """The two accelerator halves of the bisection: first vs second half of the servers."""
    accs = sorted((d["node"], d["index"], n) for n, d in g.nodes(data=True) if d["kind"] == "accelerator")
    servers = sorted({s for s, _, _ in accs})
    if len(servers) >= 2:
        first = set(servers[: len(servers) // 2])
        return [n for s, _, n in accs if s in first], [n for s, _, n in accs if s not in first]
    half = len(accs) // 2
    return [n for _, _, n in accs[:half]], [n for _, _, n in accs[half:]]


def bisection_bandwidth(g: nx.DiGraph) -> float | None:
    """Max flow in bytes/s from one half of the accelerators to the other (None if < 2).

    See the module docstring for the halves and the links that take part.
    """
    side_a, side_b = bisection_halves(g)
    if not side_a or not side_b:
        return None
    index = {
        n: i
        for i, n in enumerate(
            n for n, d in g.nodes(data=True) if d["network"] != "frontend" and d["kind"] not in ("host", "storage")
        )
    }
    src_l: list[int] = []
    dst_l: list[int] = []
    cap_l: list[float] = []
    for u, v, c in g.edges(data="capacity_Bps"):
        iu, iv = index.get(u), index.get(v)
        if iu is not None and iv is not None:
            src_l.append(iu)
            dst_l.append(iv)
            cap_l.append(c)
    n = len(index)
    source, sink = n, n + 1
    src = np.asarray(src_l, dtype=np.int64)
    dst = np.asarray(dst_l, dtype=np.int64)
    cap = np.asarray(cap_l, dtype=np.float64)
    out_cap = np.bincount(src, weights=cap, minlength=n + 2)
    in_cap = np.bincount(dst, weights=cap, minlength=n + 2)
    a_idx = np.asarray([index[a] for a in side_a], dtype=np.int64)
    b_idx = np.asarray([index[b] for b in side_b], dtype=np.int64)
    # super-source -> side A, side B -> super-sink, as large as anything the device can move
    src = np.concatenate([src, np.full(len(a_idx), source), b_idx])
    dst = np.concatenate([dst, a_idx, np.full(len(b_idx), sink)])
    cap = np.concatenate([cap, out_cap[a_idx], in_cap[b_idx]])
    keep = cap > 0
    src, dst, cap = src[keep], dst[keep], cap[keep]
    if len(cap) == 0:
        return 0.0

    # integer capacities for scipy: scale by a power of two so the largest fits in int32
    unit = 2.0 ** max(0, math.ceil(math.log2(float(cap.max()) / 2**30)))
    icap = np.maximum(1, np.round(cap / unit)).astype(np.int32)
    mat = csr_array((icap, (src, dst)), shape=(n + 2, n + 2))
    mat.sum_duplicates()
    result = maximum_flow(mat, source, sink)
    if result.flow_value == 0:
        return 0.0

    # the minimum cut: what the super-source still reaches in the residual graph
    residual = (mat - result.flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = np.zeros(n + 2, dtype=bool)
    reached[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    crossing = reached[src] & ~reached[dst]
    return float(math.fsum(cap[crossing]))
