"""The ops of one transformer layer for one micro-batch: compute, TP collectives, expert traffic.

Forward (``F``) of a layer: [ZeRO 3 parameter gather]; attention (TP all-gather, compute,
reduce-scatter); then the dense MLP the same way, or the MoE block: router, per slice
dispatch -> experts -> combine, unpermute (+ shared experts; with ``overlap.
shared_expert_overlap`` their first half runs beside the dispatch and their second beside the
combine, as Megatron-Core's ``moe_shared_expert_overlap`` does).  Backward (``B`` input gradient,
``BW`` with the weight gradient) runs the same parts in reverse; the weight-gradient-only part
(``W``, zero bubble / DualPipe) is one compute op per layer.

Activation recomputation (:mod:`netsim.workload.recompute`): ``full`` re-runs the layer's
forward (``R.*`` ops, its TP collectives and all-to-alls again, phases ``rcp-fwd-*``) before its
backward; ``selective`` re-runs the attention kernel (``R.attn-core``) before the attention's
backward; ``norms-mla-up`` re-runs the norms (and MLA's up-projections) inside the backward op
of their block; Megatron's ``moe_act`` module re-runs the experts' activation inside their
backward op, its ``mlp`` module a dense MLP block's forward (``R.mlp``, TP collectives of phase
``rcp-fwd-mlp-*``) before its backward, its ``moe`` module the MoE block's forward (``R.*``,
all-to-alls of phase ``rcp-fwd-*``), its ``shared_experts`` module the shared experts' forward
(``R.shared``).

Multi-token prediction (``model.mtp_depth``, DeepSeek-V3 section 2.2): an MTP block (a layer
index from ``model.layers`` on, in the last pipeline block) runs its input projection
(``mtp-in``) before and the shared output head (``mtp-head``) after its transformer block, and
their backward around the block's.

TP communication (Megatron, Shoeybi et al. 2019 / Korthikanti et al. 2022): with sequence
parallelism an all-gather before and a reduce-scatter after attention and the dense MLP, of
``micro_batch_size * seq_len * hidden`` elements (``/ cp``); without it one all-reduce after each.

Context parallelism (:mod:`netsim.workload.context_parallel`): the attention op is cut into the
part before the core (``attn-pre``), the core (``attn-core``) with its K/V exchanges (phases
``fwd-cp``, ``bwd-cp``, ``rcp-fwd-cp``) and the part after (``attn-post``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netsim.workload.context import BuildContext
from netsim.workload.context_parallel import ContextParallelRing
from netsim.workload.costs import KernelCall, Part
from netsim.workload.emit import OpEmitter
from netsim.workload.experts import ExpertTraffic
from netsim.workload.gradients import GradientReducer
from netsim.workload.plan import Deps
from netsim.workload.recompute import RecomputeMode, full_layers

__all__ = ["LayerEmitter"]

#: what a compute op runs: a call list, or the concatenation of several
Calls = list[KernelCall] | tuple[list[KernelCall], ...]


class LayerEmitter:
    """Emits the ops of one layer's forward, backward or weight-gradient pass."""

    def __init__(
        self,
        ctx: BuildContext,
        emit: OpEmitter,
        experts: ExpertTraffic,
        grads: GradientReducer,
        router_kernel: str,
        recompute: RecomputeMode,
    ) -> None:
        self.ctx = ctx
        self.emit = emit
        self.experts = experts
        self.grads = grads
        self.router_kernel = router_kernel
        self.recompute = recompute
        #: layers whose whole forward the backward re-runs (None: every layer; empty: none)
        self.full_layers = full_layers(recompute, ctx.blocks, ctx.spec.training.recompute_num_layers)
        #: selective recomputation: the attention core's forward kernel (one list object, so its
        #: duration is computed once)
        self.core_fwd = ctx.costs.attention_core("F")
        #: context parallelism: the attention's K/V ring (None without it)
        self.ring = ContextParallelRing(ctx, emit) if ctx.layout.cp > 1 else None
        #: Transformer Engine's userbuffers: TP collectives beside the blocks' GEMMs
        self.ub = ctx.spec.overlap.tp_comm_overlap and ctx.sequence_parallel
        #: Megatron-Core's delay_wgrad_compute: experts' weight gradients after the backward dispatch
        self.delay_wgrad = ctx.spec.overlap.delay_wgrad_compute

    def tp(self, rank: int, step: int, deps: Deps, phase: str, layer: int, mb: int, op: str) -> Deps:
        """Megatron TP communication around a block: sequence-parallel all-gather before and
        reduce-scatter after; without sequence parallelism one all-reduce after."""
        L = self.ctx.layout
        if L.tp == 1:
            return deps
        if not self.ctx.sequence_parallel:
            if op == "all_gather":
                return deps
            op = "all_reduce"
            phase = phase.replace("-rs", "-ar")
        m = self.ctx.spec.model
        nbytes = float(self.ctx.costs.tokens * self.ctx.hidden * (m.gemm_input_bpe if op == "all_gather" else m.bpe))
        return self.tp_collective(rank, step, deps, op, nbytes, phase, layer, mb)

    def tp_block(
        self,
        rank: int,
        step: int,
        deps: Deps,
        phases: tuple[str, str],
        layer: int,
        mb: int,
        body: Callable[[Deps], Deps],
    ) -> Deps:
        """A block's compute (``body``: given its start, returns its end) between its TP
        collectives (``phases``: the all-gather's and the reduce-scatter's).  Megatron runs the
        all-gather before and the reduce-scatter after; with Transformer Engine's userbuffers
        (``overlap.tp_comm_overlap``) both run beside the block, in that order on the TP stream,
        and what follows waits for the compute and the reduce-scatter.  That is exact when the
        block's GEMMs outlast its communication (the ring-exchange all-gather feeds the first
        GEMM chunk by chunk as they arrive; the pipelined reduce-scatter drains the last GEMM's
        output split by split); it leaves out the last split's reduce-scatter after the GEMM.
        The SMs the overlaps' kernels take from the GEMMs (8-24 of 132 in NVIDIA's H100 BF16
        recipes) are in the GEMMs' times (:mod:`netsim.workload.tp_overlap`)."""
        ag, rs = phases
        if not self.ub:
            deps = self.tp(rank, step, deps, ag, layer, mb, "all_gather")
            deps = body(deps)
            return self.tp(rank, step, deps, rs, layer, mb, "reduce_scatter")
        comm = self.tp(rank, step, deps, ag, layer, mb, "all_gather")
        comm = self.tp(rank, step, comm, rs, layer, mb, "reduce_scatter")
        return [*body(deps), *comm]

    def tp_compute(
        self, rank: int, step: int, deps: Deps, phases: tuple[str, str], layer: int, mb: int, name: str, calls: Calls
    ) -> Deps:
        """One compute op ``name`` (``calls``) as a block between its TP collectives (:meth:`tp_block`)."""
        emit = self.emit
        return self.tp_block(
            rank, step, deps, phases, layer, mb, lambda d: emit.compute(rank, step, name, calls, d, layer, mb)
        )

    def tp_collective(
        self, rank: int, step: int, deps: Deps, op: str, nbytes: float, phase: str, layer: int, mb: int
    ) -> Deps:
        """One ``op`` of ``nbytes`` over ``rank``'s TP group, keyed by (step, phase, micro-batch,
        layer): the layers' TP communication and the pipeline's scatter/gather all-gathers."""
        L = self.ctx.layout

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            return L.tp_group(r), ("tp", step, phase, mb, layer, L.group_index("tp", r))

        return self.emit.group_collective(
            rank, step, "tp", "tp", op, nbytes, deps, "tp", group_key, layer=layer, mb=mb, phase=phase
        )

    def forward(
        self, rank: int, step: int, mb: int, layer: int, deps: Deps, chunk: int, *, recompute: bool = False
    ) -> Deps:
        """The forward pass of ``layer`` for micro-batch ``mb`` (``recompute``: its repetition in
        the backward under full recomputation: ops named ``R.*``, collectives' phases
        ``rcp-fwd-*``, no parameter gather of its own).  A multi-token-prediction block runs its
        input projection before and the shared output head after."""
        c, emit = self.ctx.costs, self.emit
        tag = "R" if recompute else "F"
        if not recompute:
            deps = self.grads.zero3_gather(rank, step, layer, mb, "fwd", deps, chunk)
        if not self.ctx.spec.model.is_mtp_layer(layer):
            return self._forward(rank, step, mb, layer, deps, recompute)
        deps = emit.compute(rank, step, f"{tag}.mtp-in", c.mtp_in("F"), deps, layer, mb)
        deps = self._forward(rank, step, mb, layer, deps, recompute)
        return emit.compute(rank, step, f"{tag}.mtp-head", c.head("F"), deps, layer, mb)

    def _forward(self, rank: int, step: int, mb: int, layer: int, deps: Deps, recompute: bool) -> Deps:
        """The transformer block of :meth:`forward`."""
        c, emit = self.ctx.costs, self.emit
        tag, pfx = ("R", "rcp-") if recompute else ("F", "")
        moe = self.ctx.spec.model.is_moe_layer(layer)
        if not moe:
            emit.new_segment()

        def attention(d: Deps) -> Deps:
            if self.ring is None:
                return emit.compute(rank, step, f"{tag}.attn", c.attention("F"), d, layer, mb)
            d = emit.compute(rank, step, f"{tag}.attn-pre", c.attention_pre("F"), d, layer, mb)
            d = self.ring.core(rank, step, mb, layer, d, pfx + "fwd-cp", f"{tag}.attn-core", self.core_fwd)
            return emit.compute(rank, step, f"{tag}.attn-post", c.attention_post("F"), d, layer, mb)

        deps = self.tp_block(rank, step, deps, (pfx + "fwd-attn-ag", pfx + "fwd-attn-rs"), layer, mb, attention)
        if moe:
            return self.moe(rank, step, mb, layer, deps, "F", recompute=recompute)
        emit.new_segment()
        phases = (pfx + "fwd-mlp-ag", pfx + "fwd-mlp-rs")
        return self.tp_compute(rank, step, deps, phases, layer, mb, f"{tag}.mlp", c.mlp("F"))

    def backward(self, rank: int, step: int, mb: int, layer: int, deps: Deps, part: Part, chunk: int) -> Deps:
        """The backward pass (``part`` B or BW) of ``layer`` for micro-batch ``mb``, after the
        recomputation the mode asks for (the whole forward, or the attention core before the
        attention's backward)."""
        c, emit = self.ctx.costs, self.emit
        deps = self.grads.zero3_gather(rank, step, layer, mb, "bwd", deps, chunk)
        if self.full_layers is None or layer in self.full_layers:
            deps = self.forward(rank, step, mb, layer, deps, chunk, recompute=True)
        mtp = self.ctx.spec.model.is_mtp_layer(layer)
        if mtp:
            deps = emit.compute(rank, step, f"{part}.mtp-head", c.head(part), deps, layer, mb)
        if self.ctx.spec.model.is_moe_layer(layer):
            if self.recompute.moe:
                # Megatron's ``moe`` recompute module: the MoE block's forward again, its
                # all-to-alls included (ops ``R.*``, phases ``rcp-fwd-*``)
                deps = self.moe(rank, step, mb, layer, deps, "F", recompute=True)
            deps = self.moe(rank, step, mb, layer, deps, part)
        else:
            emit.new_segment()
            if self.recompute.mlp:
                # Megatron's ``mlp`` recompute module: the MLP block's forward again, its TP
                # collectives included (the checkpointed function is the whole block)
                phases = ("rcp-fwd-mlp-ag", "rcp-fwd-mlp-rs")
                deps = self.tp_compute(rank, step, deps, phases, layer, mb, "R.mlp", c.mlp("F"))
            mlp = (*self._renorm(True), c.mlp(part))
            deps = self.tp_compute(rank, step, deps, ("bwd-mlp-ag", "bwd-mlp-rs"), layer, mb, f"{part}.mlp", mlp)
            emit.new_segment()

        def attention(d: Deps) -> Deps:
            if self.ring is None:
                if self.recompute.attention_core:
                    d = emit.compute(rank, step, "R.attn-core", self.core_fwd, d, layer, mb)
                return emit.compute(rank, step, f"{part}.attn", (*self._renorm(False), c.attention(part)), d, layer, mb)
            if self.recompute.attention_core:
                d = self.ring.core(rank, step, mb, layer, d, "rcp-fwd-cp", "R.attn-core", self.core_fwd)
            d = emit.compute(rank, step, f"{part}.attn-post", c.attention_post(part), d, layer, mb)
            core = c.attention_core(part)
            d = self.ring.core(rank, step, mb, layer, d, "bwd-cp", f"{part}.attn-core", core, backward=True)
            pre = (*self._renorm(False), c.attention_pre(part))
            return emit.compute(rank, step, f"{part}.attn-pre", pre, d, layer, mb)

        deps = self.tp_block(rank, step, deps, ("bwd-attn-ag", "bwd-attn-rs"), layer, mb, attention)
        if mtp:
            deps = emit.compute(rank, step, f"{part}.mtp-in", c.mtp_in(part), deps, layer, mb)
        return deps

    def _renorm(self, ffn: bool) -> tuple[list[KernelCall], ...]:
        """Under ``norms-mla-up`` recomputation (or Megatron's ``layernorm`` / ``mla_up_proj``
        modules), the forward kernels a block's backward op re-runs first (the FFN block's norm,
        or the attention's norm and MLA up-projections); else none."""
        r = self.recompute
        if not (r.norms or r.mla_up):
            return ()
        return (self.ctx.costs.recompute_norms_mla(ffn, r.norms, r.mla_up),)

    def weight(self, rank: int, step: int, mb: int, layer: int, deps: Deps) -> Deps:
        """The deferred weight gradients (``W``) of ``layer`` for micro-batch ``mb``."""
        c = self.ctx.costs
        mtp = (c.head("W"), c.mtp_in("W")) if self.ctx.spec.model.is_mtp_layer(layer) else ()
        if self.ctx.spec.model.is_moe_layer(layer):
            recv = [sum(t) for t in zip(*self.experts.received(step, layer, mb, rank), strict=True)]
            fixed = (c.attention("W"), c.moe_post("W"), *mtp)
            return self.emit.expert_compute(
                rank, step, "W.layer", fixed, lambda v: c.experts("W", v), recv, deps, layer, mb
            )
        return self.emit.compute(rank, step, "W.layer", (c.attention("W"), c.mlp("W"), *mtp), deps, layer, mb)

    def moe(
        self, rank: int, step: int, mb: int, layer: int, deps: Deps, part: Part, *, recompute: bool = False
    ) -> Deps:
        """Router, then per slice dispatch -> experts -> combine, then unpermute (+ shared)."""
        c, emit, ep = self.ctx.costs, self.emit, self.experts
        recv = ep.received(step, layer, mb, rank)
        tag, pfx = ("R", "rcp-") if recompute else (part, "")
        # Megatron-Core's moe_shared_expert_overlap: the shared experts' halves beside the
        # all-to-alls (issued after each one, so they run while it flies), not after the combine
        shared_experts = bool(self.ctx.spec.model.moe and self.ctx.spec.model.moe.shared_experts)
        overlap = self.ctx.spec.overlap.shared_expert_overlap and shared_experts
        halves = ("fc1", "fc2") if part == "F" else ("fc2", "fc1")
        if part == "F":
            deps = emit.compute(rank, step, f"{tag}.router", c.moe_pre("F", self.router_kernel), deps, layer, mb)
            first, second = pfx + "fwd-dispatch", pfx + "fwd-combine"
            deps = ep.metadata(rank, step, mb, layer, first, deps)
        else:
            if self.recompute.shared_experts and shared_experts:
                # Megatron's ``shared_experts`` recompute module: their forward before their backward
                again = (c.shared_experts("F", "fc1"), c.shared_experts("F", "fc2"))
                deps = emit.compute(rank, step, "R.shared", again, deps, layer, mb)
            deps = emit.compute(rank, step, f"{part}.unpermute", c.moe_post(part, not overlap), deps, layer, mb)
            first, second = "bwd-dispatch", "bwd-combine"
        # Megatron's ``moe_act`` recompute module: the activation again inside the backward
        experts = c.experts_after_act if part != "F" and self.recompute.moe_act else c.experts
        delay = self.delay_wgrad and part == "BW"
        dgrad: Part = "B" if delay else part
        shared: Deps = deps
        ends: Deps = []
        for k in range(ep.slices):
            d1 = ep.all_to_all(rank, step, mb, layer, k, first, deps)
            if overlap and k == 0:
                shared = emit.compute(
                    rank, step, f"{tag}.shared-{halves[0]}", c.shared_experts(part, halves[0]), deps, layer, mb
                )
            emit.new_segment()  # DualPipe: the other chunk's compute runs while this dispatch flies
            name = f"{tag}.experts" if ep.slices == 1 else f"{tag}.experts.{k}"
            d2 = emit.expert_compute(rank, step, name, (), lambda v: experts(dgrad, v), recv[k], d1, layer, mb)
            done = d2
            d2 = ep.before_combine(rank, step, mb, layer, k, second, d2)
            ends += ep.all_to_all(rank, step, mb, layer, k, second, d2)
            if delay:
                # Megatron-Core's mlp.backward_dw: the weight gradients while the dispatch's
                # backward flies (issued after it, before the next micro-batch's compute)
                ends += emit.expert_compute(
                    rank, step, name + "-dw", (), lambda v: c.experts("W", v), recv[k], done, layer, mb
                )
        if overlap:
            ends += emit.compute(
                rank, step, f"{tag}.shared-{halves[1]}", c.shared_experts(part, halves[1]), shared, layer, mb
            )
        emit.new_segment()  # ... and while the combine flies
        if part == "F":
            return emit.compute(rank, step, f"{tag}.unpermute", c.moe_post("F", not overlap), ends, layer, mb)
        pre = (*self._renorm(True), c.moe_pre(part, self.router_kernel))
        return emit.compute(rank, step, f"{part}.router", pre, ends, layer, mb)
