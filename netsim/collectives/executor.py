"""Running a plan on the network: transfers become flows, dependencies become waits.

:func:`run_collective` plans a collective (:func:`~netsim.collectives.registry.build_plan`) and
executes it on a :class:`~netsim.network.engine.Network`: a transfer starts ``step_latency_s``
after the last of its dependencies has arrived (transfers without dependencies start
``step_latency_s`` after the collective starts), as one flow of the network.  Collectives of
different groups running at once are just more flows, so they contend for links as they
would on the real cluster.

The executor is event-driven, not process-per-transfer: the transfers that become ready at the
same instant are submitted to the engine as one vectorised batch
(:meth:`Network.transfer_notify`), so a plan whose transfers are all independent (a direct
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

How one plan runs (batched submission and arrivals, phase release, coflows, fluid plans) is in
:mod:`netsim.collectives.plan_execution` (:func:`execute_plan`, :class:`CollectiveResult`,
:func:`result_of`, re-exported here); this module plans collectives and unites the lockstep
instances of disjoint groups (:func:`run_disjoint_collectives`).

Plans without a byte matrix are cached per network (:func:`plan_cache`): a training step
issues the same tensor-parallel collective thousands of times.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import simpy

from netsim.collectives.cost import CollectiveCall, CostModel, IdealCost
from netsim.collectives.exchanges import a2a_matrix
from netsim.collectives.models import COFLOW_OPS, CollectiveModel, collective_model
from netsim.collectives.models import MODELS as MODELS  # re-exported: the names specs accept
from netsim.collectives.plan import CollectiveError, Plan
from netsim.collectives.plan_execution import CollectiveResult as CollectiveResult  # re-exported
from netsim.collectives.plan_execution import _check_latency, device_ids, execute_plan
from netsim.collectives.plan_execution import result_of as result_of  # re-exported
from netsim.collectives.registry import build_plan, check_request
from netsim.collectives.transfer_costs import pair_hop_latency_s

if TYPE_CHECKING:
    from netsim.network.engine import Network

_PLAN_CACHES: weakref.WeakKeyDictionary[Network, dict[tuple[Any, ...], Plan]] = weakref.WeakKeyDictionary()


def plan_cache(net: Network) -> dict[tuple[Any, ...], Plan]:
    """The plans built for ``net``, by request (kept as long as the network lives)."""
    return _PLAN_CACHES.setdefault(net, {})


def check_model(model: str | CollectiveModel) -> str | CollectiveModel:
    """``model`` if it is a known collective model (a registered name or a
    :class:`~netsim.collectives.models.CollectiveModel`), else a :class:`CollectiveError`."""
    collective_model(model)
    return model


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
    ids = device_ids(net, devs)
    m = a2a_matrix(len(devs), nb, mat) if len(devs) > 1 and (nb > 0 or mat is not None) else np.zeros((0, 0))
    i, j = np.nonzero(m > 0)
    env = net.env
    hop = 0.0
    if i.size:  # the largest hop: an inter-server pair's if there is one
        server = np.array([-1 if net.graph.nodes[d].get("node") is None else net.graph.nodes[d]["node"] for d in devs])
        crossing = np.flatnonzero((server[i] != server[j]) | (server[i] < 0))
        k = int(crossing[0]) if crossing.size else 0
        hop = pair_hop_latency_s(net, call, devs[int(i[k])], devs[int(j[k])])
    wait = call.base_latency_s + hop
    sizes = m[i, j] * call.wire_factor
    caps = None if call.p2p is None else call.p2p.rate_caps_Bps(m[i, j])

    def proc() -> Generator[simpy.Event, Any, CollectiveResult]:
        t0 = float(env.now)
        if i.size:
            if wait > 0:
                yield env.timeout(wait)
            yield net.transfer_coflow(
                ids[i], ids[j], sizes, traffic_class=traffic_class, label=label or f"{op}/direct", rate_cap_Bps=caps
            )
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
