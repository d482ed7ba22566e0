"""Op emission: the growing plan (ops, collectives, issue order) and the primitives that add to it.

:class:`OpEmitter` owns the op list and the collective table of the plan being built.  Every
other part of the builder (layers, expert traffic, gradients, storage, the pipeline walk) adds
ops through it:

* :meth:`OpEmitter.compute`: a compute op running a list of kernel calls (timed once per list by
  the compute model, memoised);
* :meth:`OpEmitter.comm`: a comm op joining the collective ``key`` (built the first time a
  member asks for it; under lockstep the lane policy merges the unit's instances);
* :meth:`OpEmitter.group_collective`: a collective over one of the rank's process groups.

Chain helpers take the ids an op must wait for and return the ids the next op must wait for
(the new op's id, or the input unchanged when nothing was emitted, e.g. a collective over a
group of one).  Ops carry a *segment* number (:meth:`OpEmitter.new_segment`) that the pipeline
walk uses to interleave DualPipe's overlapped forward and backward: a dense layer has one per
half layer; an MoE layer starts one at each compute op that waits for an expert all-to-all (the
experts after the dispatch, the unpermute or router after the combine), so that the other
chunk's compute is issued between an all-to-all and the op that needs its result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from netsim.calibration.shared_sms import SM_BOUND_KERNELS
from netsim.workload.kernel_calls import KernelCall, TimeModel, kernels_time_s
from netsim.workload.kernel_tally import KernelTally
from netsim.workload.lanes import Lanes
from netsim.workload.plan import COMPUTE, Collective, Deps, Instance, Make, Op

__all__ = ["GroupKey", "OpEmitter"]

#: ``group_key(rank) -> (group, key)``: the process group of ``rank`` and its collective's key
GroupKey = Callable[[int], tuple[tuple[int, ...], tuple[Any, ...]]]


class OpEmitter:
    """The plan being built: ops, collectives and the issue counters of every rank.

    Args:
        compute: seconds per kernel call.
        dtype: the model's compute dtype (passed to the compute model).
        world: number of ranks.
        lanes: the lane policy (every rank, or lockstep).
        slowdown: per rank, what its compute ops take over the compute model's time (1 / the speed
            of a slow accelerator, :mod:`netsim.topology.faults`; None: every rank at speed).
    """

    def __init__(
        self, compute: TimeModel, dtype: str, world: int, lanes: Lanes, slowdown: list[float] | None = None
    ) -> None:
        self.compute_model = compute
        self.slowdown = slowdown
        #: give every compute op its SM-bound share (``Op.sm_share``): the plan has collectives
        #: that hold SMs while in flight (set by the builder from ``ExpertTraffic.holds_sms``)
        self.track_sm = False
        self.sm_cache: dict[int, tuple[list[KernelCall], float]] = {}
        self.dtype = dtype
        self.lanes = lanes
        self.ops: list[Op] = []
        self.colls: dict[tuple[Any, ...], Collective] = {}
        self.issue = [0] * world
        self.seg = 0
        self.seg_of: dict[int, int] = {}
        self.time_cache: dict[Any, float] = {}
        self.dur_cache: dict[int, tuple[list[KernelCall], float]] = {}
        #: the kernel calls of every compute op, per rank (netsim.workload.kernel_tally)
        self.tally = KernelTally()
        #: host waits (:meth:`host_wait`): ids of the host ops that gate what their rank issues next
        self.host_gates: list[int] = []

    def new_segment(self) -> None:
        """Start a new layer segment (the unit DualPipe interleaves by)."""
        self.seg += 1

    def op(self, rank: int, step: int, kind: str, stream: str, name: str, deps: Deps, **kw: Any) -> Op:
        """Append one op of ``rank`` (next in its issue order)."""
        op = Op(len(self.ops), rank, step, kind, stream, name, deps=sorted(set(deps)), **kw)
        op.issue = self.issue[rank]
        self.issue[rank] += 1
        self.seg_of[op.id] = self.seg
        self.ops.append(op)
        return op

    def duration(self, calls: list[KernelCall]) -> float:
        """Seconds of ``calls``.  The cost lists are memoised (``ModelCosts``), so most ops ask
        about the same list object: cached by identity (the entry keeps its list alive, so the
        id cannot be reused by another list)."""
        hit = self.dur_cache.get(id(calls))
        if hit is not None and hit[0] is calls:
            return hit[1]
        dur = kernels_time_s(calls, self.compute_model, self.dtype, self.time_cache)
        self.dur_cache[id(calls)] = (calls, dur)
        return dur

    def sm_duration(self, calls: list[KernelCall]) -> float:
        """Seconds of the SM-bound calls (GEMMs, attention: ``SM_BOUND_KERNELS``) of ``calls``,
        cached by identity as :meth:`duration`."""
        hit = self.sm_cache.get(id(calls))
        if hit is not None and hit[0] is calls:
            return hit[1]
        bound = [c for c in calls if c.kernel in SM_BOUND_KERNELS]
        dur = kernels_time_s(bound, self.compute_model, self.dtype, self.time_cache) if bound else 0.0
        self.sm_cache[id(calls)] = (calls, dur)
        return dur

    def _sm_share(self, parts: tuple[list[KernelCall], ...], total_s: float) -> float:
        """The SM-bound share of an op running ``parts`` for ``total_s``."""
        if total_s <= 0:
            return 0.0
        return min(1.0, sum(self.sm_duration(p) for p in parts) / total_s)

    def compute(
        self,
        rank: int,
        step: int,
        name: str,
        calls: list[KernelCall] | tuple[list[KernelCall], ...],
        deps: Deps,
        layer: int,
        mb: int,
    ) -> Deps:
        """One compute op running ``calls`` (or the concatenation of a tuple of call lists)."""
        parts = calls if isinstance(calls, tuple) else (calls,)
        if not any(parts):
            return deps
        dur = sum(self.duration(p) for p in parts)
        if self.slowdown is not None:
            dur *= self.slowdown[rank]
        op = self.op(rank, step, "compute", COMPUTE, name, deps, duration_s=dur, layer=layer, microbatch=mb)
        self.tally.add(rank, name, parts)
        if self.track_sm:
            op.sm_share = self._sm_share(parts, dur)
        return [op.id]

    def expert_compute(
        self,
        rank: int,
        step: int,
        name: str,
        fixed: tuple[list[KernelCall], ...],
        experts: Callable[[int], list[KernelCall]],
        tokens: list[int],
        deps: Deps,
        layer: int,
        mb: int,
    ) -> Deps:
        """A compute op running ``fixed`` and ``experts(t)`` for the ``t`` tokens the rank's
        experts received (one entry per lane: a lockstep op lasts as long as its slowest lane
        and keeps every lane's duration for the accounting)."""
        if not self.lanes.lockstep:
            return self.compute(rank, step, name, (*fixed, experts(tokens[0])), deps, layer, mb)
        base = sum(self.duration(p) for p in fixed)
        by_tokens = {v: base + self.duration(experts(v)) for v in set(tokens)}
        lane = np.array([by_tokens[v] for v in tokens])
        slowest = max(by_tokens, key=lambda v: (by_tokens[v], v))
        if not any(fixed) and not experts(slowest):
            return deps
        op = self.op(
            rank,
            step,
            "compute",
            COMPUTE,
            name,
            deps,
            duration_s=float(lane.max()),
            layer=layer,
            microbatch=mb,
            lane_durations_s=lane if lane.min() < lane.max() else None,
        )
        self.tally.add(rank, name, (*fixed, experts(slowest)))
        if self.track_sm:
            op.sm_share = self._sm_share((*fixed, experts(slowest)), by_tokens[slowest])
        return [op.id]

    def comm(
        self,
        rank: int,
        step: int,
        stream: str,
        deps: Deps,
        key: tuple[Any, ...],
        make: Make,
        *,
        name: str | None = None,
        ordered: bool = True,
        background: bool = False,
        lanes: tuple[str, Instance] | None = None,
    ) -> Deps:
        """One comm op of ``rank`` on the collective ``key`` (made by ``make`` the first time).

        ``lanes`` = ``(kind, instance)`` with ``instance(r) -> (key, make)`` the same collective
        as seen by rank ``r``: in a lockstep plan the collective becomes the merge of the
        instances of every rank of the unit (one per distinct group of ``kind``)."""
        coll = self.colls.get(key)
        if coll is None:
            coll = self.colls[key] = self.lanes.collective(key, make, rank, lanes)
        op = self.op(
            rank,
            step,
            "comm",
            stream,
            name or coll.label,
            deps,
            traffic_class=coll.traffic_class,
            layer=coll.layer,
            microbatch=coll.microbatch,
            ordered=ordered,
            coll=coll,
            background=background,
        )
        return [op.id]

    def group_collective(
        self,
        rank: int,
        step: int,
        stream: str,
        cls: str,
        op: str,
        nbytes: float | Callable[[int], float],
        deps: Deps,
        kind: str,
        group_key: GroupKey,
        *,
        layer: int = -1,
        mb: int = -1,
        phase: str = "",
        sm_share: float | Callable[[float, tuple[int, ...]], float] = 0.0,
    ) -> Deps:
        """A collective of ``op`` over the group of kind ``kind`` of ``rank`` (nothing for a
        group of one or no bytes; per-lane kinds of a lockstep plan ask every lane).  ``nbytes``
        is a size, or ``nbytes(r)`` the size of the collective as rank ``r`` sees it (groups
        whose sizes differ, merged under lockstep); ``sm_share``: of the SMs its kernels hold
        on each member while in flight (``Collective.sm_share``), or ``sm_share(nbytes, group)``
        that share for an instance's size and group (:mod:`netsim.workload.nccl_sms`)."""
        size = nbytes if callable(nbytes) else (lambda _r: float(nbytes))
        group, key = group_key(rank)
        per_lane = self.lanes.per_lane(kind)
        if size(rank) <= 0 or (len(group) <= 1 and not per_lane):
            return deps
        label = f"{cls}.{phase or op}"

        def instance(r: int) -> tuple[tuple[Any, ...], Collective]:
            g, k = group_key(r)
            n = size(r)
            held = sm_share(n, g) if callable(sm_share) else sm_share
            return k, Collective(
                k, op, g, n, cls, label, phase=phase, layer=layer, microbatch=mb, step=step, sm_share=held
            )

        if per_lane:
            return self.lanes.lane_collectives(self, rank, step, stream, deps, instance)
        return self.comm(rank, step, stream, deps, key, lambda: instance(rank)[1], lanes=(kind, instance))

    def host_wait(self, rank: int, step: int, name: str, duration_s: float, deps: Deps, layer: int, mb: int) -> Deps:
        """A host synchronisation of ``rank``: its host blocks until ``deps`` have finished on the
        GPU, then takes ``duration_s`` before the GPU has its next work.  Emitted as a host op
        (neither compute nor communication: the GPU idles unless earlier work is queued);
        :meth:`gate_host_waits` makes everything the rank issues after it wait for it."""
        if duration_s <= 0:
            return deps
        op = self.op(rank, step, "host", "host", name, deps, duration_s=duration_s, layer=layer, microbatch=mb)
        op.ordered = False
        self.host_gates.append(op.id)
        return [op.id]

    def gate_host_waits(self) -> None:
        """After the plan is complete (its final issue order: DualPipe's and the combined 1F1B's
        F&B pairs are re-issued after emission), make the first op of every ordered stream that
        a rank issues after one of its host waits depend on it (the streams keep the rest in
        order), every host wait on the rank's previous one (one host thread issues them), and
        every host wait on the last compute op the rank issued before it: the host waits on the
        compute stream (HybridEP's ``current_stream().synchronize()``, Megatron's event recorded
        on it), so whatever was queued there before, another micro-batch's work included, has
        to finish first."""
        if not self.host_gates:
            return
        gates = set(self.host_gates)
        gated_ranks = {self.ops[g].rank for g in gates}
        by_rank: dict[int, list[Op]] = {}
        for op in self.ops:
            if op.rank in gated_ranks:
                by_rank.setdefault(op.rank, []).append(op)
        for ops in by_rank.values():
            ops.sort(key=lambda o: o.issue)
            gate: Op | None = None
            streams: set[str] = set()
            last_compute: Op | None = None
            for op in ops:
                if op.id in gates:
                    for before in (gate, last_compute):
                        if before is not None and before.id not in op.deps:
                            op.deps.append(before.id)
                    gate, streams = op, set()
                    continue
                if op.stream == COMPUTE:
                    last_compute = op
                if gate is not None and op.ordered and op.stream not in streams:
                    streams.add(op.stream)
                    if gate.id not in op.deps:
                        op.deps.append(gate.id)

    # ------------------------------------------------------------------ queries

    def last_compute(self, rank: int, first: int) -> int:
        """The compute op of ``rank`` issued last among the ops from ``first`` on (-1: none)."""
        best = None
        for op in self.ops[first:]:
            if op.kind == "compute" and (best is None or op.issue > best.issue):
                best = op
        return best.id if best is not None else -1

    def step_sinks(self, first: int) -> dict[int, Deps]:
        """Per rank, its ops from op ``first`` on (background ones aside) that no other op of the
        rank depends on: one pass over the ops."""
        ops = self.ops[first:]
        used = {(o.rank, d) for o in ops if not o.background for d in o.deps}
        sinks: dict[int, Deps] = {}
        for o in ops:
            if not o.background and (o.rank, o.id) not in used:
                sinks.setdefault(o.rank, []).append(o.id)
        return sinks

    def barrier(self, rank: int, step: int, sinks: Deps, extra: Deps) -> int:
        """The step barrier of ``rank`` (the gradient-norm reduction of clipping): waits for
        ``sinks`` (:meth:`step_sinks`) and ``extra``."""
        key = ("barrier", step)
        world = tuple(self.lanes.reps)

        def make() -> Collective:
            return Collective(key, "barrier", world, 0.0, "", "step.barrier", step=step)

        coll = self.colls.setdefault(key, make())
        op = self.op(rank, step, "barrier", "sync", "step.barrier", sinks + extra, coll=coll)
        return op.id
