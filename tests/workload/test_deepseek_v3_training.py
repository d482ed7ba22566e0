"""DeepSeek-V3's training mechanisms in the plan (arXiv 2412.19437): multi-token prediction
(section 2.2, ``model.mtp_depth``), the recomputation of RMSNorm and the MLA up-projections
(section 3.2.3, ``training.recompute: norms-mla-up``) and the BF16 output head of its FP8 recipe
(section 3.3.1)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from netsim.config.workload import load_workload
from netsim.workload.costs import ModelCosts
from netsim.workload.graph import StepPlan
from netsim.workload.kernel_calls import KernelCall
from netsim.workload.recompute import RECOMPUTE

from .plans import MLA_MOE, ShapeCompute, plan_digest, small_plan

MODEL: dict[str, Any] = {
    "layers": 4,
    "hidden": 256,
    "ffn_hidden": 512,
    "heads": 4,
    "vocab": 1000,
    "seq_len": 128,
    **MLA_MOE,
}

#: sha256 of the plans below (ops, collectives, memory) built at 26c2384, before the MTP module,
#: the norms-mla-up recomputation and the 16-bit head existed: with those off (bf16) they must
#: not move (the memory part re-pinned on 2026-12-05, when the fp32 main gradients left the
#: activations' peak and the summary gained main_grads_bytes; the ops' digests did not move; the
#: ops re-pinned on 2026-12-05 when the head gained the loss kernel: with it taken out of the
#: head, the plans gave the old digests; the memory part re-pinned on 2026-12-07, when the summary
#: gained weight_copies_bytes: without that key the plans gave the old digests)
BEFORE = {
    ("1f1b", ""): "d03ad072897f2c04ee9314626026223c9bbe1bb0e779db450ef0d9550cf59050",
    ("1f1b", "training.recompute=selective"): "7b2cf6b42d808772c78690735e867a7e3789ac8d35f940a75474f7b5b42b31d0",
    ("dualpipe", ""): "1918bc2a2118bfe8e53d2b3dc70b78a0cf26294babc68367703d17042e94d758",
    ("dualpipe", "training.recompute=selective"): "da296fa63ff30f8435b4ad19bcd328efd6f5a26f6e2ea7e422a269d2239bf748",
}


def _plan(schedule: str, *sets: str) -> StepPlan:
    return small_plan(MODEL, {"pp": 2, "tp": 1, "ep": 8, "zero_stage": 1}, schedule, *sets)


def _digest(plan: StepPlan) -> str:
    return plan_digest(plan, memory=True)


@pytest.mark.parametrize(("schedule", "sets"), sorted(BEFORE))
def test_defaults_reproduce_the_plans_from_before(schedule: str, sets: str) -> None:
    assert _digest(_plan(schedule, sets, "model.mtp_depth=0")) == BEFORE[(schedule, sets)]


def test_mtp_module_runs_on_the_last_block_with_its_own_expert_all_to_alls() -> None:
    base, mtp = _plan("1f1b"), _plan("1f1b", "model.mtp_depth=1")
    assert mtp.layers_of_block == [[0, 1], [2, 3, 4]]  # layer 4: the MTP block, after the last layer
    m = mtp.schedule.m
    last_stage = {r for r in range(mtp.layout.world) if mtp.layout.coords(r)[0] == 1}
    n0, n1 = Counter(o.name for o in base.ops), Counter(o.name for o in mtp.ops)
    for name in ("F.mtp-in", "F.mtp-head", "BW.mtp-head", "BW.mtp-in"):
        ops = [o for o in mtp.ops if o.name == name]
        assert {o.rank for o in ops} == last_stage and len(ops) == m * len(last_stage), name
        assert all(o.layer == 4 and o.duration_s > 0 for o in ops)
    # one more MoE layer on the last stage: its router, experts and four all-to-alls
    for name in ("F.router", "F.experts", "BW.experts", "ep.fwd-dispatch", "ep.bwd-combine"):
        assert n1[name] - n0[name] == m * len(last_stage), name
    assert sum(mtp.ep_bytes.values()) == pytest.approx(sum(base.ep_bytes.values()) * 4 / 3, rel=0.05)
    # the head's backward waits for the MTP head's; the MTP input projection's backward ends the block
    by_id = {o.id: o for o in mtp.ops}
    for o in mtp.ops:
        if o.name == "BW.mtp-in":
            assert by_id[o.deps[0]].name == "BW.attn" and by_id[o.deps[0]].layer == 4
    # parameters and memory: the last stage grows by the block, the projection and an embedding copy
    stages0, stages1 = base.memory.summary()["per_stage_bytes"], mtp.memory.summary()["per_stage_bytes"]
    assert stages1[0] == stages0[0] and stages1[1] > stages0[1]


def test_dualpipe_keeps_the_mtp_module_with_the_embedding() -> None:
    """DualPipe puts the first and the last block on the same rank (section 3.2.3): no embedding copy."""
    plan = _plan("dualpipe", "model.mtp_depth=1")
    c = ModelCosts(plan.spec.model, 1, 1, expert_slots_per_rank=2)
    base = _plan("dualpipe")
    grown = plan.memory.peak.params - base.memory.peak.params
    mtp = c.layer_params(4)
    per_param = base.memory.peak.params / (
        sum(ModelCosts(base.spec.model, 1, 1, expert_slots_per_rank=2).layer_params(x).dense for x in range(4))
        + sum(ModelCosts(base.spec.model, 1, 1, expert_slots_per_rank=2).layer_params(x).expert for x in range(4))
        + c.embedding_params()
        + c.head_params()
    )
    assert grown == pytest.approx(per_param * (mtp.dense + mtp.expert), rel=1e-9)


def test_norms_mla_up_recomputes_in_the_backward_and_stores_less() -> None:
    mode = RECOMPUTE.get("norms-mla-up")
    assert mode.norms and mode.mla_up
    none, rc = _plan("1f1b"), _plan("1f1b", "training.recompute=norms-mla-up")
    assert [o.name for o in none.ops] == [o.name for o in rc.ops]  # no new ops, no communication
    assert none.collectives.keys() == rc.collectives.keys()
    costs = ModelCosts(rc.spec.model, 1, 1)
    comp = ShapeCompute()
    attn_extra = sum(k.time_s(comp, "bf16") for k in costs.recompute_norms_mla(False))
    ffn_extra = sum(k.time_s(comp, "bf16") for k in costs.recompute_norms_mla(True))
    assert [k.kernel for k in costs.recompute_norms_mla(False)] == ["rmsnorm", "gemm", "gemm"]
    for a, b in zip(none.ops, rc.ops, strict=True):
        extra = {"BW.attn": attn_extra, "BW.router": ffn_extra, "BW.mlp": ffn_extra}.get(a.name, 0.0)
        assert b.duration_s == pytest.approx(a.duration_s + extra, rel=1e-12), a.name
    assert rc.memory.peak.activations < none.memory.peak.activations


def test_fp8_keeps_the_output_head_in_16_bits() -> None:
    seen: list[tuple[str, str | None]] = []

    class Recorder:
        def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
            seen.append((kernel, dtype))
            return 1.0

    spec = load_workload({"model": {**MODEL, "dtype": "fp8"}}, [], source="t")
    costs = ModelCosts(spec.model, 1, 1)
    for part in ("F", "B", "W"):
        seen.clear()
        for call in costs.head(part):
            call.time_s(Recorder(), "fp8")
        assert ("gemm", "bf16") in seen and ("gemm", "fp8") not in seen
        seen.clear()
        for call in costs.attention(part):  # the linear layers' GEMMs stay FP8
            call.time_s(Recorder(), "fp8")
        assert all(d == "fp8" for k, d in seen if k == "gemm") and seen
    # a 16-bit model is unchanged; the split backward keeps the flag
    assert KernelCall("gemm", "fwd", (("k", 1.0),), no_fp8=True).time_s(Recorder(), "fp32") == 1.0
    assert seen[-1] == ("gemm", "fp32")
    assert all(c.no_fp8 for c in costs.head("B") if c.kernel == "gemm")


def test_deepseek_v3_mtp_module_has_the_published_parameter_count() -> None:
    """README_WEIGHTS.md of deepseek-ai/DeepSeek-V3: the MTP module is layer 61, 11.5B unique
    parameters (an MoE block with its 256 experts, enorm/hnorm, eh_proj; embedding and head shared)."""
    m = load_workload("deepseek-v3").model
    assert m.mtp_layers() == [61] and m.is_moe_layer(61)
    p = ModelCosts(m, 1, 1, expert_slots_per_rank=256).layer_params(61)
    assert p.dense + p.expert == pytest.approx(11.5e9, rel=0.01)
