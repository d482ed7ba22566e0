"""Plan execution: one plan on the network, transfers as flows, dependencies as waits.

:func:`execute_plan` runs a built :class:`~netsim.collectives.plan.Plan` on a
:class:`~netsim.network.engine.Network` and returns a simpy process whose value is a
:class:`CollectiveResult`.  The execution is event-driven, not process-per-transfer: transfers
that become ready at the same instant are submitted as one vectorised batch
(:meth:`Network.transfer_notify`: no simpy event per flow), arrivals at one instant are processed as a batch (dependency
counters decremented with numpy), stream transfers standing for chains are released per phase
once the phase has drained, coflow transfers that start together move as one coflow
(:meth:`Network.transfer_coflow`) and fluid (pipelined) plans wait for their pipeline latency
plus their slowest drain.  How the collective models use this (planning a collective, uniting
lockstep instances of disjoint groups, the direct all-to-all coflow) is in
:mod:`netsim.collectives.executor`, which re-exports these names.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from netsim.collectives.cost import CollectiveCall
from netsim.collectives.models import COFLOW_OPS
from netsim.collectives.plan import CollectiveError, Plan
from netsim.collectives.transfer_costs import transfer_costs

if TYPE_CHECKING:
    from netsim.network.engine import Network

__all__ = ["CollectiveResult", "execute_plan", "result_of"]


@dataclass(frozen=True)
class CollectiveResult:
    """The outcome of one executed collective (the value of the process
    :func:`run_collective` returns).

    Attributes:
        op, algo: the collective and the algorithm that ran.
        nbytes: its size in bytes.
        num_devices: group size.
        start_s, end_s: simulated start and end (seconds).
        num_transfers: transfers (flows) it generated.
        library_algo, proto: what the collective library chose (``None`` under ``ideal``).
    """

    op: str
    algo: str
    nbytes: float
    num_devices: int
    start_s: float
    end_s: float
    num_transfers: int
    library_algo: str | None = None
    proto: str | None = None

    @property
    def time_s(self) -> float:
        """Duration in seconds."""
        return self.end_s - self.start_s


class _Execution:
    """State of one plan being executed (dependency counters, batching of arrivals)."""

    def __init__(
        self, net: Network, plan: Plan, traffic_class: str, label: str, call: CollectiveCall, coflow: bool = False
    ) -> None:
        self.net = net
        self.coflow = coflow and plan.op in COFLOW_OPS
        self.env: simpy.Environment = net.env
        self.plan = plan
        self.call = call
        node_ids = plan_node_ids(net, plan.nodes)
        self.src = node_ids[plan.src]
        self.dst = node_ids[plan.dst]
        costs = transfer_costs(net, plan, call, self.src, self.dst)
        self.size = costs.wire_bytes
        self.lat = costs.latency_s
        self.cap = costs.rate_cap_Bps
        self.remaining = plan.num_deps.astype(np.int64, copy=True)
        self.child_ptr, self.child_idx = plan.dependents()
        self.total = len(plan)
        self.done = 0
        self.arrived: list[int] = []
        self.arrived_batches: list[np.ndarray] = []
        self.flush_pending = False
        self.traffic_class = traffic_class
        self.label = label
        self.stream = plan.stream
        self.rounds = plan.rounds
        self.fluid = bool(plan.meta.get("fluid"))
        self.fids: list[int] = []  # fluid plans: the flows, for the pipeline's completion rule
        self.transfer_of: dict[int, int] = {}  # flow id -> transfer, while the flow is in flight
        self.t0 = 0.0
        if self.stream:
            # transfers standing for chains are released per phase (step), once all have drained
            chained = self.rounds > 1
            self.phase_size = np.bincount(plan.step[chained], minlength=plan.num_steps)
            self.held: dict[int, list[tuple[int, int, float]]] = {}
        self.finished = self.env.event()

    def start(self) -> None:
        self.t0 = float(self.env.now)
        self._schedule(np.flatnonzero(self.remaining == 0))

    def _schedule(self, ready: np.ndarray) -> None:
        if self.stream:  # chained stream transfers count their step latencies in their chain
            chained = self.rounds[ready] > 1
            if chained.any():
                self._launch(ready[chained], merge=False)  # already one flow per link and phase
                ready = ready[~chained]
                if not ready.size:
                    return
        if self.fluid:  # a pipeline: every transfer at once, after one step's latency; the
            wait = float(self.lat[ready].max()) if ready.size else 0.0  # rest counts at the end
            if wait > 0:
                self.env.timeout(wait).callbacks.append(partial(self._launch_cb, ready))
            else:
                self._launch(ready)
            return
        lat = self.lat[ready]
        for value in np.unique(lat).tolist():
            batch = ready[lat == value]
            if value <= 0:
                self._launch(batch)
            else:
                ev = self.env.timeout(value)
                ev.callbacks.append(partial(self._launch_cb, batch))

    def _launch_cb(self, ready: np.ndarray, _ev: simpy.Event) -> None:
        self._launch(ready)

    def _launch(self, ready: np.ndarray, merge: bool = True) -> None:
        if merge and self.coflow and ready.size > 1:
            ev = self.net.transfer_coflow(
                self.src[ready],
                self.dst[ready],
                self.size[ready],
                traffic_class=self.traffic_class,
                label=self.label,
                rate_cap_Bps=self.cap[ready] if self.cap is not None else None,
            )
            ev.callbacks.append(partial(self._arrive_batch, ready))  # never chained (merge)
            return
        caps = self.cap[ready] if self.cap is not None else None
        fids = self.net.transfer_notify(
            self.src[ready],
            self.dst[ready],
            self.size[ready],
            self._on_arrivals,
            traffic_class=self.traffic_class,
            label=self.label,
            rate_cap_Bps=caps,
        )
        self.transfer_of.update(zip(fids.tolist(), ready.tolist(), strict=True))

    def _on_arrivals(self, fids: list[int]) -> None:
        """Flows ``fids`` were delivered (in this order, at this instant)."""
        pop = self.transfer_of.pop
        ts = [pop(f) for f in fids]
        if self.fluid:
            self.fids.extend(fids)
        if not self.stream:
            self._arrive_many(ts)
            return
        t_arr = np.asarray(ts, dtype=np.int64)
        chained = self.rounds[t_arr] > 1
        singles = t_arr[~chained].tolist()
        if not chained.any():
            self._arrive_many(singles)
            return
        # the transfers standing for chains join their phases; a phase whose last transfer
        # arrived is released, in the order of those last arrivals, and the plain transfers
        # arrive before the first release that comes after one of them (the order one pass
        # over the arrivals, transfer by transfer, would give)
        pos = np.flatnonzero(chained)
        first_single = int(np.flatnonzero(~chained)[0]) if singles else len(ts)
        now = float(self.env.now)
        tc, fc = t_arr[pos], np.asarray(fids, dtype=np.int64)[pos]
        steps = self.plan.step[tc]
        order = np.argsort(steps, kind="stable")
        cut = np.flatnonzero(steps[order][1:] != steps[order][:-1]) + 1
        done: list[tuple[int, int]] = []  # (position of the phase's last arrival, step)
        for a, b in zip(np.concatenate(([0], cut)).tolist(), np.concatenate((cut, [order.size])).tolist(), strict=True):
            rows = order[a:b]
            step = int(steps[rows[0]])
            held = self.held.setdefault(step, [])
            held.extend(zip(tc[rows].tolist(), fc[rows].tolist(), [now] * rows.size, strict=True))
            if len(held) == self.phase_size[step]:
                done.append((int(pos[rows[-1]]), step))
        for at, step in sorted(done):
            if singles and first_single < at:
                self._arrive_many(singles)
                singles = []
            self._release_phase(self.held.pop(step))
        if singles:
            self._arrive_many(singles)

    def _release_phase(self, held: list[tuple[int, int, float]]) -> None:
        """A stream phase has fully drained: each transfer arrives when both its own bytes are
        in (drain + path latency) and the chain it stands for could have completed, ``rounds``
        times (step latency + mean path latency of the phase) after it started plus the mean
        drain time of the phase (the chain walks round the ring, over every link's share)."""
        ts = np.array([h[0] for h in held], dtype=np.int64)
        fids = np.array([h[1] for h in held], dtype=np.int64)
        arrived = np.array([h[2] for h in held])
        lat = self.net.flow_latency_s(fids)
        start = self.net.flow_start_s(fids)
        drain = np.maximum(arrived - lat - start, 0.0)
        chain = start + self.rounds[ts] * float((self.lat[ts] + lat).mean()) + float(drain.mean())
        now = float(self.env.now)
        when = np.maximum(np.maximum(arrived, chain), now)
        for d in np.unique(when).tolist():
            sel = ts[when == d].tolist()
            if d <= now:
                self._arrive_many(sel)
            else:
                self.env.timeout(d - now).callbacks.append(partial(self._arrive_many, sel))

    def _arrive_batch(self, ts: np.ndarray, _ev: simpy.Event | None = None) -> None:
        self.arrived_batches.append(ts)
        if not self.flush_pending:
            self.flush_pending = True
            self.env.timeout(0).callbacks.append(self._flush)

    def _arrive(self, t: int, _ev: simpy.Event | None = None) -> None:
        self._arrive_many([t])

    def _arrive_many(self, ts: list[int], _ev: simpy.Event | None = None) -> None:
        self.arrived.extend(ts)
        if not self.flush_pending:
            self.flush_pending = True
            self.env.timeout(0).callbacks.append(self._flush)

    def _flush(self, _ev: simpy.Event) -> None:
        self.flush_pending = False
        done = np.array(self.arrived, dtype=np.int64)
        if self.arrived_batches:
            done = np.concatenate([done, *self.arrived_batches])
            self.arrived_batches = []
        self.arrived = []
        self.done += done.size
        ptr = self.child_ptr
        starts = ptr[done]
        counts = ptr[done + 1] - starts
        total = int(counts.sum())
        if total:
            offs = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
            kids, times = np.unique(self.child_idx[offs], return_counts=True)
            self.remaining[kids] -= times
            ready = kids[self.remaining[kids] == 0]
            if ready.size:
                self._schedule(ready)
        if self.done == self.total:
            self._finish()

    def _succeed(self, _ev: simpy.Event | None = None) -> None:
        self.finished.succeed()

    def _finish(self) -> None:
        """Every transfer arrived; a fluid plan also waits for its pipeline's latency plus its
        slowest drain (module doc of :mod:`netsim.collectives.pipelined`)."""
        if self.fluid and self.fids:
            fids = np.array(self.fids, dtype=np.int64)
            now = float(self.env.now)
            drain = self.net.flow_end_s(fids) - self.net.flow_latency_s(fids) - self.net.flow_start_s(fids)
            done = self.t0 + float(self.call.pipeline_latency_s) + float(np.max(drain, initial=0.0))
            if done > now + 1e-15:
                self.env.timeout(done - now).callbacks.append(self._succeed)
                return
        self.finished.succeed()


def result_of(proc: simpy.Process) -> CollectiveResult:
    """The :class:`CollectiveResult` of a finished :func:`run_collective` process."""
    if not proc.triggered or not isinstance(proc.value, CollectiveResult):
        raise AssertionError(
            "the collective did not complete: the network was not run to the end, or a "
            "dependency of its plan never arrived"
        )
    return proc.value


def device_ids(net: Network, names: Sequence[str]) -> np.ndarray:
    """The network's ids of devices ``names`` (a :class:`CollectiveError` for an unknown one)."""
    index = net.links.index
    try:
        return np.fromiter((index[d] for d in names), dtype=np.int64, count=len(names))
    except KeyError as exc:
        raise CollectiveError(
            f"unknown device {exc.args[0]!r} (not in the network's topology)", field="devices"
        ) from None


#: per network, the device ids of each plan name table asked about (by the table's identity,
#: the table held so that its id stays its own): plans are memoised, so most executions of a
#: step ask about a few hundred tables, tens of thousands of times
_NODE_IDS: weakref.WeakKeyDictionary[Network, dict[int, tuple[tuple[str, ...], np.ndarray]]] = (
    weakref.WeakKeyDictionary()
)


def plan_node_ids(net: Network, nodes: tuple[str, ...]) -> np.ndarray:
    """:func:`device_ids` of a plan's name table ``nodes``, remembered per table and network."""
    known = _NODE_IDS.setdefault(net, {})
    hit = known.get(id(nodes))
    if hit is not None and hit[0] is nodes:
        return hit[1]
    ids = device_ids(net, nodes)
    ids.flags.writeable = False
    known[id(nodes)] = (nodes, ids)
    return ids


def _check_latency(step_latency_s: float | None) -> float:
    lat = 0.0 if step_latency_s is None else float(step_latency_s)
    if not math.isfinite(lat) or lat < 0:
        raise CollectiveError(f"step_latency_s must be >= 0, got {step_latency_s!r}", field="step_latency_s")
    return lat


def execute_plan(
    net: Network,
    plan: Plan,
    *,
    traffic_class: str = "other",
    label: str = "",
    step_latency_s: float | None = None,
    coflow: bool = False,
    call: CollectiveCall | None = None,
) -> simpy.Process:
    """Execute ``plan`` on ``net`` starting now; returns a simpy process whose value is a
    :class:`CollectiveResult`.  ``call``: how the cost model runs it (default: the ideal model
    with ``step_latency_s`` before every transfer).  With ``coflow``, the transfers that start
    together move as one coflow (:meth:`Network.transfer_coflow`)."""
    lat = _check_latency(step_latency_s)
    if call is None:
        call = CollectiveCall(algo=plan.algo, hop_latency_s={"intra": lat, "inter": lat}, subtract_path_latency=False)
    ex = _Execution(net, plan, traffic_class, label or f"{plan.op}/{plan.algo}", call, coflow)
    env = net.env

    def proc() -> Generator[simpy.Event, Any, CollectiveResult]:
        t0 = float(env.now)
        if ex.total:
            if call.base_latency_s > 0:
                yield env.timeout(call.base_latency_s)
            ex.start()
            yield ex.finished
        return CollectiveResult(
            plan.op,
            plan.algo,
            plan.nbytes,
            len(plan.devices),
            t0,
            float(env.now),
            ex.total,
            call.library_algo,
            call.proto,
        )

    return env.process(proc())
