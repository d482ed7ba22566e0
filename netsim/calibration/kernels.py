"""Measured kernel tables with log-space interpolation (the catalogue is in catalogue.py).

The training-step replay needs the duration of every compute op of a layer (GEMMs, attention,
router, token permutation, norms, optimizer).  netsim measures them with
``netsim profile`` (:mod:`netsim.calibration.profiler`) into a *kernel table* and looks them up
here; kernels or dtypes a table does not cover fall back to a roofline
(:mod:`netsim.calibration.roofline`, :mod:`netsim.calibration.compute`).

The kernel catalogue (names, shape parameters, FLOP and byte counts) lives in
:mod:`netsim.calibration.catalogue`; its names are re-exported here.

Table format (CSV or Parquet)
-----------------------------
One row per measurement, columns :data:`TABLE_COLUMNS`:

* ``kernel``, ``dtype`` (``float32``, ``bfloat16``, ``float16``, ``float8``), ``pass``
  (``fwd``, ``bwd`` or ``step``);
* the shape columns :data:`SHAPE_COLUMNS` (``m n k batch tokens experts topk heads seq head_dim
  hidden params``), empty / NaN where the kernel does not have that parameter;
* ``time_s`` (median over the samples), ``time_p10_s``, ``time_p90_s`` (10th and 90th
  percentiles), ``flops`` and ``bytes`` (the analytic counts of the catalogue), ``repeats``
  (number of timed samples) and ``inner`` (calls per sample; time columns are per call).

Metadata (device, device name, CPU model, threads, torch / CUDA / driver versions, date, the
command) lives in the file: a CSV starts with the comment lines ``# netsim-kernel-table v1``
and ``# meta: {json}`` before the header; a Parquet file stores the same JSON under the schema
metadata key ``netsim.kernel_table``.  A CSV without the comment lines is accepted (empty
metadata), so a table can be written by hand.

Lookup
------
:meth:`KernelTable.predict` answers ``kernel, pass, dtype, shape -> seconds``:

1. take the rows of that (kernel, dtype, pass);
2. keep the rows whose secondary parameters are nearest the query's (sum of
   ``|log2(row) - log2(query)|``);
3. interpolate ``log(time)`` piecewise-linearly against ``log(cost)`` (FLOPs or bytes of the
   row shape, from the catalogue) at the query's cost;
4. above the largest measured cost the time grows linearly with the cost (the throughput at
   the edge is kept); below the smallest it follows the first segment's log-log slope clamped
   to [0, 1] (never faster than linear, never increasing: small kernels are overhead-bound).

A table with one row in the chosen set scales that row's time linearly with the cost.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from netsim.calibration.catalogue import (
    DTYPE_BYTES,
    KERNELS,
    PASSES,
    SHAPE_COLUMNS,
    KernelSpec,
    Shape,
    canonical_dtype,
    get_kernel,
)
from netsim.calibration.surface import GemmSurface
from netsim.errors import SpecError, TraceError
from netsim.io import atomic_file
from netsim.limits import QUANTITY_MAX

__all__ = [
    "DTYPE_BYTES",
    "KERNELS",
    "PARQUET_META_KEY",
    "PASSES",
    "SHAPE_COLUMNS",
    "TABLE_COLUMNS",
    "TABLE_MAGIC",
    "KernelSpec",
    "KernelTable",
    "Shape",
    "canonical_dtype",
    "get_kernel",
]

TABLE_COLUMNS: Final = (
    "kernel",
    "dtype",
    "pass",
    *SHAPE_COLUMNS,
    "time_s",
    "time_p10_s",
    "time_p90_s",
    "flops",
    "bytes",
    "repeats",
    "inner",
    "label",
)
TABLE_MAGIC: Final = "# netsim-kernel-table v1"
PARQUET_META_KEY: Final = b"netsim.kernel_table"


# --------------------------------------------------------------------------- table


@dataclass
class _Group:
    """Precomputed arrays of one (kernel, dtype, pass) for fast lookup."""

    sec_log2: np.ndarray  # rows x secondary params
    cost_log: np.ndarray  # log(cost) per row
    time_log: np.ndarray  # log(time_s) per row


class KernelTable:
    """A measured kernel table (see the module docstring for the format).

    Build one with :meth:`load` (from a file), :meth:`from_frame` or the profiler; save with
    :meth:`save`.  ``table.df`` is the validated DataFrame, ``table.meta`` the metadata dict.
    """

    def __init__(self, df: pd.DataFrame, meta: Mapping[str, Any] | None = None, *, source: str = "<table>"):
        self.source = source
        self.df = _validate(df, source)
        self.meta: dict[str, Any] = dict(meta or {})
        self._groups: dict[tuple[str, str, str], _Group] = {}
        for (kernel, dtype, pass_), g in self.df.groupby(["kernel", "dtype", "pass"], sort=True):
            spec = KERNELS[str(kernel)]
            sec = np.log2(g[list(spec.secondary)].to_numpy(dtype=float)) if spec.secondary else np.zeros((len(g), 0))
            cols = {p: g[p].to_numpy(dtype=float) for p in spec.params}
            flops, nbytes = spec.counts(cols, str(pass_), str(dtype))
            costs = flops if spec.cost == "flops" else nbytes
            self._groups[(str(kernel), str(dtype), str(pass_))] = _Group(
                sec, np.log(costs), np.log(g["time_s"].to_numpy(dtype=float))
            )
        self._surfaces: dict[tuple[str, str], GemmSurface] = {}
        raw = self.meta.get("gemm_surface") or {}
        if not isinstance(raw, Mapping):
            raise TraceError("gemm_surface must map 'dtype/pass' to surface parameters", source=source, field="meta")
        for key, params in raw.items():
            dtype, _, pass_ = str(key).partition("/")
            if pass_ not in ("fwd", "bwd") or not isinstance(params, Mapping):
                raise TraceError(
                    f"gemm_surface key {key!r} must be 'dtype/fwd' or 'dtype/bwd' with a mapping",
                    source=source,
                    field="meta",
                )
            try:
                d = canonical_dtype(dtype)
                self._surfaces[(d, pass_)] = GemmSurface.from_dict(params, source=source)
            except SpecError as exc:
                raise TraceError(f"gemm_surface {key}: {exc.message}", source=source, field="meta") from None

    # ---------------------------------------------------------------- construction / io

    @classmethod
    def from_frame(cls, df: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> KernelTable:
        """A table from a DataFrame (missing shape columns are added as NaN)."""
        return cls(df, meta)

    @classmethod
    def load(cls, path: str | Path) -> KernelTable:
        """Read and validate a table (``.csv`` or ``.parquet``); TraceError naming file + column."""
        p = Path(path)
        src = str(path)
        if not p.is_file():
            raise TraceError("kernel table not found", source=src)
        meta: dict[str, Any] = {}
        if p.suffix.lower() in (".parquet", ".pq"):
            try:
                import pyarrow.parquet as pq

                pt = pq.read_table(p)
            except Exception as exc:
                raise TraceError(f"cannot read Parquet kernel table: {exc}", source=src) from None
            raw = (pt.schema.metadata or {}).get(PARQUET_META_KEY)
            if raw:
                meta = _parse_meta(raw.decode(), src)
            df = pt.to_pandas()
        else:
            try:
                text = p.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise TraceError(f"cannot read kernel table: {exc}", source=src) from None
            lines = text.splitlines(keepends=True)
            body_start = 0
            for i, line in enumerate(lines):
                if not line.startswith("#"):
                    body_start = i
                    break
                if line.startswith("# meta:"):
                    meta = _parse_meta(line[len("# meta:") :], src)
            else:
                body_start = len(lines)
            body = "".join(lines[body_start:])
            if not body.strip():
                raise TraceError("kernel table has no header row and no data", source=src)
            try:
                df = pd.read_csv(io.StringIO(body))
            except (pd.errors.ParserError, ValueError) as exc:
                raise TraceError(f"malformed CSV: {' '.join(str(exc).split())}", source=src) from None
        return cls(df, meta, source=src)

    def overlay(self, other: KernelTable) -> KernelTable:
        """This table with ``other``'s kernels in place of its own: every row of a kernel that
        ``other`` measures is dropped here (all dtypes and passes, so one implementation answers
        each kernel) and ``other``'s rows are added.  The metadata is this table's (its GEMM
        surfaces included) with ``overlays`` listing what was laid over it: ``other``'s source,
        kernels and metadata."""
        kernels = other.kernels()
        df = pd.concat([self.df[~self.df["kernel"].isin(kernels)], other.df], ignore_index=True)
        meta = dict(self.meta)
        meta["overlays"] = [
            *meta.get("overlays", []),
            {"source": Path(other.source).name, "kernels": kernels, "meta": dict(other.meta)},
        ]
        return KernelTable(df, meta, source=self.source)

    def save(self, path: str | Path) -> None:
        """Write the table atomically as CSV (metadata in comment lines) or Parquet."""
        p = Path(path)
        df = self.df.loc[:, list(TABLE_COLUMNS)]
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pt = pa.Table.from_pandas(df, preserve_index=False)
            pt = pt.replace_schema_metadata(
                {**(pt.schema.metadata or {}), PARQUET_META_KEY: json.dumps(self.meta, sort_keys=True).encode()}
            )
            with atomic_file(p, "wb") as fh:
                pq.write_table(pt, fh)
        else:
            with atomic_file(p, "w") as fh:
                fh.write(TABLE_MAGIC + "\n")
                fh.write("# meta: " + json.dumps(self.meta, sort_keys=True) + "\n")
                df.to_csv(fh, index=False, float_format="%.10g", lineterminator="\n")

    # ---------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self.df)

    def kernels(self) -> list[str]:
        """Kernel names present in the table, sorted."""
        return sorted(self.df["kernel"].unique().tolist())

    def dtypes(self, kernel: str, pass_: str | None = None) -> list[str]:
        """Dtypes measured for ``kernel`` (and ``pass_`` if given), sorted."""
        return sorted({d for (k, d, p) in self._groups if k == kernel and (pass_ is None or p == pass_)})

    def covers(self, kernel: str, pass_: str, dtype: str | None = None) -> bool:
        """True if :meth:`predict` can answer (kernel, pass_, dtype) from measurements."""
        try:
            self._resolve(kernel, pass_, dtype)
        except SpecError:
            return False
        return True

    def _resolve(self, kernel: str, pass_: str, dtype: str | None) -> tuple[KernelSpec, str]:
        spec = get_kernel(kernel)
        spec.check_pass(pass_)
        if spec.fixed_dtype is not None:
            d = spec.fixed_dtype
        elif dtype is None:
            have = self.dtypes(kernel, pass_)
            if len(have) != 1:
                raise SpecError(
                    f"kernel table {self.source}: {kernel}/{pass_}: "
                    + (f"give a dtype (measured: {', '.join(have)})" if have else "not measured")
                )
            d = have[0]
        else:
            d = canonical_dtype(dtype)
        if (kernel, d, pass_) not in self._groups:
            have = self.dtypes(kernel, pass_)
            raise SpecError(
                f"kernel table {self.source}: no measurements of {kernel}/{pass_} in {d}"
                + (f" (measured: {', '.join(have)})" if have else "")
            )
        return spec, d

    def predict(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        """Predicted seconds of one call of ``kernel`` (pass ``pass_``) at ``shape``.

        ``dtype`` may be omitted when the table has a single dtype for that kernel/pass.
        Raises SpecError for an unknown kernel/pass, a bad shape, or a (kernel, pass, dtype)
        the table does not cover (check :meth:`covers` first to fall back).
        """
        spec, d = self._resolve(kernel, pass_, dtype)
        q = spec.check_shape(shape)
        surf = self._surfaces.get((d, pass_)) if kernel == "gemm" else None
        if surf is not None:
            return surf.time1(q["m"], q["n"], q["k"])
        g = self._groups[(kernel, d, pass_)]
        if spec.secondary:
            qsec = np.log2(np.array([q[p] for p in spec.secondary]))
            dist = np.abs(g.sec_log2 - qsec).sum(axis=1)
            mask = dist <= dist.min() + 1e-9
            xs, ys = g.cost_log[mask], g.time_log[mask]
        else:
            xs, ys = g.cost_log, g.time_log
        xq = math.log(spec.cost_value(q, pass_, d))
        return math.exp(_interp_loglog(xs, ys, xq))

    # ---------------------------------------------------------------- summaries

    def gemm_surface(self, dtype: str, pass_: str = "fwd") -> GemmSurface | None:
        """The fitted GEMM surface of (dtype, pass) stored in the metadata, or None."""
        return self._surfaces.get((canonical_dtype(dtype), pass_))

    def throughput(self) -> pd.DataFrame:
        """Per row: achieved FLOP/s and bytes/s (from the catalogue counts)."""
        df = self.df.copy()
        df["flops_per_s"] = df["flops"] / df["time_s"]
        df["bytes_per_s"] = df["bytes"] / df["time_s"]
        return df


def _interp_loglog(xs: np.ndarray, ys: np.ndarray, xq: float) -> float:
    """Piecewise-linear y(x) in log-log space with the edge rules of the module docstring."""
    ux, inv = np.unique(xs, return_inverse=True)
    uy = np.bincount(inv, weights=ys) / np.bincount(inv)  # mean log-time at equal cost
    if len(ux) == 1:
        return float(uy[0] + (xq - ux[0]))
    if xq >= ux[-1]:
        return float(uy[-1] + (xq - ux[-1]))
    if xq <= ux[0]:
        slope = (uy[1] - uy[0]) / (ux[1] - ux[0])
        return float(uy[0] + min(max(slope, 0.0), 1.0) * (xq - ux[0]))
    return float(np.interp(xq, ux, uy))


def _parse_meta(raw: str, src: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TraceError(f"metadata is not valid JSON ({exc.msg})", source=src, field="meta") from None
    if not isinstance(meta, dict):
        raise TraceError("metadata must be a JSON object", source=src, field="meta")
    return meta


def _validate(df: pd.DataFrame, src: str) -> pd.DataFrame:
    """Check columns and values; return a copy with every table column in canonical order."""
    required = ("kernel", "dtype", "pass", "time_s")
    for col in required:
        if col not in df.columns:
            raise TraceError(
                f"missing column (a kernel table needs {', '.join(required)} and the shape columns)",
                source=src,
                field=col,
            )
    if len(df) == 0:
        raise TraceError("kernel table has no rows", source=src)
    out = _numeric_columns(df, src)
    out["kernel"] = out["kernel"].astype(str)
    out["pass"] = out["pass"].astype(str)
    _check_names(out, src)
    out["dtype"] = _canonical_dtypes(out["dtype"], src)
    _check_values(out, src)
    _fill_counts(out, src)
    out["repeats"] = out["repeats"].astype(int)
    out["inner"] = out["inner"].astype(int)
    return out.loc[:, list(TABLE_COLUMNS)]


def _numeric_columns(df: pd.DataFrame, src: str) -> pd.DataFrame:
    """A copy with the optional columns added (shapes NaN, percentiles = ``time_s``, counts 1,
    label empty) and the shape, time and count columns as numbers (first non-number: error)."""
    out = df.copy().reset_index(drop=True)
    for col in SHAPE_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    for col in ("time_p10_s", "time_p90_s"):
        if col not in out.columns:
            out[col] = out["time_s"]
    for col in ("repeats", "inner"):
        if col not in out.columns:
            out[col] = 1
    out["label"] = out["label"].fillna("").astype(str) if "label" in out.columns else ""
    for col in (*SHAPE_COLUMNS, "time_s", "time_p10_s", "time_p90_s", "repeats", "inner"):
        try:
            out[col] = pd.to_numeric(out[col])
        except (ValueError, TypeError):
            bad = next(i for i, v in enumerate(out[col]) if not _is_number(v))
            raise TraceError(f"row {bad + 1}: not a number ({out[col].iloc[bad]!r})", source=src, field=col) from None
    return out


def _check_values(out: pd.DataFrame, src: str) -> None:
    """Every kernel's shape parameters > 0, times finite, > 0, at most
    :data:`netsim.limits.QUANTITY_MAX`'s duration and ordered p10 <= time <= p90, repeats and inner
    integers >= 1 (the first bad row is the error; a shape's size is checked by :func:`_fill_counts`)."""
    for kernel, g in out.groupby("kernel", sort=False):
        for p in KERNELS[str(kernel)].params:
            v = g[p].to_numpy(dtype=float)
            _first_bad(~(np.isfinite(v) & (v > 0)), g.index, src, p, f"kernel {kernel} needs {p} > 0", g[p])
    t, lo, hi = (out[c].to_numpy(dtype=float) for c in ("time_s", "time_p10_s", "time_p90_s"))
    longest = QUANTITY_MAX["duration"]
    for col, v in (("time_s", t), ("time_p10_s", lo), ("time_p90_s", hi)):
        ok = np.isfinite(v) & (v > 0) & (v <= longest)
        _first_bad(~ok, out.index, src, col, f"must be finite, > 0 and at most {longest:.0e} s", out[col])
    order = (lo <= t * (1 + 1e-6)) & (t <= hi * (1 + 1e-6))
    _first_bad(~order, out.index, src, "time_s", "needs time_p10_s <= time_s <= time_p90_s", None)
    for col in ("repeats", "inner"):
        v = out[col].to_numpy(dtype=float)
        bad = ~(np.isfinite(v) & (v >= 1) & (np.mod(np.where(np.isfinite(v), v, 0.5), 1.0) == 0))
        _first_bad(bad, out.index, src, col, "must be an integer >= 1", out[col])


def _fill_counts(out: pd.DataFrame, src: str) -> None:
    """flops / bytes: recomputed from the catalogue where missing, measured-file values kept
    otherwise; a shape whose operands exceed :data:`netsim.limits.QUANTITY_MAX` bytes (no
    accelerator holds that) is an error naming its largest parameter."""
    for col in ("flops", "bytes"):
        out[col] = pd.to_numeric(out[col], errors="coerce") if col in out.columns else np.nan
    big = QUANTITY_MAX["bytes"]
    for (kernel, pass_, dtype), g in out.groupby(["kernel", "pass", "dtype"], sort=False):
        spec = KERNELS[str(kernel)]
        flops, nbytes = spec.counts({p: g[p].to_numpy(dtype=float) for p in spec.params}, str(pass_), str(dtype))
        if spec.params:
            widest = max(spec.params, key=lambda p: float(g[p].max()))
            what = f"kernel {kernel}'s shape moves more than {big:.3g} bytes (no accelerator holds that)"
            _first_bad(~(nbytes <= big), g.index, src, widest, what, g[widest])
        out.loc[g.index, "flops"] = np.where(np.isfinite(g["flops"]), g["flops"], flops)
        out.loc[g.index, "bytes"] = np.where(np.isfinite(g["bytes"]), g["bytes"], nbytes)


def _check_names(out: pd.DataFrame, src: str) -> None:
    """Every row's kernel is in the catalogue and its pass is one the kernel has."""
    known = out["kernel"].isin(list(KERNELS))
    if not known.all():
        i = int(np.flatnonzero(~known.to_numpy())[0])
        raise TraceError(
            f"row {i + 1}: unknown kernel {out['kernel'].iloc[i]!r}; known: {', '.join(KERNELS)}",
            source=src,
            field="kernel",
        )
    for kernel, g in out.groupby("kernel", sort=False):
        spec = KERNELS[str(kernel)]
        bad = ~g["pass"].isin(list(spec.passes)).to_numpy()
        if bad.any():
            i = int(g.index[np.flatnonzero(bad)[0]])
            raise TraceError(
                f"row {i + 1}: kernel {kernel} has no pass {out['pass'].iloc[i]!r}; allowed: {', '.join(spec.passes)}",
                source=src,
                field="pass",
            )


def _canonical_dtypes(col: pd.Series, src: str) -> list[str]:
    """Canonical dtype names of a column (one lookup per distinct value)."""
    names: dict[str, str] = {}
    for i, d in enumerate(col.astype(str)):
        if d not in names:
            try:
                names[d] = canonical_dtype(d)
            except SpecError as exc:
                raise TraceError(f"row {i + 1}: {exc.message}", source=src, field="dtype") from None
    return [names[d] for d in col.astype(str)]


def _first_bad(bad: np.ndarray, index: pd.Index, src: str, field: str, what: str, values: pd.Series | None) -> None:
    """TraceError naming the first row where ``bad`` is true (``values``: to quote the value)."""
    if not bad.any():
        return
    i = int(index[np.flatnonzero(bad)[0]])
    got = f" (got {values.loc[i]!r})" if values is not None else ""
    raise TraceError(f"row {i + 1}: {what}{got}", source=src, field=field)


def _is_number(v: object) -> bool:
    """A value pandas reads as a number: finite and within int64 ("1e999" is not)."""
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(x)) and abs(x) < 2.0**63
