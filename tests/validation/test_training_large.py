"""The training cases too large for CI (``-m slow``): each within its tolerance.

``netsim validate --kind training`` without ``--quick`` runs them; this test runs the ones that
have been run to the end (reports/validation/, with the CPU time each took on one core of the
2-core development machine) and were within their tolerance (10%) when last run.  The cases not
listed are outside it; docs/sections/run.md ("Validation: published training runs") lists them
with their errors and says why, and what each case costs to run.
"""

from __future__ import annotations

import pytest

from netsim.validation.runner import run_validation, select_cases
from netsim.validation.sources import load_sources

#: cases run to the end, with the CPU seconds they took (reports/validation/results.csv: wall_s)
LARGE = {
    "narayanan-2021-table1/gpt-18b": 2,
    "narayanan-2021-table1/gpt-39b": 5,
    "narayanan-2021-table1/gpt-76b": 33,
    "narayanan-2021-table1/gpt-145b": 68,
    "narayanan-2021-table1/gpt-310b": 119,
    "narayanan-2021-table1/gpt-530b": 312,
    "narayanan-2021-table1/gpt-1t": 489,
    "korthikanti-2022/gpt-175b": 24,
    "korthikanti-2022/gpt-530b": 136,
    "korthikanti-2022/gpt-1t": 330,
    "korthikanti-2022-abstract/gpt-530b-2240-gpus": 495,
    "korthikanti-2022-abstract/gpt-530b-2240-gpus-full-recompute": 323,
    "megatron-core-mixtral-8x7b/mcore-v0-8-64gpus": 3,
    "megatron-bridge-h100-cards/deepseek-v3-1024gpus": 625,
    "megatron-moe-modelzoo-h100/ep32-pp8-deepep": 137,
    "megatron-moe-modelzoo-h100/long-context-16k": 74,
    "megatron-moe-modelzoo-h100/long-context-32k": 173,
    "megatron-moe-modelzoo-h100/long-context-64k": 473,
    "megatron-moe-modelzoo-h100/long-context-128k": 1304,
    "deepseek-v3/pretrain-2048-gpus-profiled-compute": 149,
    "dgxc-benchmarking-h100/llama31-8b-8gpus-bf16": 4,
    "dgxc-benchmarking-h100/llama31-8b-8gpus-fp8": 3,
    "deepseek-v3/pretrain-2048-gpus": 164,
    "dgxc-benchmarking-h100/llama31-70b-64gpus-bf16": 52,
    "dgxc-benchmarking-h100/llama31-405b-576gpus-bf16": 255,
    "dgxc-benchmarking-h100/llama31-405b-576gpus-fp8": 202,
    "megatron-bridge-h100/llama3-70b-64gpus": 71,
    "megatron-bridge-h100-cards/qwen3-8b-16gpus": 2,
    "megatron-bridge-h100-ep-overlap/qwen3-30b-a3b-bf16": 46,
    "megatron-bridge-h100-sft/llama3-70b-sft-tp4-pp4": 11,
    "megatron-bridge-h100-sft/llama3-70b-sft-tp4-pp8": 17,
    "megatron-bridge-h100-sft/llama3-70b-sft-recompute-mlp": 11,
    "megatron-bridge-h100-sft/llama3-70b-sft-recompute-mlp-core-attn": 10,
    "megatron-bridge-h100-lora/llama3-70b-lora-8gpus": 32,
    "nemo-2407-finetune-h100/llama2-13b-lora-8gpus": 1,
    "nemo-2407-finetune-h100/llama2-70b-lora-8gpus": 16,
    "nemo-2407-finetune-h100/llama2-70b-sft-16gpus": 44,
    "nemo-2407-pretrain-h100/llama2-13b-16gpus": 6,
    "nemo-2407-pretrain-h100/llama2-70b-64gpus": 49,
    "nemo-2407-pretrain-h100/gpt3-175b-128gpus": 117,
    "nemo-2407-pretrain-h100/gpt3-175b-512gpus": 160,
    "nemo-2407-pretrain-h100/nemotron-340b-128gpus": 19,
    "nemo-2407-pretrain-h100/llama3-70b-64gpus": 98,
    "nemo-2407-pretrain-h100/gpt3-20b-64gpus": 18,
    "nemo-2407-pretrain-h100/nemotron-22b-64gpus": 9,
    "nemo-2407-pretrain-h100/llama3-8b-8gpus": 7,
    "nemo-2403-long-sequence-h100/llama2-7b-8k-8gpus": 2,
    "megatron-bridge-h100/llama31-405b-1024gpus": 1904,
    "llama3-405b/pretrain-131k-context": 1435,
}


def test_the_large_cases_are_not_quick() -> None:
    quick = {f"{s.source.id}/{c.id}" for s, c in select_cases(load_sources(), quick=True, kinds=["training"])}
    assert not quick & set(LARGE)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(LARGE))
def test_large_training_case_within_tolerance(case: str) -> None:
    t = run_validation(only=case, kinds=["training"]).table
    t = t[t["metric"] != "peak_memory_gib"]  # a case's peak memory: tests/validation/test_training_memory.py
    assert len(t) == 1
    row = t.iloc[0]
    assert bool(row["asserted"]) and bool(row["passed"]), (
        f"{case}: measured {row['measured']}, predicted {row['predicted']:.4g} ({100 * row['rel_error']:+.1f}%)"
    )
