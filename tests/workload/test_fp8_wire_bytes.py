"""What an FP8 model puts on the wire: FP8 GEMMs, BF16 tensors between operators and devices.

Transformer Engine quantises a GEMM input before its sequence-parallel all-gather (1 byte per
element), while the reduce-scatters, the pipeline messages and Megatron-Core's MoE dispatch and
combine carry BF16 (2 bytes); DeepSeek-V3's FP8 dispatch is ``moe.dispatch_bytes_per_element: 1``.
"""

from __future__ import annotations

from typing import Any

import pytest

from netsim.workload.graph import StepPlan
from tests.workload.plans import small_plan

MOE: dict[str, Any] = {
    "layers": 2,
    "hidden": 256,
    "ffn_hidden": 512,
    "heads": 4,
    "vocab": 1024,
    "seq_len": 128,
    "moe": {"experts": 8, "top_k": 2, "every_n": 1},
}
PAR = {"pp": 2, "tp": 2, "ep": 4, "zero_stage": 1, "sequence_parallel": True}


def _bytes(plan: StepPlan) -> dict[str, float]:
    """Bytes per element of the first collective of each kind (tokens x hidden elements)."""
    tokens_tp = 128  # micro-batch 1 x seq 128, gathered over TP
    out: dict[str, float] = {}
    for c in plan.collectives.values():
        if c.traffic_class == "tp" and c.op in ("all_gather", "reduce_scatter"):
            out.setdefault(c.op, c.nbytes / (tokens_tp * 256))
        elif c.traffic_class == "pp":
            out.setdefault("pp", c.nbytes / (tokens_tp // 2 * 256))
        elif c.traffic_class == "ep" and c.matrix is not None and c.phase.endswith("fwd-dispatch"):
            out.setdefault("dispatch", float(c.matrix.sum() + c.local_bytes))
        elif c.traffic_class == "ep" and c.matrix is not None and c.phase.endswith("fwd-combine"):
            out.setdefault("combine", float(c.matrix.sum() + c.local_bytes))
    return out


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_fp8_gathers_gemm_inputs_in_fp8_and_moves_the_rest_in_bf16(dtype: str) -> None:
    b = _bytes(small_plan({**MOE, "dtype": dtype}, PAR, "1f1b"))
    assert b["all_gather"] == (1 if dtype == "fp8" else 2)
    assert b["reduce_scatter"] == 2 and b["pp"] == 2
    assert b["dispatch"] == pytest.approx(b["combine"])  # the same tokens, both in BF16


def test_fp8_dispatch_is_an_explicit_choice() -> None:
    model = {**MOE, "dtype": "fp8", "moe": {**MOE["moe"], "dispatch_bytes_per_element": 1}}
    b = _bytes(small_plan(model, PAR, "1f1b"))
    assert b["dispatch"] == pytest.approx(b["combine"] / 2)
