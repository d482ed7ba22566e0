"""Back-end fabrics, front-end and storage: switch counts, wiring and uplink capacities by hand.

Every test server has NICs of 100 Gb/s = 12.5 GB/s (BASE in helpers.py).
"""

from __future__ import annotations

from collections import Counter

import pytest

from netsim.topology.model import nic_name
from netsim.topology.summary import tier_oversubscription
from tests.topology.helpers import GB, cables, make, names

NIC = 12.5 * GB


def _switch_neighbours(g, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(v for v in g.successors(name) if g.nodes[v]["kind"] == "switch")


def test_single_switch() -> None:
    g = make({"backend": {"link_class": "roce", "switch_latency": "0.5us", "link_latency": "0.1us"}}, num_nodes=3)
    assert names(g, kind="switch", network="backend") == ["leaf0"]
    assert g.nodes["leaf0"]["latency_s"] == 5e-7 and g.nodes["leaf0"]["tier"] == 1
    assert sorted(g.successors("leaf0")) == sorted(nic_name(k, i) for k in range(3) for i in range(4))
    assert g.edges["n2.nic3", "leaf0"] | {} == {
        "capacity_Bps": NIC,
        "latency_s": 1e-7,
        "link_class": "roce",
        "network": "backend",
        "tier": "nic-leaf",
    }


@pytest.mark.parametrize(
    ("oversub", "ratio", "spines", "each"),
    [(1, 1.0, 8, NIC), (2, 2.0, 4, NIC), ("4:1", 4.0, 2, NIC), (3, 3.0, 3, 8 * NIC / 3 / 3)],
)
def test_leaf_spine_uplinks_follow_oversubscription(oversub: object, ratio: float, spines: int, each: float) -> None:
    # 4 servers x 4 NICs, 2 servers per leaf -> 2 leaves of 8 downlinks (100 GB/s down each)
    g = make({"backend": {"fabric": "leaf-spine", "nodes_per_leaf": 2, "oversubscription": oversub}}, num_nodes=4)
    assert names(g, role="leaf") == ["leaf0", "leaf1"]
    assert names(g, role="spine") == [f"spine{s}" for s in range(spines)]  # ceil(8 / oversub) uplink ports
    assert sorted(v for v in g.successors("leaf1") if v.endswith("nic0")) == ["n2.nic0", "n3.nic0"]
    up = [d["capacity_Bps"] for u, v, d in cables(g, "leaf-spine") if u == "leaf0"]
    assert len(up) == spines
    assert up == pytest.approx([each] * spines)
    assert sum(up) == pytest.approx(8 * NIC / ratio)


def test_leaf_spine_explicit_spines_and_single_leaf() -> None:
    g = make({"backend": {"fabric": "leaf-spine", "nodes_per_leaf": 2, "spines": 2}}, num_nodes=4)
    assert g.edges["leaf1", "spine1"]["capacity_Bps"] == 4 * NIC  # 8 NICs of uplink over 2 spines
    # all servers under one leaf: a spine tier would carry nothing and is left out
    g = make({"backend": {"fabric": "leaf-spine", "nodes_per_leaf": 4}}, num_nodes=3)
    assert names(g, kind="switch", network="backend") == ["leaf0"]


def test_partly_filled_leaf_keeps_the_uplinks_of_a_full_leaf() -> None:
    # 5 servers, 2 per leaf: leaf2 has one server; a built fabric cables it as the others, so one
    # flow leaving it is not capped below its NIC (it was 2 NICs' worth over 8 spines = NIC/4)
    for fabric, leaf, down in (("leaf-spine", "leaf2", 8), ("rail-optimized", "r0.leaf2", 2)):
        g = make({"backend": {"fabric": fabric, "nodes_per_leaf": 2}}, num_nodes=5)
        first, last = (leaf.replace("leaf2", "leaf0"), leaf)
        up = {u: sorted(d["capacity_Bps"] for a, _, d in cables(g, "leaf-spine") if a == u) for u in (first, last)}
        assert up[last] == up[first] and sum(up[last]) == pytest.approx(down * NIC), fabric
        # the tier summary reports the design's 1:1, not the aggregate the spare uplinks dilute
        leaf_tier = next(t for t in tier_oversubscription(g) if t["role"] == "leaf")
        assert leaf_tier["oversubscription"] == pytest.approx(1.0)
        assert leaf_tier["down_Bps"] < leaf_tier["up_Bps"]
    # a partly filled pod's spines keep the core links of a full pod's
    g = make(
        {
            "node": {"accelerators": 1},
            "backend": {"fabric": "fat-tree", "nodes_per_leaf": 2, "leaves_per_pod": 2, "core_oversubscription": 2},
        },
        num_nodes=6,
    )
    assert g.edges["spine2", "core0"]["capacity_Bps"] == g.edges["spine0", "core0"]["capacity_Bps"] == NIC


def test_rail_optimized() -> None:
    g = make({"backend": {"fabric": "rail-optimized", "nodes_per_leaf": 2}}, num_nodes=4)
    leaves = names(g, role="leaf")
    assert leaves == [f"r{r}.leaf{j}" for j in range(2) for r in range(4)]
    assert g.nodes["r3.leaf1"]["rail"] == 3 and g.nodes["r3.leaf1"]["index"] == 1
    assert sorted(v for v in g.successors("r3.leaf1") if g.nodes[v]["kind"] == "nic") == ["n2.nic3", "n3.nic3"]
    assert names(g, role="spine") == ["spine0", "spine1"]  # 2 downlinks per leaf, 1:1
    assert _switch_neighbours(g, "spine0") == sorted(leaves)  # spines join all rails
    assert {d["capacity_Bps"] for _, _, d in cables(g, "leaf-spine")} == {NIC}
    assert len(cables(g, "leaf-spine")) == 2 * 8 * 2


def test_multi_plane_has_no_links_between_planes() -> None:
    g = make({"backend": {"fabric": "multi-plane", "nodes_per_leaf": 2}}, num_nodes=4)
    for p in range(4):
        assert names(g, role="leaf", plane=p) == [f"p{p}.leaf0", f"p{p}.leaf1"]
        assert names(g, role="spine", plane=p) == [f"p{p}.spine0", f"p{p}.spine1"]
    assert g.nodes["n1.nic2"]["plane"] == 2 and g.nodes["n1.g2"]["plane"] == -1
    for u, v, d in g.edges(data=True):
        if d["network"] == "backend":
            planes = {g.nodes[x]["plane"] for x in (u, v)}
            assert len(planes) == 1, (u, v)
    assert sorted(g.successors("p2.leaf1")) == ["n2.nic2", "n3.nic2", "p2.spine0", "p2.spine1"]


def test_fat_tree_pods_and_cores() -> None:
    # 8 servers x 1 GPU; 2 servers per leaf -> 4 leaves; 2 leaves per pod -> 2 pods
    g = make(
        {
            "node": {"accelerators": 1},
            "backend": {"fabric": "fat-tree", "nodes_per_leaf": 2, "leaves_per_pod": 2, "core_oversubscription": 2},
        },
        num_nodes=8,
    )
    assert names(g, role="leaf") == ["leaf0", "leaf1", "leaf2", "leaf3"]
    assert names(g, role="spine") == ["spine0", "spine1", "spine2", "spine3"]  # 2 per pod
    assert names(g, role="core") == ["core0", "core1"]  # default: one group of 1 core per spine index
    assert _switch_neighbours(g, "leaf2") == ["spine2", "spine3"]  # pod 1
    assert _switch_neighbours(g, "core1") == ["spine1", "spine3"]  # spine index 1 of both pods
    assert g.edges["leaf0", "spine1"]["capacity_Bps"] == NIC  # 2 NICs down, 1:1, 2 spines
    assert g.edges["spine3", "core1"]["capacity_Bps"] == NIC  # 2 leaves x NIC down, 2:1, 1 core
    assert g.nodes["core0"]["tier"] == 3
    assert Counter(d["tier"] for _, _, d in g.edges(data=True) if d["network"] == "backend") == Counter(
        {"nic-leaf": 16, "leaf-spine": 16, "spine-core": 8}
    )


def test_fat_tree_core_groups() -> None:
    g = make(
        {
            "node": {"accelerators": 1},
            "backend": {
                "fabric": "fat-tree",
                "nodes_per_leaf": 2,
                "leaves_per_pod": 2,
                "spines_per_pod": 2,
                "cores": 4,
            },
        },
        num_nodes=8,
    )
    assert _switch_neighbours(g, "spine2") == ["core0", "core1", "leaf2", "leaf3"]
    assert _switch_neighbours(g, "spine3") == ["core2", "core3", "leaf2", "leaf3"]
    assert g.edges["spine3", "core3"]["capacity_Bps"] == NIC  # 2 NICs of down over 2 cores


def test_backend_storage_on_spines_and_planes() -> None:
    g = make(
        {
            "backend": {
                "fabric": "leaf-spine",
                "nodes_per_leaf": 2,
                "spines": 2,
                "storage": {"count": 3, "bandwidth": "400Gbps", "latency": "0.2us"},
            }
        },
        num_nodes=4,
    )
    assert names(g, kind="storage") == ["bstorage0", "bstorage1", "bstorage2"]
    assert [_switch_neighbours(g, f"bstorage{i}") for i in range(3)] == [["spine0"], ["spine1"], ["spine0"]]
    assert g.edges["bstorage2", "spine0"] | {} == {
        "capacity_Bps": 50 * GB,
        "latency_s": 2e-7,
        "link_class": "ib",
        "network": "backend",
        "tier": "storage",
    }
    g = make(
        {
            "backend": {
                "fabric": "multi-plane",
                "nodes_per_leaf": 2,
                "storage": {"count": 1, "bandwidth": "100Gbps", "attach": "leaf"},
            }
        },
        num_nodes=4,
    )
    assert _switch_neighbours(g, "bstorage0") == ["p0.leaf0", "p1.leaf0", "p2.leaf0", "p3.leaf0"]
    # storage on leaves counts as downlink capacity: leaf0 of each plane has 2 NICs + storage
    assert g.edges["p1.leaf0", "p1.spine0"]["capacity_Bps"] == pytest.approx(3 * NIC / 3)


def test_frontend_leaf_spine_with_storage() -> None:
    g = make(
        {"node": {"host_nics": {"count": 1, "bandwidth": "25Gbps"}}},
        num_nodes=4,
        frontend={
            "fabric": "leaf-spine",
            "hosts_per_leaf": 2,
            "oversubscription": 2,
            "switch_latency": "1us",
            "storage": {"count": 2, "bandwidth": "100Gbps", "attach": "spine"},
        },
    )
    assert names(g, role="fe-leaf") == ["fe.leaf0", "fe.leaf1"]
    assert names(g, role="fe-spine") == ["fe.spine0"]  # ceil(2 ports / 2)
    assert sorted(g.successors("fe.spine0")) == ["fe.leaf0", "fe.leaf1", "storage0", "storage1"]
    assert g.edges["fe.leaf1", "fe.spine0"] | {} == {
        "capacity_Bps": 2 * 25e9 / 8 / 2,
        "latency_s": 0.0,
        "link_class": "ethernet",
        "network": "frontend",
        "tier": "fe-leaf-spine",
    }
    assert g.nodes["fe.spine0"]["latency_s"] == 1e-6
    assert g.nodes["storage1"]["network"] == "frontend"
    # the front-end never touches the back-end
    for u, v, d in g.edges(data=True):
        if d["network"] == "frontend":
            assert "backend" not in (g.nodes[u]["network"], g.nodes[v]["network"])


def test_large_cluster_builds() -> None:
    """2048 servers (16384 GPUs) of the DGX H100 preset: counts only (speed is a benchmark)."""
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=2048)
    assert len(names(g, kind="accelerator")) == 16384
    # 64 groups of 32 servers x 8 rails = 512 leaves; 32 downlinks per leaf, 1:1 -> 32 spines
    assert len(names(g, role="leaf")) == 512
    assert len(names(g, role="spine")) == 32
