"""Memory per rank: Korthikanti's activation formulas, Megatron's bytes per parameter, in-flight
micro-batches of the schedules, and the memory check of build_plan (hand-computed values)."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.kernels import KERNELS
from netsim.config.workload import load_workload
from netsim.errors import SpecError, WorkloadError
from netsim.workload.graph import build_plan
from netsim.workload.memory import ActivationModel, _StageParams, _static, fp8_weight_copy_bytes, inflight
from netsim.workload.optimizer import ADAMW_KERNEL_BYTES_PER_PARAM, optimizer_precision
from netsim.workload.recompute import get_recompute
from netsim.workload.schedules import get_schedule

from ..replay.helpers import FixedCompute, chain_topology

# GPT-3 175B (Brown et al. 2020, Table 2.1): s = 2048, h = 12288, a = 96; Korthikanti et al.'s
# tally assumes GeLU, dropout and the unfused attention (scores stored)
S, H, A = 2048, 12288, 96
GPT3: dict[str, Any] = {
    "model": {
        "layers": 96,
        "hidden": H,
        "ffn_hidden": 4 * H,
        "heads": A,
        "vocab": 51200,
        "seq_len": S,
        "dtype": "bf16",
        "activation": "gelu",
    },
    "training": {"flash_attention": False, "dropout": True},
}


def _act(tp: int, sp: bool, mode: str, **training: Any) -> ActivationModel:
    data = dict(GPT3, parallelism={"tp": tp, "sequence_parallel": sp}, training={**GPT3["training"], **training})
    spec = load_workload(data, source="t")
    tokens = S // tp if sp and tp > 1 else S
    return ActivationModel(spec, tp, tokens, get_recompute(mode))


def test_korthikanti_per_layer_without_parallelism() -> None:
    sbh = S * 1 * H
    assert 5 * A * S / H == 80.0  # the attention scores term for GPT-3 175B
    none = _act(1, False, "none").layer(0)
    assert none == sbh * (34 + 5 * A * S / H)
    assert _act(1, False, "selective").layer(0) == 34 * sbh
    assert _act(1, False, "full").layer(0) == 2 * sbh
    # selective recomputation saves 80 / 114 = 70% of GPT-3's activation memory (Korthikanti section 5)
    assert 1 - 34 * sbh / none == pytest.approx(0.70, abs=0.005)


@pytest.mark.parametrize("t", [2, 8])
def test_korthikanti_table_2_with_tensor_and_sequence_parallelism(t: int) -> None:
    sbh = S * H
    scores = 5 * A * S / (H * t)
    assert _act(t, False, "none").layer(0) == pytest.approx(sbh * (10 + 24 / t + scores), rel=1e-12)
    assert _act(t, True, "none").layer(0) == pytest.approx(sbh * (34 / t + scores), rel=1e-12)
    assert _act(t, False, "selective").layer(0) == pytest.approx(sbh * (10 + 24 / t), rel=1e-12)
    assert _act(t, True, "selective").layer(0) == pytest.approx(sbh * 34 / t, rel=1e-12)
    assert _act(t, True, "full").layer(0) == pytest.approx(2 * sbh / t, rel=1e-12)


def test_flash_attention_stores_no_scores_and_swiglu_keeps_three_intermediates() -> None:
    sbh = S * H
    flash = _act(1, False, "none", flash_attention=True).layer(0)
    assert flash == 34 * sbh + 4 * A * S  # fp32 log-sum-exp per row and head instead of 5as^2b
    # no dropout: the two 1-byte sbh masks (after attention, after the MLP) go
    assert _act(1, False, "selective", dropout=False).layer(0) == 32 * sbh
    swiglu = load_workload({**GPT3, "model": {**GPT3["model"], "activation": "swiglu"}}, source="t")
    act = ActivationModel(swiglu, 1, S, get_recompute("selective"))
    assert act.mlp() - _act(1, False, "selective").mlp() == 2 * S * 4 * H  # 3f instead of 2f, 2 bytes


def _fp8(tp: int, **model: Any) -> ActivationModel:
    data = dict(
        GPT3,
        model={**GPT3["model"], "dtype": "fp8", **model},
        parallelism={"tp": tp, "sequence_parallel": tp > 1},
        training={"flash_attention": True, "dropout": False},
    )
    spec = load_workload(data, source="t")
    return ActivationModel(spec, tp, S // tp, get_recompute("none"))


@pytest.mark.parametrize("t", [1, 8])
def test_fp8_keeps_bf16_between_operators_and_fp8_copies_of_the_gemm_inputs(t: int) -> None:
    """Transformer Engine's FP8: the GEMMs save their inputs in FP8 (1 byte), everything else
    between operators stays BF16; the output projection's FP8 input is a second copy of the
    attention output, which the attention core keeps in BF16."""
    sbh = S * H
    fa = 4 * A * S / t  # fp32 softmax statistics
    per_norm = (2 + 1) * sbh / t  # norm input (BF16) and its output as the next GEMM saves it
    attention = per_norm + (2 * (4 * sbh) + sbh) / t + fa  # Q, K, V, output in BF16; projection input in FP8
    mlp = per_norm + (2 * 4 * sbh + 4 * sbh) / t  # GeLU input in BF16, the second GEMM's input in FP8
    act = _fp8(t)
    assert act.layer(0) == pytest.approx(attention + mlp, rel=1e-12)
    # a BF16 run of the same layer: 2 bytes everywhere, one tensor for the attention output
    bf16 = _act(t, t > 1, "none", flash_attention=True, dropout=False).layer(0)
    assert bf16 == pytest.approx(32 * sbh / t + fa, rel=1e-12)
    assert bf16 - act.layer(0) == pytest.approx((2 + 4 - 1) * sbh / t, rel=1e-12)
    # bytes_per_element sets what lies between operators, not the FP8 GEMM inputs
    one = _fp8(t, bytes_per_element=1)
    assert one.layer(0) == pytest.approx((2 + 5 + 2 + 8) * sbh / t + fa, rel=1e-12)
    # full recomputation keeps the layer's input, in BF16
    spec = load_workload(dict(GPT3, model={**GPT3["model"], "dtype": "fp8"}), source="t")
    assert ActivationModel(spec, 1, S, get_recompute("full")).layer(0) == 2 * sbh


@pytest.mark.parametrize("t", [1, 4])
def test_fp8_with_the_core_recomputed_keeps_no_bf16_attention_output(t: int) -> None:
    """Under FP8 the output projection keeps its own FP8 copy of the attention output and the
    core's checkpoint only Q, K and V: with the core recomputed the BF16 output is kept by
    nobody.  In BF16 the projection keeps the output itself, recomputed core or not."""
    sbh = S * H
    data = dict(
        GPT3,
        model={**GPT3["model"], "dtype": "fp8"},
        parallelism={"tp": t, "sequence_parallel": t > 1},
        training={"flash_attention": True, "dropout": False},
    )
    spec = load_workload(data, source="t")
    none = ActivationModel(spec, t, S // t, get_recompute("none")).attention()
    selective = ActivationModel(spec, t, S // t, get_recompute("selective")).attention()
    fa = 4 * A * S / t  # the fp32 softmax statistics the recomputed core does not keep either
    assert none - selective == pytest.approx(2 * sbh / t + fa, rel=1e-12)
    bf16_none = _act(t, t > 1, "none", flash_attention=True, dropout=False).attention()
    bf16_selective = _act(t, t > 1, "selective", flash_attention=True, dropout=False).attention()
    assert bf16_none - bf16_selective == pytest.approx(fa, rel=1e-12)


def test_fp8_weights_keep_a_column_wise_copy_and_16_bit_edges() -> None:
    """FP8 weights (``optimizer.param_dtype: fp8``): 1 byte a layer weight, and 1 more for the
    column-wise copy Megatron-Core makes after each all-gather; the embedding and the output head
    stay 16-bit modules.  16-bit weights carry no copy in the tally."""
    layers, edges = 10.0, 3.0
    sp = _StageParams(layers + edges, 0.0, 1.0, [], trained_dense=13.0, trained_expert=0.0, edges=edges)
    opt = {"param_dtype": "fp8", "grad_dtype": "bf16"}
    spec = load_workload({"model": {**GPT3["model"], "dtype": "fp8"}, "optimizer": opt}, source="t")
    assert fp8_weight_copy_bytes(spec) == 1.0
    params, grads, _, _, copies = _static(optimizer_precision(spec), 1, sp, 4, 4, fp8_weight_copy_bytes(spec))
    assert params == 1 * layers + 2 * edges and copies == 1 * layers and grads == 2 * 13
    bf16 = load_workload({"model": {**GPT3["model"], "dtype": "fp8"}}, source="t")
    assert fp8_weight_copy_bytes(bf16) == 0.0
    params, _, _, _, copies = _static(optimizer_precision(bf16), 1, sp, 4, 4, fp8_weight_copy_bytes(bf16))
    assert params == 2 * (layers + edges) and copies == 0.0
    # ZeRO 3: the copies of the one layer gathered, as its weights
    *_, copies = _static(optimizer_precision(spec), 3, sp, 4, 4, 1.0)
    assert copies == 1.0


def test_fp8_moe_token_slots_keep_the_expert_input_in_fp8_and_its_output_in_bf16() -> None:
    moe = {"experts": 8, "top_k": 2, "expert_ffn_hidden": 1024}
    act = _fp8(1, activation="swiglu", moe=moe)
    slots = 2 * S
    # per slot: input (FP8) and output (BF16, for the combine's weighting), SwiGLU input 2f (BF16),
    # the second GEMM's input f (FP8)
    assert act.moe() - act.mlp() + (2 * 2 + 1) * S * 4 * H == pytest.approx(
        slots * ((1 + 2) * H + (2 * 2 + 1) * 1024), rel=1e-12
    )


def test_megatron_bytes_per_parameter_table() -> None:
    # docs.nvidia.com/megatron-core "Distributed Optimizer": replicated 20 / 18 / 16, distributed
    # 4 + 16/d, 6 + 12/d, 8 + 8/d
    base: dict[str, Any] = {"model": GPT3["model"]}
    d = 8
    for param, grad, replicated, fixed, sharded in (
        ("fp16", "fp16", 20, 4, 16),
        ("bf16", "fp32", 18, 6, 12),
        ("fp32", "fp32", 16, 8, 8),
    ):
        spec = load_workload({**base, "optimizer": {"param_dtype": param, "grad_dtype": grad}}, source="t")
        prec = optimizer_precision(spec)
        assert prec.param + prec.grad + prec.state == replicated
        one = _StageParams(dense=1.0, expert=0.0, biggest=0.0, layers=[], trained_dense=1.0, trained_expert=0.0)
        assert sum(_static(prec, 0, one, d, d)) == replicated
        assert sum(_static(prec, 1, one, d, d)) == pytest.approx(fixed + sharded / d)


def test_adam_step_bytes_follow_the_precision_and_the_catalogue() -> None:
    assert KERNELS["adamw"].nbytes({"params": 1.0}, "step", "fp32") == ADAMW_KERNEL_BYTES_PER_PARAM
    spec = load_workload({"model": GPT3["model"]}, source="t")  # bf16 weights, fp32 gradients
    prec = optimizer_precision(spec)
    # read the fp32 gradient 4, read + write the fp32 master 8 and both moments 16, write bf16 2
    assert prec.step_bytes == 30
    fp32 = optimizer_precision(load_workload({"model": {**GPT3["model"], "dtype": "fp32"}}, source="t"))
    assert fp32.step_bytes == 28  # the catalogue kernel itself
    (call,) = prec.step_calls(1e6)
    assert call.scale == pytest.approx(30 / 28) and dict(call.shape) == {"params": 1e6}


def test_apex_bf16_optimizer_state_with_fp8_weights() -> None:
    # NeMo 1's fine-tuning optimizer (Apex DistributedFusedAdam, dtype bf16, grad_sync_dtype bf16)
    # on FP8 weights (fp8_params): weights 1, gradients 2, state bf16 master 2 + moments 4, no fp32
    # main gradients: 1 + 2 + 6 / d bytes a parameter under the distributed optimizer
    opt = {"param_dtype": "fp8", "grad_dtype": "bf16", "master_dtype": "bf16", "moment_dtype": "bf16"}
    prec = optimizer_precision(load_workload({"model": GPT3["model"], "optimizer": opt}, source="t"))
    assert (prec.param, prec.grad, prec.master, prec.moments, prec.main_grad) == (1, 2, 2, 4, 0)
    one = _StageParams(dense=1.0, expert=0.0, biggest=0.0, layers=[], trained_dense=1.0, trained_expert=0.0)
    assert sum(_static(prec, 1, one, 8, 8)) == pytest.approx(1 + 2 + 6 / 8)
    # the step reads the bf16 gradient 2, reads + writes the bf16 master 4 and moments 8, writes FP8 1
    assert prec.step_bytes == 15
    # fp32 weights are their own master whatever master_dtype says
    fp32 = {**opt, "param_dtype": "fp32", "grad_dtype": "fp32"}
    assert optimizer_precision(load_workload({"model": GPT3["model"], "optimizer": fp32}, source="t")).master == 0


@pytest.mark.parametrize(
    ("name", "pp", "m", "v", "peak"),
    [
        ("1f1b", 4, 8, 1, 4),  # p micro-batches on stage 0
        ("1f1b", 4, 2, 1, 2),  # fewer micro-batches than stages
        ("gpipe", 4, 8, 1, 8),  # all of them
        ("interleaved-1f1b", 4, 8, 2, 11),  # p v (1 + (p-1)/(p v)) = 8 + 3 chunks (Megatron)
        ("dualpipe", 4, 8, 1, 5),  # p + 1 (deepseek-ai/DualPipe README)
        ("dualpipe", 16, 32, 1, 17),
        ("zb-h1", 4, 8, 1, 4),  # the same peak as 1F1B (Qi et al. 2024, section 2.1)
    ],
)
def test_inflight_microbatches_of_each_schedule(name: str, pp: int, m: int, v: int, peak: int) -> None:
    sched = get_schedule(name, pp, m, v)
    chunks = {a.chunk for a in sched.order(0)}
    nbytes, live = inflight(sched, 0, dict.fromkeys(chunks, 1.0))
    assert (nbytes, live) == (peak, peak)
    if name == "zb-h1":  # every stage holds as many micro-batches as stage 0
        assert all(inflight(sched, st, {0: 1.0}) == (peak, peak) for st in range(pp))


def _tiny(**changes: Any) -> Any:
    data: dict[str, Any] = {
        "model": {"layers": 2, "hidden": 1000, "ffn_hidden": 4000, "heads": 8, "vocab": 1000, "seq_len": 1000},
        "parallelism": {"pp": 2, "tp": 1, "dp": 1, "zero_stage": 0},
        "num_microbatches": 2,
        "storage": {"enabled": False},
    }
    data.update(changes)
    return load_workload(data, source="tiny.yaml")


def test_a_config_that_does_not_fit_is_one_line_naming_the_shortfall() -> None:
    graph = chain_topology(2, 1e9)
    graph.graph["accelerator"] = dict(graph.graph["accelerator"], memory_bytes=0.05 * 2**30)
    with pytest.raises(WorkloadError) as err:
        build_plan(_tiny(), graph, FixedCompute(1.0, 2.0))
    line = str(err.value)
    assert "\n" not in line and line.startswith("tiny.yaml: does not fit in accelerator memory: needs ")
    assert "GiB per rank on pp stage 0 (params " in line and "HBM is 0.1 GiB" in line and "--allow-oom" in line
    plan = build_plan(_tiny(), graph, FixedCompute(1.0, 2.0), allow_oom=True)
    assert plan.memory is not None and not plan.memory.fits and plan.ops


def test_memory_report_holds_the_plans_parameters() -> None:
    graph = chain_topology(2, 1e9)
    plan = build_plan(_tiny(), graph, FixedCompute(1.0, 2.0))
    assert plan.memory is not None and plan.memory.fits
    for m, params in zip(plan.memory.ranks, plan.params_per_rank, strict=True):
        assert m.params == pytest.approx(2 * params)  # bf16 weights, ZeRO 0
        assert m.grads == pytest.approx(4 * params) and m.optimizer == pytest.approx(12 * params)
    # stage 0 holds both micro-batches of its block (1F1B warm-up), stage 1 one; the last block adds
    # the head's activations (fp32 logits)
    act = ActivationModel(plan.spec, 1, 1000, get_recompute("none"))
    assert plan.memory.ranks[0].activations == pytest.approx(2 * act.block([0], True, False))
    assert plan.memory.ranks[1].activations == pytest.approx(act.block([1], False, True))


def test_unknown_recompute_mode_is_a_one_line_error() -> None:
    with pytest.raises(
        SpecError,
        match=r"^tiny\.yaml: training\.recompute: unknown recompute mode 'some'; "
        r"allowed: none, selective, full, norms-mla-up$",
    ):
        build_plan(_tiny(training={"recompute": "some"}), chain_topology(2, 1e9), FixedCompute(1.0, 2.0))


@pytest.mark.parametrize(("name", "pp", "m", "v"), [("1f1b", 1, 8, 1), ("interleaved-1f1b", 4, 16, 2)])
def test_combined_1f1b_pairs_fill_one_layer_while_the_backward_drains(name: str, pp: int, m: int, v: int) -> None:
    # Megatron-Core's combined 1F1B: one more warm-up forward, then each forward interleaved with
    # a backward; with chunks of 1.0 and layers of 0.1 the extra forward adds one layer (while the
    # pair's two micro-batches are both partly live), not a chunk
    plain = get_schedule(name, pp, m, v)
    sched = get_schedule(name, pp, m, v, a2a_overlap=True)
    chunks = {a.chunk for a in sched.order(0)}
    base, _ = inflight(plain, 0, dict.fromkeys(chunks, 1.0))
    assert inflight(sched, 0, dict.fromkeys(chunks, 1.0)) == (base + 1, base + 1)  # counted whole
    nbytes, live = inflight(sched, 0, dict.fromkeys(chunks, 1.0), dict.fromkeys(chunks, 0.1))
    assert nbytes == pytest.approx(base + 0.1) and live == base + 1


def test_main_gradients_live_only_during_the_optimizer_step() -> None:
    # bf16 gradients: the distributed optimizer's fp32 main gradients (4 bytes a parameter) are made
    # in the step and freed at the next zero_grad, so they share the peak with the activations
    graph = chain_topology(2, 1e9)
    spec = _tiny(optimizer={"grad_dtype": "bf16"})
    plan = build_plan(spec, graph, FixedCompute(1.0, 2.0))
    assert plan.memory is not None
    for m, params in zip(plan.memory.ranks, plan.params_per_rank, strict=True):
        assert m.grads == pytest.approx(2 * params) and m.optimizer == pytest.approx(12 * params)
        assert m.main_grads == pytest.approx(4 * params)
        assert m.total == pytest.approx(m.params + m.grads + m.optimizer + max(m.activations, m.main_grads))
    # precision-aware (TE FusedAdam reads the bf16 gradient buffer): no main gradients, and the step
    # reads 2 bytes of gradient instead of 2 + copy (write 4, read 4)
    aware = _tiny(optimizer={"grad_dtype": "bf16", "precision_aware": True})
    plan2 = build_plan(aware, graph, FixedCompute(1.0, 2.0))
    assert plan2.memory is not None and all(m.main_grads == 0 for m in plan2.memory.ranks)
    assert optimizer_precision(spec).step_bytes - optimizer_precision(aware).step_bytes == 8
    # when the activations are small, the step's main gradients are the peak
    few = _tiny(optimizer={"grad_dtype": "bf16"}, model={**_tiny().model.model_dump(), "seq_len": 8})
    plan3 = build_plan(few, graph, FixedCompute(1.0, 2.0))
    assert plan3.memory is not None
    r = plan3.memory.ranks[0]
    assert r.main_grads > r.activations and "main grads at the optimizer step" in r.describe()


def test_a_paired_forward_bigger_than_its_backward_adds_the_difference() -> None:
    # stage 0 of pp 2, v 2, 4 micro-batches: F0c0 F1c0 F0c1 F1c1 F2c0, then the pairs
    # (F3c0, B0c1) (F2c1, B1c1) (F3c1, B0c0); chunk 0 holds 1.0, chunk 1 2.0, a layer 0.1
    sched = get_schedule("interleaved-1f1b", 2, 4, 2, a2a_overlap=True)
    sizes, layers = {0: 1.0, 1: 2.0}, {0: 0.1, 1: 0.1}
    # 7 held when the first pair starts: + one layer (its forward's 1.0 is under the 2.0 freed);
    # 6 held at the third: + 0.1 + (2.0 - 1.0) = 7.1 again; counted whole, 7 + 1.0 = 8
    assert inflight(sched, 0, sizes, layers) == (pytest.approx(7.1), 6)
    assert inflight(sched, 0, sizes) == (8.0, 6)
