"""Layout search: a workload's parallel layouts on one cluster, screened, simulated and ranked.

After "what does this layout cost me?" a cluster designer asks "which layout is best on this
cluster?".  This study answers it with the simulator itself.  It enumerates the layouts of the
candidate lists (:class:`LayoutSpace`: tensor, pipeline, context and expert parallel sizes,
virtual pipeline chunks, micro-batch size, recomputation) at the scenario's cluster and global
batch, and screens each one before anything is simulated:

1. ``invalid``: the workload builder refuses it, for example a size that does not divide the
   heads, the layers or the global batch, or expert parallelism that does not fit the
   data-parallel ranks.  Its one-line reason is kept;
2. ``oom``: the worst rank of netsim's memory tally (:mod:`netsim.workload.memory`) does not fit
   in the accelerator's memory.  The shortfall is kept;
3. ``dominated``: the same layout already fits with a recomputation that comes earlier in the
   list.  The list goes from the least recomputation to the most.  Recomputation only adds
   work, so the fitting variant that recomputes least is at least as fast.

The rest (``ran``, or ``failed`` when the simulation refuses it) run as one sweep
(:mod:`netsim.sweep`): one run directory per layout, resumable, in a process pool.  They are
ranked by step time.  Every layout trains the same global batch, so a shorter step is
proportionally more tokens per second.  The data-parallel size is the GPUs over TP x PP x CP.

Besides the step, each ranked layout gets two throughput figures:
- tokens per second per GPU;
- MFU by PaLM's convention: ``6 N + 12 L H Q T`` FLOPs per token
  (:func:`netsim.validation.training.palm_flops`) over the accelerator's dense peak in the
  model's dtype.

The output folder holds:
- ``layouts.csv``: every candidate with its sizes, status, reason, memory, step, throughput and
  rank;
- ``report.md`` and ``report.html`` (:mod:`netsim.studies.layouts_report`), with
  ``figures/ranking.png``: the ranking, what was screened out and why, and the scenario's own
  layout against the best;
- ``sweep/``: the sweep of the layouts that ran (``points/<id>/`` run directories,
  ``results.csv``).

The same scenario and space give byte-identical ``layouts.csv`` and reports: nothing in
them depends on wall-clock time or on the order in which the workers finish.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from netsim.config.common import override_items
from netsim.errors import NetsimError, SpecError
from netsim.workload.recompute import RECOMPUTE

__all__ = ["Candidate", "Layout", "LayoutSearch", "LayoutSpace", "default_space", "search_layouts"]

#: the recomputation modes tried by default, least recomputation first
DEFAULT_RECOMPUTE = ("none", "selective", "full")
#: micro-batch sizes tried by default
DEFAULT_MBS = (1, 2, 4)
#: at most this many pipeline stages by default
DEFAULT_MAX_PP = 16
#: at most this many layouts simulated unless raised (``max_runs``)
DEFAULT_MAX_RUNS = 64

_STATUSES = ("ran", "failed", "oom", "dominated", "invalid")
#: the dimensions of a search space (:class:`LayoutSpace`), in its order
_DIMENSIONS = ("tp", "pp", "cp", "ep", "vp", "mbs", "recompute")


@dataclass(frozen=True)
class Layout:
    """One parallel layout: sizes, virtual pipeline chunks, micro-batch size, recomputation."""

    tp: int
    pp: int
    cp: int
    ep: int
    vp: int
    mbs: int
    recompute: str

    @property
    def label(self) -> str:
        """``TP4 PP2 CP1 EP1 VP1 MBS1 none``."""
        return f"TP{self.tp} PP{self.pp} CP{self.cp} EP{self.ep} VP{self.vp} MBS{self.mbs} {self.recompute}"

    @property
    def shape(self) -> tuple[int, ...]:
        """Everything but the recomputation (the dominance rule compares within one shape)."""
        return (self.tp, self.pp, self.cp, self.ep, self.vp, self.mbs)

    def values(self, base_schedule: str) -> dict[str, Any]:
        """The workload fields this layout sets (dotted ``--set`` paths), in a fixed order."""
        schedule = base_schedule
        if self.vp > 1:
            schedule = "interleaved-1f1b"
        elif base_schedule == "interleaved-1f1b":
            schedule = "1f1b"
        return {
            "workload.parallelism.tp": self.tp,
            "workload.parallelism.pp": self.pp,
            "workload.parallelism.cp": self.cp,
            "workload.parallelism.ep": self.ep,
            "workload.schedule.name": schedule,
            "workload.schedule.virtual_chunks": self.vp,
            "workload.micro_batch_size": self.mbs,
            "workload.training.recompute": self.recompute,
        }


@dataclass(frozen=True)
class LayoutSpace:
    """The candidate values of each layout dimension (the search is their product)."""

    tp: tuple[int, ...]
    pp: tuple[int, ...]
    cp: tuple[int, ...]
    ep: tuple[int, ...]
    vp: tuple[int, ...]
    mbs: tuple[int, ...]
    recompute: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "ep", "vp", "mbs"):
            values = getattr(self, name)
            if not values:
                raise NetsimError("needs at least one value", field=f"--{name}")
            bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < 1]
            if bad:
                raise NetsimError(f"sizes are whole numbers >= 1 (got {bad[0]!r})", field=f"--{name}")
            if len(set(values)) != len(values):
                raise NetsimError(f"a value is listed twice ({', '.join(map(str, values))})", field=f"--{name}")
        if not self.recompute:
            raise NetsimError("needs at least one recomputation mode", field="--recompute")
        if len(set(self.recompute)) != len(self.recompute):
            raise NetsimError("a mode is listed twice", field="--recompute")

    def layouts(self) -> list[Layout]:
        """Every combination, in a fixed order; without a pipeline there are no virtual chunks
        (a PP1 layout is tried once, with VP1, whatever the VP list holds)."""
        out: dict[Layout, None] = {}
        for tp, pp, cp, ep, vp, mbs, rc in itertools.product(
            self.tp, self.pp, self.cp, self.ep, self.vp, self.mbs, self.recompute
        ):
            out[Layout(tp, pp, cp, ep, vp if pp > 1 else 1, mbs, rc)] = None
        return list(out)


def _powers_of_two(limit: int) -> tuple[int, ...]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return tuple(out)


def default_space(
    workload: Any,
    gpus_per_node: int,
    gpus: int,
    *,
    tp: Sequence[int] | None = None,
    pp: Sequence[int] | None = None,
    cp: Sequence[int] | None = None,
    ep: Sequence[int] | None = None,
    vp: Sequence[int] | None = None,
    mbs: Sequence[int] | None = None,
    recompute: Sequence[str] | None = None,
) -> LayoutSpace:
    """The search space, with defaults for the lists not given.

    Defaults: TP the powers of two up to a server's GPUs (tensor parallelism inside the
    NVLink/HCCS domain), PP the powers of two up to 16 and the layers, CP and VP the workload's
    own, EP (MoE only) the powers of two up to the experts and the GPUs, micro-batch sizes
    1, 2 and 4, recomputation none, selective, full.
    """
    model = workload.model
    par = workload.parallelism
    moe = model.moe is not None and bool(model.moe_layers())
    if ep is not None and not moe and tuple(ep) != (1,):
        raise NetsimError("the workload has no experts: expert parallelism can only be 1", field="--ep")
    for name in recompute or ():
        if name not in RECOMPUTE:
            allowed = ", ".join(RECOMPUTE.names())
            raise NetsimError(f"unknown recompute mode {name!r}; allowed: {allowed}", field="--recompute")
    return LayoutSpace(
        tp=tuple(tp) if tp is not None else _powers_of_two(gpus_per_node),
        pp=tuple(pp) if pp is not None else _powers_of_two(min(DEFAULT_MAX_PP, model.layers, gpus)),
        cp=tuple(cp) if cp is not None else (par.cp,),
        ep=tuple(ep) if ep is not None else (_powers_of_two(min(model.moe.experts, gpus)) if moe else (1,)),
        vp=tuple(vp) if vp is not None else (workload.schedule.virtual_chunks,),
        mbs=tuple(mbs) if mbs is not None else DEFAULT_MBS,
        recompute=tuple(recompute) if recompute is not None else DEFAULT_RECOMPUTE,
    )


@dataclass
class Candidate:
    """One layout of the search and what became of it (module doc: the statuses)."""

    index: int
    layout: Layout
    status: str = "invalid"
    reason: str = ""
    dp: int | None = None
    peak_memory_bytes: float | None = None
    capacity_bytes: float | None = None
    fits: bool | None = None
    point_id: str = ""
    step_time_s: float | None = None
    tokens_per_s_per_gpu: float | None = None
    mfu: float | None = None
    compute_share: float | None = None
    overlap_share: float | None = None
    exposed_comm_share: float | None = None
    idle_share: float | None = None
    rank: int | None = None
    workload: Any = field(default=None, repr=False, compare=False)

    def row(self) -> dict[str, Any]:
        """A flat record (``layouts.csv``)."""
        lay = self.layout
        return {
            "rank": self.rank,
            "layout": lay.label,
            "tp": lay.tp,
            "pp": lay.pp,
            "cp": lay.cp,
            "ep": lay.ep,
            "dp": self.dp,
            "vp": lay.vp,
            "mbs": lay.mbs,
            "recompute": lay.recompute,
            "status": self.status,
            "reason": self.reason,
            "peak_memory_gib": None if self.peak_memory_bytes is None else self.peak_memory_bytes / 2**30,
            "fits": self.fits,
            "hbm_share": (
                self.peak_memory_bytes / self.capacity_bytes
                if self.peak_memory_bytes is not None and self.capacity_bytes
                else None
            ),
            "step_time_s": self.step_time_s,
            "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
            "mfu": self.mfu,
            "compute_share": self.compute_share,
            "overlap_share": self.overlap_share,
            "exposed_comm_share": self.exposed_comm_share,
            "idle_share": self.idle_share,
            "point_id": self.point_id,
        }


@dataclass
class _Base:
    """The scenario the search varies: how to load it, and what it already fixes."""

    ref: Any  # what load_scenario takes: a path, None (the built-in scenario) or a mapping
    sets: list[str]
    source: str
    scenario: Any  # its ScenarioSpec, with the search's fixed items applied
    workload: Any  # its WorkloadSpec
    graph: Any
    compute: Any
    gpus: int
    gpus_per_node: int
    global_batch_size: int
    layout: Layout


def _gpus(graph: Any) -> tuple[int, int]:
    """(accelerators, the most any server has: the topology's ``accelerators_per_node``)."""
    count = sum(1 for _, d in graph.nodes(data=True) if d.get("kind") == "accelerator")
    return count, int(graph.graph.get("accelerators_per_node") or 1)


def _scenario(ref: Any, items: Sequence[str], source: str) -> Any:
    """The scenario ``ref`` with ``items`` applied (a mapping is named ``source`` in messages)."""
    from netsim.config.scenario import load_scenario

    if isinstance(ref, Mapping):
        return load_scenario(dict(ref), list(items), source=source)
    return load_scenario(ref, list(items))


def _load_base(ref: Any, sets: Sequence[str], source: str) -> _Base:
    from netsim.calibration.kernels import KernelTable
    from netsim.run import load_scenario_workload, workload_compute_model
    from netsim.topology import load_topology
    from netsim.workload.batch import batch_plan

    scenario = _scenario(ref, sets, source)
    graph = load_topology(
        scenario.resolve_path(scenario.topology), nodes=scenario.nodes, overrides=tuple(scenario.topology_overrides)
    )
    workload = load_scenario_workload(scenario)
    gpus, per_node = _gpus(graph)
    par = workload.parallelism
    base_layout = Layout(
        par.tp,
        par.pp,
        par.cp,
        par.ep,
        workload.schedule.virtual_chunks,
        workload.micro_batch_size,
        workload.training.recompute,
    )
    cells = par.tp * par.pp * par.cp
    if gpus % cells:
        raise SpecError(
            f"the scenario's own layout (TP{par.tp} x PP{par.pp} x CP{par.cp}) does not divide the {gpus} GPUs",
            source=workload.source,
            field="parallelism",
        )
    # the global batch as the base layout trains it, held fixed for every layout (a batch of
    # num_microbatches per replica, or one scaled per device, would change with the layout)
    gbs = batch_plan(workload, gpus // cells).global_batch_size
    fixed = [
        *sets,
        *override_items(
            {
                "workload.parallelism.dp": "auto",
                "workload.global_batch_size": int(gbs),
                "workload.batch_scaling": "fixed",
                "workload.batch_reference_devices": None,
            }
        ),
    ]
    # every candidate loads the scenario with ``fixed`` and its own sizes; the compute model
    # depends on neither (the accelerator, the model's dtype, the scenario's options)
    kernels = scenario.options.kernels
    table = KernelTable.load(scenario.resolve_path(kernels)) if kernels else None
    compute = workload_compute_model(graph, scenario, workload, table)
    return _Base(ref, fixed, source, scenario, workload, graph, compute, gpus, per_node, int(gbs), base_layout)


def _screen_one(base: _Base, cand: Candidate, allow_oom: bool) -> None:
    """Validate one candidate and tally its memory (module doc, steps 1 and 2)."""
    from netsim.run import load_scenario_workload
    from netsim.workload.graph import plan_memory

    lay = cand.layout
    items = [*base.sets, *override_items(lay.values(base.workload.schedule.name))]
    try:
        spec = _scenario(base.ref, items, base.source)
        workload = load_scenario_workload(spec)
        opts = spec.options
        memory = plan_memory(
            workload,
            base.graph,
            base.compute,
            seed=spec.seed,
            router=opts.router,
            routing_trace=spec.resolve_path(opts.routing_trace) if opts.routing_trace else None,
            routing_samples=1,
        )
    except NetsimError as exc:
        cand.status, cand.reason = "invalid", _reason(exc)
        return
    cand.workload = workload
    cand.dp = base.gpus // (lay.tp * lay.pp * lay.cp)
    cand.peak_memory_bytes = memory.peak.total
    cand.capacity_bytes = memory.capacity
    cand.fits = memory.fits
    if memory.fits:
        cand.status, cand.reason = "ran", ""
    elif allow_oom:  # the user asked to simulate what does not fit (the scenario's allow_oom is not enough)
        cand.status, cand.reason = "ran", f"does not fit (--allow-oom): {memory.shortfall()}"
    else:
        cand.status, cand.reason = "oom", f"does not fit: {memory.shortfall()}"


def _reason(exc: NetsimError) -> str:
    """An error's message with its field, without the file it came from (every candidate shares it)."""
    return f"{exc.field}: {exc.message}" if exc.field else exc.message


def _screen_layouts(
    base: _Base, space: LayoutSpace, progress: Callable[[int, int], None] | None = None, allow_oom: bool = False
) -> list[Candidate]:
    """Steps 1-3 of the module doc for every layout of ``space``; the ``ran`` ones are to simulate.
    With ``allow_oom`` a layout that does not fit is simulated too (the least recomputation of
    its shape that fits, or if none fits, the least recomputation)."""
    cands = [Candidate(i, lay) for i, lay in enumerate(space.layouts())]
    for c in cands:
        _screen_one(base, c, allow_oom)
        if progress is not None:
            progress(c.index + 1, len(cands))
    order = {rc: i for i, rc in enumerate(space.recompute)}
    least: dict[tuple[int, ...], Candidate] = {}
    for c in cands:
        if c.status != "ran":
            continue
        best = least.get(c.layout.shape)
        if best is None or (not c.fits, order[c.layout.recompute]) < (not best.fits, order[best.layout.recompute]):
            least[c.layout.shape] = c
    for c in cands:
        keep = least.get(c.layout.shape)
        if c.status == "ran" and keep is not c and keep is not None:
            if keep.fits:
                c.status, c.reason = "dominated", f"fits with recompute {keep.layout.recompute}, which recomputes less"
            else:
                c.status, c.reason = "dominated", f"recompute {keep.layout.recompute} is run instead (recomputes less)"
    return cands


@dataclass
class LayoutSearch:
    """What a search produced (module doc)."""

    out: Path
    candidates: list[Candidate]
    base_layout: Layout
    global_batch_size: int
    gpus: int
    space: LayoutSpace
    sweep_outcome: Any = None

    @property
    def ranked(self) -> list[Candidate]:
        """The simulated layouts, fastest first."""
        return sorted((c for c in self.candidates if c.rank is not None), key=lambda c: c.rank or 0)

    def counts(self) -> dict[str, int]:
        """Candidates per status, in :data:`_STATUSES` order."""
        n = Counter(c.status for c in self.candidates)
        return {s: n[s] for s in _STATUSES if n[s]}

    def base(self) -> Candidate | None:
        """The candidate with the scenario's own layout, if the space holds it."""
        return next((c for c in self.candidates if c.layout == self.base_layout), None)


def _sweep_mapping(base: _Base, runs: Sequence[Candidate], allow_oom: bool) -> dict[str, Any]:
    """The sweep of ``runs``: the base scenario with the search's fixed items, one zip group of
    every layout's fields (one sweep point per layout)."""
    rows = [c.layout.values(base.workload.schedule.name) for c in runs]
    zipped = {f: [row[f] for row in rows] for f in rows[0]}
    sets = [*base.sets, *override_items({"options.allow_oom": allow_oom})]
    data: dict[str, Any] = {"name": "layouts", "set": sets, "zip": [zipped]}
    if isinstance(base.ref, Mapping):
        data["scenario"] = dict(base.ref)
    elif base.ref is not None:
        data["scenario"] = str(Path(base.ref).resolve())
    return data


def _fill_results(base: _Base, runs: Sequence[Candidate], outcome: Any, points_dir: Path) -> None:
    from netsim.validation.training import palm_flops

    acc = dict(base.graph.graph.get("accelerator") or {})
    for cand, res in zip(runs, outcome.results, strict=True):
        cand.point_id = res.id
        if res.status != "ok":
            cand.status, cand.reason = "failed", res.error
            continue
        summary = json.loads((points_dir / res.id / "summary.json").read_text())
        step = float(summary["step_time_s"])
        tokens = float(summary["batch"]["global_batch_tokens"])
        gpus = int(summary["num_ranks"])
        cand.step_time_s = step
        cand.tokens_per_s_per_gpu = tokens / step / gpus
        spec = cand.workload
        peak = float((acc.get("peak_flops") or {}).get(spec.model.dtype, 0.0))
        if peak > 0:
            cand.mfu = palm_flops(spec, tokens / spec.model.seq_len) / step / gpus / peak
        parts = summary.get("breakdown_s") or {}
        cand.compute_share = float(parts.get("compute", 0.0)) / step
        cand.overlap_share = float(parts.get("overlap", 0.0)) / step
        cand.exposed_comm_share = float(parts.get("communication", 0.0)) / step
        cand.idle_share = float(parts.get("idle", 0.0)) / step
    ok = sorted((c for c in runs if c.step_time_s is not None), key=lambda c: (c.step_time_s, c.index))
    for i, c in enumerate(ok, start=1):
        c.rank = i


def search_layouts(
    ref: Any,
    sets: Sequence[str],
    out: str | Path,
    *,
    space: Mapping[str, Sequence[Any] | None] | None = None,
    max_runs: int = DEFAULT_MAX_RUNS,
    workers: int | None = None,
    reports: bool = False,
    allow_oom: bool = False,
    force: bool = False,
    source: str = "command line",
    progress: Callable[[str, int, int], None] | None = None,
) -> LayoutSearch:
    """Screen, simulate and rank the layouts of a scenario (module doc).

    Args:
        ref: the scenario: a file path, ``None`` for the built-in one, or a mapping.
        sets: ``--set`` items applied to the scenario before the search's own.
        out: the output folder (a ``study`` folder; resumed when it is one).
        space: candidate lists by dimension (``tp``, ``pp``, ``cp``, ``ep``, ``vp``, ``mbs``,
            ``recompute``); missing or None ones take :func:`default_space`'s defaults.
        max_runs: refuse to simulate more layouts than this (the screening says how many).
        workers: processes for the simulations (default: the CPU count).
        reports: write each run's report (figures, HTML) besides its tables.
        allow_oom: simulate layouts that do not fit in the accelerator's memory too (marked as
            such); without it they are screened out whatever the scenario's ``allow_oom``.
        force: replace an existing netsim folder of another kind at ``out``.
        progress: ``fn(phase, done, total)`` with phase ``screen`` or ``simulate``.

    Raises:
        NetsimError: bad input (one line), no layout that fits, or more than ``max_runs`` to run.
    """
    from netsim.io import check_output_dir, claim_dir
    from netsim.sweep import load_sweep, run_sweep

    check_output_dir(out, force=force, resume="study")
    if max_runs < 1:
        raise NetsimError(f"must be >= 1 (got {max_runs})", field="--max-runs")
    if workers is not None and workers < 1:
        raise NetsimError(f"must be >= 1 (got {workers})", field="--workers")
    base = _load_base(ref, sets, source)
    lists = dict(space or {})
    unknown = sorted(set(lists) - set(_DIMENSIONS))
    if unknown:
        raise NetsimError(f"unknown layout dimension {unknown[0]!r}; allowed: {', '.join(_DIMENSIONS)}", field="space")
    sp = default_space(base.workload, base.gpus_per_node, base.gpus, **lists)
    note = progress or (lambda _p, _d, _t: None)
    cands = _screen_layouts(base, sp, lambda d, t: note("screen", d, t), allow_oom)
    runs = [c for c in cands if c.status == "ran"]
    if not runs:
        raise NetsimError(_none_fit(cands))
    if len(runs) > max_runs:
        raise NetsimError(
            f"{len(runs)} layouts pass the screening, more than --max-runs {max_runs}; narrow the lists "
            "(--tp, --pp, --ep, --mbs, --recompute) or raise --max-runs",
            field="--max-runs",
        )
    out_path = claim_dir(out, kind="study", force=force)
    sweep = load_sweep(_sweep_mapping(base, runs, allow_oom), source=f"{source} (layout search)")
    outcome = run_sweep(
        sweep,
        out_path / "sweep",
        workers=workers,
        reports=reports,
        compare=False,
        progress=lambda d, t, _r: note("simulate", d, t),
        force=force,
    )
    _fill_results(base, runs, outcome, out_path / "sweep" / "points")
    result = LayoutSearch(out_path, cands, base.layout, base.global_batch_size, base.gpus, sp, outcome)
    write_search(result, base)
    return result


def _none_fit(cands: Sequence[Candidate]) -> str:
    n = Counter(c.status for c in cands)
    oom = [c for c in cands if c.status == "oom"]
    text = f"no layout of the {len(cands)} fits ({n['invalid']} invalid, {n['oom']} out of memory)"
    if oom:
        best = min(oom, key=lambda c: c.peak_memory_bytes or 0.0)
        text += f"; the closest, {best.layout.label}: {best.reason} (--allow-oom simulates them anyway)"
    else:
        first = next((c for c in cands if c.status == "invalid"), None)
        if first is not None:
            text += f"; e.g. {first.layout.label}: {first.reason}"
    return text


# ------------------------------------------------------------------------------------ writing


def search_table(result: LayoutSearch) -> pd.DataFrame:
    """Every candidate, ranked ones first (fastest first), then by status and index."""
    order = {s: i for i, s in enumerate(_STATUSES)}
    cands = sorted(result.candidates, key=lambda c: (c.rank is None, c.rank or 0, order.get(c.status, 99), c.index))
    table = pd.DataFrame([c.row() for c in cands])
    for col in ("rank", "dp"):
        table[col] = table[col].astype("Int64")
    return table


def write_search(result: LayoutSearch, base: _Base | None = None) -> None:
    """``layouts.csv``, ``report.md``, ``report.html`` and ``figures/`` into the output folder."""
    from netsim.io import atomic_file
    from netsim.studies.layouts_report import write_report

    table = search_table(result)
    with atomic_file(result.out / "layouts.csv") as f:
        table.to_csv(f, index=False, lineterminator="\n")
    scenario = None
    if base is not None:
        scenario = (
            f"{base.scenario.name} (topology {base.scenario.topology}, workload {base.workload.name}, "
            f"{result.gpus} GPUs)"
        )
    write_report(result, scenario)
