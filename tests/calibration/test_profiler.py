"""Kernel profiler: timing logic, grids, and the profile / validate-kernels commands."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from netsim.calibration.kernels import KERNELS, KernelTable
from netsim.calibration.profiler import ProfileOptions, _Timer, default_grid, measure, require_torch
from netsim.errors import NetsimError
from tests.cli_run import run_cli

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs the torch extra")


def test_measure_batches_short_calls_and_respects_repeat_bounds() -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        t = time.perf_counter()
        while time.perf_counter() - t < 20e-6:
            pass

    timer = _Timer(None, "cpu")  # type: ignore[arg-type]  # the CPU timer does not touch torch
    t = measure(timer, fn, budget_s=0.05, min_repeats=4, max_repeats=50, warmup=2, sample_target_s=1e-3)
    assert t.inner >= 10  # ~20 us calls batched into >= 1 ms samples
    assert 4 <= t.repeats <= 50 and len(t.samples_s) == t.repeats
    assert t.time_p10_s <= t.time_s <= t.time_p90_s
    assert 15e-6 < t.time_s < 2e-3
    slow = measure(
        timer, lambda: time.sleep(0.004), budget_s=0.001, min_repeats=3, max_repeats=9, warmup=1, sample_target_s=1e-3
    )
    assert slow.inner == 1 and slow.repeats == 3  # min_repeats wins over a too-small budget


@pytest.mark.parametrize(("device", "quick"), [("cpu", False), ("cuda", False), ("cpu", True)])
def test_default_grids_cover_the_catalogue_once(device: str, quick: bool) -> None:
    pts = default_grid(device, quick)
    assert {p.kernel for p in pts} == set(KERNELS)
    keys = [(p.kernel, tuple(sorted(p.shape.items()))) for p in pts]
    assert len(keys) == len(set(keys))
    for p in pts:
        KERNELS[p.kernel].check_shape(p.shape)
        if p.kernel == "router_grap":
            assert p.shape["hidden"] % p.shape["experts"] == 0


def test_options_defaults() -> None:
    assert ProfileOptions().resolved_dtypes() == ("float32",)
    assert ProfileOptions(device="cuda").resolved_dtypes() == ("bfloat16",)
    assert ProfileOptions(dtypes=("bf16", "bfloat16", "fp32")).resolved_dtypes() == ("bfloat16", "float32")
    assert ProfileOptions(quick=True).resolved_budget_s() < ProfileOptions().resolved_budget_s()


def test_missing_torch_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(NetsimError, match=r"pip install 'moe-netsim\[torch\]'"):
        require_torch()
    code, _, err = run_cli(["profile", "--quick", "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 2 and "pip install 'moe-netsim[torch]'" in err and err.count("\n") == 1
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "--device: unknown device 'tpu'; allowed: cpu, cuda"),
        (["--dtype", "int4"], "--dtype: unknown dtype 'int4'"),
        (["--kernels", "gemm,conv"], "--kernels: unknown kernel 'conv'"),
        (["--budget-s", "0"], "--budget-s: must be > 0"),
        (["--soak-s", "-1"], "--soak-s: must be between 0 and 3600 seconds"),
        (["--soak-s", "nan"], "--soak-s: must be between 0 and 3600 seconds"),
    ],
)
def test_profile_rejects_bad_options(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["profile", "--quick", "--out", str(tmp_path / "t.csv"), *args], capsys)
    assert code == 2 and message in err


@pytest.mark.torch
@needs_torch
def test_profile_and_validate_tiny_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpu-test.csv"
    code, stdout, _ = run_cli(
        [
            "profile",
            "--device",
            "cpu",
            "--quick",
            "--kernels",
            "gemm,rmsnorm,permute,adamw",
            "--budget-s",
            "0.01",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and f"wrote {out}" in stdout and "FLOP/s" in stdout  # MFLOP/s on a loaded machine
    t = KernelTable.load(out)
    assert set(t.kernels()) == {"gemm", "rmsnorm", "permute", "adamw"}
    assert len(t) == 2 * 2 + 2 * 2 + 2 * 2 + 2  # fwd+bwd x 2 shapes, adamw step x 2
    meta = t.meta
    assert meta["device"] == "cpu" and meta["torch"] and meta["threads"] >= 1 and meta["cpu_model"]
    assert "profile" in meta["command"] and meta["options"]["quick"] is True and meta["date"]
    assert (t.df["repeats"] >= 3).all() and (t.df["time_s"] > 0).all()
    g = t.df[(t.df["kernel"] == "gemm") & (t.df["pass"] == "fwd")].iloc[0]
    assert g["flops"] == 2 * g["m"] * g["n"] * g["k"]
    # validate: re-measure gemm at the grid points and between them
    res = tmp_path / "val.csv"
    code, stdout, _ = run_cli(
        ["validate-kernels", str(out), "--quick", "--kernels", "gemm", "--budget-s", "0.01", "--out", str(res)], capsys
    )
    assert code == 0 and "median |error| over" in stdout and "grid:" in stdout and "mid:" in stdout
    import pandas as pd

    v = pd.read_csv(res)
    assert set(v["point"]) == {"grid", "mid"} and set(v["pass"]) == {"fwd", "bwd"}
    assert (v["measured_s"] > 0).all() and (v["predicted_s"] > 0).all()


@pytest.mark.torch
@needs_torch
def test_profile_cuda_without_gpu_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli(["profile", "--device", "cuda", "--quick", "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 2 and "torch sees no CUDA device" in err


def test_default_cpu_run_stops_each_series_at_the_per_call_limit() -> None:
    from netsim.calibration.profiler import CPU_MAX_CALL_S, GridPoint, _SeriesCap

    assert ProfileOptions(device="cpu").resolved_max_call_s() == CPU_MAX_CALL_S
    assert ProfileOptions(device="cpu", full=True).resolved_max_call_s() is None
    assert ProfileOptions(device="cpu", quick=True).resolved_max_call_s() is None
    assert ProfileOptions(device="cuda").resolved_max_call_s() is None
    full_budget_s = ProfileOptions(device="cpu", full=True).resolved_budget_s()
    assert full_budget_s > ProfileOptions(device="cpu").resolved_budget_s()

    def pt(tokens: int, hidden: int = 1024) -> GridPoint:
        return GridPoint("gelu", {"tokens": tokens, "hidden": hidden})

    cap = _SeriesCap(0.05)
    assert not cap.skip(pt(256), "float32")
    cap.record(pt(256), "float32", 0.004)
    assert not cap.skip(pt(1024), "float32")  # 4x the bytes: ~16 ms extrapolated
    cap.record(pt(1024), "float32", 0.02)
    assert cap.skip(pt(4096), "float32")  # ~80 ms extrapolated: the series stops here
    assert cap.skip(pt(16384), "float32")
    assert not cap.skip(pt(256, hidden=4096), "float32")  # another series
    cap.record(pt(256, hidden=4096), "float32", 0.06)  # measured over the limit
    assert cap.skip(pt(1024, hidden=4096), "float32")
    assert cap.skipped == 3
    nolimit = _SeriesCap(None)
    nolimit.record(pt(256), "float32", 10.0)
    assert not nolimit.skip(pt(1024), "float32")


def test_quick_validation_leaves_out_the_expensive_shapes() -> None:
    from netsim.calibration.profiles import KERNEL_DATA_DIR
    from netsim.calibration.validate import QUICK_MAX_POINT_S, validation_points

    table = KernelTable.load(KERNEL_DATA_DIR / "cpu-amd-epyc-1thread.csv")
    every = validation_points(table, max_per_kernel=3)
    quick = validation_points(table, max_per_kernel=3, max_point_s=QUICK_MAX_POINT_S)
    assert {p.kernel for p, _, _ in quick} == set(table.kernels())  # every kernel still checked
    assert any(p.kernel == "dropout" and p.shape["tokens"] == 16384 for p, _, _ in every)
    over = []
    for p, dtype, kind in quick:
        passes = sorted(set(table.df.loc[table.df["kernel"] == p.kernel, "pass"]))
        if sum(table.predict(p.kernel, s, dtype=dtype, **p.shape) for s in passes) > QUICK_MAX_POINT_S:
            over.append((p.kernel, kind))  # a kind with no cheap shape keeps its cheapest
    assert len(over) == len(set(over)) and not any(p.shape == {"tokens": 16384, "hidden": 4096} for p, _, _ in quick)
    assert len(quick) < len(every)


@pytest.mark.torch
@needs_torch
def test_soak_runs_the_device_first_and_records_what_it_saw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soaked.csv"
    args = ["profile", "--device", "cpu", "--quick", "--kernels", "gemm", "--budget-s", "0.01", "--soak-s", "0.3"]
    code, stdout, _ = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0 and "soak: " in stdout and "TFLOP/s (first -> last second)" in stdout
    sk = KernelTable.load(out).meta["soak"]
    assert sk["seconds"] >= 0.3 and sk["gemm_n"] == 512 and sk["dtype"] == "float32"
    assert sk["tflops_first_s"] > 0 and sk["tflops_last_s"] > 0
    assert sk["gpu_before"] is None and sk["gpu_after_measuring"] is None  # no GPU state on cpu
    assert KernelTable.load(out).meta["options"]["soak_s"] == 0.3


def test_gpu_state_reads_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from netsim.calibration import soak

    class Done:
        stdout = "1755, 699.12, 71, 0x0000000000000004\n"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    assert soak.gpu_state() == {
        "sm_clock_mhz": 1755.0,
        "power_w": 699.12,
        "temperature_c": 71.0,
        "throttle_reasons": "0x0000000000000004",
    }

    def missing(*a: object, **k: object) -> None:
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(subprocess, "run", missing)
    assert soak.gpu_state() is None


@pytest.mark.torch
@needs_torch
def test_the_device_check_script_runs_its_steps_on_a_cpu(tmp_path: Path) -> None:
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OUT": str(tmp_path), "DEVICE": "cpu", "QUICK": "1", "SOAK_S": "0.2", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(root / "benchmarks" / "device_h100_kernels.sh")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    boost = KernelTable.load(tmp_path / "kernels-boost.csv")
    sustained = KernelTable.load(tmp_path / "kernels-sustained.csv")
    assert set(boost.kernels()) == set(sustained.kernels()) == {"gemm", "grouped_gemm", "attention"}
    assert "soak" not in boost.meta and sustained.meta["soak"]["seconds"] >= 0.2
    elementwise = KernelTable.load(tmp_path / "elementwise-boost.csv")
    assert {"swiglu_eager", "gelu_eager", "prob_weight", "rmsnorm_eager", "rope_eager"} <= set(elementwise.kernels())
    assert (tmp_path / "environment.txt").read_text().strip()
