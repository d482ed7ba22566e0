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

TP communication (Megatron, Shoeybi et al. 2019 / Korthikanti et al. 2022) around and beside
the attention and dense MLP blocks: :mod:`netsim.workload.tp_blocks`.

Context parallelism (:mod:`netsim.workload.context_parallel`): the attention op is cut into the
part before the core (``attn-pre``), the core (``attn-core``) with its K/V exchanges (phases
``fwd-cp``, ``bwd-cp``, ``rcp-fwd-cp``) and the part after (``attn-post``).
"""

from __future__ import annotations

from netsim.workload.context import BuildContext
from netsim.workload.context_parallel import ContextParallelRing
from netsim.workload.emit import OpEmitter
from netsim.workload.experts import ExpertTraffic
from netsim.workload.gradients import GradientReducer
from netsim.workload.kernel_calls import KernelCall, Part
from netsim.workload.plan import Deps
from netsim.workload.recompute import RecomputeMode, full_layers
from netsim.workload.tp_blocks import Core, TpBlocks

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
        #: selective recomputation: the attention core's forward kernels per sliding window (one
        #: list object each, so its duration is computed once)
        self.core_fwd: dict[int | None, list[KernelCall]] = {}
        #: context parallelism: the attention's K/V ring (None without it)
        self.ring = ContextParallelRing(ctx, emit) if ctx.layout.cp > 1 else None
        #: the attention and dense MLP blocks with their TP communication
        self.blocks = TpBlocks(ctx, emit)
        #: Megatron-Core's delay_wgrad_compute: experts' weight gradients after the backward dispatch
        self.delay_wgrad = ctx.spec.overlap.delay_wgrad_compute

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
        emit = self.emit
        tag, pfx = ("R", "rcp-") if recompute else ("F", "")
        moe = self.ctx.spec.model.is_moe_layer(layer)
        if not moe:
            emit.new_segment()

        core: Core | None = None
        if self.ring is not None:
            ring = self.ring

            def core(d: Deps) -> Deps:
                return ring.core(rank, step, mb, layer, d, pfx + "fwd-cp", f"{tag}.attn-core", self._core_fwd(layer))

        deps = self.blocks.forward(rank, step, deps, "attn", tag, pfx, layer, mb, core)
        if moe:
            return self.moe(rank, step, mb, layer, deps, "F", recompute=recompute)
        emit.new_segment()
        return self.blocks.forward(rank, step, deps, "mlp", tag, pfx, layer, mb)

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
                deps = self.blocks.forward(rank, step, deps, "mlp", "R", "rcp-", layer, mb)
            deps = self.blocks.backward(rank, step, deps, "mlp", part, layer, mb, self._renorm(True))
            emit.new_segment()

        core: Core | None = None
        if self.ring is None:
            if self.recompute.attention_core:
                deps = emit.compute(rank, step, "R.attn-core", self._core_fwd(layer), deps, layer, mb)
        else:
            ring = self.ring
            if self.recompute.attention_core:
                deps = ring.core(rank, step, mb, layer, deps, "rcp-fwd-cp", "R.attn-core", self._core_fwd(layer))
            core_bwd = c.attention_core(part, self.ctx.spec.model.attention_window(layer))

            def core(d: Deps) -> Deps:
                return ring.core(rank, step, mb, layer, d, "bwd-cp", f"{part}.attn-core", core_bwd, backward=True)

        deps = self.blocks.backward(rank, step, deps, "attn", part, layer, mb, self._renorm(False), core)
        if mtp:
            deps = emit.compute(rank, step, f"{part}.mtp-in", c.mtp_in(part), deps, layer, mb)
        return deps

    def _core_fwd(self, layer: int) -> list[KernelCall]:
        """The attention core's forward kernels of ``layer`` (its sliding window's)."""
        w = self.ctx.spec.model.attention_window(layer)
        if w not in self.core_fwd:
            self.core_fwd[w] = self.ctx.costs.attention_core("F", w)
        return self.core_fwd[w]

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
            deps = ep.host_sync(rank, step, mb, layer, first, deps)
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
