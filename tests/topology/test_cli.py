"""``netsim topology`` through the real entry point ``netsim.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from tests.cli_run import run_cli as run


def test_show_prints_tables(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["topology", "show", "dgx-h100", "--nodes", "4"], capsys)
    assert code == 0, err
    assert "dgx-h100: 4 nodes x 8 H100-SXM5-80GB" in out
    for needle in ("Devices", "Links", "Switch tiers", "nvlink", "rail-nic", "leaf-spine", "1:1"):
        assert needle in out
    assert "bisection bandwidth: 800 GB/s per direction" in out


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["topology", "show", "ascend-910a", "-n", "8", "--set", "backend.oversubscription=2", "--json"], capsys
    )
    assert code == 0
    data = json.loads(out)
    assert {"devices", "links", "tiers", "bisection_bandwidth_Bps", "accelerator"} <= set(data)
    assert data["num_nodes"] == 8
    # 8 servers, 4 per leaf: leaf0 has 32 NICs x 12.5 GB/s down and half of it up
    assert data["bisection_bandwidth_Bps"] == pytest.approx(32 * 12.5e9 / 2)
    leaf = next(t for t in data["tiers"] if t["network"] == "backend" and t["tier"] == 1)
    assert leaf["oversubscription"] == pytest.approx(2.0)
    hccs = next(r for r in data["links"] if r["link_class"] == "hccs")
    assert hccs["count"] == 8 * 2 * 6 * 2


def test_graphml_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gml, png = tmp_path / "out" / "h800.graphml", tmp_path / "h800.png"
    code, _, err = run(["topology", "show", "h800", "-n", "2", "--graphml", str(gml), "--plot", str(png)], capsys)
    assert code == 0, err
    g = nx.read_graphml(gml)
    # per server 8 x (GPU, PCIe switch, NIC) + host + nvsw + 2 host NICs; 8 plane leaves (no spines:
    # one leaf per plane); front-end: 1 leaf + 4 spines (storage attaches to spines) + 4 storage
    assert g.number_of_nodes() == 2 * (8 * 3 + 1 + 1 + 2) + 8 + 1 + 4 + 4
    assert g.nodes["n1.g3"]["nic"] == "n1.nic3"
    assert g.edges["n1.g3", "n1.nvsw"]["capacity_Bps"] == 200e9
    assert json.loads(g.graph["accelerator"])["name"] == "H800-SXM5-80GB"
    assert json.loads(g.graph["spec"])["backend"]["fabric"] == "multi-plane"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["h800.graphml", "h800.png", "out"]  # no temp files


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["topology", "list"], capsys)
    assert code == 0
    for name in ("dgx-h100", "h800", "dgx-a100", "ascend-910a", "ascend-910b"):
        assert name in out


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["dgx-h200"], "error: unknown topology preset 'dgx-h200'; available presets: ascend-910a"),
        (["dgx-h100", "--set", "backend.oversubscription=0"], "error: --set backend.oversubscription=0: "),
        (["dgx-h100", "--set", "node.nvlink_bandwidth=fast"], "error: --set node.nvlink_bandwidth=fast: "),
        (["dgx-h100", "--set", "backend.typo=1"], "error: --set backend.typo=1: backend.typo: unknown key"),
        (["dgx-h100", "--set", "nonsense"], "error: --set nonsense: expected key=value"),
        (["missing.yaml"], "error: missing.yaml: file not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], start: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gml = tmp_path / "g.graphml"
    code, out, err = run(["topology", "show", *args, "--graphml", str(gml)], capsys)
    assert code == 2
    assert err.startswith(start)
    assert err.count("\n") == 1
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_malformed_and_disconnected_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnode: {kind: nvswitch\n")
    code, _, err = run(["topology", "show", str(bad)], capsys)
    assert code == 2 and err.startswith(f"error: {bad}: line ") and "malformed YAML" in err
    loose = tmp_path / "loose.yaml"
    loose.write_text(
        "name: loose\n"
        "accelerator: {name: X, peak_flops: {bf16: 1TFLOPS}, memory_bandwidth: 1TB/s, memory: 1GB}\n"
        "nodes:\n  - {name: a, kind: accelerator}\n  - {name: b, kind: accelerator}\n"
        "  - {name: s, kind: switch}\n"
        "links:\n  - {a: a, b: s, bandwidth: 1GB/s}\n"
    )
    code, _, err = run(["topology", "show", str(loose)], capsys)
    assert code == 2
    assert err == f"error: {loose}: the back-end is disconnected: 1 of 2 accelerators (b) cannot reach a " + (
        "over node and back-end links (in both directions); add the missing links\n"
    )


def test_bad_plot_suffix_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gml, bad = tmp_path / "g.graphml", tmp_path / "g.xyz"
    code, _, err = run(["topology", "show", "dgx-a100", "--graphml", str(gml), "--plot", str(bad)], capsys)
    assert code == 2 and "cannot draw to a .xyz file; use one of" in err and ".png" in err
    assert list(tmp_path.iterdir()) == []
