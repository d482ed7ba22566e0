"""The topology spec: presets validate, bad files fail with one line naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netsim.config.topology import (
    ExplicitTopologySpec,
    HCCSNodeSpec,
    MultiPlaneFabricSpec,
    TemplatedTopologySpec,
    load_topology_spec,
    parse_topology_spec,
)
from netsim.errors import SpecError
from netsim.topology import PRESET_DIR, list_presets

BASE: dict[str, Any] = {
    "name": "t",
    "num_nodes": 2,
    "accelerator": {"name": "X", "peak_flops": {"bf16": "1TFLOPS"}, "memory_bandwidth": "1TB/s", "memory": "1GB"},
    "node": {
        "kind": "nvswitch",
        "nvlink_bandwidth": "100GB/s",
        "pcie_bandwidth": "10GB/s",
        "nic": {"bandwidth": "1Gbps"},
    },
    "backend": {"fabric": "leaf-spine", "nodes_per_leaf": 1},
}


def _error(overrides: list[str], data: dict[str, Any] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_topology_spec(data or BASE, source="t.yaml", overrides=overrides)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("name", ["dgx-h100", "h800", "dgx-a100", "ascend-910a", "ascend-910b"])
def test_presets_validate(name: str) -> None:
    assert name in list_presets()
    spec = load_topology_spec(PRESET_DIR / f"{name}.yaml")
    assert isinstance(spec, TemplatedTopologySpec)
    assert spec.name == name
    assert 1 <= spec.num_nodes <= 4


def test_preset_numbers_are_si() -> None:
    h100 = load_topology_spec(PRESET_DIR / "dgx-h100.yaml")
    assert isinstance(h100, TemplatedTopologySpec)
    assert h100.accelerator.peak_flops["bf16"] == 989e12
    assert h100.accelerator.memory_bandwidth == 3.35e12
    assert h100.node.nic is not None and h100.node.nic.bandwidth == 50e9
    a910 = load_topology_spec(PRESET_DIR / "ascend-910a.yaml")
    assert isinstance(a910, TemplatedTopologySpec) and isinstance(a910.node, HCCSNodeSpec)
    assert (a910.node.group_size, a910.node.hccs_bandwidth) == (4, 30e9)
    h800 = load_topology_spec(PRESET_DIR / "h800.yaml")
    assert isinstance(h800, TemplatedTopologySpec) and isinstance(h800.backend, MultiPlaneFabricSpec)


def test_overrides_and_num_nodes() -> None:
    spec = parse_topology_spec(
        BASE, source="t", overrides=["backend.oversubscription=2:1", "node.nvlink_bandwidth=300GB/s"]
    )
    assert isinstance(spec, TemplatedTopologySpec)
    assert spec.backend is not None and spec.backend.oversubscription == 2.0  # type: ignore[union-attr]
    assert spec.node.nvlink_bandwidth == 300e9  # type: ignore[union-attr]
    assert parse_topology_spec(BASE, source="t", num_nodes=16).num_nodes == 16  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "field", "needle"),
    [
        (["node.nvlink_bandwidth=-5Gbps"], "node.nvlink_bandwidth", "must be a bandwidth > 0"),
        (["node.nvlink_bandwidth=0"], "node.nvlink_bandwidth", "must be a bandwidth > 0"),
        (["node.pcie_bandwidth=10GB"], "node.pcie_bandwidth", "allowed units"),
        (["node.nvlinks=3"], "node.nvlinks", "allowed keys: accelerators, nic, host_nics, kind, nvlink_bandwidth"),
        (["backend.fabric=torus"], "backend.fabric", "'single-switch', 'leaf-spine'"),
        (["backend.link_class=eth"], "backend.link_class", "'ib' or 'roce'"),
        (["backend.oversubscription=0"], "backend.oversubscription", "must be a ratio > 0"),
        (["num_nodes=0"], "num_nodes", "must be >= 1"),
        (["accelerator.role=tpu"], "accelerator.role", "'gpu' or 'npu'"),
        (["node.nic=null"], "node.nic", "a back-end fabric needs rail NICs"),
        (["backend=null"], "backend", "required when num_nodes > 1"),
        (["node.nic.attach=integrated", "node.nic.pcie_bandwidth=1GB/s"], "node.nic.pcie_bandwidth", "only used with"),
        (["frontend.fabric=single-switch"], "node.host_nics", "needs host NICs"),
        (["backend.storage.bandwidth=1GB/s", "backend.storage.attach=core"], "backend.storage.attach", "fat-tree"),
    ],
)
def test_bad_values_name_the_field(overrides: list[str], field: str, needle: str) -> None:
    e = _error(overrides)
    assert e.field == field
    assert needle in e.message
    assert e.source is not None and (e.source.startswith("--set ") or e.source == "t.yaml")


def test_cross_field_rules() -> None:
    hccs = dict(BASE, node={"kind": "hccs", "group_size": 3, "hccs_bandwidth": "1GB/s", "pcie_bandwidth": "1GB/s"})
    hccs["node"]["nic"] = {"bandwidth": "1Gbps"}
    e = _error([], hccs)
    assert (str(e)) == "t.yaml: node.group_size: must divide node.accelerators (8), got 3"
    e = _error(["backend.fabric=fat-tree", "backend.leaves_per_pod=2", "backend.spines_per_pod=2", "backend.cores=3"])
    assert e.field == "backend.cores" and "multiple of spines_per_pod (2)" in e.message


def test_explicit_spec_errors() -> None:
    acc = BASE["accelerator"]
    nodes = [{"name": "a", "kind": "accelerator"}, {"name": "s", "kind": "switch"}]
    ok = {"name": "e", "accelerator": acc, "nodes": nodes, "links": [{"a": "a", "b": "s", "bandwidth": "1GB/s"}]}
    spec = parse_topology_spec(ok, source="e.yaml")
    assert isinstance(spec, ExplicitTopologySpec)
    assert spec.links[0].link_class == "generic"

    bad_end = dict(ok, links=[{"a": "a", "b": "sw", "bandwidth": "1GB/s"}])
    assert _error([], bad_end).field == "links.0.b"
    dup = dict(ok, nodes=[*nodes, {"name": "a", "kind": "host"}])
    assert _error([], dup).field == "nodes.2.name"
    twice = dict(ok, links=ok["links"] * 2)
    assert "duplicate link" in _error([], twice).message
    neg = dict(ok, links=[{"a": "a", "b": "s", "bandwidth": "-1GB/s", "class": "ib"}])
    assert _error([], neg).field == "links.0.bandwidth"
    cls = dict(ok, links=[{"a": "a", "b": "s", "bandwidth": "1GB/s", "class": "fibre"}])
    e = _error([], cls)
    assert e.field == "links.0.class" and "'nvlink'" in e.message
    with pytest.raises(SpecError, match="--nodes does not apply"):
        parse_topology_spec(ok, source="e.yaml", num_nodes=2)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nnum_nodes: 2\nnode:\n  kind: nvswitch\n  nvlink_bandwidth: [\n")
    with pytest.raises(SpecError, match=r"t.yaml: line \d+, column \d+: malformed YAML"):
        load_topology_spec(p)
    p.write_text("name: t\nbogus: 1\n")
    with pytest.raises(SpecError) as info:
        load_topology_spec(p)
    assert info.value.source == str(p)
    assert info.value.field == "bogus"  # unknown keys are reported before the missing ones
    assert "(and 2 more problems)" in info.value.message
