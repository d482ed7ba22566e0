"""The result table of a sweep: one row per point, varied fields and flattened summary metrics.

Columns, in order:

* ``point`` (int, the point's position), ``id`` (its run directory under ``points/``),
  ``status`` (``ok``; ``failed`` for a :class:`~netsim.errors.NetsimError`; ``error`` for an
  internal error, a bug, whose traceback is in ``failed/<id>.txt``) and ``error`` (the one-line
  message, empty when ok);
* the varied fields, named by their dotted paths (``topology.backend.fabric``, ``nodes``),
  with the values as written in the sweep file; a column mixing kinds of values (numbers and
  strings, or mappings) holds their one-line YAML text;
* everything ``summary.json`` holds, nested keys flattened with dots
  (``step_time_s``, ``breakdown_s.compute``, ``bytes_by_class.ep``, ``parallelism.dp``,
  ``ep_bytes_inter_node``, ...); lists (``step_times_s``) are JSON text.  A summary key equal to
  a varied field's name is prefixed with ``summary.``.  Failed points have empty metrics.

The table is built from the files on disk (the points' ``summary.json``), never from in-memory
results, so it is the same byte for byte whether a point ran serially, in a process pool, on a
Dask cluster, or in an earlier, interrupted invocation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from netsim.io import atomic_file
from netsim.sweep.spec import Sweep

__all__ = ["ID_COLUMNS", "build_table", "flatten_summary", "write_results"]

#: The first columns of the result table.
ID_COLUMNS = ("point", "id", "status", "error")


def flatten_summary(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys; lists -> JSON text; scalars as they are."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_summary(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value), sort_keys=True)
        else:
            out[name] = value
    return out


def _yaml_text(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1, sort_keys=True).strip()
    return text.removesuffix("\n...").rstrip()


def _column(values: Sequence[Any]) -> list[Any]:
    """One type per column (Parquet needs it): bools, ints, floats or else strings."""
    kinds = {type(v) for v in values}
    if kinds <= {bool} or kinds <= {int} or kinds <= {str}:
        return list(values)
    if kinds <= {int, float}:
        return [float(v) for v in values]
    return [v if isinstance(v, str) else _yaml_text(v) for v in values]


def build_table(sweep: Sweep, points_dir: Path, status: Mapping[int, tuple[str, str]]) -> pd.DataFrame:
    """The result table (see the module docstring).

    Args:
        sweep: the expanded sweep.
        points_dir: the folder of the point run directories.
        status: point index -> (status, one-line error); ``ok`` points are read from disk.
    """
    varied = {f: _column([p.values[f] for p in sweep.points]) for f in sweep.fields}
    summaries: list[dict[str, Any]] = []
    metric_names: dict[str, None] = {}
    for p in sweep.points:
        st, _ = status[p.index]
        flat: dict[str, Any] = {}
        if st == "ok":
            raw = json.loads((points_dir / p.id / "summary.json").read_text())
            for k, v in flatten_summary(raw).items():
                name = f"summary.{k}" if k in varied or k in ID_COLUMNS else k
                flat[name] = v
        summaries.append(flat)
        metric_names.update(dict.fromkeys(flat))
    rows = []
    for i, p in enumerate(sweep.points):
        st, err = status[p.index]
        row: dict[str, Any] = {"point": p.index, "id": p.id, "status": st, "error": err}
        row.update({f: varied[f][i] for f in sweep.fields})
        row.update({m: summaries[i].get(m) for m in metric_names})
        rows.append(row)
    columns = [*ID_COLUMNS, *sweep.fields, *metric_names]
    return pd.DataFrame.from_records(rows, columns=columns)


def write_results(df: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.parquet`` into ``out`` (each atomically)."""
    csv = out / "results.csv"
    parquet = out / "results.parquet"
    with atomic_file(csv) as fh:
        df.to_csv(fh, index=False, float_format="%.12g")
    with atomic_file(parquet, "wb") as fh:
        df.to_parquet(fh, index=False)
    return csv, parquet
