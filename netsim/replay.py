"""Training-step replay: execute every rank's op graph concurrently on one network.

The plan (:func:`netsim.workload.graph.build_plan`) is pure data: ops with dependencies and
streams.  :func:`replay` runs it as a dataflow inside the network's simpy environment:

* an op becomes *ready* when all its dependencies have finished and, on an ordered stream, the
  op issued before it on the same (rank, stream) has finished (CUDA-stream semantics);
* a ready compute op (or host op: CPU-side work a trace recorded) runs for its duration; ops of
  one stream never overlap (one compute stream per rank in workload plans);
* SMs held in flight: a collective with an ``sm_share`` (the expert all-to-all kernels' SMs,
  ``overlap.ep_comm_sms``, or unset the thread blocks of NCCL's all-to-all kernel) holds that
  share of each member's SMs from the member's arrival until it completes (the collectives of one
  traffic class share one communicator stream, whose kernels run one at a time: a rank holds
  the largest share in flight of each class, summed over the classes), and a compute op
  with an SM-bound share (``Op.sm_share``: its GEMMs and attention) runs that part at
  ``1 / (1 - held)`` of its speed while it does; the op is re-timed whenever the held share of
  its rank changes (the HBM-bound rest keeps its speed: a fraction of the SMs saturates HBM);
* a ready comm op *arrives* at its collective; when every member has arrived the collective
  starts (``run_collective`` for group collectives, one flow for point-to-point transfers --
  after NCCL's latency and capped at its channels' rate where the transfer names its
  communicator, :func:`~netsim.collectives.transfer_costs.p2p_transfer` --, nothing for a
  barrier, or its ``duration_s``) and all members finish together when it
  completes; the time a member waits for the others is idle time, not communication (NCCL
  semantics).

The executor is callback-driven (no simpy process per op), so a step of a few hundred thousand
ops costs little beyond the network's own work.  Results are flat arrays (start/end per op and
per collective); :func:`rank_breakdown` splits a rank's time window into compute only,
communication only, overlap and idle — the LocMoE breakdown, which adds up to the window
exactly.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import simpy

from netsim.collectives.plan_execution import device_ids
from netsim.collectives.transfer_costs import P2pTransfer, p2p_transfer
from netsim.errors import WorkloadError
from netsim.workload.graph import Collective, Op, StepPlan

__all__ = ["BREAKDOWN_CLASSES", "Breakdown", "ReplayDeadlock", "ReplayResult", "rank_breakdown", "replay"]

#: Traffic classes that count as a rank's communication in the breakdown.  Storage reads and
#: checkpoint writes are background I/O of the hosts / storage engines: they are reported as
#: bytes and checkpoint time, and slow training only through contention.
BREAKDOWN_CLASSES: tuple[str, ...] = ("dp", "pp", "ep", "tp")

ProgressFn = Callable[[int, int, float], None]


@dataclass
class ReplayResult:
    """Times of one replay (seconds of simulated time).

    Attributes:
        op_start, op_end: per op id; a comm op's interval is its collective's (from the moment
            all members arrived to its completion).
        coll_start, coll_end: per collective key.
        step_end: completion time of every step's barrier (``step_start[s] = step_end[s-1]``,
            0 for the first step).
        end_s: when the last op (including background checkpoint writes) finished.
    """

    op_start: np.ndarray
    op_end: np.ndarray
    coll_start: dict[tuple[Any, ...], float]
    coll_end: dict[tuple[Any, ...], float]
    step_end: list[float]
    end_s: float

    @property
    def step_start(self) -> list[float]:
        return [0.0, *self.step_end[:-1]]

    @property
    def step_times_s(self) -> list[float]:
        return [e - s for s, e in zip(self.step_start, self.step_end, strict=True)]


#: collective keywords a union of lockstep instances passes on (others: run the instances one by one)
_UNION_KWARGS = frozenset({"model", "cost", "chunk_bytes", "channels", "proto"})


class ReplayDeadlock(RuntimeError):
    """Some ops never ran (``op_ids``, in id order): a dependency cycle, or a collective whose
    members never all arrived (ranks that order their collectives differently)."""

    def __init__(self, message: str, op_ids: np.ndarray) -> None:
        super().__init__(message)
        self.op_ids = op_ids


#: the longest compute op the replay accepts (s): one day.  No kernel of a training step comes
#: near it; a compute model that gives one is out of range (an efficiency of 1e-12, say), and at
#: such times the float clock can no longer tell a network's microsecond events apart
MAX_OP_S = 86_400.0


def _check_duration(op: Op) -> None:
    """A one-line WorkloadError when a compute op (or timed barrier) lasts longer than
    :data:`MAX_OP_S` or not a finite time."""
    dur = op.duration_s if op.coll is None else (op.coll.duration_s if op.coll.op == "barrier" else 0.0)
    if not dur <= MAX_OP_S:  # NaN too
        raise WorkloadError(
            f"op {op.name} of rank {op.rank} would take {dur:.3g} s, more than a day (at most "
            f"{MAX_OP_S:.0f} s): the compute model is out of range (check options.flops_efficiency, "
            "topology.accelerator.compute and the kernel table)"
        )


class _Executor:
    def __init__(
        self,
        plan: StepPlan,
        net: Any,
        algorithms: Mapping[str, str],
        skip_classes: Collection[str],
        collective_kwargs: Mapping[str, Any],
        progress: ProgressFn | None,
    ) -> None:
        from netsim.collectives import run_collective

        self.run_collective = run_collective
        self.plan = plan
        self.net = net
        self.env = net.env
        self.algorithms = dict(algorithms)
        self.skip = set(skip_classes)
        self.coll_kwargs = dict(collective_kwargs)
        self.progress = progress
        ops = plan.ops
        n = len(ops)
        self.ops = ops
        self.start = np.full(n, np.nan)
        self.end = np.full(n, np.nan)
        self.pending = np.zeros(n, dtype=np.int64)
        self.dependents: list[list[int]] = [[] for _ in range(n)]
        for op in ops:
            _check_duration(op)
            for d in op.deps:
                self.dependents[d].append(op.id)
            self.pending[op.id] = len(op.deps)
        streams: dict[tuple[int, str], list[Op]] = {}
        for op in ops:
            if op.ordered:
                streams.setdefault((op.rank, op.stream), []).append(op)
        for lst in streams.values():
            lst.sort(key=lambda o: o.issue)
            for a, b in itertools.pairwise(lst):
                self.dependents[a.id].append(b.id)
                self.pending[b.id] += 1
        self.arrived: dict[tuple[Any, ...], list[int]] = {}
        self._p2p_cache: dict[tuple[Any, ...], P2pTransfer] = {}
        self.coll_start: dict[tuple[Any, ...], float] = {}
        self.coll_end: dict[tuple[Any, ...], float] = {}
        self.done = 0
        self._next_report = max(1, n // 100)
        #: SMs held in flight: the share of a rank's SMs its in-flight collectives hold, and the
        #: compute ops with an SM-bound share running on it: oid -> [work left (s at all SMs),
        #: since (s), slowdown, version]
        self.held: dict[int, float] = {}
        #: the shares in flight per rank and traffic class: one class's collectives share one NCCL
        #: communicator stream (or one library's comm stream), whose kernels run one at a time,
        #: so a class holds the largest of its shares in flight, not their sum.  Kept as share ->
        #: how many in flight: a rank can have thousands of transfers in flight, few distinct shares
        self.in_flight: dict[int, dict[str, dict[float, int]]] = {}
        self.running: dict[int, dict[int, list[float]]] = {}

    def run(self) -> None:
        self.net.reserve_flows(self._expected_flows())
        for op in self.ops:
            if self.pending[op.id] == 0:
                self._ready(op.id)
        self.net.run()

    def _expected_flows(self) -> int:
        """Flows the plan's transfers and all-to-all(v)s start (and one coflow carrier each);
        ring and tree collectives, whose flow counts depend on the model, not counted."""
        n = 0
        for coll in self.plan.collectives.values():
            if coll.traffic_class in self.skip:
                continue
            for c in coll.instances or (coll,):
                if c.op == "transfer":
                    n += 1
                elif c.matrix is not None:
                    n += int(np.count_nonzero(c.matrix)) + 1
        return n

    # ------------------------------------------------------------------ events

    def _ready(self, oid: int) -> None:
        op = self.ops[oid]
        env = self.env
        if op.coll is None:  # compute or host op
            self.start[oid] = env.now
            if op.sm_share > 0.0:
                self._run_shared(op)
                return
            ev = env.timeout(op.duration_s)
            ev.callbacks.append(lambda _ev, oid=oid: self._finish(oid))
            return
        coll = op.coll
        if coll.sm_share > 0.0:
            self._hold(op.rank, coll.traffic_class, coll.sm_share)
        members = self.arrived.setdefault(coll.key, [])
        members.append(oid)
        if len(members) == len(coll.ranks):
            self._launch(coll, members)

    def _launch(self, coll: Collective, members: list[int]) -> None:
        env = self.env
        now = float(env.now)
        self.coll_start[coll.key] = now
        for oid in members:
            self.start[oid] = now
        if coll.op == "barrier" and coll.duration_s > 0 and coll.traffic_class not in self.skip:
            ev = env.timeout(coll.duration_s)
        elif coll.op == "barrier" or coll.traffic_class in self.skip:
            ev = env.event()
            ev.succeed()
        elif coll.instances:
            ev = self._after(coll.latency_s, lambda: self._launch_instances(coll))
        else:
            ev = self._after(coll.latency_s, lambda: self._start(coll))
        ev.callbacks.append(lambda _ev, key=coll.key, members=members: self._finish_coll(key, members))

    def _start(self, coll: Collective) -> Any:
        """Start one collective (a flow for a transfer); returns its completion event."""
        if coll.op == "transfer":
            assert coll.src is not None and coll.dst is not None
            lat, size, cap = self._p2p_parts((coll,))
            src, dst = coll.src, coll.dst
            return self._after(
                lat,
                lambda: self.net.transfer(
                    src,
                    dst,
                    float(size[0]),
                    traffic_class=coll.traffic_class,
                    label=coll.label,
                    rate_cap_Bps=None if cap is None else float(cap[0]),
                ),
            )
        devices = [self.plan.devices[r] for r in coll.ranks]
        return self.run_collective(
            self.net,
            coll.op,
            devices,
            coll.nbytes,
            algo=coll.algo or self.algorithms.get(coll.op),
            matrix=coll.matrix,
            traffic_class=coll.traffic_class,
            label=coll.label,
            **self.coll_kwargs,
        )

    def _launch_instances(self, coll: Collective) -> Any:
        """A lockstep collective: all its instances at once; the event fires when all are done.

        Under the ``coflow`` collective model the point-to-point transfers move as one coflow,
        and direct all-to-all(v)s over disjoint groups as one all-to-allv of their union (the
        same transfers)."""
        parts = coll.instances
        from netsim.collectives.models import collective_model

        coflow = collective_model(self.coll_kwargs.get("model", "exact")).coflow
        if len(parts) > 1 and coflow and coll.op == "transfer":
            src, dst, _ = self._endpoints(parts)
            lat, size, cap = self._p2p_parts(parts)
            return self._after(
                lat,
                lambda: self.net.transfer_coflow(
                    src, dst, size, traffic_class=coll.traffic_class, label=coll.label, rate_cap_Bps=cap
                ),
            )
        if (
            len(parts) > 1
            and coll.op == "all_to_allv"
            and (coll.algo or self.algorithms.get(coll.op, "direct")) == "direct"
        ):
            ranks = [r for c in parts for r in c.ranks]
            mat = np.zeros((len(ranks), len(ranks)))
            at = 0
            for c in parts:
                n = len(c.ranks)
                assert c.matrix is not None
                mat[at : at + n, at : at + n] = c.matrix
                at += n
            return self._start(replace(parts[0], ranks=tuple(ranks), matrix=mat, nbytes=float(mat.sum())))
        if (
            len(parts) > 1
            and coll.op != "transfer"
            and set(self.coll_kwargs) <= _UNION_KWARGS
            and all(
                c.op == coll.op and c.matrix is None and c.nbytes == parts[0].nbytes and c.algo == parts[0].algo
                for c in parts
            )
        ):
            from netsim.collectives.executor import run_disjoint_collectives

            kw = self.coll_kwargs
            ev = run_disjoint_collectives(
                self.net,
                coll.op,
                [[self.plan.devices[r] for r in c.ranks] for c in parts],
                parts[0].nbytes,
                algo=parts[0].algo or self.algorithms.get(coll.op),
                traffic_class=coll.traffic_class,
                label=coll.label,
                chunk_bytes=kw.get("chunk_bytes"),
                channels=kw.get("channels"),
                model=kw.get("model", "exact"),
                cost=kw.get("cost"),
                proto=kw.get("proto"),
            )
            if ev is not None:
                return ev
        first = parts[0]
        if len(parts) > 1 and all(
            c.op == "transfer" and c.traffic_class == first.traffic_class and c.label == first.label for c in parts
        ):
            return self._transfer_all(parts)
        events = [self._start(c) for c in parts]
        return events[0] if len(events) == 1 else self.env.all_of(events)

    def _transfer_all(self, parts: Sequence[Collective]) -> simpy.Event:
        """The point-to-point transfers of a lockstep collective (one class and label) as one
        batch of flows, in the order of ``parts``; the event fires when the last is delivered,
        where an ``all_of`` of one event per transfer would have fired (:meth:`Clock.notify`)."""
        done = self.env.event()
        left = [len(parts)]

        def arrived(fids: list[int]) -> None:
            left[0] -= len(fids)
            if not left[0]:
                done.succeed()

        src, dst, _ = self._endpoints(parts)
        lat, size, cap = self._p2p_parts(parts)

        self._later(
            lat,
            lambda: self.net.transfer_notify(
                src, dst, size, arrived, traffic_class=parts[0].traffic_class, label=parts[0].label, rate_cap_Bps=cap
            ),
        )
        return done

    def _p2p_parts(self, parts: Sequence[Collective]) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The point-to-point transfers ``parts`` as the collective library runs them (those
        with a communicator: :func:`~netsim.collectives.transfer_costs.p2p_transfer`): the
        latency before they start (the largest), their wire bytes and rate caps (``None``: none)."""
        cost = self.coll_kwargs.get("cost")
        size = np.empty(len(parts))
        caps = np.full(len(parts), np.inf)
        lat = 0.0
        keys = [(c.comm, c.src, c.dst, c.nbytes) if c.comm else None for c in parts]
        if cost is not None and len(parts) > 1:  # the new device pairs' path latencies, at once
            self.net.prefetch_path_latency(
                [(str(k[1]), str(k[2])) for k in keys if k is not None and k not in self._p2p_cache]
            )
        for i, (c, key) in enumerate(zip(parts, keys, strict=True)):
            if key is None:
                size[i] = c.nbytes
                continue
            t = self._p2p_cache.get(key)
            if t is None:
                t = self._p2p_cache[key] = p2p_transfer(self.net, cost, c.comm, str(c.src), str(c.dst), c.nbytes)
            size[i] = t.wire_bytes
            lat = max(lat, t.latency_s)
            if t.rate_cap_Bps is not None:
                caps[i] = t.rate_cap_Bps
        return lat, size, (caps if np.isfinite(caps).any() else None)

    def _later(self, delay_s: float, start: Callable[[], Any]) -> None:
        """Call ``start()`` now, or ``delay_s`` from now (a library's latency before a transfer)."""
        if delay_s > 0:
            self.env.timeout(delay_s).callbacks.append(lambda _ev: start())
        else:
            start()

    def _after(self, delay_s: float, start: Callable[[], Any]) -> Any:
        """``start()``'s event, started ``delay_s`` from now: an event that fires when it does."""
        if delay_s <= 0:
            return start()
        done = self.env.event()
        self._later(delay_s, lambda: start().callbacks.append(lambda ev: done.succeed(ev.value)))
        return done

    def _endpoints(self, parts: Sequence[Collective]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source and destination device ids and bytes of the point-to-point transfers ``parts``."""
        src = device_ids(self.net, [str(c.src) for c in parts])
        dst = device_ids(self.net, [str(c.dst) for c in parts])
        return src, dst, np.fromiter((c.nbytes for c in parts), dtype=np.float64, count=len(parts))

    def _finish_coll(self, key: tuple[Any, ...], members: list[int]) -> None:
        self.coll_end[key] = float(self.env.now)
        coll = self.ops[members[0]].coll
        if coll is not None and coll.sm_share > 0.0:
            for oid in members:
                self._hold(self.ops[oid].rank, coll.traffic_class, -coll.sm_share)
        for oid in members:
            self._finish(oid)

    # ------------------------------------------------------------------ SMs held in flight

    def _run_shared(self, op: Op) -> None:
        """Run a compute op whose SM-bound share slows while collectives on its rank hold SMs."""
        state = [op.duration_s, float(self.env.now), _slowdown(op.sm_share, self.held.get(op.rank, 0.0)), 0.0]
        self.running.setdefault(op.rank, {})[op.id] = state
        self._schedule(op.id, state)

    def _schedule(self, oid: int, state: list[float]) -> None:
        ev = self.env.timeout(state[0] * state[2])
        version = state[3]
        ev.callbacks.append(lambda _ev, oid=oid, version=version: self._shared_done(oid, version))

    def _shared_done(self, oid: int, version: float) -> None:
        run = self.running[self.ops[oid].rank]
        state = run.get(oid)
        if state is None or state[3] != version:  # re-timed since: a later event finishes it
            return
        del run[oid]
        self._finish(oid)

    def _hold(self, rank: int, cls: str, share: float) -> None:
        """A collective of traffic class ``cls`` holding ``share`` of ``rank``'s SMs starts (or,
        negative, ends): the rank holds the largest share in flight of each class, summed over
        the classes; the compute ops running on it progress at the old rate until now and at the
        new one from now on."""
        by_class = self.in_flight.setdefault(rank, {})
        shares = by_class.setdefault(cls, {})
        if share > 0.0:
            shares[share] = shares.get(share, 0) + 1
        else:
            left = shares[-share] - 1
            if left:
                shares[-share] = left
            else:
                del shares[-share]
        old = self.held.get(rank, 0.0)
        held = sum(max(v) for v in by_class.values() if v)
        held = 0.0 if held < 1e-12 else held
        self.held[rank] = held
        if held == old:
            return
        run = self.running.get(rank)
        if not run:
            return
        now = float(self.env.now)
        for oid, state in run.items():
            state[0] = max(0.0, state[0] - (now - state[1]) / state[2])
            state[1] = now
            state[2] = _slowdown(self.ops[oid].sm_share, held)
            state[3] += 1.0
            self._schedule(oid, state)

    def _finish(self, oid: int) -> None:
        self.end[oid] = self.env.now
        self.done += 1
        if self.progress is not None and self.done % self._next_report == 0:
            self.progress(self.done, len(self.ops), float(self.env.now))
        pend = self.pending
        for d in self.dependents[oid]:
            pend[d] -= 1
            if pend[d] == 0:
                self._ready(d)


#: the most of a rank's SMs in-flight collectives are taken to hold: collectives of several
#: classes in flight at once cannot take every SM from the compute.  A guard, not a measurement
#: (*approx.*): no validation case comes near it (HybridEP's 32 of 132 SMs is 0.24)
MAX_HELD_SM_SHARE = 0.9


def _slowdown(sm_share: float, held: float) -> float:
    """Time multiplier of a compute op whose SM-bound kernels take ``sm_share`` of its time while
    ``held`` of the SMs are taken: those kernels run on the rest, the others (HBM-bound) as fast."""
    return (1.0 - sm_share) + sm_share / (1.0 - min(held, MAX_HELD_SM_SHARE))


def replay(
    plan: StepPlan,
    net: Any,
    *,
    algorithms: Mapping[str, str] | None = None,
    skip_classes: Collection[str] = (),
    collective_kwargs: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """Run ``plan`` on ``net`` (a fresh :class:`~netsim.network.engine.Network`).

    Args:
        plan: the op graph.
        net: the network; its simpy environment is run to completion.
        algorithms: collective algorithm per op (``{"all_reduce": "ring", "all_to_allv":
            "direct"}``); missing ops use the collectives' defaults.
        skip_classes: traffic classes whose communication completes at once without
            touching the network (the checkpoint-free baseline of a run).
        collective_kwargs: extra ``run_collective`` keywords (``step_latency_s``, ...).
        progress: ``fn(done_ops, total_ops, sim_time_s)`` called about every 1% of the ops.

    Raises:
        ReplayDeadlock: some op never ran (a dependency cycle or a collective whose members
            never all arrived): a bug in a workload plan, or a trace whose ranks disagree;
            reported with the first stuck ops.
    """
    # the plan's op objects live through the whole replay: keep the cyclic garbage collector
    # from walking them again and again (a fifth of the replay of a 256-GPU DeepSeek step)
    gc.freeze()
    try:
        ex = _Executor(plan, net, algorithms or {}, skip_classes, collective_kwargs or {}, progress)
        ex.run()
    finally:
        gc.unfreeze()
    stuck = np.flatnonzero(np.isnan(ex.end))
    if stuck.size:
        first = [plan.ops[i] for i in stuck[:5]]
        desc = "; ".join(f"rank {o.rank} {o.stream} {o.name} (layer {o.layer}, mb {o.microbatch})" for o in first)
        raise ReplayDeadlock(f"replay deadlocked: {stuck.size} of {len(plan.ops)} ops never ran, e.g. {desc}", stuck)
    step_end = [0.0] * plan.steps
    for op in plan.ops:
        if op.kind == "barrier":
            step_end[op.step] = max(step_end[op.step], float(ex.end[op.id]))
    return ReplayResult(
        op_start=ex.start,
        op_end=ex.end,
        coll_start=ex.coll_start,
        coll_end=ex.coll_end,
        step_end=step_end,
        end_s=float(np.nanmax(ex.end)) if len(plan.ops) else 0.0,
    )


# ---------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class Breakdown:
    """A rank's time window split four ways (seconds; the four add up to the window)."""

    compute_s: float
    communication_s: float
    overlap_s: float
    idle_s: float
    exposed_s_by_class: dict[str, float]
    active_s_by_class: dict[str, float]

    @property
    def total_s(self) -> float:
        return self.compute_s + self.communication_s + self.overlap_s + self.idle_s


def _coverage(points: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """For each elementary segment between consecutive ``points``: is any interval active?"""
    n = points.size - 1
    if not len(intervals) or n <= 0:
        return np.zeros(max(n, 0), dtype=bool)
    a = np.searchsorted(points, intervals[:, 0], side="left")
    b = np.searchsorted(points, intervals[:, 1], side="left")
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, a, 1)
    np.add.at(diff, b, -1)
    return np.cumsum(diff)[:-1] > 0


def _clip(intervals: Iterable[tuple[float, float]] | np.ndarray, t0: float, t1: float) -> np.ndarray:
    """``intervals`` (pairs or an ``[n, 2]`` array) clipped to ``[t0, t1]``, empty ones dropped."""
    arr = np.asarray(intervals if isinstance(intervals, np.ndarray) else list(intervals), dtype=np.float64)
    arr = arr.reshape(-1, 2)
    a = np.maximum(arr[:, 0], t0)
    b = np.minimum(arr[:, 1], t1)
    keep = b > a
    return np.stack([a[keep], b[keep]], axis=1)


def rank_breakdown(
    window: tuple[float, float],
    compute: Iterable[tuple[float, float]] | np.ndarray,
    comm: Mapping[str, Iterable[tuple[float, float]] | np.ndarray],
) -> Breakdown:
    """Split ``window`` into compute only / communication only / overlap / idle.

    Args:
        window: ``(t0, t1)`` seconds.
        compute: the rank's compute intervals (pairs, or an ``[n, 2]`` array).
        comm: the rank's communication intervals by traffic class.

    ``exposed_s_by_class`` divides the communication-only time among the classes active at
    each instant in equal shares (so it sums to ``communication_s``); ``active_s_by_class`` is
    the time each class had something in flight (overlapping or not).
    """
    t0, t1 = window
    comp = _clip(compute, t0, t1)
    by_cls = {c: _clip(iv, t0, t1) for c, iv in comm.items()}
    points = np.unique(
        np.concatenate(
            [np.array([t0, t1], dtype=np.float64), comp.reshape(-1), *(iv.reshape(-1) for iv in by_cls.values())]
        )
    )
    seg = np.diff(points)
    busy_c = _coverage(points, comp)
    cls_cov = {c: _coverage(points, iv) for c, iv in by_cls.items()}
    n_active = np.zeros(seg.size, dtype=np.int64)
    for cov in cls_cov.values():
        n_active += cov
    busy_m = n_active > 0
    compute_s = float(seg[busy_c & ~busy_m].sum())
    comm_s = float(seg[~busy_c & busy_m].sum())
    overlap_s = float(seg[busy_c & busy_m].sum())
    # the window less the rest (so the four add up to it); exactly 0 where no instant is idle,
    # rather than the rounding residue of the subtraction
    idle_s = float(t1 - t0) - compute_s - comm_s - overlap_s if (~busy_c & ~busy_m).any() else 0.0
    exposed = ~busy_c & busy_m
    share = np.where(exposed, seg / np.maximum(n_active, 1), 0.0)
    return Breakdown(
        compute_s=compute_s,
        communication_s=comm_s,
        overlap_s=overlap_s,
        idle_s=idle_s,
        exposed_s_by_class={c: float(share[cov].sum()) for c, cov in cls_cov.items()},
        active_s_by_class={c: float(seg[cov].sum()) for c, cov in cls_cov.items()},
    )
