"""Check a kernel table: against fresh measurements, held-out points, published measurements.

``netsim validate-kernels TABLE`` re-measures shapes of the table's kernels and compares them
with :meth:`KernelTable.predict`:

* ``grid`` points are the table's own shapes: the error is run-to-run variation plus any
  difference between the device that made the table and this one;
* ``mid`` points lie between two measured shapes of the same series (geometric mean of two
  neighbouring sweep values): the error also includes the interpolation error.

The result has one row per (shape, pass) with ``measured_s``, ``predicted_s`` and
``error_pct = 100 * (predicted - measured) / measured``; :func:`summarize` aggregates per
kernel and pass.  torch is needed only for measuring (imported lazily by the profiler).

Without a device (no torch):

* :func:`holdout_errors` refits a table's GEMM surface without one model's points (or without
  every other token count) and predicts the points it left out: how well the surface serves
  shapes it never saw;
* published measurements (GEMMs and the attention core) are predicted by
  :mod:`netsim.calibration.published`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from netsim.calibration.kernels import KERNELS, SHAPE_COLUMNS, KernelTable, canonical_dtype, get_kernel
from netsim.calibration.profiler import GridPoint, ProfileOptions, Progress, measure_points
from netsim.errors import SpecError

POINT_KINDS = ("grid", "mid", "both")
#: ``--quick``: at most this many grid and this many mid shapes per kernel ...
QUICK_MAX_PER_KERNEL = 3
#: ... among those the table predicts to take at most this long for one call of all the kernel's
#: passes (seconds): each shape is called ~6 times per pass (warm-up, the first timing, 3 samples),
#: so the largest memory-bound shapes of a one-thread CPU table (a dropout over 16384 x 4096
#: takes 4.6 s fwd + bwd) would make the quick check take minutes; the full check measures them
QUICK_MAX_POINT_S = 0.05


def _spread(items: list[Any], n: int) -> list[Any]:
    """At most ``n`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= n:
        return items
    idx = sorted({round(i * (len(items) - 1) / max(n - 1, 1)) for i in range(n)})
    return [items[i] for i in idx]


def _predicted_point_s(table: KernelTable, pt: GridPoint, dtype: str, passes: Sequence[str]) -> float:
    """The table's prediction for one call of every pass of ``pt`` (seconds)."""
    return sum(table.predict(pt.kernel, p, dtype=dtype, **pt.shape) for p in passes)


def _cheap(
    table: KernelTable, found: list[tuple[GridPoint, str, str]], passes: Sequence[str], max_point_s: float
) -> list[tuple[GridPoint, str, str]]:
    """The points predicted to take at most ``max_point_s``; of a kind with none, its cheapest one
    (a table measured on a loaded machine can time even its smallest shapes above the limit)."""
    cost = [_predicted_point_s(table, f[0], f[1], passes) for f in found]
    out = [f for f, c in zip(found, cost, strict=True) if c <= max_point_s]
    for kind in ("grid", "mid"):
        of_kind = [(c, i) for i, (f, c) in enumerate(zip(found, cost, strict=True)) if f[2] == kind]
        if of_kind and not any(f[2] == kind for f in out):
            out.append(found[min(of_kind)[1]])
    return out


def validation_points(
    table: KernelTable,
    *,
    kernels: Sequence[str] | None = None,
    points: str = "both",
    max_per_kernel: int | None = None,
    max_point_s: float | None = None,
) -> list[tuple[GridPoint, str, str]]:
    """(grid point, dtype, kind) to re-measure; ``kind`` is ``grid`` or ``mid``.  ``max_point_s``:
    only shapes the table predicts to take at most that long (all passes, one call each)."""
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
        if max_point_s is not None:
            found = _cheap(table, found, sorted(set(rows["pass"])), max_point_s)
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
    max_point_s: float | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Re-measure and compare; one row per (shape, dtype, pass). Columns in the module docstring."""
    todo = validation_points(
        table, kernels=kernels, points=points, max_per_kernel=max_per_kernel, max_point_s=max_point_s
    )
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


# ---------------------------------------------------------------------- without a device

HOLDOUT_KINDS = ("model", "alternate")


def holdout_errors(table: KernelTable, by: str, *, dtype: str | None = None, pass_: str = "fwd") -> pd.DataFrame:
    """Refit the GEMM surface without some measured points and predict them.

    ``by="model"``: each model (the ``label`` before the first ``:``) in turn is left out of the
    fit; ``by="alternate"``: every other distinct ``m`` (token count) is left out, one fit.
    One row per held-out measurement: ``group`` (the model left out, or ``alternate``),
    ``label``, ``m n k``, ``measured_s``, ``predicted_s``, ``error_pct``.
    """
    from netsim.calibration.catalogue import DTYPE_BYTES
    from netsim.calibration.surface import fit_gemm_surface

    if by not in HOLDOUT_KINDS:
        raise SpecError(f"unknown hold-out {by!r}; allowed: {', '.join(HOLDOUT_KINDS)}", field="--holdout")
    g = table.df[(table.df["kernel"] == "gemm") & (table.df["pass"] == pass_)]
    if dtype is not None:
        g = g[g["dtype"] == canonical_dtype(dtype)]
    dtypes = sorted(set(g["dtype"]))
    if len(dtypes) != 1:
        raise SpecError(
            f"the table has GEMM rows in {', '.join(dtypes) or 'no dtype'}; give one with --dtype", field="--dtype"
        )
    groups: list[tuple[str, pd.Series]] = []
    if by == "model":
        model = g["label"].str.split(":").str[0]
        names = sorted(set(model) - {""})
        if len(names) < 2:
            raise SpecError(
                "hold-out by model needs row labels from at least two models (Vidur imports have them)",
                field="--holdout",
            )
        groups = [(name, model == name) for name in names]
    else:
        ms = np.sort(g["m"].unique())
        groups = [("alternate", g["m"].isin(ms[1::2]))]
    out = []
    for name, test in groups:
        train = g[~test]
        surf = fit_gemm_surface(
            train["m"],
            train["n"],
            train["k"],
            train["time_s"],
            bytes_per_element=DTYPE_BYTES[dtypes[0]],
            source=table.source,
        )
        held = g[test]
        pred = surf.time_s(held["m"], held["n"], held["k"])
        out.append(
            pd.DataFrame(
                {
                    "group": name,
                    "label": held["label"].to_numpy(),
                    "m": held["m"].to_numpy(),
                    "n": held["n"].to_numpy(),
                    "k": held["k"].to_numpy(),
                    "measured_s": held["time_s"].to_numpy(),
                    "predicted_s": pred,
                    "error_pct": 100.0 * (pred - held["time_s"].to_numpy()) / held["time_s"].to_numpy(),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def summarize_errors(results: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per ``by`` group: points, median / 90th percentile / max |error| % and mean signed error %."""
    r = results.assign(abs_pct=results["error_pct"].abs())
    return (
        r.groupby(by, sort=False)
        .agg(
            points=("error_pct", "size"),
            median_abs_pct=("abs_pct", "median"),
            p90_abs_pct=("abs_pct", lambda x: float(np.quantile(x, 0.9))),
            max_abs_pct=("abs_pct", "max"),
            mean_pct=("error_pct", "mean"),
        )
        .reset_index()
    )
