"""The figure machinery every report figure shares: colours, figure creation, rendering.

Figures are built without pyplot (:func:`new_figure`, under matplotlib's default style), so no
global figure state is touched and no GUI backend is needed.  :func:`png_bytes` renders a
figure with the Agg canvas and with the PNG ``Software`` text chunk removed, so the same data
gives the same bytes; :func:`render_all` renders many figures, in forked worker processes when
there is more than one CPU.  Colours are fixed per breakdown component and per traffic class
so that every figure and every report agree; :func:`thin_ticks` keeps long axes legible.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import TightLayoutEngine

from netsim.workload.plan import TRAFFIC_CLASSES

BREAKDOWN_COLORS = {"compute": "#4C72B0", "communication": "#DD8452", "overlap": "#55A868", "idle": "#C7C7C7"}

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
    with matplotlib.rc_context(
        {
            "svg.hashsalt": "netsim",
            "path.simplify": True,
            "figure.autolayout": False,
            "figure.constrained_layout.use": False,
        }
    ):
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


#: padding around and between the axes of a figure, in multiples of the font size
_LAYOUT_PAD = 0.6


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Any]]:
    """A figure with ``ncols`` axes side by side, under matplotlib's default style.

    Its layout is computed once, when it is rendered (:func:`png_bytes`): margins and gaps that
    fit every axes' labels, legend and colour bar (matplotlib's tight layout, one pass), then
    fixed.  The constrained layout used before solved the same margins twice over with a
    constraint solver and was half of a report's figure time."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width, height), dpi=110, layout=TightLayoutEngine(pad=_LAYOUT_PAD))
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, axes


def thin_ticks(ax: Any, positions: Sequence[float], labels: Sequence[str], axis: str = "x", most: int = 32) -> None:
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
