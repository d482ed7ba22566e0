"""Scenario -> run directory: build, plan, replay, account, write (docs/CONTRACTS.md).

:func:`run_scenario` is what ``netsim run`` calls:

1. build the topology (:func:`netsim.topology.load_topology`) and the workload;
2. the compute model: a measured kernel table (``options.kernels``) or the roofline of the
   topology's accelerator with ``options.flops_efficiency`` / ``memory_efficiency``;
3. plan the op graph of ``steps`` training steps (:func:`netsim.workload.graph.build_plan`);
4. replay it on one :class:`~netsim.network.engine.Network` (:func:`netsim.replay.replay`);
   with checkpoints, replay a second time without checkpoint traffic to measure the slowdown
   the checkpoint causes (same seed, same routing: the difference is the checkpoint alone);
5. account (per rank breakdown, bytes by class / link class / direction, MoE locality) and
   write the run directory atomically (:func:`netsim.io.atomic_dir`), with the report when the
   caller passes a report writer (``netsim.report.write_report``: the report layer sits above
   this one, so this module never imports it).

Conventions of the outputs: ``summary.json`` numbers are *per step* (means over the simulated
steps: times, and bytes divided by the number of steps); the tables cover the whole run (all
steps), with times in seconds from the start of the first step.  The same scenario and seed
give byte-identical files.

Breakdown (per rank, per step; the LocMoE decomposition): over the step's window,
``compute`` = computing with no communication in flight, ``communication`` = communicating
while not computing (exposed communication), ``overlap`` = both at once, ``idle`` = neither
(pipeline bubbles, waiting for peers at a collective, load imbalance).  The four add up to the
step time exactly.  Communication counts the training collectives (dp, pp, ep, tp) of the rank
from the moment all members have arrived; storage reads and checkpoint writes are background
I/O shown through their bytes, ``checkpoint_time_s`` and the slowdown they cause.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import yaml

from netsim.auto import Choice, choose_model, choose_plan_options
from netsim.calibration.kernels import KernelTable
from netsim.config.scenario import ScenarioSpec
from netsim.config.workload import WorkloadSpec, load_workload
from netsim.errors import NetsimError, SpecError
from netsim.io import atomic_dir, check_output_dir, write_json, write_table
from netsim.limits import SizeEstimate, check_fits, estimate_run, size_check_enabled
from netsim.replay import BREAKDOWN_CLASSES, ReplayResult, rank_breakdown, replay
from netsim.workload.costs import TimeModel
from netsim.workload.graph import TRAFFIC_CLASSES, StepPlan, build_plan

__all__ = ["RunOutcome", "account_replay", "build_compute_model", "prepare", "run_plan", "run_scenario",
           "simulate_plan", "summarize_replay", "write_run"]

Progress = Callable[[str, float], None]
#: writes a report into a run directory that holds the summary and tables (netsim.report.write_report)
ReportWriter = Callable[[Path], object]


@dataclass
class RunOutcome:
    """What a run produced: the run directory, the summary and the main tables."""

    path: Path
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class Prepared:
    """A scenario made concrete: topology graph, workload, compute model, op graph."""

    scenario: ScenarioSpec
    graph: nx.DiGraph
    workload: WorkloadSpec
    compute: TimeModel
    plan: StepPlan
    engine_kwargs: dict[str, Any]
    collective_kwargs: dict[str, Any]
    collectives: Any = None
    """The :class:`~netsim.collectives.setup.CollectiveSetup` (cost model, link efficiencies)."""
    kernel_meta: dict[str, Any] = field(default_factory=dict)
    """Metadata of the ``options.kernels`` table (a measured step when it came from a trace)."""
    choice: Choice | None = None
    """How the run is simulated (collective model, lockstep, routing samples) and why."""


# ---------------------------------------------------------------------- setup


def build_compute_model(graph: nx.DiGraph, scenario: ScenarioSpec, dtype: str,
                        table: KernelTable | None = None) -> TimeModel:
    """The accelerator's compute model (its kernel-table profile, else the roofline), with
    ``options.kernels`` replacing the profile's table."""
    from netsim.calibration.models import make_compute_model

    opts = scenario.options
    if table is None and opts.kernels:
        table = KernelTable.load(scenario.resolve_path(opts.kernels))
    acc = dict(graph.graph.get("accelerator") or {})
    if not acc:
        if table is not None:
            return make_compute_model(table=table, default_dtype=dtype)
        raise NetsimError("the topology has no accelerator data (peak_flops, memory_Bps)", field="accelerator")
    return make_compute_model(
        acc, table, efficiency=opts.flops_efficiency, memory_efficiency=opts.memory_efficiency, default_dtype=dtype
    )


def _collectives(scenario: ScenarioSpec, graph: nx.DiGraph) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Network engine keywords, collective keywords and the collective setup (cost model and
    link efficiencies) from ``options.collective_cost``, ``options.calibration`` and the options."""
    from netsim.collectives.setup import collective_setup, default_routing

    opts = scenario.options
    engine: dict[str, Any] = {"routing": opts.path_policy or default_routing(graph), "seed": scenario.seed}
    setup_kw: dict[str, Any] = {}
    if opts.calibration:
        from netsim.calibration.fit import load_calibration

        setup_kw = load_calibration(scenario.resolve_path(opts.calibration)).setup_kwargs()
        if opts.collective_cost is not None and opts.collective_cost != setup_kw["cost_model"]:
            raise SpecError(f"the calibration was fitted with the {setup_kw['cost_model']} cost model, not "
                            f"{opts.collective_cost}", source=scenario.source, field="options.collective_cost")
    if opts.collective_cost is not None:
        setup_kw["cost_model"] = opts.collective_cost
    if opts.step_latency is not None:
        setup_kw["step_latency_s"] = float(opts.step_latency)
        setup_kw.setdefault("cost_model", "ideal")
    setup = collective_setup(graph, source=scenario.source or "options.collective_cost", **setup_kw)
    if setup.efficiency:
        engine["efficiency"] = dict(setup.efficiency)
    return engine, {"cost": setup.cost}, setup


def load_scenario_workload(scenario: ScenarioSpec) -> WorkloadSpec:
    """The scenario's workload (preset, path relative to the scenario, or inline) + overrides."""
    ref = scenario.workload
    if isinstance(ref, str):
        return load_workload(scenario.resolve_path(ref), scenario.workload_overrides)
    return load_workload(ref, scenario.workload_overrides, source=scenario.source or "<scenario>")


def run_estimate(graph: nx.DiGraph, workload: WorkloadSpec, scenario: ScenarioSpec) -> SizeEstimate:
    """Ops and flows the run will plan, before planning them (:func:`netsim.limits.estimate_run`)."""
    ranks = sum(1 for _, d in graph.nodes(data=True) if d.get("kind") == "accelerator")
    par = workload.parallelism
    dp = max(ranks // max(par.pp * par.tp, 1), 1)
    mb = workload.num_microbatches
    if workload.global_batch_size is not None:  # micro-batches per data-parallel replica
        mb = max(mb, workload.global_batch_size // (workload.micro_batch_size * dp))
    moe = workload.model.moe is not None
    built = None
    if choose_plan_options(scenario.options, graph, workload)[0]:  # lockstep: one rank per unit built
        built = max(ranks // math.lcm(par.ep, par.tp), 1) if moe else par.pp
    topo = SizeEstimate("", devices=graph.number_of_nodes(), links=graph.number_of_edges())
    return estimate_run(topo, ranks=ranks, layers=-(-workload.model.layers // max(par.pp, 1)), microbatches=mb,
                        steps=scenario.steps or workload.steps, ep=par.ep, moe=moe, built_ranks=built)


@contextlib.contextmanager
def _blame_scenario(scenario: ScenarioSpec, field: str) -> Iterator[None]:
    """An error with no file of its own (an unknown preset name) names the scenario's ``field``."""
    try:
        yield
    except NetsimError as exc:
        if exc.source is None:
            exc.field = exc.field or field
            raise exc.with_source(scenario.source or "<scenario>") from None
        raise


def prepare(scenario: ScenarioSpec) -> Prepared:
    """Build everything a replay needs (no simulation yet)."""
    from netsim.topology import load_topology

    with _blame_scenario(scenario, "topology"):
        graph = load_topology(
            scenario.resolve_path(scenario.topology),
            nodes=scenario.nodes,
            overrides=tuple(scenario.topology_overrides),
        )
    with _blame_scenario(scenario, "workload"):
        workload = load_scenario_workload(scenario)
    check_fits(run_estimate(graph, workload, scenario), enabled=size_check_enabled())
    opts = scenario.options
    table = KernelTable.load(scenario.resolve_path(opts.kernels)) if opts.kernels else None
    compute = build_compute_model(graph, scenario, workload.model.dtype, table)
    lockstep, samples, reasons = choose_plan_options(opts, graph, workload)
    plan = build_plan(
        workload,
        graph,
        compute,
        seed=scenario.seed,
        steps=scenario.steps,
        router=opts.router,
        routing_trace=scenario.resolve_path(opts.routing_trace) if opts.routing_trace else None,
        routing_samples=samples,
        lockstep=lockstep,
        allow_oom=opts.allow_oom,
    )
    engine, coll, setup = _collectives(scenario, graph)
    choice = choose_model(opts, plan, graph, setup.cost, lockstep, samples, reasons)
    coll["model"] = choice.model
    return Prepared(scenario, graph, workload, compute, plan, engine, coll, setup,
                    dict(table.meta) if table is not None else {}, choice)


def simulate(
    prep: Prepared, *, skip_classes: tuple[str, ...] = (), progress: Progress | None = None
) -> tuple[ReplayResult, Any]:
    """Replay the scenario's plan on a fresh network; returns the result and the network."""
    return simulate_plan(prep.plan, prep.graph, engine_kwargs=prep.engine_kwargs,
                         algorithms=prep.scenario.options.algorithms, collective_kwargs=prep.collective_kwargs,
                         skip_classes=skip_classes, progress=progress)


def simulate_plan(
    plan: StepPlan,
    graph: nx.DiGraph,
    *,
    engine_kwargs: Mapping[str, Any],
    algorithms: Mapping[str, str] | None = None,
    collective_kwargs: Mapping[str, Any] | None = None,
    skip_classes: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> tuple[ReplayResult, Any]:
    """Replay any plan (a workload's or a compiled trace's) on a fresh network built with
    ``engine_kwargs``; returns the result and the network."""
    from netsim.network.engine import Network

    net = Network(graph, **engine_kwargs)
    total = len(plan.ops)
    cb = None
    if progress is not None:

        def cb(done: int, _total: int, _t: float) -> None:
            progress("replay", done / max(total, 1))

    res = replay(plan, net, algorithms=algorithms, skip_classes=skip_classes,
                 collective_kwargs=collective_kwargs, progress=cb)
    return res, net


# ---------------------------------------------------------------------- accounting


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


def _lane_timeline(iv: _RankIntervals, rep: int, lane: int, comp: np.ndarray, cls_iv: dict[str, np.ndarray]
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
        cls_iv = {c: np.concatenate([v, np.asarray(own.get(c, []), dtype=np.float64).reshape(-1, 2)])
                  for c, v in cls_iv.items()}
    return comp, cls_iv


def _rank_row(plan: StepPlan, r: int, acc: np.ndarray) -> dict[str, Any]:
    """One row of the ``ranks`` table: rank, place, mean breakdown ``acc`` and parallel coordinates."""
    row: dict[str, Any] = {"rank": r, "device": plan.devices[r], "node": plan.nodes[r], "compute_s": acc[0],
                           "communication_s": acc[1], "overlap_s": acc[2], "idle_s": acc[3]}
    if plan.layout is not None:
        p, d, t = plan.layout.coords(r)
        row.update(dp=d, pp=p, ep=plan.layout.ep_coords(r)[1], tp=t)
    else:  # a compiled trace: no parallel layout
        row.update(dp=-1, pp=-1, ep=-1, tp=-1)
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
            arrays[rep] = (np.asarray(iv.compute[rep], dtype=np.float64).reshape(-1, 2),
                           {c: np.asarray(v, dtype=np.float64).reshape(-1, 2) for c, v in iv.comm[rep].items()})
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
    extra = sorted({op.traffic_class for op in plan.ops if op.kind == "comm"}
                   - set(BREAKDOWN_CLASSES) - {"storage", "checkpoint"})
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


def _traffic_totals(graph: nx.DiGraph, net: Any) -> tuple[dict[str, float], float, float, int, pd.DataFrame]:
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
    tm = pd.DataFrame({
        "src_node": bins // (width * nc) - 1,
        "dst_node": (bins // nc) % width - 1,
        "traffic_class": np.array(names, dtype=object)[bins % nc] if len(names) else np.array([], dtype=object),
        "bytes": sums[bins],
    })
    tm = tm.sort_values(["src_node", "dst_node", "traffic_class"], kind="mergesort").reset_index(drop=True)
    counts = np.bincount(cls[keep], minlength=nc)
    totals = {str(names[i]): float(by_class[i]) for i in range(len(names)) if counts[i]}
    return totals, north, float(nbytes.sum()), int(cols["count"][keep].sum()), tm


def _checkpoint_times(plan: StepPlan, res: ReplayResult) -> list[float]:
    spans: dict[int, list[float]] = {}
    for key, coll in plan.collectives.items():
        if coll.traffic_class == "checkpoint":
            sp = spans.setdefault(coll.step, [math.inf, -math.inf])
            sp[0] = min(sp[0], res.coll_start[key])
            sp[1] = max(sp[1], res.coll_end[key])
    return [v[1] - v[0] for _, v in sorted(spans.items())]


def _moe_results(plan: StepPlan, res: ReplayResult, a2a_share: float
                 ) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
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
    )


def account_replay(plan: StepPlan, graph: nx.DiGraph, res: ReplayResult, net: Any
                   ) -> tuple[dict[str, Any], dict[str, pd.DataFrame], float]:
    """What every replay reports, whoever made the plan: the timing and traffic fields of the
    summary (per step, in summary order), the ``ranks``, ``links``, ``ops``,
    ``tier_timeseries`` and ``traffic_matrix`` tables, and the all-to-all share."""
    steps = plan.steps
    ranks, exposed, a2a_share = _per_rank(plan, res)
    class_bytes, north_bytes, total_bytes, num_flows, traffic_matrix = _traffic_totals(graph, net)
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


def summarize_replay(
    prep: Prepared, res: ReplayResult, net: Any, baseline: ReplayResult | None = None
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The summary (per step) and the result tables of one replay of a scenario."""
    plan, graph = prep.plan, prep.graph
    L, sched = plan.layout, plan.schedule
    assert L is not None and sched is not None  # a workload's plan
    core, tables, a2a_share = account_replay(plan, graph, res, net)
    step_time = core["step_time_s"]
    ck_times = _checkpoint_times(plan, res)
    timing = ("step_time_s", "step_times_s", "breakdown_s", "exposed_comm_s_by_class", "bytes_by_class",
              "bytes_by_link_class", "east_west_bytes", "north_south_bytes")
    choice = prep.choice
    assert choice is not None, "prepare() records how the run is simulated"
    summary: dict[str, Any] = {
        "name": prep.scenario.name,
        "topology": str(graph.graph.get("name", prep.scenario.topology)),
        "workload": prep.workload.name,
        "seed": prep.scenario.seed,
        "steps": plan.steps,
        "num_nodes": int(graph.graph.get("num_nodes", len(set(L.nodes)))),
        "num_ranks": L.world,
        "parallelism": {
            "dp": L.dp,
            "pp": L.pp,
            "tp": L.tp,
            "ep": L.ep,
            "zero_stage": prep.workload.parallelism.zero_stage,
        },
        "schedule": sched.name,
        "num_microbatches": sched.m,
        **{k: core[k] for k in timing},
        "checkpoint_time_s": float(np.mean(ck_times)) if ck_times else None,
        "checkpoint_slowdown_s": (
            step_time - float(np.mean(baseline.step_times_s)) if baseline is not None and ck_times else None
        ),
        "compute_model": str(getattr(prep.compute, "name", type(prep.compute).__name__)),
        "compute_notes": list(getattr(prep.compute, "notes", [])),
        "collective_model": choice.collective_model,
        "collective_cost": (prep.collectives.describe() if prep.collectives is not None
                            else {"collective_cost": "ideal"}),
        "model_choice": choice.line,
        "routing_samples": choice.routing_samples,
        "lockstep": choice.lockstep,
        "num_ops": core["num_ops"],
        "num_flows": core["num_flows"],
        **plan.summary_fields(),
    }
    if plan.memory is not None:
        summary["memory"] = plan.memory.summary()
    if prep.kernel_meta.get("measured_step_s") is not None:  # a table imported from a profiled step
        km = prep.kernel_meta
        summary["measured_step_time_s"] = float(km["measured_step_s"])
        summary["measured_step"] = f"{km.get('measured_step', 'measured')} of {km.get('trace', 'the trace')}"
    if prep.workload.model.moe is not None and plan.expert_load:
        moe_fields, moe_tables = _moe_results(plan, res, a2a_share)
        summary.update(moe_fields)
        tables.update(moe_tables)
    return summary, tables


# ---------------------------------------------------------------------- run


def resolved_spec(prep: Prepared) -> dict[str, Any]:
    """The fully resolved inputs of a run (written as ``scenario.yaml``)."""
    scen = prep.scenario.to_dict()
    L, sched = prep.plan.layout, prep.plan.schedule
    assert L is not None and sched is not None  # a workload's plan
    return {
        "scenario": scen,
        "topology": prep.graph.graph.get("spec", {"name": prep.graph.graph.get("name")}),
        "workload": prep.workload.to_dict(),
        "resolved": {
            "ranks": L.world,
            "dp": L.dp,
            "pp": L.pp,
            "tp": L.tp,
            "ep": L.ep,
            "num_microbatches": sched.m,
            "steps": prep.plan.steps,
            "layers_per_block": [len(b) for b in prep.plan.layers_of_block],
            "devices": list(L.devices),
            "compute_model": str(getattr(prep.compute, "name", "")),
        },
    }


def run_scenario(
    scenario: ScenarioSpec, out: str | Path, *, progress: Progress | None = None,
    report: ReportWriter | None = None, force: bool = False,
) -> RunOutcome:
    """Run ``scenario`` and write its run directory to ``out`` (atomically).

    Args:
        scenario: the validated scenario.
        out: the run directory to create; checked after planning, before the replay
            (:func:`netsim.io.check_output_dir`).
        progress: ``fn(stage, fraction)`` for a progress display (stages: plan, replay,
            baseline, write, report).
        report: the report writer to run inside the run directory before it is published
            (``netsim.report.write_report``); ``None``: no report.
        force: replace an existing run directory that netsim wrote.
    """
    note = progress or (lambda _s, _f: None)
    note("plan", 0.0)
    prep = prepare(scenario)  # input errors (a bad EP size, an unknown router) come first
    note("plan", 1.0)
    check_output_dir(out, force=force)  # then the output folder, before minutes of replay
    res, net = simulate(prep, progress=progress)
    baseline = None
    if prep.plan.checkpoint_steps and scenario.options.checkpoint_baseline:
        note("baseline", 0.0)
        baseline, _ = simulate(prep, skip_classes=("checkpoint",))
        note("baseline", 1.0)
    note("write", 0.0)
    summary, tables = summarize_replay(prep, res, net, baseline)
    write_run(out, resolved_spec(prep), summary, tables, report=report, progress=progress, force=force)
    return RunOutcome(Path(out), summary, tables)


def write_run(out: str | Path, resolved: Mapping[str, Any], summary: Mapping[str, Any],
              tables: Mapping[str, pd.DataFrame], *, report: ReportWriter | None = None,
              progress: Progress | None = None, force: bool = False) -> None:
    """Write a run directory atomically: ``scenario.yaml`` (the resolved inputs),
    ``summary.json``, every table (CSV + Parquet) and, with a ``report`` writer, the report.  ``force``
    replaces a run directory netsim wrote (:mod:`netsim.io`)."""
    with atomic_dir(Path(out), force=force) as tmp:
        (tmp / "scenario.yaml").write_text(yaml.safe_dump(dict(resolved), sort_keys=False, allow_unicode=True))
        write_json(dict(summary), tmp / "summary.json")
        for name, df in tables.items():
            write_table(df, tmp, name)
        if report is not None:
            if progress is not None:
                progress("report", 0.0)
            report(tmp)


def run_plan(
    plan: StepPlan,
    graph: nx.DiGraph,
    out: str | Path,
    *,
    engine_kwargs: Mapping[str, Any],
    collective_kwargs: Mapping[str, Any] | None = None,
    algorithms: Mapping[str, str] | None = None,
    head: Mapping[str, Any] | None = None,
    extra: Callable[[ReplayResult], tuple[dict[str, Any], dict[str, pd.DataFrame]]] | None = None,
    resolved: Mapping[str, Any] | None = None,
    report: ReportWriter | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> RunOutcome:
    """Replay a plan that did not come from a scenario (a compiled trace) and write the same run
    directory as :func:`run_scenario`: one replay engine, one accounting, one contract.

    ``head``: summary fields that come first (name, topology, workload, ...); ``extra(result)``:
    fields and tables of the plan's producer, added after the common ones; ``resolved``: the
    inputs written as ``scenario.yaml``."""
    res, net = simulate_plan(plan, graph, engine_kwargs=engine_kwargs, algorithms=algorithms,
                             collective_kwargs=collective_kwargs, progress=progress)
    core, tables, _ = account_replay(plan, graph, res, net)
    summary: dict[str, Any] = {**(head or {}), "steps": plan.steps, "num_ranks": plan.world, **core}
    if extra is not None:
        fields, more = extra(res)
        summary.update(fields)
        tables.update(more)
    write_run(out, resolved or {}, summary, tables, report=report, progress=progress, force=force)
    return RunOutcome(Path(out), summary, tables)
