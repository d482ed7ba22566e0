"""The Liger-Kernel importer on a cut of the real benchmark CSV (tests/fixtures/liger), the shipped
table it made, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from netsim.calibration.kernels import KernelTable
from netsim.calibration.profiles import KERNEL_DATA_DIR
from netsim.errors import TraceError
from netsim.traces.liger import BYTE_SCALE, LIGER_BENCHMARKS, read_liger
from tests.cli_run import run_cli

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "liger" / "all_benchmark_data.csv"
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"


@pytest.fixture(scope="module")
def table() -> KernelTable:
    return read_liger(FIXTURE, H100)


def _source_ms(name: str, provider: str, mode: str, x: int) -> float:
    d = pd.read_csv(FIXTURE)
    hit = d[
        (d.kernel_name == name)
        & (d.kernel_provider == provider)
        & (d.kernel_operation_mode == mode)
        & (d.metric_name == "speed")
        & (d.x_value == x)
    ]
    assert len(hit) == 1
    return float(hit.y_value_50.iloc[0])


def _row(t: KernelTable, kernel: str, pass_: str, **shape: float) -> pd.Series:
    df = t.df[(t.df["kernel"] == kernel) & (t.df["pass"] == pass_)]
    for k, v in shape.items():
        df = df[df[k] == v]
    assert len(df) == 1, (kernel, pass_, shape, len(df))
    return df.iloc[0]


def test_swiglu_shape_and_passes_by_hand(table: KernelTable) -> None:
    # megatron_swiglu, provider megatron: S 2048 x B 4 tokens, x = ffn_local (the output columns)
    fwd = _row(table, "swiglu", "fwd", tokens=8192, hidden=8192)
    bwd = _row(table, "swiglu", "bwd", tokens=8192, hidden=8192)
    assert fwd["time_s"] == pytest.approx(_source_ms("megatron_swiglu", "megatron", "forward", 8192) * 1e-3)
    full = _source_ms("megatron_swiglu", "megatron", "full", 8192)
    assert bwd["time_s"] == pytest.approx((full - _source_ms("megatron_swiglu", "megatron", "forward", 8192)) * 1e-3)
    assert fwd["time_s"] == pytest.approx(0.22016e-3, rel=1e-4)  # the CSV: 0.2201599925756454 ms
    assert fwd["dtype"] == bwd["dtype"] == "bfloat16" and fwd["label"] == "liger:megatron_swiglu:megatron"
    assert fwd["time_p10_s"] <= fwd["time_s"] <= fwd["time_p90_s"]
    assert 0 < bwd["time_p10_s"] <= bwd["time_s"] <= bwd["time_p90_s"]


def test_cross_entropy_providers_map_to_the_three_implementations(table: KernelTable) -> None:
    for provider, kernel in (
        ("megatron-unfused", "cross_entropy"),
        ("megatron-fused", "cross_entropy_fused"),
        ("liger", "cross_entropy_online"),
    ):
        fwd = _row(table, kernel, "fwd", tokens=8192, vocab=4096)
        assert fwd["time_s"] == pytest.approx(_source_ms("megatron_cross_entropy", provider, "forward", 4096) * 1e-3)
    # the providers order as their passes over the logits do: unfused > fused > one-pass
    t = [_row(table, k, "fwd", tokens=8192, vocab=8192)["time_s"] for k in ("cross_entropy", "cross_entropy_fused")]
    assert t[0] > t[1] > _row(table, "cross_entropy_online", "fwd", tokens=8192, vocab=8192)["time_s"]


def test_only_the_mapped_benchmarks_of_the_gpu_are_imported(table: KernelTable) -> None:
    # the four megatron_* kernels (the A100 rows, and megatron_rms_norm, not imported)
    assert set(table.kernels()) == {k for k, _ in LIGER_BENCHMARKS.values()} - {"rmsnorm_eager"}
    assert len(table) == 4 * 2 * 2  # 4 kernels x 2 x values x 2 passes
    assert table.meta["gpu_name"] == H100 and "full" in table.meta["backward"] and table.meta["scaled"] == {}


def test_hugging_face_rmsnorm_is_the_eager_norm_scaled_to_a_bf16_weight() -> None:
    """LlamaRMSNorm (fp32 weight: 38 / 114 bytes per element) as rmsnorm_eager (36 / 92)."""
    t = read_liger(FIXTURE, A100)
    assert set(t.kernels()) == {"rmsnorm_eager"}
    fwd = _row(t, "rmsnorm_eager", "fwd", tokens=2048, hidden=4096)
    bwd = _row(t, "rmsnorm_eager", "bwd", tokens=2048, hidden=4096)
    assert fwd["time_s"] == pytest.approx(0.27990400791168213e-3 * 36 / 38)
    assert bwd["time_s"] == pytest.approx((1.011423945426941 - 0.27990400791168213) * 1e-3 * 92 / 114)
    assert BYTE_SCALE[("rms_norm", "huggingface")] == (36 / 38, 92 / 114)
    assert t.meta["scaled"] == {"rms_norm/huggingface": "fwd x 0.9474, bwd x 0.8070"}
    # what the eager sequence reaches on an A100 (2.04 TB/s of HBM): about 60% of it, not 80%
    assert 0.5 < fwd["bytes"] / fwd["time_s"] / 2.039e12 < 0.7


def test_the_latest_measurement_of_a_cell_wins(tmp_path: Path) -> None:
    d = pd.read_csv(FIXTURE)
    old = d[(d.kernel_name == "megatron_swiglu") & (d.kernel_provider == "megatron") & (d.x_value == 4096)].copy()
    old["timestamp"] = "2020-01-01 00:00:00"
    old["y_value_50"] *= 10
    path = tmp_path / "a.csv"
    pd.concat([d, old]).to_csv(path, index=False)
    assert _row(read_liger(path, H100), "swiglu", "fwd", hidden=4096)["time_s"] == pytest.approx(
        _source_ms("megatron_swiglu", "megatron", "forward", 4096) * 1e-3
    )


def test_tensor_parallel_benchmarks_give_the_rank_s_vocabulary(tmp_path: Path) -> None:
    d = pd.read_csv(FIXTURE)
    d["extra_benchmark_config_str"] = d["extra_benchmark_config_str"].str.replace('"TP": 1', '"TP": 4')
    path = tmp_path / "tp4.csv"
    d.to_csv(path, index=False)
    _row(read_liger(path, H100), "cross_entropy", "fwd", tokens=8192, vocab=8192 / 4)


def test_the_shipped_table_is_the_import_of_the_h100_rows() -> None:
    t = KernelTable.load(KERNEL_DATA_DIR / "liger-megatron-h100.csv")
    assert set(t.kernels()) == {"swiglu", "cross_entropy", "cross_entropy_fused", "cross_entropy_online"}
    assert t.meta["gpu_name"] == H100 and t.meta["command"].startswith("netsim import liger")
    assert (t.df.groupby(["kernel", "pass"]).size() == 6).all()  # six swept values per benchmark
    # the fixture's cells are the shipped table's
    fixture = read_liger(FIXTURE, H100)
    for _, r in fixture.df.iterrows():
        shipped = t.df[(t.df.kernel == r.kernel) & (t.df["pass"] == r["pass"]) & (t.df.tokens == r.tokens)]
        col = "vocab" if str(r.kernel).startswith("cross") else "hidden"
        assert float(shipped[shipped[col] == r[col]].time_s.iloc[0]) == pytest.approx(r.time_s, rel=1e-8)


def _mutated(tmp_path: Path, **changes: object) -> Path:
    d = pd.read_csv(FIXTURE)
    mask = (d.gpu_name == H100) & (d.kernel_name == "megatron_swiglu")
    for col, val in changes.items():
        d[col] = d[col].astype(object)
        d.loc[mask, col] = val
    path = tmp_path / "bad.csv"
    d.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        ({"y_value_50": -1.0}, "y_value_50", "must be a finite number of ms > 0"),
        ({"y_value_80": 1e20}, "y_value_80", "at most 1e\\+12"),
        ({"x_value": "99999999999999999999999"}, "x_value", "must be a whole number in 1..16777216"),
        ({"x_value": 4096.5}, "x_value", "must be a whole number"),
        ({"extra_benchmark_config_str": "not json"}, "extra_benchmark_config_str", "not a JSON object"),
        ({"extra_benchmark_config_str": json.dumps({"S": 0, "B": 4})}, "extra_benchmark_config_str", "S must be"),
        ({"metric_unit": "s"}, None, "speed must be in ms"),
    ],
)
def test_bad_values_name_the_file_and_field(
    tmp_path: Path, edit: dict[str, object], field: str | None, message: str
) -> None:
    path = _mutated(tmp_path, **edit)
    with pytest.raises(TraceError, match=message) as exc:
        read_liger(path, H100)
    assert str(path) in str(exc.value) and (field is None or exc.value.field == field)


def test_a_full_pass_not_longer_than_the_forward_is_refused(tmp_path: Path) -> None:
    d = pd.read_csv(FIXTURE)
    full = (d.kernel_name == "megatron_swiglu") & (d.kernel_operation_mode == "full")
    d.loc[full, "y_value_50"] = 1e-6
    path = tmp_path / "full.csv"
    d.to_csv(path, index=False)
    with pytest.raises(TraceError, match="is not longer than the forward"):
        read_liger(path, H100)


def test_unknown_gpu_and_missing_column(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="has them for: NVIDIA A100-SXM4-80GB, NVIDIA H100 80GB HBM3"):
        read_liger(FIXTURE, "NVIDIA B200")
    path = tmp_path / "cols.csv"
    pd.read_csv(FIXTURE).drop(columns=["gpu_name"]).to_csv(path, index=False)
    with pytest.raises(TraceError, match="missing column") as exc:
        read_liger(path, H100)
    assert exc.value.field == "gpu_name"


def test_cli_import_writes_a_table_and_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv"
    code, stdout, _ = run_cli(["import", "liger", str(FIXTURE), "--out", str(out)], capsys)
    assert code == 0 and out.is_file() and "wrote" in stdout
    assert KernelTable.load(out).meta["command"].startswith("netsim import liger")
    bad = tmp_path / "none.csv"
    code, _, err = run_cli(["import", "liger", str(FIXTURE), "--gpu", "NVIDIA B200", "--out", str(bad)], capsys)
    assert code == 2 and "NVIDIA B200" in err and len(err.strip().splitlines()) == 1 and not bad.exists()


def test_a_cell_without_both_passes_is_skipped_and_listed(tmp_path: Path) -> None:
    d = pd.read_csv(FIXTURE)
    gone = (d.kernel_name == "megatron_swiglu") & (d.kernel_operation_mode == "full") & (d.x_value == 4096)
    path = tmp_path / "partial.csv"
    d[~gone].to_csv(path, index=False)
    t = read_liger(path, H100)
    assert len(t.df[t.df.kernel == "swiglu"]) == 2  # only the x = 8192 cell, forward and backward
    assert t.meta["skipped"] == ['megatron_swiglu/megatron x=4096 {"S": 2048, "B": 4}: no full']
