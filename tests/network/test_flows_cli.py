"""`netsim flows` through the real entry point: outputs, pinned paths, and bad input (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.cli_run import run_cli


def write(tmp_path: Path, text: str, name: str = "flows.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_flows_writes_tables_and_matches_hand_computation(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    # 450 GB over NVLink (450 GB/s per direction) = 1 s plus the two NVLink hop latencies;
    # the second flow crosses servers and pins its route through spine0.
    csv = write(tmp_path, "src,dst,bytes,start_s,path\nn0.g0,n0.g1,450GB,0,\nn0.g2,n1.g2,1GiB,1us,\n")
    code, out, err = run_cli(
        ["flows", str(csv), "--topology", "dgx-h100", "--nodes", "2", "--out", str(tmp_path / "out"), "--line-rate"],
        capsys,
    )
    assert code == 0, err
    assert "2 flows" in out
    flows = pd.read_csv(tmp_path / "out" / "flows.csv")
    assert list(flows.columns[:7]) == ["flow_id", "src", "dst", "bytes", "start_s", "end_s", "fct_s"]
    nv = flows.iloc[0]
    assert nv["fct_s"] == pytest.approx(1.0 + nv["latency_s"], rel=1e-9)
    assert flows.iloc[1]["start_s"] == pytest.approx(1e-6)
    links = pd.read_csv(tmp_path / "out" / "links.csv")
    for col in ("link", "src", "dst", "class", "capacity_Bps", "bytes", "busy_s", "peak_utilization"):
        assert col in links.columns
    assert (tmp_path / "out" / "flows.parquet").exists()
    # without --line-rate the links run at the preset's achieved efficiency (NVLink 0.824)
    code, _, err = run_cli(
        ["flows", str(csv), "--topology", "dgx-h100", "--nodes", "2", "--out", str(tmp_path / "eff")], capsys
    )
    assert code == 0, err
    nv2 = pd.read_csv(tmp_path / "eff" / "flows.csv").iloc[0]
    assert nv2["fct_s"] == pytest.approx(1.0 / 0.824 + nv2["latency_s"], rel=1e-9)


def test_pinned_path_column(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=2)
    # any cross-server route from the own NIC over a leaf: n0.g0 > n0.nic0 > leaf > n1.nic0 > n1.g0
    leaf = next(v for v in g.successors("n0.nic0") if g.nodes[v]["kind"] == "switch")
    path = f"n0.g0>n0.nic0>{leaf}>n1.nic0>n1.g0"
    csv = write(tmp_path, f"src,dst,bytes,start_s,path\nn0.g0,n1.g0,1e9,0,{path}\n")
    code, _, err = run_cli(["flows", str(csv), "-t", "dgx-h100", "-n", "2", "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err
    links = pd.read_csv(tmp_path / "o" / "links.csv").set_index("link")
    assert links.loc[f"n0.nic0->{leaf}", "bytes"] == pytest.approx(1e9)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("src,dst,bytes\nn0.g0,n0.g1,1\n", "missing column(s) start_s"),
        ("src,dst,bytes,start_s\nn0.g0,n9.g1,1,0\n", "row 2.dst: unknown device 'n9.g1'"),
        ("src,dst,bytes,start_s\nn0.g0,n0.g1,lots,0\n", "row 2.bytes"),
        ("src,dst,bytes,start_s\nn0.g0,n0.g1,-5,0\n", "row 2.bytes"),
        ("src,dst,bytes,start_s\nn0.g0,n0.g1,5,-1\n", "row 2.start_s"),
        ("src,dst,bytes,start_s,path\nn0.g0,n0.g1,5,0,n0.g0>n0.g1\n", "no link n0.g0->n0.g1"),
        ("src,dst,bytes,start_s\n", "no flows"),
        ('src,dst,bytes,start_s\n"n0.g0,n0.g1,5,0\n', "not a readable CSV"),
    ],
)
def test_bad_flow_files_exit_2_with_one_line(tmp_path: Path, capsys, text: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    csv = write(tmp_path, text)
    out_dir = tmp_path / "out"
    code, _out, err = run_cli(["flows", str(csv), "-t", "dgx-h100", "-n", "2", "-o", str(out_dir)], capsys)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert str(csv) in err
    assert not out_dir.exists()  # no partial output


def test_unknown_preset_and_bad_override_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    csv = write(tmp_path, "src,dst,bytes,start_s\nn0.g0,n0.g1,1,0\n")
    code, _, err = run_cli(["flows", str(csv), "-t", "no-such-preset", "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "no-such-preset" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        [
            "flows",
            str(csv),
            "-t",
            "dgx-h100",
            "-n",
            "2",
            "--set",
            "node.nvlink_bandwidth=-5GB/s",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 2 and "nvlink_bandwidth" in err


def test_a_graph_without_accelerator_data_serves_flows_not_training(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    topo = write(
        tmp_path,
        "name: pair\nnodes:\n  - {name: a, kind: accelerator}\n  - {name: b, kind: accelerator}\n"
        "  - {name: sw, kind: switch}\nlinks:\n  - {a: a, b: sw, bandwidth: 8Gbps}\n"
        "  - {a: b, b: sw, bandwidth: 8Gbps}\n",
        "pair.yaml",
    )
    csv = write(tmp_path, "src,dst,bytes,start_s\na,b,1GB,0\n")
    code, out, err = run_cli(["flows", str(csv), "-t", str(topo), "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert "makespan 1000000.000 us" in out  # 1 GB at 1 GB/s
    code, out, err = run_cli(["topology", "show", str(topo)], capsys)
    assert code == 0, err
    assert "no accelerator data" in out
    code, out, err = run_cli(
        ["run", "-t", str(topo), "-w", "gpt-dense", "-o", str(tmp_path / "r"), "--no-report", "-q"], capsys
    )
    assert code == 2 and "no accelerator data" in err and len(err.strip().splitlines()) == 1
