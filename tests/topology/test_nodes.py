"""Node kinds: devices, links and capacities inside one server, counted by hand."""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx

from netsim.topology import load_topology
from netsim.topology.model import LINK_CLASSES, NETWORKS, NODE_KINDS
from tests.topology.helpers import GB, cables, make, names

NODE_ATTRS = {"kind", "role", "node", "index", "network", "latency_s", "rail", "plane", "nic", "tier"}
EDGE_ATTRS = {"capacity_Bps", "latency_s", "link_class", "network", "tier"}


def test_nvswitch_server_counts_and_capacities() -> None:
    # 2 servers x (4 GPUs + nvsw + 4 PCIe switches + host + 4 NICs) + leaf0
    g = make({"node": {"nvlink_latency": "0.2us", "nvswitch_latency": "0.1us", "nic": {"latency": "1us"}}})
    assert g.number_of_nodes() == 2 * (4 + 1 + 4 + 1 + 4) + 1
    # per server 4 nvlink + 4 gpu-pcie + 4 host-pcie + 4 gpu-nic cables; 8 nic-leaf cables; 2 directions
    assert g.number_of_edges() == 2 * (2 * 16) + 2 * 8
    nv = cables(g, "nvlink")
    assert len(nv) == 16
    assert {d["capacity_Bps"] for _, _, d in nv} == {100 * GB}
    assert {d["link_class"] for _, _, d in nv} == {"nvlink"}
    assert {d["latency_s"] for _, _, d in nv} == {2e-7}
    assert sorted(g.successors("n1.nvsw")) == ["n1.g0", "n1.g1", "n1.g2", "n1.g3"]
    assert g.nodes["n0.nvsw"] | {} == {
        "kind": "switch",
        "role": "nvswitch",
        "node": 0,
        "index": -1,
        "network": "node",
        "latency_s": 1e-7,
        "rail": -1,
        "plane": -1,
        "nic": "",
        "tier": 0,
    }
    assert g.nodes["n1.g2"] | {} == {
        "kind": "accelerator",
        "role": "gpu",
        "node": 1,
        "index": 2,
        "network": "node",
        "latency_s": 0.0,
        "rail": 2,
        "plane": -1,
        "nic": "n1.nic2",
        "tier": 0,
    }
    assert g.nodes["n1.nic2"]["latency_s"] == 1e-6
    assert g.edges["n0.g3", "n0.pcie3"]["capacity_Bps"] == 10 * GB
    assert sorted(g.successors("n0.pcie3")) == ["n0", "n0.g3"]
    assert g.edges["n0", "n0.pcie3"]["tier"] == "host-pcie"
    assert g.edges["n0.g3", "n0.nic3"] | {} == {
        "capacity_Bps": 12.5 * GB,
        "latency_s": 0.0,
        "link_class": "pcie",
        "network": "node",
        "tier": "gpu-nic",
    }


def test_every_node_and_edge_follows_the_contract() -> None:
    g = make({"node": {"host_nics": {"count": 2, "bandwidth": "25Gbps"}}}, frontend={"fabric": "single-switch"})
    pattern = re.compile(
        r"^(n\d+(\.(g|nic|hnic|pcie)\d+|\.nvsw)?|((p|r)\d+\.)?(leaf|spine|core)\d+|fe\.(leaf|spine)\d+|b?storage\d+)$"
    )
    for n, d in g.nodes(data=True):
        assert set(d) == NODE_ATTRS, n
        assert d["kind"] in NODE_KINDS and d["network"] in NETWORKS
        assert pattern.match(n), n
    for u, v, d in g.edges(data=True):
        assert set(d) == EDGE_ATTRS, (u, v)
        assert d["capacity_Bps"] > 0 and d["latency_s"] >= 0
        assert d["link_class"] in LINK_CLASSES and d["network"] in NETWORKS
        assert g.has_edge(v, u)  # builders make cables: both directions
    assert g.graph["accelerator"] == {
        "name": "X1",
        "role": "gpu",
        "peak_flops": {"bf16": 1e14},
        "memory_Bps": 1e12,
        "memory_bytes": 16e9,
    }
    assert (g.graph["name"], g.graph["num_nodes"], g.graph["accelerators_per_node"]) == ("tiny", 2, 4)
    assert g.graph["spec"]["node"]["nvlink_bandwidth"] == 100 * GB


def test_hccs_server_two_groups_of_four() -> None:
    g = make(
        {
            "node": {
                "kind": "hccs",
                "accelerators": 8,
                "group_size": 4,
                "hccs_bandwidth": "30GB/s",
                "pcie_bandwidth": "32GB/s",
                "inter_group_bandwidth": "16GB/s",
                "nvlink_bandwidth": None,
                "nic": {"attach": "integrated"},
            },
            "accelerator": {"role": "npu"},
        },
        num_nodes=1,
    )
    hccs = cables(g, "hccs")
    assert len(hccs) == 2 * 2 * 6  # two groups, C(4,2) = 6 cables each, two directions
    assert {d["capacity_Bps"] for _, _, d in hccs} == {30 * GB}
    assert sorted(v for v in g.successors("n0.g5") if g.nodes[v]["kind"] == "accelerator") == [
        "n0.g4",
        "n0.g6",
        "n0.g7",
    ]
    assert sorted(g.successors("n0.pcie0")) == ["n0", "n0.g0", "n0.g1", "n0.g2", "n0.g3", "n0.pcie1"]
    assert g.edges["n0.pcie0", "n0.pcie1"]["capacity_Bps"] == 16 * GB
    assert g.edges["n0.g0", "n0.pcie0"]["capacity_Bps"] == 32 * GB
    assert g.edges["n0", "n0.pcie1"]["tier"] == "host-pcie"
    # integrated NIC: on-chip link at the port speed, class generic
    assert g.edges["n0.g7", "n0.nic7"] | {} == {
        "capacity_Bps": 12.5 * GB,
        "latency_s": 0.0,
        "link_class": "generic",
        "network": "node",
        "tier": "gpu-nic",
    }
    assert names(g, kind="accelerator", role="npu") == [f"n0.g{i}" for i in range(8)]
    assert Counter(d["tier"] for _, _, d in g.edges(data=True)) == Counter(
        {"hccs": 24, "gpu-pcie": 16, "host-pcie": 4, "pcie-pcie": 2, "gpu-nic": 16, "nic-leaf": 16}
    )


def test_pcie_server_switches_joined_pairwise() -> None:
    g = make(
        {
            "node": {
                "kind": "pcie",
                "accelerators": 6,
                "accelerators_per_switch": 2,
                "pcie_bandwidth": "32GB/s",
                "nvlink_bandwidth": None,
                "inter_switch_bandwidth": "20GB/s",
                "host_bandwidth": "40GB/s",
            }
        },
        num_nodes=1,
    )
    assert names(g, role="pcie-switch") == ["n0.pcie0", "n0.pcie1", "n0.pcie2"]
    assert len(cables(g, "pcie-pcie")) == 2 * 3  # C(3,2) cables
    assert g.edges["n0.pcie2", "n0.pcie0"]["capacity_Bps"] == 20 * GB
    assert g.edges["n0.pcie1", "n0"]["capacity_Bps"] == 40 * GB
    assert sorted(v for v in g.successors("n0.pcie1") if v.startswith("n0.g")) == ["n0.g2", "n0.g3"]


def test_host_nics() -> None:
    g = make(
        {"node": {"host_nics": {"count": 2, "bandwidth": "25Gbps", "pcie_bandwidth": "16GB/s"}}},
        frontend={"fabric": "single-switch"},
    )
    assert names(g, role="host-nic") == ["n0.hnic0", "n0.hnic1", "n1.hnic0", "n1.hnic1"]
    assert g.nodes["n1.hnic1"]["network"] == "frontend"
    assert g.edges["n1", "n1.hnic1"]["capacity_Bps"] == 16 * GB
    assert g.edges["n1.hnic1", "fe.leaf0"] | {} == {
        "capacity_Bps": 25e9 / 8,
        "latency_s": 0.0,
        "link_class": "ethernet",
        "network": "frontend",
        "tier": "fe-host",
    }


def _server_paths(g: nx.DiGraph, k: int, a: str, b: str) -> list[list[str]]:
    """All shortest paths a -> b inside server k (what a router that ignores transit rules sees)."""
    inside = g.subgraph([n for n, d in g.nodes(data=True) if d["node"] == k])
    return sorted(nx.all_shortest_paths(inside, a, b))


def test_plain_shortest_paths_inside_servers_are_the_intended_ones() -> None:
    """Hosts do not forward; the wiring makes host detours strictly longer anyway."""
    g = load_topology("dgx-h100", nodes=1)
    assert _server_paths(g, 0, "n0.g0", "n0.g5") == [["n0.g0", "n0.nvsw", "n0.g5"]]
    assert _server_paths(g, 0, "n0.g1", "n0.nic0") == [["n0.g1", "n0.nvsw", "n0.g0", "n0.nic0"]]  # PXN relay
    assert _server_paths(g, 0, "n0", "n0.g2") == [["n0", "n0.pcie2", "n0.g2"]]
    a = load_topology("ascend-910a", nodes=1)
    assert _server_paths(a, 0, "n0.g1", "n0.g6") == [["n0.g1", "n0.pcie0", "n0.pcie1", "n0.g6"]]
    assert _server_paths(a, 0, "n0.g1", "n0.g3") == [["n0.g1", "n0.g3"]]
    assert _server_paths(a, 0, "n0.g1", "n0.nic6") == [["n0.g1", "n0.pcie0", "n0.pcie1", "n0.g6", "n0.nic6"]]
