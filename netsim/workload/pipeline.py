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
  each all-to-all under the other micro-batch's compute.  Megatron-Core's combined 1F1B pairs
  them the same way (``TransformerLayerSchedulePlan.run`` in
  ``megatron/core/models/common/model_chunk_schedule_plan.py`` at d98e8a64dd: communication
  combine(B), dispatch(F), dispatch(B), combine(F) beside compute attention(F), MLP(B), MLP(F),
  attention(B)); the segments here start the cycle at the previous layer's attention(B).

Pipeline messages are point-to-point transfers of ``micro_batch_size * seq_len * hidden``
elements (``/ tp`` with sequence parallelism), asynchronous (no stream order); NCCL's send and
receive kernels hold SMs on both ends while in flight (:mod:`netsim.workload.nccl_sms`).  Without sequence
parallelism every TP rank of a stage holds the whole message; Megatron-LM's scatter/gather
(Narayanan et al. SC'21 section 4.1; ``scatter_gather_tensors_in_pipeline``, on unless
``--no-scatter-gather-tensors-in-pipeline``, in megatron/p2p_communication.py ``_communicate``
at NVIDIA/Megatron-LM de7dc40f88) sends ``1 / tp`` of it from each TP rank
(``split_tensor_into_1d_equal_chunks``) and the receiver all-gathers the pieces over its TP
group (``gather_split_1d_tensor``) before the block's first layer, for the forward activations
and the backward gradients alike (``parallelism.pipeline_scatter_gather``).

Blocking exchanges (``schedule.p2p: blocking``): Megatron-LM before Megatron-Core
(megatron/p2p_communication.py ``_communicate`` at de7dc40f88, 2e90a342f5 and 285068c8) runs
every exchange as ``batch_isend_irecv``, ``req.wait()`` and ``torch.cuda.synchronize()``: after
each action the rank posts its send and the receive the next action needs and waits for both
(``send_forward_recv_backward``, ``send_backward_recv_forward``); in the interleaved schedule's
steady state the exchange follows a forward and the backward after it
(``send_forward_backward_recv_forward_backward``), so the forward's activations leave only after
that backward.  Here the receives of a group of actions are posted when the previous group's last
compute ends, its sends when its own last compute ends, and the group's computes wait for the
previous exchange's sends and their own receives (:meth:`PipelineStep._build_blocking`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netsim.errors import WorkloadError
from netsim.workload.context import BuildContext
from netsim.workload.emit import OpEmitter
from netsim.workload.gradients import GradientReducer
from netsim.workload.kernel_calls import Part
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
        #: (dp, tp) -> the pipeline's devices and ranks (its communicator)
        self._comms: dict[tuple[int, int], tuple[tuple[str, ...], tuple[int, ...]]] = {}
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
        if self.ctx.spec.schedule.p2p == "blocking":
            self._build_blocking(rank, step, p)
            return self.grads.finish(rank, step, [self.emit.last_compute(rank, first)])
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

    # ------------------------------------------------------------------ blocking exchanges

    def _groups(self, stage: int) -> list[list[Action]]:
        """The stage's actions between two blocking exchanges: one action each, or in the
        interleaved schedule's steady state a forward and the backward after it (Megatron-LM's
        ``send_forward_backward_recv_forward_backward`` at 285068c8 follows the pair)."""
        groups: list[list[Action]] = []
        paired = self.ctx.schedule.v > 1
        for unit in self.work[stage]:
            if len(unit.actions) != 1:
                raise WorkloadError(
                    "schedule.p2p blocking (Megatron-LM before Megatron-Core) cannot run overlapped forward and "
                    "backward pairs (DualPipe, the combined 1F1B); use schedule.p2p async",
                    field="schedule.p2p",
                )
            a = unit.actions[0]
            prev = groups[-1] if groups else None
            if paired and a.kind == "B" and prev is not None and len(prev) == 1 and prev[0].kind == "F":
                prev.append(a)
            else:
                groups.append([a])
        return groups

    def _build_blocking(self, rank: int, step: int, stage: int) -> None:
        """The step of ``rank`` with Megatron-LM's blocking exchanges (``schedule.p2p: blocking``):
        after each group of actions (:meth:`_groups`) the rank posts the group's sends and the
        next group's receives together and waits for all of them before computing again
        (``batch_isend_irecv``, ``req.wait()``, ``torch.cuda.synchronize()``)."""
        finals = {id(a): f for unit in self.work[stage] for a, f in zip(unit.actions, unit.final, strict=True)}
        posted: Deps = []  # where the last exchange was posted: the previous group's last compute
        sent: Deps = []  # the sends of the last exchange
        for group in self._groups(stage):
            recvs = [self._recv(rank, step, a, posted) for a in group]
            gate = sorted({*sent, *(d for r in recvs if r is not None for d in r)})
            sends: list[Callable[[Deps], Deps]] = []
            first = len(self.emit.ops)
            for a in group:
                if a.kind == "F":
                    self.forward(rank, step, a, gate=gate, sends=sends)
                elif a.kind == "B":
                    self.backward(rank, step, a, finals[id(a)], gate=gate, sends=sends)
                else:
                    self.weight(rank, step, a, finals[id(a)])
            last = self.emit.last_compute(rank, first)
            posted = [last] if last >= 0 else posted
            sent = [d for send in sends for d in send(posted)]

    def _recv(self, rank: int, step: int, a: Action, posted: Deps) -> Deps | None:
        """The receive (and scatter/gather all-gather) action ``a`` needs, posted at ``posted``;
        None when it receives nothing (the first block's forward, the last block's backward, W)."""
        ctx = self.ctx
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        if a.kind == "F" and vs > 0:
            deps = self._p2p(rank, step, "F", mb, vs - 1, self._peer(rank, mb, vs - 1), rank, list(posted))
            return self._gather(rank, step, "F", mb, vs, deps)
        if a.kind == "B" and vs < ctx.num_blocks - 1:
            deps = self._p2p(rank, step, "B", mb, vs + 1, self._peer(rank, mb, vs + 1), rank, list(posted))
            return self._gather(rank, step, "B", mb, vs, deps)
        return None

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
                hit = self._comms.get((d, t))
                if hit is None:
                    ranks = tuple(L.rank_of(p, d, t) for p in range(L.pp))
                    hit = self._comms[d, t] = (tuple(L.devices[q] for q in ranks), ranks)
                comm, ranks = hit
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
                    sm_share=self.ctx.nccl_sms.p2p_share("pp", ranks, nbytes, 1),
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
        return self.layers.blocks.collective(rank, step, deps, "all_gather", ctx.act_bytes, phase, layer, mb)

    def _peer(self, rank: int, mb: int, vs: int) -> int:
        """The rank (same DP and TP position as ``rank``) running block ``vs`` of ``mb``."""
        L = self.ctx.layout
        _, d, t = L.coords(rank)
        stage, _ = self.ctx.schedule.locate(mb, vs)
        return L.rank_of(stage, d, t)

    # ------------------------------------------------------------------ actions

    def forward(
        self,
        rank: int,
        step: int,
        a: Action,
        *,
        gate: Deps | None = None,
        sends: list[Callable[[Deps], Deps]] | None = None,
    ) -> None:
        """Forward ``a``: its receive (or the batch read), its layers (and the head on the last
        block), its send.  With blocking exchanges (:meth:`_build_blocking`) ``gate`` is what
        the compute waits for (the exchange, receive included) and the send is left in
        ``sends`` for the next exchange."""
        ctx = self.ctx
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        recv = list(gate) if gate is not None else self._recv(rank, step, a, [])
        deps = (recv or []) + (list(self.data_ready.get((step, rank), [])) if vs == 0 else [])
        gathers = self.grads.forward_gathers(rank, step, a.chunk, deps)
        for layer in ctx.blocks[vs]:
            if gathers and gathers.get(layer):
                deps = list(dict.fromkeys([*deps, *gathers[layer]]))
            deps = self.layers.forward(rank, step, mb, layer, deps, a.chunk)
        if vs == ctx.num_blocks - 1:
            deps = self.emit.compute(rank, step, "F.head", ctx.costs.head("F"), deps, -1, mb)
        self.fwd_end[(mb, vs)] = deps
        if vs < ctx.num_blocks - 1:
            self._send(rank, step, "F", mb, vs, self._peer(rank, mb, vs + 1), deps, sends)

    def backward(
        self,
        rank: int,
        step: int,
        a: Action,
        final: bool,
        *,
        gate: Deps | None = None,
        sends: list[Callable[[Deps], Deps]] | None = None,
    ) -> None:
        """Backward ``a`` (``gate``, ``sends``: as :meth:`forward`)."""
        ctx, c = self.ctx, self.ctx.costs
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        part: Part = "B" if a.split_w else "BW"
        grads = final and part == "BW"
        if vs < ctx.num_blocks - 1:
            deps = list(gate) if gate is not None else (self._recv(rank, step, a, []) or [])
        else:
            head_deps = self.fwd_end[(mb, vs)] + (list(gate) if gate is not None else [])
            deps = self.emit.compute(rank, step, f"{part}.head", c.head(part), head_deps, -1, mb)
            if grads:
                self.grads.ready(rank, step, a.chunk, c.trainable_head_params(), 0.0, deps)
        self.bwd_end[(mb, -1)] = deps
        for layer in reversed(ctx.blocks[vs]):
            deps = self.layers.backward(rank, step, mb, layer, deps, part, a.chunk)
            self.bwd_end[(mb, layer)] = deps
            if grads:
                self.grads.layer_ready(rank, step, a.chunk, layer, deps)
        if vs == 0 and grads:
            self.grads.ready(rank, step, a.chunk, c.trainable_embedding_params(), 0.0, deps)
        if vs > 0:
            self._send(rank, step, "B", mb, vs, self._peer(rank, mb, vs - 1), deps, sends)

    def _send(
        self,
        rank: int,
        step: int,
        direction: str,
        mb: int,
        vs: int,
        dst: int,
        deps: Deps,
        sends: list[Callable[[Deps], Deps]] | None,
    ) -> None:
        """Block ``vs``'s send of ``direction`` to ``dst`` after ``deps``; with blocking
        exchanges left in ``sends`` for the next exchange to post."""
        if sends is not None:
            sends.append(lambda d: self._p2p(rank, step, direction, mb, vs, rank, dst, d))
        else:
            self._p2p(rank, step, direction, mb, vs, rank, dst, deps)

    def weight(self, rank: int, step: int, a: Action, final: bool) -> None:
        ctx, c = self.ctx, self.ctx.costs
        vs = ctx.block(rank, a.chunk)
        mb = a.microbatch
        deps: Deps = []
        if vs == ctx.num_blocks - 1:
            deps = self.emit.compute(rank, step, "W.head", c.head("W"), self.bwd_end[(mb, -1)], -1, mb)
            if final:
                self.grads.ready(rank, step, a.chunk, c.trainable_head_params(), 0.0, deps)
        for layer in reversed(ctx.blocks[vs]):
            deps = self.layers.weight(rank, step, mb, layer, deps + self.bwd_end[(mb, layer)])
            if final:
                self.grads.layer_ready(rank, step, a.chunk, layer, deps)
        if vs == 0 and final:
            self.grads.ready(rank, step, a.chunk, c.trainable_embedding_params(), 0.0, deps)
