"""Figures of where each rank's step time goes: the per-rank breakdown and the step timeline.

The breakdown stacks compute / communication / overlap / idle per rank; a large run is reduced
to at most :data:`MAX_BARS` bars (per node, or contiguous rank groups).  The timeline draws
each rank stream's ops over time, for at most ``max_ranks`` ranks spread over the rank range.
Times are in s/ms/us chosen per figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from netsim.report.figure_kit import BREAKDOWN_COLORS, class_color, new_figure, ordered_classes, thin_ticks
from netsim.report.fmt import time_scale
from netsim.report.tables import BREAKDOWN, node_sort_key

#: Most bars a per-rank figure draws before aggregating.
MAX_BARS = 64


# ----------------------------------------------------------------------------- breakdown


def aggregate_breakdown(ranks: pd.DataFrame, max_bars: int = MAX_BARS) -> tuple[pd.DataFrame, str, str]:
    """Per-rank breakdown reduced to at most ``max_bars`` rows.

    Returns (frame with columns label, compute, communication, overlap, idle in seconds;
    x-axis label; a note describing the aggregation or '').
    """
    df = ranks.sort_values("rank", kind="mergesort").reset_index(drop=True)
    cols = {f"{c}_s": c for c in BREAKDOWN}
    values = df[list(cols)].astype(float).rename(columns=cols)
    n = len(df)
    if n <= max_bars:
        out = values.copy()
        out.insert(0, "label", [str(int(r)) for r in df["rank"]])
        return out, "rank", ""
    nodes = sorted(df["node"].unique(), key=node_sort_key)
    if 1 < len(nodes) <= max_bars:
        grouped = values.groupby(df["node"].to_numpy(), sort=False).mean()
        grouped = grouped.loc[nodes]
        out = grouped.reset_index(drop=True)
        out.insert(0, "label", [str(n_) for n_ in nodes])
        per = n / len(nodes)
        note = f"{n} ranks: each bar is the mean over the ranks of one node (about {per:.0f} ranks)."
        return out, "node (mean over its ranks)", note
    size = math.ceil(n / max_bars)
    group = np.arange(n) // size
    grouped = values.groupby(group).mean()
    ranks_arr = df["rank"].to_numpy()
    labels = []
    for g in range(int(group.max()) + 1):
        members = ranks_arr[group == g]
        labels.append(f"{int(members.min())}-{int(members.max())}")
    out = grouped.reset_index(drop=True)
    out.insert(0, "label", labels)
    note = f"{n} ranks: each bar is the mean over {size} consecutive ranks."
    return out, "ranks (mean over each group)", note


def fig_breakdown(ranks: pd.DataFrame, step_time_s: float | None) -> tuple[Figure | None, str]:
    """Stacked bars of compute / communication / overlap / idle per rank (or rank group)."""
    if ranks.empty:
        return None, ""
    agg, xlabel, note = aggregate_breakdown(ranks)
    total_max = float(agg[list(BREAKDOWN)].sum(axis=1).max())
    div, unit = time_scale(max(total_max, step_time_s or 0.0))
    width = min(14.0, max(6.5, 0.22 * len(agg) + 3))
    fig, (ax,) = new_figure(width, 4.2)
    x = np.arange(len(agg))
    bottom = np.zeros(len(agg))
    for comp in BREAKDOWN:
        vals = agg[comp].to_numpy(dtype=float) / div
        ax.bar(x, vals, bottom=bottom, width=0.8, color=BREAKDOWN_COLORS[comp], label=comp, edgecolor="none")
        bottom += vals
    if step_time_s:
        ax.axhline(step_time_s / div, color="black", linestyle="--", linewidth=1, label="step time")
    thin_ticks(ax, list(x), list(agg["label"]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"time ({unit})")
    ax.set_title("Per-rank time breakdown")
    ax.set_xlim(-0.6, len(agg) - 0.4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig, note


# ----------------------------------------------------------------------------- timeline


def pick_ranks(ranks: Sequence[int], most: int) -> list[int]:
    """At most ``most`` ranks spread evenly over the sorted ``ranks`` (first and last included)."""
    ordered = sorted(set(int(r) for r in ranks))
    if len(ordered) <= most:
        return ordered
    idx = np.unique(np.linspace(0, len(ordered) - 1, most).round().astype(int))
    return [ordered[i] for i in idx]


def _stream_key(stream: str) -> tuple[int, str]:
    return (0 if stream == "compute" else 1, stream)


#: Most rows (rank streams) the timeline figure draws.
MAX_TIMELINE_ROWS = 48


def fig_timeline(ops: pd.DataFrame, *, max_ranks: int = 8) -> tuple[Figure | None, str]:
    """Ops per rank and stream as horizontal bars over time (a Gantt chart of the step).

    Shows at most ``max_ranks`` ranks, fewer when their streams would exceed
    :data:`MAX_TIMELINE_ROWS` rows.
    """
    if ops.empty:
        return None, ""
    all_ranks = ops["rank"].astype(int).unique()
    streams_per_rank = int(ops.groupby("rank")["stream"].nunique().max())
    fit = max(1, MAX_TIMELINE_ROWS // max(1, streams_per_rank))
    shown = pick_ranks(list(all_ranks), min(max_ranks, fit))
    df = ops[ops["rank"].astype(int).isin(shown)].copy()
    df["rank"] = df["rank"].astype(int)
    df["stream"] = df["stream"].astype(str)
    df["color_key"] = np.where(
        df["kind"].astype(str) == "compute", "compute", df["traffic_class"].fillna("other").astype(str)
    )
    df.loc[df["color_key"].isin(["", "nan", "None"]), "color_key"] = "other"
    rows: list[tuple[int, str]] = []
    labels: list[str] = []
    for rank in shown:
        sub = df[df["rank"] == rank]
        device = str(sub["device"].iloc[0]) if len(sub) else str(rank)
        for stream in sorted(sub["stream"].unique(), key=_stream_key):
            rows.append((rank, stream))
            labels.append(f"{device} {stream}")
    row_of = {key: i for i, key in enumerate(rows)}
    t_max = float(df["end_s"].max()) if len(df) else 0.0
    div, unit = time_scale(t_max)
    height = min(14.0, 1.4 + 0.32 * len(rows))
    fig, (ax,) = new_figure(11.0, height)
    ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
    df["row"] = [row_of[(r, s)] for r, s in zip(df["rank"], df["stream"], strict=True)]
    keys = ["compute", *ordered_classes([k for k in df["color_key"].unique() if k != "compute"])]
    for key in keys:
        part = df[df["color_key"] == key]
        if part.empty:
            continue
        color = BREAKDOWN_COLORS["compute"] if key == "compute" else class_color(key)
        for row, grp in part.groupby("row", sort=True):
            starts = grp["start_s"].to_numpy(dtype=float) / div
            widths = (grp["end_s"].to_numpy(dtype=float) - grp["start_s"].to_numpy(dtype=float)) / div
            ax.broken_barh(
                list(zip(starts, widths, strict=True)),
                (float(row) - 0.4, 0.8),
                facecolors=color,
                edgecolor="none",
                alpha=0.9,
            )
    ax.set_yticks(list(range(len(rows))))
    ax.set_yticklabels(labels, fontsize=8 if len(rows) <= 32 else 6)
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:  # a line between ranks
            ax.axhline(i - 0.5, color="#b0b0b0", linewidth=0.6)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, t_max / div if t_max > 0 else 1)
    ax.set_xlabel(f"time since the start of the first step ({unit})")
    ax.set_ylabel("rank stream")
    ax.set_title("Step timeline")
    handles = [
        Patch(color=BREAKDOWN_COLORS["compute"] if k == "compute" else class_color(k), label=k)
        for k in keys
        if (df["color_key"] == k).any()
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    note = ""
    if len(shown) < len(all_ranks):
        note = (
            f"{len(all_ranks)} ranks: the timeline shows {len(shown)} of them, evenly spread "
            f"(ranks {', '.join(str(r) for r in shown)})."
        )
    return fig, note
