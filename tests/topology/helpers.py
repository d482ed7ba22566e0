"""Helpers for topology tests: a small templated spec as a dict, built into a graph."""

from __future__ import annotations

import copy
from typing import Any

import networkx as nx

from netsim.config.topology import parse_topology_spec
from netsim.topology import build_topology

GB = 1e9  # bytes/s per GB/s

BASE: dict[str, Any] = {
    "name": "tiny",
    "num_nodes": 2,
    "accelerator": {"name": "X1", "peak_flops": {"bf16": "100TFLOPS"}, "memory_bandwidth": "1TB/s", "memory": "16GB"},
    "node": {
        "kind": "nvswitch",
        "accelerators": 4,
        "nvlink_bandwidth": "100GB/s",
        "pcie_bandwidth": "10GB/s",
        "nic": {"bandwidth": "100Gbps"},
    },
    "backend": {"fabric": "single-switch"},
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base`` (a value of None deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build(data: dict[str, Any], overrides: tuple[str, ...] = ()) -> nx.DiGraph:
    spec = parse_topology_spec(data, source="test.yaml", overrides=overrides)
    return build_topology(spec, source="test.yaml")


def make(patch: dict[str, Any] | None = None, **top: Any) -> nx.DiGraph:
    """BASE with a deep-merged patch and top-level keys, built into a graph."""
    return build(merge(merge(BASE, patch or {}), top))


def cables(g: nx.DiGraph, tier: str, network: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """Directed links of a tier (optionally of one network)."""
    return [
        (u, v, d)
        for u, v, d in g.edges(data=True)
        if d["tier"] == tier and (network is None or d["network"] == network)
    ]


def names(g: nx.DiGraph, **attrs: Any) -> list[str]:
    return [n for n, d in g.nodes(data=True) if all(d[k] == v for k, v in attrs.items())]
