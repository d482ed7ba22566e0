"""One rank's step: the pipeline schedule's actions as ops, with the transfers between stages.

A rank walks its stage's units of work (:meth:`~netsim.workload.schedules.Schedule.work`):

* ``F`` of micro-batch ``mb`` on block ``vs``: receive the activations from the stage running
  block ``vs - 1`` (or wait for the batch read from storage on the first block), run the
  block's layers forward (and the LM head on the last block), send the activations on;
* ``B``: receive the gradient from block ``vs + 1`` (or run the head's backward on the last
  block), run the layers backward, send the gradient back; where the action computes its
  chunk's last weight gradients they become ready for the data-parallel reduction
  (:mod:`netsim.workload.gradients`) layer by layer;
* ``W``: the deferred weight gradients of every layer;
* an overlapped ``F`` + ``B`` pair (DualPipe F&B): both emitted, then re-issued alternately by
  segment, the backward's first (:mod:`netsim.workload.emit`), so that the compute stream runs
  MLP(B), MLP(F), ATTN(B), ATTN(F) while the expert traffic runs DISPATCH(F), DISPATCH(B),
  COMBINE(F), COMBINE(B): DeepSeek-V3's arrangement (arXiv 2412.19437, section 3.2.1, Figure 4),
  each all-to-all under the other micro-batch's compute.

Pipeline messages are point-to-point transfers of ``micro_batch_size * seq_len * hidden``
elements (``/ tp`` with sequence parallelism), asynchronous (no stream order).  Without sequence
parallelism every TP rank of a stage holds the whole message; Megatron-LM's scatter/gather
(Narayanan et al. SC'21 section 4.1; ``scatter_gather_tensors_in_pipeline``, on unless
``--no-scatter-gather-tensors-in-pipeline``, in megatron/p2p_communication.py ``_communicate``
at NVIDIA/Megatron-LM de7dc40f88) sends ``1 / tp`` of it from each TP rank
(``split_tensor_into_1d_equal_chunks``) and the receiver all-gathers the pieces over its TP
group (``gather_split_1d_tensor``) before the block's first layer, for the forward activations
and the backward gradients alike (``parallelism.pipeline_scatter_gather``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netsim.workload.context import BuildContext
from netsim.workload.costs import Part
from netsim.workload.emit import OpEmitter
from netsim.workload.gradients import GradientReducer
from netsim.workload.layers import LayerEmitter
from netsim.workload.plan import Collective, Deps
from netsim.workload.schedules import Action

__all__ = ["PipelineStep"]


class PipelineStep:
    """Emits every op of one rank in one step, following the pipeline schedule."""

    def __init__(
        self,
        ctx: BuildContext,
        emit: OpEmitter,
        layers: LayerEmitter,
        grads: GradientReducer,
        data_ready: dict[tuple[int, int], Deps],
    ) -> None:
        self.ctx = ctx
        self.emit = emit
        self.layers = layers
        self.grads = grads
        self.data_ready = data_ready
        self.work = [ctx.schedule.work(p) for p in range(ctx.layout.pp)]
        self._comms: dict[tuple[int, int], tuple[str, ...]] = {}  # (dp, tp) -> the pipeline's devices
        # per (rank, step): the ends of every micro-batch's forward per block, and of its
        # backward per layer (-1: the head)
        self.fwd_end: dict[tuple[int, int], Deps] = {}
        self.bwd_end: dict[tuple[int, int], Deps] = {}

    def build(self, rank: int, step: int) -> Deps:
        """Emit every op of ``rank`` in ``step``; return the ids the step barrier waits for
        besides the rank's sinks (the optimizer and the ZeRO parameter all-gathers)."""
        p, _, _ = self.ctx.layout.coords(rank)
        self.fwd_end, self.bwd_end = {}, {}
        first = len(self.emit.ops)
        for unit in self.work[p]:
            if len(unit.actions) == 2:
                f, b = unit.actions
                lo = len(self.emit.ops)
                self.forward(rank, step, f)
                mid = len(self.emit.ops)
                self.backward(rank, step, b, unit.final[1])
                self._interleave(lo, mid)
                continue
            a = unit.actions[0]
            if a.kind == "F":
                self.forward(rank, step, a)
            elif a.kind == "B":
                self.backward(rank, step, a, unit.final[0])
            else:
                self.weight(rank, step, a, unit.final[0])
        return self.grads.finish(rank, step, [self.emit.last_compute(rank, first)])

    def _interleave(self, lo: int, mid: int) -> None:
        """Re-issue the ops of an F&B pair (ops ``lo..mid-1`` the F, ``mid..`` the B)
        alternately by segment, the B's segment first at each step."""
        ops = self.emit.ops[lo:]
        if not ops:
            return
        seg_of = self.emit.seg_of
        base = min(o.issue for o in ops)
        f0 = min((seg_of[o.id] for o in self.emit.ops[lo:mid]), default=0)
        b0 = min((seg_of[o.id] for o in self.emit.ops[mid:]), default=0)
        keyed = [((seg_of[o.id] - (f0 if o.id < mid else b0)), int(o.id < mid), o.id, o) for o in ops]
        keyed.sort(key=lambda x: (x[0], x[1], x[2]))
        for j, item in enumerate(keyed):
            item[3].issue = base + j

    # ------------------------------------------------------------------ transfers

    def _p2p(self, rank: int, step: int, direction: str, mb: int, src_vs: int, src: int, dst: int, deps: Deps) -> Deps:
        """The activation (``F``) or gradient (``B``) message of ``mb`` leaving block ``src_vs``."""
        label = "pp.act" if direction == "F" else "pp.grad"
        L = self.ctx.layout
        ps, pd = L.coords(src)[0], L.coords(dst)[0]
        nbytes = self.ctx.p2p_bytes

        def instance(r: int) -> tuple[tuple[Any, ...], Callable[[], Collective]]:
            _, d, t = L.coords(r)
            s_, d_ = L.rank_of(ps, d, t), L.rank_of(pd, d, t)
            key = ("pp", step, direction, mb, src_vs, s_, d_)

            def make() -> Collective:
                comm = self._comms.get((d, t))
                if comm is None:
                    comm = self._comms[d, t] = tuple(L.devices[L.rank_of(p, d, t)] for p in range(L.pp))
                return Collective(
                    key,
                    "transfer",
                    (s_, d_),
                    nbytes,
                    "pp",
                    label,
                    src=L.devices[s_],
                    dst=L.devices[d_],
                    phase=direction,
                    microbatch=mb,
                    step=step,
                    comm=comm,
                )

            return key, make

        name = ("pp.send" if rank == src else "pp.recv") + (".act" if direction == "F" else ".grad")
        key, make = instance(rank)
        return self.emit.comm(rank, step, "pp", deps, key, make, name=name, ordered=False, lanes=("rank", instance))

    def _gather(self, rank: int, step: int, direction: str, mb: int, vs: int, deps: Deps) -> Deps:
        """Under scatter/gather, the TP all-gather of the ``1 / tp`` pieces of the message ``rank``
        received for block ``vs`` (activations for ``F``, gradients for ``B``); else ``deps``."""
        ctx = self.ctx
        if not ctx.pipeline_scatter_gather:
            return deps
        phase = "pp-gather-act" if direction == "F" else "pp-gather-grad"
        layer = ctx.blocks[vs][0] if direction == "F" else ctx.blocks[vs][-1]
        return self.layers.tp_collective(rank, step, deps, "all_gather", ctx.act_bytes, phase, layer, mb)

    def _peer(self, rank: int, mb: int, vs: int) -> int:
        """The rank (same DP and TP position as ``rank``) running block ``vs`` of ``mb``."""
        L = self.ctx.layout
        _, d, t = L.coords(rank)
        stage, _ = self.ctx.schedule.locate(mb, vs)
        return L.rank_of(stage, d, t)

    # ------------------------------------------------------------------ actions

    def forward(self, rank: int, step: int, a: Action) -> None:
        ctx = self.ctx
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        if vs > 0:
            deps = self._p2p(rank, step, "F", mb, vs - 1, self._peer(rank, mb, vs - 1), rank, [])
            deps = self._gather(rank, step, "F", mb, vs, deps)
        else:
            deps = list(self.data_ready.get((step, rank), []))
        for layer in ctx.blocks[vs]:
            deps = self.layers.forward(rank, step, mb, layer, deps, a.chunk)
        if vs == ctx.num_blocks - 1:
            deps = self.emit.compute(rank, step, "F.head", ctx.costs.head("F"), deps, -1, mb)
        self.fwd_end[(mb, vs)] = deps
        if vs < ctx.num_blocks - 1:
            self._p2p(rank, step, "F", mb, vs, rank, self._peer(rank, mb, vs + 1), deps)

    def backward(self, rank: int, step: int, a: Action, final: bool) -> None:
        ctx, c = self.ctx, self.ctx.costs
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        part: Part = "B" if a.split_w else "BW"
        grads = final and part == "BW"
        if vs < ctx.num_blocks - 1:
            deps = self._p2p(rank, step, "B", mb, vs + 1, self._peer(rank, mb, vs + 1), rank, [])
            deps = self._gather(rank, step, "B", mb, vs, deps)
        else:
            deps = self.emit.compute(rank, step, f"{part}.head", c.head(part), self.fwd_end[(mb, vs)], -1, mb)
            if grads:
                self.grads.ready(rank, step, a.chunk, c.head_params(), 0.0, deps)
        self.bwd_end[(mb, -1)] = deps
        for layer in reversed(ctx.blocks[vs]):
            deps = self.layers.backward(rank, step, mb, layer, deps, part, a.chunk)
            self.bwd_end[(mb, layer)] = deps
            if grads:
                self.grads.layer_ready(rank, step, a.chunk, layer, deps)
        if vs == 0 and grads:
            self.grads.ready(rank, step, a.chunk, c.embedding_params(), 0.0, deps)
        if vs > 0:
            self._p2p(rank, step, "B", mb, vs, rank, self._peer(rank, mb, vs - 1), deps)

    def weight(self, rank: int, step: int, a: Action, final: bool) -> None:
        ctx, c = self.ctx, self.ctx.costs
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        deps: Deps = []
        if vs == ctx.num_blocks - 1:
            deps = self.emit.compute(rank, step, "W.head", c.head("W"), self.bwd_end[(mb, -1)], -1, mb)
            if final:
                self.grads.ready(rank, step, a.chunk, c.head_params(), 0.0, deps)
        for layer in reversed(ctx.blocks[vs]):
            deps = self.layers.weight(rank, step, mb, layer, deps + self.bwd_end[(mb, layer)])
            if final:
                self.grads.layer_ready(rank, step, a.chunk, layer, deps)
        if vs == 0 and final:
            self.grads.ready(rank, step, a.chunk, c.embedding_params(), 0.0, deps)
