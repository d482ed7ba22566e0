"""Kernel catalogue and measured kernel tables with log-space interpolation.

The training-step replay needs the duration of every compute op of a layer (GEMMs, attention,
router, token permutation, norms, optimizer).  netsim measures them with
``netsim profile`` (:mod:`netsim.calibration.profiler`) into a *kernel table* and looks them up
here; kernels or dtypes a table does not cover fall back to a roofline
(:mod:`netsim.calibration.roofline`, :mod:`netsim.calibration.compute`).

Kernel catalogue
----------------
Every kernel has a fixed set of shape parameters, the passes it is measured for, and analytic
FLOP and byte counts (:data:`KERNELS`):

==============  =================================  =========  ==========================================
kernel          shape parameters                   passes     what is timed
==============  =================================  =========  ==========================================
gemm            m, n, k                            fwd, bwd   ``Y[m,n] = X[m,k] @ W[k,n]``; bwd = dX and dW
grouped_gemm    tokens, experts, n, k              fwd, bwd   per-expert GEMMs, ``tokens/experts`` rows each
attention       batch, heads, seq, head_dim        fwd, bwd   causal ``scaled_dot_product_attention``
router_linear   tokens, hidden, experts, topk      fwd, bwd   linear gate, softmax, top-k, renormalise
router_grap     tokens, hidden, experts, topk      fwd, bwd   GrAP gate (mean of hidden slices), ReLU,
                                                              softmax, top-k (LocMoE)
permute         tokens, hidden, topk               fwd, bwd   gather tokens into expert order
                                                              (``tokens*topk`` rows)
unpermute       tokens, hidden, topk               fwd, bwd   weighted scatter-add back to token order
layernorm       tokens, hidden                     fwd, bwd   ``layer_norm`` with weight and bias
rmsnorm         tokens, hidden                     fwd, bwd   ``rms_norm`` with weight
swiglu          tokens, hidden                     fwd, bwd   ``silu(a) * b`` on a ``[tokens, 2*hidden]``
                                                              input
adamw           params                             step       ``torch.optim.AdamW.step`` on fp32 params
==============  =================================  =========  ==========================================

Each kernel has a *sweep* parameter (the one a grid varies: m, tokens, seq, params) and
*secondary* parameters (all the others).  Its *cost axis* is FLOPs for compute-bound kernels
and bytes for memory-bound ones (permute, unpermute, norms, swiglu, adamw, GrAP router).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from netsim.errors import SpecError, TraceError
from netsim.io import atomic_file

# --------------------------------------------------------------------------- dtypes

#: Bytes per element of the canonical dtype names.
DTYPE_BYTES: Final[dict[str, float]] = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "float8": 1.0}

_DTYPE_ALIASES: Final[dict[str, str]] = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "tf32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "float8": "float8",
    "fp8": "float8",
    "float8_e4m3fn": "float8",
    "float8_e5m2": "float8",
    "e4m3": "float8",
    "e5m2": "float8",
}


def canonical_dtype(name: str, *, field: str = "dtype") -> str:
    """Map a dtype name or alias (``bf16``, ``fp32``, ``half`` ...) to its canonical name."""
    key = str(name).strip().lower().removeprefix("torch.")
    try:
        return _DTYPE_ALIASES[key]
    except KeyError:
        raise SpecError(
            f"unknown dtype {name!r}; allowed: {', '.join(DTYPE_BYTES)} (aliases fp32, bf16, fp16, fp8)",
            field=field,
        ) from None


# --------------------------------------------------------------------------- catalogue

SHAPE_COLUMNS: Final = (
    "m",
    "n",
    "k",
    "batch",
    "tokens",
    "experts",
    "topk",
    "heads",
    "seq",
    "head_dim",
    "hidden",
    "params",
)
PASSES: Final = ("fwd", "bwd", "step")
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
)
TABLE_MAGIC: Final = "# netsim-kernel-table v1"
PARQUET_META_KEY: Final = b"netsim.kernel_table"

Shape = Mapping[str, float]
_CountFn = Callable[[Shape, str], float]


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of the catalogue.

    Attributes:
        name: the kernel name used in tables and in :meth:`ComputeModel.time` calls.
        params: its shape parameters (a subset of :data:`SHAPE_COLUMNS`).
        sweep: the parameter a measurement grid varies (interpolation runs along it).
        passes: the passes it is measured for.
        cost: ``"flops"`` or ``"bytes"``: the axis interpolated over.
        description: one line for docs and ``--help``.
        fixed_dtype: a dtype the kernel always runs in (AdamW keeps fp32 master weights), or
            None when it runs in the requested dtype.
    """

    name: str
    params: tuple[str, ...]
    sweep: str
    passes: tuple[str, ...]
    cost: str
    description: str
    flops_fn: _CountFn = field(repr=False)
    elems_fn: _CountFn = field(repr=False)  # bytes = elems * dtype bytes + extra_bytes
    extra_bytes_fn: _CountFn | None = field(default=None, repr=False)
    fixed_dtype: str | None = None

    @property
    def secondary(self) -> tuple[str, ...]:
        """The shape parameters other than the sweep parameter."""
        return tuple(p for p in self.params if p != self.sweep)

    def check_pass(self, pass_: str) -> str:
        if pass_ not in self.passes:
            raise SpecError(f"kernel {self.name!r} has no pass {pass_!r}; allowed: {', '.join(self.passes)}")
        return pass_

    def check_shape(self, shape: Mapping[str, Any]) -> dict[str, float]:
        """Validate ``shape`` (every parameter present, finite, > 0; no unknown keys)."""
        unknown = sorted(set(shape) - set(self.params))
        if unknown:
            raise SpecError(
                f"kernel {self.name!r} takes shape parameters {', '.join(self.params)}; unknown: {', '.join(unknown)}"
            )
        out: dict[str, float] = {}
        for p in self.params:
            if p not in shape:
                raise SpecError(f"kernel {self.name!r} needs shape parameter {p!r} ({', '.join(self.params)})")
            try:
                v = float(shape[p])
            except (TypeError, ValueError):
                raise SpecError(f"kernel {self.name!r}: {p} must be a number (got {shape[p]!r})") from None
            if not math.isfinite(v) or v <= 0:
                raise SpecError(f"kernel {self.name!r}: {p} must be finite and > 0 (got {shape[p]!r})")
            out[p] = v
        return out

    def dtype_for(self, dtype: str) -> str:
        """The dtype the kernel actually runs in for a requested ``dtype``."""
        return self.fixed_dtype or canonical_dtype(dtype)

    def flops(self, shape: Shape, pass_: str) -> float:
        """Floating-point operations of one call (multiply-add = 2)."""
        return float(self.flops_fn(shape, pass_))

    def nbytes(self, shape: Shape, pass_: str, dtype: str) -> float:
        """Bytes read + written by one call (ideal, each tensor once) in ``dtype``."""
        elt = DTYPE_BYTES[self.dtype_for(dtype)]
        extra = self.extra_bytes_fn(shape, pass_) if self.extra_bytes_fn else 0.0
        return float(self.elems_fn(shape, pass_) * elt + extra)

    def cost_value(self, shape: Shape, pass_: str, dtype: str) -> float:
        """The value on this kernel's cost axis (FLOPs or bytes)."""
        return self.flops(shape, pass_) if self.cost == "flops" else self.nbytes(shape, pass_, dtype)


def _fb(pass_: str, fwd: float, bwd: float) -> float:
    return fwd if pass_ == "fwd" else bwd


def _gemm_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 4.0) * s["m"] * s["n"] * s["k"]


def _gemm_elems(s: Shape, p: str) -> float:
    m, n, k = s["m"], s["n"], s["k"]
    return _fb(p, m * k + k * n + m * n, 2.0 * (m * n + m * k + k * n))


def _ggemm_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 4.0) * s["tokens"] * s["n"] * s["k"]


def _ggemm_elems(s: Shape, p: str) -> float:
    t, e, n, k = s["tokens"], s["experts"], s["n"], s["k"]
    return _fb(p, t * k + e * k * n + t * n, 2.0 * (t * n + t * k + e * k * n))


def _attn_flops(s: Shape, p: str) -> float:
    # causal: half of the 2 (fwd) / 5 (bwd incl. recompute) s x s x d matmuls
    return _fb(p, 2.0, 5.0) * s["batch"] * s["heads"] * s["seq"] ** 2 * s["head_dim"]


def _attn_elems(s: Shape, p: str) -> float:
    return _fb(p, 4.0, 8.0) * s["batch"] * s["heads"] * s["seq"] * s["head_dim"]


def _rlin_flops(s: Shape, p: str) -> float:
    t, h, e = s["tokens"], s["hidden"], s["experts"]
    return _fb(p, 2.0 * t * h * e + 4.0 * t * e, 4.0 * t * h * e + 4.0 * t * e)


def _rlin_elems(s: Shape, p: str) -> float:
    t, h, e, k = s["tokens"], s["hidden"], s["experts"], s["topk"]
    return _fb(p, t * h + h * e + 2.0 * t * e + t * k, 2.0 * (t * h + h * e + t * e))


def _topk_idx_bytes(s: Shape, p: str) -> float:
    return _fb(p, 8.0 * s["tokens"] * s["topk"], 0.0)


def _grap_flops(s: Shape, p: str) -> float:
    return s["tokens"] * s["hidden"] + 4.0 * s["tokens"] * s["experts"]


def _grap_elems(s: Shape, p: str) -> float:
    t, h, e, k = s["tokens"], s["hidden"], s["experts"], s["topk"]
    return _fb(p, t * h + 2.0 * t * e + t * k, 2.0 * t * h + 2.0 * t * e)


def _perm_flops(s: Shape, p: str) -> float:
    return _fb(p, 0.0, s["tokens"] * s["topk"] * s["hidden"])


def _perm_elems(s: Shape, p: str) -> float:
    t, h, k = s["tokens"], s["hidden"], s["topk"]
    return _fb(p, 2.0 * t * k * h, t * k * h + 2.0 * t * h)


def _idx_bytes(s: Shape, p: str) -> float:
    return 8.0 * s["tokens"] * s["topk"]


def _unperm_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 3.0) * s["tokens"] * s["topk"] * s["hidden"]


def _unperm_elems(s: Shape, p: str) -> float:
    t, h, k = s["tokens"], s["hidden"], s["topk"]
    return _fb(p, t * k * h + 2.0 * t * h, 2.0 * t * k * h + t * h)


def _ln_flops(s: Shape, p: str) -> float:
    return _fb(p, 7.0, 12.0) * s["tokens"] * s["hidden"]


def _rms_flops(s: Shape, p: str) -> float:
    return _fb(p, 4.0, 8.0) * s["tokens"] * s["hidden"]


def _norm_elems(s: Shape, p: str) -> float:
    t, h = s["tokens"], s["hidden"]
    return _fb(p, 2.0 * t * h + 2.0 * h, 3.0 * t * h + 4.0 * h)


def _swiglu_flops(s: Shape, p: str) -> float:
    return _fb(p, 5.0, 10.0) * s["tokens"] * s["hidden"]


def _swiglu_elems(s: Shape, p: str) -> float:
    return _fb(p, 3.0, 5.0) * s["tokens"] * s["hidden"]


def _adamw_flops(s: Shape, p: str) -> float:
    return 16.0 * s["params"]


def _adamw_elems(s: Shape, p: str) -> float:
    # fp32: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq
    return 7.0 * s["params"]


_FB = ("fwd", "bwd")

#: The kernel catalogue, keyed by kernel name.
KERNELS: Final[dict[str, KernelSpec]] = {
    k.name: k
    for k in (
        KernelSpec(
            "gemm",
            ("m", "n", "k"),
            "m",
            _FB,
            "flops",
            "dense GEMM Y[m,n] = X[m,k] @ W[k,n]",
            _gemm_flops,
            _gemm_elems,
        ),
        KernelSpec(
            "grouped_gemm",
            ("tokens", "experts", "n", "k"),
            "tokens",
            _FB,
            "flops",
            "expert GEMMs: tokens/experts rows per expert, W_e[k,n]",
            _ggemm_flops,
            _ggemm_elems,
        ),
        KernelSpec(
            "attention",
            ("batch", "heads", "seq", "head_dim"),
            "seq",
            _FB,
            "flops",
            "causal scaled_dot_product_attention",
            _attn_flops,
            _attn_elems,
        ),
        KernelSpec(
            "router_linear",
            ("tokens", "hidden", "experts", "topk"),
            "tokens",
            _FB,
            "flops",
            "linear gate + softmax + top-k (renormalised)",
            _rlin_flops,
            _rlin_elems,
            _topk_idx_bytes,
        ),
        KernelSpec(
            "router_grap",
            ("tokens", "hidden", "experts", "topk"),
            "tokens",
            _FB,
            "bytes",
            "GrAP gate (LocMoE): mean of hidden slices, ReLU, softmax, top-k",
            _grap_flops,
            _grap_elems,
            _topk_idx_bytes,
        ),
        KernelSpec(
            "permute",
            ("tokens", "hidden", "topk"),
            "tokens",
            _FB,
            "bytes",
            "gather tokens into expert order (tokens*topk rows)",
            _perm_flops,
            _perm_elems,
            _idx_bytes,
        ),
        KernelSpec(
            "unpermute",
            ("tokens", "hidden", "topk"),
            "tokens",
            _FB,
            "bytes",
            "weighted scatter-add of expert outputs back to token order",
            _unperm_flops,
            _unperm_elems,
            _idx_bytes,
        ),
        KernelSpec(
            "layernorm",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "LayerNorm with weight and bias",
            _ln_flops,
            _norm_elems,
        ),
        KernelSpec(
            "rmsnorm",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "RMSNorm with weight",
            _rms_flops,
            _norm_elems,
        ),
        KernelSpec(
            "swiglu",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "SwiGLU activation silu(a) * b, output [tokens, hidden]",
            _swiglu_flops,
            _swiglu_elems,
        ),
        KernelSpec(
            "adamw",
            ("params",),
            "params",
            ("step",),
            "bytes",
            "AdamW optimizer step on fp32 parameters",
            _adamw_flops,
            _adamw_elems,
            fixed_dtype="float32",
        ),
    )
}


def get_kernel(name: str) -> KernelSpec:
    """The catalogue entry of ``name``; SpecError listing the known kernels otherwise."""
    try:
        return KERNELS[name]
    except KeyError:
        raise SpecError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}", field="kernel") from None


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
            costs = [
                spec.cost_value({p: float(r[p]) for p in spec.params}, str(pass_), str(dtype)) for _, r in g.iterrows()
            ]
            self._groups[(str(kernel), str(dtype), str(pass_))] = _Group(
                sec, np.log(np.asarray(costs, dtype=float)), np.log(g["time_s"].to_numpy(dtype=float))
            )

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

    def save(self, path: str | Path) -> None:
        """Write the table atomically as CSV (metadata in comment lines) or Parquet."""
        p = Path(path)
        df = self.df.loc[:, list(TABLE_COLUMNS)]
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pt = pa.Table.from_pandas(df, preserve_index=False)
            pt = pt.replace_schema_metadata(
                {
                    **(pt.schema.metadata or {}),
                    PARQUET_META_KEY: json.dumps(self.meta, sort_keys=True).encode(),
                }
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
    out = df.copy().reset_index(drop=True)
    for col in SHAPE_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    for col in ("time_p10_s", "time_p90_s"):
        if col not in out.columns:
            out[col] = out["time_s"] if "time_s" in out.columns else np.nan
    for col in ("repeats", "inner"):
        if col not in out.columns:
            out[col] = 1
    for col in (*SHAPE_COLUMNS, "time_s", "time_p10_s", "time_p90_s", "repeats", "inner"):
        try:
            out[col] = pd.to_numeric(out[col])
        except (ValueError, TypeError):
            bad = next(i for i, v in enumerate(out[col]) if not _is_number(v))
            raise TraceError(f"row {bad + 1}: not a number ({out[col].iloc[bad]!r})", source=src, field=col) from None
    out["kernel"] = out["kernel"].astype(str)
    out["pass"] = out["pass"].astype(str)
    dtypes = []
    for i, (kernel, pass_, dtype) in enumerate(zip(out["kernel"], out["pass"], out["dtype"], strict=True)):
        row = f"row {i + 1}: "
        if kernel not in KERNELS:
            raise TraceError(f"{row}unknown kernel {kernel!r}; known: {', '.join(KERNELS)}", source=src, field="kernel")
        spec = KERNELS[kernel]
        if pass_ not in spec.passes:
            raise TraceError(
                f"{row}kernel {kernel} has no pass {pass_!r}; allowed: {', '.join(spec.passes)}",
                source=src,
                field="pass",
            )
        try:
            dtypes.append(canonical_dtype(str(dtype)))
        except SpecError as exc:
            raise TraceError(f"{row}{exc.message}", source=src, field="dtype") from None
        for p in spec.params:
            v = out.at[i, p]
            if not (math.isfinite(v) and v > 0):
                raise TraceError(f"{row}kernel {kernel} needs {p} > 0 (got {v!r})", source=src, field=p)
        for col in ("time_s", "time_p10_s", "time_p90_s"):
            v = out.at[i, col]
            if not (math.isfinite(v) and v > 0):
                raise TraceError(f"{row}must be finite and > 0 (got {v!r})", source=src, field=col)
        if not out.at[i, "time_p10_s"] <= out.at[i, "time_s"] * (1 + 1e-6) or not (
            out.at[i, "time_s"] <= out.at[i, "time_p90_s"] * (1 + 1e-6)
        ):
            raise TraceError(f"{row}needs time_p10_s <= time_s <= time_p90_s", source=src, field="time_s")
        for col in ("repeats", "inner"):
            v = out.at[i, col]
            if not (math.isfinite(v) and v >= 1 and float(v).is_integer()):
                raise TraceError(f"{row}must be an integer >= 1 (got {v!r})", source=src, field=col)
    out["dtype"] = dtypes
    # flops / bytes: recompute from the catalogue where missing, keep measured-file values otherwise
    for col in ("flops", "bytes"):
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for i in range(len(out)):
        spec = KERNELS[out.at[i, "kernel"]]
        shape = {p: float(out.at[i, p]) for p in spec.params}
        if not math.isfinite(out.at[i, "flops"]):
            out.at[i, "flops"] = spec.flops(shape, out.at[i, "pass"])
        if not math.isfinite(out.at[i, "bytes"]):
            out.at[i, "bytes"] = spec.nbytes(shape, out.at[i, "pass"], out.at[i, "dtype"])
    out["repeats"] = out["repeats"].astype(int)
    out["inner"] = out["inner"].astype(int)
    return out.loc[:, list(TABLE_COLUMNS)]


def _is_number(v: object) -> bool:
    """A value pandas reads as a number: finite and within int64 ("1e999" is not)."""
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(x)) and abs(x) < 2.0**63
