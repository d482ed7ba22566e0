"""Explicit graphs: devices and links listed in YAML, defaults filled in, connectivity checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netsim.errors import TopologyError
from netsim.topology import load_topology

ACC = {"name": "X", "role": "npu", "peak_flops": {"fp16": "1TFLOPS"}, "memory_bandwidth": "1TB/s", "memory": "1GB"}

TWO_BOXES = {
    "name": "two-boxes",
    "accelerator": ACC,
    "nodes": [
        {"name": "n0.g0", "kind": "accelerator", "node": 0, "index": 0},
        {"name": "n0.g1", "kind": "accelerator", "node": 0, "index": 1},
        {"name": "n1.g0", "kind": "accelerator", "node": 1, "index": 0},
        {"name": "n0.nic0", "kind": "nic", "node": 0, "index": 0, "rail": 0, "latency": "1us"},
        {"name": "n1.nic0", "kind": "nic", "node": 1, "index": 0, "rail": 0},
        {"name": "sw", "kind": "switch", "role": "leaf", "latency": "0.3us"},
        {"name": "n0", "kind": "host", "node": 0},
    ],
    "links": [
        {"a": "n0.g0", "b": "n0.g1", "bandwidth": "56GB/s", "latency": "0.2us", "class": "hccs"},
        {"a": "n0.g0", "b": "n0.nic0", "bandwidth": "32GB/s", "class": "pcie"},
        {"a": "n0.g1", "b": "n0.nic0", "bandwidth": "32GB/s", "class": "pcie"},
        {"a": "n1.g0", "b": "n1.nic0", "bandwidth": "32GB/s", "class": "pcie"},
        {"a": "n0.nic0", "b": "sw", "bandwidth": "200Gbps", "class": "roce", "tier": "nic-leaf"},
        {"a": "n1.nic0", "b": "sw", "bandwidth": "200Gbps", "class": "roce", "tier": "nic-leaf"},
        {"a": "n0", "b": "n0.g0", "bandwidth": "32GB/s", "class": "pcie", "directed": True},
    ],
}


def _write(tmp_path: Path, data: dict) -> Path:  # type: ignore[type-arg]
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_explicit_graph_with_defaults(tmp_path: Path) -> None:
    g = load_topology(_write(tmp_path, TWO_BOXES))
    assert g.number_of_nodes() == 7
    assert g.number_of_edges() == 6 * 2 + 1
    assert (g.graph["name"], g.graph["num_nodes"], g.graph["accelerators_per_node"]) == ("two-boxes", 2, 2)
    assert g.nodes["n0.g0"] | {} == {
        "kind": "accelerator",
        "role": "npu",
        "node": 0,
        "index": 0,
        "network": "node",
        "latency_s": 0.0,
        "rail": -1,
        "plane": -1,
        "nic": "n0.nic0",
        "tier": 0,
    }
    assert g.nodes["n0.g1"]["nic"] == ""  # no n0.nic1 device
    assert g.nodes["sw"] | {} == {
        "kind": "switch",
        "role": "leaf",
        "node": -1,
        "index": -1,
        "network": "backend",
        "latency_s": 3e-7,
        "rail": -1,
        "plane": -1,
        "nic": "",
        "tier": 1,
    }
    assert g.nodes["n0.nic0"]["role"] == "rail-nic" and g.nodes["n0.nic0"]["latency_s"] == 1e-6
    assert g.edges["n0.g1", "n0.g0"] | {} == {
        "capacity_Bps": 56e9,
        "latency_s": 2e-7,
        "link_class": "hccs",
        "network": "node",
        "tier": "hccs",
    }
    assert g.edges["sw", "n1.nic0"]["network"] == "backend"
    assert g.edges["sw", "n1.nic0"]["tier"] == "nic-leaf"
    assert g.has_edge("n0", "n0.g0") and not g.has_edge("n0.g0", "n0")  # directed: true


def test_disconnected_explicit_graph(tmp_path: Path) -> None:
    data = dict(TWO_BOXES, links=[lk for lk in TWO_BOXES["links"] if lk["a"] != "n1.nic0"])
    path = _write(tmp_path, data)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: the back-end is disconnected: 1 of 3 accelerators (n1.g0) cannot reach n0.g0")
    assert "\n" not in msg


def test_one_way_link_is_disconnected(tmp_path: Path) -> None:
    links = [dict(lk, directed=True) if lk["a"] == "n1.nic0" else lk for lk in TWO_BOXES["links"]]
    with pytest.raises(TopologyError, match=r"1 of 3 accelerators \(n1.g0\) cannot reach"):
        load_topology(_write(tmp_path, dict(TWO_BOXES, links=links)))


def test_frontend_connectivity(tmp_path: Path) -> None:
    nodes = [
        *TWO_BOXES["nodes"],
        {"name": "n0.hnic0", "kind": "nic", "role": "host-nic", "network": "frontend", "node": 0},
        {"name": "fe.leaf0", "kind": "switch", "role": "fe-leaf", "network": "frontend"},
        {"name": "storage0", "kind": "storage", "network": "frontend"},
        {"name": "storage1", "kind": "storage", "network": "frontend"},
    ]
    links = [
        *TWO_BOXES["links"],
        {"a": "n0", "b": "n0.hnic0", "bandwidth": "16GB/s", "class": "pcie"},
        {"a": "n0.hnic0", "b": "fe.leaf0", "bandwidth": "25Gbps", "class": "ethernet"},
        {"a": "storage0", "b": "fe.leaf0", "bandwidth": "25Gbps", "class": "ethernet"},
    ]
    with pytest.raises(TopologyError, match="the front-end is disconnected: storage1 is not linked"):
        load_topology(_write(tmp_path, dict(TWO_BOXES, nodes=nodes, links=links)))
    links.append({"a": "storage1", "b": "fe.leaf0", "bandwidth": "25Gbps", "class": "ethernet"})
    g = load_topology(_write(tmp_path, dict(TWO_BOXES, nodes=nodes, links=links)))
    assert g.edges["n0.hnic0", "fe.leaf0"]["network"] == "frontend"
