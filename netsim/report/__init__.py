"""Reports of simulated runs: tables, figures, HTML/Markdown pages, comparisons, the gallery.

The report layer reads only a run directory's result tables and ``summary.json`` (never engine
objects), so it works on any run directory that follows docs/CONTRACTS.md:

* :func:`write_report` - ``report.html`` (self-contained), ``report.md``, ``figures/*.png`` and
  ``trace.json`` (Chrome trace, :mod:`netsim.report.perfetto`) inside the run directory;
* :func:`compare_runs` / :func:`write_compare` - runs side by side with ratios to a baseline;
* :func:`load_run` and :data:`TABLES` - the tables and their documented columns;
* :func:`run_gallery` (in :mod:`netsim.report.gallery`) - reports of the preset scenarios.
"""

from __future__ import annotations

from netsim.report.compare import compare_runs, write_compare
from netsim.report.run_report import build_report, write_report
from netsim.report.run_sections import ReportOptions
from netsim.report.tables import SUMMARY_FIELDS, TABLES, RunData, load_run, read_table

__all__ = [
    "SUMMARY_FIELDS",
    "TABLES",
    "ReportOptions",
    "RunData",
    "build_report",
    "compare_runs",
    "load_run",
    "read_table",
    "write_compare",
    "write_report",
]
