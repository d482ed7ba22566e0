"""The ops of one transformer layer for one micro-batch: compute, TP collectives, expert traffic.

Forward (``F``) of a layer: [ZeRO 3 parameter gather]; attention (TP all-gather, compute,
reduce-scatter); then the dense MLP the same way, or the MoE block: router, per slice
dispatch -> experts -> combine, unpermute (+ shared experts).  Backward (``B`` input gradient,
``BW`` with the weight gradient) runs the same parts in reverse; the weight-gradient-only part
(``W``, zero bubble / DualPipe) is one compute op per layer.

TP communication (Megatron, Shoeybi et al. 2019 / Korthikanti et al. 2022): with sequence
parallelism an all-gather before and a reduce-scatter after attention and the dense MLP, of
``micro_batch_size * seq_len * hidden`` elements; without it one all-reduce after each.
"""

from __future__ import annotations

from typing import Any

from netsim.workload.context import BuildContext
from netsim.workload.costs import Part
from netsim.workload.emit import OpEmitter
from netsim.workload.experts import ExpertTraffic
from netsim.workload.gradients import GradientReducer
from netsim.workload.plan import Deps

__all__ = ["LayerEmitter"]


class LayerEmitter:
    """Emits the ops of one layer's forward, backward or weight-gradient pass."""

    def __init__(self, ctx: BuildContext, emit: OpEmitter, experts: ExpertTraffic, grads: GradientReducer,
                 router_kernel: str) -> None:
        self.ctx = ctx
        self.emit = emit
        self.experts = experts
        self.grads = grads
        self.router_kernel = router_kernel

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
        nbytes = float(self.ctx.costs.tokens * self.ctx.hidden * self.ctx.bpe)

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            return L.tp_group(r), ("tp", step, phase, mb, layer, L.group_index("tp", r))

        return self.emit.group_collective(
            rank, step, "tp", "tp", op, nbytes, deps, "tp", group_key, layer=layer, mb=mb, phase=phase
        )

    def forward(self, rank: int, step: int, mb: int, layer: int, deps: Deps, chunk: int) -> Deps:
        """The forward pass of ``layer`` for micro-batch ``mb``."""
        c, emit = self.ctx.costs, self.emit
        deps = self.grads.zero3_gather(rank, step, layer, mb, "fwd", deps, chunk)
        emit.new_segment()
        deps = self.tp(rank, step, deps, "fwd-attn-ag", layer, mb, "all_gather")
        deps = emit.compute(rank, step, "F.attn", c.attention("F"), deps, layer, mb)
        deps = self.tp(rank, step, deps, "fwd-attn-rs", layer, mb, "reduce_scatter")
        emit.new_segment()
        if self.ctx.spec.model.is_moe_layer(layer):
            return self.moe(rank, step, mb, layer, deps, "F")
        deps = self.tp(rank, step, deps, "fwd-mlp-ag", layer, mb, "all_gather")
        deps = emit.compute(rank, step, "F.mlp", c.mlp("F"), deps, layer, mb)
        return self.tp(rank, step, deps, "fwd-mlp-rs", layer, mb, "reduce_scatter")

    def backward(self, rank: int, step: int, mb: int, layer: int, deps: Deps, part: Part, chunk: int) -> Deps:
        """The backward pass (``part`` B or BW) of ``layer`` for micro-batch ``mb``."""
        c, emit = self.ctx.costs, self.emit
        deps = self.grads.zero3_gather(rank, step, layer, mb, "bwd", deps, chunk)
        emit.new_segment()
        if self.ctx.spec.model.is_moe_layer(layer):
            deps = self.moe(rank, step, mb, layer, deps, part)
        else:
            deps = self.tp(rank, step, deps, "bwd-mlp-ag", layer, mb, "all_gather")
            deps = emit.compute(rank, step, f"{part}.mlp", c.mlp(part), deps, layer, mb)
            deps = self.tp(rank, step, deps, "bwd-mlp-rs", layer, mb, "reduce_scatter")
        emit.new_segment()
        deps = self.tp(rank, step, deps, "bwd-attn-ag", layer, mb, "all_gather")
        deps = emit.compute(rank, step, f"{part}.attn", c.attention(part), deps, layer, mb)
        return self.tp(rank, step, deps, "bwd-attn-rs", layer, mb, "reduce_scatter")

    def weight(self, rank: int, step: int, mb: int, layer: int, deps: Deps) -> Deps:
        """The deferred weight gradients (``W``) of ``layer`` for micro-batch ``mb``."""
        c = self.ctx.costs
        if self.ctx.spec.model.is_moe_layer(layer):
            recv = [sum(t) for t in zip(*self.experts.received(step, layer, mb, rank), strict=True)]
            fixed = (c.attention("W"), c.moe_post("W"))
            return self.emit.expert_compute(rank, step, "W.layer", fixed, lambda v: c.experts("W", v), recv, deps,
                                            layer, mb)
        return self.emit.compute(rank, step, "W.layer", (c.attention("W"), c.mlp("W")), deps, layer, mb)

    def moe(self, rank: int, step: int, mb: int, layer: int, deps: Deps, part: Part) -> Deps:
        """Router, then per slice dispatch -> experts -> combine, then unpermute (+ shared)."""
        c, emit, ep = self.ctx.costs, self.emit, self.experts
        recv = ep.received(step, layer, mb, rank)
        if part == "F":
            deps = emit.compute(rank, step, "F.router", c.moe_pre("F", self.router_kernel), deps, layer, mb)
            first, second = "fwd-dispatch", "fwd-combine"
        else:
            deps = emit.compute(rank, step, f"{part}.unpermute", c.moe_post(part), deps, layer, mb)
            first, second = "bwd-dispatch", "bwd-combine"
        ends: Deps = []
        for k in range(ep.slices):
            d1 = ep.all_to_all(rank, step, mb, layer, k, first, deps)
            name = f"{part}.experts" if ep.slices == 1 else f"{part}.experts.{k}"
            d2 = emit.expert_compute(rank, step, name, (), lambda v: c.experts(part, v), recv[k], d1, layer, mb)
            ends += ep.all_to_all(rank, step, mb, layer, k, second, d2)
        if part == "F":
            return emit.compute(rank, step, "F.unpermute", c.moe_post("F"), ends, layer, mb)
        return emit.compute(rank, step, f"{part}.router", c.moe_pre(part, self.router_kernel), ends, layer, mb)
