"""Whether a router-lab run has converged, and whether a lab configuration can.

A learned router starts collapsed: at initialisation the hidden states of all tokens are alike,
so a softmax gate sends nearly all of them to one expert (LocMoE, Li et al. 2024, section 4.2:
"SwitchMoE and LocMoE initialize from the allocation to a single expert", which is why their
analysis starts at epoch 200).  Only after the balancing losses have acted does the routing
reach the state that a trained production router is in.  A routing trace is therefore only
evidence about a router when it is taken from a *converged window*: the final quarter of the
run (:func:`final_window`), with statistics that no longer move.

:func:`convergence_report` compares the final window with the window before it:

* ``loss``: the mean task loss did not *rise* by more than ``loss_tol`` (10%, relative) between
  the two windows: a rising loss is a diverging or collapsing run.  A falling loss is not a
  failure.  The language-model loss of real training keeps falling for as long as it runs
  (Kaplan et al. 2020, "Scaling laws for neural language models": loss is a power law in the
  steps), so demanding that it stop falling demands a run longer than any real one; the question
  here is whether the *routing* has settled, which the routing tests below ask directly.  (At
  d = 256 in the LocMoE study's lab, Switch's drop rate, load CV and cross-node share hold still
  from about step 300 of 600 while its task loss still falls 11.9% between the last two
  quarters: docs, MoE section.)  The relative change is reported either way;
* ``routing``: the mean drop rate and cross-node share moved by at most ``share_tol``
  (absolute) and the expert-load CV by at most ``cv_tol`` (relative, against at least 0.1);
  a move within three standard errors of the difference of the two window means (per-step
  values, layers averaged) is sampling noise and also passes: a hash router's cross-node share
  at one sequence per rank jumps by 1/16 from step to step without anything being learned;
* ``collapse``: in the final window fewer than a quarter of the experts are unused and at most
  half of the assignments are dropped.

Each failed test becomes a reason in plain words; ``converged`` is true when there is none.

:func:`balanced_drop_rate` is the drop rate of a *perfectly balanced* top-k router with capacity
``ceil(cf * k * T / n)`` per capacity group of ``T`` tokens: each expert receives
Binomial(``k T``, ``1/n``) assignments and drops what exceeds the capacity.  It is the floor that
no router can beat at that group size; :func:`convergence_problem` refuses lab configurations
whose floor is above 10% (Switch Transformer reports drop rates of a few percent at capacity
factor 1.0-1.25 with large groups; Fedus et al. 2022, section 2.2) or whose run is too short for
two windows of :data:`MIN_WINDOW_STEPS` steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

__all__ = [
    "MAX_BALANCED_DROP",
    "MIN_WINDOW_STEPS",
    "balanced_drop_rate",
    "convergence_problem",
    "convergence_report",
    "final_window",
]

#: the final window (and the one before it) must hold at least this many steps
MIN_WINDOW_STEPS = 10
#: a configuration whose balanced-router drop floor exceeds this cannot reach "a few percent"
MAX_BALANCED_DROP = 0.10


def final_window(steps: int) -> tuple[int, int]:
    """``(first, last + 1)`` steps of the converged window: the final quarter of the run."""
    w = max(1, steps // 4)
    return steps - w, steps


def balanced_drop_rate(tokens: int, experts: int, capacity_factor: float | None, top_k: int = 1) -> float:
    """Expected drop rate of a perfectly balanced router (module docstring); 0 without capacity."""
    if capacity_factor is None or tokens <= 0:
        return 0.0
    m = tokens * top_k
    cap = math.ceil(capacity_factor * m / experts - 1e-9)
    k = np.arange(cap + 1, m + 1, dtype=np.float64)
    p = 1.0 / experts
    log_pmf = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1) + k * math.log(p) + (m - k) * math.log1p(-p)
    over = float(np.sum((k - cap) * np.exp(log_pmf)))
    return over * experts / m


def convergence_problem(
    *, steps: int, tokens_per_group: int, experts: int, capacity_factor: float | None, top_k: int = 1
) -> tuple[str, str] | None:
    """``(field, message)`` when a lab configuration cannot converge, else None."""
    need = 8 * MIN_WINDOW_STEPS
    if steps < need:
        return "steps", (
            f"{steps} steps are too few to judge convergence: the final quarter and the quarter "
            f"before it need >= {MIN_WINDOW_STEPS} steps each (use >= {need})"
        )
    floor = balanced_drop_rate(tokens_per_group, experts, capacity_factor, top_k)
    if floor > MAX_BALANCED_DROP:
        return "batch", (
            f"{tokens_per_group} tokens per rank and step give {experts} experts a capacity that "
            f"drops {floor:.0%} even when perfectly balanced (capacity factor {capacity_factor}); "
            f"raise batch x seq_len so that this floor is <= {MAX_BALANCED_DROP:.0%}"
        )
    return None


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    vals = np.array([r[key] for r in rows if key in r], dtype=np.float64)
    return float(np.nanmean(vals)) if vals.size and np.isfinite(vals).any() else float("nan")


def _stderr(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """Standard error of the window mean, from per-step values (layers averaged)."""
    by_step: dict[int, list[float]] = {}
    for r in rows:
        if key in r and math.isfinite(float(r[key])):
            by_step.setdefault(int(r["step"]), []).append(float(r[key]))
    vals = np.array([np.mean(v) for v in by_step.values()])
    return float(np.std(vals, ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else 0.0


def convergence_report(
    losses: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    *,
    experts: int,
    loss_tol: float = 0.10,
    share_tol: float = 0.03,
    cv_tol: float = 0.25,
) -> dict[str, Any]:
    """Compare the final window with the one before it (module docstring).

    ``losses``: one row per step with ``step`` and ``task_loss``; ``metrics``: one row per
    (step, layer) with ``step``, ``drop_rate``, ``expert_load_cv``, ``share_cross_node`` and
    ``unused_experts``.
    """
    steps = len(losses)
    lo, hi = final_window(steps)
    w = hi - lo
    prev = (max(0, lo - w), lo)
    out: dict[str, Any] = {"window": [lo, hi], "previous_window": list(prev), "reasons": []}
    reasons: list[str] = out["reasons"]
    if w < MIN_WINDOW_STEPS or prev[1] - prev[0] < MIN_WINDOW_STEPS:
        reasons.append(f"too few steps ({steps}) for two windows of {MIN_WINDOW_STEPS}")
    last_l = [r for r in losses if lo <= r["step"] < hi]
    prev_l = [r for r in losses if prev[0] <= r["step"] < prev[1]]
    last_m = [r for r in metrics if lo <= r["step"] < hi]
    prev_m = [r for r in metrics if prev[0] <= r["step"] < prev[1]]
    la, lb = _mean(prev_l, "task_loss"), _mean(last_l, "task_loss")
    out["task_loss"] = {"previous": la, "final": lb}
    if math.isfinite(la) and math.isfinite(lb) and la > 0:
        change = (lb - la) / la
        out["task_loss"]["relative_change"] = change
        limit = max(loss_tol, 3 * math.hypot(_stderr(prev_l, "task_loss"), _stderr(last_l, "task_loss")) / la)
        if change > limit:
            reasons.append(
                f"task loss rising ({change:+.1%} between the last two windows, tolerance {limit:.0%}): "
                "the run diverges"
            )
    for key, tol, rel in (
        ("drop_rate", share_tol, False),
        ("share_cross_node", share_tol, False),
        ("expert_load_cv", cv_tol, True),
    ):
        a, b = _mean(prev_m, key), _mean(last_m, key)
        out[key] = {"previous": a, "final": b}
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        limit = max(tol * max(abs(a), 0.1) if rel else tol, 3 * math.hypot(_stderr(prev_m, key), _stderr(last_m, key)))
        if abs(b - a) > limit:
            reasons.append(f"{key} still moving ({a:.3f} -> {b:.3f}, tolerance {limit:.3f})")
    unused, drop = _mean(last_m, "unused_experts"), _mean(last_m, "drop_rate")
    if math.isfinite(unused) and unused >= experts / 4:
        reasons.append(f"collapsed: {unused:.1f} of {experts} experts unused in the final window")
    if math.isfinite(drop) and drop > 0.5:
        reasons.append(f"collapsed: {drop:.0%} of the assignments dropped in the final window")
    out["converged"] = not reasons
    return out
