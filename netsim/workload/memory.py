"""Memory per rank: weights, gradients, optimizer state and activations against the HBM.

**Activations** follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (arXiv 2205.05198), section 4.1, per layer and micro-batch (``s`` sequence,
``b`` micro-batch, ``h`` hidden, ``a`` heads, ``t`` TP; 16-bit activations, 1-byte dropout
masks):

* attention block ``11sbh + 5as^2b``: QKV input 2sbh, Q and K 4sbh, softmax output 2as^2b,
  its dropout mask as^2b and output 2as^2b, V 2sbh, output-projection input 2sbh, dropout mask
  sbh;
* MLP ``19sbh``: first linear input 2sbh, GeLU input 8sbh and output 8sbh, dropout mask sbh;
* two layer norms ``4sbh``: ``34sbh + 5as^2b`` in all.

With tensor parallelism the attention and MLP interiors (24sbh and the scores) are split ``t``
ways and the rest (10sbh) is replicated; sequence parallelism splits the rest too: ``sbh(10 +
24/t + 5as/(ht))`` without, ``sbh(34/t + 5as/(ht))`` with (Table 2).  Selective recomputation
drops the ``5as^2b`` scores (``34sbh/t``); full recomputation stores the layer input only
(``2sbh``; ``/t`` with sequence parallelism, whose input shard is what Megatron stores) and
needs one layer's activations at a time while recomputing it.

The same tally, term by term, generalises to the model's dimensions: element sizes from the
model's dtype; GQA / MLA shapes of Q, K, V (MLA also stores its q and kv latents, not split by
TP); SwiGLU keeps its two input halves and its output (``3f`` instead of GeLU's ``2f``); fused
(flash) attention stores no scores, only its fp32 softmax statistics (``4asb``; Dao et al. 2022);
no dropout masks without dropout.  An MoE layer replaces the MLP interior with the routed
experts' (``R = top_k * tokens`` token-slots a rank receives at balanced load: expert input,
``2f_e`` or ``3f_e``, expert output) and the shared experts'.  The first block adds the token ids
(8 bytes a token) and the embedding's dropout mask, the last the final norm and output-projection
inputs and fp32 logits ``4sbv/t`` (Korthikanti section 4.3; Megatron-LM
``theoretical_memory_usage.py``).  A multi-token-prediction block (``model.mtp_depth``) adds its
module's two norm inputs, its projection's input and an output head's.  ``norms-mla-up``
recomputation drops the norms' outputs (``2sbh`` per block) and MLA's per-head Q, K and V;
Megatron's recompute modules drop the same pieces one by one (``layernorm``: the norms' outputs;
``mla_up_proj``: MLA's per-head Q, K and V), ``moe_act`` the routed experts' second GEMM input
(``f`` per token-slot), ``mlp`` a dense MLP block but for its input, ``moe`` an MoE block but for
its input (plus one block's worth while it is recomputed), ``shared_experts`` the shared experts'
interior.

**FP8 training** (Transformer Engine at d0067d0da) keeps the tensors between operators in BF16
(``ModelSpec.bpe``: 2 bytes) and saves each GEMM's input for its weight gradient as the FP8 copy
it quantised (``ModelSpec.gemm_input_bpe``: 1 byte; ``saved_inputmat`` in ``linear.py``,
``ln_out_to_save`` in ``layernorm_linear.py``, one of the row- or column-wise layouts): the norm
outputs, the output projection's input (a copy next to the BF16 attention output the attention
core keeps), an MLP's or expert's second-GEMM input and an expert's input, while the norm inputs,
Q, K, V, the activation function's input and an expert's output (kept for the combine's
weighting: TE's ``moe_unpermute`` saves it with the merging probabilities) stay BF16.  The
output head (not FP8) and a fully recomputed layer's input are BF16 too.

**LoRA** (``training.lora``): a frozen GEMM keeps no input for a weight gradient (Transformer
Engine's ``backward_needs_input``, ``linear.py`` at d0067d0da6), so the norms' outputs, the
second linears' and the experts' inputs, the output projection's FP8 copy and the output head's
input are not stored, except where a LoRA target's adapter keeps its input (16-bit: Megatron-Core's
own linear layers); the norm inputs, Q, K, V, the activation functions' inputs and the logits stay.

**In flight**: a stage holds the activations of every micro-batch whose forward has run and
whose backward has not (its weight-gradient pass, where the schedule defers it), read off the
schedule's own action order: 1F1B peaks at ``p`` micro-batches on stage 0, GPipe at ``m``,
interleaved 1F1B at Megatron's ``1 + (p-1)/(pv)`` stage loads, DualPipe at its ``p + 1`` chunks
(deepseek-ai/DualPipe README).  Megatron-Core's combined 1F1B (``overlap.ep_a2a_overlap``) runs
one more warm-up forward, then each forward interleaved layer by layer with a backward, so the
forward's activations fill while the backward's drain: the pair adds one layer of the forward (and
whatever the forward's chunk holds beyond the backward's), not a whole micro-batch
(:func:`inflight`).

**FP8 copies of the weights** (``optimizer.param_dtype: fp8``, Megatron's ``fp8_param_gather``).
An FP8 GEMM on Hopper takes its weight row-wise in the forward and column-wise (transposed) for
the input gradient (:mod:`netsim.workload.fp8`).  FP8 weights are their own row-wise copy; after
each parameter all-gather Megatron-Core makes the column-wise one (``post_all_gather_processing``,
megatron/core/fp8_utils.py at 3758b54b2b: "tensorwise: may need to create a transposed view to
match backend GEMM. blockwise: create column-wise storage"), which Transformer Engine keeps on
the weight (``update_usage(columnwise_usage=True)``, module/base.py ``quantize_weight`` at
d0067d0da6): 1 byte a weight of the transformer layers, whose GEMMs run in FP8.  The embedding
and the output head are 16-bit modules and keep 16-bit weights.  Not counted: the FP8 workspace
Transformer Engine caches for a 16-bit weight under FP8 training (row-wise and column-wise, 2
bytes a weight, ``_fp8_workspaces`` when Megatron passes ``is_first_microbatch``): with it, NeMo
24.07's GPT-3 20B FP8 run (64 H100s, TP 2) would need 75.8 GiB of its 74.5, and it ran
(``tests/validation/test_training_memory.py``), so something else in that tally is too big or the
cache is not held there; not resolved.  Under ZeRO 3 a rank keeps the copies of the one layer it
has gathered, as it keeps that layer's weights.

**Weights, gradients, optimizer state**: bytes per parameter from
:mod:`netsim.workload.optimizer`, sharded by the ZeRO stage over the (expert-)DP group that
reduces them (ZeRO 3 adds one layer's gathered weights).  The multi-token-prediction modules share
the main model's embedding and output head (DeepSeek-V3 section 3.2.3: DualPipe puts the first
and the last block on the same rank); where a schedule puts the last block elsewhere its stage
holds a copy of the embedding.  The fp32 main gradients (16-bit gradients without
``optimizer.precision_aware``) exist only during the optimizer step, when the activations are
gone: a rank needs its weights, gradients and held optimizer state plus the larger of its
activation peak and its main gradients (:mod:`netsim.workload.optimizer`).

Not counted: framework workspace, NCCL buffers, allocator fragmentation, the CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsim.config.workload import WorkloadSpec
from netsim.errors import WorkloadError
from netsim.workload.costs import ModelCosts
from netsim.workload.gradients import sharding_group
from netsim.workload.layout import ParallelLayout
from netsim.workload.optimizer import OptimizerPrecision, optimizer_precision
from netsim.workload.recompute import RecomputeMode, full_layers
from netsim.workload.schedules import Schedule

__all__ = [
    "ActivationModel",
    "MemoryReport",
    "RankMemory",
    "check_memory",
    "fp8_weight_copy_bytes",
    "inflight",
    "memory_report",
]

GiB = float(2**30)


class ActivationModel:
    """Stored activation bytes of one micro-batch on one rank (module docstring).

    Args:
        spec: the workload (model dims, micro-batch, ``training`` options).
        tp: tensor-parallel size.
        route_tokens: tokens a rank routes per micro-batch (its sequence-parallel share).
        mode: the recompute mode.
    """

    def __init__(
        self, spec: WorkloadSpec, tp: int, route_tokens: int, mode: RecomputeMode, full: frozenset[int] | None = None
    ) -> None:
        if full is None and not mode.whole_layer:
            full = frozenset()
        m = spec.model
        self.m = m
        self.tr = spec.training
        self.mode = mode
        #: the layers whose whole forward is recomputed (None: every layer; full_layers())
        self.full = full
        #: bytes per element between operators (BF16 under FP8 training)
        self.B = float(m.bpe)
        #: bytes per element of a saved GEMM input (FP8 under FP8 training)
        self.Bq = float(m.gemm_input_bpe)
        #: FP8 training: the output projection saves its own FP8 copy of the attention output,
        #: which the attention core also keeps in BF16 (one tensor when not quantised)
        self.proj_copy = self.Bq if m.dtype == "fp8" else 0.0
        #: tokens of a micro-batch the rank holds (its 1/cp share under context parallelism)
        self.sb = float(spec.micro_batch_size * m.seq_len // spec.parallelism.cp)
        self.t = float(tp)
        #: what divides the replicated part: t with sequence parallelism, else 1
        self.r = float(tp) if spec.parallelism.sequence_parallel and tp > 1 else 1.0
        self.route = float(route_tokens)
        self.gated = 3.0 if m.activation == "swiglu" else 2.0
        self.mask = 1.0 if self.tr.dropout else 0.0
        #: an eager fp32 RMSNorm (``training.eager_modules``) keeps its fp32 upcast for the
        #: backward and its 16-bit normalised tensor for the weight's gradient, not its input:
        #: 4 bytes per element more than a fused norm (netsim.calibration.eager_counts)
        self.eager_norm = 4.0 if "norm" in self.tr.eager_modules else 0.0
        lora = self.tr.lora
        #: LoRA: a frozen GEMM keeps no input for a weight gradient (Transformer Engine's
        #: ``backward_needs_input = is_grad_enabled and weight.requires_grad``, linear.py at
        #: d0067d0da6); a target's adapter keeps that input in 16 bits (netsim.workload.lora)
        self.frozen = lora is not None
        self.targets = frozenset(lora.targets) if lora is not None else frozenset()
        if self.frozen:
            self.proj_copy = 0.0  # the attention output the core keeps is the adapter's input

    def _saved_input(self, target: str | None) -> float:
        """Bytes per element a GEMM keeps of its input for the weight gradient: its saved copy,
        or under LoRA the adapter's 16-bit input when ``target`` is adapted, else none."""
        if not self.frozen:
            return self.Bq
        return self.B if target in self.targets else 0.0

    def _replicated(self, target: str | None = None) -> float:
        """Norm input, first-linear input (the norm's output, as its GEMM ``target`` saves it: not
        stored when the norms are recomputed) and dropout mask of one block (bytes)."""
        ln_out = 0.0 if self.mode.norms else self._saved_input(target)
        eager = 0.0 if self.mode.norms else self.eager_norm
        return (self.B + ln_out + self.mask + eager) * self.sb * self.m.hidden / self.r

    def _ffn(self, f: float, target: str | None = "linear_fc2") -> float:
        """Bytes per token of an MLP interior ``f`` wide: the first linear's output, which the
        activation function keeps (``2f`` gated, ``f`` GeLU), and the second linear's input
        (``f``, as its GEMM ``target`` saves it)."""
        return (self.B * (self.gated - 1.0) + self._saved_input(target)) * f

    def attention(self) -> float:
        """The attention block (norm, QKV, core, output projection)."""
        m, B, sb, t = self.m, self.B, self.sb, self.t
        a = m.heads
        # the core's 16-bit output: kept by the core for its backward, or by the output projection
        # as its input; under FP8 with the core recomputed, neither (the projection keeps its FP8
        # copy, the checkpoint only the core's inputs Q, K, V)
        out = 0.0 if (self.mode.attention_core and self.proj_copy) else B
        if m.mla is not None:
            qk = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim
            v = m.mla.v_head_dim
            # Q, K, V (the up-projections' outputs: recomputed under norms-mla-up) and the output
            qkv = 0.0 if self.mode.mla_up else B * (2 * qk + v)
            proj = (qkv + (out + self.proj_copy) * v) * sb * a / t
            proj += B * sb * (m.mla.q_lora_rank + m.mla.kv_lora_rank + m.mla.qk_rope_head_dim)
        else:
            d, kv = m.dim_per_head, m.num_kv_heads
            proj = (B * (a * d + 2 * kv * d) + (out + self.proj_copy) * a * d) * sb / t
        return self._replicated("linear_qkv") + proj + self.core()

    def core(self) -> float:
        """The attention core's stored scores (none when recomputed)."""
        if self.mode.attention_core:
            return 0.0
        a, sb, t = self.m.heads, self.sb, self.t
        if self.tr.flash_attention:
            return 4.0 * a * sb / t  # fp32 softmax statistics (log-sum-exp) per row and head
        scores = a * self.m.seq_len * sb / t
        return (self.B + self.mask * (1 + self.B)) * scores

    def mlp(self) -> float:
        """A dense MLP block (under Megatron's ``mlp`` recompute module: its input only, and the
        dropout mask after it)."""
        if self.mode.mlp:
            return (self.B + self.mask) * self.sb * self.m.hidden / self.r
        return self.mlp_stored()

    def mlp_stored(self) -> float:
        """A dense MLP block with nothing recomputed."""
        return self._replicated("linear_fc1") + self.sb * self._ffn(self.m.ffn_hidden) / self.t

    def moe(self) -> float:
        """An MoE block: routed experts at balanced load, shared experts (under Megatron's ``moe``
        recompute module: the norm's input and output only)."""
        if self.mode.moe:
            return self._replicated()
        return self.moe_stored()

    def moe_stored(self) -> float:
        """An MoE block with the ``moe`` module off (``moe_act`` and ``shared_experts`` apply)."""
        moe = self.m.moe
        assert moe is not None
        f = moe.expert_ffn_hidden or self.m.ffn_hidden
        slots = moe.top_k * self.route
        # per token-slot: the expert's input as its GEMM saves it, its output (for the combine's
        # weighting), the interior (less the second GEMM's input under the ``moe_act`` module)
        expert_in = self._saved_input(None)  # routed experts carry no adapter
        interior = self._ffn(f, None) - (expert_in * f if self.mode.moe_act else 0.0)
        routed = slots * ((expert_in + self.B) * self.m.hidden + interior)
        shared = 0.0 if self.mode.shared_experts else self.route * self._ffn(f, None) * moe.shared_experts
        return self._replicated(None) + routed + shared

    def layer_stored(self, layer: int) -> float:
        """Bytes ``layer`` keeps for its backward under no recomputation (or selective)."""
        ffn = self.moe() if self.m.is_moe_layer(layer) else self.mlp()
        return self.attention() + ffn

    def layer(self, layer: int) -> float:
        """Bytes ``layer`` keeps for its backward under the recompute mode."""
        if self._redone(layer):
            return self.B * self.sb * self.m.hidden / self.r
        return self.layer_stored(layer)

    def _redone(self, layer: int) -> bool:
        return self.full is None or layer in self.full

    def embedding(self) -> float:
        """The first block: token ids (int64) and the embedding dropout mask."""
        return 8.0 * self.sb + self.mask * self.sb * self.m.hidden / self.r

    def head(self) -> float:
        """The last block: final norm and output-projection inputs (a frozen head keeps none),
        fp32 logits."""
        inputs = 1.0 if self.frozen else 2.0
        return inputs * self.B * self.sb * self.m.hidden / self.r + 4.0 * self.sb * self.m.vocab / self.t

    def mtp(self) -> float:
        """A multi-token-prediction module's own inputs: its two norms' inputs (and, unless the
        norms are recomputed, the projection's ``2h``-wide input) and its output head's."""
        h = self.m.hidden
        proj = 0.0 if self.mode.norms else 2 * self.B * self.sb * h
        return 2 * self.B * self.sb * h / self.r + proj + self.head()

    def block(self, layers: list[int], first: bool, last: bool) -> float:
        """One micro-batch's bytes in a block of ``layers`` (multi-token-prediction blocks with
        their module's inputs)."""
        total = sum(self.layer(x) + (self.mtp() if self.m.is_mtp_layer(x) else 0.0) for x in layers)
        return total + (self.embedding() if first else 0.0) + (self.head() if last else 0.0)

    def working_set(self, layers: list[int]) -> float:
        """Full recomputation: one layer's activations, re-materialised while its backward runs
        (the ``mlp`` module: one dense MLP block's)."""
        full = max((self.layer_stored(x) for x in layers if self._redone(x)), default=0.0)
        block = 0.0  # the modules run under selective recomputation: no layer is redone whole
        if self.mode.mlp and any(not self.m.is_moe_layer(x) for x in layers):
            block = self.mlp_stored() - self.mlp()
        if self.mode.moe and any(self.m.is_moe_layer(x) for x in layers):
            block = max(block, self.moe_stored() - self.moe())
        return max(full, block)


def inflight(
    schedule: Schedule,
    stage: int,
    bytes_of_chunk: dict[int, float],
    layer_bytes_of_chunk: dict[int, float] | None = None,
) -> tuple[float, int]:
    """Peak activation bytes ``stage`` holds over its action order, and how many micro-batch
    chunks are live at that peak: a chunk's activations live from its ``F`` to its ``B`` (or to
    its ``W`` when the backward defers the weight gradients, which still need them).

    An overlapped pair (a forward marked ``overlap`` and the backward after it: DualPipe's F&B,
    Megatron-Core's combined 1F1B) runs its two chunks' layers interleaved, the backward's
    segment first at each step (:mod:`netsim.workload.pipeline`), so the forward's layers fill
    while the backward's free.  With ``layer_bytes_of_chunk`` (the largest layer's bytes of each
    chunk) the pair peaks at what the stage held before it, plus one layer of the forward (a
    layer's activations are allocated before the backward frees the layer it runs beside), plus
    what the forward adds beyond what the backward frees; without it, at the forward's whole
    chunk on top (the pair's forward counted as if it ran first).  :func:`memory_report` gives
    the layer bytes for Megatron-Core's combined 1F1B and not for DualPipe, whose ``PP + 1``
    chunks are the count its README publishes."""
    live: dict[int, int] = {}
    cur = peak = 0.0
    at_peak = 0
    order = schedule.order(stage)
    for i, a in enumerate(order):
        if a.kind == "F":
            nxt = order[i + 1] if i + 1 < len(order) else None
            paired = a.overlap and nxt is not None and nxt.kind == "B" and not nxt.split_w
            if paired and layer_bytes_of_chunk is not None:
                assert nxt is not None
                f, b = bytes_of_chunk[a.chunk], bytes_of_chunk[nxt.chunk]
                during = cur + min(f, layer_bytes_of_chunk[a.chunk] + max(0.0, f - b))
                if during > peak:
                    # both micro-batches are partly live
                    peak, at_peak = during, sum(live.values()) + 1
            live[a.chunk] = live.get(a.chunk, 0) + 1
            cur += bytes_of_chunk[a.chunk]
            if cur > peak and not (paired and layer_bytes_of_chunk is not None):
                peak, at_peak = cur, sum(live.values())
        elif a.kind == "W" or (a.kind == "B" and not a.split_w):
            live[a.chunk] -= 1
            cur -= bytes_of_chunk[a.chunk]
    return peak, at_peak


@dataclass(frozen=True)
class RankMemory:
    """Peak memory of one rank (bytes)."""

    rank: int
    stage: int
    params: float
    grads: float
    optimizer: float
    activations: float
    inflight_chunks: int
    #: fp32 main gradients, alive only during the optimizer step (after the activations are freed)
    main_grads: float = 0.0
    #: the FP8 copies of the weights Transformer Engine keeps (module docstring)
    weight_copies: float = 0.0

    @property
    def total(self) -> float:
        held = self.params + self.weight_copies + self.grads + self.optimizer
        return held + max(self.activations, self.main_grads)

    def describe(self) -> str:
        """``params 12.1, grads 24.2, optimizer 3.0, activations 51.9 GiB`` (with ``fp8 weight
        copies 4.0`` under FP8, ``main grads at the step 6.0`` when they are what peaks)."""
        parts = ("params", "grads", "optimizer", "activations")
        text = ", ".join(f"{p} {getattr(self, p) / GiB:.1f}" for p in parts)
        if self.weight_copies:
            text += f", fp8 weight copies {self.weight_copies / GiB:.1f}"
        if self.main_grads > self.activations:
            text += f", main grads at the optimizer step {self.main_grads / GiB:.1f}"
        return text + " GiB"


@dataclass(frozen=True)
class MemoryReport:
    """Memory of every rank against the accelerator's HBM (``capacity`` None: unknown)."""

    ranks: list[RankMemory]
    capacity: float | None
    accelerator: str
    recompute: str

    @property
    def peak(self) -> RankMemory:
        """The rank that needs the most (the lowest rank among equals)."""
        return max(self.ranks, key=lambda m: (m.total, -m.rank))

    @property
    def fits(self) -> bool:
        return self.capacity is None or self.peak.total <= self.capacity

    def shortfall(self) -> str:
        """One line: what the worst rank needs against the HBM."""
        p = self.peak
        cap = f"{self.capacity / GiB:.1f} GiB" if self.capacity is not None else "unknown"
        return f"needs {p.total / GiB:.1f} GiB per rank on pp stage {p.stage} ({p.describe()}), HBM is {cap}" + (
            f" ({self.accelerator})" if self.accelerator else ""
        )

    def summary(self) -> dict[str, Any]:
        """The ``memory`` field of ``summary.json`` (bytes; the worst rank and every stage's)."""
        p = self.peak
        stages: dict[int, RankMemory] = {}
        for m in self.ranks:
            if m.stage not in stages or m.total > stages[m.stage].total:
                stages[m.stage] = m
        return {
            "capacity_bytes": self.capacity,
            "fits": self.fits,
            "recompute": self.recompute,
            "peak_bytes": p.total,
            "peak_rank": p.rank,
            "peak_stage": p.stage,
            "params_bytes": p.params,
            "grads_bytes": p.grads,
            "optimizer_bytes": p.optimizer,
            "activations_bytes": p.activations,
            "main_grads_bytes": p.main_grads,
            "weight_copies_bytes": p.weight_copies,
            "per_stage_bytes": [stages[s].total for s in sorted(stages)],
        }


@dataclass(frozen=True)
class _StageParams:
    """The parameters (elements) a rank of one pipeline stage holds and trains."""

    dense: float
    expert: float
    #: the largest layer's dense parameters (ZeRO 3 gathers one layer at a time)
    biggest: float
    layers: list[int]
    #: the trained ones (all of them, or LoRA's adapters: netsim.workload.lora)
    trained_dense: float
    trained_expert: float
    #: the embedding's and the output head's share of ``dense`` (16-bit modules under FP8)
    edges: float = 0.0


def _stage_params(costs: ModelCosts, schedule: Schedule, blocks: list[list[int]], stage: int) -> _StageParams:
    """The parameters a rank of ``stage`` holds and trains, and its layers."""
    dense = expert = biggest = t_dense = t_expert = edges = 0.0
    layers: list[int] = []
    last = len(blocks) - 1
    held = [schedule.virtual_stage(stage, c) for c in sorted({a.chunk for a in schedule.order(stage)})]
    for vs in held:
        for layer in blocks[vs]:
            lp, tp = costs.layer_params(layer), costs.trainable_params(layer)
            dense += lp.dense
            expert += lp.expert
            t_dense += tp.dense
            t_expert += tp.expert
            biggest = max(biggest, lp.dense)
            layers.append(layer)
        edge = (costs.head_params() if vs == last else 0.0) + (costs.embedding_params() if vs == 0 else 0.0)
        dense += edge
        edges += edge
        t_dense += (costs.trainable_head_params() if vs == last else 0.0) + (
            costs.trainable_embedding_params() if vs == 0 else 0.0
        )
    if costs.m.mtp_depth and last in held and 0 not in held:
        dense += costs.embedding_params()  # the MTP modules' embedding: a copy away from block 0
        edges += costs.embedding_params()
        t_dense += costs.trainable_embedding_params()
    return _StageParams(dense, expert, biggest, layers, t_dense, t_expert, edges)


def fp8_weight_copy_bytes(spec: WorkloadSpec) -> float:
    """Bytes a transformer layer's weight costs in FP8 copies beside the weight itself (module
    docstring): 1 for an FP8 weight (its column-wise copy), else 0."""
    return 1.0 if spec.param_dtype == "fp8" else 0.0


def _static(
    prec: OptimizerPrecision, zero: int, sp: _StageParams, dp: int, edp: int, copy_bytes: float = 0.0
) -> tuple[float, float, float, float, float]:
    """(weights, gradients, optimizer state, fp32 main gradients, FP8 weight copies) bytes of a
    rank under ZeRO stage ``zero``; the main gradients exist only during the optimizer step
    (module docstring).  The weights count every parameter held (the embedding's and the output
    head's in 16 bits at least), the rest only the trained ones (LoRA: the adapters);
    ``copy_bytes`` per layer weight (:func:`fp8_weight_copy_bytes`)."""

    def held(per_param: float, sharded: bool, dense: float, expert: float) -> float:
        return per_param * (dense / dp + expert / edp if sharded else dense + expert)

    def trained(per_param: float, sharded: bool) -> float:
        return held(per_param, sharded, sp.trained_dense, sp.trained_expert)

    layers = sp.dense - sp.edges
    params = held(prec.param, zero >= 3, layers, sp.expert) + held(max(prec.param, 2.0), zero >= 3, sp.edges, 0.0)
    copies = copy_bytes * (sp.biggest if zero >= 3 else layers + sp.expert)
    if zero >= 3:
        params += prec.param * sp.biggest
    sharded = zero >= 1
    grads = trained(prec.grad, zero >= 2)
    return params, grads, trained(prec.held_state, sharded), trained(prec.main_grad, sharded), copies


def memory_report(
    spec: WorkloadSpec,
    layout: ParallelLayout,
    schedule: Schedule,
    costs: ModelCosts,
    blocks: list[list[int]],
    mode: RecomputeMode,
    accelerator: dict[str, Any],
) -> MemoryReport:
    """Peak memory of every rank (module docstring) against ``accelerator['memory_bytes']``."""
    act = ActivationModel(
        spec, layout.tp, costs.route_tokens, mode, full_layers(mode, blocks, spec.training.recompute_num_layers)
    )
    prec = optimizer_precision(spec)
    copy_bytes = fp8_weight_copy_bytes(spec)
    last = len(blocks) - 1
    per_stage: list[tuple[float, float, float, float, float, float, int]] = []
    for p in range(layout.pp):
        sp = _stage_params(costs, schedule, blocks, p)
        chunks = {a.chunk for a in schedule.order(p)}
        by_chunk, by_layer = {}, {}
        for c in chunks:
            vs = schedule.virtual_stage(p, c)
            by_chunk[c] = act.block(blocks[vs], vs == 0, vs == last)
            by_layer[c] = max((act.layer(x) for x in blocks[vs]), default=0.0)
        # Megatron-Core's combined 1F1B: the paired forward fills while the backward frees
        peak, live = inflight(schedule, p, by_chunk, by_layer if schedule.a2a_overlap else None)
        rank = layout.rank_of(p, 0, 0)
        replicas = layout.dp_replicas
        dp = len(sharding_group(layout, schedule, rank, False, replicas))
        edp = len(sharding_group(layout, schedule, rank, True, replicas))
        static = _static(prec, spec.parallelism.zero_stage, sp, dp, edp, copy_bytes)
        per_stage.append((*static, peak + act.working_set(sp.layers), live))
    ranks = []
    for r in range(layout.world):
        p = layout.coords(r)[0]
        params, grads, state, main_grads, copies, acts, live = per_stage[p]
        ranks.append(RankMemory(r, p, params, grads, state, acts, live, main_grads, copies))
    cap = accelerator.get("memory_bytes")
    return MemoryReport(ranks, float(cap) if cap else None, str(accelerator.get("name", "")), mode.name)


def check_memory(report: MemoryReport, spec: WorkloadSpec, allow_oom: bool) -> None:
    """Raise a one-line WorkloadError when the worst rank does not fit (unless ``allow_oom``),
    with a hint at what would help most (recomputation when activations dominate, else sharding)."""
    if report.fits or allow_oom:
        return
    p = report.peak
    if p.activations >= max(p.params, p.grads, p.optimizer):
        hint = "recompute activations (training.recompute: selective or full) or use more pipeline stages"
    else:
        hint = "shard the model state (parallelism.zero_stage, tp, pp, more data-parallel ranks)"
    raise WorkloadError(
        f"does not fit in accelerator memory: {report.shortfall()}; {hint}, or pass --allow-oom", source=spec.source
    )
