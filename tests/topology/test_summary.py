"""Summary: tier oversubscription and bisection bandwidth, by hand and against networkx max-flow."""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import pytest

from netsim.topology import load_topology, summarize
from netsim.topology.summary import bisection_bandwidth, bisection_halves
from tests.topology.helpers import GB, make

NIC = 12.5 * GB


def _leaf_spine(oversub: object, **backend: Any) -> nx.DiGraph:
    # 4 servers x 2 GPUs, NIC 12.5 GB/s, 2 servers per leaf -> leaf down = 4 NICs = 50 GB/s
    patch = {
        "node": {"accelerators": 2},
        "backend": {"fabric": "leaf-spine", "nodes_per_leaf": 2, "oversubscription": oversub, **backend},
    }
    return make(patch, num_nodes=4)


def _reference_bisection(g: nx.DiGraph) -> float:
    """networkx max-flow between the halves, over the same links the summary uses."""
    keep = [n for n, d in g.nodes(data=True) if d["network"] != "frontend" and d["kind"] not in ("host", "storage")]
    h = nx.DiGraph()
    h.add_edges_from((u, v, {"capacity": d["capacity_Bps"]}) for u, v, d in g.subgraph(keep).edges(data=True))
    a, b = bisection_halves(g)
    for x in a:
        h.add_edge("S", x)  # no capacity attribute: infinite
    for x in b:
        h.add_edge(x, "T")
    return float(nx.maximum_flow_value(h, "S", "T"))


def test_fat_tree_bisection_1_to_1_vs_2_to_1() -> None:
    one = summarize(_leaf_spine(1))
    two = summarize(_leaf_spine(2))
    # halves = servers {0,1} (leaf0) vs {2,3} (leaf1): the cut is leaf0's uplinks
    assert one.bisection_bandwidth_Bps == pytest.approx(4 * NIC)
    assert two.bisection_bandwidth_Bps == pytest.approx(2 * NIC)
    leaf = next(t for t in two.tiers if t["network"] == "backend" and t["tier"] == 1)
    assert (leaf["switches"], leaf["down_Bps"], leaf["up_Bps"]) == (2, 8 * NIC, 4 * NIC)
    assert leaf["oversubscription"] == pytest.approx(2.0)
    spine = next(t for t in two.tiers if t["network"] == "backend" and t["tier"] == 2)
    assert (spine["switches"], spine["down_Bps"], spine["up_Bps"], spine["oversubscription"]) == (2, 4 * NIC, 0.0, None)


def test_three_tier_bisection_is_set_by_the_core() -> None:
    patch = {"node": {"accelerators": 1}, "backend": {"fabric": "fat-tree", "nodes_per_leaf": 2, "leaves_per_pod": 2}}
    full = make(patch, num_nodes=8)
    assert bisection_bandwidth(full) == pytest.approx(4 * NIC)  # pod 0 (4 servers) vs pod 1
    half = make({**patch, "backend": {**patch["backend"], "core_oversubscription": 2}}, num_nodes=8)
    assert bisection_bandwidth(half) == pytest.approx(2 * NIC)
    spine = next(t for t in summarize(half).tiers if t["tier"] == 2)
    assert spine["oversubscription"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "backend",
    [
        {"fabric": "single-switch"},
        {"fabric": "leaf-spine", "nodes_per_leaf": 1, "oversubscription": 3},
        {"fabric": "rail-optimized", "nodes_per_leaf": 2, "oversubscription": 2},
        {"fabric": "multi-plane", "nodes_per_leaf": 1, "spines": 3},
        {"fabric": "fat-tree", "nodes_per_leaf": 1, "leaves_per_pod": 2, "core_oversubscription": 1.5},
    ],
)
def test_bisection_matches_networkx_max_flow(backend: dict[str, Any]) -> None:
    g = make({"node": {"accelerators": 2, "nic": {"pcie_bandwidth": "5GB/s"}}, "backend": backend}, num_nodes=5)
    ours = bisection_bandwidth(g)
    assert ours is not None
    assert ours == pytest.approx(_reference_bisection(g), rel=1e-9)


def test_bisection_intra_node_and_presets() -> None:
    # one server: halves are GPUs {0,1} vs {2,3}, joined through the NVSwitch at 100 GB/s each
    assert bisection_bandwidth(make(num_nodes=1, backend=None)) == pytest.approx(2 * 100 * GB)
    # 910A without a back-end: the two HCCS groups meet only at the 32 GB/s inter-group PCIe link
    alone = load_topology("ascend-910a", nodes=1, overrides=["backend=null"])
    assert bisection_bandwidth(alone) == pytest.approx(32 * GB)
    # with its leaf switch, the 4 NICs of a group (4 x 12.5 GB/s) add a path through the leaf
    assert bisection_bandwidth(load_topology("ascend-910a", nodes=1)) == pytest.approx(32 * GB + 4 * NIC)
    # DGX H100, 4 servers, non-blocking rails: 2 servers x 8 NICs x 50 GB/s
    h100 = load_topology("dgx-h100", nodes=4)
    assert bisection_bandwidth(h100) == pytest.approx(2 * 8 * 50 * GB)
    assert bisection_bandwidth(h100) == pytest.approx(_reference_bisection(h100), rel=1e-9)


def test_summary_tables() -> None:
    s = summarize(make({"node": {"host_nics": {"bandwidth": "25Gbps"}}}, frontend={"fabric": "single-switch"}))
    d = s.to_dict()
    assert {r["kind"]: r["count"] for r in d["devices"] if r["role"] in ("gpu", "host", "rail-nic")} == {
        "accelerator": 8,
        "host": 2,
        "nic": 8,
    }
    nv = next(r for r in d["links"] if r["tier"] == "nvlink")
    assert (nv["network"], nv["link_class"], nv["count"]) == ("node", "nvlink", 16)
    assert nv["capacity_Bps_min"] == nv["capacity_Bps_max"] == 100 * GB
    assert nv["total_capacity_Bps"] == pytest.approx(16 * 100 * GB)
    assert s.num_links == sum(r["count"] for r in d["links"])
    assert s.num_devices == sum(r["count"] for r in d["devices"])
    assert math.isclose(d["bisection_bandwidth_Bps"], 4 * NIC)
