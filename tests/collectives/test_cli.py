"""``netsim collective`` and ``netsim calibrate nccl`` through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from netsim.calibration.fit import load_calibration
from netsim.calibration.nccl import parse_nccl_runs
from tests.cli_run import run_cli as run


def rows(out: str) -> list[list[str]]:
    return [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]


def test_all_reduce_table_csv_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, log = tmp_path / "r.csv", tmp_path / "r.log"
    code, out, err = run(
        [
            "collective",
            "all_reduce",
            "--topology",
            "dgx-h100",
            "--nodes",
            "1",
            "-b",
            "1MiB",
            "-e",
            "4MiB",
            "--csv",
            str(csv),
            "--log",
            str(log),
            "--algo",
            "ring",
        ],
        capsys,
    )
    assert code == 0, err
    assert "#       size         count      type   redop    root     time   algbw   busbw #wrong" in out
    assert "algo ring, 8 ranks on 1 node of dgx-h100" in out
    assert "collective cost: nccl (NCCL 2.30.7 tuner" in out
    table = rows(out)
    assert [r[0] for r in table] == ["1048576", "2097152", "4194304"]
    assert [r[1] for r in table] == ["262144", "524288", "1048576"]
    assert all(r[2:5] == ["float", "sum", "-1"] and len(r) == 13 for r in table)
    df = pd.read_csv(csv)
    assert list(df.columns) == [
        "op",
        "algo",
        "size_bytes",
        "time_us",
        "algbw_GBps",
        "busbw_GBps",
        "library_algo",
        "proto",
    ]
    assert (df["op"] == "all_reduce").all() and (df["algo"] == "ring").all()
    assert df["algbw_GBps"].tolist() == pytest.approx((df["size_bytes"] / df["time_us"] / 1e3).tolist())
    assert df["busbw_GBps"].tolist() == pytest.approx((df["algbw_GBps"] * 2 * 7 / 8).tolist())
    avg = float(next(ln for ln in out.splitlines() if "Avg bus bandwidth" in ln).split(":")[1])
    assert avg == pytest.approx(df["busbw_GBps"].mean(), abs=1e-3)
    # the log is a complete nccl-tests log that the parser reads back
    (run_,) = parse_nccl_runs(log.read_text(), source=str(log))
    assert (run_.op, run_.nranks, run_.nnodes) == ("all_reduce", 8, 1)
    assert run_.rows["oop_time_us"].tolist() == pytest.approx(df["time_us"].tolist(), rel=1e-3)
    assert log.read_text().startswith("# synthetic nccl-tests log: simulated by netsim")


@pytest.mark.parametrize(
    ("op", "factor", "redop", "root"),
    [
        ("all_gather", 7 / 8, "none", "-1"),
        ("reduce_scatter", 7 / 8, "sum", "-1"),
        ("all_to_all", 7 / 8, "none", "-1"),
        ("broadcast", 1.0, "none", "0"),
        ("reduce", 1.0, "sum", "0"),
    ],
)
def test_busbw_factors(op: str, factor: float, redop: str, root: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["collective", op, "-t", "dgx-h100", "-n", "1", "-b", "8MiB", "-e", "8MiB"], capsys)
    assert code == 0, err
    (r,) = rows(out)
    assert r[3:5] == [redop, root]
    assert float(r[7]) == pytest.approx(float(r[6]) * factor, abs=0.011)


def test_sendrecv_pair_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["collective", "sendrecv", "-t", "dgx-h100", "-n", "2", "-b", "64MiB", "-e", "64MiB"], capsys)
    assert code == 0 and "2 ranks on 2 nodes" in out
    inter = float(rows(out)[0][6])
    code, out, _ = run(
        ["collective", "sendrecv", "-t", "dgx-h100", "-n", "2", "-b", "64MiB", "-e", "64MiB", "--pair", "n0.g0,n0.g1"],
        capsys,
    )
    assert code == 0 and "2 ranks on 1 node" in out
    assert float(rows(out)[0][6]) > 3 * inter  # NVLink is much faster than one 400G NIC


def test_calibration_applies_and_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cal_in = tmp_path / "cal_in.yaml"
    cal_in.write_text("link_efficiency: {nvlink: 0.8}\nstep_latency_s: 4us\n")
    log = tmp_path / "measured.log"
    base = [
        "collective",
        "all_reduce",
        "-t",
        "dgx-h100",
        "-n",
        "1",
        "-b",
        "64KiB",
        "-e",
        "256MiB",
        "-f",
        "4",
        "--collective-cost",
        "ideal",
    ]
    code, plain, _ = run(base, capsys)
    assert code == 0
    code, out, _ = run([*base, "--calibration", str(cal_in), "--log", str(log)], capsys)
    assert code == 0 and "nvlink 0.8" in out and "step latency 4 us" in out
    for a, b in zip(rows(plain), rows(out), strict=True):
        assert float(b[5]) > float(a[5])  # slower with the calibration
    cal_out = tmp_path / "cal.yaml"
    code, out, err = run(
        [
            "calibrate",
            "nccl",
            str(log),
            "--topology",
            "dgx-h100",
            "--out",
            str(cal_out),
            "--max-sizes",
            "5",
            "--collective-cost",
            "ideal",
        ],
        capsys,
    )
    assert code == 0, err
    assert "measured_us" in out and "simulated_us" in out and f"wrote {cal_out}" in out
    cal = load_calibration(cal_out)
    assert cal.link_efficiency["nvlink"] == pytest.approx(0.8, rel=0.01)
    assert cal.step_latency_s == pytest.approx(4e-6, rel=0.02)
    assert (cal.topology, cal.nodes, cal.source_logs) == ("dgx-h100", 1, [str(log)])
    assert len(cal.points) == 7 and all(abs(p.rel_error) < 0.01 for p in cal.points)  # 64KiB, 256KiB, ... 256MiB


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["collective", "allreduce", "-t", "dgx-h100"], "unknown collective 'allreduce'"),
        (["collective", "all_reduce", "-t", "dgx-h100", "--algo", "magic"], "unknown algorithm 'magic'"),
        (["collective", "all_reduce", "-t", "dgx-h100", "-b", "1 parsec"], "--min-bytes"),
        (["collective", "all_reduce", "-t", "dgx-h100", "-b", "8MiB", "-e", "1MiB"], "min bytes <= max bytes"),
        (["collective", "all_reduce", "-t", "dgx-h100", "-f", "1"], "step factor must be > 1"),
        (["collective", "all_reduce", "-t", "dgx-h100", "--pair", "n0.g0,n0.g1"], "--pair applies to sendrecv"),
        (["collective", "sendrecv", "-t", "dgx-h100", "--pair", "n0.g0,n7.g1"], "unknown accelerator 'n7.g1'"),
        (["collective", "all_reduce", "-t", "no-such-preset"], "no-such-preset"),
        (
            ["collective", "all_reduce", "-t", "dgx-h100", "--calibration", "/nonexistent.yaml"],
            "no such calibration file",
        ),
        (["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "--algo", "sharp"], "at least two servers"),
        (
            ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "--algo", "sharp", "--collective-cost", "ideal"],
            "at least two servers",
        ),
        (["collective", "all_reduce", "-t", "dgx-a100", "-n", "1", "--algo", "nvls"], "collectives.nvls"),
        (
            ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "--collective-cost", "psychic"],
            "unknown collective cost model 'psychic'; allowed: ideal, nccl",
        ),
        (["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "--proto", "LL256"], "unknown protocol"),
        (
            [
                "collective",
                "all_reduce",
                "-t",
                "dgx-h100",
                "-n",
                "1",
                "--step-latency",
                "2us",
                "--collective-cost",
                "nccl",
            ],
            "ideal cost model only",
        ),
        (["calibrate", "nccl", "/nonexistent.log", "-t", "dgx-h100", "--out", "x.yaml"], "no such file"),
    ],
)
def test_errors_exit_2_with_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert words in err


def test_calibrate_rejects_a_log_that_does_not_fit_the_topology(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "nccl" / "all_reduce_perf_2n.log"
    code, _, err = run(
        ["calibrate", "nccl", str(fixture), "-t", "dgx-h100", "--nodes", "3", "--out", str(tmp_path / "c.yaml")], capsys
    )
    assert code == 2 and "ranks on 2 hosts but --nodes is 3" in err
    assert not (tmp_path / "c.yaml").exists()


def test_gpus_per_node_and_algorithm_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["collective", "all_reduce", "-t", "dgx-h100", "-n", "2", "-g", "2", "-b", "1MiB", "-e", "1MiB"], capsys
    )
    assert code == 0 and "4 ranks on 2 nodes" in out
    code, out, _ = run(
        ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "--algo", "nvls", "-b", "1GiB", "-e", "1GiB"], capsys
    )
    assert code == 0 and "algo nvls" in out
    # NVLS moves S per GPU over NVLink instead of the ring's 2(n-1)/n S: bus bandwidth above the link's 450 GB/s
    assert float(rows(out)[0][7]) > 450
