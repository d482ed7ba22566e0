"""Compile a Chakra trace into a :class:`~netsim.workload.plan.StepPlan` and run it like a workload.

There is one replay engine (:mod:`netsim.replay`) and one accounting (:mod:`netsim.run`): a
trace is translated into the plan vocabulary workloads use (:class:`~netsim.workload.plan.Op`,
:class:`~netsim.workload.plan.Collective`) and :func:`replay_chakra` hands it to
:func:`netsim.run.run_plan`, which writes a normal run directory.

Per rank, in the trace's topological order (ties by node id, the recording order):

* ``METADATA`` / ``INVALID`` nodes become no op: their dependents wait for what they waited for;
* GPU ``COMP`` / ``MEM_LOAD`` / ``MEM_STORE`` nodes: a ``compute`` op on stream ``compute`` (or
  ``compute:<stream attribute>``) for ``duration_micros`` x ``compute_scale``;
* CPU ops (``is_cpu_op``): a ``host`` op on stream ``cpu:<tid>`` for ``duration_micros``: it takes
  time and orders the GPU work it launches, but counts as neither compute nor communication;
* GPU collectives: a ``comm`` op on stream ``comm:<group>`` joining the collective of its group
  at the same position in every member's order; it runs through the collective algorithms and
  the run's collective cost model (NCCL's by default) once every member has arrived.  A
  collective whose size the trace does not give, and ``GATHER`` / ``SCATTER``, is a
  synchronisation lasting the longest measured duration of its members; a group of one rank
  moves nothing;
* ``COMM_SEND`` / ``COMM_RECV``: a ``comm`` op on stream ``send:<peer>:<tag>`` /
  ``recv:<peer>:<tag>`` joining one point-to-point transfer (class ``pp``), started when both
  ends have arrived (rendezvous, as NCCL's point-to-point);
* every rank ends with a barrier over all ranks: the step time is the trace's makespan.

Ops of one (rank, stream) run in issue order, as kernels run on a CUDA stream in launch order.
The traffic class of a collective is its group name's prefix when that is ``dp``, ``pp``,
``ep`` or ``tp`` (``dp0``), else ``other``.  Rank r runs on the r-th accelerator in (server,
index) order, or k per server with ``ranks_per_node``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from netsim.errors import NetsimError, TopologyError, TraceError
from netsim.replay import ReplayDeadlock, ReplayResult
from netsim.run import ReportWriter, RunOutcome, run_plan
from netsim.traces.chakra import (
    COLLECTIVE_OPS,
    WORLD,
    ChakraNode,
    ChakraTrace,
    RankTrace,
    collectives_of,
    load_chakra,
    p2p_of,
)
from netsim.workload.layout import list_accelerators
from netsim.workload.plan import Collective, Op, StepPlan

__all__ = ["CompiledTrace", "compile_chakra", "default_devices", "replay_chakra"]

_TRAFFIC_CLASSES = ("dp", "pp", "ep", "tp", "cp")
_NO_OP_TYPES = ("METADATA_NODE", "INVALID_NODE")


@dataclass
class CompiledTrace:
    """A trace as a plan: ``node_of_op[i]`` is the (rank, node id) of op ``i`` (node id -1: the
    closing barrier); ``counts`` is what the summary reports about the translation."""

    trace: ChakraTrace
    plan: StepPlan
    node_of_op: list[tuple[int, int]]
    counts: dict[str, int] = field(default_factory=dict)


def default_devices(graph: nx.DiGraph, ranks_per_node: int | None = None) -> list[str]:
    """Accelerators for ranks 0, 1, ...: in (server, index) order, or, with ``ranks_per_node``
    k, the first k accelerators of every server in turn (rank r on server r // k)."""
    accs = list_accelerators(graph)
    if ranks_per_node is None:
        return accs
    if ranks_per_node < 1:
        raise TopologyError(f"ranks per node must be >= 1 (got {ranks_per_node})", field="ranks_per_node")
    by_node: dict[int, list[str]] = {}
    for name in accs:
        by_node.setdefault(int(graph.nodes[name].get("node", -1)), []).append(name)
    out: list[str] = []
    for node in sorted(by_node):
        if len(by_node[node]) < ranks_per_node:
            raise TopologyError(
                f"server {node} has {len(by_node[node])} accelerators, fewer than {ranks_per_node} ranks per node",
                field="ranks_per_node",
            )
        out += by_node[node][:ranks_per_node]
    return out


def traffic_class(group: str | None) -> str:
    """``dp``/``pp``/``ep``/``tp`` when the group name starts with one, else ``other``."""
    low = (group or "").lower()
    return next((c for c in _TRAFFIC_CLASSES if low.startswith(c)), "other")


def _group_collectives(trace: ChakraTrace, counts: dict[str, int]) -> dict[tuple[int, int], Collective]:
    """The collective every GPU collective node joins, keyed (rank, node id)."""
    out: dict[tuple[int, int], Collective] = {}
    per_rank = [collectives_of(rt) for rt in trace.ranks]
    for name, members in sorted(trace.process_groups.items()):
        for k, ref in enumerate(per_rank[members[0]].get(name, [])):
            nodes = [per_rank[r][name][k] for r in members]
            key = ("coll", name, k)
            label = f"{'world' if name == WORLD else name}#{k}:{ref.name}"
            cls = traffic_class(None if name == WORLD else name)
            if len(members) == 1:
                coll = Collective(key, "barrier", members, 0.0, cls, label)
                counts["single_rank_collectives"] += 1
            elif ref.comm_size is None or ref.comm_type not in COLLECTIVE_OPS:
                coll = Collective(key, "barrier", members, 0.0, cls, label, duration_s=max(n.duration_s for n in nodes))
                counts["measured_collectives"] += 1
            else:
                coll = Collective(key, COLLECTIVE_OPS[str(ref.comm_type)], members, float(ref.comm_size), cls, label)
                counts["simulated_collectives"] += 1
            for r, n in zip(members, nodes, strict=True):
                out[(r, n.id)] = coll
    return out


def _transfers(trace: ChakraTrace, devices: Sequence[str], counts: dict[str, int]) -> dict[tuple[int, int], Collective]:
    """The transfer every send/recv node joins, keyed (rank, node id)."""
    out: dict[tuple[int, int], Collective] = {}
    sends, recvs = p2p_of(trace)
    for (a, b, tag), sent in sorted(sends.items()):
        for k, (s, r) in enumerate(zip(sent, recvs[(a, b, tag)], strict=True)):
            coll = Collective(
                ("p2p", a, b, tag, k),
                "transfer",
                (a, b),
                float(s.comm_size or 0.0),
                "pp",
                f"p2p {a}->{b} tag {tag} #{k}:{s.name}",
                src=devices[a],
                dst=devices[b],
            )
            out[(a, s.id)] = out[(b, r.id)] = coll
            counts["p2p_transfers"] += 1
    return out


def _stream(n: ChakraNode) -> str:
    if n.on_cpu:
        return n.stream or "cpu"
    if n.type == "COMM_COLL_NODE":
        return f"comm:{n.pg_name or 'world'}"
    if n.type == "COMM_SEND_NODE":
        return f"send:{n.comm_dst}:{n.comm_tag}"
    if n.type == "COMM_RECV_NODE":
        return f"recv:{n.comm_src}:{n.comm_tag}"
    return n.stream or "compute"


def _emit_rank(
    rt: RankTrace,
    colls: Mapping[tuple[int, int], Collective],
    ops: list[Op],
    node_of_op: list[tuple[int, int]],
    compute_scale: float,
) -> list[int]:
    """Append the ops of one rank; return their ids."""
    stands: dict[int, list[int]] = {}
    mine: list[int] = []
    for issue, nid in enumerate(rt.order):
        n = rt.nodes[nid]
        deps = list(dict.fromkeys(d for p in n.deps for d in stands[p]))
        if n.type in _NO_OP_TYPES:
            stands[nid] = deps
            continue
        coll = colls.get((rt.rank, nid))
        if coll is not None:
            op = Op(
                len(ops), rt.rank, 0, "comm", _stream(n), n.name, coll.traffic_class, deps=deps, coll=coll, issue=issue
            )
        else:
            kind = "host" if n.on_cpu else "compute"
            dur = n.duration_s * (compute_scale if kind == "compute" else 1.0)
            op = Op(len(ops), rt.rank, 0, kind, _stream(n), n.name, deps=deps, duration_s=dur, issue=issue)
        ops.append(op)
        node_of_op.append((rt.rank, nid))
        stands[nid] = [op.id]
        mine.append(op.id)
    return mine


def compile_chakra(
    trace: ChakraTrace, devices: Sequence[str], nodes: Sequence[int], *, compute_scale: float = 1.0
) -> CompiledTrace:
    """The plan of ``trace`` with rank r on ``devices[r]`` (server ``nodes[r]``); see the
    module docstring."""
    if compute_scale < 0:
        raise NetsimError(f"compute_scale must be >= 0 (got {compute_scale})", field="compute_scale")
    counts = dict.fromkeys(
        ("simulated_collectives", "measured_collectives", "single_rank_collectives", "p2p_transfers"), 0
    )
    colls = {**_group_collectives(trace, counts), **_transfers(trace, devices, counts)}
    ops: list[Op] = []
    node_of_op: list[tuple[int, int]] = []
    world = tuple(range(trace.num_ranks))
    end = Collective(("end",), "barrier", world, 0.0, "", "trace.end")
    for rt in trace.ranks:
        mine = _emit_rank(rt, colls, ops, node_of_op, compute_scale)
        ops.append(Op(len(ops), rt.rank, 0, "barrier", "sync", "trace.end", deps=mine, coll=end, issue=len(rt.order)))
        node_of_op.append((rt.rank, -1))
    collectives = {c.key: c for c in colls.values()} | {end.key: end}
    counts["host_ops"] = sum(1 for o in ops if o.kind == "host")
    counts["compute_ops"] = sum(1 for o in ops if o.kind == "compute")
    plan = StepPlan(steps=1, ops=ops, collectives=collectives, devices=tuple(devices), nodes=tuple(nodes))
    return CompiledTrace(trace, plan, node_of_op, counts)


def place(
    trace: ChakraTrace, graph: nx.DiGraph, devices: Sequence[str] | None = None, ranks_per_node: int | None = None
) -> tuple[list[str], list[int]]:
    """(device, server) of every rank of ``trace`` on ``graph``."""
    devs = list(devices) if devices is not None else default_devices(graph, ranks_per_node)
    if len(devs) < trace.num_ranks:
        raise TopologyError(
            f"the trace has {trace.num_ranks} ranks but the topology places only {len(devs)} "
            "(use more --nodes or more ranks per node)"
        )
    devs = devs[: trace.num_ranks]
    for d in devs:
        if d not in graph:
            raise TopologyError(f"unknown device {d!r}", field="devices")
    return devs, [int(graph.nodes[d].get("node", -1)) for d in devs]


def _deadlock_error(ct: CompiledTrace, exc: ReplayDeadlock) -> TraceError:
    rank, nid = ct.node_of_op[int(exc.op_ids[0])]
    rt = ct.trace.ranks[rank]
    if nid < 0:
        return TraceError(f"replay deadlocked: rank {rank} never reached the end of its trace", source=rt.source)
    n = rt.nodes[nid]
    group = f", group {n.pg_name}" if n.pg_name else ""
    return TraceError(
        f"replay deadlocked: rank {rank} never finished node {n.id} ({n.name!r}, {n.type}{group}); "
        "check the order of collectives and send/recv pairs across ranks",
        source=rt.source,
    )


def node_table(ct: CompiledTrace, res: ReplayResult) -> pd.DataFrame:
    """``trace_nodes``: per trace node that became an op, its times (seconds)."""
    rows = []
    for op in ct.plan.ops:
        rank, nid = ct.node_of_op[op.id]
        if nid < 0:
            continue
        n = ct.trace.ranks[rank].nodes[nid]
        rows.append(
            {
                "rank": rank,
                "node_id": nid,
                "name": n.name,
                "type": n.type,
                "on_cpu": n.on_cpu,
                "stream": op.stream,
                "comm_type": n.comm_type,
                "pg_name": n.pg_name,
                "bytes": n.comm_size if n.comm_size is not None else 0.0,
                "duration_s": n.duration_s,
                "start_s": float(res.op_start[op.id]),
                "end_s": float(res.op_end[op.id]),
            }
        )
    return pd.DataFrame(rows).sort_values(["rank", "start_s", "node_id"], kind="stable").reset_index(drop=True)


def _trace_fields(tr: ChakraTrace, ct: CompiledTrace, setup: Any, compute_scale: float) -> dict[str, Any]:
    """The summary fields of a Chakra replay (compute and collective models, ``trace`` section)."""
    return {
        "compute_model": "trace",
        "compute_notes": [f"compute durations from the trace x {compute_scale:g}"] if compute_scale != 1 else [],
        "collective_model": "exact",
        "collective_cost": setup.describe(),
        "checkpoint_time_s": None,
        "trace": {
            "source": tr.source,
            "forms": tr.forms,
            "ranks": tr.num_ranks,
            "replicated": tr.replicated,
            "nodes": sum(len(rt.nodes) for rt in tr.ranks),
            **ct.counts,
            "process_groups": {("world" if g == WORLD else g): list(m) for g, m in sorted(tr.process_groups.items())},
        },
    }


def _resolved_config(
    tr: ChakraTrace,
    graph: nx.DiGraph,
    engine: Mapping[str, Any],
    setup: Any,
    devs: list[str],
    ranks_per_node: int | None,
    compute_scale: float,
    algorithms: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The resolved configuration of a Chakra replay (the run directory's ``resolved`` file)."""
    return {
        "trace": {
            "source": tr.source,
            "ranks": tr.num_ranks,
            "replicated": tr.replicated,
            "ranks_per_node": ranks_per_node,
            "compute_scale": compute_scale,
        },
        "topology": graph.graph.get("spec", {"name": graph.graph.get("name")}),
        "options": {
            "routing": engine.get("routing"),
            "seed": engine.get("seed", 0),
            "collective_cost": setup.name,
            "algorithms": dict(algorithms or {}),
        },
        "resolved": {"ranks": tr.num_ranks, "devices": devs},
    }


def replay_chakra(
    trace: ChakraTrace | str | Path,
    graph: nx.DiGraph,
    out: str | Path,
    *,
    engine_kwargs: Mapping[str, Any] | None = None,
    setup: Any = None,
    devices: Sequence[str] | None = None,
    ranks_per_node: int | None = None,
    compute_scale: float = 1.0,
    algorithms: Mapping[str, str] | None = None,
    report: ReportWriter | None = None,
    force: bool = False,
) -> RunOutcome:
    """Replay a Chakra trace (or a directory / file for :func:`load_chakra`) on ``graph`` and
    write a run directory (docs/CONTRACTS.md) to ``out``, with the ``trace_nodes`` table and a
    ``trace`` summary section.

    Args:
        engine_kwargs: ``Network`` keywords (routing, seed, efficiency); default ECMP, seed 0.
        setup: the :class:`~netsim.collectives.setup.CollectiveSetup` (cost model); default the
            topology's (``collective_setup(graph)``: NCCL's for the GPU presets).
        devices, ranks_per_node: placement (see :func:`default_devices`).
        compute_scale: multiplies every GPU compute duration (what-if: faster or slower GPUs).
        algorithms: collective algorithm per op (``{"all_reduce": "ring"}``).
    """
    from netsim.collectives.setup import collective_setup, default_routing

    tr = trace if isinstance(trace, ChakraTrace) else load_chakra(trace)
    devs, nodes = place(tr, graph, devices, ranks_per_node)
    ct = compile_chakra(tr, devs, nodes, compute_scale=compute_scale)
    setup = setup if setup is not None else collective_setup(graph)
    engine = dict(engine_kwargs or {"routing": default_routing(graph), "seed": 0})
    if setup.efficiency:
        engine.setdefault("efficiency", dict(setup.efficiency))
    name = Path(tr.source).name
    head = {
        "name": f"chakra:{name}",
        "topology": str(graph.graph.get("name")),
        "workload": f"chakra:{name}",
        "seed": int(engine.get("seed", 0)),
        "num_nodes": int(graph.graph.get("num_nodes", len(set(nodes)))),
    }

    def extra(res: ReplayResult) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
        return _trace_fields(tr, ct, setup, compute_scale), {"trace_nodes": node_table(ct, res)}

    resolved = _resolved_config(tr, graph, engine, setup, devs, ranks_per_node, compute_scale, algorithms)
    try:
        return run_plan(
            ct.plan,
            graph,
            out,
            engine_kwargs=engine,
            collective_kwargs={"cost": setup.cost},
            algorithms=algorithms,
            head=head,
            extra=extra,
            resolved=resolved,
            report=report,
            force=force,
        )
    except ReplayDeadlock as exc:
        raise _deadlock_error(ct, exc) from None
