"""A Kineto trace as a kernel table (netsim import kineto --kernel-table) and the measured step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netsim.calibration.kernels import KernelTable
from netsim.errors import TraceError
from netsim.traces.kineto import load_kineto
from netsim.traces.kineto_kernels import kernel_rows, kernel_table_from_kineto, measured_step
from tests.traces.test_kineto import TRACE, run_cli


def op(name: str, ts: float, dur: float, dims: list[Any], types: list[str], tid: int = 1) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": "cpu_op",
        "name": name,
        "pid": 1,
        "tid": tid,
        "ts": ts,
        "dur": dur,
        "args": {"Input Dims": dims, "Input type": types},
    }


def launch(ts: float, corr: int) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": "cuda_runtime",
        "name": "cudaLaunchKernel",
        "pid": 1,
        "tid": 1,
        "ts": ts,
        "dur": 2,
        "args": {"correlation": corr},
    }


def kernel(ts: float, dur: float, corr: int) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": "kernel",
        "name": f"k{corr}",
        "pid": 0,
        "tid": 7,
        "ts": ts,
        "dur": dur,
        "args": {"correlation": corr},
    }


def gpu_trace(tmp_path: Path) -> Path:
    """Two profiler steps of bf16 GEMMs, a layer norm and attention, timed by their GPU kernels."""
    bf = ["c10::BFloat16", "c10::BFloat16"]
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1, "ts": 0, "dur": 900},
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "pid": 1, "tid": 1, "ts": 1000, "dur": 1100},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "ProfilerStep#1", "pid": 0, "tid": 7, "ts": 5, "dur": 5000},
        # two identical GEMMs (one kernel each), and an addmm launching two kernels
        op("aten::mm", 10, 20, [[4096, 1024], [1024, 2048]], bf),
        launch(12, 1),
        kernel(40, 100, 1),
        op("aten::mm", 1010, 20, [[4096, 1024], [1024, 2048]], bf),
        launch(1012, 2),
        kernel(1040, 300, 2),
        op("aten::addmm", 100, 30, [[2048], [4096, 1024], [1024, 2048]], [*bf, "c10::BFloat16"]),
        launch(105, 3),
        launch(110, 4),
        kernel(200, 50, 3),
        kernel(260, 70, 4),
        # a layer norm whose inner native_layer_norm is not counted again
        op("aten::layer_norm", 300, 40, [[8, 512, 1024], [1024], [1024], [1024], []], ["c10::BFloat16"]),
        op("aten::native_layer_norm", 305, 30, [[8, 512, 1024], [], [1024], [1024], []], ["c10::BFloat16"]),
        launch(310, 5),
        kernel(400, 25, 5),
        op("aten::scaled_dot_product_attention", 500, 50, [[2, 16, 512, 64], [2, 16, 512, 64]], bf),
        launch(510, 6),
        kernel(600, 80, 6),
        # no kernel launched: not in the table; a double GEMM: no catalogue dtype
        op("aten::mm", 700, 5, [[8, 8], [8, 8]], bf),
        op("aten::mm", 720, 5, [[8, 8], [8, 8]], ["double", "double"]),
        launch(721, 7),
        kernel(800, 9, 7),
    ]
    p = tmp_path / "gpu.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    return p


def test_gpu_trace_becomes_a_kernel_table(tmp_path: Path) -> None:
    tr = load_kineto(gpu_trace(tmp_path))
    rows = kernel_rows(tr)
    assert len(rows) == 5  # 3 GEMMs, the layer norm once, attention
    t = kernel_table_from_kineto(tr)
    df = t.df.set_index(["kernel", "m"], drop=False)
    gemm = t.df[t.df["kernel"] == "gemm"]
    assert len(gemm) == 1  # mm and addmm of the same shape merge into one row
    g = gemm.iloc[0]
    assert (g["m"], g["n"], g["k"], g["dtype"], g["pass"]) == (4096, 2048, 1024, "bfloat16", "fwd")
    assert g["repeats"] == 3 and g["time_s"] == pytest.approx(120e-6)  # median of 100, 300, 50 + 70 us
    ln = t.df[t.df["kernel"] == "layernorm"].iloc[0]
    assert (ln["tokens"], ln["hidden"], ln["time_s"]) == (4096, 1024, pytest.approx(25e-6))
    at = t.df[t.df["kernel"] == "attention"].iloc[0]
    assert (at["batch"], at["heads"], at["seq"], at["head_dim"]) == (2, 16, 512, 64)
    assert len(df) == 3
    assert t.meta["device"] == "cuda" and t.meta["measured_step_s"] == pytest.approx(1000e-6)
    assert t.meta["measured_step"] == "mean of 2 'ProfilerStep#*' range(s)"


def test_cpu_fixture_kernel_table(tmp_path: Path) -> None:
    # the real CPU trace: 27 GEMM calls of the router and the experts (forward and backward) and
    # the RMSNorm (its inner aten::_fused_rms_norm not counted again), timed by their own duration
    tr = load_kineto(TRACE)
    rows = kernel_rows(tr)
    assert rows["kernel"].value_counts().to_dict() == {"gemm": 27, "rmsnorm": 1}
    router = rows[(rows["kernel"] == "gemm") & (rows["n"] == 4)].iloc[0]
    assert (router["m"], router["k"]) == (64, 64)  # h[64, 64] @ gate^T[64, 4]
    ev = tr.events
    mm = ev[(ev["name"] == "aten::mm")]
    assert sorted(rows.loc[rows["kernel"] == "gemm", "time_s"]) == pytest.approx(sorted(mm["dur_us"] * 1e-6))
    step, how = measured_step(tr)
    assert how == "span of the trace" and step == pytest.approx(float((ev["ts_us"] + ev["dur_us"]).max()) * 1e-6)
    assert measured_step(tr, "optimizer")[0] == pytest.approx(
        float(ev.loc[ev["name"] == "optimizer", "dur_us"].iloc[0]) * 1e-6
    )
    with pytest.raises(TraceError, match="--step-range: no record_function range named 'zzz'"):
        measured_step(tr, "zzz")


def test_trace_without_shapes(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 5}]}))
    with pytest.raises(
        TraceError,
        match=r"no operator to make a kernel table from: record it with "
        r"torch.profiler.profile\(record_shapes=True\)",
    ):
        kernel_table_from_kineto(load_kineto(p))


def test_cli_kernel_table_feeds_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "moe-kernels.csv"
    code, stdout, _ = run_cli(["import", "kineto", str(TRACE), "--kernel-table", str(table)], capsys)
    assert code == 0 and "measured step:" in stdout and f"wrote {table} (28 rows)" in stdout
    t = KernelTable.load(table)
    assert t.meta["source"] == "kineto" and t.meta["measured_step_s"] > 0
    workload = Path(__file__).resolve().parents[2] / "examples" / "kineto" / "moe-layer.yaml"
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        [
            "run",
            "--topology",
            "dgx-h100",
            "--nodes",
            "1",
            "--workload",
            str(workload),
            "--kernels",
            str(table),
            "--set",
            "topology.accelerator.compute=null",
            "--no-report",
            "--quiet",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["measured_step_time_s"] == pytest.approx(t.meta["measured_step_s"])
    assert summary["compute_model"] == f"table:{table}" and "span of the trace" in summary["measured_step"]


def test_cli_needs_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["import", "kineto", str(TRACE)], capsys)
    assert code == 2 and "give --out (per-op summary), --kernel-table and/or --classes" in err and err.count("\n") == 1
