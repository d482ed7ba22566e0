"""Ideal reference topologies for checking collectives against alpha-beta closed forms.

Small explicit graphs following :mod:`netsim.topology.model`, with one bandwidth and one
latency per link kind, so that the time of a collective on them can be written down by hand:

* :func:`star_topology`: ``n`` GPUs on one switch (``n0.nvsw``): every GPU has its own up- and
  down-link, so a ring, a pairwise exchange or an all-to-all never shares a link direction
  except where the algorithm itself converges (incast).
* :func:`full_mesh_topology`: a direct link between every ordered pair of GPUs.
* :func:`two_tier_topology`: servers of ``G`` GPUs on an NVSwitch, each GPU with its own NIC
  (rail ``i``) on one back-end leaf switch: the smallest cluster with a fast intra-server and a
  slower inter-server fabric.

The test-suite, the calibration round-trip and the synthetic nccl-tests fixtures use them.
"""

from __future__ import annotations

import networkx as nx


def _gpu(g: nx.DiGraph, node: int, index: int, nic: str | None = None) -> str:
    name = f"n{node}.g{index}"
    g.add_node(
        name,
        kind="accelerator",
        role="gpu",
        node=node,
        index=index,
        network="node",
        latency_s=0.0,
        rail=index if nic else -1,
        plane=-1,
        nic=nic,
        tier=0,
    )
    return name


def _link(
    g: nx.DiGraph, u: str, v: str, bw_Bps: float, latency_s: float, link_class: str, network: str, tier: str
) -> None:
    for a, b in ((u, v), (v, u)):
        g.add_edge(
            a,
            b,
            capacity_Bps=float(bw_Bps),
            latency_s=float(latency_s),
            link_class=link_class,
            network=network,
            tier=tier,
        )


def _graph_attrs(g: nx.DiGraph, name: str, nodes: int, per_node: int) -> None:
    g.graph.update(
        name=name,
        num_nodes=nodes,
        accelerators_per_node=per_node,
        accelerator={"name": "ideal", "peak_flops": {}, "memory_Bps": 0.0, "memory_bytes": 0.0},
        spec={},
    )


def star_topology(
    n: int, bw_Bps: float, link_latency_s: float, *, switch_latency_s: float = 0.0, link_class: str = "nvlink"
) -> nx.DiGraph:
    """``n`` GPUs ``n0.g<i>`` on one switch ``n0.nvsw``; GPU-to-GPU path latency is
    ``2 * link_latency_s + switch_latency_s``."""
    g = nx.DiGraph()
    _graph_attrs(g, "star", 1, n)
    g.add_node(
        "n0.nvsw",
        kind="switch",
        role="nvswitch",
        node=0,
        index=-1,
        network="node",
        latency_s=float(switch_latency_s),
        rail=-1,
        plane=-1,
        nic=None,
        tier=0,
    )
    for i in range(n):
        _link(g, _gpu(g, 0, i), "n0.nvsw", bw_Bps, link_latency_s, link_class, "node", link_class)
    return g


def full_mesh_topology(n: int, bw_Bps: float, link_latency_s: float, *, link_class: str = "nvlink") -> nx.DiGraph:
    """``n`` GPUs with a direct link (each direction ``bw_Bps``) between every pair."""
    g = nx.DiGraph()
    _graph_attrs(g, "full-mesh", 1, n)
    names = [_gpu(g, 0, i) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            _link(g, names[i], names[j], bw_Bps, link_latency_s, link_class, "node", link_class)
    return g


def two_tier_topology(
    nodes: int,
    per_node: int,
    *,
    intra_bw_Bps: float,
    intra_latency_s: float,
    nic_bw_Bps: float,
    nic_latency_s: float,
    pcie_bw_Bps: float | None = None,
    pcie_latency_s: float = 0.0,
    leaf_latency_s: float = 0.0,
    inter_class: str = "ib",
) -> nx.DiGraph:
    """``nodes`` servers of ``per_node`` GPUs.

    Inside server ``k``: GPUs ``n<k>.g<i>`` on ``n<k>.nvsw`` (``intra_bw_Bps``, ``intra_latency_s``
    per link).  GPU ``i`` reaches the fabric through its NIC ``n<k>.nic<i>`` (a PCIe link of
    ``pcie_bw_Bps``, default ``4 * nic_bw_Bps``) and the NIC a single leaf switch ``leaf0``
    (``nic_bw_Bps``, ``nic_latency_s``, class ``inter_class``).  GPU-to-GPU latency across servers
    is ``2 * (pcie_latency_s + nic_latency_s) + leaf_latency_s``.
    """
    g = nx.DiGraph()
    _graph_attrs(g, "two-tier", nodes, per_node)
    g.add_node(
        "leaf0",
        kind="switch",
        role="leaf",
        node=-1,
        index=-1,
        network="backend",
        latency_s=float(leaf_latency_s),
        rail=-1,
        plane=-1,
        nic=None,
        tier=1,
    )
    pcie = float(pcie_bw_Bps) if pcie_bw_Bps is not None else 4.0 * float(nic_bw_Bps)
    for k in range(nodes):
        sw = f"n{k}.nvsw"
        g.add_node(
            sw,
            kind="switch",
            role="nvswitch",
            node=k,
            index=-1,
            network="node",
            latency_s=0.0,
            rail=-1,
            plane=-1,
            nic=None,
            tier=0,
        )
        for i in range(per_node):
            nic = f"n{k}.nic{i}"
            gpu = _gpu(g, k, i, nic)
            g.add_node(
                nic,
                kind="nic",
                role="rail-nic",
                node=k,
                index=i,
                network="backend",
                latency_s=0.0,
                rail=i,
                plane=-1,
                nic=None,
                tier=0,
            )
            _link(g, gpu, sw, intra_bw_Bps, intra_latency_s, "nvlink", "node", "nvlink")
            _link(g, gpu, nic, pcie, pcie_latency_s, "pcie", "node", "gpu-nic")
            _link(g, nic, "leaf0", nic_bw_Bps, nic_latency_s, inter_class, "backend", "nic-leaf")
    return g
