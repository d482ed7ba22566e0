"""The Vidur importer on a cut of the real data (tests/fixtures/vidur), and its bad-input errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from netsim.calibration.kernels import KernelTable
from netsim.errors import TraceError
from netsim.traces.vidur import Z90, find_profiles, read_vidur, thin_tokens
from tests.cli_run import run_cli

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "vidur" / "h100"
LLAMA = FIXTURE / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"


@pytest.fixture(scope="module")
def table() -> KernelTable:
    return read_vidur(FIXTURE, fit_surface=False)


def _row(t: KernelTable, label: str, **shape: float) -> pd.Series:
    df = t.df[t.df["label"] == label]
    for k, v in shape.items():
        df = df[df[k] == v]
    assert len(df) == 1, (label, shape, len(df))
    return df.iloc[0]


def test_gemm_shapes_and_times_by_hand(table: KernelTable) -> None:
    # Llama-2-7b: hidden 4096, 32 heads (d=128, no GQA), FFN 11008 gated; tp 2, 128 tokens
    pre = _row(table, "meta-llama/Llama-2-7b-hf:attn_pre_proj:tp2", m=128)
    assert (pre["kernel"], pre["n"], pre["k"]) == ("gemm", (32 + 2 * 32) * 128 / 2, 4096)
    assert pre["time_s"] == pytest.approx(0.025e-3)  # one measurement: its median, ms -> s
    assert pre["time_p10_s"] == pytest.approx(max(0.024e-3, 0.025e-3 - Z90 * 0.0004e-3))
    assert pre["time_p90_s"] == pytest.approx(min(0.025e-3, 0.025e-3 + Z90 * 0.0004e-3))
    assert pre["repeats"] == 20 and pre["inner"] == 1 and pre["dtype"] == "float16" and pre["pass"] == "fwd"
    up = _row(table, "meta-llama/Llama-2-7b-hf:mlp_up_proj:tp2", m=128)
    assert (up["n"], up["k"], up["time_s"]) == (2 * 11008 / 2, 4096, pytest.approx(0.039e-3))
    post = _row(table, "meta-llama/Llama-2-7b-hf:attn_post_proj:tp2", m=128)
    assert (post["n"], post["k"]) == (4096, 32 * 128 / 2)
    # 4096 tokens, tp 2 was measured twice (medians 0.217 and 0.216 ms): merged to the median
    down = _row(table, "meta-llama/Llama-2-7b-hf:mlp_down_proj:tp2", m=4096)
    assert (down["n"], down["k"]) == (4096, 11008 / 2)
    assert down["time_s"] == pytest.approx(0.2165e-3) and down["repeats"] == 40


def test_norms_and_activations(table: KernelTable) -> None:
    # Llama has the post-attention norm (RMSNorm in Vidur), phi-2 has none (LayerNorm) and GELU
    assert set(table.df[table.df["label"].str.startswith("meta-llama")]["kernel"]) == {"gemm", "rmsnorm", "swiglu"}
    phi = table.df[table.df["label"].str.startswith("microsoft/phi-2")]
    assert set(phi["kernel"]) == {"gemm", "layernorm"}
    act = _row(table, "meta-llama/Llama-2-7b-hf:mlp_act:tp2", tokens=256)
    assert act["kernel"] == "swiglu" and act["hidden"] == 11008 / 2
    # phi-2 is not gated: up projection n = FFN
    assert _row(table, "microsoft/phi-2:mlp_up_proj:tp1", m=64)["n"] == 10240


def test_metadata_names_source_rules_and_licence(table: KernelTable) -> None:
    m = table.meta
    assert m["source"] == "vidur" and m["vidur_device"] == "h100"
    assert m["dtype_equivalents"] == {"bfloat16": "float16"}
    assert "2 x forward" in m["backward"] and "MIT" in m["license"]
    assert sorted(m["models"]) == ["meta-llama/Llama-2-7b-hf", "microsoft/phi-2"]
    assert m["models"]["meta-llama/Llama-2-7b-hf"]["tp"] == [1, 2]


def test_thin_tokens_keeps_a_geometric_grid_and_the_largest() -> None:
    assert thin_tokens([1, 2, 3, 4, 5, 6, 7, 8, 9], 1) == [1, 2, 4, 8, 9]
    assert thin_tokens([8, 16, 24, 32], 2) == [8, 16, 24, 32]
    with pytest.raises(TraceError, match="tokens per octave must be >= 1"):
        thin_tokens([1], 0)


def test_tokens_per_octave_thins_every_series(table: KernelTable) -> None:
    thin = read_vidur(FIXTURE, tokens_per_octave=1, fit_surface=False)  # 8 and 32 are 2+ octaves apart
    assert sorted(thin.df["m"].dropna().unique()) == [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert len(thin) == len(table)  # the fixture's grid is already one per octave or coarser


def test_import_cli_writes_a_loadable_table_with_a_surface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h100.csv"
    code, stdout, _ = run_cli(["import", "vidur", str(FIXTURE), "--out", str(out)], capsys)
    assert code == 0 and f"wrote {out}" in stdout and "GEMM surface float16/fwd" in stdout
    t = KernelTable.load(out)
    assert t.gemm_surface("bf16") is None and t.gemm_surface("float16") is not None
    assert t.meta["command"].startswith("netsim import vidur")


def test_a_folder_with_several_devices_is_refused(tmp_path: Path) -> None:
    for dev in ("a100", "h100"):
        shutil.copytree(FIXTURE, tmp_path / dev)
    with pytest.raises(TraceError, match=r"several devices \(a100, h100\)"):
        find_profiles(tmp_path)
    assert find_profiles(tmp_path / "a100")[0] == "a100"


def _broken(tmp_path: Path, edit: str) -> Path:
    d = tmp_path / "h100" / "org" / "model"
    d.mkdir(parents=True)
    df = pd.read_csv(LLAMA)
    if edit == "missing-column":
        df = df.drop(columns=["time_stats.mlp_down_proj.median"])
    elif edit == "zero-time":
        df.loc[3, "time_stats.attn_post_proj.median"] = 0.0
    elif edit == "text":
        df["time_stats.attn_pre_proj.max"] = df["time_stats.attn_pre_proj.max"].astype(object)
        df.loc[0, "time_stats.attn_pre_proj.max"] = "fast"
    elif edit == "two-models":
        df.loc[5, "n_embd"] = 8192
    elif edit == "tp":
        df.loc[0, "num_tensor_parallel_workers"] = 3
    elif edit == "gated":
        df["use_gated_mlp"] = df["use_gated_mlp"].astype(object)
        df.loc[2, "use_gated_mlp"] = "maybe"
    df.to_csv(d / "mlp.csv", index=False)
    return tmp_path / "h100"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing-column", "time_stats.mlp_down_proj.median: missing column"),
        ("zero-time", "time_stats.attn_post_proj.median: row 4: must be a finite number > 0"),
        ("text", "time_stats.attn_pre_proj.max: row 1: must be a finite number > 0 (got 'fast')"),
        ("two-models", "n_embd: rows of 2 different models in one file"),
        ("tp", "num_tensor_parallel_workers: n_head 32 does not split over 3 tensor-parallel workers"),
        ("gated", "use_gated_mlp: row 3: must be True or False"),
    ],
)
def test_bad_profiles_are_one_line_errors_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, message: str
) -> None:
    src = _broken(tmp_path, edit)
    code, _, err = run_cli(["import", "vidur", str(src), "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 2 and not (tmp_path / "t.csv").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "org/model/mlp.csv" in lines[0] and message in lines[0], lines


def test_unreadable_or_empty_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["import", "vidur", str(tmp_path), "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 2 and "no mlp.csv under this directory" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["import", "vidur", str(tmp_path / "nope"), "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 2 and "not a directory" in err
    bad = tmp_path / "h100" / "org" / "m"
    bad.mkdir(parents=True)
    (bad / "mlp.csv").write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = run_cli(["import", "vidur", str(tmp_path / "h100"), "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 2 and "m/mlp.csv" in err and len(err.strip().splitlines()) == 1
