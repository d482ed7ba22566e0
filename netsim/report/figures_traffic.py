"""Figures of where the bytes went: node traffic matrix, link tiers, busiest links, byte totals.

The traffic matrix is node x node bytes (diagonal: intra-node; negative node ids are endpoints
outside any node, e.g. storage, labelled 'ext'), beside intra- vs inter-node bytes per traffic
class.  Link figures show utilisation in % per (network, tier) - mean and busiest window, see
:mod:`netsim.report.utilisation` - and over time, and the most loaded links.  Bytes are in
decimal B..PB.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from netsim.report.figure_kit import class_color, new_figure, ordered_classes, thin_ticks
from netsim.report.fmt import byte_scale, time_scale
from netsim.report.tables import node_sort_key
from netsim.report.utilisation import busy_utilization, tier_table

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
    same = (df["src_node"] == df["dst_node"]).to_numpy() & np.array([is_node(n) for n in df["src_node"]], dtype=bool)
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
        im = ax_m.imshow(shown, cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax), interpolation="nearest", aspect="auto")
    else:
        im = ax_m.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax_m, label=f"bytes ({bunit}{', log scale' if log else ''})")
    if values.shape[0] <= 12:
        for (i, j), v in np.ndenumerate(values):
            if v > 0:
                frac = (np.log(v / bdiv / vmin) / np.log(vmax / vmin)) if log and vmax > vmin else v / bdiv / vmax
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
    thin_ticks(ax_m, list(range(len(labels))), labels, axis="x")
    thin_ticks(ax_m, list(range(len(labels))), labels, axis="y")
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
    ax_u.barh(y - 0.2, 100 * tiers["mean_utilization"], height=0.4, color="#4C72B0", label="mean of link means")
    peak = tiers["peak_utilization"].fillna(0.0)
    window = float(tiers["window_s"].iloc[0]) if tiers["window_s"].notna().any() else 0.0
    if window > 0:
        div, unit = time_scale(window)
        ax_u.barh(y + 0.2, 100 * peak, height=0.4, color="#C44E52", label=f"busiest {window / div:.3g} {unit} window")
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
    df = df.sort_values(["mean_utilization", "bytes", "link"], ascending=[False, False, True], kind="mergesort")
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
            ("By traffic class", names, [by_class[k] for k in names], [class_color(k) for k in names], "traffic class")
        )
    if by_link_class:
        names = sorted(by_link_class)
        panels.append(
            ("By link class", names, [by_link_class[k] for k in names], ["#8172B3"] * len(names), "link class")
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
