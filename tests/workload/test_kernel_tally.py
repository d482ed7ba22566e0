"""The kernel tally: the ``kernels`` rows of a plan add up to its compute ops, name the busiest
rank of each pipeline stage, and carry where each time came from and a rate within the hardware's."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from netsim.calibration.models import make_compute_model
from netsim.config.workload import load_workload
from netsim.topology import load_topology
from netsim.units import format_shares
from netsim.workload.graph import StepPlan, build_plan
from netsim.workload.kernel_tally import KERNEL_ROW_COLUMNS, kernel_summary
from tests.cli_run import run_cli
from tests.workload.plans import MLA_MOE, ShapeCompute, small_plan

DENSE: dict[str, Any] = {"layers": 4, "hidden": 256, "ffn_hidden": 1024, "heads": 4, "vocab": 1000, "seq_len": 128}


def _compute_by_rank(plan: StepPlan) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for o in plan.ops:
        if o.kind == "compute":
            out[o.rank] += o.duration_s
    return out


def _rows_by_rank(plan: StepPlan) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for r in plan.kernel_rows:
        out[r["rank"]] += r["time_s"]
    return out


def test_rows_add_up_to_each_stage_busiest_rank() -> None:
    plan = small_plan(DENSE, {"pp": 2, "tp": 2, "zero_stage": 1}, "1f1b")
    assert plan.layout is not None
    ops = _compute_by_rank(plan)
    rows = _rows_by_rank(plan)
    stages = {r["stage"]: r["rank"] for r in plan.kernel_rows}
    assert sorted(stages) == [0, 1]
    for stage, rank in stages.items():
        assert plan.layout.coords(rank)[0] == stage
        assert rows[rank] == pytest.approx(ops[rank], rel=1e-12)
        same_stage = [r for r in ops if plan.layout.coords(r)[0] == stage]
        assert ops[rank] == pytest.approx(max(ops[r] for r in same_stage), rel=1e-12)
    assert set(plan.kernel_rows[0]) == set(KERNEL_ROW_COLUMNS)
    # the last stage runs the output head and the loss, the optimizer runs everywhere
    last = {r["op"] for r in plan.kernel_rows if r["stage"] == 1}
    assert {"F.head", "optimizer"} <= last


def test_shares_and_calls() -> None:
    plan = small_plan(DENSE, {"pp": 1, "tp": 1, "zero_stage": 1}, "1f1b")
    rows = plan.kernel_rows
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert [r["time_s"] for r in rows] == sorted((r["time_s"] for r in rows), reverse=True)
    # 4 layers x 4 micro-batches: each forward norm runs 16 times per op name, the head's 4
    norms = [r for r in rows if r["kernel"] == "rmsnorm" and r["pass"] == "fwd" and r["op"] == "F.attn"]
    assert norms and all(r["calls"] == 16 for r in norms)
    assert [r["calls"] for r in rows if r["op"] == "F.head" and r["kernel"] == "rmsnorm"] == [4]


@pytest.mark.parametrize("lockstep", [False, True])
def test_moe_expert_ops_tally_the_lane_they_last_for(lockstep: bool) -> None:
    spec = load_workload(
        {
            "model": {**DENSE, "layers": 3, **MLA_MOE},
            "parallelism": {"pp": 1, "tp": 1, "ep": 8, "zero_stage": 1},
            "num_microbatches": 2,
            "grad_bucket_bytes": "1MB",
        },
        source="t",
    )
    plan = build_plan(spec, load_topology("dgx-h100", nodes=2), ShapeCompute(), lockstep=lockstep)
    ops = _compute_by_rank(plan)
    for rank, t in _rows_by_rank(plan).items():
        assert t == pytest.approx(ops[rank], rel=1e-12)
    assert any(r["kernel"] == "grouped_gemm" for r in plan.kernel_rows)


def test_rates_sources_and_summary_on_the_h100_profile() -> None:
    spec = load_workload(
        {
            "model": {
                "layers": 2,
                "hidden": 4096,
                "ffn_hidden": 14336,
                "heads": 32,
                "kv_heads": 8,
                "vocab": 32000,
                "seq_len": 4096,
                "activation": "swiglu",
            },
            "parallelism": {"pp": 1, "tp": 1, "zero_stage": 1},
            "num_microbatches": 1,
        },
        source="t",
    )
    graph = load_topology("dgx-h100", nodes=1)
    acc = graph.graph["accelerator"]
    model = make_compute_model(acc, default_dtype=spec.model.dtype)
    plan = build_plan(spec, graph, model)
    rows = plan.kernel_rows
    assert all(r["source"] for r in rows) and all(r["dtype"] for r in rows)
    peak_tflops = acc["peak_flops"]["bf16"] / 1e12
    gemms = [r for r in rows if r["kernel"] == "gemm"]
    assert gemms and all(100 < r["tflops"] < peak_tflops for r in gemms)
    assert any(r["source"].startswith("table") for r in gemms)  # the measured H100 table
    for r in rows:
        if r["gbps"] is not None and r["kernel_class"] in ("norm", "other"):
            assert r["gbps"] <= acc["memory_Bps"] / 1e9 * (1 + 1e-9)  # the datasheet's HBM bandwidth
    s = kernel_summary(rows)
    assert s is not None
    assert sum(s["by_class_s"].values()) == pytest.approx(s["kernel_time_s"])
    assert sum(s["by_source_s"].values()) == pytest.approx(s["kernel_time_s"])
    assert not any(" x" in k for k in s["by_source_s"])
    assert next(iter(s["by_class_s"])) == "gemm"
    assert math.isclose(s["kernel_time_s"], _compute_by_rank(plan)[s["rank"]], rel_tol=1e-12)


def test_no_rows_no_summary() -> None:
    assert kernel_summary([]) is None


def test_netsim_run_prints_and_writes_the_kernels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line: two console lines, the `kernels` table, `compute_kernels` in the summary."""
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["run", "-o", str(out_dir), "--no-report", "-q"], capsys)
    assert code == 0, err
    assert "compute kernels of rank " in out and "timed from: " in out
    table = pd.read_parquet(out_dir / "kernels.parquet")
    assert list(table.columns) == list(KERNEL_ROW_COLUMNS)
    summary = json.loads((out_dir / "summary.json").read_text())
    kern = summary["compute_kernels"]
    mine = table[table["rank"] == kern["rank"]]
    assert mine["time_s"].sum() == pytest.approx(kern["kernel_time_s"])
    assert sum(kern["by_class_s"].values()) == pytest.approx(kern["kernel_time_s"])


def test_format_shares_and_gaps_in_a_read_back_table() -> None:
    assert format_shares({"other": 0.25, "gemm": 0.5, "norm": 0.25}) == "gemm 50.0%, norm 25.0%, other 25.0%"
    assert format_shares({"gemm": 3.0, "attention": 1.0}, total=4.0) == "gemm 75.0%, attention 25.0%"
    row = {"stage": 0, "rank": 0, "kernel_class": "gemm", "time_s": 1.0}
    s = kernel_summary([{**row, "source": float("nan")}, {**row, "source": "table:surface x1980/1830 MHz"}])
    assert s is not None and s["by_source_s"] == {"table:surface": 1.0, "unknown": 1.0}
