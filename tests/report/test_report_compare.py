"""`compare_runs` / `write_compare`: ratios against a baseline, labels, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_checks import external_references, html_figures, is_png, markdown_figures, parse_html
from report_fixtures import make_run_dir

from netsim.errors import NetsimError
from netsim.report import compare_runs, load_run, write_compare


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cmp")
    a = make_run_dir(root / "fast", layers=1, microbatches=1)
    b = make_run_dir(root / "slow", layers=1, microbatches=1, time_scale=2.0, byte_scale=3.0)
    return a, b


def test_ratios_against_first_run(pair: tuple[Path, Path]) -> None:
    a, b = pair
    df = compare_runs([a, b])
    assert list(df["label"]) == ["fast", "slow"]
    assert list(df["baseline"]) == [True, False]
    sa, sb = load_run(a).summary, load_run(b).summary
    assert df.loc[0, "step_time_s"] == sa["step_time_s"]
    assert df.loc[1, "step_time_s_ratio"] == pytest.approx(2.0)
    assert df.loc[1, "compute_s_ratio"] == pytest.approx(2.0)
    assert df.loc[1, "bytes_total_ratio"] == pytest.approx(3.0)
    assert df.loc[1, "bytes_ep_ratio"] == pytest.approx(3.0)
    assert df.loc[1, "ep_bytes_inter_node_ratio"] == pytest.approx(3.0)
    assert df.loc[1, "alltoall_share_ratio"] == pytest.approx(1.0)
    assert df.loc[1, "bytes_ep"] == pytest.approx(sb["bytes_by_class"]["ep"])
    # the baseline's own ratios are 1 where defined, NaN where its value is 0 (tp bytes) or missing
    assert df.loc[0, "step_time_s_ratio"] == 1.0
    assert np.isnan(df.loc[0, "bytes_tp_ratio"]) and np.isnan(df.loc[1, "bytes_tp_ratio"])
    assert np.isnan(df.loc[1, "checkpoint_time_s_ratio"])
    # the busiest rank's kernel time by class (summary compute_kernels)
    assert df.loc[0, "kernel_s_gemm"] == pytest.approx(sa["compute_kernels"]["by_class_s"]["gemm"])
    assert df.loc[1, "kernel_time_s_ratio"] == pytest.approx(2.0)
    assert df.loc[1, "kernel_s_gemm_ratio"] == pytest.approx(2.0)


def test_runs_without_kernel_times(tmp_path: Path) -> None:
    """A run directory from before `compute_kernels` (or a replayed trace) compares without
    kernel columns, or with NaN beside a run that has them."""
    a = make_run_dir(tmp_path / "old", layers=1, microbatches=1)
    b = make_run_dir(tmp_path / "new", layers=1, microbatches=1)
    s = json.loads((a / "summary.json").read_text())
    del s["compute_kernels"]
    (a / "summary.json").write_text(json.dumps(s))
    assert not any(c.startswith("kernel") for c in compare_runs([a]).columns)
    df = compare_runs([a, b])
    assert np.isnan(df.loc[0, "kernel_time_s"]) and df.loc[1, "kernel_time_s"] > 0
    assert np.isnan(df.loc[1, "kernel_s_gemm_ratio"])


def _set_accuracy(run: Path, accelerator: str, runs: int, mean: float | None) -> None:
    s = json.loads((run / "summary.json").read_text())
    s["validation_accuracy"] = {"accelerator": accelerator, "dtype": "bf16", "model_kind": "dense", "runs": runs}
    if mean is not None:
        s["validation_accuracy"]["mean_step_error"] = mean
    (run / "summary.json").write_text(json.dumps(s))


def test_runs_in_regimes_with_different_validated_errors(tmp_path: Path) -> None:
    """Each run's regime record is an identity column (no ratio); the report warns how much a
    step-time ratio across regimes with different errors can be off, and names an unvalidated one."""
    a = make_run_dir(tmp_path / "a100", layers=1, microbatches=1)
    b = make_run_dir(tmp_path / "h100", layers=1, microbatches=1)
    c = make_run_dir(tmp_path / "npu", layers=1, microbatches=1)
    _set_accuracy(a, "A100", 12, -0.033)
    _set_accuracy(b, "H100", 12, -0.100)
    _set_accuracy(c, "NPU", 0, None)
    df = compare_runs([a, b, c])
    assert list(df["regime"]) == ["A100 bf16 dense", "H100 bf16 dense", "NPU bf16 dense"]
    assert list(df["validated_runs"]) == [12, 12, 0]
    assert df["validated_step_error"].iloc[:2].tolist() == pytest.approx([-0.033, -0.100])
    assert np.isnan(df.loc[2, "validated_step_error"])
    assert "validated_step_error_ratio" not in df.columns
    out = tmp_path / "cmp"
    write_compare([a, b, c], out)
    md = (out / "report.md").read_text()
    assert "| -3.3% (12 A100 bf16 dense runs) |" in md and "| none (NPU bf16 dense) |" in md
    assert "can be off by about 7 points for that reason alone" in md
    assert "No published run validates NPU bf16 dense" in md
    # one regime (or runs without the record): no warning
    out2 = tmp_path / "cmp2"
    a2 = make_run_dir(tmp_path / "a100b", layers=1, microbatches=1)
    _set_accuracy(a2, "A100", 12, -0.033)
    write_compare([a, a2], out2)
    assert "for that reason alone" not in (out2 / "report.md").read_text()


def test_explicit_baseline(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    df = compare_runs([a, b], baseline=b)
    assert list(df["baseline"]) == [False, True]
    assert df.loc[0, "step_time_s_ratio"] == pytest.approx(0.5)
    assert df.loc[0, "bytes_total_ratio"] == pytest.approx(1 / 3)
    # a baseline not in the list is added first
    c = make_run_dir(tmp_path / "mid", layers=1, microbatches=1, time_scale=4.0)
    df2 = compare_runs([a, b], baseline=c)
    assert list(df2["label"]) == ["mid", "fast", "slow"]
    assert df2.loc[2, "step_time_s_ratio"] == pytest.approx(0.5)


def test_labels_when_dir_names_collide(tmp_path: Path) -> None:
    a = make_run_dir(tmp_path / "x" / "run", layers=1, microbatches=1, workload="w1")
    b = make_run_dir(tmp_path / "y" / "run", layers=1, microbatches=1, workload="w2")
    c = make_run_dir(tmp_path / "z" / "run", layers=1, microbatches=1, workload="w2")
    assert list(compare_runs([a, b])["label"]) == ["synthetic-leafspine/w1", "synthetic-leafspine/w2"]
    assert list(compare_runs([a, b, c])["label"]) == [
        "synthetic-leafspine/w1",
        "synthetic-leafspine/w2#1",
        "synthetic-leafspine/w2#2",
    ]


def test_write_compare_files(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    out = tmp_path / "cmp"
    html = write_compare([a, b], out)
    csv = pd.read_csv(out / "compare.csv")
    pq = pd.read_parquet(out / "compare.parquet")
    assert list(csv.columns) == list(pq.columns)
    assert csv.loc[1, "step_time_s_ratio"] == pytest.approx(2.0)
    assert pq.loc[1, "bytes_total_ratio"] == pytest.approx(3.0)
    doc = parse_html(html.read_text())
    assert doc.errors == [] and external_references(doc) == []
    figs = html_figures(doc)
    assert set(figs) == {
        "figures/compare_breakdown.png",
        "figures/compare_step_time.png",
        "figures/compare_bytes.png",
        "figures/compare_alltoall.png",
    }
    for rel, data in figs.items():
        assert is_png(out / rel) and (out / rel).read_bytes() == data
    md = (out / "report.md").read_text()
    assert sorted(markdown_figures(md)) == sorted(figs)
    assert "(2.000x)" in md  # the slow run's step time against the baseline
    before = html.read_bytes()
    write_compare([a, b], out)
    assert html.read_bytes() == before  # deterministic


def test_compare_needs_summaries(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NetsimError, match=r"summary\.json is missing"):
        compare_runs([pair[0], tmp_path / "empty"])
    with pytest.raises(NetsimError, match="at least one"):
        compare_runs([])
