"""Figures of MoE runs: all-to-all time and bytes per layer, expert load and EP locality.

All-to-all volumes are per training step (summed over micro-batches, the mean over steps when
the table covers several); expert load is tokens per router step, layer x expert; locality is
where expert-parallel bytes went (same device, same node, other node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from netsim.report.figure_kit import new_figure, thin_ticks
from netsim.report.fmt import byte_scale, fmt_pct, time_scale

PHASE_ORDER = ("fwd-dispatch", "fwd-combine", "bwd-dispatch", "bwd-combine")


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
        thin_ticks(ax, list(x), [str(layer) for layer in layers])
        ax.set_xlabel("MoE layer")
    ax_t.set_ylabel(f"all-to-all time per step ({tunit})")
    ax_b.set_ylabel(f"bytes moved per step ({bunit})")
    ax_t.set_title("All-to-all time per layer")
    ax_b.set_title("All-to-all bytes per layer")
    ax_b.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
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
        thin_ticks(ax, list(range(mat.shape[1])), [str(e) for e in mat.columns], axis="x")
        thin_ticks(ax, list(range(mat.shape[0])), [str(layer) for layer in mat.index], axis="y")
        ax.grid(False)
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
        ax.set_title("Expert load")
    if locality:
        ax = axes[i]
        names = list(locality)
        vals = np.asarray([locality[k] for k in names], dtype=float)
        div, unit = byte_scale(float(vals.max()) if len(vals) else 0.0)
        bars = ax.bar(np.arange(len(names)), vals / div, color=["#55A868", "#4C72B0", "#C44E52"][: len(names)])
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
