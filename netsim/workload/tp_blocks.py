"""A TP block's compute and its tensor-parallel communication: where each collective meets the GEMMs.

A TP block is the attention or the dense MLP of a layer split over ``tp`` ranks (Shoeybi et
al. 2019): a column-parallel GEMM (``gemm_in``: QKV, fc1) reads the block's input, a
row-parallel GEMM (``gemm_out``: the output projection, fc2) writes its output, and the
attention core or the activation runs between (:class:`netsim.workload.costs.TpForward`).

**Without sequence parallelism** the forward ends with an all-reduce of the output and the
backward with an all-reduce of the input gradient, both after the block's compute.

**With sequence parallelism** (Korthikanti et al. 2022) the block's input and output are split
over the sequence:

* forward: an all-gather of the input before the block, a reduce-scatter of its output after;
* backward: an all-gather of the output gradient before the block's backward; then, as
  Megatron-Core's linear layer runs the column-parallel GEMM's backward
  (``LinearWithGradAccumulationAndAsyncCommunication.backward`` in
  megatron/core/tensor_parallel/layers.py, the same at 285068c8 and d98e8a64dd; Transformer
  Engine's ``Linear`` likewise), a second all-gather of the block's *input* (only the rank's
  ``1/tp`` share of it is stored) beside the input-gradient GEMM, and the reduce-scatter of the
  input gradient beside the weight-gradient GEMM, which needs that gathered input.  The norm's
  backward waits for the reduce-scatter.  (Phase ``bwd-*-ag-in``.)

**With Transformer Engine's userbuffers** (``overlap.tp_comm_overlap``) each collective runs
beside the GEMM it feeds or drains (``initialize_ub``'s methods,
transformer_engine/pytorch/module/base.py at d0067d0da6): the forward all-gather beside
``gemm_in`` (``qkv_fprop``, ``fc1_fprop``: ring exchanges that feed the GEMM chunk by chunk),
the forward reduce-scatter beside ``gemm_out`` (``proj_fprop``, ``fc2_fprop``), the backward's
output-gradient all-gather beside ``gemm_out``'s input gradient (``proj_dgrad``, ``fc2_dgrad``),
the input all-gather beside ``gemm_in``'s input gradient (``qkv_dgrad``, ``fc1_dgrad``: bulk)
and the input-gradient reduce-scatter beside its weight gradient (``qkv_wgrad``, ``fc1_wgrad``:
bulk).  A collective and its GEMM start together and what follows waits for both; the SMs the
overlaps take from their GEMMs are in the GEMMs' times (:mod:`netsim.workload.tp_overlap`).

**SMs.**  NCCL runs a collective as one thread block per channel, each on an SM of its own for
as long as the collective is in flight, so the GEMMs beside a TP collective (the backward's
input- and weight-gradient GEMMs beside the input's all-gather and the reduce-scatter) run on
the other SMs (:mod:`netsim.replay`, "SMs held in flight").  The channels are those NCCL's tuner
gives the call (:func:`netsim.collectives.nccl.tuner.choose`: 24 at TP 8 in a DGX A100 or DGX
H100, of 108 and 132 SMs; :mod:`netsim.workload.nccl_sms`); ``overlap.nccl_sms.tp`` overrides
them (0: none).  Userbuffers' SMs
are the GEMMs' margins, or what an overlap without one holds while its kernel runs
(``overlap.tp_comm_held_sms``, :mod:`netsim.workload.tp_overlap`).

Not modelled (*approx.*): userbuffers split the overlapped GEMM into ``tp`` (ring exchange) or
``num_splits`` (pipeline) chunks, on up to three streams, so the GEMM's last chunk waits for the
all-gather's last piece and the reduce-scatter's last piece waits for the GEMM's last chunk;
here the two simply run side by side.  A chunked GEMM's own efficiency needs a measurement
(a GEMM of ``M / tp`` rows, several at once on separate streams).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from netsim.workload.context import BuildContext
from netsim.workload.emit import OpEmitter
from netsim.workload.kernel_calls import KernelCall, Part
from netsim.workload.plan import Deps
from netsim.workload.tp_overlap import PHASE_GEMM, tp_held_shares

__all__ = ["Block", "Core", "TpBlocks"]

#: which TP block of a layer
Block = Literal["attn", "mlp"]
#: the kernels between a block's GEMMs when they are more than one compute op (the attention
#: core with its context-parallel ring): given its start, returns its end
Core = Callable[[Deps], Deps]


class TpBlocks:
    """Emits a TP block's compute ops and its TP collectives (module doc)."""

    def __init__(self, ctx: BuildContext, emit: OpEmitter) -> None:
        self.ctx = ctx
        self.emit = emit
        #: sequence parallelism over more than one TP rank: the block is cut at its GEMMs
        self.sp = ctx.sequence_parallel
        #: Transformer Engine's userbuffers: the TP collectives beside the blocks' GEMMs
        self.ub = ctx.spec.overlap.tp_comm_overlap and ctx.sequence_parallel
        acc = dict(ctx.graph.graph.get("accelerator") or {})
        sms = acc.get("sms")
        #: NCCL's TP collectives hold SMs while in flight (:mod:`netsim.workload.nccl_sms`)
        self.nccl = not self.ub and ctx.layout.tp > 1 and ctx.nccl_sms.holds("tp")
        #: userbuffers: the SMs each overlap without a margin holds, by GEMM name
        self.ub_held: dict[str, float] = {}
        if self.ub and ctx.layout.tp > 1:
            name = str(acc.get("name") or "")
            self.ub_held = tp_held_shares(ctx.spec.overlap, None if sms is None else int(sms), name)

    @property
    def holds_sms(self) -> bool:
        """Whether the TP collectives hold SMs while in flight."""
        return self.nccl or bool(self.ub_held)

    def phase_share(self, phase: str, op: str, nbytes: float, group: tuple[int, ...]) -> float:
        """The share of a member's SMs the TP collective of ``phase`` holds while in flight:
        NCCL's channels (:meth:`sm_share`), or under userbuffers what its overlap holds
        (``overlap.tp_comm_held_sms`` of the GEMM it runs beside, :data:`PHASE_GEMM`)."""
        if self.ub:
            return self.ub_held.get(PHASE_GEMM.get(phase.removeprefix("rcp-"), ""), 0.0)
        return self.sm_share(op, nbytes, group)

    def sm_share(self, op: str, nbytes: float, group: tuple[int, ...]) -> float:
        """The share of a member's SMs NCCL's kernel for ``op`` of ``nbytes`` over ``group``
        holds: one SM per channel, the channels NCCL's tuner gives the call
        (:meth:`~netsim.collectives.cost.NcclCost.choice`)."""
        return self.ctx.nccl_sms.collective_share("tp", op, nbytes, group) if self.nccl else 0.0

    # ------------------------------------------------------------------ collectives

    def comm(self, rank: int, step: int, deps: Deps, phase: str, layer: int, mb: int, op: str) -> Deps:
        """Megatron's TP communication of a block's boundary: with sequence parallelism the
        all-gather of ``tokens x hidden`` (in the GEMMs' input precision) or the reduce-scatter
        (in the model's); without it no all-gather and an all-reduce for the reduce-scatter."""
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
        return self.collective(rank, step, deps, op, nbytes, phase, layer, mb)

    def collective(
        self, rank: int, step: int, deps: Deps, op: str, nbytes: float, phase: str, layer: int, mb: int
    ) -> Deps:
        """One ``op`` of ``nbytes`` over ``rank``'s TP group, keyed by (step, phase, micro-batch,
        layer): the layers' TP communication and the pipeline's scatter/gather all-gathers."""
        L = self.ctx.layout

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            return L.tp_group(r), ("tp", step, phase, mb, layer, L.group_index("tp", r))

        share = self.phase_share(phase, op, nbytes, L.tp_group(rank))
        return self.emit.group_collective(
            rank, step, "tp", "tp", op, nbytes, deps, "tp", group_key, layer=layer, mb=mb, phase=phase, sm_share=share
        )

    # ------------------------------------------------------------------ blocks

    def forward(
        self,
        rank: int,
        step: int,
        deps: Deps,
        block: Block,
        tag: str,
        pfx: str,
        layer: int,
        mb: int,
        core: Core | None = None,
    ) -> Deps:
        """The forward of ``block`` (ops ``{tag}.{block}``; ``tag`` F, or R for a recomputation
        whose phases start with ``pfx``) with its TP collectives; ``core``: the attention core
        as its own ops (context parallelism), else the pieces' ``mid`` calls."""
        window = self.ctx.spec.model.attention_window(layer) if block == "attn" else None
        emit, s = self.emit, self.ctx.costs.tp_forward(block, window)
        ag, rs = f"{pfx}fwd-{block}-ag", f"{pfx}fwd-{block}-rs"
        name = f"{tag}.{block}"

        def op(suffix: str, calls: tuple[list[KernelCall], ...], d: Deps) -> Deps:
            return emit.compute(rank, step, name + suffix, calls, d, layer, mb)

        if not self.ub:
            deps = self.comm(rank, step, deps, ag, layer, mb, "all_gather")
            if core is None:
                deps = op("", tuple(s), deps)
            else:
                deps = op("-pre", (s.norm, s.gemm_in), deps)
                deps = op("-post", (s.gemm_out, s.close), core(deps))
            return self.comm(rank, step, deps, rs, layer, mb, "reduce_scatter")
        gathered = self.comm(rank, step, deps, ag, layer, mb, "all_gather")
        deps = [*op("-pre", (s.norm, s.gemm_in), deps), *gathered]
        deps = core(deps) if core is not None else op("-mid", (s.mid,), deps)
        scattered = self.comm(rank, step, deps, rs, layer, mb, "reduce_scatter")
        deps = op("-post", (s.gemm_out,), deps)
        return op("-close", (s.close,), [*deps, *scattered])

    def backward(
        self,
        rank: int,
        step: int,
        deps: Deps,
        block: Block,
        part: Part,
        layer: int,
        mb: int,
        first: tuple[list[KernelCall], ...] = (),
        core: Core | None = None,
    ) -> Deps:
        """The backward ``part`` (B or BW) of ``block`` (ops ``{part}.{block}``) with its TP
        collectives; ``first``: kernels its first op runs before (recomputed norms); ``core`` as
        in :meth:`forward`."""
        assert part in ("B", "BW")
        back: Literal["B", "BW"] = "B" if part == "B" else "BW"
        emit, c = self.emit, self.ctx.costs
        ag, rs = f"bwd-{block}-ag", f"bwd-{block}-rs"
        name = f"{part}.{block}"

        def op(suffix: str, calls: tuple[list[KernelCall], ...], d: Deps) -> Deps:
            return emit.compute(rank, step, name + suffix, calls, d, layer, mb)

        window = self.ctx.spec.model.attention_window(layer) if block == "attn" else None
        if not self.sp:
            deps = self.comm(rank, step, deps, ag, layer, mb, "all_gather")
            if core is None:
                whole = c.attention(part, window) if block == "attn" else c.mlp(part)
                deps = op("", (*first, whole), deps)
            else:
                s = c.tp_backward(block, back, window)
                deps = op("-post", (*first, s.close, s.out_dgrad, s.out_wgrad), deps)
                deps = op("-pre", (s.in_dgrad, s.in_wgrad, s.norm), core(deps))
            return self.comm(rank, step, deps, rs, layer, mb, "reduce_scatter")
        s = c.tp_backward(block, back, window)
        mid: tuple[list[KernelCall], ...] = (s.mid,) if core is None else ()
        if self.ub:
            gathered = self.comm(rank, step, deps, ag, layer, mb, "all_gather")
            deps = [*op("-post", (*first, s.close, s.out_dgrad), deps), *gathered]
            deps = op("-mid", (s.out_wgrad, *mid), deps)
        else:
            deps = self.comm(rank, step, deps, ag, layer, mb, "all_gather")
            deps = op("-post", (*first, s.close, s.out_dgrad, s.out_wgrad, *mid), deps)
        if core is not None:
            deps = core(deps)
        gathered = self.comm(rank, step, deps, ag + "-in", layer, mb, "all_gather")
        deps = [*op("-dgrad", (s.in_dgrad,), deps), *gathered]
        scattered = self.comm(rank, step, deps, rs, layer, mb, "reduce_scatter")
        deps = op("-wgrad", (s.in_wgrad,), deps)
        return op("-norm", (s.norm,), [*deps, *scattered])
