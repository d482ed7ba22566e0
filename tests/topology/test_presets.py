"""Presets: shipped in the package, found by name, key numbers, overrides, unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import SpecError, TopologyError
from netsim.topology import PRESET_DIR, list_presets, load_topology
from tests.topology.helpers import GB, cables, names

REPO = Path(__file__).resolve().parents[2]


def test_presets_live_in_the_package_and_topologies_links_there() -> None:
    assert PRESET_DIR.parts[-3:] == ("netsim", "data", "topologies")
    assert list_presets() == ["ascend-910a", "ascend-910b", "dgx-a100", "dgx-h100", "h800"]
    assert (REPO / "topologies").resolve() == PRESET_DIR.resolve()


@pytest.mark.parametrize("name", ["dgx-h100", "h800", "dgx-a100", "ascend-910a", "ascend-910b"])
def test_every_preset_builds_at_several_sizes(name: str) -> None:
    for n in (1, 2, 5):
        g = load_topology(name, nodes=n)
        assert g.graph["num_nodes"] == n
        assert len(names(g, kind="accelerator")) == 8 * n
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        assert "# approx." in text or "approx." in text


def test_dgx_h100_numbers() -> None:
    g = load_topology("dgx-h100")
    assert g.graph["num_nodes"] == 4
    assert g.edges["n0.g0", "n0.nvsw"]["capacity_Bps"] == 450 * GB
    assert g.edges["n3.nic7", "r7.leaf0"]["capacity_Bps"] == 50 * GB
    assert g.edges["n3.nic7", "r7.leaf0"]["link_class"] == "ib"
    assert len(names(g, role="host-nic")) == 2 * 4
    acc = g.graph["accelerator"]
    assert (acc["peak_flops"]["bf16"], acc["memory_Bps"], acc["memory_bytes"]) == (989e12, 3.35e12, 80e9)


def test_h800_is_multi_plane_and_ascend_is_roce() -> None:
    g = load_topology("h800", nodes=64)
    assert g.edges["n0.g0", "n0.nvsw"]["capacity_Bps"] == 200 * GB
    assert names(g, role="leaf", plane=5) == ["p5.leaf0", "p5.leaf1"]  # 32 servers per plane leaf
    assert len(names(g, role="spine", plane=5)) == 32
    a = load_topology("ascend-910a", nodes=8)
    assert {d["link_class"] for _, _, d in cables(a, "nic-leaf")} == {"roce"}
    assert names(a, role="leaf") == ["leaf0", "leaf1"]  # 4 servers per leaf
    assert a.edges["n0.g0", "n0.g1"]["capacity_Bps"] == 30 * GB
    assert not a.has_edge("n0.g0", "n0.g4")  # other HCCS group: through PCIe
    b = load_topology("ascend-910b", nodes=1)
    assert b.edges["n0.g0", "n0.g7"]["capacity_Bps"] == 28 * GB  # per direction: 392 GB/s = 7 x 2 x 28


def test_overrides_change_the_graph() -> None:
    g = load_topology("dgx-h100", nodes=64, overrides=["backend.oversubscription=2", "node.nvlink_bandwidth=300GB/s"])
    assert g.edges["n5.g1", "n5.nvsw"]["capacity_Bps"] == 300 * GB
    up = sum(d["capacity_Bps"] for u, v, d in g.out_edges("r0.leaf0", data=True) if v.startswith("spine"))
    assert up == pytest.approx(32 * 50 * GB / 2)


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(TopologyError) as info:
        load_topology("dgx-h200")
    assert str(info.value) == (
        "unknown topology preset 'dgx-h200'; available presets: ascend-910a, ascend-910b, dgx-a100, "
        "dgx-h100, h800 (or give the path of a topology YAML file)"
    )


def test_bad_override_names_the_override() -> None:
    with pytest.raises(SpecError) as info:
        load_topology("dgx-h100", overrides=["backend.oversubscription=-1"])
    assert str(info.value).startswith(
        "--set backend.oversubscription=-1: backend.oversubscription: must be a ratio > 0"
    )
    with pytest.raises(
        SpecError,
        match=r"^topologies/dgx-h100.yaml with --set backend.fabric=fat-tree: "
        r"backend.leaves_per_pod: required key is missing",
    ):
        load_topology("dgx-h100", overrides=["backend.fabric=fat-tree"])


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_topology(tmp_path / "nope.yaml")
