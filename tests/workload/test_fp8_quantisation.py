"""The FP8 quantisation kernels (netsim.workload.fp8): bytes per recipe against a hand count,
delayed scaling cheaper than current scaling, BF16 plans unchanged, bad recipe names."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.workload.costs import ModelCosts
from netsim.workload.fp8 import BLOCKWISE_QUANT_SLOWDOWN, FP8_RECIPES, quant_bytes, recipe_note
from netsim.workload.graph import StepPlan
from netsim.workload.kernel_calls import KernelCall

from .plans import MLA_MOE, plan_digest, small_plan

T, H, F = 128, 256, 512  # tokens per micro-batch, hidden, FFN width (SwiGLU: up projection 2F wide)
DENSE: dict[str, Any] = {"layers": 4, "hidden": H, "ffn_hidden": F, "heads": 4, "kv_heads": 2, "vocab": 1000}
MOE: dict[str, Any] = {**{k: v for k, v in DENSE.items() if k != "kv_heads"}, **MLA_MOE}


class BytesCompute:
    """A kernel's time = the bytes it moves (the residual kernel: 6 per element in BF16)."""

    name = "bytes"

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        assert kernel == "residual" and dtype == "bf16"
        return 6.0 * shape["tokens"] * shape["hidden"]


def _costs(recipe: str, model: dict[str, Any] | None = None, dtype: str = "fp8") -> ModelCosts:
    spec = load_workload(
        {"model": {**(model or DENSE), "seq_len": T, "dtype": dtype, "fp8_recipe": recipe}}, [], source="t"
    )
    return ModelCosts(spec.model, 1, 1, expert_slots_per_rank=2 if "moe" in (model or DENSE) else 0)


def _quant_bytes(calls: list[KernelCall]) -> float:
    return sum(c.time_s(BytesCompute(), "fp8") for c in calls if c.quant)


@pytest.mark.parametrize("recipe", FP8_RECIPES)
def test_one_mlp_quantises_what_a_hand_count_says(recipe: str) -> None:
    c = _costs(recipe)
    tile = 2 * 4 / 128  # blockwise: an fp32 scale per 128 elements, for each of the two copies
    slow = BLOCKWISE_QUANT_SLOWDOWN  # blockwise bytes count double (the quantisers' measured speed)
    fwd = {
        "current": 4 * T * H + 6 * T * F,
        "delayed": 2 * T * H + 4 * T * F,
        "blockwise": (4 + tile) * slow * T * (H + F),
    }
    # backward: the output gradients of the up projection [T, 2F] and of the down projection [T, H]
    bwd = {"current": 6, "delayed": 4, "blockwise": (4 + tile) * slow}[recipe] * T * (2 * F + H)
    assert _quant_bytes(c.mlp("F")) == pytest.approx(fwd[recipe], rel=1e-12)
    assert _quant_bytes(c.mlp("BW")) == pytest.approx(bwd, rel=1e-12)
    assert _quant_bytes(c.mlp("B")) == _quant_bytes(c.mlp("BW"))  # cast before the input gradient
    assert _quant_bytes(c.mlp("W")) == 0.0
    # the weights, once per step: [H, 2F] + [F, H] per layer's MLP, plus the attention's
    w = {"current": 6, "delayed": 4, "blockwise": (4 + 2 * 4 / 128**2) * slow}[recipe]
    weights = c.fp8_weight_elems(0)
    assert weights == H * (4 + 2 * 2) * 64 + 4 * 64 * H + 3 * H * F  # QKV (4 + 2 x 2 heads of 64), out, MLP
    assert _quant_bytes(c.weight_quant(weights)) == pytest.approx(w * weights, rel=1e-12)
    assert f"{quant_bytes(recipe).grad:g} B per output-gradient element" in recipe_note(recipe)


def test_delayed_scaling_costs_least_and_blockwise_most() -> None:
    for model in (DENSE, MOE):
        totals = {}
        for recipe in FP8_RECIPES:
            c = _costs(recipe, model)
            parts = [c.attention("F"), c.attention("BW"), c.mlp("F"), c.mlp("BW")]
            if "moe" in model:
                parts += [c.experts("F", 256), c.experts("BW", 256), c.moe_post("F"), c.moe_post("BW")]
            totals[recipe] = sum(_quant_bytes(p) for p in parts)
        assert 0 < totals["delayed"] < totals["current"] < totals["blockwise"]


def test_the_head_and_a_bf16_model_quantise_nothing() -> None:
    assert not any(k.quant for k in _costs("current").head("F") + _costs("current").head("BW"))
    c = _costs("current", MOE, dtype="bf16")
    assert c.fp8 is None and c.fp8_weight_elems(1) == 0.0 and c.weight_quant(1e9) == []
    calls = c.attention("F") + c.mlp("BW") + c.experts("F", 64) + c.recompute_norms_mla(False)
    assert not any(k.quant for k in calls)


def _plan(model: dict[str, Any], schedule: str, *sets: str) -> StepPlan:
    moe = "moe" in model
    par = {"pp": 2, "tp": 1 if moe else 2, "ep": 8 if moe else 1, "zero_stage": 1}
    return small_plan({**model, "seq_len": T}, par, schedule, *sets)


def _digest(plan: StepPlan) -> str:
    return plan_digest(plan, memory=True)


#: sha256 of these BF16 plans built at 1468fe9, before the quantisation kernels existed (the memory
#: part re-pinned on 2026-12-05, when the fp32 main gradients left the activations' peak and the
#: summary gained main_grads_bytes; the ops' digests did not move; the ops re-pinned on 2026-12-05
#: when the head gained the loss kernel: with it taken out of the head, the plans gave the old
#: digests; the dense ones re-pinned on 2026-12-06, when a sequence-parallel block's backward
#: gained the all-gather of its input and was cut at its GEMMs, netsim.workload.tp_blocks; the memory
#: part re-pinned on 2026-12-07, when the summary gained weight_copies_bytes: without that key the
#: plans gave the old digests)
BEFORE = {
    ("dense", ""): "134d183688cfc75460dcbe33d9ec91146d5287d914d69e7e7412eded17eb4a8c",
    ("dense", "training.recompute=selective"): "144012abe50f1137a6b3af91c2432fcc5ef853368c056899c4899ceb5bdd4618",
    ("moe", "training.recompute=norms-mla-up"): "55f3fffa9c832b454b6d3508b26c88267be399306ff366a340656ae43900ac0d",
}


@pytest.mark.parametrize(("model", "sets"), sorted(BEFORE))
def test_bf16_plans_are_unchanged(model: str, sets: str) -> None:
    plan = _plan(DENSE, "1f1b", sets) if model == "dense" else _plan(MOE, "dualpipe", "model.mtp_depth=1", sets)
    assert _digest(plan) == BEFORE[(model, sets)]
    # the recipe is ignored for a BF16 model
    if model == "dense" and not sets:
        assert _digest(_plan(DENSE, "1f1b", "model.fp8_recipe=current")) == BEFORE[(model, sets)]


def test_fp8_plan_adds_the_casts_to_the_ops_and_the_optimizer() -> None:
    bf16 = _plan(DENSE, "1f1b", "model.dtype=bf16")
    slow, fast = (
        _plan(DENSE, "1f1b", "model.dtype=fp8", "model.fp8_recipe=current"),
        _plan(DENSE, "1f1b", "model.dtype=fp8", "model.fp8_recipe=delayed"),
    )
    assert [o.name for o in bf16.ops] == [o.name for o in slow.ops] == [o.name for o in fast.ops]
    # the ops that cast: the forward blocks (GEMM inputs), the backward's input-gradient GEMMs
    # (output gradients) and the optimizer (weights); the weight gradients and norms cast nothing
    casts = {"F.mlp", "F.attn", "BW.mlp-post", "BW.attn-post", "BW.mlp-dgrad", "BW.attn-dgrad", "optimizer"}
    assert casts <= {o.name for o in slow.ops}
    for a, b in zip(slow.ops, fast.ops, strict=True):
        if a.name in casts:
            assert a.duration_s > b.duration_s, a.name
        else:
            assert a.duration_s == b.duration_s, a.name


def test_a_bad_recipe_is_a_one_line_error_naming_the_field() -> None:
    with pytest.raises(SpecError) as e:
        load_workload({"model": {**DENSE, "seq_len": T, "dtype": "fp8", "fp8_recipe": "mxfp8"}}, [], source="w.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "model.fp8_recipe" in msg and "current" in msg and "blockwise" in msg


def test_the_recipe_bytes_can_be_overridden() -> None:
    spec = load_workload(
        {
            "model": {
                **DENSE,
                "seq_len": T,
                "dtype": "fp8",
                "fp8_recipe": "delayed",
                "fp8_quant_bytes": {"after_norm": 3},
            }
        },
        [],
        source="t",
    )
    c = ModelCosts(spec.model, 1, 1)
    assert _quant_bytes(c.mlp("F")) == pytest.approx(3 * T * H + 4 * T * F, rel=1e-12)
    assert "3 B per activation element after a norm" in recipe_note("delayed", {"after_norm": 3.0, "grad": None})
    with pytest.raises(SpecError) as e:
        load_workload(
            {"model": {**DENSE, "seq_len": T, "dtype": "fp8", "fp8_quant_bytes": {"input": 3}}}, [], source="w.yaml"
        )
    assert "\n" not in str(e.value) and "model.fp8_quant_bytes" in str(e.value)
