"""The training cases too large for CI (``-m slow``): each within its tolerance.

``netsim validate --kind training`` without ``--quick`` runs them; this test runs the ones that
have been run to the end (reports/validation/, with the CPU time each took on one core of the
2-core development machine) and asserts each within its tolerance (10%).  The cases not listed
have not been run to the end yet, or (DeepSeek-V3, +12.7%, 5 min of CPU; Llama 3 405B on 8,192
GPUs, +20.9%, 8 min; MegaScale's Megatron-LM baseline of GPT-3 175B, Table 2: +11.8% to +25.1%
on 256 to 12,288 GPUs, 2-10 min each; Megatron-Bridge's DGX-H100 rows: Llama 3 70B +18.8%,
Qwen3-30B-A3B +144.7% (its 25.11 row +309.9%), Qwen3-235B-A22B +44.6%, 0.4-11 min) are outside
their tolerance (docs: "Training-step replay", "Validation: published training runs", which says
why and what they cost).
"""

from __future__ import annotations

import pytest

from netsim.validation.runner import run_validation, select_cases
from netsim.validation.sources import load_sources

#: cases run to the end, with the CPU seconds they took (reports/validation/results.csv: wall_s)
LARGE = {
    "narayanan-2021-table1/gpt-18b": 7,
    "narayanan-2021-table1/gpt-39b": 16,
    "narayanan-2021-table1/gpt-76b": 66,
    "narayanan-2021-table1/gpt-145b": 119,
    "narayanan-2021-table1/gpt-310b": 259,
    "narayanan-2021-table1/gpt-530b": 668,
    "narayanan-2021-table1/gpt-1t": 1132,
    "korthikanti-2022/gpt-175b": 120,
    "korthikanti-2022/gpt-530b": 255,
    "korthikanti-2022/gpt-1t": 549,
    "llama3-405b/pretrain-16k-gpus": 390,
    "megatron-core-mixtral-8x7b/mcore-v0-8-64gpus": 10,
}


def test_the_large_cases_are_not_quick() -> None:
    quick = {f"{s.source.id}/{c.id}" for s, c in select_cases(load_sources(), quick=True, kinds=["training"])}
    assert not quick & set(LARGE)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(LARGE))
def test_large_training_case_within_tolerance(case: str) -> None:
    t = run_validation(only=case, kinds=["training"]).table
    assert len(t) == 1
    row = t.iloc[0]
    assert bool(row["asserted"]) and bool(row["passed"]), (
        f"{case}: measured {row['measured']}, predicted {row['predicted']:.4g} ({100 * row['rel_error']:+.1f}%)"
    )
