"""Check a kernel table against fresh measurements on the current device.

``netsim validate-kernels TABLE`` re-measures shapes of the table's kernels and compares them
with :meth:`KernelTable.predict`:

* ``grid`` points are the table's own shapes: the error is run-to-run variation plus any
  difference between the device that made the table and this one;
* ``mid`` points lie between two measured shapes of the same series (geometric mean of two
  neighbouring sweep values): the error also includes the interpolation error.

The result has one row per (shape, pass) with ``measured_s``, ``predicted_s`` and
``error_pct = 100 * (predicted - measured) / measured``; :func:`summarize` aggregates per
kernel and pass.  torch is needed only for measuring (imported lazily by the profiler).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from netsim.calibration.kernels import KERNELS, SHAPE_COLUMNS, KernelTable, get_kernel
from netsim.calibration.profiler import GridPoint, ProfileOptions, Progress, measure_points
from netsim.errors import SpecError

POINT_KINDS = ("grid", "mid", "both")


def _spread(items: list[Any], n: int) -> list[Any]:
    """At most ``n`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= n:
        return items
    idx = sorted({round(i * (len(items) - 1) / max(n - 1, 1)) for i in range(n)})
    return [items[i] for i in idx]


def validation_points(
    table: KernelTable,
    *,
    kernels: Sequence[str] | None = None,
    points: str = "both",
    max_per_kernel: int | None = None,
) -> list[tuple[GridPoint, str, str]]:
    """(grid point, dtype, kind) to re-measure; ``kind`` is ``grid`` or ``mid``."""
    if points not in POINT_KINDS:
        raise SpecError(f"unknown point kind {points!r}; allowed: {', '.join(POINT_KINDS)}", field="--points")
    wanted = [get_kernel(k).name for k in kernels] if kernels else table.kernels()
    out: list[tuple[GridPoint, str, str]] = []
    df = table.df
    for kernel in wanted:
        spec = KERNELS[kernel]
        rows = df[df["kernel"] == kernel]
        if rows.empty:
            raise SpecError(f"the table has no kernel {kernel!r} (it has: {', '.join(table.kernels())})")
        found: list[tuple[GridPoint, str, str]] = []
        # every pass of a shape is measured together: one point per distinct (dtype, shape)
        shapes = rows.drop_duplicates(subset=["dtype", *spec.params])
        for dtype, g in shapes.groupby("dtype", sort=True):
            series = g.groupby(list(spec.secondary), sort=True) if spec.secondary else [((), g)]
            for _, s in series:
                s = s.sort_values(spec.sweep)
                shape_rows = [{p: int(r[p]) for p in spec.params} for _, r in s.iterrows()]
                if points in ("grid", "both"):
                    found += [(GridPoint(kernel, sh), str(dtype), "grid") for sh in shape_rows]
                if points in ("mid", "both"):
                    for a, b in itertools.pairwise(shape_rows):
                        between = dict(a)
                        between[spec.sweep] = round(math.sqrt(a[spec.sweep] * b[spec.sweep]))
                        if between[spec.sweep] not in (a[spec.sweep], b[spec.sweep]):
                            found.append((GridPoint(kernel, between), str(dtype), "mid"))
        if max_per_kernel is not None:
            found = _spread([f for f in found if f[2] == "grid"], max_per_kernel) + _spread(
                [f for f in found if f[2] == "mid"], max_per_kernel
            )
        out += found
    return out


def validate_table(
    table: KernelTable,
    options: ProfileOptions,
    *,
    kernels: Sequence[str] | None = None,
    points: str = "both",
    max_per_kernel: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Re-measure and compare; one row per (shape, dtype, pass). Columns in the module docstring."""
    todo = validation_points(table, kernels=kernels, points=points, max_per_kernel=max_per_kernel)
    records: list[dict[str, Any]] = []
    for i, (pt, dtype, kind) in enumerate(todo):
        opts = replace(options, dtypes=(dtype,))
        for row in measure_points([pt], opts):
            pred = table.predict(row["kernel"], row["pass"], dtype=dtype, **pt.shape)
            rec = {k: row[k] for k in ("kernel", "dtype", "pass", *SHAPE_COLUMNS)}
            rec.update(
                point=kind,
                measured_s=row["time_s"],
                measured_p10_s=row["time_p10_s"],
                measured_p90_s=row["time_p90_s"],
                predicted_s=pred,
                error_pct=100.0 * (pred - row["time_s"]) / row["time_s"],
            )
            records.append(rec)
        if progress is not None:
            progress(i + 1, len(todo), f"{pt.label()} {dtype} [{kind}]")
    return pd.DataFrame.from_records(records)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per kernel / dtype / pass: points, median and max |error| %, mean signed error %."""
    if results.empty:
        return pd.DataFrame(columns=["kernel", "dtype", "pass", "points", "median_abs_pct", "max_abs_pct", "mean_pct"])
    r = results.assign(abs_pct=results["error_pct"].abs())
    g = r.groupby(["kernel", "dtype", "pass"], sort=False)
    out = g.agg(
        points=("error_pct", "size"),
        median_abs_pct=("abs_pct", "median"),
        max_abs_pct=("abs_pct", "max"),
        mean_pct=("error_pct", "mean"),
    ).reset_index()
    return out


def overall_median_abs_pct(results: pd.DataFrame) -> float:
    """Median of |error_pct| over every compared point."""
    return float(np.median(np.abs(results["error_pct"]))) if len(results) else float("nan")
