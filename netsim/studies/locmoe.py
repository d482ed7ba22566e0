"""The LocMoE study: Hash (RRE) vs Switch vs LocMoE routing, with and without EPLB, on clusters.

Reproduces the experimental design of LocMoE (Li et al., arXiv 2401.13920, IJCAI-24; see
docs/modelling.md, Routers: LocMoE): 16 experts, expert parallel 16, top-1, 8 MoE layers, on Ascend 910A
clusters of 8, 16 and 32 servers (64, 128, 256 NPUs), and the same on DGX H100.

Routing is *measured, not assumed*: for each router the router lab (:mod:`netsim.moe.lab`)
trains a small MoE language model on real text with that router and its losses and records
which expert every token of every rank chose at every step.  Those routing traces drive the
expert all-to-all of the ``locmoe-pangu`` workload replayed on each cluster, with contiguous
placement and with DeepSeek's EPLB placement computed from the trace's expert loads.  A
sensitivity sweep with the statistical ``locality`` routing model adds what the all-to-all
would cost if a router kept a given share of each rank's tokens on its own node, which is the
ceiling of what any locality-aware router can save on that fabric.

Outputs (``DIR``, default ``reports/locmoe``): ``lab/<router>/`` (routing traces and losses),
``runs/<config>/`` (full run directories with their own reports), ``results.csv/.parquet``
(one row per configuration), ``model_check.csv`` (the faster collective model against exact on
the same configurations), ``figures/``, ``report.md`` and a self-contained ``report.html``
(:mod:`netsim.studies.locmoe_report`) ending with a conclusion generated from the numbers.

Runs are simulated with ``--collective-model auto`` (netsim/auto.py: exact, stream or coflow
from the run's size, as ``netsim run`` does); at the ``exact_check`` node counts the lab-trace
configurations are replayed again with the exact model and the report states the difference.
Finished runs are reused, so an interrupted study resumes; the paths a run's ``scenario.yaml``
names (the routing trace) are relative to the study directory, so a copied or moved study
resumes too, without rerunning anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsim.errors import NetsimError
from netsim.io import write_table
from netsim.limits import MAX_NODES
from netsim.studies.lab_traces import LabTrace, capacity_rows, converged_trace, parse_capacity, train_labs
from netsim.studies.locmoe_findings import conclude, convergence_lines, convergence_table
from netsim.studies.locmoe_report import ROUTER_LABELS, model_check_lines, write_report
from netsim.studies.parallel import cores

__all__ = ["ROUTER_LABELS", "StudyConfig", "StudyResult", "check_config", "conclude", "run_study"]

#: progress callback: (what is happening, fraction done of the whole study)
Progress = Callable[[str, float], None]


#: the study's lab model: the lab's default model (d = 256, 4 heads, experts of width 512, 2 MoE
#: layers) with capacity groups of 4 sequences of 64 BPE tokens per rank and step (a 1024-token
#: vocabulary from 2 MiB of the four text sources), 600 steps with warm-up and cosine decay.  All
#: three routers converge (their routing statistics hold still over the last half of the run;
#: :mod:`netsim.moe.lab_check`) in about 8 CPU-minutes each at one torch thread.  The lab measures
#: routing statistics (balance, drops, locality), which the replay rescales to the workload's
#: tokens and hidden size.
STUDY_LAB: dict[str, Any] = {
    "hidden": 256,
    "heads": 4,
    "ffn_hidden": 512,
    "seq_len": 64,
    "batch": 4,
    "vocab": 1024,
    "max_corpus_bytes": 2 << 20,
}
#: ``--quick``'s lab: the same data at d = 64, capacity groups of 2 sequences of 64 tokens (128
#: tokens per rank and step: a perfectly balanced Switch router at capacity factor 1.25 still
#: drops only 5%) and 300 steps: about 20 CPU-seconds per router, and all three converge
QUICK_LAB: dict[str, Any] = {**STUDY_LAB, "hidden": 64, "ffn_hidden": 128, "batch": 2}
QUICK_LAB_STEPS = 300


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs (the defaults are the paper's design)."""

    topologies: tuple[str, ...] = ("ascend-910a", "dgx-h100")
    nodes: tuple[int, ...] = (8, 16, 32)
    routers: tuple[str, ...] = ("rre", "switch", "locmoe")
    placements: tuple[str, ...] = ("contiguous", "eplb")
    workload: str = "locmoe-pangu"
    workload_overrides: tuple[str, ...] = ()
    #: locality fractions of the sensitivity sweep (statistical model; empty to skip)
    locality: tuple[float, ...] = (0.125, 0.5, 0.875)
    lab_steps: int = 600
    lab_overrides: dict[str, Any] = field(default_factory=lambda: dict(STUDY_LAB))
    seed: int = 0
    #: refuse (one line, exit 2) to draw conclusions from a router whose lab run has not converged
    require_converged: bool = True
    #: per-router expert capacity of the replay: ``none``, ``theorem1`` (LocMoE's Theorem-1 token
    #: count at the replayed hidden size) or a capacity factor; routers not listed keep none.
    #: LocMoE and Switch share 1.25 so the comparison is about routing: Theorem 1's floor is 2
    #: tokens per expert and rank at d = 5120, which drops ~99% of the locmoe-pangu preset's 4096
    #: tokens per rank (the paper reports no accuracy loss, so it cannot have trained there);
    #: capacity.csv shows what that floor would save.
    capacity: dict[str, str] = field(default_factory=lambda: {"switch": "1.25", "locmoe": "1.25"})
    #: per-router LocMoE-style slices of the expert all-to-all / expert compute overlap
    #: (``overlap.ep_overlap_slices``); routers not listed get 1 (no slicing)
    overlap: dict[str, int] = field(default_factory=lambda: {"locmoe": 2})
    #: ``auto`` (chosen from each run's size, as ``netsim run`` does: netsim/auto.py), ``exact``,
    #: ``stream`` (ring phases as one flow per link) or ``coflow`` (stream, and each all-to-all
    #: phase as one coflow): the faster models' error is measured by ``exact_check``
    collective_model: str = "auto"
    #: node counts at which the lab-trace rows with contiguous placement are replayed again with
    #: the exact model when the study's model is not exact (the report's "Collective model against
    #: exact" section); empty to skip
    exact_check: tuple[int, ...] = (8,)
    #: redundant expert slots of the ``eplb`` placement, a multiple of the EP size (16: every
    #: rank hosts its expert and one replica).  Without replicas and with one expert per rank
    #: EPLB can only permute experts and balances nothing.
    eplb_redundant: int = 16
    #: write each configuration's run report (figures, ``report.md``) into ``runs/<config>/``;
    #: ``--quick`` leaves them out (the summary and tables are written either way)
    run_reports: bool = True

    @classmethod
    def quick(cls) -> StudyConfig:
        """A small version for a first look (one fabric, one size, a small lab model that converges,
        no per-run reports)."""
        return cls(
            topologies=("ascend-910a",),
            nodes=(2,),
            placements=("contiguous",),
            locality=(0.125, 0.875),
            lab_steps=QUICK_LAB_STEPS,
            workload_overrides=("model.layers=10", "model.moe.first_dense=2", "micro_batch_size=2"),
            lab_overrides=dict(QUICK_LAB),
            exact_check=(2,),
            run_reports=False,
        )


@dataclass
class StudyResult:
    out: Path
    results: pd.DataFrame
    conclusion: list[str]


def _route_tokens(cfg: StudyConfig) -> tuple[int, int]:
    """``(tokens one EP rank routes per micro-batch, model hidden size)`` of the replayed workload."""
    from netsim.config.workload import load_workload
    from netsim.workload.costs import ModelCosts

    spec = load_workload(cfg.workload, cfg.workload_overrides)
    tp = spec.parallelism.tp if isinstance(spec.parallelism.tp, int) else 1
    costs = ModelCosts(
        spec.model,
        spec.micro_batch_size,
        tp,
        sequence_parallel=spec.parallelism.sequence_parallel,
        cp=spec.parallelism.cp,
    )
    return int(costs.route_tokens), int(spec.model.hidden)


def _lab_config(cfg: StudyConfig, router: str) -> Any:
    """The router lab's configuration for ``router`` (the workload's 16 experts over 16 EP ranks)."""
    from netsim.moe.lab import LabConfig

    return LabConfig(
        router=router, experts=16, ep=16, ranks_per_node=8, steps=cfg.lab_steps, seed=cfg.seed, **cfg.lab_overrides
    )


def _lab_trace(cfg: StudyConfig, router: str, out: Path) -> LabTrace:
    """Train the lab model with ``router`` (once), check convergence, window and cap its trace."""
    tokens, hidden = _route_tokens(cfg)
    lab_cfg = _lab_config(cfg, router)
    cap = parse_capacity(cfg.capacity.get(router, "none"), field=f"--capacity {router}")
    return converged_trace(
        lab_cfg, out, tokens_per_rank=tokens, capacity=cap, hidden=hidden, require_converged=cfg.require_converged
    )


def _placement_overrides(cfg: StudyConfig, placement: str, router: str | None = None) -> list[str]:
    out = [f"placement.name={placement}"]
    if router is not None:
        out.append(f"overlap.ep_overlap_slices={cfg.overlap.get(router, 1)}")
    if placement.startswith("eplb"):
        out.append(f"placement.redundant_experts={cfg.eplb_redundant}")
    return out


def ep_span_nodes(run_dir: Path) -> int:
    """Servers one EP group of a finished run spans (rank 0's group), from its ``scenario.yaml``:
    how many nodes a token can be dispatched to, the "nodes" of the paper's experts >= nodes."""
    import yaml

    from netsim.workload.expert_layout import make_expert_layout

    saved = yaml.safe_load((run_dir / "scenario.yaml").read_text())
    res, par = saved["resolved"], saved["workload"]["parallelism"]
    layout = make_expert_layout(par["expert_layout"], res["dp"], res["tp"], res["ep"], par.get("expert_tp"))
    # accelerators are named nK.gJ (netsim.topology.model.accelerator_name): server nK
    return len({res["devices"][r].partition(".")[0] for r in layout.ep_members(0)})


def _config_name(topology: str, nodes: int, router: str, placement: str) -> str:
    return f"{topology}-n{nodes}-{router}-{placement}"


def _finished_with(
    run_dir: Path, overrides: list[str], collective_model: str, routing_trace: str | None = None
) -> bool:
    """Whether ``run_dir`` holds a finished run made with these workload overrides, this collective
    model and this routing trace (a study resumed with other settings reruns the configuration).
    ``routing_trace`` is compared as the study stores it: relative to the study directory."""
    import yaml

    if not (run_dir / "summary.json").is_file() or not (run_dir / "scenario.yaml").is_file():
        return False
    try:
        saved = yaml.safe_load((run_dir / "scenario.yaml").read_text())["scenario"]
    except (yaml.YAMLError, KeyError, TypeError):
        return False
    opts = saved.get("options") or {}
    return bool(
        list(saved.get("workload_overrides") or []) == overrides
        and opts.get("collective_model", "exact") == collective_model
        and (routing_trace is None or opts.get("routing_trace") == routing_trace)
    )


def _run_one(
    cfg: StudyConfig,
    topology: str,
    nodes: int,
    workload_overrides: Sequence[str],
    options: dict[str, Any],
    run_dir: Path,
    study_dir: Path,
    collective_model: str | None = None,
) -> dict[str, Any]:
    """Run one configuration (or reuse its finished run directory) and return its summary.

    Paths in ``options`` are relative to ``study_dir`` and stay so in the run's ``scenario.yaml``
    (the scenario resolves them against ``study_dir``): a copied or moved study resumes without
    rerunning anything."""
    import json

    from netsim.config.scenario import load_scenario
    from netsim.report import write_report as write_run_report
    from netsim.run import run_scenario

    model = collective_model or cfg.collective_model
    summary_path = run_dir / "summary.json"
    overrides = list(cfg.workload_overrides) + list(workload_overrides)
    # not run yet, or run differently
    if not _finished_with(run_dir, overrides, model, options.get("routing_trace")):
        scenario = load_scenario(
            {
                "name": run_dir.name,
                "topology": topology,
                "nodes": nodes,
                "workload": cfg.workload,
                "workload_overrides": overrides,
                "seed": cfg.seed,
                "options": {**options, "collective_model": model},
            },
            source=f"study config {run_dir.name}",
        ).with_origin(f"study config {run_dir.name}", study_dir)
        report = write_run_report if cfg.run_reports else None
        run_scenario(scenario, run_dir, report=report, force=True)  # inside the study's own folder
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary


def _row(summary: dict[str, Any], **keys: Any) -> dict[str, Any]:
    bd = summary.get("breakdown_s", {})
    ep_inter = float(summary.get("ep_bytes_inter_node") or 0.0)
    ep_intra = float(summary.get("ep_bytes_intra_node") or 0.0)
    ep_local = float(summary.get("ep_bytes_local_rank") or 0.0)
    ep_total = ep_inter + ep_intra + ep_local
    step = float(summary["step_time_s"])
    return {
        **keys,
        "step_time_s": step,
        "compute_s": float(bd.get("compute", math.nan)),
        "communication_s": float(bd.get("communication", math.nan)),
        "overlap_s": float(bd.get("overlap", math.nan)),
        "idle_s": float(bd.get("idle", math.nan)),
        "alltoall_share": float(summary.get("alltoall_share") or 0.0),
        "alltoall_s": float(summary.get("alltoall_share") or 0.0) * step,
        "ep_bytes_inter_node": ep_inter,
        "ep_bytes_intra_node": ep_intra,
        "ep_bytes_local_rank": ep_local,
        "ep_inter_node_share": ep_inter / ep_total if ep_total else math.nan,
        "expert_load_cv": float(summary.get("expert_load_cv") or 0.0),
        "drop_rate": float(summary.get("drop_rate") or 0.0),
        "collective_model": str(summary.get("collective_model", "exact")),
        "model_choice": str(summary.get("model_choice") or summary.get("collective_model", "exact")),
    }


def lab_load_by_step(trace_path: Path) -> pd.DataFrame:
    """Expert load statistics of a routing trace per training step (mean over layers)."""
    from netsim.moe.trace import read_routing_trace

    tr = read_routing_trace(trace_path)
    df = tr.table
    per = df.groupby(["step", "layer", "expert"], sort=True)["tokens"].sum().unstack("expert", fill_value=0)
    load = per.to_numpy(dtype=float)
    mean = load.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = load.std(axis=1) / mean
        mx = load.max(axis=1) / mean
    stats = pd.DataFrame({"step": per.index.get_level_values("step"), "cv": cv, "max_mean": mx})
    return stats.groupby("step", sort=True).mean().reset_index()


def _design(cfg: StudyConfig, out_path: Path, traces: dict[str, LabTrace]) -> list[tuple[dict[str, Any], _Job]]:
    """Every configuration of the design in order: (its results row's keys, its run)."""
    out: list[tuple[dict[str, Any], _Job]] = []
    for topology in cfg.topologies:
        for nodes in cfg.nodes:
            for router in cfg.routers:
                for placement in cfg.placements:
                    name = _config_name(topology, nodes, router, placement)
                    trace = {"routing_trace": traces[router].window.relative_to(out_path).as_posix()}
                    job = (
                        cfg,
                        topology,
                        nodes,
                        _placement_overrides(cfg, placement, router),
                        trace,
                        out_path / "runs" / name,
                        out_path,
                        None,
                    )
                    out.append(({"router": router, "placement": placement, "routing": "lab trace"}, job))
            for frac in cfg.locality:
                name = f"{topology}-n{nodes}-locality{round(frac * 1000):04d}-contiguous"
                stat = ["placement.name=contiguous", "router.name=locality", f"router.options.fraction={frac}"]
                job = (cfg, topology, nodes, stat, {}, out_path / "runs" / name, out_path, None)
                out.append(({"router": f"locality {frac:g}", "placement": "contiguous", "routing": "statistical"}, job))
    return out


#: the arguments of :func:`_run_one`: (cfg, topology, nodes, workload overrides, options, run
#: directory, study directory, collective model or None for the study's)
_Job = tuple[Any, str, int, list[str], dict[str, Any], Path, Path, "str | None"]


def _run_job(job: _Job) -> None:
    """One configuration's run (a worker process of :func:`_run_side_by_side`)."""
    _run_one(*job)


def _run_side_by_side(jobs: list[_Job], note: Progress, done: float) -> None:
    """Run the jobs not finished yet side by side (:mod:`netsim.studies.parallel`); the caller
    then reads every summary with :func:`_run_one`, which reuses the finished runs."""
    from netsim.studies.parallel import cores, side_by_side

    todo = [
        j
        for j in jobs
        if not _finished_with(
            j[5], [*j[0].workload_overrides, *j[3]], j[7] or j[0].collective_model, j[4].get("routing_trace")
        )
    ]
    if len(todo) > 1 and cores() > 1:
        note(f"replay {len(todo)} configurations ({min(cores(), len(todo), 4)} processes)", done)
        side_by_side(_run_job, todo)


def _replays(
    cfg: StudyConfig, out_path: Path, traces: dict[str, LabTrace], note: Progress, done: int, total: int
) -> list[dict[str, Any]]:
    """Replay every configuration of the design (reusing finished runs): one results row each."""
    design = _design(cfg, out_path, traces)
    _run_side_by_side([job for _, job in design], note, done / total)
    rows: list[dict[str, Any]] = []
    for keys, job in design:
        _, topology, nodes, _, _, run_dir, _, _ = job
        note(f"replay {run_dir.name}", done / total)
        summary = _run_one(*job)
        span = {"ep_nodes": ep_span_nodes(run_dir)} if keys["routing"] == "lab trace" else {}
        rows.append(_row(summary, topology=topology, nodes=nodes, npus=nodes * _per_node(summary), **keys, **span))
        done += 1
    return rows


def _check_rows(cfg: StudyConfig, results: pd.DataFrame) -> pd.DataFrame:
    """The results rows :func:`exact_model_check` replays again with the exact model."""
    if results.empty or not cfg.exact_check:
        return results.iloc[0:0]
    return results[
        (results["routing"] == "lab trace")
        & (results["placement"] == "contiguous")
        & results["nodes"].isin(cfg.exact_check)
        & (results["collective_model"] != "exact")
    ]


def exact_model_check(
    cfg: StudyConfig,
    out_path: Path,
    results: pd.DataFrame,
    traces: dict[str, LabTrace],
    note: Progress,
    done: int,
    total: int,
) -> pd.DataFrame:
    """Replay :func:`_check_rows` with ``collective_model: exact`` (``runs/<config>-exact``) and
    return, per row, the study model's and exact's step and all-to-all times and the relative error."""
    rows = []
    check = list(_check_rows(cfg, results).itertuples())
    jobs: list[_Job] = [
        (
            cfg,
            r.topology,
            r.nodes,
            _placement_overrides(cfg, r.placement, r.router),
            {"routing_trace": traces[r.router].window.relative_to(out_path).as_posix()},
            out_path / "runs" / (_config_name(r.topology, r.nodes, r.router, r.placement) + "-exact"),
            out_path,
            "exact",
        )
        for r in check
    ]
    _run_side_by_side(jobs, note, done / total)
    for r, job in zip(check, jobs, strict=True):
        note(f"replay {job[5].name}", done / total)
        summary = _run_one(*job)
        exact = _row(summary)
        rows.append(
            {
                "topology": r.topology,
                "nodes": r.nodes,
                "router": r.router,
                "placement": r.placement,
                "collective_model": r.collective_model,
                "step_time_s": r.step_time_s,
                "exact_step_time_s": exact["step_time_s"],
                "step_error": r.step_time_s / exact["step_time_s"] - 1,
                "alltoall_s": r.alltoall_s,
                "exact_alltoall_s": exact["alltoall_s"],
                "alltoall_error": (r.alltoall_s / exact["alltoall_s"] - 1) if exact["alltoall_s"] else math.nan,
            }
        )
        done += 1
    return pd.DataFrame(
        rows,
        columns=[
            "topology",
            "nodes",
            "router",
            "placement",
            "collective_model",
            "step_time_s",
            "exact_step_time_s",
            "step_error",
            "alltoall_s",
            "exact_alltoall_s",
            "alltoall_error",
        ],
    )


def run_study(
    cfg: StudyConfig, out: str | Path, progress: Progress | None = None, *, force: bool = False
) -> StudyResult:
    """Run the whole study into ``out`` (resumable; ``force`` replaces another netsim folder there)
    and write its report."""
    from netsim.io import claim_dir

    note = progress or (lambda _what, _f: None)
    out_path = claim_dir(out, kind="study", force=force)
    n_runs = len(cfg.topologies) * len(cfg.nodes) * (len(cfg.routers) * len(cfg.placements) + len(cfg.locality))
    n_check = (
        len(cfg.topologies) * len(set(cfg.nodes) & set(cfg.exact_check)) * len(cfg.routers)
        if cfg.collective_model != "exact" and "contiguous" in cfg.placements
        else 0
    )
    total = len(cfg.routers) + n_runs + n_check
    traces: dict[str, LabTrace] = {}
    # the routers' lab runs are independent: trained side by side (netsim.studies.parallel), all at
    # once when there is more than one core (three equal runs on two workers would take two rounds)
    note(f"router lab: {', '.join(cfg.routers)}", 0.0)
    labs = [_lab_config(cfg, r) for r in cfg.routers]
    train_labs(labs, out_path, workers=len(labs) if cores() > 1 else 1, require_converged=cfg.require_converged)
    for i, router in enumerate(cfg.routers):
        note(f"router lab: {router}", i / total)
        traces[router] = _lab_trace(cfg, router, out_path)
    results = pd.DataFrame(_replays(cfg, out_path, traces, note, len(cfg.routers), total))
    check = exact_model_check(cfg, out_path, results, traces, note, len(cfg.routers) + n_runs, total)
    note("report", (total - 1) / total)
    loads = {r: lab_load_by_step(t.full) for r, t in traces.items()}
    conv = convergence_table(traces)
    caps = capacity_table(cfg, traces)
    write_table(caps, out_path, "capacity")
    conclusion = conclude(results, cfg) + model_check_lines(check) + convergence_lines(conv)
    write_table(results, out_path, "results")
    write_table(conv, out_path, "convergence")
    write_table(check, out_path, "model_check")
    write_report(out_path, cfg, results, loads, conclusion, conv, caps, check)
    note("done", 1.0)
    return StudyResult(out_path, results, conclusion)


def _per_node(summary: dict[str, Any]) -> int:
    ranks = int(summary.get("num_ranks") or 0)
    nodes = int(summary.get("num_nodes") or 0)
    return ranks // nodes if ranks and nodes else 8


def capacity_table(cfg: StudyConfig, traces: dict[str, LabTrace]) -> pd.DataFrame:
    """Per router: no capacity, 1.25, 1.0 and LocMoE's Theorem-1 count on its converged window, at the
    replayed workload's tokens per rank and hidden size (expert compute and dispatch bytes per layer)."""
    from netsim.config.workload import load_workload

    tokens, hidden = _route_tokens(cfg)
    spec = load_workload(cfg.workload, cfg.workload_overrides)
    moe = spec.model.moe
    bpe = float(moe.dispatch_bytes_per_element if moe and moe.dispatch_bytes_per_element else spec.model.bpe)
    rows = []
    for t in traces.values():
        rows += capacity_rows(
            t, ["none", 1.25, 1.0, "theorem1"], tokens_per_rank=tokens, hidden=hidden, bytes_per_element=bpe
        )
    return pd.DataFrame(rows)


def check_config(cfg: StudyConfig) -> None:
    """Reject an unusable study configuration with a one-line error."""
    from netsim.moe.routers import router_names
    from netsim.topology import list_presets

    presets = list_presets()
    for t in cfg.topologies:
        if t not in presets:
            raise NetsimError(f"unknown topology preset {t!r}; presets: {', '.join(presets)}", field="--topologies")
    for n in cfg.nodes:
        if not 1 <= n <= MAX_NODES:
            raise NetsimError(f"node count {n} must be in 1..{MAX_NODES:,}", field="--nodes")
    known = set(router_names())
    for r in cfg.routers:
        if r not in known:
            raise NetsimError(f"unknown router {r!r}; routers: {', '.join(sorted(known))}", field="--routers")
    for f in cfg.locality:
        if not 0.0 <= f <= 1.0:
            raise NetsimError(f"locality fraction {f} must be in [0, 1]", field="--locality")
    for r, spec in cfg.capacity.items():
        parse_capacity(spec, field=f"--capacity {r}")
    for r, n in cfg.overlap.items():
        if not isinstance(n, int) or n < 1:
            raise NetsimError(f"overlap slices must be an integer >= 1 (got {n!r})", field=f"--overlap {r}")
    from netsim.collectives.executor import MODELS

    if cfg.collective_model not in ("auto", *MODELS):
        raise NetsimError(
            f"unknown collective model {cfg.collective_model!r}; allowed: auto, {', '.join(MODELS)}",
            field="--collective-model",
        )
