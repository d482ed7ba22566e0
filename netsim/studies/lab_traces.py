"""Routing traces for studies: trained in the router lab, checked for convergence, windowed, capped.

A study may only draw conclusions from routing that a trained router produces.  For each router
:func:`converged_trace`

1. trains the lab model with it (once; a finished ``lab/<router>/`` is reused), after refusing a
   lab configuration that cannot converge (:meth:`netsim.moe.lab.LabConfig.convergence_problem`);
2. judges the run's convergence (:mod:`netsim.moe.lab_check`), recomputed from its stored
   losses and routing trace (:func:`netsim.moe.lab.lab_convergence`) so that a reused run is
   judged by the current criterion (and its ``lab.json`` records that verdict), and, unless told
   otherwise, refuses with one line to go on from a router that has not converged;
3. keeps only the converged window (the final quarter of the steps, renumbered from 0): the
   untrained first steps, where a softmax gate sends nearly every token to one expert, never
   reach the replay;
4. re-applies the router's *replay capacity* (:func:`capped_trace`): the requested assignments
   (kept + dropped in the lab) of every source rank are rescaled to the replayed workload's
   tokens per rank and micro-batch (its capacity group) and cut at the per-expert capacity of
   that group: ``none``; a capacity factor ``cf`` (``ceil(cf * k * T / n)`` tokens); or
   ``theorem1``, LocMoE's Theorem-1 count at the replayed model's hidden size
   (:func:`netsim.moe.capacity.locmoe_capacity_tokens`).  The result is written with
   ``tokens_per_rank = T``, so the replay does not rescale it again.

:func:`capacity_effect` summarises what a capacity does to the work of one layer: tokens the
busiest expert computes, all-to-all bytes (dropless, i.e. kept tokens only, and padded, i.e.
capacity-sized buffers as frameworks with a fixed capacity send), and the drop rate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netsim.errors import NetsimError, SpecError
from netsim.io import write_json
from netsim.moe.capacity import locmoe_capacity_tokens
from netsim.moe.sources import rescale_rows
from netsim.moe.trace import RoutingTrace, read_routing_trace, write_routing_trace

__all__ = [
    "LabTrace",
    "capacity_effect",
    "capacity_rows",
    "capacity_tokens",
    "capped_trace",
    "converged_trace",
    "parse_capacity",
]


@dataclass(frozen=True)
class LabTrace:
    """A router's lab run as a study uses it."""

    router: str
    full: Path  # every step (for the training-curve figure)
    window: Path  # the converged window, capacity applied: what the replay reads
    convergence: dict[str, Any]


def parse_capacity(spec: str, *, field: str) -> str | float:
    """``none``, ``theorem1`` or a capacity factor > 0 (as a float)."""
    s = str(spec).strip().lower()
    if s in ("none", "theorem1"):
        return s
    try:
        cf = float(s)
    except ValueError:
        raise SpecError(f"capacity must be none, theorem1 or a factor > 0 (got {spec!r})", field=field) from None
    if not (cf > 0 and math.isfinite(cf)):
        raise SpecError(f"capacity factor must be > 0 (got {spec!r})", field=field)
    return cf


def capacity_tokens(
    cap: str | float, *, tokens: int, experts: int, top_k: int, hidden: int, delta: float = 0.03
) -> int | None:
    """Per-expert capacity of a group of ``tokens`` tokens (``None``: no limit)."""
    if cap == "none":
        return None
    if cap == "theorem1":
        return locmoe_capacity_tokens(experts, hidden, delta)
    return math.ceil(float(cap) * top_k * tokens / experts - 1e-9)


def capped_trace(trace: RoutingTrace, *, tokens_per_rank: int, capacity: int | None) -> RoutingTrace:
    """Requested assignments rescaled to ``tokens_per_rank`` per source rank, cut at ``capacity``."""
    records = []
    k = trace.meta.top_k
    for step, layer, mb, tok, drp in trace.iter_counts():
        req = tok + drp
        scaled = rescale_rows(req, np.full(req.shape[0], tokens_per_rank * k, dtype=np.int64))
        kept = scaled if capacity is None else np.minimum(scaled, capacity)
        records.append((step, layer, mb, kept, scaled - kept))
    meta = trace.meta
    extra = {**meta.extra, "replay_capacity_tokens": capacity, "replay_tokens_per_rank": tokens_per_rank}
    out = RoutingTrace.from_counts(
        records,
        type(meta)(
            meta.experts, meta.ep, meta.ranks_per_node, meta.hidden, meta.top_k, meta.router, extra, tokens_per_rank
        ),
    )
    out.source = trace.source
    return out


def capacity_effect(
    trace: RoutingTrace, *, hidden: int, bytes_per_element: float, capacity: int | None
) -> dict[str, float]:
    """Per (step, layer) means: busiest expert's tokens, dispatch bytes dropless and padded, drops.

    Dispatch bytes count every (token, slot) that leaves its rank for an expert (all of them,
    local ones included: the per-destination split is the replay's job); padded bytes send
    ``capacity`` slots per (source rank, expert), the buffer of a fixed-capacity framework.
    """
    busiest, dropless, padded, drop, req_total = [], [], [], [], []
    for _, _, _, tok, drp in trace.iter_counts():
        busiest.append(float(tok.sum(axis=0).max()))
        dropless.append(float(tok.sum()) * hidden * bytes_per_element)
        slots = tok.size * capacity if capacity is not None else float((tok + drp).sum())
        padded.append(float(slots) * hidden * bytes_per_element)
        req = float((tok + drp).sum())
        drop.append(float(drp.sum()) / req if req else 0.0)
        req_total.append(req)
    return {
        "busiest_expert_tokens": float(np.mean(busiest)),
        "dispatch_bytes_dropless": float(np.mean(dropless)),
        "dispatch_bytes_padded": float(np.mean(padded)),
        "drop_rate": float(np.mean(drop)),
        "requested_assignments": float(np.mean(req_total)),
    }


def capacity_rows(
    t: LabTrace, caps: list[str | float], *, tokens_per_rank: int, hidden: int, bytes_per_element: float
) -> list[dict[str, Any]]:
    """What each replay capacity in ``caps`` does to one router's converged window (one row each)."""
    lo, hi = t.convergence["window"]
    trace = read_routing_trace(t.full).window(int(lo), int(hi))
    rows = []
    for cap in caps:
        c = capacity_tokens(
            cap, tokens=tokens_per_rank, experts=trace.meta.experts, top_k=trace.meta.top_k, hidden=hidden
        )
        capped = capped_trace(trace, tokens_per_rank=tokens_per_rank, capacity=c)
        rows.append(
            {
                "router": t.router,
                "capacity": str(cap),
                "capacity_tokens": c,
                **capacity_effect(capped, hidden=hidden, bytes_per_element=bytes_per_element, capacity=c),
            }
        )
    return rows


def _rejudge(lab_dir: Path) -> dict[str, Any]:
    """The run's verdict by today's criterion; ``lab.json`` is updated when it recorded another."""
    from netsim.moe.lab import lab_convergence

    conv = lab_convergence(lab_dir)
    path = lab_dir / "lab.json"
    summary = json.loads(path.read_text())
    if summary.get("convergence") != json.loads(json.dumps(conv)):
        summary["convergence"] = conv
        tmp = path.with_name(".lab.json.tmp")
        write_json(summary, tmp)
        tmp.replace(path)
    return conv


def _lab_done(lab_dir: Path) -> bool:
    return all((lab_dir / f).is_file() for f in ("routing.parquet", "losses.parquet", "lab.json"))


def _check_convergeable(lab_cfg: Any, require_converged: bool) -> None:
    """Refuse (one line) a lab configuration that cannot converge, before training it."""
    problem = lab_cfg.convergence_problem()
    if problem is not None and require_converged:
        fld, msg = problem
        raise NetsimError(
            f"router lab for {lab_cfg.router}: {msg}",
            field=f"--lab-{fld.replace('_', '-')}" if fld == "steps" else f"lab.{fld}",
        )


def _train_lab_dir(job: tuple[Any, Path]) -> None:
    """One lab run into its directory (a worker process of :func:`train_labs`)."""
    from netsim.moe.lab import run_lab

    run_lab(job[0], job[1])


def train_labs(lab_cfgs: list[Any], out: Path, *, workers: int, require_converged: bool = True) -> int:
    """Train the lab runs ``out/lab/<router>/`` lacks side by side, up to ``workers`` processes
    (:func:`netsim.studies.parallel.side_by_side`); returns how many were trained.  Each run is
    seeded and sets its own torch threads (the lab's default: one), so its tables are the same as
    when trained alone; with one worker or one run nothing is done here and
    :func:`converged_trace` trains it."""
    from netsim.studies.parallel import side_by_side

    todo = [(c, out / "lab" / c.router) for c in lab_cfgs if not _lab_done(out / "lab" / c.router)]
    for c, _ in todo:
        _check_convergeable(c, require_converged)
    return len(todo) if side_by_side(_train_lab_dir, todo, workers) else 0


def converged_trace(
    lab_cfg: Any, out: Path, *, tokens_per_rank: int, capacity: str | float, hidden: int, require_converged: bool = True
) -> LabTrace:
    """Train (or reuse) ``lab_cfg``'s run under ``out/lab/<router>/`` and prepare its replay trace."""
    from netsim.moe.lab import run_lab

    router = lab_cfg.router
    lab_dir = out / "lab" / router
    full = lab_dir / "routing.parquet"
    if not _lab_done(lab_dir):
        _check_convergeable(lab_cfg, require_converged)
        run_lab(lab_cfg, lab_dir)
    conv = _rejudge(lab_dir)
    if require_converged and not conv["converged"]:
        raise NetsimError(
            f"router lab for {router} did not converge ({'; '.join(conv['reasons'])}); no conclusion "
            f"is drawn from it: train longer (--lab-steps) or see {lab_dir / 'lab.json'}",
            field="--lab-steps",
        )
    lo, hi = conv["window"]
    trace = read_routing_trace(full).window(int(lo), int(hi))
    k = trace.meta.top_k
    cap = capacity_tokens(capacity, tokens=tokens_per_rank, experts=trace.meta.experts, top_k=k, hidden=hidden)
    window = lab_dir / f"replay_{str(capacity).replace('.', 'p')}_{tokens_per_rank}.parquet"
    write_routing_trace(capped_trace(trace, tokens_per_rank=tokens_per_rank, capacity=cap), window)
    return LabTrace(router, full, window, conv)
