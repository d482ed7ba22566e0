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

from netsim.accuracy import REGIME_FIELDS, accuracy_for, accuracy_line, model_kind
from netsim.auto import Choice, choose_model, choose_plan_options
from netsim.calibration.class_scale import with_class_scale
from netsim.calibration.estimate import ComputeModel
from netsim.calibration.kernels import KernelTable
from netsim.calibration.shared_sms import with_comm_sms
from netsim.config.common import set_item
from netsim.config.scenario import ScenarioOptions, ScenarioSpec
from netsim.config.workload import WorkloadSpec, load_workload
from netsim.errors import NetsimError, SpecError
from netsim.io import atomic_dir, check_output_dir, write_json, write_table
from netsim.limits import SizeEstimate, check_fits, estimate_run, size_check_enabled
from netsim.replay import ReplayResult, replay
from netsim.run_accounting import account_replay, checkpoint_times, moe_results
from netsim.topology.faults import fault_summary
from netsim.workload.fp8 import recipe_note
from netsim.workload.graph import StepPlan, build_plan
from netsim.workload.kernel_calls import TimeModel
from netsim.workload.kernel_tally import KERNEL_ROW_COLUMNS, kernel_summary
from netsim.workload.lora import training_note

__all__ = [
    "RunOutcome",
    "account_replay",
    "build_compute_model",
    "check_options",
    "prepare",
    "run_plan",
    "run_scenario",
    "simulate_plan",
    "summarize_replay",
    "write_run",
]

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


def build_compute_model(
    graph: nx.DiGraph, scenario: ScenarioSpec, dtype: str, table: KernelTable | None = None
) -> ComputeModel:
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


def workload_compute_model(
    graph: nx.DiGraph, scenario: ScenarioSpec, workload: WorkloadSpec, table: KernelTable | None = None
) -> TimeModel:
    """The compute model a replay of ``workload`` uses: the accelerator's
    (:func:`build_compute_model`), with the SMs ``overlap.comm_sms`` holds for communication and
    the scenario's per-class calibration (``options.compute_class_scale``)."""
    compute = build_compute_model(graph, scenario, workload.model.dtype, table)
    acc = dict(graph.graph.get("accelerator") or {})
    with _blame_scenario(scenario, "workload"):
        compute = with_comm_sms(compute, workload.overlap.comm_sms, acc.get("sms"), str(acc.get("name", "")))
    return with_class_scale(compute, scenario.options.compute_class_scale)


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
            raise SpecError(
                f"the calibration was fitted with the {setup_kw['cost_model']} cost model, not {opts.collective_cost}",
                source=scenario.source,
                field="options.collective_cost",
            )
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
    return estimate_run(
        topo,
        ranks=ranks,
        layers=-(-workload.model.layers // max(par.pp, 1)),
        microbatches=mb,
        steps=scenario.steps or workload.steps,
        ep=par.ep,
        moe=moe,
        built_ranks=built,
        # `auto` simulates every flow only up to auto.EXACT_FLOW_LIMIT flows, then streams or coflows
        exact=scenario.options.collective_model == "exact",
    )


@contextlib.contextmanager
def _blame_scenario(scenario: ScenarioSpec, field: str) -> Iterator[None]:
    """An error with no file of its own (an unknown preset name) names the scenario's ``field``;
    one in an override item the scenario file gives names the file and the item."""
    try:
        yield
    except NetsimError as exc:
        if exc.source is None:
            exc.field = exc.field or field
            raise exc.with_source(scenario.source or "<scenario>") from None
        item = set_item(exc.source)
        if item is not None and item in scenario.own_overrides:
            exc.source = scenario.source or "<scenario>"
            exc.field = f"{field}_overrides {item!r}"
            exc.args = (exc.one_line(),)
        raise


def check_options(opts: ScenarioOptions) -> None:
    """The registry names among a scenario's options, before any work (an unknown algorithm
    would otherwise pass unnoticed when no collective of its op runs): ``path_policy``,
    ``collective_cost`` and every ``algorithms`` entry; a one-line SpecError naming the field."""
    from netsim.collectives.cost import COST_MODELS
    from netsim.collectives.registry import get_algorithm
    from netsim.network.path_policy import PATH_POLICIES

    if opts.path_policy is not None:
        PATH_POLICIES.canonical(opts.path_policy, field="options.path_policy")
    if opts.collective_cost is not None:
        COST_MODELS.canonical(opts.collective_cost, field="options.collective_cost")
    for op, algo in opts.algorithms.items():
        try:
            get_algorithm(op, algo)
        except NetsimError as exc:
            raise SpecError(exc.message, field=f"options.algorithms.{op}") from None


def prepare(scenario: ScenarioSpec) -> Prepared:
    """Build everything a replay needs (no simulation yet)."""
    from netsim.topology import load_topology

    with _blame_scenario(scenario, "topology"):
        graph = load_topology(
            scenario.resolve_path(scenario.topology), nodes=scenario.nodes, overrides=tuple(scenario.topology_overrides)
        )
    with _blame_scenario(scenario, "workload"):
        workload = load_scenario_workload(scenario)
    check_fits(run_estimate(graph, workload, scenario), enabled=size_check_enabled())
    opts = scenario.options
    with _blame_scenario(scenario, "options"):
        check_options(opts)
    table = KernelTable.load(scenario.resolve_path(opts.kernels)) if opts.kernels else None
    compute = workload_compute_model(graph, scenario, workload, table)
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
    return Prepared(
        scenario,
        graph,
        workload,
        compute,
        plan,
        engine,
        coll,
        setup,
        dict(table.meta) if table is not None else {},
        choice,
    )


def simulate(
    prep: Prepared, *, skip_classes: tuple[str, ...] = (), progress: Progress | None = None
) -> tuple[ReplayResult, Any]:
    """Replay the scenario's plan on a fresh network; returns the result and the network."""
    return simulate_plan(
        prep.plan,
        prep.graph,
        engine_kwargs=prep.engine_kwargs,
        algorithms=prep.scenario.options.algorithms,
        collective_kwargs=prep.collective_kwargs,
        skip_classes=skip_classes,
        progress=progress,
    )


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

    res = replay(
        plan, net, algorithms=algorithms, skip_classes=skip_classes, collective_kwargs=collective_kwargs, progress=cb
    )
    return res, net


# ---------------------------------------------------------------------- accounting


def summarize_replay(
    prep: Prepared, res: ReplayResult, net: Any, baseline: ReplayResult | None = None
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """The summary (per step) and the result tables of one replay of a scenario."""
    plan, graph = prep.plan, prep.graph
    L, sched = plan.layout, plan.schedule
    assert L is not None and sched is not None  # a workload's plan
    core, tables, a2a_share = account_replay(plan, graph, res, net)
    step_time = core["step_time_s"]
    ck_times = checkpoint_times(plan, res)
    timing = (
        "step_time_s",
        "step_times_s",
        "breakdown_s",
        "exposed_comm_s_by_class",
        "bytes_by_class",
        "bytes_by_link_class",
        "east_west_bytes",
        "north_south_bytes",
    )
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
            "cp": L.cp,
            "ep": L.ep,
            "zero_stage": prep.workload.parallelism.zero_stage,
            **_layout_modes(prep.workload, L.cp, L.dp_replicas),
        },
        "schedule": sched.name,
        "num_microbatches": sched.m,
        "layers_per_block": plan.layers_per_block,
        **{k: core[k] for k in timing},
        "checkpoint_time_s": float(np.mean(ck_times)) if ck_times else None,
        "checkpoint_slowdown_s": (
            step_time - float(np.mean(baseline.step_times_s)) if baseline is not None and ck_times else None
        ),
        "compute_model": str(getattr(prep.compute, "name", type(prep.compute).__name__)),
        "compute_notes": list(getattr(prep.compute, "notes", []))
        + ([_fp8_note(prep.workload)] if prep.workload.model.dtype == "fp8" else [])
        + [n for n in [training_note(prep.workload.training.lora, prep.workload.training.document_tokens)] if n],
        "collective_model": choice.collective_model,
        "collective_cost": (
            prep.collectives.describe() if prep.collectives is not None else {"collective_cost": "ideal"}
        ),
        "model_choice": choice.line,
        "routing_samples": choice.routing_samples,
        "lockstep": choice.lockstep,
        "num_ops": core["num_ops"],
        "num_flows": core["num_flows"],
        **plan.summary_fields(),
    }
    if plan.memory is not None:
        summary["memory"] = plan.memory.summary()
    if plan.kernel_rows:
        tables["kernels"] = pd.DataFrame(plan.kernel_rows, columns=list(KERNEL_ROW_COLUMNS))
        summary["compute_kernels"] = kernel_summary(plan.kernel_rows)
    summary["validation_accuracy"] = validation_accuracy(graph, prep.workload, summary.get("compute_kernels"))
    faults = fault_summary(graph)
    if faults:
        summary["faults"] = faults
    if prep.kernel_meta.get("measured_step_s") is not None:  # a table imported from a profiled step
        km = prep.kernel_meta
        summary["measured_step_time_s"] = float(km["measured_step_s"])
        summary["measured_step"] = f"{km.get('measured_step', 'measured')} of {km.get('trace', 'the trace')}"
    if prep.workload.model.moe is not None and plan.expert_load:
        moe_fields, moe_tables = moe_results(plan, res, a2a_share)
        summary.update(moe_fields)
        tables.update(moe_tables)
    return summary, tables


# ---------------------------------------------------------------------- run


def _layout_modes(workload: WorkloadSpec, cp: int, dp_replicas: int) -> dict[str, Any]:
    """The layout choices beyond the sizes, where they are not the default: how context
    parallelism exchanges (``cp_comm_type``, ``hierarchical_cp``) and in how many slices the model
    state is sharded (``dp_replicas``)."""
    par = workload.parallelism
    out: dict[str, Any] = {}
    if cp > 1:
        out["cp_comm_type"] = par.cp_comm_type
        if par.hierarchical_cp:
            out["hierarchical_cp"] = list(par.hierarchical_cp)
    if dp_replicas > 1:
        out["dp_replicas"] = dp_replicas
    return out


def layout_modes(par: Mapping[str, Any]) -> list[str]:
    """The modes of ``par`` (a summary's ``parallelism``) beyond its sizes, in words, where they
    are set: how context parallelism exchanges, and in how many slices the model state is sharded
    (the console line and the report's parallelism row)."""
    out = []
    if par.get("cp_comm_type"):
        hier = par.get("hierarchical_cp")
        out.append(f"CP by {par['cp_comm_type']}" + (f" {'x'.join(str(n) for n in hier)}" if hier else ""))
    if par.get("dp_replicas"):
        out.append(f"model state in {par['dp_replicas']} slices")
    return out


def layout_line(par: Mapping[str, Any]) -> str:
    """``par`` (a summary's ``parallelism``) as the console's ``DP2 PP1 TP8 CP4 EP16, CP by
    a2a+p2p 2x2``: CP only where it is > 1, then :func:`layout_modes`."""
    cp = f" CP{par['cp']}" if par.get("cp", 1) > 1 else ""
    sizes = f"DP{par['dp']} PP{par['pp']} TP{par['tp']}{cp} EP{par['ep']}"
    return ", ".join([sizes, *layout_modes(par)])


def validation_accuracy(
    graph: nx.DiGraph, workload: WorkloadSpec, kernels: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's regime and netsim's record on published runs of it (:mod:`netsim.accuracy`):
    ``runs`` 0 and no statistics where none has been predicted.  ``kernels``: the summary's
    ``compute_kernels`` (an attention-bound step is its own regime)."""
    regime = (
        str((graph.graph.get("accelerator") or {}).get("name", "")),
        workload.model.dtype,
        model_kind(
            workload.model.moe is not None, kernels["by_class_s"] if kernels else None, workload.training.framework
        ),
    )
    acc = accuracy_for(*regime)
    out: dict[str, Any] = dict(zip(REGIME_FIELDS, regime, strict=True))
    out.update(acc.as_dict() if acc is not None else {"runs": 0})
    out["line"] = accuracy_line(*regime, acc)
    return out


def _fp8_note(workload: WorkloadSpec) -> str:
    """The compute note on the FP8 quantisation casts of ``workload`` (an fp8 model)."""
    m = workload.model
    return recipe_note(m.fp8_recipe, m.fp8_quant_bytes.model_dump() if m.fp8_quant_bytes is not None else None)


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
            "cp": L.cp,
            "ep": L.ep,
            "num_microbatches": sched.m,
            "steps": prep.plan.steps,
            "layers_per_block": prep.plan.layers_per_block,
            "devices": list(L.devices),
            "compute_model": str(getattr(prep.compute, "name", "")),
        },
    }


def run_scenario(
    scenario: ScenarioSpec,
    out: str | Path,
    *,
    progress: Progress | None = None,
    report: ReportWriter | None = None,
    force: bool = False,
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


def write_run(
    out: str | Path,
    resolved: Mapping[str, Any],
    summary: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    *,
    report: ReportWriter | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> None:
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
    res, net = simulate_plan(
        plan,
        graph,
        engine_kwargs=engine_kwargs,
        algorithms=algorithms,
        collective_kwargs=collective_kwargs,
        progress=progress,
    )
    core, tables, _ = account_replay(plan, graph, res, net)
    summary: dict[str, Any] = {**(head or {}), "steps": plan.steps, "num_ranks": plan.world, **core}
    if extra is not None:
        fields, more = extra(res)
        summary.update(fields)
        tables.update(more)
    write_run(out, resolved or {}, summary, tables, report=report, progress=progress, force=force)
    return RunOutcome(Path(out), summary, tables)
