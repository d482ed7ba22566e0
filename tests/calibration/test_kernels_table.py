"""Kernel tables: format, validation, log-space interpolation (no torch needed)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netsim.calibration.kernels import KERNELS, SHAPE_COLUMNS, TABLE_COLUMNS, KernelTable, canonical_dtype
from netsim.errors import SpecError, TraceError

DATA = Path(__file__).resolve().parents[2] / "netsim" / "data" / "kernels"


def row(kernel: str, pass_: str, time_s: float, dtype: str = "float32", **shape: float) -> dict[str, object]:
    return {"kernel": kernel, "dtype": dtype, "pass": pass_, "time_s": time_s, **shape}


def gemm_table() -> KernelTable:
    rows = [
        row("gemm", "fwd", 1e-4, m=128, n=1024, k=1024),
        row("gemm", "fwd", 4e-4, m=1024, n=1024, k=1024),
        row("gemm", "fwd", 2e-2, m=128, n=4096, k=4096),
        row("gemm", "bwd", 3e-4, m=128, n=1024, k=1024),
    ]
    return KernelTable.from_frame(pd.DataFrame(rows))


def test_columns_and_defaults() -> None:
    t = gemm_table()
    assert list(t.df.columns) == list(TABLE_COLUMNS)
    r = t.df.iloc[0]
    assert r["flops"] == 2 * 128 * 1024 * 1024
    assert r["bytes"] == 4 * (128 * 1024 + 1024 * 1024 + 128 * 1024)
    assert r["time_p10_s"] == r["time_s"] == r["time_p90_s"] and r["repeats"] == 1
    assert math.isnan(r["tokens"])


def test_predict_exact_at_grid_points() -> None:
    t = gemm_table()
    assert t.predict("gemm", "fwd", m=128, n=1024, k=1024) == pytest.approx(1e-4)
    assert t.predict("gemm", "fwd", m=1024, n=1024, k=1024) == pytest.approx(4e-4)
    assert t.predict("gemm", "bwd", m=128, n=1024, k=1024) == pytest.approx(3e-4)


def test_predict_interpolates_log_time_vs_log_flops() -> None:
    t = gemm_table()
    # flops ~ m, so log t is linear in log m between m=128 and m=1024: t = t1 * (t2/t1)^(log(512/128)/log(8))
    assert t.predict("gemm", "fwd", m=512, n=1024, k=1024) == pytest.approx(1e-4 * 4 ** (2 / 3))


def test_predict_extrapolates_with_edge_efficiency_above_and_slope_below() -> None:
    t = gemm_table()
    # above the grid: constant FLOP/s of the largest point -> linear in flops
    assert t.predict("gemm", "fwd", m=4096, n=1024, k=1024) == pytest.approx(4e-4 * 4)
    # below: slope of the first segment (log 4 / log 8 = 2/3), clamped to [0, 1]
    assert t.predict("gemm", "fwd", m=32, n=1024, k=1024) == pytest.approx(1e-4 * 0.25 ** (2 / 3))
    # a single-point series scales linearly with flops (bwd has one row)
    assert t.predict("gemm", "bwd", m=256, n=1024, k=1024) == pytest.approx(6e-4)


def test_predict_below_grid_never_faster_than_a_flat_floor() -> None:
    rows = [row("gemm", "fwd", 5e-5, m=16, n=512, k=512), row("gemm", "fwd", 4e-5, m=64, n=512, k=512)]
    t = KernelTable.from_frame(pd.DataFrame(rows))  # noisy: the larger shape measured faster
    assert t.predict("gemm", "fwd", m=4, n=512, k=512) == pytest.approx(5e-5)  # slope clamped to 0


def test_predict_uses_nearest_secondary_dims() -> None:
    t = gemm_table()
    # (n, k) = (2048, 1024) is nearer (1024, 1024) (log2 distance 1) than (4096, 4096) (distance 3);
    # its flops at m=512 equal those of (1024, 1024) at m=1024
    assert t.predict("gemm", "fwd", m=512, n=2048, k=1024) == pytest.approx(4e-4)
    # (4096, 2048) is nearer (4096, 4096): same flops as m=64 there -> below that single point
    assert t.predict("gemm", "fwd", m=64, n=4096, k=4096) == pytest.approx(1e-2)


def test_memory_bound_kernels_interpolate_over_bytes() -> None:
    rows = [row("rmsnorm", "fwd", 1e-5, tokens=256, hidden=1024), row("rmsnorm", "fwd", 1e-4, tokens=4096, hidden=1024)]
    t = KernelTable.from_frame(pd.DataFrame(rows))
    assert KERNELS["rmsnorm"].cost == "bytes"
    # bytes = 4 * (2 t h + 2 h): not proportional to tokens, so interpolate on the byte axis
    b = [KERNELS["rmsnorm"].nbytes({"tokens": x, "hidden": 1024}, "fwd", "float32") for x in (256, 1024, 4096)]
    frac = (math.log(b[1]) - math.log(b[0])) / (math.log(b[2]) - math.log(b[0]))
    assert t.predict("rmsnorm", "fwd", tokens=1024, hidden=1024) == pytest.approx(1e-5 * 10**frac)


def test_dtype_resolution_and_fixed_dtype() -> None:
    rows = [
        row("gemm", "fwd", 1e-4, dtype="fp32", m=128, n=1024, k=1024),
        row("gemm", "fwd", 5e-5, dtype="bf16", m=128, n=1024, k=1024),
        row("adamw", "step", 1e-3, dtype="float32", params=1e6),
    ]
    t = KernelTable.from_frame(pd.DataFrame(rows))
    assert sorted(t.df["dtype"]) == ["bfloat16", "float32", "float32"]
    assert t.predict("gemm", "fwd", dtype="bfloat16", m=128, n=1024, k=1024) == pytest.approx(5e-5)
    with pytest.raises(SpecError, match="give a dtype"):
        t.predict("gemm", "fwd", m=128, n=1024, k=1024)
    # adamw keeps fp32 master weights whatever the training dtype
    assert t.predict("adamw", "step", dtype="bf16", params=2e6) == pytest.approx(2e-3)
    assert t.covers("gemm", "fwd", "bf16") and not t.covers("gemm", "fwd", "fp16")
    assert not t.covers("attention", "fwd", "bf16")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": "conv2d", "pass_": "fwd"}, "unknown kernel 'conv2d'"),
        ({"kernel": "gemm", "pass_": "step"}, "no pass 'step'"),
        ({"kernel": "gemm", "pass_": "fwd", "m": 1, "n": 2}, "needs shape parameter 'k'"),
        ({"kernel": "gemm", "pass_": "fwd", "m": 1, "n": 2, "k": 0}, "k must be finite and > 0"),
        ({"kernel": "gemm", "pass_": "fwd", "m": 1, "n": 2, "k": 3, "seq": 4}, "unknown: seq"),
    ],
)
def test_predict_rejects_bad_queries(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        gemm_table().predict(**kwargs)  # type: ignore[arg-type]


def test_canonical_dtype() -> None:
    assert canonical_dtype("torch.bfloat16") == "bfloat16"
    assert canonical_dtype("FP8") == "float8"
    with pytest.raises(SpecError, match="unknown dtype 'int4'"):
        canonical_dtype("int4")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_load_roundtrip_keeps_rows_and_metadata(tmp_path: Path, suffix: str) -> None:
    t = gemm_table()
    t.meta = {"device": "cpu", "device_name": "Test CPU", "threads": 2}
    path = tmp_path / f"t{suffix}"
    t.save(path)
    back = KernelTable.load(path)
    assert back.meta == t.meta
    pd.testing.assert_frame_equal(back.df, t.df, check_dtype=False, rtol=1e-5)
    assert back.predict("gemm", "fwd", m=512, n=1024, k=1024) == pytest.approx(1e-4 * 4 ** (2 / 3), rel=1e-5)
    if suffix == ".csv":
        assert path.read_text().startswith("# netsim-kernel-table v1\n# meta: {")


def test_hand_written_csv_without_header_comments(tmp_path: Path) -> None:
    p = tmp_path / "hand.csv"
    p.write_text("kernel,dtype,pass,tokens,hidden,time_s\nlayernorm,bf16,fwd,1024,4096,2e-5\n")
    t = KernelTable.load(p)
    assert t.meta == {} and t.predict("layernorm", "fwd", tokens=2048, hidden=4096) == pytest.approx(4e-5, rel=0.01)


BAD_TABLES = [
    ("kernel,dtype,time_s\ngemm,fp32,1e-3\n", "pass: missing column"),
    ("kernel,dtype,pass,m,n,k,time_s\nconv,fp32,fwd,1,1,1,1e-3\n", "kernel: row 1: unknown kernel 'conv'"),
    ("kernel,dtype,pass,m,n,k,time_s\ngemm,fp32,step,1,1,1,1e-3\n", "pass: row 1: kernel gemm has no pass 'step'"),
    ("kernel,dtype,pass,m,n,time_s\ngemm,fp32,fwd,1,1,1e-3\n", "k: row 1: kernel gemm needs k > 0"),
    ("kernel,dtype,pass,m,n,k,time_s\ngemm,fp32,fwd,1,1,1,-1\n", "time_s: row 1: must be finite, > 0 and at most"),
    ("kernel,dtype,pass,m,n,k,time_s\ngemm,fp32,fwd,1,1,1,1e12\n", "row 1: must be finite, > 0 and at most 1e+09"),
    ("kernel,dtype,pass,m,n,k,time_s\ngemm,fp32,fwd,1e12,8,1e9,1e-3\n", "m: row 1: kernel gemm's shape moves more"),
    ("kernel,dtype,pass,m,n,k,time_s\ngemm,fp32,fwd,1,1,1,fast\n", "time_s: row 1: not a number ('fast')"),
    ("kernel,dtype,pass,m,n,k,time_s\ngemm,int4,fwd,1,1,1,1e-3\n", "dtype: row 1: unknown dtype 'int4'"),
    (
        "kernel,dtype,pass,m,n,k,time_s,time_p10_s,time_p90_s\ngemm,fp32,fwd,1,1,1,1e-3,2e-3,3e-3\n",
        "time_s: row 1: needs time_p10_s <= time_s <= time_p90_s",
    ),
    ("kernel,dtype,pass,m,n,k,time_s,repeats\ngemm,fp32,fwd,1,1,1,1e-3,0.5\n", "repeats: row 1: must be an integer"),
    ("# netsim-kernel-table v1\n# meta: {not json\nkernel,dtype,pass,time_s\n", "meta: metadata is not valid JSON"),
    ("kernel,dtype,pass,time_s\n", "kernel table has no rows"),
    ("", "kernel table has no header row and no data"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TABLES)
def test_load_rejects_malformed_tables_naming_file_and_column(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TraceError) as ei:
        KernelTable.load(p)
    assert str(ei.value).startswith(f"{p}: ") and message in str(ei.value)
    assert "\n" not in str(ei.value)


def test_load_missing_and_non_parquet(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="kernel table not found"):
        KernelTable.load(tmp_path / "nope.csv")
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"PAR1 truncated")
    with pytest.raises(TraceError, match="cannot read Parquet kernel table"):
        KernelTable.load(bad)


def test_every_catalogue_kernel_has_positive_counts() -> None:
    for spec in KERNELS.values():
        shape = dict.fromkeys(spec.params, 64.0)
        for p in spec.passes:
            assert spec.nbytes(shape, p, "bfloat16") > 0
            assert spec.flops(shape, p) >= 0
            assert spec.cost_value(shape, p, "bfloat16") > 0
        assert set(spec.params) <= set(SHAPE_COLUMNS) and spec.sweep in spec.params


def test_shipped_cpu_tables_load_and_cover_the_catalogue() -> None:
    tables = sorted(DATA.glob("cpu-*.csv"))
    assert tables, "no measured CPU table shipped under netsim/data/kernels"
    for path in tables:
        t = KernelTable.load(path)
        assert set(t.kernels()) == set(KERNELS)
        assert t.meta["device"] == "cpu" and t.meta["torch"] and t.meta["date"] and t.meta["command"]
        assert (t.df["repeats"] >= 5).all()
        # a measured GEMM reaches at least 1 GFLOP/s on anything that runs these tests
        gemm = t.df[t.df["kernel"] == "gemm"]
        assert float((gemm["flops"] / gemm["time_s"]).max()) > 1e9
        assert np.isfinite(t.predict("grouped_gemm", "bwd", tokens=3000, experts=8, n=1024, k=1024))


def test_table_lookup_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import netsim.calibration.kernels, netsim.calibration.roofline, netsim.calibration.compute\n"
        "import netsim.traces.kineto, netsim.traces.chakra, netsim.calibration.profiler\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overlay_replaces_whole_kernels_and_keeps_the_base_surfaces() -> None:
    base = KernelTable.load(DATA / "vidur-h100.csv")
    top = KernelTable.load(DATA / "liger-megatron-h100.csv")
    both = base.overlay(top)
    # every swiglu row is the overlay's (the base's float16 rows are gone), the GEMMs the base's
    assert set(both.df[both.df.kernel == "swiglu"]["label"]) == set(top.df[top.df.kernel == "swiglu"]["label"])
    assert both.dtypes("swiglu") == ["bfloat16"]
    assert len(both.df[both.df.kernel == "gemm"]) == len(base.df[base.df.kernel == "gemm"])
    assert both.gemm_surface("float16") is not None
    assert both.meta["overlays"][0]["kernels"] == top.kernels() and both.source == base.source
    assert len(both) == len(base) - int((base.df.kernel == "swiglu").sum()) + len(top)
