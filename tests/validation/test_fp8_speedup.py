"""The FP8 speed-up as NVIDIA measured it: BF16 and FP8 runs of the same job (DGX Cloud
Benchmarking, Llama 3.1 8B on 8 H100 with context parallelism 2, NeMo 24.09: 12.91 s and 9.67 s
per step, netsim/validation/data/training/dgxc-benchmarking-h100.yaml).

netsim's FP8 assumption (GEMMs 1.75x BF16 on Hopper, from cuBLAS's published figure; the
quantisation casts of the recipe) must reproduce the measured ratio of the two step times, a
check of the FP8 model that is independent of how fast netsim's H100 BF16 kernels are (both
steps were 5-8% shorter than measured on 2026-12-05: docs "Training-step replay").
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
    # 2026-12-05: 1.303 (-2.4%): the loss and Megatron's SwiGLU, measured in BF16 and the same
    # in both runs, take a larger share of the shorter FP8 step (before they were modelled: 1.337)
    assert fp8 / bf16 == pytest.approx(measured, rel=0.03)


# --- Transformer Engine's GEMM benchmark: the three FP8 recipes on one GPU --------------------
#
# docs/examples/gemm_profiling/gemm_profiling.rst at NVIDIA/TransformerEngine d0067d0da6, "Worked
# Example: 5B Model on H200": benchmarks/gemm/benchmark_gemm.py in model-config mode (hidden 4096,
# FFN 16384, 32 heads, micro-batch 31 x sequence 512 = 15,872 tokens) on an H200 NVL, per-layer
# time of the 12 GEMMs (fprop, dgrad, wgrad of QKV, attention out, MLP up and down), each one
# te.Linear call.  Autocast mode: every call quantises its input and its weight (row-wise and
# column-wise copies) before the GEMM.  netsim has no H200 NVL compute profile, so the check uses
# the H100's with one calibration: its GEMMs scaled to TE's measured BF16 time (31.968 ms; the
# H200 NVL runs at 600 W) and its memory-bound kernels to the H200's HBM bandwidth (4.8 against
# 3.35 TB/s).  What it checks is the FP8 model: the GEMM speed-up and each recipe's casts.
TE_TOKENS, TE_HIDDEN, TE_FFN = 31 * 512, 4096, 16384
TE_BF16_MS = 31.968
TE_MEASURED_MS = {"delayed": 18.978, "current": 20.285, "blockwise": 22.882, "current-prequantised": 16.785}


def _te_benchmark_ms() -> dict[str, float]:
    from netsim.config.scenario import load_scenario
    from netsim.run import build_compute_model
    from netsim.topology import load_topology
    from netsim.workload.costs import ModelCosts
    from netsim.workload.fp8 import quant_bytes

    graph = load_topology("dgx-h100", nodes=1)
    scenario = load_scenario({"name": "te", "topology": "dgx-h100", "nodes": 1, "workload": "gpt-dense"}, source="t")
    bf16, fp8 = build_compute_model(graph, scenario, "bf16"), build_compute_model(graph, scenario, "fp8")
    m, h, f = TE_TOKENS, TE_HIDDEN, TE_FFN
    fprop = [(m, h, 3 * h), (m, h, h), (m, h, f), (m, f, h)]  # (rows, k, n) of QKV, out, up, down
    calls = fprop + [(m, n, k) for (_, k, n) in fprop] + [(k, m, n) for (_, k, n) in fprop]  # + dgrad, wgrad

    def gemms(model: object, dtype: str) -> float:
        return sum(model.time("gemm", "fwd", dtype=dtype, m=r, n=n, k=k) for r, k, n in calls)  # type: ignore[attr-defined]

    scale = TE_BF16_MS * 1e-3 / gemms(bf16, "bf16")
    out = {"current-prequantised": gemms(fp8, "fp8") * scale * 1e3}
    for recipe in ("delayed", "current", "blockwise"):
        q = quant_bytes(recipe)
        casts = sum(
            ModelCosts._cast(r, k, q.other).time_s(bf16, "bf16") + ModelCosts._cast(k, n, q.weight).time_s(bf16, "bf16")
            for r, k, n in calls
        )
        out[recipe] = out["current-prequantised"] + casts * 3.35 / 4.8 * 1e3
    return out


def test_transformer_engine_fp8_recipes_on_one_gpu() -> None:
    """Each recipe within 12% (2026-12-05: delayed +10.1%, current +9.4%, block +2.8%,
    pre-quantised +9.1%: netsim's FP8 GEMMs run 1.75x BF16, the H100's maximum-achievable ratio,
    where the H200 NVL's reach 1.90x at these shapes); block scaling the slowest FP8 recipe, by
    more than the casts' bytes alone say (its quantisers run at about half speed)."""
    pred = _te_benchmark_ms()
    for key, measured in TE_MEASURED_MS.items():
        assert pred[key] == pytest.approx(measured, rel=0.12), key
    assert pred["delayed"] < pred["current"] < pred["blockwise"]
    # block vs current scaling: measured +12.8%; with the casts' bytes counted once netsim said -5.7%
    assert pred["blockwise"] / pred["current"] > 1.04


# --- DeepGEMM's published FP8 GEMM timings on H800 ---------------------------------------------
#
# deepseek-ai/DeepGEMM README.md at 327ec92 (2025-04-09), "Performance" (H800 SXM5, NVCC 12.8,
# DeepSeek-V3/R1 shapes without TP, FP8 with fine-grained scaling): TFLOP/s of the forward GEMM
# ``[M, K] x [K, N]``.  The training-sized rows (M = 4,096 tokens; the grouped GEMMs' contiguous
# layout, 4 or 8 experts of 4,096-8,192 tokens) against netsim's H800 FP8 GEMMs (Vidur's H100
# BF16 surface with the h100-sxm profile's FP8 speed-up): not fast, so what a training step adds
# to the GEMMs (docs: "Training-step replay") is not a fast FP8 assumption.
DEEPGEMM_NORMAL = [  # (M, N, K, TFLOP/s)
    (4096, 2112, 7168, 1127),
    (4096, 24576, 1536, 1212),
    (4096, 32768, 512, 775),
    (4096, 7168, 16384, 1520),
    (4096, 4096, 7168, 1410),
    (4096, 7168, 2048, 1168),
]
DEEPGEMM_GROUPED = [  # (groups, M per group, N, K, TFLOP/s), contiguous layout
    (4, 8192, 4096, 7168, 1346),
    (4, 8192, 7168, 2048, 1214),
    (8, 4096, 4096, 7168, 1346),
    (8, 4096, 7168, 2048, 1214),
]


def _h800_fp8() -> object:
    from netsim.config.scenario import load_scenario
    from netsim.run import build_compute_model
    from netsim.topology import load_topology

    # DeepGEMM's timings are short microbenchmarks, like the tables (the boost clock): the tables
    # as measured, not at the SM clock of a training step (netsim.calibration.profiles, "SM clock")
    graph = load_topology("h800", nodes=1, overrides=["accelerator.compute.clock_mhz=1980"])
    scenario = load_scenario({"name": "dg", "topology": "h800", "nodes": 1, "workload": "deepseek-v3"}, source="t")
    return build_compute_model(graph, scenario, "fp8")


def test_h800_fp8_gemms_against_deepgemms_published_timings() -> None:
    model = _h800_fp8()

    def error(groups: int, m: int, n: int, k: int, tflops: float) -> float:
        t = groups * model.time("gemm", "fwd", dtype="fp8", m=m, n=n, k=k)  # type: ignore[attr-defined]
        return t / (2.0 * groups * m * n * k / (tflops * 1e12)) - 1.0  # time: + = netsim slower

    normal = sorted(error(1, m, n, k, tf) for m, n, k, tf in DEEPGEMM_NORMAL)
    grouped = [error(g, m, n, k, tf) for g, m, n, k, tf in DEEPGEMM_GROUPED]
    # 2026-12-05: -21.7% (K = 512, which DeepGEMM runs at 775 TFLOP/s) to +19.3%, median -1.8%;
    # the grouped GEMMs -5.8% to +9.2%
    assert all(abs(e) < 0.25 for e in normal), normal
    assert abs(normal[2] + normal[3]) / 2 < 0.05  # the median: neither fast nor slow
    assert all(abs(e) < 0.10 for e in grouped), grouped
