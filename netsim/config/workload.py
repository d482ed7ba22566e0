"""Workload specification: the model, how it is parallelised, and what a training step does.

A workload is a YAML mapping validated once, at the boundary, into a :class:`WorkloadSpec`
(pydantic v2).  Presets live in ``netsim/data/workloads/`` (``workloads/`` at the repository
root is a link to it); :func:`load_workload` takes a preset name, a YAML path or an inline
mapping, applies ``key=value`` overrides and turns every problem into one
:class:`~netsim.errors.SpecError` line that names the file, the field and what is allowed.

Sizes in the YAML may carry units (``grad_bucket_bytes: 40MB``); inside they are floats in
bytes.  The spec does no I/O and knows nothing of the cluster: checks that need the number of
devices (``dp * cp * pp * tp`` ranks, EP dividing the ranks of a stage, ...) live in
:func:`netsim.workload.layout.build_layout`, which raises :class:`~netsim.errors.WorkloadError`
naming the same fields.

Field meanings (the units are in the names where they are not counts):

* ``model``: transformer dimensions (:mod:`netsim.config.model`).  ``kv_heads`` gives
  grouped-query attention; ``mla`` gives DeepSeek multi-head latent attention.  ``moe`` says
  which layers are mixture-of-experts and how (``every_n`` counted from ``first_dense``, or an
  explicit ``layers`` list).
* ``parallelism``: ``dp`` (``auto`` = whatever the devices leave), ``pp``, ``tp``, ``cp``
  (context parallelism: :mod:`netsim.workload.context_parallel`) and ``ep``.  Ranks are
  ``dp * cp * pp * tp``; the EP group is carved out of the ``dp * cp * tp`` ranks of a pipeline
  stage as the framework named by ``expert_layout`` does (:mod:`netsim.workload.expert_layout`:
  Megatron's parallel folding, DeepSpeed, MindSpore), with ``expert_tp`` ranks per expert and,
  for layouts whose TP ranks hold the same tokens, ``expert_alltoall`` (replicated or LocMoE's
  group-wise all-to-all).  ``pipeline_scatter_gather`` (``auto``, ``true``, ``false``):
  Megatron's scatter/gather of pipeline messages without sequence parallelism (each TP rank
  sends ``1 / tp``, the receiver all-gathers; :mod:`netsim.workload.pipeline`).
  ``pipeline_layers``: how many layers each pipeline block holds (default: an even split;
  ``balanced``: chosen from the cost model, netsim.workload.balance).
* ``model.moe.dispatcher`` / ``model.moe.padding``: how the all-to-all sends tokens (a copy per
  expert, per destination rank or per destination node; :mod:`netsim.moe.traffic`) and whether
  its buffers are capacity-sized (fixed-shape frameworks) or as routed (dropless).
  ``model.moe.dispatch_latency_us``: the dispatcher kernel's fixed time per call (default: the
  dispatcher's, :mod:`netsim.moe.dispatchers`, "Time per call").
* ``global_batch_size`` / ``batch_scaling`` / ``batch_reference_devices``: a global batch fixed
  whatever the cluster, or one that grows with it (tokens per device fixed;
  :mod:`netsim.workload.batch`).
* ``schedule``: a pipeline schedule from :data:`netsim.workload.schedules.SCHEDULES`.
* ``router`` / ``placement``: the token->expert router and the expert->rank placement.
* ``overlap``: DP gradient reduction overlapped with backward; LocMoE-style slicing of the
  expert all-to-all so that slice *i*'s expert compute hides slice *i+1*'s communication;
  Megatron-Core's combined 1F1B (``ep_a2a_overlap``) and shared-expert overlap
  (``shared_expert_overlap``); Transformer Engine's userbuffers overlap of the TP collectives
  (``tp_comm_overlap``) and the SMs each overlap takes from its GEMM for the whole GEMM
  (``tp_comm_sms``) or holds while its communication is in flight (``tp_comm_held_sms``); SMs the
  expert all-to-all kernels hold while in flight (``ep_comm_sms``), NCCL's kernels of the
  TP, DP, PP and CP calls (``nccl_sms``), or communication holds for the whole step (``comm_sms``).
* ``device_placement``: rank -> device (topology-aware default, or an explicit list).
* ``storage`` / ``checkpoint``: the batch read from storage every step and the checkpoint
  written every K steps.
* ``training``: activation recomputation (``none``, ``selective``, ``full``), what the
  activation memory depends on (fused attention, dropout), LoRA fine-tuning (``lora``: frozen
  base weights, trained low-rank adapters) and packed documents (``document_tokens``).
* ``optimizer``: the dtypes of the reduced gradients, of the weights and of Adam's state (master
  weights and moments; ``grad_bytes_per_element`` is the deprecated spelling of
  ``optimizer.grad_dtype``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, NonNegativeInt, PrivateAttr, ValidationInfo, field_validator, model_validator

from netsim.config.common import Bytes, SpecModel, apply_overrides, load_mapping, validate_model
from netsim.config.model import DTYPE_BYTES, ModelSpec
from netsim.errors import SpecError
from netsim.limits import MAX_MICROBATCHES, MAX_STEPS

__all__ = [
    "WORKLOAD_PRESET_DIR",
    "CheckpointSpec",
    "DevicePlacementSpec",
    "LoraSpec",
    "NcclSmClass",
    "OptimizerSpec",
    "OverlapSpec",
    "ParallelSpec",
    "PlacementSpec",
    "RouterSpec",
    "ScheduleSpec",
    "StorageSpec",
    "TpOverlapGemm",
    "TrainingSpec",
    "WorkloadSpec",
    "list_workload_presets",
    "load_workload",
    "workload_preset_path",
]

#: Directory of the preset workload YAML files shipped with the package.
WORKLOAD_PRESET_DIR = Path(__file__).resolve().parent.parent / "data" / "workloads"


class ParallelSpec(SpecModel):
    """Parallel sizes.  Ranks = dp * cp * pp * tp; EP divides the dp * cp * tp ranks of a stage."""

    dp: int | Literal["auto"] = "auto"
    pp: int = Field(default=1, ge=1)
    tp: int = Field(default=1, ge=1)
    cp: int = Field(
        default=1,
        ge=1,
        description="context parallelism (Megatron-Core with Transformer Engine's ring attention, cp_comm_type "
        "p2p): each of cp ranks holds 1/cp of every sequence (2 * cp load-balanced chunks) and exchanges K and V "
        "with its ring neighbours while the attention runs; gradients are reduced over dp * cp ranks",
    )
    cp_comm_type: Literal["p2p", "all_gather", "a2a", "a2a+p2p"] = Field(
        default="p2p",
        description="how context parallelism exchanges keys and values: p2p (Transformer Engine's ring beside the "
        "attention, Megatron's default), all_gather (K and V all-gathered over the CP group before the attention "
        "and their gradients reduce-scattered after its backward: Transformer Engine's all_gather type, the method "
        "of the Llama 3 paper), a2a (Ulysses: Q, K, V all-to-all from sequence to head split before the "
        "attention, its output back after; needs heads and KV heads per TP rank divisible by cp) or a2a+p2p "
        "(hierarchical_cp: a2a inside groups of the first size, the p2p ring across the second); "
        "netsim.workload.context_parallel",
    )
    hierarchical_cp: list[int] | None = Field(
        default=None,
        description="with cp_comm_type a2a+p2p: [a2a size, p2p size], their product cp (Megatron-Core's "
        "--hierarchical-context-parallel-sizes: the a2a groups are consecutive CP ranks, the p2p rings stride "
        "across them)",
    )
    ep: int = Field(default=1, ge=1)
    zero_stage: Literal[0, 1, 2, 3] = 1
    dp_replicas: int | Literal["per-node"] = Field(
        default=1,
        description="with zero_stage >= 1: the data-parallel group split into this many groups of consecutive "
        "ranks, each sharding the model state on its own (Megatron-Core's num_distributed_optimizer_instances, "
        "PyTorch's hybrid sharding (HSDP) replicate degree): gradients reduce-scattered inside a group, then "
        "their shards all-reduced across the groups; parameters gathered inside a group; per-node: one group "
        "per server (HSDP's usual layout: the state sharded over a server's GPUs, replicated across servers), "
        "as many as the servers the data-parallel group spans; netsim.workload.gradients",
    )
    sequence_parallel: bool = Field(default=True, description="TP with sequence parallelism (Megatron)")
    pipeline_scatter_gather: Literal["auto", True, False] = Field(
        default="auto",
        description="Megatron's scatter/gather of pipeline messages: each TP rank sends 1/tp of a micro-batch's "
        "activations (gradients) and the receiving stage all-gathers them over its TP group; auto = on where "
        "TP > 1 without sequence parallelism (Megatron-LM's default), no effect otherwise",
    )
    pipeline_layers: list[int] | Literal["balanced"] | None = Field(
        default=None,
        description="transformer layers per pipeline block (virtual stage), in model order: one count per block, "
        "summing to model.layers; only the first and the last may be 0 (a block with only the embedding / the "
        "output head). Default: an even split, the remainder to the blocks after the first. Megatron-LM's "
        "--decoder-first/last-pipeline-num-layers and --pipeline-model-parallel-layout set the same thing. "
        "balanced: the split whose slowest stage computes least per micro-batch, from the cost model "
        "(netsim.workload.balance)",
    )
    expert_layout: str = Field(
        default="megatron",
        description="how the framework lays experts out: megatron (parallel folding), deepspeed (EP across DP, "
        "whole experts), mindspore (EP across DP, experts split over the TP group); netsim.workload.expert_layout",
    )
    expert_tp: int | None = Field(
        default=None, ge=1, description="ranks one expert is split over (default: tp for mindspore, else 1)"
    )
    expert_alltoall: Literal["replicated", "groupwise"] = Field(
        default="replicated",
        description="deepspeed / mindspore layouts: how the TP copies of the tokens cross the all-to-all "
        "(replicated: each TP rank sends its copy; groupwise: LocMoE, each its 1/tp share + all-gather in the TP "
        "group)",
    )

    @property
    def cp_a2a(self) -> int:
        """CP ranks an all-to-all of Q, K, V spans (``a2a``: all ``cp``; ``a2a+p2p``: the first
        ``hierarchical_cp`` size; else 1): each then computes the attention of ``1 / cp_a2a`` of
        its heads on ``cp_a2a`` times its tokens (netsim.workload.context_parallel)."""
        if self.cp_comm_type == "a2a":
            return self.cp
        if self.cp_comm_type == "a2a+p2p" and self.hierarchical_cp:
            return self.hierarchical_cp[0]
        return 1

    #: the one word each of these fields takes besides its value, and what the value is
    _WORDS: ClassVar[dict[str, tuple[str, str]]] = {
        "dp_replicas": ("per-node", "a number of groups"),
        "pipeline_layers": ("balanced", "a list of layer counts, one per pipeline block"),
    }

    @field_validator("dp_replicas", "pipeline_layers", mode="before")
    @classmethod
    def _value_or_word(cls, v: Any, info: ValidationInfo) -> Any:
        word, what = cls._WORDS[str(info.field_name)]
        if isinstance(v, str) and v != word:
            raise ValueError(f"must be {what} or {word!r} (got {v!r})")
        return v

    @model_validator(mode="after")
    def _check(self) -> ParallelSpec:
        if isinstance(self.dp, int) and self.dp < 1:
            raise ValueError(f"dp must be >= 1 or 'auto', got {self.dp}")
        if isinstance(self.pipeline_layers, list) and any(n < 0 for n in self.pipeline_layers):
            raise ValueError(f"pipeline_layers must be counts >= 0, got {self.pipeline_layers}")
        if isinstance(self.dp_replicas, int) and self.dp_replicas < 1:
            raise ValueError(f"dp_replicas must be >= 1 or 'per-node', got {self.dp_replicas}")
        if self.dp_replicas != 1 and self.zero_stage == 0:
            raise ValueError(
                f"dp_replicas = {self.dp_replicas} splits the sharded model state into groups: it needs zero_stage "
                ">= 1 (with zero_stage 0 nothing is sharded; use dp_replicas: 1)"
            )
        if self.cp_comm_type == "a2a+p2p":
            h = self.hierarchical_cp
            if h is None or len(h) != 2 or any(n < 1 for n in h) or h[0] * h[1] != self.cp:
                raise ValueError(
                    f"cp_comm_type a2a+p2p needs hierarchical_cp: [a2a size, p2p size], two sizes >= 1 whose "
                    f"product is cp = {self.cp} (got {h})"
                )
        elif self.hierarchical_cp is not None:
            raise ValueError(
                f"hierarchical_cp is for cp_comm_type a2a+p2p (got cp_comm_type {self.cp_comm_type!r}); remove it"
            )
        return self


class ScheduleSpec(SpecModel):
    """A pipeline schedule by registry name (see netsim.workload.schedules)."""

    name: str = "1f1b"
    virtual_chunks: int = Field(default=1, ge=1, description="model chunks per stage (interleaved-1f1b)")
    p2p: Literal["async", "blocking"] = Field(
        default="async",
        description="how the pipeline's sends and receives run: async (Megatron-Core: a send does not hold "
        "the sender) or blocking (Megatron-LM before Megatron-Core, megatron/p2p_communication.py _communicate at "
        "de7dc40f88 and 285068c8: every exchange is batch_isend_irecv, req.wait() and torch.cuda.synchronize(), "
        "after each action, or after each forward + backward pair in the interleaved schedule's steady state, "
        "whose forward output is sent only then; the next compute waits for every send and receive of the "
        "exchange); netsim.workload.pipeline",
    )


class RouterSpec(SpecModel):
    """The token->expert router: a name from netsim.moe (``uniform`` always exists) + options."""

    name: str = "uniform"
    options: dict[str, Any] = Field(default_factory=dict)


class PlacementSpec(SpecModel):
    """Expert -> EP-rank placement: ``contiguous``, ``round-robin`` or ``eplb``."""

    name: str = "contiguous"
    redundant_experts: int = Field(default=0, ge=0, description="extra expert replicas (eplb)")
    options: dict[str, Any] = Field(default_factory=dict)


#: the traffic classes whose NCCL kernels ``OverlapSpec.nccl_sms`` sets (netsim.workload.nccl_sms)
NcclSmClass = Literal["tp", "dp", "pp", "cp"]

#: Transformer Engine's names of the GEMMs its userbuffers overlap with TP communication
#: (transformer_engine/pytorch/module/base.py, initialize_ub; Megatron-Bridge's
#: TransformerLayerTPOverlapCfg)
TpOverlapGemm = Literal[
    "qkv_fprop",
    "qkv_dgrad",
    "qkv_wgrad",
    "proj_fprop",
    "proj_dgrad",
    "fc1_fprop",
    "fc1_dgrad",
    "fc1_wgrad",
    "fc2_fprop",
    "fc2_dgrad",
]


class OverlapSpec(SpecModel):
    """Communication / computation overlap."""

    dp_overlap_backward: bool = True
    zero3_prefetch: bool = Field(
        default=True,
        description="ZeRO 3 / FSDP: a layer's parameter all-gather is issued when the layer before it (in "
        "program order) starts computing, so it flies under that layer's compute (PyTorch FSDP's backward "
        "prefetch and CPU-ahead forward gathers, Megatron-FSDP's overlap_param_gather); false: each gather "
        "starts when the layer before it has finished",
    )
    param_gather_overlap: bool = Field(
        default=False,
        description="ZeRO 1/2 (Megatron's distributed optimizer): Megatron's overlap_param_gather (NeMo's "
        "overlap_param_sync): the updated parameters are all-gathered bucket by bucket during the next "
        "step's forward, each layer's first forward waiting for its bucket, instead of after the "
        "optimizer; with virtual pipeline chunks every chunk's gathers are issued together "
        "(align_param_gather), else each bucket when the one before it has been waited for; "
        "netsim.workload.gradients",
    )
    ep_overlap_slices: int = Field(default=1, ge=1, description="LocMoE-style a2a/expert slicing")
    ep_a2a_overlap: bool = Field(
        default=False,
        description="Megatron-Core's overlap_moe_expert_parallel_comm (combined 1F1B): in the steady state "
        "each micro-batch's forward runs together with another's backward, their layers interleaved so that "
        "one's expert all-to-alls fly under the other's compute (one more warm-up forward); needs ep > 1 and "
        "interleaved-1f1b (or 1f1b with pp 1), no full recomputation",
    )
    shared_expert_overlap: bool = Field(
        default=False,
        description="Megatron-Core's moe_shared_expert_overlap: the shared experts' first GEMM and activation run "
        "while the dispatch all-to-all flies, their second GEMM while the combine does (the backward likewise); "
        "without it they run after the routed experts' combine",
    )
    delay_wgrad_compute: bool = Field(
        default=False,
        description="Megatron-Core's delay_wgrad_compute under the combined 1F1B: an MoE layer's backward runs "
        "the experts' input gradients, starts the backward dispatch all-to-all and then computes the experts' "
        "weight gradients while it flies (model_chunk_schedule_plan.py: mlp.backward, mlp.backward_dw, "
        "moe_dispatch.backward); needs ep_a2a_overlap",
    )
    tp_comm_overlap: bool = Field(
        default=False,
        description="Transformer Engine's userbuffers overlap of the tensor-parallel communication "
        "(Megatron-Core / NeMo tp_comm_overlap, ub_tp_comm_overlap): each sequence-parallel all-gather and "
        "reduce-scatter runs beside the GEMM it feeds or drains instead of before or after the block; needs "
        "sequence parallelism; netsim.workload.tp_blocks",
    )
    nccl_sms: dict[NcclSmClass, NonNegativeInt] | None = Field(
        default=None,
        description="SMs NCCL's kernels hold on each member while a call of a traffic class is in flight, by "
        "class: tp (without tp_comm_overlap), dp (gradient reduction, parameter gathers), pp (pipeline "
        "sends and receives), cp (context-parallel exchanges); the GEMMs and attention beside them run on "
        "the other SMs (netsim.replay, 'SMs held in flight'; NCCL_MAX_CTAS caps them in a real run); a "
        "class not given: one SM per channel of each call as NCCL's tuner or p2p channel rule gives it "
        "(24 for an all-reduce at TP 8 in a DGX A100 or DGX H100), on an accelerator whose SM count the "
        "topology gives; 0: that class holds none; netsim.workload.nccl_sms",
    )
    tp_comm_sms: dict[TpOverlapGemm, NonNegativeInt] | None = Field(
        default=None,
        description="with tp_comm_overlap: the SMs each of Transformer Engine's userbuffers overlaps takes away "
        "from its GEMM (TE's num_sm where set_sm_margin is true, else 0), by TE's GEMM name: qkv_fprop, "
        "qkv_dgrad, qkv_wgrad, proj_fprop, proj_dgrad, fc1_fprop, fc1_dgrad, fc1_wgrad, fc2_fprop, fc2_dgrad; "
        "a name not given keeps Transformer Engine's default (16 for the pipelined and bulk overlaps, 0 for "
        "the ring exchanges); netsim.workload.tp_overlap",
    )
    tp_comm_held_sms: dict[TpOverlapGemm, NonNegativeInt] | None = Field(
        default=None,
        description="with tp_comm_overlap: the SMs each of Transformer Engine's userbuffers overlaps holds while "
        "its communication is in flight when it sets no margin (TE's num_sm where set_sm_margin is false, for "
        "the bulk and pipeline methods, whose communication is a kernel; the ring exchanges copy with the copy "
        "engines): the GEMM beside it runs on the other SMs for as long as they overlap (netsim.replay, 'SMs "
        "held in flight'); a name given here has no margin; names not given hold none; "
        "netsim.workload.tp_overlap",
    )
    ep_comm_sms: int | None = Field(
        default=None,
        ge=0,
        description="SMs the expert all-to-all kernels hold on each rank while they are in flight (HybridEP's "
        "moe_hybridep_num_sms, DeepEP's num_sms): the GEMMs and attention that run beside them get the rest, "
        "at sms / (sms - ep_comm_sms) of their time for as long as they overlap (netsim.replay, 'SMs held "
        "in flight'); 0: the all-to-alls take no SMs from the compute; unset: NCCL's all-to-all (the "
        "alltoall and dedup-rank dispatchers) holds one SM per thread block of its kernel, as NCCL's channel "
        "rule gives it for the EP group and the call's size (netsim.collectives.nccl.p2p), on an "
        "accelerator whose SM count the topology gives; deepep's kernels hold DeepEP's default 20 (its "
        "Buffer.num_sms, which Megatron-Core keeps) unless comm_sms already reserves the communication SMs for "
        "the whole step; hybridep's hold none unless given (Megatron-Core's moe_hybridep_num_sms was 16 "
        "from 2025-11 to 2026-04, then the library's own)",
    )
    comm_sms: int = Field(
        default=0,
        ge=0,
        description="SMs the communication kernels hold for the whole step (DeepSeek-V3's DualPipe: 20 of "
        "the H800's 132); GEMMs and attention run on the rest (netsim.calibration.shared_sms)",
    )


class DevicePlacementSpec(SpecModel):
    """Rank -> device: ``topology-aware`` (TP, then EP inside nodes, PP stages on nearby nodes),
    ``round-robin`` (consecutive ranks on different nodes, a deliberately bad baseline), or an
    explicit ``devices`` list (one accelerator name per rank)."""

    policy: Literal["topology-aware", "round-robin"] = "topology-aware"
    devices: list[str] | None = None


class StorageSpec(SpecModel):
    """The training batch read from front-end storage every step (prefetched one step ahead)."""

    enabled: bool = True
    bytes_per_token: Bytes = Field(default=4.0, description="bytes read per token (int32 ids = 4)")


class CheckpointSpec(SpecModel):
    """A checkpoint written every ``every_steps`` steps (0 = never)."""

    every_steps: int = Field(default=0, ge=0)
    target: Literal["frontend", "backend"] = "frontend"
    include_optimizer: bool = True
    optimizer_bytes_per_param: Bytes | None = Field(
        default=None,
        description="optimizer state written per parameter; default from the optimizer: master weights "
        "(optimizer.master_dtype, none for fp32 weights) + Adam m and v (optimizer.moment_dtype): 12 bytes "
        "for fp32 state over 16-bit weights, 8 for fp32 weights",
    )
    asynchronous: bool = Field(default=True, description="written in the background during the next step")


#: the linear layers a LoRA adapter can be attached to (Megatron-Bridge's ``LoRA.target_modules``)
LoraTarget = Literal["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]


class LoraSpec(SpecModel):
    """Low-rank adaptation (Hu et al. 2021, arXiv 2106.09685): the base model's weights are frozen
    and a rank-``rank`` adapter (``x A B``: ``A`` hidden -> rank, ``B`` rank -> out) is trained
    beside each ``targets`` linear layer (:mod:`netsim.workload.lora`).  The defaults are
    Megatron-Bridge's ``LoRA`` (peft/lora.py: ``dim`` 32, every linear layer of attention and the
    dense MLP)."""

    rank: int = Field(default=32, ge=1, le=65536, description="the adapters' rank (Megatron-Bridge's LoRA dim)")
    targets: list[LoraTarget] = Field(
        default_factory=lambda: list(get_args(LoraTarget)),
        min_length=1,
        description="the linear layers that get an adapter (Megatron-Bridge's target_modules): linear_qkv, "
        "linear_proj (attention), linear_fc1, linear_fc2 (the dense MLP; routed experts keep no adapter)",
    )


class TrainingSpec(SpecModel):
    """What the training framework does besides the model's math (memory and recomputation).

    ``recompute`` names a mode of :data:`netsim.workload.recompute.RECOMPUTE`: ``none``,
    ``selective`` (Korthikanti et al. 2022: the attention core is recomputed in the backward,
    its s x s scores are not stored), ``full`` (every layer's forward is recomputed in the
    backward from its stored input; Megatron-LM ``--recompute-granularity full``) or
    ``norms-mla-up`` (DeepSeek-V3: the RMSNorms and MLA's up-projections are recomputed);
    ``recompute_modules`` picks Megatron-Core's selective modules (``core_attn``, ``layernorm``,
    ``mla_up_proj``, ``moe_act``, ``mlp``, ``moe``, ``shared_experts``) under ``selective``.
    """

    recompute: str = Field(default="none", description="activation recomputation: none, selective, full, norms-mla-up")
    recompute_num_layers: int | None = Field(
        default=None,
        ge=1,
        description="with recompute full: only the first N layers of every pipeline block are recomputed (Megatron-LM "
        "--recompute-method block --recompute-num-layers N); default: every layer (--recompute-method uniform)",
    )
    recompute_modules: list[str] | None = Field(
        default=None,
        description="with recompute selective: Megatron-Core's --recompute-modules, any of core_attn, layernorm, "
        "mla_up_proj, moe_act, mlp, moe, shared_experts (netsim.workload.recompute); default: core_attn",
    )
    flash_attention: bool = Field(
        default=True, description="fused (flash) attention: the seq x seq scores are never stored"
    )
    dropout: bool = Field(default=False, description="dropout in the model: its masks are stored for the backward")
    cross_entropy: Literal["unfused", "fused", "te"] = Field(
        default="fused",
        description="the loss's implementation (Megatron-Core cross_entropy_loss_fusion / cross_entropy_fusion_impl): "
        "unfused (Megatron-LM's default, the only one before 2024), fused (TorchScript, the 'native' fusion: NeMo's "
        "and Megatron-Bridge's default) or te (Transformer Engine's one-pass kernel: Megatron-Bridge's perf recipes)",
    )
    lora: LoraSpec | None = Field(
        default=None,
        description="parameter-efficient fine-tuning: the base weights frozen (no weight gradients, no optimizer "
        "state), rank-r adapters trained beside the target linear layers (netsim.workload.lora); null: every "
        "weight is trained",
    )
    document_tokens: int | None = Field(
        default=None,
        ge=1,
        description="packed sequences: the mean length of the documents packed into each sequence, each attending "
        "only to itself (Megatron's THD format with cu_seqlens, packed fine-tuning data); null: one document per "
        "sequence (the attention core over the whole causal sequence)",
    )
    activation_fusion: bool = Field(
        default=True,
        description="Megatron's bias_activation_fusion (--bias-swiglu-fusion / --bias-gelu-fusion: on in Megatron-LM's "
        "arguments and in NeMo's and Megatron-Bridge's recipes, off in a bare TransformerConfig): false runs the "
        "activation as eager PyTorch (swiglu_eager: chunk, silu, product; gelu_eager: PyTorch's GELU) and makes "
        "Megatron-Core's grouped experts weight their activation by the fp32 router probabilities in a separate "
        "multiply and cast back (prob_weight), which its fused SwiGLU does inside (netsim.workload.costs)",
    )
    gradient_accumulation_fusion: bool = Field(
        default=True,
        description="Megatron's gradient accumulation fusion (--gradient-accumulation-fusion, on by default since "
        "2022; NeMo's and Megatron-Bridge's default): each weight-gradient GEMM accumulates into the main gradient "
        "in its epilogue; false (--no-gradient-accumulation-fusion, or Megatron-LM before 2022): every micro-batch's "
        "weight gradients are written in 16 bits and then added into the main gradient (optimizer.grad_dtype) by a "
        "separate elementwise kernel, 2 + 2 x grad bytes per parameter (netsim.workload.costs)",
    )
    eager_modules: list[Literal["norm", "rope"]] = Field(
        default_factory=list,
        description="model pieces the model code runs as eager PyTorch ops, one kernel per op with fp32 upcasts, "
        "instead of one fused kernel (Transformer Engine's, or torch.compile's): norm (the RMSNorm of IBM fms's and "
        "Hugging Face's Llama: catalogue kernel rmsnorm_eager), rope (fms's rotary embedding of the queries and "
        "keys: rope_eager; a fused rotary embedding is not timed).  With activation_fusion: false this is a Llama "
        "block in plain PyTorch without torch.compile (netsim.calibration.eager_counts)",
    )
    framework: Literal["megatron", "pytorch"] = Field(
        default="megatron",
        description="the training software the run stands for: megatron (Megatron-Core, NeMo, Megatron-Bridge "
        "with Transformer Engine layers: what netsim's kernel model follows and most published runs in "
        "netsim validate are) or pytorch (PyTorch modules under PyTorch FSDP, eager or compiled: MosaicML "
        "Composer and llm-foundry, IBM's fms-fsdp; eager_modules says what runs unfused).  It does not change "
        "how the step is timed (the kernels the workload names are); it picks "
        "the published runs netsim reports its record on beside the step (netsim.accuracy: regime "
        "'dense pytorch'), because on H100 netsim's step is 8-33% shorter than such stacks measured (on A100 "
        "within 12%)",
    )
    deterministic: bool = Field(
        default=False,
        description="Megatron's --deterministic-mode (NVTE_ALLOW_NONDETERMINISTIC_ALGO=0): the fused attention "
        "kernel's backward without atomic accumulation of the query gradient, at "
        "netsim.workload.costs.DETERMINISTIC_ATTENTION_BWD (1.213x, approx.: FlashAttention-3's deterministic "
        "backward on H100 against its default one); the rest of the mode (NCCL_ALGO=Ring, deterministic PyTorch "
        "ops) is not timed",
    )


class OptimizerSpec(SpecModel):
    """Adam with mixed precision: the dtypes of the weights and of the reduced gradients.

    The optimizer keeps master weights in ``master_dtype`` (when ``param_dtype`` is 16-bit or
    FP8) and Adam moments in ``moment_dtype``; Megatron-LM's distributed optimizer (ZeRO stage 1)
    shards them over the DP group, reduce-scatters the gradients in ``grad_dtype`` and
    all-gathers the updated weights in ``param_dtype``.
    """

    grad_dtype: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="dtype gradients are accumulated and reduced in (Megatron: fp32 unless --grad-reduce-in-bf16)",
    )
    param_dtype: Literal["fp32", "bf16", "fp16", "fp8"] | None = Field(
        default=None, description="dtype of the model's weights; default: model.dtype (bf16 for an fp8 model)"
    )
    moment_dtype: Literal["fp32", "bf16"] = Field(
        default="fp32", description="dtype of Adam's first and second moments (DeepSeek-V3 keeps them in bf16)"
    )
    master_dtype: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="dtype of the optimizer's copy of 16-bit or FP8 weights: fp32 (Megatron-LM's distributed "
        "optimizer), bf16 (Apex DistributedFusedAdam with dtype bf16, NeMo 1's fine-tuning configs; the step "
        "then reads the 16-bit gradients, no fp32 main-gradient copy)",
    )
    implementation: Literal["fused", "foreach"] = Field(
        default="fused",
        description="how the Adam step runs: fused (one pass over weights, gradients and moments: Apex's and "
        "Transformer Engine's FusedAdam, torch.optim.AdamW(fused=True)) or foreach (torch.optim.AdamW's default "
        "multi-tensor ops, nine passes: netsim.calibration.eager_counts.FOREACH_ADAMW_EXTRA_BYTES more bytes per "
        "parameter)",
    )
    precision_aware: bool = Field(
        default=False,
        description="Megatron-Core's use_precision_aware_optimizer: Transformer Engine's FusedAdam holds the "
        "master weights and steps on the 16-bit gradients, with no fp32 main-gradient copy "
        "(netsim.workload.optimizer)",
    )


class WorkloadSpec(SpecModel):
    """A training workload: model, parallelism, schedule, MoE routing, overlap, I/O."""

    name: str = "workload"
    description: str = ""
    model: ModelSpec
    parallelism: ParallelSpec = Field(default_factory=ParallelSpec)
    micro_batch_size: int = Field(default=1, ge=1, le=MAX_MICROBATCHES, description="sequences per micro-batch")
    num_microbatches: int = Field(
        default=1, ge=1, le=MAX_MICROBATCHES, description="micro-batches per step per DP replica"
    )
    global_batch_size: int | None = Field(
        default=None, ge=1, description="if set, num_microbatches = global / (micro_batch_size * dp)"
    )
    batch_scaling: Literal["fixed", "per-device"] | None = Field(
        default=None,
        description="fixed: the global batch whatever the cluster (strong scaling); per-device: tokens per "
        "device fixed, the global batch grows with dp (weak scaling); default: fixed when global_batch_size "
        "is given without batch_reference_devices, else per-device",
    )
    batch_reference_devices: int | None = Field(
        default=None, ge=1, description="per-device scaling of global_batch_size: the devices it holds for"
    )
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    router: RouterSpec = Field(default_factory=RouterSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    grad_bucket_bytes: Bytes = Field(default=40e6 * 4, description="DP gradient bucket size (bytes)")
    overlap: OverlapSpec = Field(default_factory=OverlapSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    device_placement: DevicePlacementSpec = Field(default_factory=DevicePlacementSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    steps: int = Field(default=1, ge=1, le=MAX_STEPS, description="training steps to simulate")

    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _schedule_shorthand(cls, data: Any) -> Any:
        """``schedule: 1f1b`` is short for ``schedule: {name: 1f1b}``; same for router/placement.
        The deprecated ``grad_bytes_per_element`` (4 or 2) sets ``optimizer.grad_dtype``."""
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("schedule", "router", "placement"):
                if isinstance(data.get(key), str):
                    data[key] = {"name": data[key]}
            if "grad_bytes_per_element" in data:
                data = _grad_dtype_alias(data)
        return data

    @model_validator(mode="after")
    def _check_batch(self) -> WorkloadSpec:
        mode = self.batch_scaling
        if mode == "fixed" and self.global_batch_size is None:
            raise ValueError("batch_scaling fixed needs global_batch_size (the batch that stays fixed)")
        if mode == "fixed" and self.batch_reference_devices is not None:
            raise ValueError("batch_reference_devices applies to batch_scaling per-device only")
        if self.batch_reference_devices is not None and self.global_batch_size is None:
            raise ValueError("batch_reference_devices needs global_batch_size (the batch at that many devices)")
        if mode == "per-device" and self.global_batch_size is not None and self.batch_reference_devices is None:
            raise ValueError(
                "batch_scaling per-device with global_batch_size needs batch_reference_devices "
                "(the devices global_batch_size holds for); or give num_microbatches per replica"
            )
        return self

    @model_validator(mode="after")
    def _check_training(self) -> WorkloadSpec:
        t = self.training
        if t.lora is not None and self.model.mla is not None:
            raise ValueError(
                "training.lora: LoRA on MLA attention (model.mla) is not modelled; allowed: GQA/MHA models"
            )
        if self.model.sliding_window is not None and self.parallelism.cp > 1:
            raise ValueError(
                "model.sliding_window: sliding-window attention with context parallelism (parallelism.cp > 1) is "
                "not modelled; allowed: cp 1, or sliding_window null"
            )
        if t.document_tokens is not None and self.parallelism.cp > 1:
            raise ValueError(
                "training.document_tokens: packed documents with context parallelism (parallelism.cp > 1) are not "
                "modelled; allowed: cp 1, or document_tokens null"
            )
        if "norm" in t.eager_modules and self.model.activation != "swiglu":
            raise ValueError(
                "training.eager_modules: an eager norm is modelled for the RMSNorm of Llama-style (SwiGLU) models; "
                f"this model's norm is a LayerNorm (model.activation {self.model.activation}); allowed: rope, or []"
            )
        if "rope" in t.eager_modules and self.model.mla is not None:
            raise ValueError(
                "training.eager_modules: an eager rotary embedding is modelled for GQA/MHA attention, not MLA "
                "(model.mla); allowed: norm, or []"
            )
        return self

    @property
    def batch_scaling_mode(self) -> str:
        """``batch_scaling``, or what the batch fields imply (netsim.workload.batch)."""
        if self.batch_scaling is not None:
            return self.batch_scaling
        return "fixed" if self.global_batch_size is not None and self.batch_reference_devices is None else "per-device"

    @property
    def grad_bytes_per_element(self) -> int:
        """Bytes per element of the reduced gradients (``optimizer.grad_dtype``)."""
        return DTYPE_BYTES[self.optimizer.grad_dtype]

    @property
    def param_dtype(self) -> str:
        """The dtype of the model's weights (``optimizer.param_dtype``, else the model's dtype;
        an fp8 model keeps bf16 weights and casts them per GEMM)."""
        if self.optimizer.param_dtype is not None:
            return self.optimizer.param_dtype
        return "bf16" if self.model.dtype == "fp8" else self.model.dtype

    @property
    def param_bytes_per_element(self) -> int:
        return DTYPE_BYTES[self.param_dtype]

    @property
    def source(self) -> str | None:
        """The file (or preset) this spec came from, for error messages."""
        return self._source

    def with_source(self, source: str | None) -> WorkloadSpec:
        self._source = source
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain YAML-able data."""
        return self.model_dump(mode="json")


#: the deprecated ``grad_bytes_per_element`` values and the ``optimizer.grad_dtype`` they mean
_GRAD_BYTES_DTYPE = {4: "fp32", 2: "bf16"}


def _grad_dtype_alias(data: dict[str, Any]) -> dict[str, Any]:
    """``grad_bytes_per_element: 4`` (deprecated) -> ``optimizer: {grad_dtype: fp32}`` (2 -> bf16)."""
    value = data.pop("grad_bytes_per_element")
    dtype = _GRAD_BYTES_DTYPE.get(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if dtype is None:
        raise ValueError(
            f"grad_bytes_per_element (deprecated) must be 4 or 2 (got {value!r}); use optimizer.grad_dtype: fp32, bf16 "
            "or fp16"
        )
    opt = data.get("optimizer")
    data["optimizer"] = {**(dict(opt) if isinstance(opt, Mapping) else {}), "grad_dtype": dtype}
    return data


def list_workload_presets() -> list[str]:
    """Names of the preset workloads shipped with netsim (sorted)."""
    return sorted(p.stem for p in WORKLOAD_PRESET_DIR.glob("*.yaml"))


def workload_preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; SpecError listing the presets if there is none."""
    path = WORKLOAD_PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(f"unknown workload preset {name!r}; presets: {', '.join(list_workload_presets())}")
    return path


def load_workload(
    ref: str | Path | Mapping[str, Any] | WorkloadSpec, overrides: Sequence[str] = (), *, source: str | None = None
) -> WorkloadSpec:
    """Load and validate a workload from a preset name, a YAML path or a mapping.

    Args:
        ref: preset name (``mixtral-8x7b``), path to a YAML file, an inline mapping or a spec.
        overrides: ``dotted.key=value`` strings applied before validation (values parsed as YAML).
        source: the name used in error messages for an inline mapping (e.g. the scenario file).

    Raises:
        SpecError: one line naming the file, the field and what is allowed.
    """
    if isinstance(ref, WorkloadSpec):
        if not overrides:
            return ref
        data: dict[str, Any] = ref.to_dict()
        where = ref.source or source or "<workload>"
    elif isinstance(ref, Mapping):
        data = dict(ref)
        where = source or "<workload>"
    else:
        text = str(ref)
        looks_like_path = isinstance(ref, Path) or text.endswith((".yaml", ".yml")) or "/" in text
        path = Path(text) if looks_like_path else workload_preset_path(text)
        data = load_mapping(path)
        where = str(path) if looks_like_path else f"workload preset {text}"
    data = apply_overrides(data, overrides)
    spec = validate_model(WorkloadSpec, data, source=where, overrides=overrides)
    return spec.with_source(where)
