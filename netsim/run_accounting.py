"""Accounting of one replay: what each rank did, what the network carried, what the MoE moved.

:func:`account_replay` turns a :class:`~netsim.replay.ReplayResult` of a workload's
:class:`~netsim.workload.graph.StepPlan` into the flat records a run writes: the per-rank
breakdown (compute, exposed communication by traffic class, overlap, idle: interval arithmetic
over each rank's ops, lockstep lanes expanded), the ops and all-to-all tables, traffic totals by
class and link class (east-west vs north-south), checkpoint times, MoE results (expert load,
drops, all-to-all share) and the memory column.  :func:`netsim.run.summarize_replay` builds the
run summary from these; nothing here reads or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from netsim.replay import BREAKDOWN_CLASSES, ReplayResult, rank_breakdown
from netsim.workload.graph import TRAFFIC_CLASSES, StepPlan

_Intervals = list[tuple[float, float]]


@dataclass
class _RankIntervals:
    """Busy intervals of every rank's ops, as :func:`_per_rank` needs them.

    ``compute[r]``: rank ``r``'s compute intervals; ``comm[r][class]``: its communication
    intervals by traffic class.  Lockstep plans add, per representative rank, its compute ops with
    per-lane durations (``lane_durs[rep]``: (index into ``compute[rep]``, durations by lane)) and
    its ops that belong to one lane only (``lane_comm[rep][lane][class]``)."""

    compute: list[_Intervals]
    comm: list[dict[str, _Intervals]]
    lane_durs: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    lane_comm: dict[int, dict[int, dict[str, _Intervals]]] = field(default_factory=dict)


def _rank_intervals(plan: StepPlan, res: ReplayResult, classes: tuple[str, ...]) -> _RankIntervals:
    """Collect the compute and communication intervals of every rank (and lockstep lane)."""
    iv = _RankIntervals([[] for _ in range(plan.world)], [{c: [] for c in classes} for _ in range(plan.world)])
    for op in plan.ops:
        a, b = float(res.op_start[op.id]), float(res.op_end[op.id])
        if op.kind == "compute":
            if op.lane_durations_s is not None:
                iv.lane_durs.setdefault(op.rank, []).append((len(iv.compute[op.rank]), op.lane_durations_s))
            if b > a or op.lane_durations_s is not None:
                iv.compute[op.rank].append((a, b))
        elif op.kind == "comm" and op.traffic_class in classes and b > a:
            if op.lane >= 0:
                by = iv.lane_comm.setdefault(op.rank, {}).setdefault(op.lane, {})
                by.setdefault(op.traffic_class, []).append((a, b))
            else:
                iv.comm[op.rank][op.traffic_class].append((a, b))
    return iv


def _lane_timeline(
    iv: _RankIntervals, rep: int, lane: int, comp: np.ndarray, cls_iv: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Lane ``lane`` of representative ``rep``: its representative's timeline with its own expert
    compute (each such op starts with the representative's and lasts the lane's own duration) and
    its own ops (its gradient reductions) added to the shared ones."""
    if rep in iv.lane_durs:
        comp = comp.copy()
        for i, durs in iv.lane_durs[rep]:
            comp[i, 1] = comp[i, 0] + float(durs[lane])
    own = iv.lane_comm.get(rep, {}).get(lane)
    if own:
        cls_iv = {
            c: np.concatenate([v, np.asarray(own.get(c, []), dtype=np.float64).reshape(-1, 2)])
            for c, v in cls_iv.items()
        }
    return comp, cls_iv


def _rank_row(plan: StepPlan, r: int, acc: np.ndarray) -> dict[str, Any]:
    """One row of the ``ranks`` table: rank, place, mean breakdown ``acc`` and parallel coordinates."""
    row: dict[str, Any] = {
        "rank": r,
        "device": plan.devices[r],
        "node": plan.nodes[r],
        "compute_s": acc[0],
        "communication_s": acc[1],
        "overlap_s": acc[2],
        "idle_s": acc[3],
    }
    if plan.layout is not None:
        L = plan.layout
        p, d, t = L.coords(r)
        row.update(dp=d // L.cp, pp=p, ep=L.ep_coords(r)[1], tp=t, cp=d % L.cp)
    else:  # a compiled trace: no parallel layout
        row.update(dp=-1, pp=-1, ep=-1, tp=-1, cp=-1)
    return row


def _per_rank(plan: StepPlan, res: ReplayResult) -> tuple[pd.DataFrame, dict[str, float], float]:
    """The ``ranks`` table (means over steps), exposed comm by class and the all-to-all share.

    Communication is every comm op but background I/O (storage, checkpoint): the training
    classes of a workload, and whatever classes a compiled trace's groups map to."""
    world = plan.world
    classes = _comm_classes(plan)
    iv = _rank_intervals(plan, res, classes)
    rows = []
    exposed = dict.fromkeys(classes, 0.0)
    a2a_share = 0.0
    starts, ends = res.step_start, res.step_end
    n_steps = plan.steps
    rep_of = plan.rep_of or list(range(world))
    arrays: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for r in range(world):
        rep = rep_of[r]
        if rep not in arrays:
            arrays[rep] = (
                np.asarray(iv.compute[rep], dtype=np.float64).reshape(-1, 2),
                {c: np.asarray(v, dtype=np.float64).reshape(-1, 2) for c, v in iv.comm[rep].items()},
            )
        comp, cls_iv = _lane_timeline(iv, rep, r - rep, *arrays[rep])
        bds = [rank_breakdown((starts[s], ends[s]), comp, cls_iv) for s in range(n_steps)]
        acc = np.array([[b.compute_s, b.communication_s, b.overlap_s, b.idle_s] for b in bds]).sum(axis=0)
        for s, bd in enumerate(bds):
            for c in classes:
                exposed[c] += bd.exposed_s_by_class.get(c, 0.0) / (world * n_steps)
            span = ends[s] - starts[s]
            if span > 0:
                a2a_share += bd.active_s_by_class.get("ep", 0.0) / span / (world * n_steps)
        rows.append(_rank_row(plan, r, acc / n_steps))
    return pd.DataFrame(rows), exposed, a2a_share


def _comm_classes(plan: StepPlan) -> tuple[str, ...]:
    """The traffic classes that count as communication: :data:`BREAKDOWN_CLASSES`, then any
    other class of the plan's comm ops but storage and checkpoint (background I/O)."""
    extra = sorted(
        {op.traffic_class for op in plan.ops if op.kind == "comm"} - set(BREAKDOWN_CLASSES) - {"storage", "checkpoint"}
    )
    return (*BREAKDOWN_CLASSES, *extra)


def _ops_table(plan: StepPlan, res: ReplayResult) -> pd.DataFrame:
    keep = [op for op in plan.ops if op.kind != "barrier"]
    return pd.DataFrame(
        {
            "rank": np.array([o.rank for o in keep], dtype=np.int64),
            "device": [plan.devices[o.rank] for o in keep],
            "node": np.array([plan.nodes[o.rank] for o in keep], dtype=np.int64),
            "stream": [o.stream for o in keep],
            "name": [o.name for o in keep],
            "kind": [o.kind for o in keep],
            "traffic_class": [o.traffic_class for o in keep],
            "layer": np.array([o.layer for o in keep], dtype=np.int64),
            "microbatch": np.array([o.microbatch for o in keep], dtype=np.int64),
            "step": np.array([o.step for o in keep], dtype=np.int64),
            "start_s": res.op_start[[o.id for o in keep]],
            "end_s": res.op_end[[o.id for o in keep]],
        }
    )


def _alltoall_table(plan: StepPlan, res: ReplayResult) -> pd.DataFrame:
    agg: dict[tuple[int, int, int, str], list[float]] = {}
    for key, coll in plan.collectives.items():
        if coll.traffic_class != "ep":
            continue
        k = (coll.step, coll.layer, coll.microbatch, coll.phase)
        row = agg.setdefault(k, [math.inf, -math.inf, 0.0, 0.0])
        row[0] = min(row[0], res.coll_start[key])
        row[1] = max(row[1], res.coll_end[key])
        row[2] += coll.nbytes
        row[3] += coll.local_bytes
    rows = [
        {
            "step": s,
            "layer": ly,
            "microbatch": mb,
            "phase": ph,
            "start_s": v[0],
            "end_s": v[1],
            "duration_s": v[1] - v[0],
            "bytes": v[2],
            "local_bytes": v[3],
        }
        for (s, ly, mb, ph), v in sorted(agg.items(), key=lambda kv: (kv[1][0], kv[0]))
    ]
    cols = ["step", "layer", "microbatch", "phase", "start_s", "end_s", "duration_s", "bytes", "local_bytes"]
    return pd.DataFrame(rows, columns=cols)


def traffic_totals(graph: nx.DiGraph, net: Any) -> tuple[dict[str, float], float, float, int, pd.DataFrame]:
    """Bytes per traffic class, north-south bytes (a front-end device at either end), total
    bytes, number of flows and the node-to-node traffic matrix, from the engine's flow columns
    (numpy passes only: a large replay has tens of millions of flows).

    Bytes are what devices send: the results a switch sends back in an in-network reduction
    (NVLS, SHARP) are the network's work, not traffic of a class, so flows from switches are
    left out here (the links table still carries every byte on every link)."""
    cols = net.flow_columns()
    keep = cols["keep"]
    names = cols["class_names"]
    index = net.links.index
    num_dev = len(index)
    front = np.zeros(num_dev, dtype=bool)
    switch = np.zeros(num_dev, dtype=bool)
    node = np.full(num_dev, -1, dtype=np.int64)
    for n, a in graph.nodes(data=True):
        i = index.get(n)
        if i is not None:
            front[i] = a.get("network") == "frontend"
            switch[i] = a.get("kind") == "switch"
            node[i] = int(a.get("node", -1) if a.get("node") is not None else -1)
    src, dst = cols["src"], cols["dst"]
    nbytes = np.where(keep & ~switch[src], cols["bytes"], 0.0)
    cls = cols["traffic_class"]
    nc = max(len(names), 1)
    by_class = np.bincount(cls, weights=nbytes, minlength=nc)
    north = float(nbytes[front[src] | front[dst]].sum())
    # node-pair x class bins (node -1, off-server devices, is bin 0)
    width = int(node.max()) + 2
    key = ((node[src] + 1) * width + (node[dst] + 1)) * nc + cls
    present = np.bincount(key[keep], minlength=width * width * nc) > 0
    sums = np.bincount(key, weights=nbytes, minlength=width * width * nc)
    bins = np.flatnonzero(present)
    tm = pd.DataFrame(
        {
            "src_node": bins // (width * nc) - 1,
            "dst_node": (bins // nc) % width - 1,
            "traffic_class": np.array(names, dtype=object)[bins % nc] if len(names) else np.array([], dtype=object),
            "bytes": sums[bins],
        }
    )
    tm = tm.sort_values(["src_node", "dst_node", "traffic_class"], kind="mergesort").reset_index(drop=True)
    counts = np.bincount(cls[keep], minlength=nc)
    totals = {str(names[i]): float(by_class[i]) for i in range(len(names)) if counts[i]}
    return totals, north, float(nbytes.sum()), int(cols["count"][keep].sum()), tm


def checkpoint_times(plan: StepPlan, res: ReplayResult) -> list[float]:
    spans: dict[int, list[float]] = {}
    for key, coll in plan.collectives.items():
        if coll.traffic_class == "checkpoint":
            sp = spans.setdefault(coll.step, [math.inf, -math.inf])
            sp[0] = min(sp[0], res.coll_start[key])
            sp[1] = max(sp[1], res.coll_end[key])
    return [v[1] - v[0] for _, v in sorted(spans.items())]


def moe_results(plan: StepPlan, res: ReplayResult, a2a_share: float) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The MoE summary fields (per step) and the ``alltoall_layers`` / ``expert_load`` tables."""
    steps = plan.steps
    load = pd.DataFrame(plan.expert_load, columns=["step", "layer", "expert", "tokens", "dropped"])
    demand = load.assign(demand=load["tokens"] + load["dropped"])
    cvs = []
    for _, g in demand.groupby(["step", "layer"], sort=True):
        mean = float(g["demand"].mean())
        cvs.append(float(g["demand"].std(ddof=0)) / mean if mean > 0 else 0.0)
    requested = float(demand["demand"].sum())
    fields = {
        "ep_bytes_local_rank": plan.ep_bytes["local_rank"] / steps,
        "ep_bytes_intra_node": plan.ep_bytes["intra_node"] / steps,
        "ep_bytes_inter_node": plan.ep_bytes["inter_node"] / steps,
        "expert_load_cv": float(np.mean(cvs)) if cvs else 0.0,
        "drop_rate": float(load["dropped"].sum()) / requested if requested > 0 else 0.0,
        "alltoall_share": a2a_share,
    }
    return fields, {"alltoall_layers": _alltoall_table(plan, res), "expert_load": load}


def _with_memory(ranks: pd.DataFrame, plan: StepPlan) -> pd.DataFrame:
    """``ranks`` with every rank's peak memory and its parts (bytes; netsim.workload.memory)."""
    if plan.memory is None:
        return ranks
    mem = plan.memory.ranks
    return ranks.assign(
        memory_bytes=[m.total for m in mem],
        params_bytes=[m.params for m in mem],
        grads_bytes=[m.grads for m in mem],
        optimizer_bytes=[m.optimizer for m in mem],
        activations_bytes=[m.activations for m in mem],
        main_grads_bytes=[m.main_grads for m in mem],
        weight_copies_bytes=[m.weight_copies for m in mem],
    )


def account_replay(
    plan: StepPlan, graph: nx.DiGraph, res: ReplayResult, net: Any
) -> tuple[dict[str, Any], dict[str, pd.DataFrame], float]:
    """What every replay reports, whoever made the plan: the timing and traffic fields of the
    summary (per step, in summary order), the ``ranks``, ``links``, ``ops``,
    ``tier_timeseries`` and ``traffic_matrix`` tables, and the all-to-all share."""
    steps = plan.steps
    ranks, exposed, a2a_share = _per_rank(plan, res)
    class_bytes, north_bytes, total_bytes, num_flows, traffic_matrix = traffic_totals(graph, net)
    links = net.link_records()
    step_times = res.step_times_s
    by_class = {c: 0.0 for c in TRAFFIC_CLASSES}
    for c, v in sorted(class_bytes.items()):
        by_class[c] = by_class.get(c, 0.0) + v / steps
    by_link: dict[str, float] = {}
    if not links.empty:
        for c, v in links.groupby("class", sort=True)["bytes"].sum().items():
            by_link[str(c)] = float(v) / steps
    north = north_bytes / steps
    fields: dict[str, Any] = {
        "step_time_s": float(np.mean(step_times)),
        "step_times_s": [float(x) for x in step_times],
        "breakdown_s": {
            "compute": float(ranks["compute_s"].mean()),
            "communication": float(ranks["communication_s"].mean()),
            "overlap": float(ranks["overlap_s"].mean()),
            "idle": float(ranks["idle_s"].mean()),
        },
        "exposed_comm_s_by_class": exposed,
        "bytes_by_class": by_class,
        "bytes_by_link_class": by_link,
        "east_west_bytes": total_bytes / steps - north,
        "north_south_bytes": north,
        "num_ops": len(plan.ops),
        "num_flows": num_flows,
    }
    tables: dict[str, pd.DataFrame] = {
        "ranks": _with_memory(ranks, plan),
        "links": links,
        "ops": _ops_table(plan, res),
        "tier_timeseries": net.tier_timeseries(),
        "traffic_matrix": traffic_matrix,
    }
    return fields, tables, a2a_share
