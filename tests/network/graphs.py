"""Small hand-built topologies (per netsim.topology.model) for engine tests."""

from __future__ import annotations

import networkx as nx


def link(
    g: nx.DiGraph,
    a: str,
    b: str,
    bw: float,
    lat: float = 0.0,
    cls: str = "ib",
    tier: str = "t",
    network: str = "backend",
    both: bool = True,
) -> None:
    g.add_edge(a, b, capacity_Bps=bw, latency_s=lat, link_class=cls, network=network, tier=tier)
    if both:
        g.add_edge(b, a, capacity_Bps=bw, latency_s=lat, link_class=cls, network=network, tier=tier)


def fabric_node(g: nx.DiGraph, name: str, kind: str = "switch", latency_s: float = 0.0) -> None:
    g.add_node(name, kind=kind, node=-1, index=-1, network="backend", latency_s=latency_s)


def star(n: int, bw: float = 1e9, lat: float = 1e-6) -> nx.DiGraph:
    """n hosts h0..h{n-1} on one switch, every link ``bw`` bytes/s and ``lat`` s."""
    g = nx.DiGraph(name="star")
    fabric_node(g, "sw")
    for i in range(n):
        fabric_node(g, f"h{i}", kind="accelerator")
        link(g, f"h{i}", "sw", bw, lat, tier="host")
    return g


def leaf_spine(
    leaves: int, spines: int, hosts_per_leaf: int, bw: float = 1e9, up_bw: float | None = None, lat: float = 0.0
) -> nx.DiGraph:
    """Two-tier leaf-spine of fabric-level hosts h<leaf>_<i>."""
    g = nx.DiGraph(name="leafspine")
    for s in range(spines):
        fabric_node(g, f"spine{s}")
    for lf in range(leaves):
        fabric_node(g, f"leaf{lf}")
        for s in range(spines):
            link(g, f"leaf{lf}", f"spine{s}", up_bw or bw, lat, tier="leaf-spine")
        for i in range(hosts_per_leaf):
            h = f"h{lf}_{i}"
            fabric_node(g, h, kind="accelerator")
            link(g, h, f"leaf{lf}", bw, lat, tier="host-leaf")
    return g


def rail_pair(nvlink_bw: float = 400e9, nic_bw: float = 50e9, gpus: int = 2) -> nx.DiGraph:
    """Two servers of ``gpus`` GPUs on an NVSwitch, one NIC per GPU, one leaf per rail, one spine."""
    g = nx.DiGraph(name="railpair")
    fabric_node(g, "spine0")
    for r in range(gpus):
        fabric_node(g, f"r{r}.leaf0")
        link(g, f"r{r}.leaf0", "spine0", nic_bw * 2, tier="leaf-spine")
    for n in range(2):
        sw = f"n{n}.nvsw"
        g.add_node(sw, kind="switch", role="nvswitch", node=n, index=-1, network="node", latency_s=0.0)
        for i in range(gpus):
            gpu, nic = f"n{n}.g{i}", f"n{n}.nic{i}"
            g.add_node(gpu, kind="accelerator", node=n, index=i, network="node", rail=i, nic=nic)
            g.add_node(nic, kind="nic", node=n, index=i, network="node", rail=i)
            link(g, gpu, sw, nvlink_bw, cls="nvlink", tier="nvlink", network="node")
            link(g, gpu, nic, 64e9, cls="pcie", tier="gpu-nic", network="node")
            link(g, nic, f"r{i}.leaf0", nic_bw, tier="nic-leaf")
    return g
