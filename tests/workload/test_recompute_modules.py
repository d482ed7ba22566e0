"""Megatron-Core's selective recompute modules (``training.recompute_modules`` with
``training.recompute: selective``): each module drops its tensors from the memory tally and adds
its forward kernels before the backward that needs them (hand-checked against the modes they
compose: ``core_attn`` is ``selective``, ``layernorm`` + ``mla_up_proj`` is ``norms-mla-up``),
and bad input is a one-line error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import SpecError
from netsim.workload.costs import ModelCosts
from netsim.workload.graph import StepPlan
from netsim.workload.memory import ActivationModel
from netsim.workload.recompute import get_recompute

from .plans import MLA_MOE, ShapeCompute, plan_digest, small_plan

MODEL: dict[str, Any] = {"layers": 4, "hidden": 256, "ffn_hidden": 512, "heads": 4, "vocab": 1000, "seq_len": 128}
PAR = {"pp": 2, "tp": 2, "ep": 4, "zero_stage": 1, "sequence_parallel": True}


def _plan(model: dict[str, Any], *sets: str) -> StepPlan:
    par = PAR if "moe" in model else {**PAR, "ep": 1}
    return small_plan(model, par, "1f1b", *sets)


def _modules(*mods: str) -> str:
    return "training.recompute_modules=[" + ",".join(mods) + "]"


def test_modules_compose_the_named_modes() -> None:
    mla = {**MODEL, **MLA_MOE}
    assert plan_digest(_plan(mla, "training.recompute=selective", _modules("core_attn")), memory=True) == plan_digest(
        _plan(mla, "training.recompute=selective"), memory=True
    )
    norms = _plan(mla, "training.recompute=norms-mla-up")
    mods = _plan(mla, "training.recompute=selective", _modules("layernorm", "mla_up_proj"))
    assert plan_digest(mods) == plan_digest(norms)
    assert mods.memory is not None and norms.memory is not None
    assert [m.activations for m in mods.memory.ranks] == [m.activations for m in norms.memory.ranks]
    assert mods.memory.recompute == "norms-mla-up"  # a set of modules that is a named mode
    other = _plan(mla, "training.recompute=selective", _modules("moe_act", "core_attn"))
    assert other.memory is not None and other.memory.recompute == "selective (core_attn, moe_act)"


def test_moe_act_recomputes_the_experts_activation_and_stores_less() -> None:
    moe = {**MODEL, **MLA_MOE}
    none, act = _plan(moe), _plan(moe, "training.recompute=selective", _modules("moe_act"))
    assert [o.name for o in none.ops] == [o.name for o in act.ops]  # inside the experts' backward
    comp = ShapeCompute()
    costs = ModelCosts(act.spec.model, 1, 2, expert_slots_per_rank=4)
    for a, b in zip(none.ops, act.ops, strict=True):
        if a.name.endswith(".experts") and a.name.startswith("BW"):
            assert b.duration_s > a.duration_s
        elif a.kind == "compute":
            assert b.duration_s == pytest.approx(a.duration_s, rel=1e-12), a.name
    # one activation forward on the rows the experts received (the model default: SwiGLU)
    rows = 64
    assert [k.kernel for k in costs.expert_act(rows)] == ["swiglu"]
    extra = sum(k.time_s(comp, "bf16") for k in costs.expert_act(rows))
    assert sum(k.time_s(comp, "bf16") for k in costs.experts_after_act("BW", rows)) == pytest.approx(
        extra + sum(k.time_s(comp, "bf16") for k in costs.experts("BW", rows))
    )
    # memory: per token-slot the second GEMM's input (f, 2 bytes) is gone, per MoE layer
    spec = act.spec
    slots = spec.model.moe.top_k * 64  # route tokens: 128 / TP 2 with sequence parallelism
    full = ActivationModel(spec, 2, 64, get_recompute("none")).moe()
    less = ActivationModel(spec, 2, 64, get_recompute("selective", ["moe_act"])).moe()
    assert full - less == pytest.approx(slots * 2 * 128)  # expert_ffn_hidden 128


def test_mlp_recomputes_a_dense_block_with_its_tp_collectives() -> None:
    none, mlp = _plan(MODEL), _plan(MODEL, "training.recompute=selective", _modules("mlp"))
    r = [o for o in mlp.ops if o.name == "R.mlp"]
    assert len(r) == 4 * 4 * mlp.layout.dp * mlp.layout.tp  # every dense layer, micro-batch, rank
    phases = {c.phase for c in mlp.collectives.values()} - {c.phase for c in none.collectives.values()}
    assert phases == {"rcp-fwd-mlp-ag", "rcp-fwd-mlp-rs"}
    by_id = {o.id: o for o in mlp.ops}
    for o in mlp.ops:
        if o.name == "BW.mlp":  # after the recomputed block (and the backward's own all-gather)
            seen, todo = set(), list(o.deps)
            while todo:
                d = by_id[todo.pop()]
                if d.id in seen or d.rank != o.rank or d.layer != o.layer:
                    continue
                seen.add(d.id)
                todo += d.deps
            assert any(by_id[d].name == "R.mlp" for d in seen)
    # memory: the block keeps its input only (the sequence-parallel shard), 2 bytes an element
    spec = mlp.spec
    act = ActivationModel(spec, 2, 64, get_recompute("selective", ["mlp"]))
    assert act.mlp() == pytest.approx(2 * 128 * 256 / 2)
    assert act.mlp_stored() > act.mlp()
    assert mlp.memory is not None and none.memory is not None
    assert mlp.memory.peak.activations < none.memory.peak.activations


def test_moe_recomputes_the_moe_block_with_its_all_to_alls() -> None:
    moe = {**MODEL, **MLA_MOE}
    none, rc = _plan(moe), _plan(moe, "training.recompute=selective", _modules("moe"))
    new = {c.phase for c in rc.collectives.values()} - {c.phase for c in none.collectives.values()}
    assert new == {"rcp-fwd-dispatch", "rcp-fwd-combine"}  # the MoE layers' all-to-alls again
    names = {o.name for o in rc.ops if o.kind == "compute"} - {o.name for o in none.ops}
    assert names == {"R.router", "R.experts", "R.unpermute"}
    # every MoE layer (3 of 4; the first is dense) and micro-batch, on the ranks of its stage
    assert sum(o.name == "R.router" for o in rc.ops) == 3 * 4 * rc.layout.world // rc.layout.pp
    spec = rc.spec
    act = ActivationModel(spec, 2, 64, get_recompute("selective", ["moe"]))
    assert act.moe() == pytest.approx(act._replicated()) and act.moe_stored() > act.moe()
    assert rc.memory is not None and none.memory is not None
    assert rc.memory.peak.activations < none.memory.peak.activations


def test_shared_experts_recomputes_their_forward_and_stores_less() -> None:
    moe = {**MODEL, **MLA_MOE}
    none, rc = _plan(moe), _plan(moe, "training.recompute=selective", _modules("shared_experts"))
    assert {o.name for o in rc.ops} - {o.name for o in none.ops} == {"R.shared"}
    spec = rc.spec
    full = ActivationModel(spec, 2, 64, get_recompute("none")).moe()
    less = ActivationModel(spec, 2, 64, get_recompute("selective", ["shared_experts"])).moe()
    # the shared expert's interior per token: its fc1 output (2 x 128, 2 bytes) and fc2 input (128)
    assert full - less == pytest.approx(64 * (2 * 2 * 128 + 2 * 128))
    dense = _plan(MODEL, "training.recompute=selective", _modules("shared_experts"))  # no shared experts
    assert not any(o.name == "R.shared" for o in dense.ops)


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (("training.recompute=none", _modules("moe_act")), "needs training.recompute selective (got none)"),
        (
            ("training.recompute=selective", _modules("attn")),
            "unknown module 'attn'; allowed: core_attn, layernorm, mla_up_proj, moe_act, mlp, moe, shared_experts",
        ),
        (("training.recompute=selective", _modules("mla_up_proj")), "mla_up_proj needs multi-latent attention"),
    ],
)
def test_bad_modules_are_one_line_errors(sets: tuple[str, ...], words: str) -> None:
    with pytest.raises(SpecError) as info:
        _plan(MODEL, *sets)
    msg = str(info.value)
    assert "training.recompute_modules" in msg and words in msg and "\n" not in msg


def test_moe_covers_its_activation_and_shared_experts() -> None:
    # the whole block re-run holds both: adding them changes nothing (no double counting)
    moe = {**MODEL, **MLA_MOE}
    alone = _plan(moe, "training.recompute=selective", _modules("moe"))
    all3 = _plan(moe, "training.recompute=selective", _modules("moe", "moe_act", "shared_experts"))
    assert plan_digest(all3) == plan_digest(alone)
    mode = get_recompute("selective", ["moe", "moe_act", "shared_experts"])
    assert mode.moe and not mode.moe_act and not mode.shared_experts
