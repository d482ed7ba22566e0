"""Running a plan on the network: transfers become flows, dependencies become waits.

:func:`run_collective` plans a collective (:func:`~netsim.collectives.registry.build_plan`) and
executes it on a :class:`~netsim.network.engine.Network`: a transfer starts ``step_latency_s``
after the last of its dependencies has arrived (transfers without dependencies start
``step_latency_s`` after the collective starts), as one flow of the network.  Collectives of
different groups running at once are just more flows, so they contend for links as they
would on the real cluster.

The executor is event-driven, not process-per-transfer: the transfers that become ready at the
same instant are submitted to the engine as one vectorised batch
(:meth:`Network.transfer_ids`), so a plan whose transfers are all independent (a direct
all-to-all of 1024 GPUs: ~1M transfers) is submitted in one call, and a ring step of ``n``
transfers costs one batch, not ``n`` processes.  Arrivals at one instant are also processed as
a batch (dependency counters are decremented with numpy).

``step_latency_s`` models the per-step software overhead of a collective library (kernel
launch, synchronisation, protocol handshakes; NCCL's per-step latency): calibrate it with
``netsim calibrate nccl``.

**Collective models.**  ``model="exact"`` (default) runs the algorithm's exact plan: one flow
per step, chunk and link.  ``model="stream"`` (opt-in, for scale) runs its stream plan (see
:mod:`netsim.collectives.plan`): ring phases become one flow per ring link.  A stream transfer
standing for a chain of ``rounds`` transfers starts at once; when every transfer of its phase
has drained, it counts as arrived at the later of (a) its last byte's arrival and (b) the time
the chain could have taken: ``rounds`` x (step latency + mean path latency of the phase) plus
the phase's mean drain time.  On a uniform ring (b) is the exact alpha-beta time; on a ring
with one slow link (a) of that link wins, as in the exact plan where its steps queue up.  A
ring costs two engine events instead of ``2(n-1)``.  ``model="coflow"`` runs stream plans and
moves the transfers of an all-to-all(v) that start together as one *coflow*
(:meth:`Network.transfer_coflow`): one aggregate flow that loads every link with the bytes its
transfers put there and drains when the most loaded link (relative to its capacity) has
drained; against other traffic it weighs, on that link, as many fair shares as it has
transfers there.  An all-to-all of ``n`` ranks then costs one engine event instead of up to
``n(n-1)`` (one per distinct drain time, which skewed all-to-allv byte matrices produce).
``benchmarks/collective_models.py`` reports the errors of both models.  The models are objects
registered in :data:`~netsim.collectives.models.COLLECTIVE_MODELS`; this module asks them what to
do and never compares their names.

Plans without a byte matrix are cached per network (:func:`plan_cache`): a training step
issues the same tensor-parallel collective thousands of times.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import simpy

from netsim.collectives.cost import CollectiveCall, CostModel, IdealCost
from netsim.collectives.exchanges import a2a_matrix
from netsim.collectives.models import COFLOW_OPS, CollectiveModel, collective_model
from netsim.collectives.models import MODELS as MODELS  # re-exported: the names specs accept
from netsim.collectives.plan import CollectiveError, Plan
from netsim.collectives.registry import build_plan, check_request
from netsim.collectives.transfer_costs import transfer_costs

if TYPE_CHECKING:
    from netsim.network.engine import Network

_PLAN_CACHES: weakref.WeakKeyDictionary[Network, dict[tuple[Any, ...], Plan]] = weakref.WeakKeyDictionary()


def plan_cache(net: Network) -> dict[tuple[Any, ...], Plan]:
    """The plans built for ``net``, by request (kept as long as the network lives)."""
    return _PLAN_CACHES.setdefault(net, {})


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
        node_ids = _device_ids(net, plan.nodes)
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
                self.src[ready], self.dst[ready], self.size[ready], traffic_class=self.traffic_class, label=self.label
            )
            ev.callbacks.append(partial(self._arrive_batch, ready))  # never chained (merge)
            return
        caps = self.cap[ready] if self.cap is not None else None
        events = self.net.transfer_ids(
            self.src[ready],
            self.dst[ready],
            self.size[ready],
            traffic_class=self.traffic_class,
            label=self.label,
            rate_cap_Bps=caps,
        )
        cb = self._on_arrival
        for ev, t in zip(events, ready.tolist(), strict=True):
            ev.callbacks.append(partial(cb, t))

    def _on_arrival(self, t: int, ev: simpy.Event) -> None:
        if self.fluid:
            self.fids.append(int(ev.value))  # type: ignore[arg-type]  # transfer events carry the flow id
        if not (self.stream and self.rounds[t] > 1):
            self._arrive(t)
            return
        step = int(self.plan.step[t])
        held = self.held.setdefault(step, [])
        fid = int(ev.value)  # type: ignore[arg-type]  # the engine's transfer events carry the flow id
        held.append((t, fid, float(self.env.now)))
        if len(held) == self.phase_size[step]:
            self._release_phase(self.held.pop(step))

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
                for t in sel:
                    self._arrive(t)
            else:
                ev = self.env.timeout(d - now)
                for t in sel:
                    ev.callbacks.append(partial(self._arrive, t))

    def _arrive_batch(self, ts: np.ndarray, _ev: simpy.Event | None = None) -> None:
        self.arrived_batches.append(ts)
        if not self.flush_pending:
            self.flush_pending = True
            self.env.timeout(0).callbacks.append(self._flush)

    def _arrive(self, t: int, _ev: simpy.Event | None = None) -> None:
        self.arrived.append(t)
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


def check_model(model: str | CollectiveModel) -> str | CollectiveModel:
    """``model`` if it is a known collective model (a registered name or a
    :class:`~netsim.collectives.models.CollectiveModel`), else a :class:`CollectiveError`."""
    collective_model(model)
    return model


def result_of(proc: simpy.Process) -> CollectiveResult:
    """The :class:`CollectiveResult` of a finished :func:`run_collective` process."""
    if not proc.triggered or not isinstance(proc.value, CollectiveResult):
        raise AssertionError(
            "the collective did not complete: the network was not run to the end, or a "
            "dependency of its plan never arrived"
        )
    return proc.value


def _device_ids(net: Network, names: Sequence[str]) -> np.ndarray:
    """The network's ids of devices ``names`` (a :class:`CollectiveError` for an unknown one)."""
    index = net.links.index
    try:
        return np.fromiter((index[d] for d in names), dtype=np.int64, count=len(names))
    except KeyError as exc:
        raise CollectiveError(
            f"unknown device {exc.args[0]!r} (not in the network's topology)", field="devices"
        ) from None


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


def run_collective(
    net: Network,
    op: str,
    devices: Sequence[str],
    nbytes: float,
    *,
    algo: str | None = None,
    matrix: Any = None,
    traffic_class: str = "other",
    label: str = "",
    chunk_bytes: float | None = None,
    step_latency_s: float | None = None,
    channels: int | None = None,
    model: str | CollectiveModel = "exact",
    cost: CostModel | None = None,
    proto: str | None = None,
) -> simpy.Process:
    """Plan collective ``op`` over ``devices`` and run it on ``net`` (a ``Network``), starting now.

    Args:
        net: the network (its graph gives server membership and switches).
        op: ``all_reduce``, ``reduce_scatter``, ``all_gather``, ``broadcast``, ``reduce``,
            ``all_to_all``, ``all_to_allv`` or ``sendrecv``.
        devices: the group in rank order.
        nbytes: size in bytes (nccl-tests convention, see :mod:`netsim.collectives.registry`).
        algo: algorithm name (``None``: the cost model's choice: NCCL's tuner under ``nccl``;
            ring / direct / shift under ``ideal``).
        matrix: ``matrix[i][j]`` bytes from ``devices[i]`` to ``devices[j]`` (all-to-all(v)).
        traffic_class, label: tags of the flows (``label`` defaults to ``op/algo``).
        chunk_bytes: pipeline chunk size in bytes (``None``: the algorithm's default).
        step_latency_s: software latency before every transfer, seconds (``ideal`` only;
            ``None``: 0).
        channels: parallel rings of ring algorithms (``None``: automatic).
        model: a collective model (:mod:`netsim.collectives.models`) or its name: ``exact``
            (one flow per step, chunk and link), ``stream`` (one flow per link and phase) or
            ``coflow`` (stream plans; transfers that start together move as one coflow).
        cost: the collective cost model (:mod:`netsim.collectives.cost`); ``None``: ideal.
        proto: the protocol to force (``LL``, ``LL128``, ``Simple``; ``nccl`` only).

    Returns:
        A simpy process; ``yield`` it inside a process, or run the network and read
        ``proc.value`` (a :class:`CollectiveResult`).
    """
    cmodel = collective_model(model)
    stream = cmodel.stream_plans
    if cost is None:
        cost = IdealCost(step_latency_s=_check_latency(step_latency_s))
    elif step_latency_s is not None and not isinstance(cost, IdealCost):
        raise CollectiveError(
            "a per-step latency applies to the ideal cost model only (the nccl model has its "
            "own latencies; scale them with collectives.latency_scale)",
            field="step_latency_s",
        )
    call = cost.call(op, devices, nbytes, algo=algo, proto=proto)
    if cmodel.direct_coflow(op, call):
        return _direct_coflow(net, op, devices, nbytes, matrix, traffic_class, label, call)
    ch = channels if channels is not None else call.channels
    fluid = call.fluid
    key = (op, tuple(devices), float(nbytes), call.algo, chunk_bytes, ch, stream, fluid) if matrix is None else None
    cache = plan_cache(net)
    plan = cache.get(key) if key is not None else None
    if plan is None:
        plan = build_plan(
            op,
            devices,
            nbytes,
            algo=call.algo,
            matrix=matrix,
            graph=net.graph,
            chunk_bytes=chunk_bytes,
            channels=ch,
            stream=stream,
            fluid=fluid,
        )
        if key is not None:
            cache[key] = plan
    return execute_plan(net, plan, traffic_class=traffic_class, label=label, coflow=cmodel.coflow, call=call)


def union_plan(plans: Sequence[Plan]) -> Plan:
    """The plans of disjoint groups as one plan: their transfers side by side (node and transfer
    indices offset), ``nbytes`` and ``meta`` of the first (every plan has the same size)."""
    first = plans[0]
    node_off = np.cumsum([0] + [len(p.nodes) for p in plans[:-1]])
    tr_off = np.cumsum([0] + [len(p) for p in plans[:-1]])
    dep_ptr = [np.zeros(1, dtype=np.int64)]
    base = 0
    for p in plans:
        dep_ptr.append(p.dep_ptr[1:] + base)
        base += int(p.dep_ptr[-1])
    return Plan(
        op=first.op,
        algo=first.algo,
        nbytes=first.nbytes,
        devices=tuple(d for p in plans for d in p.devices),
        nodes=tuple(n for p in plans for n in p.nodes),
        src=np.concatenate([p.src + o for p, o in zip(plans, node_off, strict=True)]),
        dst=np.concatenate([p.dst + o for p, o in zip(plans, node_off, strict=True)]),
        size=np.concatenate([p.size for p in plans]),
        step=np.concatenate([p.step for p in plans]),
        dep_ptr=np.concatenate(dep_ptr),
        dep_idx=np.concatenate([p.dep_idx + o for p, o in zip(plans, tr_off, strict=True)]),
        meta=dict(first.meta),
        rounds=np.concatenate([p.rounds for p in plans]),
    )


def run_disjoint_collectives(
    net: Network,
    op: str,
    groups: Sequence[Sequence[str]],
    nbytes: float,
    *,
    algo: str | None = None,
    traffic_class: str = "other",
    label: str = "",
    chunk_bytes: float | None = None,
    channels: int | None = None,
    model: str | CollectiveModel = "stream",
    cost: CostModel | None = None,
    proto: str | None = None,
) -> simpy.Process | None:
    """Collective ``op`` of ``nbytes`` over each of the disjoint ``groups`` at once, as one
    execution of the union of their plans (the lockstep instances of a layer collective: the TP
    groups of every data-parallel replica).

    The transfers, their sizes, latencies and rate caps are those of the separate calls, so
    every link carries the same flows; what the union shares is the executor (one event per
    phase instead of one per group and phase) and, for stream plans, the phase release: a
    phase of the union ends when every group's phase has drained (its chain time from the
    phase's mean latencies and drain), so groups slowed by other traffic hold back the others
    at each phase boundary, not only at the end (identical groups on identical, uncontended
    hardware: the same times).  ``None`` when it does not apply: an exact plan, an all-to-all
    (a byte matrix), fewer than two groups, groups that share a device, or groups the cost
    model treats differently (another algorithm, protocol or latency); the caller then runs the
    groups one by one."""
    cmodel = collective_model(model)
    if not cmodel.unites_instances or op in COFLOW_OPS or len(groups) < 2 or cost is None:
        return None
    devs = [d for g in groups for d in g]
    if len(set(devs)) != len(devs) or len({len(g) for g in groups}) != 1:
        return None
    calls = [cost.call(op, g, nbytes, algo=algo, proto=proto) for g in groups]
    if any(c != calls[0] for c in calls[1:]):
        return None
    call = calls[0]
    ch = channels if channels is not None else call.channels
    cache = plan_cache(net)
    plans = []
    for g in groups:
        key = (op, tuple(g), float(nbytes), call.algo, chunk_bytes, ch, True, call.fluid)
        plan = cache.get(key)
        if plan is None:
            plan = build_plan(
                op,
                g,
                nbytes,
                algo=call.algo,
                graph=net.graph,
                chunk_bytes=chunk_bytes,
                channels=ch,
                stream=True,
                fluid=call.fluid,
            )
            cache[key] = plan
        plans.append(plan)
    ukey = ("union", op, tuple(tuple(g) for g in groups), float(nbytes), call.algo, chunk_bytes, ch, call.fluid)
    union = cache.get(ukey)
    if union is None:
        union = cache[ukey] = union_plan(plans)
    return execute_plan(net, union, traffic_class=traffic_class, label=label, coflow=cmodel.coflow, call=call)


def _direct_coflow(
    net: Network,
    op: str,
    devices: Sequence[str],
    nbytes: float,
    matrix: Any,
    traffic_class: str,
    label: str,
    call: CollectiveCall,
) -> simpy.Process:
    """The direct all-to-all(v) as one coflow, without building its plan: the same transfers
    (every pair with bytes), started after the call's base latency and one hop latency (the
    largest of its transfers'), as the plan path would launch them."""
    devs, mat, nb = check_request(op, devices, nbytes, matrix)
    ids = _device_ids(net, devs)
    m = a2a_matrix(len(devs), nb, mat) if len(devs) > 1 and (nb > 0 or mat is not None) else np.zeros((0, 0))
    i, j = np.nonzero(m > 0)
    env = net.env
    hop = 0.0
    if i.size:
        server = np.array(
            [net.graph.nodes[d].get("node", -1) if net.graph.nodes[d].get("node") is not None else -1 for d in devs]
        )
        inter = bool(((server[i] != server[j]) | (server[i] < 0)).any())
        hop = float(call.hop_latency_s.get("inter" if inter else "intra", 0.0))
        if call.subtract_path_latency and hop > 0:
            k = int(np.flatnonzero((server[i] != server[j]) | (server[i] < 0))[0]) if inter else 0
            hop = max(hop - float(net.routes_of(devs[int(i[k])], devs[int(j[k])]).latency_s[0]), 0.0)
    wait = call.base_latency_s + hop
    sizes = m[i, j] * call.wire_factor

    def proc() -> Generator[simpy.Event, Any, CollectiveResult]:
        t0 = float(env.now)
        if i.size:
            if wait > 0:
                yield env.timeout(wait)
            yield net.transfer_coflow(ids[i], ids[j], sizes, traffic_class=traffic_class, label=label or f"{op}/direct")
        return CollectiveResult(
            op, "direct", nb, len(devs), t0, float(env.now), int(i.size), call.library_algo, call.proto
        )

    return env.process(proc())


def simulate_collective(
    graph: nx.DiGraph,
    op: str,
    devices: Sequence[str],
    nbytes: float,
    *,
    algo: str | None = None,
    matrix: Any = None,
    chunk_bytes: float | None = None,
    step_latency_s: float | None = None,
    channels: int | None = None,
    traffic_class: str = "other",
    model: str | CollectiveModel = "exact",
    cost: CostModel | None = None,
    proto: str | None = None,
    **engine_kwargs: Any,
) -> float:
    """Time in seconds of one collective alone on a fresh ``Network(graph, **engine_kwargs)``
    (``routing``, ``seed``, ``efficiency``, ``flow_rate_cap_Bps``)."""
    from netsim.network.engine import Network

    net = Network(graph, **engine_kwargs)
    proc = run_collective(
        net,
        op,
        devices,
        nbytes,
        algo=algo,
        matrix=matrix,
        traffic_class=traffic_class,
        chunk_bytes=chunk_bytes,
        step_latency_s=step_latency_s,
        channels=channels,
        model=model,
        cost=cost,
        proto=proto,
    )
    net.run()
    return result_of(proc).time_s


def accelerators(graph: nx.DiGraph, *, per_node: int | None = None) -> list[str]:
    """The accelerators of a topology in rank order (server, then local index); with
    ``per_node``, only the first ``per_node`` of every server."""
    accs = [
        (
            int(a.get("node", -1) if a.get("node") is not None else -1),
            int(a.get("index", -1) if a.get("index") is not None else -1),
            str(v),
        )
        for v, a in graph.nodes(data=True)
        if a.get("kind") == "accelerator"
    ]
    accs.sort()
    if per_node is None:
        return [v for _, _, v in accs]
    if per_node < 1:
        raise CollectiveError(f"GPUs per node must be >= 1, got {per_node}", field="gpus_per_node")
    out: list[str] = []
    seen: dict[int, int] = {}
    for node, _, v in accs:
        if seen.get(node, 0) < per_node:
            out.append(v)
            seen[node] = seen.get(node, 0) + 1
    return out
