"""Matplotlib figures of one run, drawn from its result tables and summary.

Every function takes DataFrames / the summary dict and returns a :class:`matplotlib.figure.Figure`
(or ``None`` when there is nothing to draw), built without pyplot so no global figure state is
touched and no GUI backend is needed.  :func:`png_bytes` renders a figure with the Agg canvas
under matplotlib's default style and with the PNG ``Software`` text chunk removed, so the same
data gives the same bytes.

Axes carry units: times in s/ms/us chosen per figure, bytes in decimal B..PB, utilisation in %.
Large runs are reduced for legibility: the per-rank breakdown is aggregated to at most
:data:`MAX_BARS` bars (per node, or contiguous rank groups), the timeline shows at most
``max_ranks`` ranks spread over the rank range.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from netsim.report.fmt import byte_scale, fmt_pct, time_scale
from netsim.report.tables import BREAKDOWN, TRAFFIC_CLASSES, node_sort_key
from netsim.report.utilisation import busy_utilization, tier_table

#: Most bars a per-rank figure draws before aggregating.
MAX_BARS = 64

BREAKDOWN_COLORS = {
    "compute": "#4C72B0",
    "communication": "#DD8452",
    "overlap": "#55A868",
    "idle": "#C7C7C7",
}

_CLASS_COLORS = {
    "dp": "#1f77b4",
    "pp": "#9467bd",
    "ep": "#d62728",
    "tp": "#2ca02c",
    "storage": "#8c564b",
    "checkpoint": "#e377c2",
    "other": "#7f7f7f",
}
_EXTRA_COLORS = ("#bcbd22", "#17becf", "#ff7f0e", "#aec7e8", "#98df8a", "#c5b0d5", "#c49c94")
PHASE_ORDER = ("fwd-dispatch", "fwd-combine", "bwd-dispatch", "bwd-combine")


def class_color(name: str) -> str:
    """A fixed colour for a traffic class (unknown names get a colour from a stable hash)."""
    if name in _CLASS_COLORS:
        return _CLASS_COLORS[name]
    h = sum((i + 1) * ord(c) for i, c in enumerate(name))
    return _EXTRA_COLORS[h % len(_EXTRA_COLORS)]


def ordered_classes(names: Sequence[str]) -> list[str]:
    """Traffic classes in canonical order (dp, pp, ep, tp, storage, checkpoint), then the rest sorted."""
    known = [c for c in TRAFFIC_CLASSES if c in names]
    return known + sorted(set(names) - set(known))


def png_bytes(fig: Figure, *, dpi: int = 110) -> bytes:
    """Render ``fig`` to PNG bytes deterministically (no timestamp or software metadata)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "netsim", "path.simplify": True,
                                "figure.autolayout": False, "figure.constrained_layout.use": False}):
        engine = fig.get_layout_engine()
        if engine is not None:  # lay out once, then save with a single draw
            engine.execute(fig)
            # no engine at all (not the "none" placeholder, which makes savefig draw the
            # whole figure once more, unrendered, before the real draw: a third of the time)
            fig.set_layout_engine(None)
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


#: figures waiting to be rendered by forked workers (:func:`render_all`), read by index
_PENDING: list[Figure] = []


def _render_pending(index: int) -> bytes:
    return png_bytes(_PENDING[index])


def render_all(figures: Mapping[str, Figure], *, workers: int | None = None) -> dict[str, bytes]:
    """Render figures to PNG bytes, in name order (file name -> bytes).

    Rendering (layout and rasterising) is most of a report's time; with more than one CPU and
    ``fork`` available, the figures are rendered by forked worker processes (they inherit the
    figures, nothing is pickled but the PNG bytes; at most ``workers``, default the CPUs this
    process may use, capped at 4).  The bytes are the same either way."""
    import os

    names = sorted(figures)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = min(workers if workers is not None else min(cpus, 4), len(names))
    if n > 1:
        import multiprocessing as mp

        if "fork" in mp.get_all_start_methods() and not mp.current_process().daemon:  # daemons may not fork
            _PENDING[:] = [figures[k] for k in names]
            try:
                with mp.get_context("fork").Pool(n) as pool:
                    rendered = pool.map(_render_pending, range(len(names)), chunksize=1)
            finally:
                _PENDING.clear()
            return dict(zip(names, rendered, strict=True))
    return {name: png_bytes(figures[name]) for name in names}


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Any]]:
    """A figure with ``ncols`` axes side by side, under matplotlib's default style."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, axes


def _thin_ticks(
    ax: Any, positions: Sequence[float], labels: Sequence[str], axis: str = "x", most: int = 32
) -> None:
    step = max(1, math.ceil(len(positions) / most))
    pos = list(positions)[::step]
    lab = list(labels)[::step]
    if axis == "x":
        ax.set_xticks(pos)
        if len(pos) > 12:
            ax.set_xticklabels(lab, rotation=90, fontsize=8)
        elif sum(len(str(x)) for x in lab) > 60:
            ax.set_xticklabels(lab, rotation=30, ha="right", fontsize=8)
        else:
            ax.set_xticklabels(lab, fontsize=8)
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels(lab, fontsize=8)


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
    _thin_ticks(ax, list(x), list(agg["label"]))
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


# ----------------------------------------------------------------------------- all-to-all


def _phases(values: Sequence[str]) -> list[str]:
    known = [p for p in PHASE_ORDER if p in values]
    return known + sorted(set(values) - set(known))


def num_steps(df: pd.DataFrame) -> int:
    """Training steps a table covers (its optional ``step`` column; 1 without it)."""
    return max(1, int(df["step"].nunique())) if "step" in df.columns and len(df) else 1


def alltoall_per_layer(a2a: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, phase): all-to-all duration, bytes and count per training step.

    Sums over micro-batches; with several steps (a ``step`` column), the mean over steps.
    """
    df = a2a.copy()
    df["phase"] = df["phase"].astype(str)
    df["layer"] = df["layer"].astype(int)
    steps = num_steps(df)
    out = df.groupby(["layer", "phase"], sort=True).agg(
        duration_s=("duration_s", "sum"), bytes=("bytes", "sum"), count=("duration_s", "size")
    )
    out[["duration_s", "bytes", "count"]] = out[["duration_s", "bytes", "count"]] / steps
    return out.reset_index()


def fig_alltoall(a2a: pd.DataFrame) -> Figure | None:
    """Stacked bars per MoE layer: all-to-all time and bytes per step by phase (sum over micro-batches)."""
    if a2a.empty:
        return None
    per = alltoall_per_layer(a2a)
    layers = sorted(per["layer"].unique())
    phases = _phases(list(per["phase"].unique()))
    t = per.pivot(index="layer", columns="phase", values="duration_s").reindex(index=layers, columns=phases)
    b = per.pivot(index="layer", columns="phase", values="bytes").reindex(index=layers, columns=phases)
    t, b = t.fillna(0.0), b.fillna(0.0)
    tdiv, tunit = time_scale(float(t.sum(axis=1).max()))
    bdiv, bunit = byte_scale(float(b.sum(axis=1).max()))
    fig, (ax_t, ax_b) = new_figure(11.0, 4.0, ncols=2)
    x = np.arange(len(layers))
    cmap = matplotlib.colormaps["tab20c"]
    colors = {p: cmap(i % 20) for i, p in enumerate(phases)}
    for ax, frame, div in ((ax_t, t, tdiv), (ax_b, b, bdiv)):
        bottom = np.zeros(len(layers))
        for p in phases:
            vals = frame[p].to_numpy(dtype=float) / div
            ax.bar(x, vals, bottom=bottom, color=colors[p], label=p, width=0.8)
            bottom += vals
        _thin_ticks(ax, list(x), [str(layer) for layer in layers])
        ax.set_xlabel("MoE layer")
    ax_t.set_ylabel(f"all-to-all time per step ({tunit})")
    ax_b.set_ylabel(f"bytes moved per step ({bunit})")
    ax_t.set_title("All-to-all time per layer")
    ax_b.set_title("All-to-all bytes per layer")
    ax_b.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- traffic matrix


def is_node(value: Any) -> bool:
    """Whether a traffic-matrix node id is a node (negative ids: outside any node, e.g. storage)."""
    try:
        return float(value) >= 0
    except (TypeError, ValueError):
        return True


def node_label(value: Any) -> str:
    """A node id as an axis label ('ext' for endpoints outside any node)."""
    return str(value) if is_node(value) else "ext"


def node_matrix(tm: pd.DataFrame) -> pd.DataFrame:
    """Node x node bytes summed over traffic classes (rows: source, columns: destination)."""
    nodes = sorted(set(tm["src_node"]).union(tm["dst_node"]), key=node_sort_key)
    mat = tm.groupby(["src_node", "dst_node"])["bytes"].sum().unstack(fill_value=0.0)
    return mat.reindex(index=nodes, columns=nodes, fill_value=0.0).astype(float)


def intra_inter_by_class(tm: pd.DataFrame) -> pd.DataFrame:
    """Bytes per traffic class split into intra-node (src == dst node) and inter-node."""
    df = tm.copy()
    same = (df["src_node"] == df["dst_node"]).to_numpy() & np.array(
        [is_node(n) for n in df["src_node"]], dtype=bool
    )
    df["scope"] = np.where(same, "intra-node", "inter-node")
    out = df.groupby(["traffic_class", "scope"])["bytes"].sum().unstack(fill_value=0.0)
    for col in ("intra-node", "inter-node"):
        if col not in out.columns:
            out[col] = 0.0
    order = ordered_classes([str(c) for c in out.index])
    out.index = out.index.astype(str)
    return out.loc[order, ["intra-node", "inter-node"]].astype(float)


def fig_traffic_matrix(tm: pd.DataFrame) -> Figure | None:
    """Heatmap of bytes between nodes (diagonal = intra-node) and intra/inter bytes per class."""
    if tm.empty or float(tm["bytes"].sum()) <= 0:
        return None
    mat = node_matrix(tm)
    split = intra_inter_by_class(tm)
    fig, (ax_m, ax_c) = new_figure(12.0, 5.0, ncols=2)
    values = mat.to_numpy()
    positive = values[values > 0]
    bdiv, bunit = byte_scale(float(positive.max()))
    shown = np.where(values > 0, values / bdiv, np.nan)
    vmin, vmax = float(positive.min()) / bdiv, float(positive.max()) / bdiv
    log = vmax > 100 * vmin  # log colours only when the range is wide
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#f4f4f4")
    if log:
        im = ax_m.imshow(
            shown, cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax), interpolation="nearest", aspect="auto"
        )
    else:
        im = ax_m.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax_m, label=f"bytes ({bunit}{', log scale' if log else ''})")
    if values.shape[0] <= 12:
        for (i, j), v in np.ndenumerate(values):
            if v > 0:
                frac = (
                    (np.log(v / bdiv / vmin) / np.log(vmax / vmin))
                    if log and vmax > vmin
                    else v / bdiv / vmax
                )
                ax_m.text(
                    j,
                    i,
                    f"{v / bdiv:.3g}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if frac > 0.6 else "white",
                )
    labels = [node_label(n) for n in mat.index]
    _thin_ticks(ax_m, list(range(len(labels))), labels, axis="x")
    _thin_ticks(ax_m, list(range(len(labels))), labels, axis="y")
    ax_m.grid(False)
    ax_m.set_xlabel("destination node")
    ax_m.set_ylabel("source node")
    ax_m.set_title("Node traffic matrix, all classes (diagonal: intra-node)")
    cdiv, cunit = byte_scale(float(split.to_numpy().max()))
    y = np.arange(len(split))
    ax_c.barh(y - 0.2, split["intra-node"] / cdiv, height=0.4, color="#55A868", label="intra-node")
    ax_c.barh(y + 0.2, split["inter-node"] / cdiv, height=0.4, color="#C44E52", label="inter-node")
    ax_c.set_yticks(list(y))
    ax_c.set_yticklabels(list(split.index))
    ax_c.invert_yaxis()
    ax_c.set_xlabel(f"bytes ({cunit})")
    ax_c.set_ylabel("traffic class")
    ax_c.set_title("Intra- vs inter-node bytes by class")
    ax_c.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
    ax_c.legend(fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- links


def fig_link_tiers(links: pd.DataFrame, ts: pd.DataFrame | None = None) -> Figure | None:
    """Utilisation (mean over links of the mean; the tier's busiest window, see
    :mod:`netsim.report.utilisation`) and bytes per tier."""
    if links.empty:
        return None
    tiers = tier_table(links, ts)
    labels = [f"{n}/{t}" for n, t in zip(tiers["network"], tiers["tier"], strict=True)]
    fig, (ax_u, ax_b) = new_figure(11.0, 1.6 + 0.42 * len(tiers), ncols=2)
    y = np.arange(len(tiers))
    ax_u.barh(
        y - 0.2, 100 * tiers["mean_utilization"], height=0.4, color="#4C72B0", label="mean of link means"
    )
    peak = tiers["peak_utilization"].fillna(0.0)
    window = float(tiers["window_s"].iloc[0]) if tiers["window_s"].notna().any() else 0.0
    if window > 0:
        div, unit = time_scale(window)
        ax_u.barh(y + 0.2, 100 * peak, height=0.4, color="#C44E52",
                  label=f"busiest {window / div:.3g} {unit} window")
    ax_u.set_xlabel("utilisation (%)")
    ax_u.set_xlim(0, max(100.0, float(100 * peak.max()) * 1.05))
    ax_u.set_title("Link utilisation by tier")
    ax_u.legend(fontsize=8, frameon=False, loc="lower right")
    nbytes = tiers["bytes"].to_numpy(dtype=float)
    positive = nbytes[nbytes > 0]
    bdiv, bunit = byte_scale(float(nbytes.max()))
    ax_b.barh(y, nbytes / bdiv, height=0.6, color="#8172B3")
    if len(positive) and positive.max() > 1000 * positive.min():
        ax_b.set_xscale("log")
        ax_b.set_xlabel(f"bytes carried ({bunit}, log scale)")
    else:
        ax_b.set_xlabel(f"bytes carried ({bunit})")
    ax_b.set_title("Bytes by tier (sum over links)")
    for ax in (ax_u, ax_b):
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
        ax.grid(False, axis="y")
    ax_u.set_ylabel("network/tier")
    return fig


def fig_tier_timeseries(ts: pd.DataFrame) -> Figure | None:
    """Utilisation of each (network, tier) over the step, one step line per tier."""
    if ts.empty:
        return None
    df = ts.copy()
    width = (df["t1_s"] - df["t0_s"]).astype(float)
    denom = df["capacity_Bps"].astype(float) * width
    df["util"] = np.where(denom > 0, df["bytes"].astype(float) / denom.where(denom > 0, 1.0), 0.0)
    t_max = float(df["t1_s"].max())
    div, unit = time_scale(t_max)
    fig, (ax,) = new_figure(11.0, 4.0)
    cmap = matplotlib.colormaps["tab10"]
    groups = sorted(df.groupby(["network", "tier"], sort=True), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
    for i, ((network, tier), grp) in enumerate(groups):
        g = grp.sort_values("t0_s", kind="mergesort")
        xs = np.concatenate([g["t0_s"].to_numpy(float), g["t1_s"].to_numpy(float)[-1:]]) / div
        ys = np.concatenate([100 * g["util"].to_numpy(float), 100 * g["util"].to_numpy(float)[-1:]])
        ax.step(xs, ys, where="post", color=cmap(i % 10), label=f"{network}/{tier}", linewidth=1.3)
    ax.set_xlim(0, t_max / div if t_max > 0 else 1)
    ax.set_ylim(0, max(100.0, float(100 * df["util"].max()) * 1.05))
    ax.set_xlabel(f"time since the start of the first step ({unit})")
    ax.set_ylabel("utilisation (%)")
    ax.set_title("Link utilisation over time by tier")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, title="network/tier")
    return fig


def top_links(links: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` most loaded links: highest mean utilisation (ties: bytes, then name), with the
    utilisation while busy (``busy_utilization``)."""
    if links.empty:
        return links
    df = links.copy()
    df["link"] = df["link"].astype(str)
    df["busy_utilization"] = busy_utilization(df)
    df = df.sort_values(
        ["mean_utilization", "bytes", "link"], ascending=[False, False, True], kind="mergesort"
    )
    return df.head(n).reset_index(drop=True)


def fig_top_links(top: pd.DataFrame) -> Figure | None:
    """Horizontal bars of the mean utilisation and the utilisation while busy of the most loaded
    links (:func:`top_links`)."""
    if top.empty:
        return None
    labels = [f"{lk} ({c}, {t})" for lk, c, t in zip(top["link"], top["class"], top["tier"], strict=True)]
    fig, (ax,) = new_figure(11.0, 1.2 + 0.38 * len(top))
    y = np.arange(len(top))
    busy = top["busy_utilization"] if "busy_utilization" in top else busy_utilization(top)
    ax.barh(y - 0.2, 100 * top["mean_utilization"], height=0.4, color="#4C72B0", label="mean over the run")
    ax.barh(y + 0.2, 100 * busy, height=0.4, color="#C44E52", label="while busy")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(100.0, float(100 * busy.max()) * 1.05))
    ax.set_xlabel("utilisation (%)")
    ax.set_title(f"Most loaded links (top {len(top)} by mean utilisation)")
    ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return fig


# ----------------------------------------------------------------------------- bytes


def fig_bytes(
    by_class: Mapping[str, float],
    by_link_class: Mapping[str, float],
    east_west: float | None,
    north_south: float | None,
) -> Figure | None:
    """Bytes by traffic class, by link class, and east-west vs north-south."""
    panels: list[tuple[str, list[str], list[float], list[str], str]] = []
    if by_class:
        names = ordered_classes(list(by_class))
        panels.append(
            (
                "By traffic class",
                names,
                [by_class[k] for k in names],
                [class_color(k) for k in names],
                "traffic class",
            )
        )
    if by_link_class:
        names = sorted(by_link_class)
        panels.append(
            (
                "By link class",
                names,
                [by_link_class[k] for k in names],
                ["#8172B3"] * len(names),
                "link class",
            )
        )
    if east_west is not None or north_south is not None:
        panels.append(
            (
                "East-west vs north-south",
                ["east-west", "north-south"],
                [east_west or 0.0, north_south or 0.0],
                ["#4C72B0", "#DD8452"],
                "direction",
            )
        )
    if not panels:
        return None
    fig, axes = new_figure(4.0 * len(panels) + 1.0, 4.0, ncols=len(panels))
    for ax, (title, names, vals, colors, xlabel) in zip(axes, panels, strict=True):
        div, unit = byte_scale(max(vals) if vals else 0.0)
        x = np.arange(len(names))
        ax.bar(x, np.asarray(vals, dtype=float) / div, color=colors, width=0.7)
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30 if len(names) > 4 else 0, fontsize=8)
        ax.set_ylabel(f"bytes ({unit})")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- MoE


def expert_load_matrix(load: pd.DataFrame) -> pd.DataFrame:
    """Mean tokens per router step, layer x expert."""
    steps = max(1, int(load["step"].nunique()))
    mat = load.groupby(["layer", "expert"])["tokens"].sum().unstack(fill_value=0.0) / steps
    return mat.sort_index(axis=0).sort_index(axis=1).astype(float)


def expert_load_stats(load: pd.DataFrame) -> pd.DataFrame:
    """Per layer: mean and max tokens per expert per step, max/mean and coefficient of variation."""
    mat = expert_load_matrix(load)
    mean = mat.mean(axis=1)
    std = mat.std(axis=1, ddof=0)
    out = pd.DataFrame(
        {
            "layer": mat.index.astype(int),
            "experts": mat.shape[1],
            "mean_tokens": mean.to_numpy(),
            "max_tokens": mat.max(axis=1).to_numpy(),
            "max_over_mean": (mat.max(axis=1) / mean.where(mean > 0)).to_numpy(),
            "cv": (std / mean.where(mean > 0)).to_numpy(),
        }
    )
    return out


def fig_moe(load: pd.DataFrame | None, locality: Mapping[str, float]) -> Figure | None:
    """Expert load heatmap (layer x expert, tokens per step) and expert-parallel byte locality."""
    panels = int(load is not None and not load.empty) + int(bool(locality))
    if panels == 0:
        return None
    fig, axes = new_figure(12.0 if panels == 2 else 7.0, 4.5, ncols=panels)
    i = 0
    if load is not None and not load.empty:
        ax = axes[i]
        i += 1
        mat = expert_load_matrix(load)
        im = ax.imshow(mat.to_numpy(), cmap="magma", interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=ax, label="tokens per router step")
        _thin_ticks(ax, list(range(mat.shape[1])), [str(e) for e in mat.columns], axis="x")
        _thin_ticks(ax, list(range(mat.shape[0])), [str(layer) for layer in mat.index], axis="y")
        ax.grid(False)
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
        ax.set_title("Expert load")
    if locality:
        ax = axes[i]
        names = list(locality)
        vals = np.asarray([locality[k] for k in names], dtype=float)
        div, unit = byte_scale(float(vals.max()) if len(vals) else 0.0)
        bars = ax.bar(
            np.arange(len(names)), vals / div, color=["#55A868", "#4C72B0", "#C44E52"][: len(names)]
        )
        total = float(vals.sum())
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(
                fmt_pct(v / total if total > 0 else float("nan")),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(list(range(len(names))))
        ax.set_xticklabels(names)
        ax.set_ylabel(f"expert-parallel bytes ({unit})")
        ax.set_xlabel("where the token went")
        ax.set_title("Expert-parallel traffic locality")
    return fig
