"""Predicting published training runs: the ``training`` case kind of ``netsim validate``.

A training case (:class:`~netsim.validation.sources.TrainingCase`) is one published run: the
cluster (the source's ``system``: a topology preset, servers, ``--set`` overrides) and the
run's exact configuration (a workload preset or an inline workload, with ``workload_set``
overrides: model dimensions, TP/PP/DP/EP, micro-batch, global batch, recomputation,
precision, schedule).  :func:`predict_training` builds that scenario, simulates one step with
:func:`netsim.run.prepare` / :func:`netsim.run.simulate` (the same code as ``netsim run``) and
turns the simulated step time into the metric the source reports:

* ``step_time_s``: the iteration time;
* ``tokens_per_s_per_gpu``: ``global batch x sequence length / step time / GPUs``;
* ``tflops_per_gpu`` and ``mfu``: FLOPs per step by the source's own convention
  (:data:`FLOP_CONVENTIONS`, the case's ``flops``) over the step time and the GPUs (and, for
  MFU, over the peak the source divides by: ``peak_flops_per_gpu``, else the accelerator's
  dense peak in the model's dtype).

The FLOP conventions are the formulas the sources print, so a predicted TFLOPS is comparable
with theirs whatever the run did (recomputation, padding) -- the simulator's own FLOPs never
enter the metric, only its step time:

* ``megatron-2021``: Narayanan et al. 2021 (arXiv 2104.04473) eq. (3), ``96 B s l h^2 (1 +
  s/6h + V/16lh)``: a dense GPT trained with full activation recomputation (forward, the
  recomputed forward and the backward's two GEMMs per weight: 4 x 24 B s l h^2), attention
  with the full (unmasked) ``s x s`` products, logits ``6 B s h V``;
* ``megatron``: Megatron-LM's ``num_floating_point_operations`` (megatron/training/training.py,
  the TFLOP/s Megatron logs; Korthikanti et al. 2022's model FLOPs): ``12 B s L h^2 [(1 + g/a +
  s/h) q/h + k f/h x 1.5 (SwiGLU) + V/(2 L h)]`` -- GQA (``g`` KV heads of ``a``), routed
  experts (``k`` = top-k, ``f`` the expert FFN) and shared experts added per layer; no
  recomputation; the attention core without the causal mask, as Megatron-LM counted it until
  March 2025;
* ``megatron-2025``: the same function since Megatron-LM commit 8873b55d6a (2025-03-06, "Fixes in
  number of floating-point operation estimates for MoE and attention layer"): the attention core
  counted for the causal mask (``s / 2h`` for ``s / h``); the logits over the vocabulary as the
  case gives it (Megatron pads it to ``make_vocab_size_divisible_by x TP``: give the padded size);
* ``megatron-bridge``: Megatron-Bridge's ``num_floating_point_operations``
  (src/megatron/bridge/training/utils/flop_utils.py ``transformer_flops``, NVIDIA-NeMo/Megatron-Bridge
  at dc7018784b, 2026-04-01: the TFLOP/s its training loop logs): ``megatron`` with the attention core
  counted for the causal mask (``6 q s`` per token and layer, half of ``megatron``'s ``12 q s``) and
  the logits over the vocabulary padded to a multiple of ``128 x TP`` (``make_vocab_size_divisible_by``);
  its sequence is the model's (``seq_length``), whatever the batch's packing;
* ``palm``: Chowdhery et al. 2022 (PaLM, arXiv 2204.02311) appendix B, the convention of "MFU":
  ``6 N + 12 L H Q T`` per token, ``N`` the parameters a token's matmuls touch (transformer
  layers with its routed experts only, and the LM head; the embedding lookup is no matmul),
  ``H x Q`` the attention width and ``T`` the sequence length.

A case whose source also gives the run's peak allocated memory per GPU (``peak_memory_gib``)
yields a second row, metric ``peak_memory_gib``: the memory tally's worst rank
(:mod:`netsim.workload.memory`) against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from netsim.accuracy import REGIME_FIELDS
from netsim.config.common import override_items
from netsim.config.workload import WorkloadSpec
from netsim.errors import SpecError
from netsim.registry import Registry
from netsim.units import format_shares
from netsim.validation.cases import PREDICTORS, Prediction
from netsim.validation.sources import LayerCase, MoELayerCase, Source, TrainingCase

__all__ = ["FLOP_CONVENTIONS", "StepResult", "predict_training", "scenario_of", "step_flops"]

FlopConvention = Callable[[WorkloadSpec, float], float]
#: FLOPs of one step (``(workload, sequences per step) -> FLOPs``) by a source's convention
FLOP_CONVENTIONS: Registry[FlopConvention] = Registry("FLOP convention", field="cases.flops")


def _dense_gpt(spec: WorkloadSpec, what: str) -> tuple[int, int, int, int]:
    """``(layers, hidden, seq, vocab)`` of a dense GPT (the 2021 formula has no GQA/SwiGLU/MoE)."""
    m = spec.model
    if m.moe is not None or m.kv_heads not in (None, m.heads) or m.activation != "gelu" or m.ffn_hidden != 4 * m.hidden:
        raise SpecError(
            f"the {what} FLOP formula is for a dense GPT (GELU, FFN 4 x hidden, no GQA, no experts)",
            field="cases.flops",
        )
    return m.layers, m.hidden, m.seq_len, m.vocab


@FLOP_CONVENTIONS.register("megatron-2021")
def megatron_2021_flops(spec: WorkloadSpec, sequences: float) -> float:
    """Narayanan et al. 2021 eq. (3): ``96 B s l h^2 (1 + s/6h + V/16lh)`` (with recomputation)."""
    n_layers, h, s, v = _dense_gpt(spec, "megatron-2021")
    return 96.0 * sequences * s * n_layers * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * n_layers * h))


@FLOP_CONVENTIONS.register("megatron")
def megatron_flops(spec: WorkloadSpec, sequences: float) -> float:
    """Megatron-LM's ``num_floating_point_operations`` (model FLOPs), per layer (module doc)."""
    m = spec.model
    h, s = float(m.hidden), float(m.seq_len)
    q = float(m.heads * m.dim_per_head)
    glu = 1.5 if m.activation == "swiglu" else 1.0
    attn = (1.0 + m.num_kv_heads / m.heads + s / h) * q / h
    total = 0.0
    for layer in range(m.layers):
        if m.moe is not None and m.is_moe_layer(layer):
            f = float(m.moe.expert_ffn_hidden or m.ffn_hidden)
            mlp = f / h * (m.moe.top_k + m.moe.shared_experts) * glu
        else:
            mlp = m.ffn_hidden / h * glu
        total += attn + mlp
    total += m.vocab / (2.0 * h)
    return 12.0 * sequences * s * h * h * total


def _causal_megatron_flops(spec: WorkloadSpec, sequences: float, what: str) -> float:
    """Megatron's count with the attention core halved for the causal mask (GQA/MHA only)."""
    m = spec.model
    if m.mla is not None:
        raise SpecError(f"the {what} FLOP formula is implemented for GQA/MHA attention (not MLA)", field="cases.flops")
    causal_half = 6.0 * m.heads * m.dim_per_head * m.seq_len * m.layers * sequences * m.seq_len
    return megatron_flops(spec, sequences) - causal_half


@FLOP_CONVENTIONS.register("megatron-2025")
def megatron_2025_flops(spec: WorkloadSpec, sequences: float) -> float:
    """Megatron-LM's ``num_floating_point_operations`` since March 2025 (module doc): ``megatron``
    with the attention core counted for the causal mask."""
    return _causal_megatron_flops(spec, sequences, "megatron-2025")


@FLOP_CONVENTIONS.register("megatron-bridge")
def megatron_bridge_flops(spec: WorkloadSpec, sequences: float) -> float:
    """Megatron-Bridge's ``num_floating_point_operations`` for GQA/MHA models (module doc): Megatron's
    count with the attention core halved for the causal mask and the logits over the padded vocabulary."""
    m = spec.model
    tokens = sequences * m.seq_len
    multiple = _BRIDGE_VOCAB_MULTIPLE * spec.parallelism.tp
    padded = -(-m.vocab // multiple) * multiple
    return _causal_megatron_flops(spec, sequences, "megatron-bridge") + 6.0 * m.hidden * (padded - m.vocab) * tokens


#: Megatron-Bridge pads the vocabulary to a multiple of this times TP (``make_vocab_size_divisible_by``)
_BRIDGE_VOCAB_MULTIPLE = 128


def _matmul_params_per_token(spec: WorkloadSpec) -> float:
    """Weights a token's matmuls touch: attention and (active) MLP of every layer, LM head."""
    m = spec.model
    h = float(m.hidden)
    q = float(m.heads * m.dim_per_head)
    kv = float(m.num_kv_heads * m.dim_per_head)
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        attn = (
            h * a.q_lora_rank
            + a.q_lora_rank * m.heads * qk
            + h * (a.kv_lora_rank + a.qk_rope_head_dim)
            + a.kv_lora_rank * m.heads * (a.qk_nope_head_dim + a.v_head_dim)
            + m.heads * a.v_head_dim * h
        )
    else:
        attn = h * q + 2.0 * h * kv + q * h
    glu = 3.0 if m.activation == "swiglu" else 2.0
    total = 0.0
    for layer in range(m.layers):
        if m.moe is not None and m.is_moe_layer(layer):
            f = float(m.moe.expert_ffn_hidden or m.ffn_hidden)
            total += attn + glu * h * f * (m.moe.top_k + m.moe.shared_experts) + h * m.moe.experts
        else:
            total += attn + glu * h * m.ffn_hidden
    return total + h * m.vocab


@FLOP_CONVENTIONS.register("palm")
def palm_flops(spec: WorkloadSpec, sequences: float) -> float:
    """PaLM's MFU convention: ``6 N + 12 L H Q T`` FLOPs per token (module doc)."""
    m = spec.model
    width = float(m.heads * (m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim if m.mla else m.dim_per_head))
    per_token = 6.0 * _matmul_params_per_token(spec) + 12.0 * m.layers * width * m.seq_len
    return per_token * sequences * m.seq_len


def step_flops(case: TrainingCase, spec: WorkloadSpec, sequences: float) -> float:
    """FLOPs of one step by the case's convention."""
    if case.flops is None:
        raise SpecError(
            f"metric {case.metric} needs a FLOP convention; allowed: {', '.join(FLOP_CONVENTIONS.names())}",
            field=f"cases.{case.id}.flops",
        )
    return FLOP_CONVENTIONS.get(case.flops)(spec, sequences)


def workload_overrides(workload_set: dict[str, Any]) -> list[str]:
    """A case's ``workload_set`` as ``--set``-style ``key=value`` overrides."""
    return override_items(workload_set)


def scenario_of(src: Source, case: TrainingCase | LayerCase | MoELayerCase, cost_model: str | None = None) -> Any:
    """The :class:`~netsim.config.scenario.ScenarioSpec` of a training case (one step), of a
    moe-layer case (one step, its options) or of a layer case (the source's system, the case's
    workload, default options)."""
    from netsim.config.scenario import load_scenario

    options = dict(getattr(case, "options", {}))  # a layer case has none (nor nodes, nor a seed)
    data: dict[str, Any] = {
        "name": f"{src.source.id}-{case.id}",
        "topology": src.system.topology,
        "nodes": getattr(case, "nodes", None) or src.system.nodes,
        "topology_overrides": src.system.overrides(),
        "workload": case.workload,
        "workload_overrides": workload_overrides(case.workload_set),
        "seed": getattr(case, "seed", 0),
        "steps": 1,
        "options": options,
    }
    if cost_model is not None:
        data["options"]["collective_cost"] = cost_model
    return load_scenario(data, source=f"validation {src.source.id}/{case.id}")


@dataclass(frozen=True)
class StepResult:
    """One simulated step of a training case and what it says."""

    step_time_s: float
    gpus: int
    sequences: float
    tokens: float
    flops: float | None
    peak_flops: float
    shares: dict[str, float]
    exposed: dict[str, float]
    wall_s: float
    #: the memory tally's worst rank (bytes; None: no report)
    peak_memory_bytes: float | None = None
    #: the busiest rank's kernel time by kernel class, as shares (netsim.workload.kernel_tally)
    kernel_shares: dict[str, float] | None = None
    #: the run's regime (netsim.accuracy): accelerator name, compute dtype, model kind
    regime: tuple[str, str, str] = ("", "", "")


def simulate_case(src: Source, case: TrainingCase, cost_model: str | None = None) -> StepResult:
    """Build and simulate the case's scenario (one step); raises on a layout that does not match
    the source's GPU count."""
    from netsim.run import prepare, simulate, summarize_replay

    t0 = time.perf_counter()
    prep = prepare(scenario_of(src, case, cost_model))
    layout, schedule = prep.plan.layout, prep.plan.schedule
    assert layout is not None and schedule is not None, "a workload plan always has a layout and a schedule"
    gpus = (case.nodes or src.system.nodes) * (case.gpus_per_node or src.system.gpus_per_node)
    if layout.world != gpus:
        raise SpecError(
            f"the workload's layout has {layout.world} ranks (DP{layout.dp} PP{layout.pp} TP{layout.tp}) "
            f"but the system has {gpus} GPUs",
            field=f"cases.{case.id}.workload",
        )
    res, net = simulate(prep)
    summary, _tables = summarize_replay(prep, res, net)
    step = float(summary["step_time_s"])
    spec = prep.workload
    sequences = float(layout.dp * spec.micro_batch_size * schedule.m)
    flops = step_flops(case, spec, sequences) if case.flops is not None else None
    acc = dict(prep.graph.graph.get("accelerator") or {})
    peak = case.peak_flops_per_gpu or float((acc.get("peak_flops") or {}).get(spec.model.dtype, 0.0))
    shares = {k: float(v) / step for k, v in summary["breakdown_s"].items()} if step > 0 else {}
    exposed = {k: float(v) / step for k, v in summary["exposed_comm_s_by_class"].items() if v > 0} if step > 0 else {}
    memory = prep.plan.memory.peak.total if prep.plan.memory is not None else None
    kern = summary.get("compute_kernels")
    kernel_shares = (
        {k: float(v) / kern["kernel_time_s"] for k, v in kern["by_class_s"].items()}
        if kern and kern["kernel_time_s"] > 0
        else None
    )
    return StepResult(
        step,
        gpus,
        sequences,
        sequences * spec.model.seq_len,
        flops,
        peak,
        shares,
        exposed,
        time.perf_counter() - t0,
        memory,
        kernel_shares,
        _regime(summary["validation_accuracy"]),
    )


def _regime(accuracy: dict[str, Any]) -> tuple[str, str, str]:
    """A run's regime as its summary's ``validation_accuracy`` names it (netsim run's own line)."""
    acc, dtype, kind = (str(accuracy[k]) for k in REGIME_FIELDS)
    return acc, dtype, kind


def metric_value(case: TrainingCase, r: StepResult) -> float:
    """The case's metric from a simulated step (module doc)."""
    if case.metric == "step_time_s":
        return r.step_time_s
    if case.metric == "tokens_per_s_per_gpu":
        return r.tokens / r.step_time_s / r.gpus
    if r.flops is None:
        raise SpecError(f"metric {case.metric} needs a FLOP convention", field=f"cases.{case.id}.flops")
    per_gpu = r.flops / r.step_time_s / r.gpus
    if case.metric == "tflops_per_gpu":
        return per_gpu / 1e12
    if r.peak_flops <= 0:
        raise SpecError(
            "mfu needs peak_flops_per_gpu (the topology has no peak for the model's dtype)",
            field=f"cases.{case.id}.peak_flops_per_gpu",
        )
    return per_gpu / r.peak_flops


@PREDICTORS.register("training")
def predict_training(src: Source, case: TrainingCase, cost_model: str | None = None) -> Iterator[Prediction]:
    """One prediction: the case's metric for one simulated step of the published configuration."""
    r = simulate_case(src, case, cost_model)
    predicted = metric_value(case, r)
    yield Prediction(
        metric=case.metric,
        size_bytes=None,
        measured=case.measured,
        predicted=predicted,
        lower_is_better=case.metric == "step_time_s",
        detail={
            "step_time_s": r.step_time_s,
            "gpus": r.gpus,
            "flops": case.flops or "",
            "compute_share": r.shares.get("compute", 0.0),
            "communication_share": r.shares.get("communication", 0.0),
            "overlap_share": r.shares.get("overlap", 0.0),
            "idle_share": r.shares.get("idle", 0.0),
            "wall_s": r.wall_s,
            "exposed_by_class": ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(r.exposed.items())),
            "kernel_classes": format_shares(r.kernel_shares) if r.kernel_shares else "",
            **dict(zip(REGIME_FIELDS, r.regime, strict=True)),
        },
    )
    if case.peak_memory_gib is not None and r.peak_memory_bytes is not None:
        yield Prediction(
            metric="peak_memory_gib",
            size_bytes=None,
            measured=case.peak_memory_gib,
            predicted=r.peak_memory_bytes / 2**30,
            detail={"gpus": r.gpus, "step_time_s": r.step_time_s},
        )
