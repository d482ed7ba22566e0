"""The sections of a run report, each built from the run directory's tables and summary.

One function per section - summary, per-rank time breakdown, compute by kernel, step timeline,
all-to-all per layer, traffic matrix, link utilisation by tier and over time, bytes by class,
expert load and locality (MoE runs), the most congested links, the files - adds its paragraphs,
tables and figures (matplotlib figures, not yet rendered) to a :class:`Builder`.  A section whose
table is absent returns ``None`` and leaves a note saying so.  :class:`ReportOptions` holds the knobs;
:mod:`netsim.report.run_report` assembles the document and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from matplotlib.figure import Figure as MplFigure

from netsim.report import figures as F
from netsim.report.fmt import DASH, fmt_bytes, fmt_num, fmt_pct, fmt_runs, fmt_time, is_missing
from netsim.report.render import Figure, Note, Paragraph, Section, Table
from netsim.report.tables import BREAKDOWN, TABLES, RunData, summary_mapping, summary_number
from netsim.report.utilisation import tier_table
from netsim.run import layout_modes
from netsim.workload.kernel_tally import kernel_summary


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of a run report.

    Attributes:
        trace: also write ``trace.json`` (Chrome trace of the ``ops`` table).
        trace_ranks: ranks in the trace (default: all, subject to ``trace_max_events``).
        trace_max_events: cap on op events in the trace (None: no cap).
        trace_aggregate: merge consecutive same-class ops in the trace.
        top_links: how many links the congestion section lists.
        timeline_ranks: most ranks drawn in the timeline figure.
    """

    trace: bool = True
    trace_ranks: Sequence[int] | None = None
    trace_max_events: int | None = 200_000
    trace_aggregate: bool = False
    top_links: int = 10
    timeline_ranks: int = 8


class Builder:
    """Collects sections, figure PNGs and notes about omitted sections."""

    def __init__(self, run: RunData, options: ReportOptions) -> None:
        self.run = run
        self.options = options
        self.figures: dict[str, MplFigure] = {}
        self.notes: list[str] = []
        self.sections: list[Section] = []

    def figure(self, section: Section, file: str, fig: MplFigure | None, caption: str) -> bool:
        if fig is None:
            return False
        self.figures[file] = fig
        section.add(Figure(file, caption))
        return True

    def omit(self, title: str, why: str) -> None:
        self.notes.append(f"{title}: omitted, {why}.")

    def missing_table(self, title: str, table: str) -> None:
        self.omit(title, f"the run directory has no `{table}` table")

    def table(self, title: str, table: str) -> pd.DataFrame | None:
        """The run's ``table`` for section ``title``, or None (and why, in the notes) when the
        run directory lacks it or it is empty."""
        df = self.run.table(table)
        if df is None:
            self.missing_table(title, table)
        elif df.empty:
            self.omit(title, f"the `{table}` table is empty")
            return None
        return df


def _rows_to_table(df: pd.DataFrame, formats: dict[str, object], headers: dict[str, str]) -> Table:
    rows: list[list[str]] = []
    align = ""
    for col in headers:
        align += "l" if formats.get(col) is str else "r"
    for rec in df.to_dict("records"):
        row = []
        for col in headers:
            fmt = formats.get(col, str)
            value = rec.get(col)
            if fmt is str:
                row.append(DASH if value is None or (isinstance(value, float) and is_missing(value)) else str(value))
            else:
                assert callable(fmt)
                row.append(str(fmt(value)))
        rows.append(row)
    return Table(list(headers.values()), rows, align=align)


def _setup_rows(s: Mapping[str, Any]) -> list[list[str]]:
    """Summary rows of what was simulated: scenario, cluster, parallelism, models, seed."""
    rows: list[list[str]] = []
    if s.get("name"):
        rows.append(["scenario", str(s["name"])])
    rows += [["topology", str(s.get("topology", DASH))], ["workload", str(s.get("workload", DASH))]]
    if (nodes := summary_number(s, "num_nodes")) is not None:
        rows.append(["nodes", fmt_num(nodes)])
    rows.append(["ranks", fmt_num(summary_number(s, "num_ranks"))])
    par = s.get("parallelism")
    if isinstance(par, dict) and par:
        rows.append(
            [
                "parallelism",
                ", ".join(f"{k.upper()} {v}" for k, v in par.items() if k in SIZES and (k, v) != ("cp", 1))
                + (f", ZeRO-{par['zero_stage']}" if par.get("zero_stage") else "")
                + "".join(f", {m}" for m in layout_modes(par)),
            ]
        )
    for key, label in (
        ("schedule", "pipeline schedule"),
        ("compute_model", "compute model"),
        ("collective_model", "collective model"),
        ("model_choice", "simulated with"),
    ):
        if s.get(key):
            rows.append([label, str(s[key])])
    if (m := summary_number(s, "num_microbatches")) is not None:
        rows.append(["micro-batches", fmt_num(m)])
    blocks = s.get("layers_per_block")
    if isinstance(blocks, list) and len(blocks) > 1:
        rows.append(["layers per pipeline block", fmt_runs(blocks)])
    rows.append(["seed", fmt_num(summary_number(s, "seed"))])
    return rows


def _time_rows(s: Mapping[str, Any], step: float | None) -> list[list[str]]:
    """Summary rows of the step time and its breakdown (mean over ranks, share of the step)."""
    steps = summary_number(s, "steps")
    rows = [["step time" + (f" (mean of {fmt_num(steps)} steps)" if steps and steps > 1 else ""), fmt_time(step)]]
    br = summary_mapping(s, "breakdown_s")
    for comp in BREAKDOWN:
        if comp in br:
            share = f" ({fmt_pct(br[comp] / step)} of step)" if step else ""
            rows.append([f"{comp} (mean over ranks)", fmt_time(br[comp]) + share])
    return rows


def _traffic_rows(s: Mapping[str, Any], has_moe: bool) -> list[list[str]]:
    """Summary rows of bytes sent, the checkpoint and (MoE runs) the all-to-all and expert load."""
    rows: list[list[str]] = []
    by_class = summary_mapping(s, "bytes_by_class")
    if by_class:
        rows.append(["bytes sent, all classes", fmt_bytes(sum(by_class.values()))])
    for key, label in (("east_west_bytes", "east-west bytes"), ("north_south_bytes", "north-south bytes")):
        v = summary_number(s, key)
        if v is not None:
            rows.append([label, fmt_bytes(v)])
    if "checkpoint_time_s" in s:
        ck = summary_number(s, "checkpoint_time_s")
        rows.append(["checkpoint time", fmt_time(ck) if ck is not None else "no checkpoint"])
        slow = summary_number(s, "checkpoint_slowdown_s")
        if ck is not None and slow is not None:
            rows.append(["step slowdown from the checkpoint", fmt_time(slow)])
    if has_moe:
        for key, label, f in (
            ("alltoall_share", "all-to-all share of step", fmt_pct),
            ("expert_load_cv", "expert load CV", fmt_num),
            ("drop_rate", "token drop rate", fmt_pct),
        ):
            rows.append([label, f(summary_number(s, key))])
        md = s.get("moe_dispatch")
        if isinstance(md, Mapping) and md.get("dispatcher"):
            lat, host = summary_number(md, "call_latency_us"), summary_number(md, "host_sync_us")
            fixed = f", {fmt_time(lat * 1e-6)} fixed per call" if lat else ""
            wait = f", {fmt_time(host * 1e-6)} host wait per forward dispatch" if host else ""
            rows.append(["token dispatcher", f"{md['dispatcher']}{fixed}{wait}"])
    return rows


#: the parallel sizes of a summary's ``parallelism`` (the other keys are modes: netsim.run)
SIZES = ("dp", "pp", "tp", "cp", "ep")


def summary_section(b: Builder) -> Section:
    s = b.run.summary
    sec = Section("Summary", anchor="summary")
    step = summary_number(s, "step_time_s")
    rows = _setup_rows(s) + _time_rows(s, step) + _traffic_rows(s, b.run.has_moe)
    sec.add(Table(["metric", "value"], rows, align="lr"))
    faults = s.get("faults")
    if isinstance(faults, Mapping) and faults.get("line"):  # netsim.topology.faults
        sec.add(Paragraph(f"{faults['line']}: the step is that of the cluster with them."))
    acc = s.get("validation_accuracy")
    if isinstance(acc, Mapping) and acc.get("line"):
        # netsim.accuracy: the regime's record on published runs, not a correction of this step
        sec.add(Paragraph(f"{acc['line']}; the runs and their errors: `netsim validate --kind training`."))
    exposed = summary_mapping(s, "exposed_comm_s_by_class")
    if exposed:
        names = F.ordered_classes(list(exposed))
        sec.add(
            Table(
                ["traffic class", "exposed communication", "share of step"],
                [[k, fmt_time(exposed[k]), fmt_pct(exposed[k] / step) if step else DASH] for k in names],
                align="lrr",
                caption="Communication time not hidden by compute, per traffic class",
            )
        )
    return sec


def _breakdown_section(b: Builder) -> Section | None:
    title = "Per-rank time breakdown"
    ranks = b.table(title, "ranks")
    if ranks is None:
        return None
    sec = Section(title, anchor="breakdown")
    sec.add(
        Paragraph(
            "Each rank's step splits into compute only, communication only (exposed), overlap of "
            "both, and idle (neither)."
        )
    )
    fig, note = F.fig_breakdown(ranks, summary_number(b.run.summary, "step_time_s"))
    if note:
        sec.add(Note(note))
    b.figure(sec, "breakdown.png", fig, "Per-rank time breakdown (stacked: compute, communication, overlap, idle)")
    rows = []
    for comp in BREAKDOWN:
        col = ranks[f"{comp}_s"].astype(float)
        top = float(col.max())
        worst = int(ranks.loc[col >= top - 1e-9 * abs(top), "rank"].min())  # first rank at the max
        rows.append([comp, fmt_time(col.mean()), fmt_time(col.min()), fmt_time(col.max()), str(worst)])
    sec.add(
        Table(
            ["component", "mean", "min", "max", "rank at max"], rows, align="lrrrr", caption=f"Over {len(ranks)} ranks"
        )
    )
    return sec


def _kernels_section(b: Builder, top: int = 15) -> Section | None:
    """Where the busiest rank's compute time goes: by kernel class, by where each time came from
    (measured table, fitted surface, derived, published curves, roofline), and its longest kernels."""
    title = "Compute by kernel"
    kernels = b.table(title, "kernels")
    if kernels is None:
        return None
    busiest = kernel_summary(kernels.to_dict("records"))
    assert busiest is not None  # b.table returns no empty table
    rank, total = int(busiest["rank"]), float(busiest["kernel_time_s"])
    mine = kernels[kernels["rank"] == rank]
    sec = Section(title, anchor="kernels")
    sec.add(
        Paragraph(
            f"Rank {rank} (pipeline stage {int(busiest['stage'])}) computes the longest: "
            f"{fmt_time(total)} of kernel time per step, as planned (the replay stretches its ops while "
            "collectives in flight hold SMs). The `kernels` table has every stage's busiest rank."
        )
    )
    for name, split in (("class", busiest["by_class_s"]), ("timed from", busiest["by_source_s"])):
        rows = [[str(k), fmt_time(v), fmt_pct(v / total if total > 0 else 0.0)] for k, v in split.items()]
        sec.add(Table([name, "time per step", "share"], rows, align="lrr"))
    head = mine.sort_values("time_s", ascending=False).head(top)
    formats: dict[str, object] = {
        "op": str,
        "kernel": str,
        "pass": str,
        "shape": str,
        "calls": fmt_num,
        "time_s": fmt_time,
        "share": fmt_pct,
        "tflops": fmt_num,
        "source": str,
    }
    headers = {
        "op": "op",
        "kernel": "kernel",
        "pass": "pass",
        "shape": "shape",
        "calls": "calls",
        "time_s": "time per step",
        "share": "share",
        "tflops": "TFLOP/s per call",
        "source": "timed from",
    }
    table = _rows_to_table(head, formats, {k: v for k, v in headers.items() if k in head})
    sec.add(replace(table, caption=f"The {len(head)} longest of rank {rank}'s {len(mine)} kernel rows"))
    return sec


def _timeline_section(b: Builder) -> Section | None:
    title = "Step timeline"
    ops = b.table(title, "ops")
    if ops is None:
        return None
    sec = Section(title, anchor="timeline")
    fig, note = F.fig_timeline(ops, max_ranks=b.options.timeline_ranks)
    if note:
        sec.add(Note(note))
    b.figure(sec, "timeline.png", fig, "Ops per rank and stream over the step (compute, and comm by traffic class)")
    if b.options.trace:
        sec.add(Paragraph("The full timeline is in `trace.json`; see the section Files for how to open it."))
    return sec


def _alltoall_section(b: Builder) -> Section | None:
    title = "All-to-all per layer"
    a2a = b.run.table("alltoall_layers")
    if a2a is None:
        if b.run.has_moe:
            b.missing_table(title, "alltoall_layers")
        else:
            b.omit(title, "the run has no MoE layers")
        return None
    if a2a.empty:
        b.omit(title, "the `alltoall_layers` table is empty")
        return None
    sec = Section(title, anchor="alltoall")
    b.figure(
        sec,
        "alltoall_layers.png",
        F.fig_alltoall(a2a),
        "Expert-parallel all-to-all time and bytes per MoE layer, by phase",
    )
    per = F.alltoall_per_layer(a2a)
    by_layer = (
        per.groupby("layer")
        .agg(duration_s=("duration_s", "sum"), bytes=("bytes", "sum"), count=("count", "sum"))
        .reset_index()
    )
    step = summary_number(b.run.summary, "step_time_s")
    steps = F.num_steps(a2a)
    if steps > 1:
        sec.add(Note(f"The run has {steps} steps: values are means per step."))
    rows = [
        [
            str(int(r.layer)),
            fmt_num(r.count),
            fmt_time(r.duration_s),
            fmt_bytes(r.bytes),
            fmt_pct(r.duration_s / step) if step else DASH,
        ]
        for r in by_layer.itertuples(index=False)
    ]
    sec.add(
        Table(
            ["layer", "all-to-alls per step", "time per step", "bytes per step", "time / step time"],
            rows,
            align="lrrrr",
            caption="Sums over micro-batches and phases",
        )
    )
    return sec


def _traffic_section(b: Builder) -> Section | None:
    title = "Traffic matrix"
    tm = b.run.table("traffic_matrix")
    if tm is None:
        b.missing_table(title, "traffic_matrix")
        return None
    if tm.empty or float(tm["bytes"].sum()) <= 0:
        b.omit(title, "the `traffic_matrix` table has no traffic")
        return None
    sec = Section(title, anchor="traffic")
    b.figure(
        sec,
        "traffic_matrix.png",
        F.fig_traffic_matrix(tm),
        "Bytes between nodes (log colour scale) and intra- vs inter-node bytes by traffic class",
    )
    split = F.intra_inter_by_class(tm)
    rows = []
    for cls, r in split.iterrows():
        total = float(r["intra-node"] + r["inter-node"])
        rows.append(
            [
                str(cls),
                fmt_bytes(r["intra-node"]),
                fmt_bytes(r["inter-node"]),
                fmt_pct(r["inter-node"] / total) if total > 0 else DASH,
            ]
        )
    sec.add(Table(["traffic class", "intra-node", "inter-node", "inter-node share"], rows, align="lrrr"))
    return sec


def _links_section(b: Builder) -> Section | None:
    title = "Link utilisation"
    links, ts = b.run.table("links"), b.run.table("tier_timeseries")
    if links is None and ts is None:
        b.omit(title, "the run directory has neither a `links` nor a `tier_timeseries` table")
        return None
    sec = Section(title, anchor="links")
    if links is not None and not links.empty:
        b.figure(sec, "link_tiers.png", F.fig_link_tiers(links, ts), "Link utilisation and bytes by network and tier")
        tiers = tier_table(links, ts)
        rows = [
            [
                str(r.network),
                str(r.tier),
                str(int(r.links)),
                fmt_bytes(r.bytes),
                fmt_pct(r.mean_utilization),
                DASH if is_missing(r.peak_utilization) else fmt_pct(r.peak_utilization),
            ]
            for r in tiers.itertuples(index=False)
        ]
        window = tiers["window_s"].dropna()
        peak_of = f"busiest {fmt_time(float(window.iloc[0]))} window" if len(window) else "no time series"
        sec.add(
            Table(
                ["network", "tier", "links", "bytes", "mean utilisation", "peak utilisation"],
                rows,
                align="llrrrr",
                caption=f"Per tier: mean utilisation = mean over the tier's links of bytes / (capacity x run "
                f"time); peak utilisation = the tier's bytes in its {peak_of} (1% of the run) over what its "
                "links could carry in it",
            )
        )
    elif links is None:
        sec.add(Note("No `links` table: utilisation by tier from the time series only."))
    if ts is not None and not ts.empty:
        b.figure(
            sec, "tier_timeseries.png", F.fig_tier_timeseries(ts), "Utilisation of each network tier over the step"
        )
    elif ts is None:
        b.missing_table("Link utilisation over time", "tier_timeseries")
    return sec if sec.blocks else None


def _bytes_section(b: Builder) -> Section | None:
    title = "Bytes by class"
    s = b.run.summary
    by_class = summary_mapping(s, "bytes_by_class")
    by_link = summary_mapping(s, "bytes_by_link_class")
    ew, ns = summary_number(s, "east_west_bytes"), summary_number(s, "north_south_bytes")
    fig = F.fig_bytes(by_class, by_link, ew, ns)
    if fig is None:
        b.omit(title, "summary.json has no byte counts")
        return None
    sec = Section(title, anchor="bytes")
    b.figure(sec, "bytes.png", fig, "Bytes by traffic class, by link class, east-west vs north-south")
    if by_class:
        total = sum(by_class.values())
        names = F.ordered_classes(list(by_class))
        sec.add(
            Table(
                ["traffic class", "bytes", "share"],
                [[k, fmt_bytes(by_class[k]), fmt_pct(by_class[k] / total) if total else DASH] for k in names],
                align="lrr",
            )
        )
    if by_link:
        sec.add(
            Table(
                ["link class", "bytes (summed over links)"],
                [[k, fmt_bytes(by_link[k])] for k in sorted(by_link)],
                align="lr",
            )
        )
    if ew is not None or ns is not None:
        sec.add(
            Table(["direction", "bytes"], [["east-west", fmt_bytes(ew)], ["north-south", fmt_bytes(ns)]], align="lr")
        )
    return sec


def _moe_section(b: Builder) -> Section | None:
    title = "Expert load and locality"
    if not b.run.has_moe:
        b.omit(title, "the run has no MoE layers")
        return None
    s = b.run.summary
    load = b.run.table("expert_load")
    locality = {
        label: v
        for key, label in (
            ("ep_bytes_local_rank", "same rank"),
            ("ep_bytes_intra_node", "same node"),
            ("ep_bytes_inter_node", "other node"),
        )
        if (v := summary_number(s, key)) is not None
    }
    sec = Section(title, anchor="moe")
    if load is None:
        sec.add(Note("No `expert_load` table: expert load heatmap omitted."))
    b.figure(
        sec,
        "expert_load.png",
        F.fig_moe(load, locality),
        "Expert load (tokens per router step) and where expert-parallel bytes went",
    )
    if locality:
        total = sum(locality.values())
        sec.add(
            Table(
                ["expert-parallel bytes to", "bytes", "share"],
                [[k, fmt_bytes(v), fmt_pct(v / total) if total else DASH] for k, v in locality.items()],
                align="lrr",
            )
        )
    if load is not None and not load.empty:
        stats = F.expert_load_stats(load)
        rows = [
            [
                str(int(r.layer)),
                str(int(r.experts)),
                fmt_num(r.mean_tokens),
                fmt_num(r.max_tokens),
                fmt_num(r.max_over_mean),
                fmt_num(r.cv),
            ]
            for r in stats.itertuples(index=False)
        ]
        sec.add(
            Table(
                ["layer", "experts", "mean tokens", "max tokens", "max / mean", "CV"],
                rows,
                align="lrrrrr",
                caption="Tokens per expert per router step",
            )
        )
    rows = [
        [label, f(summary_number(s, key))]
        for key, label, f in (
            ("expert_load_cv", "expert load CV (summary)", fmt_num),
            ("drop_rate", "token drop rate", fmt_pct),
            ("alltoall_share", "all-to-all share of step time", fmt_pct),
        )
    ]
    sec.add(Table(["metric", "value"], rows, align="lr"))
    return sec


def _congestion_section(b: Builder) -> Section | None:
    title = "Most congested links"
    links = b.table(title, "links")
    if links is None:
        return None
    top = F.top_links(links, b.options.top_links)
    sec = Section(title, anchor="congestion")
    b.figure(sec, "top_links.png", F.fig_top_links(top), f"The {len(top)} links with the highest mean utilisation")
    rows = [
        [
            str(r["link"]),
            str(r["src"]),
            str(r["dst"]),
            str(r["class"]),
            str(r["tier"]),
            fmt_pct(r["mean_utilization"]),
            fmt_pct(r["busy_utilization"]),
            fmt_bytes(r["bytes"]),
            fmt_time(r["busy_s"]),
        ]
        for r in top.to_dict("records")
    ]
    sec.add(
        Table(
            ["link", "src", "dst", "class", "tier", "mean", "while busy", "bytes", "busy"],
            rows,
            align="lllllrrrr",
            caption="mean = bytes / (capacity x run time); while busy = bytes / (capacity x busy time)",
        )
    )
    return sec


def files_section(b: Builder, trace_note: str) -> Section:
    sec = Section("Files", anchor="files")
    rows = []
    for name, spec in TABLES.items():
        df = b.run.table(name)
        rows.append([f"`{name}`", spec.row.removeprefix("one row per "), DASH if df is None else str(len(df))])
    sec.add(Table(["table (.parquet, .csv)", "one row per", "rows"], rows, align="llr"))
    ref = [
        [f"`{name}`", f"`{col}`", text]
        for name, spec in TABLES.items()
        if b.run.table(name) is not None
        for col, text in {**spec.columns, **spec.extra}.items()
    ]
    if ref:
        sec.add(
            Table(
                ["table", "column", "meaning"],
                ref,
                align="lll",
                caption="Column reference (also in the documentation: Report, Run directory tables)",
            )
        )
    if b.options.trace:
        sec.add(Paragraph(trace_note))
    return sec


#: The body sections in report order, after the summary and notes and before the files.
BODY_SECTIONS: tuple[Callable[[Builder], Section | None], ...] = (
    _breakdown_section,
    _kernels_section,
    _timeline_section,
    _alltoall_section,
    _traffic_section,
    _links_section,
    _bytes_section,
    _moe_section,
    _congestion_section,
)
