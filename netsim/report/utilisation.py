"""Link utilisation figures that mean something in a flow-level model.

The engine shares bandwidth max-min fairly: a flow reaches its bottleneck link's full rate the
moment it starts, so the *instantaneous* peak utilisation of a link (the ``links`` table's
``peak_utilization``) is 100% as soon as any flow had it as its bottleneck, even for a link that
carried 131 kB in a 16 ms step.  The report therefore shows:

* **mean utilisation**: bytes carried over what the link could carry in the whole run
  (``bytes / (effective capacity x makespan)``);
* **peak utilisation**, per tier: the tier's busiest window of :data:`PEAK_WINDOW_FRACTION`
  of the run (1%, at least :data:`MIN_WINDOW_S`): the most bytes the tier's links carried in
  any such window, over what they could carry in it (``tier_timeseries``: bytes per tier and
  engine interval, spread evenly over the interval, which is exact because rates change only at
  engine events);
* per link: the mean utilisation and the utilisation *while busy*
  (``bytes / (effective capacity x busy_s)``: how hard the link was driven when it was used).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["MIN_WINDOW_S", "PEAK_WINDOW_FRACTION", "busy_utilization", "peak_window_s", "tier_peaks", "tier_table"]

#: The peak window as a fraction of the run's makespan.
PEAK_WINDOW_FRACTION = 0.01

#: The shortest peak window (s): a few collective latencies, longer than any flow's start-up.
MIN_WINDOW_S = 10e-6


def peak_window_s(makespan_s: float) -> float:
    """The window of the windowed peak for a run of ``makespan_s`` seconds."""
    return max(PEAK_WINDOW_FRACTION * makespan_s, MIN_WINDOW_S)


def _busiest_window(t0: np.ndarray, t1: np.ndarray, nbytes: np.ndarray, window_s: float) -> float:
    """Most bytes in any window of ``window_s`` of a piecewise-constant rate: disjoint intervals
    ``[t0, t1)`` (engine intervals) carrying ``nbytes`` each.  The cumulative bytes ``B`` are
    piecewise linear, so the maximum of ``B(t + w) - B(t)`` is at a ``t`` where ``t`` or ``t + w``
    is an interval boundary."""
    order = np.argsort(t0, kind="mergesort")
    t0, t1, nbytes = t0[order], np.maximum(t1[order], t0[order]), nbytes[order]
    before = np.concatenate([[0.0], np.cumsum(nbytes)[:-1]])
    knots = np.column_stack([t0, t1]).ravel()  # non-decreasing: the intervals are disjoint
    cum = np.column_stack([before, before + nbytes]).ravel()
    starts = np.concatenate([knots, knots - window_s])
    gained = np.interp(starts + window_s, knots, cum) - np.interp(starts, knots, cum)
    return float(gained.max(initial=0.0))


def tier_peaks(ts: pd.DataFrame, window_s: float) -> dict[tuple[str, str], float]:
    """Per (network, tier): the windowed peak utilisation (module doc) from ``tier_timeseries``."""
    out: dict[tuple[str, str], float] = {}
    if ts is None or ts.empty:
        return out
    for (network, tier), g in ts.groupby(["network", "tier"], sort=True):
        cap = float(g["capacity_Bps"].max())
        if cap <= 0:
            continue
        t0, t1 = g["t0_s"].to_numpy(float), g["t1_s"].to_numpy(float)
        best = _busiest_window(t0, t1, g["bytes"].to_numpy(float), window_s)
        out[(str(network), str(tier))] = best / (cap * window_s)
    return out


def busy_utilization(links: pd.DataFrame) -> pd.Series:
    """Per link: bytes over what it could carry while busy (0 for a link never used)."""
    cap = links["effective_capacity_Bps"] if "effective_capacity_Bps" in links else links["capacity_Bps"]
    denom = cap.astype(float) * links["busy_s"].astype(float)
    return (links["bytes"].astype(float) / denom.where(denom > 0, np.inf)).fillna(0.0)


def tier_table(links: pd.DataFrame, ts: pd.DataFrame | None = None, makespan_s: float | None = None) -> pd.DataFrame:
    """Per (network, tier): link count, capacity, bytes, mean of the links' mean utilisation and
    the windowed peak utilisation (NaN without a ``tier_timeseries``); ``window_s`` the window."""
    df = links.copy()
    df["network"] = df["network"].astype(str)
    df["tier"] = df["tier"].astype(str)
    out = (
        df.groupby(["network", "tier"], sort=True)
        .agg(
            links=("link", "size"),
            capacity_Bps=("capacity_Bps", "sum"),
            bytes=("bytes", "sum"),
            mean_utilization=("mean_utilization", "mean"),
        )
        .reset_index()
    )
    if ts is not None and not ts.empty:
        span = makespan_s if makespan_s is not None else float(ts["t1_s"].max())
        window = peak_window_s(span)
        peaks = tier_peaks(ts, window)
        out["peak_utilization"] = [peaks.get((n, t), 0.0) for n, t in zip(out["network"], out["tier"], strict=True)]
        out["window_s"] = window
    else:
        out["peak_utilization"] = np.nan
        out["window_s"] = np.nan
    return out
