"""Gradient accumulation without Megatron's fusion (``training.gradient_accumulation_fusion:
false``): every micro-batch's backward adds each trained weight's gradient into its main gradient
with a separate elementwise kernel, 2 + 2 x grad bytes per parameter."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.profiles import profile_compute_model
from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.topology import load_topology
from netsim.workload.costs import ModelCosts
from netsim.workload.graph import build_plan
from netsim.workload.kernel_calls import RESIDUAL_BYTES_PER_ELEMENT, KernelCall
from netsim.workload.optimizer import grad_accumulation_bytes

LLAMA: dict[str, Any] = {
    "layers": 2,
    "hidden": 4096,
    "ffn_hidden": 14336,
    "heads": 32,
    "kv_heads": 8,
    "vocab": 128256,
    "seq_len": 4096,
    "activation": "swiglu",
}


def _adds(calls: list[KernelCall], nbytes: float) -> list[KernelCall]:
    """The gradient-accumulation calls of ``calls``: the residual kernel at ``nbytes`` per element."""
    scale = nbytes / RESIDUAL_BYTES_PER_ELEMENT
    return [c for c in calls if c.kernel == "residual" and c.scale == pytest.approx(scale)]


def _elems(calls: list[KernelCall]) -> float:
    return sum(dict(c.shape)["hidden"] * dict(c.shape)["tokens"] for c in calls)


def test_the_bytes_per_parameter_follow_the_main_gradient_dtype() -> None:
    def spec(*edits: str) -> Any:
        return load_workload({"model": LLAMA}, list(edits), source="t")

    assert grad_accumulation_bytes(spec()) == 0.0  # fused: Megatron's default
    off = "training.gradient_accumulation_fusion=false"
    assert grad_accumulation_bytes(spec(off)) == 10.0  # read bf16, read + write fp32
    assert grad_accumulation_bytes(spec(off, "optimizer.grad_dtype=bf16")) == 6.0


def test_every_trained_weight_is_added_once_per_backward_and_never_in_the_forward() -> None:
    spec = load_workload({"model": LLAMA}, source="t")
    tp = 2
    c = ModelCosts(spec.model, 1, tp, grad_accumulation_bytes=10.0)
    fused = ModelCosts(spec.model, 1, tp)
    layer = [*c.attention("BW"), *c.mlp("BW")]
    adds = _adds(layer, 10.0)
    assert len(adds) == 4  # QKV, output projection, fc1, fc2
    # the layer's GEMM weights on this rank: its parameters less the two norms
    assert _elems(adds) == pytest.approx(c.layer_params(0).dense - 2 * spec.model.hidden)
    # the W part carries them, the B part and the forward do not; fused: none at all
    assert len(_adds([*c.attention("W"), *c.mlp("W")], 10.0)) == 4
    assert not _adds([*c.attention("B"), *c.mlp("B"), *c.attention("F"), *c.mlp("F")], 10.0)
    assert [k for k in layer if k not in adds] == [*fused.attention("BW"), *fused.mlp("BW")]
    # the output head's weight, [V / tp, h]
    assert _elems(_adds(c.head("BW"), 10.0)) == pytest.approx(spec.model.vocab / tp * spec.model.hidden)


def test_the_unfused_attention_core_and_frozen_weights_have_no_main_gradient() -> None:
    spec = load_workload(
        {"model": LLAMA}, ["training.lora.rank=16"], source="t"
    )  # LoRA on all four linear layers by default
    c = ModelCosts(spec.model, 1, 1, flash_attention=False, lora=spec.training.lora, grad_accumulation_bytes=10.0)
    assert not _adds(c.attention_core("BW"), 10.0)
    adds = _adds([*c.attention("BW"), *c.mlp("BW")], 10.0)
    assert len(adds) == 8  # the two adapter GEMMs of each of the four targets, not the frozen bases
    assert _elems(adds) < 0.01 * c.layer_params(0).dense


def test_experts_add_every_local_expert_weight() -> None:
    model = {**LLAMA, "moe": {"experts": 8, "top_k": 2, "expert_ffn_hidden": 1024}}
    spec = load_workload({"model": model}, source="t")
    c = ModelCosts(spec.model, 1, 1, expert_slots_per_rank=4, grad_accumulation_bytes=6.0)
    adds = _adds(c.experts("BW", 4096), 6.0)
    assert _elems(adds) == pytest.approx(c.layer_params(0).expert)


def test_the_step_grows_by_the_adds_of_every_micro_batch() -> None:
    g = load_topology("dgx-h100", nodes=1)
    acc = g.graph["accelerator"]
    model = profile_compute_model(acc, acc["compute"], default_dtype="bf16")
    base = {"model": LLAMA, "parallelism": {"tp": 8, "pp": 1}, "num_microbatches": 3}
    busy = {}
    for fused in ("true", "false"):
        spec = load_workload(base, [f"training.gradient_accumulation_fusion={fused}"], source="t")
        plan = build_plan(spec, g, model)
        busy[fused] = sum(o.duration_s for o in plan.ops if o.rank == 0)
    c = ModelCosts(load_workload(base, source="t").model, 1, 8, grad_accumulation_bytes=10.0)
    per_mb = sum(
        k.time_s(model, "bf16")
        for k in _adds([*c.attention("BW"), *c.mlp("BW")], 10.0) * LLAMA["layers"] + _adds(c.head("BW"), 10.0)
    )
    assert busy["false"] - busy["true"] == pytest.approx(3 * per_mb, rel=1e-9)
    assert per_mb > 0


def test_a_bad_value_names_the_field() -> None:
    with pytest.raises(SpecError, match=r"training\.gradient_accumulation_fusion"):
        load_workload({"model": LLAMA}, ["training.gradient_accumulation_fusion=sometimes"], source="t")
