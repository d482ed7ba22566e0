"""The layout search's report: ``report.md``, ``report.html`` and ``figures/ranking.png``.

Every number comes from the search's candidates (:class:`netsim.studies.layouts.LayoutSearch`):
- the best layout, and where the scenario's own layout ranks against it;
- the ranking table;
- a figure of each ranked layout's step (compute, compute beside communication, exposed
  communication, idle) beside its worst rank's memory against the accelerator's;
- what was screened out, grouped by reason, with one layout as an example.

Nothing depends on wall-clock time, so the same search gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netsim.report.figure_kit import BREAKDOWN_COLORS
from netsim.report.fmt import DASH, fmt_pct
from netsim.report.render import Document, Figure, Note, Paragraph, Section, Table

if TYPE_CHECKING:
    from netsim.studies.layouts import Candidate, LayoutSearch

__all__ = ["own_layout_line", "ranking_figure", "report_document", "write_report"]

#: layouts drawn in the ranking figure (the fastest ones)
FIGURE_LAYOUTS = 24
GiB = 2**30


def _num(value: float | None, spec: str) -> str:
    return DASH if value is None else format(value, spec)


def own_layout_line(result: LayoutSearch) -> str:
    """Where the scenario's own layout stands against the best one."""
    label = result.base_layout.label
    own = result.base()
    ranked = result.ranked
    if own is None:
        return f"The scenario's own layout ({label}) is outside the search space."
    if own.rank is None or own.step_time_s is None or not ranked or ranked[0].step_time_s is None:
        return f"The scenario's own layout ({label}) was not simulated: {own.status}, {own.reason}"
    if own.rank == 1:
        return f"The scenario's own layout ({label}) is the best of the {len(ranked)} simulated."
    slower = own.step_time_s / ranked[0].step_time_s - 1.0
    return (
        f"The scenario's own layout ({label}) ranks {own.rank} of {len(ranked)}: its step is "
        f"{100 * slower:.1f}% longer than the best."
    )


def _best_line(best: Candidate) -> str:
    return (
        f"{best.layout.label} (DP {best.dp}): step {best.step_time_s:.4g} s, "
        f"{best.tokens_per_s_per_gpu:,.0f} tokens/s per GPU, MFU {fmt_pct(best.mfu)}, exposed communication "
        f"{fmt_pct(best.exposed_comm_share)} and idle {fmt_pct(best.idle_share)} of the step, "
        f"peak memory {_num(_gib(best.peak_memory_bytes), '.1f')} GiB."
    )


def _gib(value: float | None) -> float | None:
    return None if value is None else value / GiB


def _list(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _oom_reason(cands: Sequence[Candidate]) -> str:
    """``does not fit: the worst rank needs 3.2-3.6 GiB, HBM 2.8 GiB``."""
    need = sorted(c.peak_memory_bytes or 0.0 for c in cands)
    cap = cands[0].capacity_bytes
    span = f"{need[0] / GiB:.1f}" if need[0] == need[-1] else f"{need[0] / GiB:.1f}-{need[-1] / GiB:.1f}"
    return f"does not fit: the worst rank needs {span} GiB" + (f", HBM {cap / GiB:.1f} GiB" if cap else "")


def _field(reason: str) -> str:
    """The field a one-line reason names (``global_batch_size: ...`` -> ``global_batch_size``), or
    the whole reason when it names none."""
    head, sep, _rest = reason.partition(": ")
    return head if sep and " " not in head else reason


def _screened(result: LayoutSearch) -> Section | None:
    out = [c for c in result.candidates if c.status in ("failed", "oom", "invalid")]
    dominated = result.counts().get("dominated", 0)
    if not out and not dominated:
        return None
    section = Section("Screened out")
    # one row per status and field the reason names (the same check, other numbers)
    groups: dict[tuple[str, str], list[Candidate]] = {}
    for c in out:
        groups.setdefault((c.status, _field(c.reason) if c.status != "oom" else ""), []).append(c)
    rows = []
    for (status, _key), cs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        reason = _oom_reason(cs) if status == "oom" else cs[0].reason
        rows.append([status, reason, str(len(cs)), cs[0].layout.label])
    if rows:
        section.add(Table(["status", "reason (of the example)", "layouts", "e.g."], rows, "llrl"))
    section.add(Paragraph(f"Dominated (fit with less recomputation, not simulated): {dominated}."))
    return section


def ranking_figure(ranked: Sequence[Candidate]) -> Any:
    """Each ranked layout's step by component (ms) beside its worst rank's memory (GiB)."""
    from netsim.report.figure_kit import new_figure

    shown = list(ranked[:FIGURE_LAYOUTS])
    fig, (ax, mem) = new_figure(11.0, 1.2 + 0.32 * len(shown), ncols=2)
    y = list(range(len(shown)))[::-1]
    parts = (
        ("compute", "compute_share"),
        ("overlap", "overlap_share"),
        ("communication", "exposed_comm_share"),
        ("idle", "idle_share"),
    )
    left = [0.0] * len(shown)
    for name, attr in parts:
        widths = [1e3 * (c.step_time_s or 0.0) * (getattr(c, attr) or 0.0) for c in shown]
        label = {"overlap": "compute beside communication", "communication": "exposed communication"}.get(name, name)
        ax.barh(y, widths, left=left, color=BREAKDOWN_COLORS[name], label=label, height=0.7)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(y, [f"{c.rank}. {c.layout.label}" for c in shown], fontsize=8)
    ax.set_xlabel("step (ms)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
    mem.barh(y, [(c.peak_memory_bytes or 0.0) / GiB for c in shown], color="#8172B3", height=0.7)
    caps = {c.capacity_bytes for c in shown if c.capacity_bytes}
    for cap in sorted(caps):
        mem.axvline(cap / GiB, color="#C44E52", linestyle="--", linewidth=1.2, label="accelerator memory")
    if caps:
        mem.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    mem.set_yticks(y, [str(c.rank) for c in shown], fontsize=8)
    mem.set_xlabel("worst rank's memory (GiB)")
    mem.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
    return fig


def report_document(result: LayoutSearch, scenario: str | None, figures: Sequence[str]) -> Document:
    """The report as a :class:`~netsim.report.render.Document` (module doc)."""
    sp = result.space
    header = [("scenario", scenario)] if scenario else []
    header += [
        ("global batch", f"{result.global_batch_size} sequences, the same for every layout"),
        (
            "space",
            f"TP {_list(sp.tp)}; PP {_list(sp.pp)}; CP {_list(sp.cp)}; EP {_list(sp.ep)}; VP {_list(sp.vp)}; "
            f"micro-batch {_list(sp.mbs)}; recompute {_list(sp.recompute)}",
        ),
        ("candidates", ", ".join(f"{n} {s}" for s, n in result.counts().items()) + f" (of {len(result.candidates)})"),
    ]
    doc = Document("Layout search", header)
    ranked = result.ranked
    if ranked:
        best = Section("Best layout")
        best.add(Paragraph(_best_line(ranked[0])))
        best.add(Paragraph(own_layout_line(result)))
        doc.sections.append(best)
        table = Section("Ranking")
        rows = [
            [
                str(c.rank),
                c.layout.label,
                str(c.dp),
                _num(c.step_time_s, ".4g"),
                _num(c.tokens_per_s_per_gpu, ",.0f"),
                fmt_pct(c.mfu),
                fmt_pct(c.exposed_comm_share),
                fmt_pct(c.idle_share),
                _num(_gib(c.peak_memory_bytes), ".1f") + ("" if c.fits is not False else " (does not fit)"),
                fmt_pct(c.peak_memory_bytes / c.capacity_bytes if c.peak_memory_bytes and c.capacity_bytes else None),
            ]
            for c in ranked
        ]
        headers = ["rank", "layout", "DP", "step s", "tokens/s/GPU", "MFU", "exposed comm", "idle", "peak GiB"]
        headers.append("of HBM")
        table.add(Table(headers, rows, "rlrrrrrrrr"))
        over = sum(1 for c in ranked if c.fits is False)
        if over:
            table.add(
                Note(
                    f"{over} of these layouts do not fit in the accelerator's memory by netsim's tally "
                    "(simulated with --allow-oom)"
                )
            )
        for name in figures:
            shown = min(len(ranked), FIGURE_LAYOUTS)
            table.add(
                Figure(
                    name,
                    f"The {shown} fastest layouts: step by component (left) and the worst rank's memory "
                    "against the accelerator's (right)",
                )
            )
        doc.sections.append(table)
    else:
        doc.sections.append(Section("Ranking", [Note("no layout was simulated")]))
    screened = _screened(result)
    if screened is not None:
        doc.sections.append(screened)
    method = Section("Method")
    method.add(
        Paragraph(
            "Each layout is screened before it is simulated: the workload builder's checks (invalid), "
            "netsim's memory tally of the worst rank against the accelerator (oom), and the dominance "
            "rule (a layout that already fits with less recomputation). The rest are simulated, one step "
            "each, with the scenario's options, and ranked by step time. MFU counts PaLM's 6 N + 12 L H Q T "
            "FLOPs per token over the accelerator's dense peak in the model's dtype. Run directories: "
            "`sweep/points/<id>`; every layout with its status and reason: `layouts.csv`. On the published "
            "comparisons of layouts of one model on one cluster that netsim validates, its throughput was "
            "within 2.5% on six of the eight layouts and 8% and 27% off on the other two (docs: Layout search, "
            "'How far to trust a ranking'): read layouts within a few percent of each other as ties."
        )
    )
    doc.sections.append(method)
    return doc


def write_report(result: LayoutSearch, scenario: str | None) -> None:
    """``report.md``, ``report.html`` and ``figures/`` into the search's output folder."""
    from netsim.report.figure_kit import png_bytes
    from netsim.report.files import write_figures, write_text
    from netsim.report.render import render_html, render_markdown

    pngs = {"ranking.png": png_bytes(ranking_figure(result.ranked))} if result.ranked else {}
    doc = report_document(result, scenario, list(pngs))
    write_figures(result.out / "figures", pngs)
    write_text(result.out / "report.md", render_markdown(doc))
    write_text(result.out / "report.html", render_html(doc, pngs))
