"""Model costs: the kernels a layer runs, their shapes, and the parameters a rank holds (counted by
:mod:`netsim.workload.params`).

Every compute op of the step is a list of :class:`~netsim.workload.kernel_calls.KernelCall` (a kernel of the catalogue
:data:`netsim.calibration.kernels.KERNELS` with its shape and pass); the compute model
(:mod:`netsim.calibration.compute`, a measured table or the roofline) turns each call into
seconds.  Shapes are per rank (``tp`` splits heads and FFN columns; with sequence parallelism
norms, routers and token permutations run on the rank's ``1/tp`` share of the tokens).

Per micro-batch of ``T = micro_batch_size * seq_len`` tokens, ``t = tp``, ``Ts = T / t``:

=================  ==========================================================================
part               kernels (forward; backward uses the same shapes with pass ``bwd``)
=================  ==========================================================================
attention          norm(Ts); GEMM QKV [T, (q+2kv)/t, h] (MLA: q/kv down and up projections);
                   (``training.eager_modules: [rope]``) rope_eager(T, (q+kv)/t); the
                   attention core; GEMM out [T, h, q/t]
closing            (``training.dropout``) dropout(Ts, h); bias + residual add residual(Ts, h) after
                   attention, the dense MLP and the MoE block
attention core     fused (flash) attention(batch, heads/t, seq, head_dim); or, with
                   ``training.flash_attention: false``, Megatron's unfused core: batched
                   GEMMs Q K^T and P V (``grouped_gemm`` with one group per sequence and head,
                   the full s x s products), scale-mask-softmax over the s x s scores and
                   (``training.dropout``) dropout on them
dense MLP          norm(Ts); GEMM up [T, (2 if SwiGLU) f/t, h]; swiglu(T, f/t) or (GELU)
                   bias + gelu(T, f/t); GEMM down [T, h, f/t]
MoE pre            norm(Ts); router_linear(Ts, h, E, k); permute(Ts, h, k) (not with HybridEP,
                   whose kernels permute as they move the tokens)
experts            grouped_gemm(R, E_local, (2) f_e, h); swiglu(R, f_e) (or gelu;
                   ``training.activation_fusion: false``: swiglu_eager or gelu_eager, then
                   prob_weight(R, f_e), the router probabilities applied); grouped_gemm(R,
                   E_local, h, f_e)
                   (R = tokens the rank's experts received; f_e the expert FFN / expert_tp);
                   under Megatron's ``alltoall`` with several local experts, a sort of the R rows
                   by expert before and after (permute(R, h, 1))
MoE post           unpermute(Ts, h, k) (not with HybridEP); shared experts as GEMMs on Ts tokens
LM head            norm(Ts); GEMM [T, V/t, h]  (last pipeline block; 16-bit under FP8); the loss
                   over the ``[T, V/t]`` logits (``training.cross_entropy``: the catalogue's
                   ``cross_entropy``, ``cross_entropy_fused`` or ``cross_entropy_online``)
MTP input          (``model.mtp_depth``) norm(Ts) x 2; GEMM [T, h, 2h]; then the MTP block (a
                   layer) and the LM head again (last pipeline block)
optimizer          adamw(params held by the rank, / dp with ZeRO >= 1)
=================  ==========================================================================

The MoE block's lists (MoE pre, experts, MoE post, the shared experts) are
:class:`netsim.workload.moe_costs.MoEKernels`, which :class:`ModelCosts` mixes in.

The embedding lookup is not timed (no catalogue kernel; a gather of ``T`` rows).  The loss is:
with a 128k-152k vocabulary its passes over the logits take 2-4% of a Hopper step.  A backward
GEMM computes the input gradient and the weight gradient, equal FLOPs; when a schedule defers
the weight gradient (zero bubble, DualPipe) the ``B`` op takes half of every GEMM backward
(``scale=0.5``) and the ``W`` op the other half.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, NamedTuple

from netsim.calibration.catalogue import CROSS_ENTROPY_KERNELS
from netsim.config.model import ModelSpec
from netsim.config.workload import LoraSpec
from netsim.workload.fp8 import QuantBytes, quant_bytes
from netsim.workload.kernel_calls import KernelCall, Part, byte_call, trains_weight
from netsim.workload.kernel_calls import call as _call
from netsim.workload.kernel_calls import memo_kernels as _memo
from netsim.workload.kernel_calls import split as _split
from netsim.workload.lora import TE_NAMES, adapter_gemms
from netsim.workload.moe_costs import MoEKernels
from netsim.workload.params import LayerParams, ParamCounts

__all__ = ["DETERMINISTIC_ATTENTION_BWD", "LOSS_KERNELS", "LayerParams", "ModelCosts", "TpBackward", "TpForward"]

#: the fused attention's backward in a deterministic algorithm over its default, *approx.*: the
#: query gradient is reduced over the key blocks in a fixed order instead of by atomic adds.
#: FlashAttention-3 on H100, head dim 128, causal, sequence 8,192, 16 heads (Dao-AILab/
#: flash-attention pull request #1893): 2.900 ms deterministic (its shortest-processing-time-first
#: schedule) against 2.391 ms; the same bench has cuDNN's default backward at 2.925 ms.  Used for
#: cuDNN's deterministic algorithm too, which publishes no timing.
DETERMINISTIC_ATTENTION_BWD = 2.900 / 2.391

#: ``training.cross_entropy`` -> the catalogue kernel of the loss
LOSS_KERNELS: dict[str, str] = dict(zip(("unfused", "fused", "te"), CROSS_ENTROPY_KERNELS, strict=True))


def _overrides(model: ModelSpec) -> dict[str, float | None] | None:
    """``model.fp8_quant_bytes`` as a mapping (None when not given)."""
    return model.fp8_quant_bytes.model_dump() if model.fp8_quant_bytes is not None else None


class TpForward(NamedTuple):
    """A TP block's forward kernels cut where its TP communication meets them (the all-gather
    feeds ``gemm_in``, the reduce-scatter takes ``gemm_out``'s output)."""

    norm: list[KernelCall]
    #: the column-parallel GEMMs (QKV or MLA's projections before the core; fc1), FP8 casts first
    gemm_in: list[KernelCall]
    #: the attention core, or the MLP's activation
    mid: list[KernelCall]
    #: the row-parallel GEMM (the attention's output projection; fc2), its FP8 cast first
    gemm_out: list[KernelCall]
    #: dropout and the residual add
    close: list[KernelCall]


class TpBackward(NamedTuple):
    """A TP block's backward kernels in the order they run, cut the same way: the input-gradient
    (``dgrad``) and weight-gradient (``wgrad``) halves of each GEMM apart (no ``wgrad`` in a
    ``B`` part: the schedule defers it)."""

    close: list[KernelCall]
    out_dgrad: list[KernelCall]
    out_wgrad: list[KernelCall]
    mid: list[KernelCall]
    in_dgrad: list[KernelCall]
    in_wgrad: list[KernelCall]
    norm: list[KernelCall]


class ModelCosts(MoEKernels, ParamCounts):
    """Kernel calls and parameter counts of ``model`` for one rank.

    Args:
        model: the model dims.
        micro_batch_size: sequences per micro-batch.
        tp: tensor-parallel size.
        sequence_parallel: norms / routers / permutation on ``1/tp`` of the tokens.
        expert_slots_per_rank: physical expert slots per EP rank (0 for dense models).
        expert_tp: ranks one routed expert is split over (its FFN columns / rows: each rank runs
            ``1/expert_tp`` of every expert GEMM and holds that share of the weights).
        flash_attention: the attention core as one fused kernel (else Megatron's unfused core).
        dropout: the model's dropout: on the attention probabilities (unfused core only; the
            fused kernel applies it in its tiles) and before every residual add.
        tp_slowdown: time multipliers of the attention's and dense MLP's GEMMs by Transformer
            Engine name (``qkv_fprop``, ``proj_dgrad``, ``fc1_wgrad``, ...: the SMs a userbuffers
            TP overlap takes from them, :func:`netsim.workload.tp_overlap.tp_gemm_slowdowns`).
        lora: ``training.lora``: frozen base weights, trained adapters (:mod:`netsim.workload.lora`).
        document_tokens: ``training.document_tokens``: packed documents of this mean length, each
            attending only to itself (the attention core's shape, :meth:`attention_core`).
        deterministic: ``training.deterministic`` (Megatron's ``--deterministic-mode``): the fused
            attention's backward takes :data:`DETERMINISTIC_ATTENTION_BWD` of its time.
        activation_fusion: ``training.activation_fusion`` (Megatron's ``bias_activation_fusion``);
            false: the activation runs in eager PyTorch (the catalogue's ``swiglu_eager``,
            ``gelu_eager``) and the routed experts weight it by the router probabilities in
            ``prob_weight`` after it.
        eager_modules: ``training.eager_modules``: ``norm`` times the RMSNorms as the catalogue's
            ``rmsnorm_eager``, ``rope`` adds ``rope_eager`` on the queries and keys.
        grad_accumulation_bytes: without gradient accumulation fusion
            (``training.gradient_accumulation_fusion: false``), the bytes per trained weight of the
            kernel that adds each micro-batch's weight gradient into the main gradient: read the
            16-bit gradient, read and write the main gradient (2 + 2 x 4 = 10 in fp32); 0: fused.
    """

    def __init__(
        self,
        model: ModelSpec,
        micro_batch_size: int,
        tp: int,
        *,
        sequence_parallel: bool = True,
        expert_slots_per_rank: int = 0,
        expert_tp: int = 1,
        flash_attention: bool = True,
        dropout: bool = False,
        cp: int = 1,
        cp_a2a: int = 1,
        cross_entropy: str = "fused",
        tp_slowdown: Mapping[str, float] | None = None,
        lora: LoraSpec | None = None,
        document_tokens: int | None = None,
        grad_accumulation_bytes: float = 0.0,
        deterministic: bool = False,
        activation_fusion: bool = True,
        eager_modules: Sequence[str] = (),
    ) -> None:
        self.m = model
        #: bytes per trained weight that a separate kernel moves in each micro-batch's backward to
        #: add the weight gradient into the main gradient (0: Megatron's gradient accumulation
        #: fusion, the weight-gradient GEMM accumulates in its epilogue)
        self.grad_accumulation_bytes = grad_accumulation_bytes
        #: the fused attention's backward in its deterministic algorithm (``training.deterministic``)
        self.attention_bwd_scale = DETERMINISTIC_ATTENTION_BWD if deterministic else 1.0
        #: packed sequences (``training.document_tokens``): the mean document length the attention
        #: core is causal over (None: the whole sequence)
        self.document_tokens = document_tokens
        #: LoRA (``training.lora``): the base weights frozen, adapters beside these TE GEMM names
        self.lora: LoraSpec | None = lora
        self.frozen = lora is not None
        self.lora_targets = frozenset(TE_NAMES[t] for t in lora.targets) if lora is not None else frozenset()
        #: time multiplier per Transformer Engine GEMM name (qkv_fprop, fc2_dgrad, ...) under the
        #: userbuffers TP overlap (netsim.workload.tp_overlap; empty: none)
        self.tp_slowdown: Mapping[str, float] = dict(tp_slowdown or {})
        #: the catalogue kernel of the loss (``training.cross_entropy``)
        self.loss_kernel = LOSS_KERNELS[cross_entropy]
        self.flash = flash_attention
        self.dropout = dropout
        self.mbs = micro_batch_size
        self.tp = tp
        #: context-parallel ranks a sequence is split over (netsim.workload.context_parallel)
        self.cp = cp
        #: CP ranks the Q/K/V all-to-all spans (``a2a``: cp; ``a2a+p2p``: its first level; else 1):
        #: the core runs 1 / cp_a2a of the TP rank's heads on cp_a2a times the rank's tokens
        self.cp_a2a = cp_a2a
        #: tokens of a micro-batch one rank holds (its 1/cp share of every sequence)
        self.tokens = micro_batch_size * model.seq_len // cp
        self.sp_tokens = self.tokens // tp if sequence_parallel and tp > 1 else self.tokens
        self.gated = model.activation == "swiglu"
        #: the activation's catalogue kernel; squared ReLU (Megatron's jit-fused ``relu(x) ** 2``,
        #: not gated) is timed as the GELU kernel, one elementwise pass each way (approx.)
        self.act_kernel = ("swiglu" if self.gated else "gelu") + ("" if activation_fusion else "_eager")
        #: ``training.eager_modules``: the RMSNorm and the rotary embedding as eager fp32 PyTorch ops
        #: (netsim.calibration.eager_counts); else one fused norm and an untimed rotary embedding
        self.norm = ("rmsnorm_eager" if "norm" in eager_modules else "rmsnorm") if self.gated else "layernorm"
        self.eager_rope = "rope" in eager_modules
        self._init_moe(model, expert_slots_per_rank, expert_tp, activation_fusion)
        self._memo: dict[tuple[Any, ...], Any] = {}
        #: bytes the FP8 quantisation casts move per element (None: the model is not FP8)
        fp8 = quant_bytes(model.fp8_recipe, _overrides(model)) if model.dtype == "fp8" else None
        # frozen weights (LoRA): no weight gradient reads a column-wise copy (netsim.workload.fp8)
        self.fp8: QuantBytes | None = fp8.frozen() if fp8 is not None and self.frozen else fp8

    # ------------------------------------------------------------------ FP8 quantisation

    @staticmethod
    def _cast(tokens: float, width: float, bytes_per_element: float) -> KernelCall:
        """A quantisation cast of a ``[tokens, width]`` BF16 tensor moving ``bytes_per_element``
        (netsim.workload.fp8), timed by :func:`~netsim.workload.kernel_calls.byte_call`."""
        return byte_call(tokens, width, bytes_per_element, quant=True)

    def _finish(self, calls: list[KernelCall], part: Part, kernel: str = "gemm", norm_fed: int = 0) -> list[KernelCall]:
        """``calls`` (a forward) as ``part``; in an FP8 model, with the quantisation of every FP8
        ``kernel`` call: its input before it in the forward (the first ``norm_fed`` of them are
        fed by a norm), its output gradient in the backward's ``B`` part."""
        q = self.fp8
        if q is None:
            return calls if part == "F" else self._back(calls, part)
        out: list[KernelCall] = []
        seen = 0
        for c in calls:
            if c.kernel == kernel and not c.no_fp8 and part != "W":
                rows, n, k = self._gemm_dims(c)
                width, nbytes = (k, q.after_norm if seen < norm_fed else q.other) if part == "F" else (n, q.grad)
                if nbytes > 0:  # a frozen GEMM's norm-fed input under delayed scaling: no cast
                    out.append(self._cast(rows, width, nbytes))
                seen += 1
            if part == "F":
                out.append(c)
        return out if part == "F" else [*out, *self._back(calls, part)]

    @staticmethod
    def _gemm_dims(c: KernelCall) -> tuple[float, float, float]:
        """(rows, n, k) of a ``gemm`` or ``grouped_gemm`` call."""
        s = dict(c.shape)
        return (s["m"] if c.kernel == "gemm" else s["tokens"]), s["n"], s["k"]

    def weight_quant(self, weight_elems: float) -> list[KernelCall]:
        """The per-step FP8 casts of ``weight_elems`` weights (TransformerEngine caches them over
        the micro-batches of a step); [] for a model that is not FP8 or no weights."""
        if self.fp8 is None or weight_elems <= 0:
            return []
        h = self.m.hidden
        return [self._cast(weight_elems / h, h, self.fp8.weight)]

    def fp8_weight_elems(self, layer: int) -> float:
        """Weights of ``layer``'s FP8 GEMMs one rank holds (its parameters less the norms, the
        router and, for a multi-token-prediction block, its input norms); 0 if not FP8."""
        if self.fp8 is None:
            return 0.0
        lp = self.layer_params(layer)
        h = self.m.hidden
        other = 2 * h
        if self.m.is_moe_layer(layer):
            assert self.m.moe is not None
            other += h * self.m.moe.experts
        if self.m.is_mtp_layer(layer):
            other += 3 * h
        return lp.dense + lp.expert - other

    # ------------------------------------------------------------------ kernels

    def _tp_gemm(self, te_name: str, *, m: float, n: float, k: float) -> KernelCall:
        """A forward GEMM that Transformer Engine names ``te_name`` (``qkv``, ``proj``, ``fc1``,
        ``fc2``), slowed in each pass by the SMs its TP overlaps take (``tp_slowdown``)."""
        call = _call("gemm", "fwd", m=m, n=n, k=k)
        s = self.tp_slowdown
        if not s:
            return call
        slow = (s.get(f"{te_name}_fprop", 1.0), s.get(f"{te_name}_dgrad", 1.0), s.get(f"{te_name}_wgrad", 1.0))
        return call if slow == (1.0, 1.0, 1.0) else replace(call, slow=slow)

    def _back(self, calls: list[KernelCall], part: Part, weights: bool = True) -> list[KernelCall]:
        """:func:`netsim.workload.kernel_calls.split` with the model's frozen weights (LoRA); in a
        part that computes weight gradients, without gradient accumulation fusion, the add of
        each trained GEMM weight's gradient into its main gradient after the part's kernels
        (``weights``: the GEMM calls carry weights; not the unfused attention core's batched
        products)."""
        out = _split(calls, part, self.frozen)
        if not weights or self.grad_accumulation_bytes <= 0 or part not in ("W", "BW"):
            return out
        return out + [self._grad_add(c) for c in calls if trains_weight(c, self.frozen)]

    def _grad_add(self, c: KernelCall) -> KernelCall:
        """The unfused gradient accumulation of GEMM ``c``'s weight (``[n, k]``, per expert for a
        grouped GEMM): Megatron's ``param.main_grad.add_(param.grad)`` (the DDP's gradient hook
        without gradient accumulation fusion), timed as the ``residual`` kernel on the weight's
        shape scaled to its bytes, as the FP8 casts are (netsim.workload.fp8)."""
        s = dict(c.shape)
        rows = s["n"] * (s["experts"] if c.kernel == "grouped_gemm" else 1.0)
        return byte_call(rows, s["k"], self.grad_accumulation_bytes)

    def _adapted(self, te_name: str, call: KernelCall) -> list[KernelCall]:
        """The base GEMM ``call`` (Transformer Engine's ``te_name``) and, when LoRA targets it, its
        adapter's two GEMMs after it, in 16 bits (:mod:`netsim.workload.lora`)."""
        if te_name not in self.lora_targets or self.lora is None:
            return [call]
        rows, n, k = self._gemm_dims(call)
        return [
            call,
            *(
                replace(_call("gemm", "fwd", m=rows, n=an, k=ak, no_fp8=True), adapter=True)
                for an, ak in adapter_gemms(te_name, self.lora.rank, self.tp, n=n, k=k)
            ),
        ]

    def _attention_fwd(self) -> tuple[list[KernelCall], list[KernelCall]]:
        """The attention block's forward kernels before the core (norm, projections to Q, K, V)
        and after it (output projection, closing)."""
        m, t, T = self.m, self.tp, self.tokens
        h = m.hidden
        heads = max(1, m.heads // t)
        pre = [_call(self.norm, "fwd", tokens=self.sp_tokens, hidden=h)]
        if m.mla is not None:
            a = m.mla
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            # the down-projections read the block's (all-gathered) input: TE's qkv overlaps
            pre += [
                self._tp_gemm("qkv", m=T, n=a.q_lora_rank, k=h),
                _call("gemm", "fwd", m=T, n=heads * qk, k=a.q_lora_rank),
                self._tp_gemm("qkv", m=T, n=a.kv_lora_rank + a.qk_rope_head_dim, k=h),
                _call("gemm", "fwd", m=T, n=heads * (a.qk_nope_head_dim + a.v_head_dim), k=a.kv_lora_rank),
            ]
            post = [self._tp_gemm("proj", m=T, n=h, k=heads * a.v_head_dim)]
        else:
            d = m.dim_per_head
            kv = max(1, m.num_kv_heads // t)
            pre += self._adapted("qkv", self._tp_gemm("qkv", m=T, n=(heads + 2 * kv) * d, k=h))
            pre += self._rope()
            post = self._adapted("proj", self._tp_gemm("proj", m=T, n=h, k=heads * d))
        return pre, post + self._close()

    def _rope(self) -> list[KernelCall]:
        """The rotary embedding of the rank's queries and keys when it is timed (eager:
        ``training.eager_modules``), between the QKV projection and the core; else []."""
        m = self.m
        if not self.eager_rope or m.mla is not None:
            return []
        width = (max(1, m.heads // self.tp) + max(1, m.num_kv_heads // self.tp)) * m.dim_per_head
        return [_call("rope_eager", "fwd", tokens=self.tokens, hidden=width)]

    @property
    def _norm_fed(self) -> int:
        """GEMMs of the attention block whose input a norm writes (MLA: all four projections, fed
        by the block's norm or by the q and kv latents' norms; else the fused QKV)."""
        return 4 if self.m.mla is not None else 1

    @_memo
    def attention(self, part: Literal["F", "B", "W", "BW"], window: int | None = None) -> list[KernelCall]:
        """The attention block; ``window``: the layer's sliding window (:meth:`attention_core`)."""
        pre, post = self._attention_fwd()
        calls = [*pre, *self.attention_core("F", window), *post]
        return self._finish(calls, part, norm_fed=self._norm_fed)

    @_memo
    def attention_pre(self, part: Literal["F", "B", "W", "BW"]) -> list[KernelCall]:
        """The attention block up to the core (norm, Q/K/V projections): with context parallelism
        the ring exchange of K and V starts when they exist."""
        return self._finish(self._attention_fwd()[0], part, norm_fed=self._norm_fed)

    @_memo
    def attention_post(self, part: Literal["F", "B", "W", "BW"]) -> list[KernelCall]:
        """The attention block after the core (output projection, closing)."""
        return self._finish(self._attention_fwd()[1], part)

    @property
    def cp_kv_bytes(self) -> float:
        """Bytes of the keys and values one rank holds for a micro-batch: what each step of the
        context-parallel ring passes to the next rank (per TP rank: its heads; MLA: every head's
        key and value, which the up-projections expand)."""
        a2a = self.cp_a2a_bytes
        return float(a2a["k"] + a2a["v"])

    @property
    def cp_a2a_bytes(self) -> dict[str, float]:
        """Bytes of the rank's share of Q, K, V and the core's output O for a micro-batch (its
        tokens, its TP rank's heads): what each all-to-all of the ``a2a`` context-parallel types
        carries, one call per tensor, in ``(dq, dk, dv, do)`` the same sizes (Transformer Engine's
        ``flash_attn_a2a_communicate``; MLA: every head's key and value at their head dims)."""
        m = self.m
        heads = max(1, m.heads // self.tp)
        if m.mla is not None:
            a = m.mla
            qk, v, kv_heads = a.qk_nope_head_dim + a.qk_rope_head_dim, a.v_head_dim, heads
        else:
            qk = v = m.dim_per_head
            kv_heads = max(1, m.num_kv_heads // self.tp)
        per = self.tokens * m.bpe
        return {"q": per * heads * qk, "k": per * kv_heads * qk, "v": per * kv_heads * v, "o": per * heads * v}

    def _close(self) -> list[KernelCall]:
        """What closes a sub-block (attention, MLP, MoE) on the rank's tokens (its sequence-
        parallel share): the bias + residual add, after dropout when the model has it."""
        ts, h = self.sp_tokens, self.m.hidden
        calls = [_call("dropout", "fwd", tokens=ts, hidden=h)] if self.dropout else []
        return [*calls, _call("residual", "fwd", tokens=ts, hidden=h)]

    @_memo
    def attention_core(self, part: Literal["F", "B", "W", "BW"], window: int | None = None) -> list[KernelCall]:
        """The attention core (what selective recomputation re-runs): the fused kernel, or
        Megatron's unfused core (module doc) when ``flash_attention`` is off.  ``window``: a
        sliding window of that many tokens (``model.sliding_window``; cp = 1)."""
        m = self.m
        # the a2a context-parallel types: 1 / cp_a2a of the heads over cp_a2a times the tokens
        heads = max(1, m.heads // (self.tp * self.cp_a2a))
        ring = self.cp // self.cp_a2a  # ranks of the K/V ring (cp for p2p, 1 for a2a)
        d = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim if m.mla is not None else m.dim_per_head
        s = m.seq_len
        docs = 1.0  # causal calls per sequence
        if self.document_tokens is not None and self.document_tokens < s:
            # packed documents (cp = 1): s / L causal calls of L tokens, the FLOPs of each document
            # attending to itself; the efficiency of an L-token call (the curve at L)
            docs, s = s / self.document_tokens, self.document_tokens
        if window is not None and 2 * window < s:
            # a query attends to at most `window` keys: s * window - window^2 / 2 score entries,
            # about those of s / (2 window) causal calls of 2 window tokens (s * window), at the
            # efficiency of a 2-window call (each query tile meets the tiles of its window)
            docs, s = docs * s / (2 * window), 2 * window
        if self.flash:
            # under context parallelism (netsim.workload.context_parallel) a ring of r ranks runs r
            # blocks of s/r queries against s/r keys, each with the FLOPs of a causal call of that
            # length (1/r of the sequence's, on 1/cp_a2a of the heads); no ring is the whole sequence
            batch = self.mbs * ring * docs
            core = _call("attention", "fwd", batch=batch, heads=heads, seq=s // ring, head_dim=d)
            # training.deterministic: its backward's multiplier, folded in by split
            calls = [replace(core, slow=(1.0, self.attention_bwd_scale, 1.0))]
        else:
            groups = self.mbs * heads * docs
            rows = groups * s
            calls = [
                _call("grouped_gemm", "fwd", tokens=rows, experts=groups, n=s, k=d),
                _call("softmax", "fwd", tokens=rows, hidden=s),
            ]
            if self.dropout:
                calls.append(_call("dropout", "fwd", tokens=rows, hidden=s))
            calls.append(_call("grouped_gemm", "fwd", tokens=rows, experts=groups, n=d, k=s))
        return calls if part == "F" else self._back(calls, part, weights=False)

    @_memo
    def mlp(self, part: Part) -> list[KernelCall]:
        pieces, fed = self._block_fwd("mlp")
        return self._finish([c for piece in pieces for c in piece], part, norm_fed=fed)

    def _block_fwd(self, block: Literal["attn", "mlp"], window: int | None = None) -> tuple[TpForward, int]:
        """The forward of a TP block (the attention or the dense MLP) as :class:`TpForward`
        pieces without the FP8 casts, and how many of its GEMMs a norm feeds (:meth:`_finish`)."""
        if block == "attn":
            pre, post = self._attention_fwd()
            cut = len(post) - len(self._close())  # the output projection (and its adapter)
            rope = len(self._rope())  # the rotary embedding runs before the core, after the GEMMs
            core = [*pre[len(pre) - rope :], *self.attention_core("F", window)]
            return TpForward(pre[:1], pre[1 : len(pre) - rope], core, post[:cut], post[cut:]), self._norm_fed
        m, T = self.m, self.tokens
        f = max(1, m.ffn_hidden // self.tp)
        pieces = TpForward(
            [_call(self.norm, "fwd", tokens=self.sp_tokens, hidden=m.hidden)],
            self._adapted("fc1", self._tp_gemm("fc1", m=T, n=(2 if self.gated else 1) * f, k=m.hidden)),
            [_call(self.act_kernel, "fwd", tokens=T, hidden=f)],
            self._adapted("fc2", self._tp_gemm("fc2", m=T, n=m.hidden, k=f)),
            self._close(),
        )
        return pieces, 1

    @_memo
    def tp_forward(self, block: Literal["attn", "mlp"], window: int | None = None) -> TpForward:
        """:meth:`attention` or :meth:`mlp` forward cut where the block's TP communication meets
        its GEMMs (:class:`TpForward`; the same calls); ``window``: the attention's sliding window."""
        (norm, gemm_in, mid, gemm_out, close), fed = self._block_fwd(block, window)
        return TpForward(norm, self._finish(gemm_in, "F", norm_fed=fed), mid, self._finish(gemm_out, "F"), close)

    @_memo
    def tp_backward(
        self, block: Literal["attn", "mlp"], part: Literal["B", "BW"], window: int | None = None
    ) -> TpBackward:
        """The backward ``part`` of :meth:`attention` or :meth:`mlp` cut the same way, in the order
        it runs (:class:`TpBackward`; the same calls as the block's ``part``)."""
        (norm, gemm_in, mid, gemm_out, close), _ = self._block_fwd(block, window)
        wgrad = part == "BW"
        return TpBackward(
            self._back(close, part),
            self._finish(gemm_out, "B"),
            self._back(gemm_out, "W") if wgrad else [],
            self._back(mid, part),
            self._finish(gemm_in, "B"),
            self._back(gemm_in, "W") if wgrad else [],
            self._back(norm, part),
        )

    @_memo
    def head(self, part: Part) -> list[KernelCall]:
        """The final norm, the output projection (kept in 16 bits under FP8: ``no_fp8``) and the
        loss over the rank's vocabulary columns of the logits."""
        m = self.m
        vocab = max(1, m.vocab // self.tp)
        calls = [
            _call(self.norm, "fwd", tokens=self.sp_tokens, hidden=m.hidden),
            _call("gemm", "fwd", m=self.tokens, n=vocab, k=m.hidden, no_fp8=True),
            _call(self.loss_kernel, "fwd", tokens=self.tokens, vocab=vocab, no_fp8=True),
        ]
        return calls if part == "F" else self._back(calls, part)

    @_memo
    def mtp_in(self, part: Part) -> list[KernelCall]:
        """A multi-token-prediction module's input (DeepSeek-V3 section 2.2, eq. 21): the RMSNorms
        of the previous depth's hidden states and of the next tokens' embeddings, and the
        projection ``M`` of their concatenation (``2h -> h``).  The embedding lookup is not timed
        (nor is the main model's); the module's output head is :meth:`head` (shared)."""
        m = self.m
        calls = [
            _call(self.norm, "fwd", tokens=self.sp_tokens, hidden=m.hidden),
            _call(self.norm, "fwd", tokens=self.sp_tokens, hidden=m.hidden),
            _call("gemm", "fwd", m=self.tokens, n=m.hidden, k=2 * m.hidden),
        ]
        return self._finish(calls, part)

    @_memo
    def recompute_norms_mla(self, ffn_norm: bool, norms: bool = True, mla: bool = True) -> list[KernelCall]:
        """What the ``norms-mla-up`` recomputation re-runs before a layer's backward (DeepSeek-V3
        section 3.2.3): the attention's RMSNorm and, with MLA, the q and kv up-projections (their
        outputs, the per-head queries, keys and values, are not stored); ``ffn_norm``: the FFN
        block's RMSNorm (before the MLP / MoE backward).  ``norms`` / ``mla``: which of the two
        (Megatron's ``layernorm`` and ``mla_up_proj`` recompute modules)."""
        m, T = self.m, self.tokens
        norm = [_call(self.norm, "fwd", tokens=self.sp_tokens, hidden=m.hidden)] if norms else []
        if ffn_norm:
            return norm
        calls = list(norm)
        if m.mla is not None and mla:
            a = m.mla
            heads = max(1, m.heads // self.tp)
            calls += [
                _call("gemm", "fwd", m=T, n=heads * (a.qk_nope_head_dim + a.qk_rope_head_dim), k=a.q_lora_rank),
                _call("gemm", "fwd", m=T, n=heads * (a.qk_nope_head_dim + a.v_head_dim), k=a.kv_lora_rank),
            ]
        return self._finish(calls, "F", norm_fed=2)

    @staticmethod
    def optimizer(params: float) -> list[KernelCall]:
        return [_call("adamw", "step", params=params)] if params > 0 else []
