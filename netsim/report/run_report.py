"""The report of one run: ``report.html``, ``report.md``, ``figures/*.png`` and ``trace.json``.

:func:`write_report` loads a run directory (:func:`~netsim.report.tables.load_run`), builds a
:class:`~netsim.report.render.Document` of sections - summary, per-rank time breakdown, step
timeline, all-to-all per layer, traffic matrix, link utilisation by tier and over time, bytes by
class, expert load and locality (MoE runs), the most congested links - draws their figures and
writes everything into the run directory.  A section whose table is absent is left out and
listed under "Notes".  The same run directory always gives byte-identical files.

Write order keeps a half-written report from looking finished: ``trace.json`` first, then the
figures directory (built under a temporary name and renamed), ``report.md`` and last
``report.html``, each file written to a temporary name and renamed into place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure as MplFigure

from netsim.report import figures as F
from netsim.report.background import Background
from netsim.report.files import write_figures, write_text
from netsim.report.fmt import fmt_num, fmt_time
from netsim.report.render import Document, Note, Section, render_html, render_markdown
from netsim.report.run_sections import BODY_SECTIONS, Builder, ReportOptions, files_section, summary_section
from netsim.report.tables import RunData, load_run, summary_number

if TYPE_CHECKING:
    from netsim.report.perfetto import TraceInfo


def build_report(
    run: RunData, options: ReportOptions | None = None, trace_note: str = ""
) -> tuple[Document, dict[str, MplFigure]]:
    """The report document of ``run`` and its figures (file name -> matplotlib figure, not rendered)."""
    options = options or ReportOptions()
    b = Builder(run, options)
    s = run.summary
    doc = Document(f"netsim report: {run.name}")
    for key in ("topology", "workload"):
        if key in s:
            doc.header.append((key, str(s[key])))
    if (n := summary_number(s, "num_ranks")) is not None:
        doc.header.append(("ranks", fmt_num(n)))
    if (step := summary_number(s, "step_time_s")) is not None:
        doc.header.append(("step time", fmt_time(step)))
    body = [sec for fn in BODY_SECTIONS if (sec := fn(b)) is not None]
    doc.sections.append(summary_section(b))
    if b.notes:
        notes = Section("Notes", anchor="notes")
        for note in b.notes:
            notes.add(Note(note))
        doc.sections.append(notes)
    doc.sections.extend(body)
    doc.sections.append(files_section(b, trace_note))
    return doc, b.figures


def _trace_note(trace_job: Background[TraceInfo] | None) -> str:
    """The Files section's paragraph about ``trace.json`` (``None``: the run has no ops table)."""
    if trace_job is None:
        return "No `trace.json`: the run has no `ops` table."
    info = trace_job.result()
    kept = (
        f" It holds {info.events_written} of {info.ops_total} op events "
        f"({len(info.ranks)} of {info.ranks_total} ranks)."
    )
    return (
        "`trace.json` is the step timeline in Chrome trace format: open https://ui.perfetto.dev "
        "and drag the file in (or use Open trace file), or load it in chrome://tracing. One "
        "process per node, one thread per rank stream, link utilisation counters per tier."
        + (kept if info.events_written < info.ops_total else "")
    )


def write_report(
    run_dir: str | Path,
    *,
    trace: bool = True,
    trace_ranks: Sequence[int] | None = None,
    trace_max_events: int | None = 200_000,
    trace_aggregate: bool = False,
    top_links: int = 10,
) -> Path:
    """Write ``report.html``, ``report.md``, ``figures/`` (and ``trace.json``) into ``run_dir``.

    Returns the path of ``report.html``.  A run directory without ``summary.json`` raises
    :class:`~netsim.errors.NetsimError`.  Output is deterministic for the same run directory.
    """
    run_path = Path(run_dir)
    run = load_run(run_path)
    options = ReportOptions(
        trace=trace,
        trace_ranks=trace_ranks,
        trace_max_events=trace_max_events,
        trace_aggregate=trace_aggregate,
        top_links=top_links,
    )
    trace_job = None
    if trace and run.table("ops") is not None:
        from netsim.report.perfetto import write_chrome_trace

        def write_trace() -> TraceInfo:
            return write_chrome_trace(
                {k: v for k, v in run.tables.items() if k in ("ops", "tier_timeseries")},
                run_path / "trace.json",
                ranks=trace_ranks,
                max_events=trace_max_events,
                aggregate=trace_aggregate,
                label=run.name,
                metadata=run.summary,
            )

        trace_job = Background(write_trace)  # written by a forked child while the figures are drawn
    try:
        doc, mpl_figs = build_report(run, options)
        figs = F.render_all(mpl_figs)
    except BaseException:
        if trace_job is not None:
            trace_job.cancel()
        raise
    if trace:  # the Files section again, with what the trace holds
        doc.sections[-1] = files_section(Builder(run, options), _trace_note(trace_job))
    write_figures(run_path / "figures", figs)
    write_text(run_path / "report.md", render_markdown(doc))
    return write_text(run_path / "report.html", render_html(doc, figs))
