"""The FP8 speed-up as NVIDIA measured it: BF16 and FP8 runs of the same job (DGX Cloud
Benchmarking, Llama 3.1 8B on 8 H100 with context parallelism 2, NeMo 24.09: 12.91 s and 9.67 s
per step, netsim/validation/data/training/dgxc-benchmarking-h100.yaml).

netsim's FP8 assumption (GEMMs 1.75x BF16 on Hopper, from cuBLAS's published figure; the
quantisation casts of the recipe) must reproduce the measured ratio of the two step times, a
check of the FP8 model that is independent of how fast netsim's H100 BF16 kernels are (both
steps are about 14% shorter than measured: docs "Training-step replay").
"""

from __future__ import annotations

import pytest

from netsim.validation.runner import run_validation

#: tokens/s per GPU (81,222 and 108,436 tokens/s on 8 GPUs: 12.91 s and 9.67 s per step)
MEASURED_BF16 = 10152.75
MEASURED_FP8 = 13554.5


@pytest.fixture(scope="module")
def pair() -> dict[str, float]:
    t = run_validation(only="dgxc-benchmarking-h100/llama31-8b-8gpus-*", kinds=["training"]).table
    return {str(r["case"]): float(r["predicted"]) for _, r in t.iterrows()}


def test_the_fp8_speed_up_of_the_matched_pair(pair: dict[str, float]) -> None:
    bf16, fp8 = pair["llama31-8b-8gpus-bf16"], pair["llama31-8b-8gpus-fp8"]
    measured = MEASURED_FP8 / MEASURED_BF16  # 1.335
    assert fp8 / bf16 == pytest.approx(measured, rel=0.03)


def test_fp8_adds_no_error_of_its_own(pair: dict[str, float]) -> None:
    # whatever netsim's BF16 error is (+16.5% in 2026-12), the FP8 run's is the same
    err_bf16 = pair["llama31-8b-8gpus-bf16"] / MEASURED_BF16 - 1
    err_fp8 = pair["llama31-8b-8gpus-fp8"] / MEASURED_FP8 - 1
    assert err_fp8 == pytest.approx(err_bf16, abs=0.02)
