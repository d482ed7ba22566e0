"""Sustained load: bring an accelerator to the clocks it holds under a long run before timing.

An accelerator boosts its clocks while it has power and thermal headroom and settles lower when
a load lasts (an H100 SXM is specified at 700 W; a training step keeps every SM busy for hours).
A short benchmark (Vidur's operator profiles, a first ``netsim profile``) can be timed at the
boost clocks.  :func:`soak` runs back-to-back large GEMMs for a given time first and reports
what it saw: its own GEMM rate in the first and in the last second, and on NVIDIA GPUs the SM
clock, power draw, temperature and active throttle reasons from ``nvidia-smi``
(:func:`gpu_state`) before and after.  ``netsim profile --soak-s S`` calls it and keeps the
report in the kernel table's metadata (``soak``).
"""

from __future__ import annotations

import subprocess
import time
from types import ModuleType
from typing import Any

__all__ = ["SOAK_GEMM_N", "gpu_state", "nvidia_smi_query", "soak"]

#: the square GEMM the soak runs back to back, per device (large enough to keep every SM busy)
SOAK_GEMM_N: dict[str, int] = {"cuda": 8192, "cpu": 512}

_GPU_QUERY = ("clocks.sm", "power.draw", "temperature.gpu", "clocks_throttle_reasons.active")

#: netsim dtype -> torch dtype of the soak's operands (FP8 soaks in BF16: a plain matmul cannot
#: take FP8 operands; the load on the tensor cores is what matters)
_SOAK_DTYPE = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "float8": "bfloat16"}


def nvidia_smi_query(fields: tuple[str, ...]) -> list[str] | None:
    """GPU 0's values of ``nvidia-smi --query-gpu`` ``fields`` (no units); None where it cannot
    be read (no NVIDIA GPU, no driver tool, an unexpected answer)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    vals = [v.strip() for v in lines[0].split(",")] if lines else []
    return vals if len(vals) == len(fields) else None


def gpu_state() -> dict[str, Any] | None:
    """SM clock (MHz), power (W), temperature (C) and active throttle reasons of GPU 0 from
    ``nvidia-smi``; None where it cannot be read."""
    vals = nvidia_smi_query(_GPU_QUERY)
    if vals is None:
        return None

    def num(v: str) -> float | None:
        try:
            return float(v)
        except ValueError:
            return None

    return {
        "sm_clock_mhz": num(vals[0]),
        "power_w": num(vals[1]),
        "temperature_c": num(vals[2]),
        "throttle_reasons": vals[3],
    }


def soak(torch: ModuleType, device: str, seconds: float, dtype: str) -> dict[str, Any]:
    """Run back-to-back ``SOAK_GEMM_N[device]`` square GEMMs in ``dtype`` for ``seconds``; the GEMM
    rate (TFLOP/s) of the first and the last one-second window and the GPU state before and after."""
    n = SOAK_GEMM_N[device]
    tdtype = getattr(torch, _SOAK_DTYPE.get(dtype, "float32"))
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=tdtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=tdtype, generator=gen)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    before = gpu_state() if device == "cuda" else None
    flops = 2.0 * n**3
    rates: list[float] = []
    t0 = time.perf_counter()
    while True:
        sync()
        start = time.perf_counter()
        calls = 0
        while time.perf_counter() - start < min(1.0, seconds):
            for _ in range(4):
                torch.matmul(a, b)
            calls += 4
            sync()
        rates.append(flops * calls / max(time.perf_counter() - start, 1e-12) / 1e12)
        if time.perf_counter() - t0 >= seconds:
            break
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "gemm_n": n,
        "dtype": str(tdtype).replace("torch.", ""),
        "tflops_first_s": round(rates[0], 3),
        "tflops_last_s": round(rates[-1], 3),
        "gpu_before": before,
        "gpu_after": gpu_state() if device == "cuda" else None,
    }
