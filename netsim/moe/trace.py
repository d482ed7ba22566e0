"""Routing traces: which source rank sent how many tokens to which expert, per step and layer.

File format (Parquet, long format; one row per non-zero (step, layer, micro-batch, source
rank, expert); rows that are absent mean zero)::

    column      type   meaning
    step        int64  training step (>= 0)
    layer       int64  MoE layer index (>= 0)
    microbatch  int64  micro-batch index (>= 0); OPTIONAL, absent = 0
    src_rank    int64  EP rank the tokens come from, in [0, ep)
    expert      int64  logical expert, in [0, experts)
    tokens      int64  (token, slot) assignments kept (top_k already counted), >= 0
    dropped     int64  assignments the router requested but a capacity limit dropped, >= 0

The Parquet *schema metadata* holds, under the key ``netsim.routing_trace``, a JSON object::

    {"format": "netsim.routing_trace", "version": 1,
     "experts": 16, "ep": 16, "ranks_per_node": 8, "hidden": 64, "top_k": 1,
     "router": "switch", "tokens_per_rank": 128, "extra": {...free-form provenance...}}

``experts`` = logical experts per layer, ``ep`` = ranks of the EP group, ``ranks_per_node`` =
EP ranks per node (rank ``r`` is on node ``r // ranks_per_node``), ``hidden`` = hidden size of
the model that produced the trace (the byte matrices of a replay use the *replayed* model's
hidden size), ``top_k`` = experts per token, ``router`` = router name (or ``measured``),
``tokens_per_rank`` = tokens of one source rank per (step, layer, micro-batch) before top-k
(optional, ``null`` if unknown; used to rescale a trace to another batch size).

:func:`read_routing_trace` validates everything and raises :class:`~netsim.errors.TraceError`
naming the file and the column (or metadata field) at fault.  :func:`convert_measured` turns a
simple measured form into a trace:

* CSV, one row per (token, slot) assignment, columns ``layer``, ``src_rank``, ``expert`` and
  optionally ``step``, ``microbatch``, ``dropped`` (0/1; the row's ``expert`` is the one the
  router requested); rows with ``expert = -1`` are empty slots and ignored.
* NPZ with an int array ``expert_ids`` of shape ``[layers, ranks, tokens, top_k]`` or
  ``[steps, layers, ranks, tokens, top_k]`` (``-1`` = empty slot) and optionally a boolean
  ``dropped`` of the same shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from netsim.errors import TraceError
from netsim.io import atomic_file
from netsim.limits import MAX_TRACE_BYTES, check_file_size

IntArray = NDArray[np.int64]

METADATA_KEY = b"netsim.routing_trace"
FORMAT_NAME = "netsim.routing_trace"
FORMAT_VERSION = 1
KEY_COLUMNS = ("step", "layer", "microbatch", "src_rank", "expert")
COLUMNS = (*KEY_COLUMNS, "tokens", "dropped")
REQUIRED_COLUMNS = ("step", "layer", "src_rank", "expert", "tokens", "dropped")

__all__ = [
    "COLUMNS",
    "METADATA_KEY",
    "RoutingTrace",
    "TraceMeta",
    "convert_measured",
    "read_routing_trace",
    "trace_from_expert_ids",
    "write_routing_trace",
]


@dataclass(frozen=True)
class TraceMeta:
    """Trace metadata (stored in the Parquet schema metadata)."""

    experts: int
    ep: int
    ranks_per_node: int
    hidden: int
    top_k: int
    router: str
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_per_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, obj: Any, source: str) -> TraceMeta:
        if not isinstance(obj, dict):
            raise TraceError("routing-trace metadata is not a JSON object", source=source, field="metadata")
        if obj.get("format") != FORMAT_NAME:
            raise TraceError(f"metadata.format must be {FORMAT_NAME!r}", source=source, field="metadata.format")
        if obj.get("version") != FORMAT_VERSION:
            raise TraceError(
                f"unsupported version {obj.get('version')!r} (this netsim reads {FORMAT_VERSION})",
                source=source,
                field="metadata.version",
            )
        vals: dict[str, Any] = {}
        for key in ("experts", "ep", "ranks_per_node", "hidden", "top_k"):
            v = obj.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TraceError(f"must be an integer >= 1 (got {v!r})", source=source, field=f"metadata.{key}")
            vals[key] = v
        router = obj.get("router")
        if not isinstance(router, str) or not router:
            raise TraceError(f"must be a non-empty string (got {router!r})", source=source, field="metadata.router")
        extra = obj.get("extra", {})
        if not isinstance(extra, dict):
            raise TraceError("must be a JSON object", source=source, field="metadata.extra")
        tpr = obj.get("tokens_per_rank")
        if tpr is not None and (not isinstance(tpr, int) or isinstance(tpr, bool) or tpr < 1):
            raise TraceError(
                f"must be null or an integer >= 1 (got {tpr!r})", source=source, field="metadata.tokens_per_rank"
            )
        return cls(router=router, extra=extra, tokens_per_rank=tpr, **vals)


@dataclass
class RoutingTrace:
    """A routing trace in memory: the long table plus its metadata."""

    table: pd.DataFrame
    meta: TraceMeta
    source: str = "<memory>"

    @classmethod
    def from_counts(
        cls,
        records: Iterable[tuple[int, int, int, NDArray[np.integer[Any]], NDArray[np.integer[Any]] | None]],
        meta: TraceMeta,
    ) -> RoutingTrace:
        """Build from ``(step, layer, microbatch, tokens[ep, n], dropped[ep, n] | None)`` records."""
        parts: list[np.ndarray] = []
        for step, layer, mb, tokens, dropped in records:
            tok = np.asarray(tokens, dtype=np.int64)
            if tok.shape != (meta.ep, meta.experts):
                raise TraceError(f"counts have shape {tok.shape}, expected ({meta.ep}, {meta.experts})")
            drp = np.zeros_like(tok) if dropped is None else np.asarray(dropped, dtype=np.int64)
            src, exp = np.nonzero((tok > 0) | (drp > 0))
            block = np.empty((src.size, 7), dtype=np.int64)
            block[:, 0], block[:, 1], block[:, 2] = step, layer, mb
            block[:, 3], block[:, 4] = src, exp
            block[:, 5], block[:, 6] = tok[src, exp], drp[src, exp]
            parts.append(block)
        data = np.concatenate(parts) if parts else np.empty((0, 7), dtype=np.int64)
        table = pd.DataFrame(data, columns=list(COLUMNS))
        return cls(table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True), meta)

    # -- access ---------------------------------------------------------------------------
    def batch_keys(self) -> list[tuple[int, int, int]]:
        """Sorted distinct ``(step, layer, microbatch)`` present in the trace."""
        k = self.table[["step", "layer", "microbatch"]].drop_duplicates()
        return sorted((int(a), int(b), int(c)) for a, b, c in k.itertuples(index=False))

    @property
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.table["step"].unique())

    @property
    def layers(self) -> list[int]:
        return sorted(int(s) for s in self.table["layer"].unique())

    @property
    def microbatches(self) -> list[int]:
        return sorted(int(s) for s in self.table["microbatch"].unique())

    def _matrix(self, rows: pd.DataFrame, column: str) -> IntArray:
        out = np.zeros((self.meta.ep, self.meta.experts), dtype=np.int64)
        np.add.at(out, (rows["src_rank"].to_numpy(), rows["expert"].to_numpy()), rows[column].to_numpy())
        return out

    def counts(self, step: int, layer: int, microbatch: int = 0) -> tuple[IntArray, IntArray]:
        """``(tokens, dropped)``, two ``[ep, experts]`` matrices for one (step, layer, micro-batch)."""
        t = self.table
        rows = t[(t["step"] == step) & (t["layer"] == layer) & (t["microbatch"] == microbatch)]
        return self._matrix(rows, "tokens"), self._matrix(rows, "dropped")

    def iter_counts(self) -> Iterator[tuple[int, int, int, IntArray, IntArray]]:
        """``(step, layer, microbatch, tokens, dropped)`` for every key, in sorted order."""
        for (s, ly, mb), rows in self.table.groupby(["step", "layer", "microbatch"], sort=True):
            yield int(s), int(ly), int(mb), self._matrix(rows, "tokens"), self._matrix(rows, "dropped")

    def window(self, first: int, stop: int) -> RoutingTrace:
        """The steps ``first <= step < stop``, renumbered from 0 (a converged window to replay).

        The window is recorded in ``meta.extra["window"]``; an empty window raises TraceError.
        """
        t = self.table
        rows = t[(t["step"] >= first) & (t["step"] < stop)].copy()
        if rows.empty:
            raise TraceError(
                f"no steps in [{first}, {stop}) (trace steps {self.steps[0]}-{self.steps[-1]})",
                source=self.source,
                field="step",
            )
        rows["step"] -= first
        meta = TraceMeta(**{**asdict(self.meta), "extra": {**self.meta.extra, "window": [first, stop]}})
        return RoutingTrace(rows.reset_index(drop=True), meta, self.source)

    def expert_load(self) -> NDArray[np.float64]:
        """``[layers, experts]`` total tokens per expert (all steps), rows in :attr:`layers` order.

        The input of EPLB (:func:`netsim.moe.placement.eplb_placements`).
        """
        layers = self.layers
        out = np.zeros((len(layers), self.meta.experts))
        index = {ly: i for i, ly in enumerate(layers)}
        li = self.table["layer"].map(index).to_numpy()
        np.add.at(out, (li, self.table["expert"].to_numpy()), self.table["tokens"].to_numpy())
        return out


def write_routing_trace(trace: RoutingTrace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` to ``path`` (Parquet, atomically) and return the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(trace.table[list(COLUMNS)].astype(np.int64), preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[METADATA_KEY] = json.dumps(trace.meta.to_json(), sort_keys=True).encode()
    table = table.replace_schema_metadata(md)
    out = Path(path)
    with atomic_file(out, "wb") as fh:
        pq.write_table(table, fh)
    return out


def read_routing_trace(path: str | os.PathLike[str]) -> RoutingTrace:
    """Read and validate a routing trace; any problem raises TraceError naming file and column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise TraceError("routing trace not found", source=src)
    check_file_size(p, MAX_TRACE_BYTES, "a routing trace")
    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"not a readable Parquet file ({exc})", source=src) from None
    md = table.schema.metadata or {}
    if METADATA_KEY not in md:
        raise TraceError(
            f"no routing-trace metadata (schema metadata key {METADATA_KEY.decode()!r})", source=src, field="metadata"
        )
    try:
        meta_obj = json.loads(md[METADATA_KEY])
    except ValueError as exc:
        raise TraceError(f"metadata is not valid JSON ({exc})", source=src, field="metadata") from None
    meta = TraceMeta.from_json(meta_obj, src)
    df = table.to_pandas()
    return RoutingTrace(_validate_table(df, meta, src), meta, src)


def _validate_table(df: pd.DataFrame, meta: TraceMeta, src: str) -> pd.DataFrame:
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise TraceError(f"missing column (required: {', '.join(REQUIRED_COLUMNS)})", source=src, field=col)
    if "microbatch" not in df.columns:
        df = df.assign(microbatch=0)
    out = {}
    for col in COLUMNS:
        s = df[col]
        if s.isna().any():
            raise TraceError(f"{int(s.isna().sum())} missing values", source=src, field=col)
        if not pd.api.types.is_integer_dtype(s.dtype):
            if pd.api.types.is_float_dtype(s.dtype) and np.all(np.mod(s.to_numpy(), 1) == 0):
                s = s.astype(np.int64)
            else:
                raise TraceError(f"must hold integers (dtype {s.dtype})", source=src, field=col)
        a = s.to_numpy(dtype=np.int64)
        if a.size and a.min() < 0:
            raise TraceError(f"negative value {int(a.min())}", source=src, field=col)
        out[col] = a
    if out["src_rank"].size and out["src_rank"].max() >= meta.ep:
        raise TraceError(f"value {int(out['src_rank'].max())} >= ep={meta.ep}", source=src, field="src_rank")
    if out["expert"].size and out["expert"].max() >= meta.experts:
        raise TraceError(f"value {int(out['expert'].max())} >= experts={meta.experts}", source=src, field="expert")
    clean = pd.DataFrame(out, columns=list(COLUMNS))
    _check_token_totals(clean, meta, src)
    _check_layers(clean, src)
    dup = clean.duplicated(list(KEY_COLUMNS))
    if dup.any():
        r = clean[dup].iloc[0]
        raise TraceError(
            f"duplicate row for step={r['step']} layer={r['layer']} microbatch={r['microbatch']} "
            f"src_rank={r['src_rank']} expert={r['expert']}",
            source=src,
            field="expert",
        )
    return clean.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def _check_token_totals(df: pd.DataFrame, meta: TraceMeta, src: str) -> None:
    """A source rank routes at most ``tokens_per_rank * top_k`` (token, slot) pairs per
    (step, layer, micro-batch), kept plus dropped, when the metadata records ``tokens_per_rank``."""
    if meta.tokens_per_rank is None or df.empty:
        return
    cap = meta.tokens_per_rank * meta.top_k
    totals = (df["tokens"] + df["dropped"]).groupby([df[c] for c in KEY_COLUMNS[:-1]]).sum()
    if int(totals.max()) > cap:
        (step, layer, mb, rank), n = totals.idxmax(), int(totals.max())
        raise TraceError(
            f"step {step} layer {layer} micro-batch {mb}: src_rank {rank} routes {n} (token, slot) "
            f"pairs, more than its tokens_per_rank * top_k = {meta.tokens_per_rank} * {meta.top_k} = "
            f"{cap} (metadata)",
            source=src,
            field="tokens",
        )


def _check_layers(df: pd.DataFrame, src: str) -> None:
    """Every (step, micro-batch) must hold rows for every layer of the trace (a layer with no
    routed token at all is a missing layer, not an idle one: every rank routes its tokens)."""
    if df.empty:
        return
    layers = np.unique(df["layer"].to_numpy())
    per = df.groupby(["step", "microbatch"], sort=True)["layer"].nunique()
    bad = per[per < layers.size]
    if len(bad):
        step, mb = bad.index[0]
        have = set(df[(df["step"] == step) & (df["microbatch"] == mb)]["layer"].unique().tolist())
        missing = [int(x) for x in layers if int(x) not in have]
        raise TraceError(
            f"step {step} micro-batch {mb} has no rows for layer(s) {missing[:5]} (layers in the "
            f"trace: {', '.join(str(int(x)) for x in layers[:8])}{' ...' if layers.size > 8 else ''})",
            source=src,
            field="layer",
        )


# --------------------------------------------------------------------------------------------
# measured-form converter
# --------------------------------------------------------------------------------------------


def convert_measured(
    path: str | os.PathLike[str],
    *,
    experts: int,
    ep: int,
    ranks_per_node: int,
    hidden: int,
    top_k: int,
    router: str = "measured",
) -> RoutingTrace:
    """Convert per-token expert ids (CSV or NPZ, see module docstring) into a routing trace."""
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise TraceError("measured routing file not found", source=src)
    suffix = p.suffix.lower()
    tpr: int | None = None
    if suffix == ".csv":
        cols = _measured_csv(p, src)
    elif suffix == ".npz":
        cols, tpr = _measured_npz(p, src)
    else:
        raise TraceError(f"unknown measured format {suffix!r}; allowed: .csv, .npz", source=src)
    for col, limit, name in (("src_rank", ep, "ep"), ("expert", experts, "experts")):
        a = cols[col]
        if a.size and a.max() >= limit:
            raise TraceError(f"value {int(a.max())} >= {name}={limit}", source=src, field=col)
    for col in ("step", "layer", "microbatch", "src_rank"):
        if cols[col].size and cols[col].min() < 0:
            raise TraceError(f"negative value {int(cols[col].min())}", source=src, field=col)
    keep = cols["expert"] >= 0
    df = pd.DataFrame({k: v[keep] for k, v in cols.items()})
    df["tokens"] = (df.pop("dropped") == 0).astype(np.int64)
    df["dropped"] = 1 - df["tokens"]
    agg = df.groupby(list(KEY_COLUMNS), sort=True, as_index=False)[["tokens", "dropped"]].sum()
    meta = TraceMeta(experts, ep, ranks_per_node, hidden, top_k, router, {"converted_from": p.name}, tpr)
    return RoutingTrace(agg.astype(np.int64)[list(COLUMNS)].reset_index(drop=True), meta, src)


def trace_from_expert_ids(
    expert_ids: NDArray[np.integer[Any]],
    *,
    experts: int,
    ep: int,
    ranks_per_node: int,
    hidden: int,
    router: str = "measured",
    dropped: NDArray[np.bool_] | None = None,
    extra: dict[str, Any] | None = None,
    source: str = "<memory>",
) -> RoutingTrace:
    """A trace from per-token expert ids, as a model's forward pass records them.

    ``expert_ids``: ints of shape ``[layers, ranks, tokens, top_k]`` or ``[steps, layers, ranks,
    tokens, top_k]`` (``-1`` = empty slot); ``ranks`` must equal ``ep``; ``dropped``: an optional
    boolean array of the same shape.  ``top_k`` and ``tokens_per_rank`` come from the shape.
    Raises TraceError naming the array for a wrong shape, dtype or an id out of ``[-1, experts)``.
    """
    ids = np.asarray(expert_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TraceError(f"must be an integer array (dtype {ids.dtype})", source=source, field="expert_ids")
    if ids.ndim == 4:
        ids = ids[None]
    if ids.ndim != 5 or ids.shape[2] != ep:
        raise TraceError(
            f"must have shape [layers, ranks={ep}, tokens, top_k] or [steps, ...] (got {ids.shape})",
            source=source,
            field="expert_ids",
        )
    if ids.size and (ids.min() < -1 or ids.max() >= experts):
        bad = int(ids.min()) if ids.min() < -1 else int(ids.max())
        raise TraceError(f"expert id {bad} outside [-1, {experts})", source=source, field="expert_ids")
    drop = np.zeros(ids.shape, dtype=bool) if dropped is None else np.asarray(dropped)
    if drop.ndim == 4:
        drop = drop[None]
    if drop.shape != ids.shape or drop.dtype != np.bool_:
        raise TraceError(f"must be a boolean array shaped like expert_ids {ids.shape}", source=source, field="dropped")
    steps, layers, ranks, tokens, k = ids.shape
    records = []
    for st in range(steps):
        for ly in range(layers):
            e = ids[st, ly].reshape(ranks, -1)
            d = drop[st, ly].reshape(ranks, -1)
            r = np.repeat(np.arange(ranks), e.shape[1]).reshape(ranks, -1)
            ok = e >= 0
            flat = r[ok] * experts + e[ok]
            both = np.bincount(flat, minlength=ranks * experts).reshape(ranks, experts)
            drp = np.bincount(flat[d[ok]], minlength=ranks * experts).reshape(ranks, experts)
            records.append((st, ly, 0, both - drp, drp))
    meta = TraceMeta(experts, ep, ranks_per_node, hidden, k, router, dict(extra or {}), tokens)
    out = RoutingTrace.from_counts(records, meta)
    out.source = source
    return out


def _measured_csv(p: Path, src: str) -> dict[str, IntArray]:
    try:
        df = pd.read_csv(p)
    except (ValueError, OSError) as exc:
        raise TraceError(f"cannot read CSV ({exc})", source=src) from None
    for col in ("layer", "src_rank", "expert"):
        if col not in df.columns:
            raise TraceError("missing column (required: layer, src_rank, expert)", source=src, field=col)
    out: dict[str, IntArray] = {}
    for col in ("step", "layer", "microbatch", "src_rank", "expert", "dropped"):
        if col not in df.columns:
            out[col] = np.zeros(len(df), dtype=np.int64)
            continue
        s = pd.to_numeric(df[col], errors="coerce")
        if s.isna().any():
            bad = int(np.flatnonzero(s.isna().to_numpy())[0])
            raise TraceError(f"non-numeric or missing value in data row {bad + 1}", source=src, field=col)
        a = s.to_numpy(dtype=np.float64)
        if not np.all(np.mod(a, 1) == 0):
            raise TraceError("must hold integers", source=src, field=col)
        out[col] = a.astype(np.int64)
    if out["dropped"].size and not np.isin(out["dropped"], (0, 1)).all():
        raise TraceError("must be 0 or 1", source=src, field="dropped")
    if out["expert"].size and out["expert"].min() < -1:
        raise TraceError("must be >= -1 (-1 = empty slot)", source=src, field="expert")
    return out


def _measured_npz(p: Path, src: str) -> tuple[dict[str, IntArray], int]:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise TraceError(f"cannot read NPZ ({exc})", source=src) from None
    if "expert_ids" not in arrays:
        raise TraceError("missing array (required: expert_ids)", source=src, field="expert_ids")
    ids = arrays["expert_ids"]
    if not np.issubdtype(ids.dtype, np.integer):
        raise TraceError(f"must be an integer array (dtype {ids.dtype})", source=src, field="expert_ids")
    if ids.ndim == 4:
        ids = ids[None]
    if ids.ndim != 5:
        raise TraceError(
            f"must have shape [layers, ranks, tokens, top_k] or [steps, ...] (got {ids.shape})",
            source=src,
            field="expert_ids",
        )
    if ids.size and ids.min() < -1:
        raise TraceError("must be >= -1 (-1 = empty slot)", source=src, field="expert_ids")
    dropped = arrays.get("dropped")
    if dropped is None:
        drop = np.zeros(ids.shape, dtype=bool)
    else:
        drop = np.asarray(dropped)
        if drop.ndim == 4:
            drop = drop[None]
        if drop.shape != ids.shape or drop.dtype != np.bool_:
            raise TraceError(
                f"must be a boolean array shaped like expert_ids {ids.shape} (got {drop.dtype} {drop.shape})",
                source=src,
                field="dropped",
            )
    step, layer, rank, _, _ = np.indices(ids.shape)
    cols = {
        "step": step.reshape(-1).astype(np.int64),
        "layer": layer.reshape(-1).astype(np.int64),
        "microbatch": np.zeros(ids.size, dtype=np.int64),
        "src_rank": rank.reshape(-1).astype(np.int64),
        "expert": ids.reshape(-1).astype(np.int64),
        "dropped": drop.reshape(-1).astype(np.int64),
    }
    return cols, int(ids.shape[3])
