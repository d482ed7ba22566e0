"""Sweeps: a grid of scenarios, run locally in parallel or on a Dask cluster, in one table.

A sweep file names a base scenario and the spec fields to vary by dotted path (topology preset
and parameters, node count, workload fields, options, seed), with optional ``zip`` groups and
``exclude`` rules; see :mod:`netsim.sweep.spec` for the format.  ``netsim sweep`` runs it::

    from netsim.sweep import load_sweep, run_sweep
    sweep = load_sweep("examples/sweeps/fabrics.yaml")   # every point validated up front
    outcome = run_sweep(sweep, "sweeps/fabrics", workers=4)
    outcome.table                                        # = sweeps/fabrics/results.parquet

Each point is an ordinary run directory (``points/<id>/``); finished points are reused when a
sweep is run again (:mod:`netsim.sweep.execute`), and the result table is the same byte for
byte whatever ran the points (:mod:`netsim.sweep.results`).
"""

from __future__ import annotations

from netsim.sweep.execute import PointResult, PointTask, SweepOutcome, SweepProgress, is_finished, run_point, run_sweep
from netsim.sweep.results import ID_COLUMNS, build_table, flatten_summary, write_results
from netsim.sweep.spec import SWEEP_KEYS, Sweep, SweepPoint, load_sweep, point_slug

__all__ = [
    "ID_COLUMNS",
    "SWEEP_KEYS",
    "PointResult",
    "PointTask",
    "Sweep",
    "SweepOutcome",
    "SweepPoint",
    "SweepProgress",
    "build_table",
    "flatten_summary",
    "is_finished",
    "load_sweep",
    "point_slug",
    "run_point",
    "run_sweep",
    "write_results",
]
