"""Matplotlib figures of one run, drawn from its result tables and summary: the one import point.

Every ``fig_*`` function takes DataFrames / the summary dict and returns a
:class:`matplotlib.figure.Figure` (or ``None`` when there is nothing to draw).  They live by
report section, and this module re-exports them (and the machinery) so callers need one name:

- :mod:`netsim.report.figure_kit`: colours, :func:`new_figure`, :func:`png_bytes`,
  :func:`render_all` (forked workers), tick thinning;
- :mod:`netsim.report.figures_step`: per-rank time breakdown and step timeline;
- :mod:`netsim.report.figures_moe`: all-to-all per layer, expert load and EP locality;
- :mod:`netsim.report.figures_traffic`: traffic matrix, link tiers and busiest links, bytes.

Axes carry units: times in s/ms/us chosen per figure, bytes in decimal B..PB, utilisation in %.
"""

from __future__ import annotations

from netsim.report.figure_kit import (
    BREAKDOWN_COLORS,
    class_color,
    new_figure,
    ordered_classes,
    png_bytes,
    render_all,
    thin_ticks,
)
from netsim.report.figures_moe import (
    PHASE_ORDER,
    alltoall_per_layer,
    expert_load_matrix,
    expert_load_stats,
    fig_alltoall,
    fig_moe,
    num_steps,
)
from netsim.report.figures_step import (
    MAX_BARS,
    MAX_TIMELINE_ROWS,
    aggregate_breakdown,
    fig_breakdown,
    fig_timeline,
    pick_ranks,
)
from netsim.report.figures_traffic import (
    fig_bytes,
    fig_link_tiers,
    fig_tier_timeseries,
    fig_top_links,
    fig_traffic_matrix,
    intra_inter_by_class,
    is_node,
    node_label,
    node_matrix,
    top_links,
)

__all__ = [
    "BREAKDOWN_COLORS",
    "MAX_BARS",
    "MAX_TIMELINE_ROWS",
    "PHASE_ORDER",
    "aggregate_breakdown",
    "alltoall_per_layer",
    "class_color",
    "expert_load_matrix",
    "expert_load_stats",
    "fig_alltoall",
    "fig_breakdown",
    "fig_bytes",
    "fig_link_tiers",
    "fig_moe",
    "fig_tier_timeseries",
    "fig_timeline",
    "fig_top_links",
    "fig_traffic_matrix",
    "intra_inter_by_class",
    "is_node",
    "new_figure",
    "node_label",
    "node_matrix",
    "num_steps",
    "ordered_classes",
    "pick_ranks",
    "png_bytes",
    "render_all",
    "thin_ticks",
    "top_links",
]
