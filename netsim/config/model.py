"""Model specification: the transformer's dimensions, its mixture-of-experts layers and its precision.

The ``model:`` section of a workload (:class:`ModelSpec`, part of
:class:`netsim.config.workload.WorkloadSpec`): layers, widths and heads (``kv_heads`` for
grouped-query attention, ``mla`` for DeepSeek's multi-head latent attention), the vocabulary and
the sequence, the dtype and its FP8 recipe, and ``moe`` (:class:`MoESpec`): which layers are
mixture-of-experts, how many experts and how tokens are routed to them and dispatched
(``dispatcher``, ``dispatch_latency_us``, ``padding``: :mod:`netsim.moe.dispatchers`).  Checks
that need the cluster live in :func:`netsim.workload.layout.build_layout`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from netsim.config.common import SpecModel
from netsim.limits import MAX_EXPERTS, MAX_LAYERS, MAX_WIDTH

__all__ = ["DTYPE_BYTES", "Fp8QuantBytesSpec", "Fp8Recipe", "MLASpec", "MoESpec", "ModelSpec", "SlidingWindowSpec"]

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


class Fp8QuantBytesSpec(SpecModel):
    """Overrides of the bytes per element the FP8 quantisation casts move (netsim.workload.fp8;
    each default: the recipe's)."""

    after_norm: float | None = Field(default=None, ge=0, description="a GEMM input produced by a norm")
    other: float | None = Field(default=None, ge=0, description="any other GEMM input")
    grad: float | None = Field(default=None, ge=0, description="a GEMM's output gradient")
    weight: float | None = Field(default=None, ge=0, description="a weight, once per step")


#: FP8 scaling recipes (``model.fp8_recipe``; what each costs: netsim.workload.fp8)
Fp8Recipe = Literal["current", "delayed", "blockwise"]


class MLASpec(SpecModel):
    """DeepSeek multi-head latent attention dimensions (all counts of elements)."""

    q_lora_rank: int = Field(gt=0)
    kv_lora_rank: int = Field(gt=0)
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class MoESpec(SpecModel):
    """Which layers are mixture-of-experts and how they route."""

    experts: int = Field(ge=1, le=MAX_EXPERTS, description="routed experts per MoE layer")
    top_k: int = Field(ge=1, description="experts per token")
    every_n: int = Field(default=1, ge=1, description="every n-th layer (from first_dense) is MoE")
    first_dense: int = Field(default=0, ge=0, description="leading dense layers")
    layers: list[int] | None = Field(default=None, description="explicit MoE layer indices")
    capacity_factor: float | None = Field(default=None, gt=0, description="null = no token dropping")
    shared_experts: int = Field(default=0, ge=0)
    expert_ffn_hidden: int | None = Field(default=None, gt=0, description="default: model.ffn_hidden")
    dispatch_bytes_per_element: int | None = Field(
        default=None, gt=0, description="bytes/element of dispatched tokens (1 for FP8 dispatch)"
    )
    dispatcher: str = Field(
        default="alltoall",
        description="token dispatcher: alltoall (a copy per token and expert), dedup-rank (a copy per token "
        "and destination rank), deepep (a copy per token and destination node, fanned out over NVLink), hybridep "
        "(deepep's paths after an all-gather of the routing maps before each forward dispatch)",
    )
    dispatch_latency_us: float | None = Field(
        default=None,
        ge=0,
        le=1e6,
        description="the dispatcher kernel's fixed time per dispatch or combine call, microseconds, on top of "
        "moving its bytes; default: the dispatcher's own (deepep 250, hybridep 320, fitted to their published "
        "benchmarks; alltoall and dedup-rank 0: NCCL's latencies are in the collective cost model)",
    )
    host_sync_us: float | None = Field(
        default=None,
        ge=0,
        le=1e6,
        description="the host's time per forward dispatch from its synchronisation (the host waits for the "
        "received token counts) to the GPU's next work, microseconds; the GPU idles for it; default: the "
        "dispatcher's own (hybridep 616, from Megatron-Bridge's profile of a training step; alltoall, deepep and "
        "dedup-rank 0: not modelled, no published time); netsim.moe.dispatchers, 'Host synchronisation'",
    )
    router_dtype: Literal["fp32"] | None = Field(
        default=None,
        description="the gating linear's output and gradient precision, Megatron-Core's moe_router_dtype: null = "
        "the activations' 16-bit dtype (Megatron's default); fp32: logits in fp32 and a backward in fp32 "
        "(the input and the weight cast to fp32, the input gradient cast back: 16 more bytes per element of "
        "the router's [tokens, hidden] input and 6 per weight element, netsim.workload.moe_costs)",
    )
    padding: Literal["dropless", "capacity"] = Field(
        default="dropless",
        description="dropless: all-to-all buffers as routed; capacity: capacity-sized buffers per (rank, expert), "
        "sent and computed in full (needs capacity_factor)",
    )

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.experts:
            raise ValueError(f"top_k must be <= experts ({self.experts}), got {self.top_k}")
        if self.layers is not None and any(x < 0 for x in self.layers):
            raise ValueError("layers must be non-negative layer indices")
        if self.padding == "capacity" and self.capacity_factor is None:
            raise ValueError(
                "padding capacity needs capacity_factor (the buffer is capacity_factor * top_k * "
                "tokens / experts tokens per rank and expert)"
            )
        if self.padding == "capacity" and self.dispatcher != "alltoall":
            raise ValueError(
                f"padding capacity sends a buffer per (rank, expert): it needs dispatcher alltoall "
                f"(got {self.dispatcher})"
            )
        return self


class SlidingWindowSpec(SpecModel):
    """Sliding-window (local) attention: each query attends to itself and the ``tokens - 1``
    tokens before it (Mistral 7B, arXiv 2310.06825; Gemma 2 and 3; GPT-OSS), in every layer or in
    all but the global ones (``global_every``: every n-th layer from ``global_first`` attends to
    the whole sequence; Gemma 2 and GPT-OSS alternate, Gemma 3 has one global layer in six)."""

    tokens: int = Field(ge=1, description="the window: keys each query attends to, itself included")
    global_every: int | None = Field(
        default=None, ge=1, description="every n-th layer attends to the whole sequence; null: every layer windowed"
    )
    global_first: int = Field(default=0, ge=0, description="the first global layer (with global_every)")


class ModelSpec(SpecModel):
    """Transformer dimensions."""

    layers: int = Field(ge=1, le=MAX_LAYERS)
    hidden: int = Field(ge=1, le=MAX_WIDTH)
    ffn_hidden: int = Field(ge=1, le=MAX_WIDTH)
    heads: int = Field(ge=1)
    kv_heads: int | None = Field(default=None, ge=1, description="default: heads (no GQA)")
    head_dim: int | None = Field(default=None, ge=1, description="default: hidden / heads")
    vocab: int = Field(ge=1, le=MAX_WIDTH * 16)
    seq_len: int = Field(ge=1, le=MAX_WIDTH * 16)
    dtype: Literal["bf16", "fp16", "fp8", "fp32"] = "bf16"
    fp8_recipe: Fp8Recipe = Field(
        default="delayed",
        description="how an fp8 model scales its FP8 tensors (netsim.workload.fp8): current (per-tensor "
        "amax of the tensor itself, an extra read), delayed (amax history; Megatron-LM's default "
        "--fp8-recipe) or blockwise (DeepSeek-V3's 1x128 / 128x128 tiles); used only when dtype is fp8",
    )
    fp8_quant_bytes: Fp8QuantBytesSpec | None = Field(
        default=None, description="override the recipe's bytes per element of the quantisation casts"
    )
    bytes_per_element: int | None = Field(
        default=None,
        ge=1,
        description="bytes per activation element between operators, in memory and on the wire; default: from "
        "dtype (fp8: 2, FP8 GEMMs with BF16 tensors between them; the FP8 GEMM inputs Transformer Engine "
        "saves or all-gathers: 1)",
    )
    activation: Literal["swiglu", "gelu", "squared_relu"] = Field(
        default="swiglu",
        description="the MLP's activation: swiglu (gated, fc1 2 x ffn_hidden wide), gelu or squared_relu "
        "(Nemotron's relu(x)^2; both not gated, timed as the catalogue's gelu kernel: one elementwise pass "
        "each way, approx. for squared_relu)",
    )
    tie_embeddings: bool = False
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    sliding_window: SlidingWindowSpec | None = Field(
        default=None,
        description="sliding-window attention in some or all layers (netsim.workload.costs, attention core); "
        "null: every layer attends to the whole causal sequence",
    )
    mtp_depth: int = Field(
        default=0,
        ge=0,
        le=MAX_LAYERS,
        description="multi-token prediction modules (DeepSeek-V3 D; each one more transformer block, "
        "a projection and the shared output head on the last pipeline block)",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}) or set head_dim")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.moe is not None and self.moe.layers is not None:
            bad = [x for x in self.moe.layers if x >= self.layers]
            if bad:
                raise ValueError(f"moe.layers {bad} outside 0..{self.layers - 1}")
        return self

    @property
    def bpe(self) -> int:
        """Bytes per element of the activations between operators, kept for the backward and
        exchanged between devices (pipeline messages, MoE dispatch and combine, tensor-parallel
        reduce-scatters and all-reduces).  FP8 training runs its GEMMs in FP8 and keeps the
        tensors between operators in BF16 (Transformer Engine casts inside its modules;
        Megatron-Core's MoE dispatch wire dtype defaults to bf16, ``moe_dispatch_fwd_dtype`` in
        transformer_config.py at Megatron-LM d98e8a64dd; DeepSeek-V3 report 3.3), so 2 bytes
        unless ``bytes_per_element`` says otherwise."""
        if self.bytes_per_element is not None:
            return self.bytes_per_element
        return 2 if self.dtype == "fp8" else DTYPE_BYTES[self.dtype]

    @property
    def gemm_input_bpe(self) -> int:
        """Bytes per element of a GEMM input as FP8 training quantises it: the copy Transformer
        Engine all-gathers under sequence parallelism (``layernorm_linear.py`` / ``linear.py``
        pass the input quantiser to ``gather_along_first_dim``) and the copy it saves for the
        weight-gradient GEMM (``saved_inputmat`` / ``ln_out_to_save``, one of the row- or
        column-wise FP8 layouts; TE d0067d0da): 1 byte under FP8; else :attr:`bpe`."""
        return 1 if self.dtype == "fp8" else self.bpe

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden // self.heads

    def attention_window(self, layer: int) -> int | None:
        """The sliding window of ``layer``'s attention in tokens (None: the whole sequence; a
        multi-token-prediction block attends like a global layer)."""
        w = self.sliding_window
        if w is None or layer >= self.layers or w.tokens >= self.seq_len:
            return None
        if w.global_every is not None and layer >= w.global_first and (layer - w.global_first) % w.global_every == 0:
            return None
        return w.tokens

    def is_mtp_layer(self, layer: int) -> bool:
        """Whether ``layer`` is a multi-token-prediction block (an index from ``layers`` on)."""
        return layer >= self.layers

    def is_moe_layer(self, layer: int) -> bool:
        """Whether transformer layer ``layer`` (0-based) has an MoE FFN.  Indices from ``layers`` on
        are the multi-token-prediction blocks (:meth:`mtp_layers`), whose FFN is the kind of the
        main model's last layer (DeepSeek-V3's MTP block is an MoE layer: README_WEIGHTS.md of
        deepseek-ai/DeepSeek-V3, layer 61 "structure identical to the Main Model hidden layers",
        11.5B unique parameters)."""
        moe = self.moe
        if moe is None:
            return False
        if layer >= self.layers:
            return self.is_moe_layer(self.layers - 1)
        if moe.layers is not None:
            return layer in moe.layers
        return layer >= moe.first_dense and (layer - moe.first_dense) % moe.every_n == moe.every_n - 1

    def moe_layers(self) -> list[int]:
        """The MoE layers, the multi-token-prediction blocks' included (after the main model's)."""
        return [x for x in range(self.layers + self.mtp_depth) if self.is_moe_layer(x)]

    def mtp_layers(self) -> list[int]:
        """The layer indices of the multi-token-prediction blocks: ``layers .. layers + mtp_depth - 1``."""
        return list(range(self.layers, self.layers + self.mtp_depth))
