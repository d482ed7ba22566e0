"""Import PyTorch profiler (Kineto) Chrome traces: per-op durations as a table.

``torch.profiler.profile(...).export_chrome_trace("trace.json")`` writes a Chrome trace: a
JSON object whose ``traceEvents`` list holds complete events (``"ph": "X"``) with ``name``,
``cat``, ``ts`` and ``dur`` (microseconds), ``pid``, ``tid`` and ``args``.  The categories that
matter:

===================  ==============  =====================================================
``cat``              kind            what it is
===================  ==============  =====================================================
cpu_op, operator     ``cpu_op``      an aten operator on a CPU thread (nests: aten::linear
                                     contains aten::addmm)
kernel               ``kernel``      a GPU kernel on a stream (pid = device)
gpu_memcpy/memset    ``gpu_mem``     copies and memsets on the GPU
cuda_runtime/driver  ``runtime``     cudaLaunchKernel etc.; ``args.correlation`` links a
                                     launch to its kernel
user_annotation,     ``annotation``  ``torch.profiler.record_function("name")`` ranges (on
gpu_user_annotation                  the CPU thread and mirrored on the GPU stream)
python_function      ``python``      Python frames (with_stack=True)
anything else        ``other``
===================  ==============  =====================================================

:func:`load_kineto` parses and validates a trace (plain JSON or gzip-compressed, as
``tensorboard_trace_handler(..., use_gzip=True)`` writes it) into an event table (``ts_us``/``dur_us``
relative to the first event, ``self_us``: the duration minus that of the events nested
directly inside it on the same thread).  :func:`select_events` restricts it to kinds, a time
window, and/or the inside of ``record_function`` ranges of a given name (CPU events by time on
the same process; GPU events by their own GPU-side annotation range or by the time of the
runtime call that launched them).  :func:`summarize_ops` aggregates per (kind, name): count,
total, self total, mean, median, min, max, in seconds.

Malformed input raises :class:`~netsim.errors.TraceError` with a one-line message naming the
file and the event.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsim.errors import LimitError, SpecError, TraceError
from netsim.limits import MAX_TRACE_BYTES, check_file_size

KINDS = ("cpu_op", "kernel", "gpu_mem", "runtime", "annotation", "python", "other")
DEFAULT_KINDS = ("cpu_op", "kernel", "gpu_mem", "annotation")

_CAT_KIND = {
    "cpu_op": "cpu_op",
    "operator": "cpu_op",
    "kernel": "kernel",
    "gpu_memcpy": "gpu_mem",
    "gpu_memset": "gpu_mem",
    "cuda_runtime": "runtime",
    "cuda_driver": "runtime",
    "user_annotation": "annotation",
    "gpu_user_annotation": "annotation",
    "python_function": "python",
}
_GPU_KINDS = ("kernel", "gpu_mem")

EVENT_COLUMNS = ("name", "cat", "kind", "pid", "tid", "ts_us", "dur_us", "self_us", "correlation", "gpu")
SUMMARY_COLUMNS = ("kind", "name", "count", "total_s", "self_s", "mean_s", "median_s", "min_s", "max_s", "share")


@dataclass
class KinetoTrace:
    """A parsed Chrome trace: ``events`` (columns :data:`EVENT_COLUMNS`) and trace metadata."""

    events: pd.DataFrame
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    t0_us: float = 0.0  # absolute ts of the first event; events are relative to it
    #: events row -> (``Input Dims``, ``Input type``) of ops recorded with ``record_shapes=True``
    shapes: dict[int, tuple[Any, Any]] = field(default_factory=dict)


def _num(v: Any, src: str, where: str) -> float:
    if isinstance(v, bool) or v is None:
        raise TraceError(f"must be a number (got {v!r})", source=src, field=where)
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise TraceError(f"must be a number (got {v!r})", source=src, field=where) from None
    except OverflowError:
        raise TraceError(f"must be a finite number (got {str(v)[:40]})", source=src, field=where) from None
    if not math.isfinite(x):
        raise TraceError(f"must be finite (got {v!r})", source=src, field=where)
    return x


def read_json(path: str | Path) -> Any:
    """Load a JSON file, gzip-compressed or not (PyTorch's ``tensorboard_trace_handler(...,
    use_gzip=True)`` writes ``.pt.trace.json.gz``); TraceError naming the file (missing, empty,
    invalid, truncated, a corrupt archive) and LimitError past :data:`MAX_TRACE_BYTES`
    uncompressed."""
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise TraceError("trace file not found", source=src)
    check_file_size(p, MAX_TRACE_BYTES, "a JSON trace")
    try:
        with p.open("rb") as fh:
            gz = fh.read(2) == _GZIP_MAGIC
        text = _read_gzip(p, src) if gz else p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise TraceError(f"cannot read trace: {exc}", source=src) from None
    if not text.strip():
        raise TraceError("trace file is empty", source=src)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise LimitError("nested too deeply to read (real traces nest a few levels)", source=src) from None
    except ValueError as exc:
        if not isinstance(exc, json.JSONDecodeError):
            raise TraceError(f"not valid JSON: {exc}", source=src) from None
        raise json_error(exc, text, src) from None


_GZIP_MAGIC = b"\x1f\x8b"


def _read_gzip(p: Path, src: str) -> str:
    """The text of a gzip file, refused past :data:`MAX_TRACE_BYTES` once decompressed."""
    with gzip.open(p, "rb") as fh:
        data = fh.read(MAX_TRACE_BYTES + 1)
    if len(data) > MAX_TRACE_BYTES:
        raise LimitError(
            f"a JSON trace decompresses to more than {MAX_TRACE_BYTES / 2**30:.0f} GiB; netsim reads at most that",
            source=src,
        )
    return data.decode("utf-8")


def json_error(exc: json.JSONDecodeError, text: str, src: str) -> TraceError:
    """One line for a JSON syntax error, saying when the file looks cut short (the error is at
    its end, or a string runs to the end)."""
    truncated = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
    what = exc.msg if exc.msg.endswith(" at") else f"{exc.msg} at"
    hint = " (truncated file?)" if truncated else ""
    return TraceError(f"not valid JSON: {what} line {exc.lineno} column {exc.colno}{hint}", source=src)


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (Python's reader accepts them; a trace must not use them)."""
    raise ValueError(f"{name} is not a JSON number")


def load_kineto(path: str | Path) -> KinetoTrace:
    """Parse and validate a Chrome / Kineto trace JSON file."""
    src = str(path)
    raw, meta = _trace_events(read_json(path), src)
    recs: list[tuple[Any, ...]] = []
    for i, ev in enumerate(raw):
        rec = _complete_event(ev, i, src)
        if rec is not None:
            recs.append(rec)
    if not recs:
        raise TraceError("no complete ('ph': 'X') events in the trace", source=src)
    ev_df = pd.DataFrame.from_records(
        recs, columns=["name", "cat", "kind", "pid", "tid", "ts_us", "dur_us", "correlation", "gpu", "raw"]
    )
    t0 = float(ev_df["ts_us"].min())
    ev_df["ts_us"] = ev_df["ts_us"] - t0
    ev_df = ev_df.sort_values(["ts_us", "dur_us"], ascending=[True, False], kind="stable").reset_index(drop=True)
    ev_df["self_us"] = _self_times(ev_df)
    shapes = {}
    for row, i in enumerate(ev_df["raw"].to_numpy()):
        args = raw[int(i)].get("args")
        if isinstance(args, dict) and "Input Dims" in args:
            shapes[row] = (args["Input Dims"], args.get("Input type"))
    return KinetoTrace(ev_df.loc[:, list(EVENT_COLUMNS)], src, meta, t0, shapes)


def _trace_events(doc: Any, src: str) -> tuple[list[Any], dict[str, Any]]:
    """The event list of a parsed trace file and its other top-level keys (the metadata)."""
    if isinstance(doc, dict):
        if "traceEvents" not in doc:
            raise TraceError("not a Chrome trace: the JSON object has no traceEvents", source=src)
        raw = doc["traceEvents"]
        meta = {k: v for k, v in doc.items() if k != "traceEvents"}
    elif isinstance(doc, list):
        raw, meta = doc, {}
    else:
        raise TraceError("not a Chrome trace: expected an object with traceEvents or a list of events", source=src)
    if not isinstance(raw, list):
        raise TraceError("must be a list of events", source=src, field="traceEvents")
    return raw, meta


def _complete_event(ev: Any, i: int, src: str) -> tuple[Any, ...] | None:
    """Event ``i`` as a record (name, cat, kind, pid, tid, ts, dur, correlation, gpu, i) if it is
    a complete ('X') event, None for other phases; an error names the first bad field."""
    where = f"traceEvents[{i}]"
    if not isinstance(ev, dict):
        raise TraceError("not an object", source=src, field=where)
    if not isinstance(ev.get("ph"), str):
        raise TraceError(
            f"an event needs a phase 'ph' (a string such as \"X\"; got {ev.get('ph')!r})",
            source=src,
            field=f"{where}.ph",
        )
    if ev.get("ph") != "X":
        return None
    name = ev.get("name")
    if not isinstance(name, str):
        raise TraceError(f"complete event without a name (got {name!r})", source=src, field=f"{where}.name")
    for key in ("ts", "dur"):
        if key not in ev:
            raise TraceError(f"complete event {name!r} has no {key}", source=src, field=f"{where}.{key}")
    ts = _num(ev["ts"], src, f"{where}.ts")
    dur = _num(ev["dur"], src, f"{where}.dur")
    if dur < 0:
        raise TraceError(f"negative duration {dur} us for {name!r}", source=src, field=f"{where}.dur")
    cat = str(ev.get("cat", ""))
    kind = _CAT_KIND.get(cat.lower(), "other")
    args = ev.get("args")
    corr = args.get("correlation") if isinstance(args, dict) else None
    corr_v = float(corr) if isinstance(corr, int | float) and not isinstance(corr, bool) else np.nan
    gpu = kind in _GPU_KINDS or cat.lower() == "gpu_user_annotation"
    return (name, cat, kind, str(ev.get("pid", "")), str(ev.get("tid", "")), ts, dur, corr_v, gpu, i)


def _self_times(df: pd.DataFrame) -> np.ndarray:
    """Duration minus the durations of directly nested events on the same (pid, tid)."""
    self_us = df["dur_us"].to_numpy(dtype=float).copy()
    ts = df["ts_us"].to_numpy(dtype=float)
    end = ts + df["dur_us"].to_numpy(dtype=float)
    for _, idx in df.groupby(["pid", "tid"], sort=False).indices.items():
        stack: list[int] = []
        for i in idx:  # sorted by start, longer first
            while stack and end[stack[-1]] <= ts[i] + 1e-9:
                stack.pop()
            if stack:
                parent = stack[-1]
                self_us[parent] -= min(end[i], end[parent]) - ts[i]
            stack.append(i)
    return np.maximum(self_us, 0.0)


def _ranges(ev: pd.DataFrame, mask: np.ndarray) -> np.ndarray:
    r = ev.loc[mask, ["ts_us", "dur_us"]].to_numpy(dtype=float)
    return np.column_stack([r[:, 0], r[:, 0] + r[:, 1]]) if len(r) else np.zeros((0, 2))


def _inside(starts: np.ndarray, ends: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    if len(ranges) == 0:
        return np.zeros(len(starts), dtype=bool)
    eps = 1e-6
    hit = (ranges[None, :, 0] <= starts[:, None] + eps) & (ends[:, None] <= ranges[None, :, 1] + eps)
    return np.asarray(hit.any(axis=1), dtype=bool)


def select_events(
    trace: KinetoTrace,
    *,
    kinds: Sequence[str] | None = DEFAULT_KINDS,
    start_us: float | None = None,
    end_us: float | None = None,
    within: str | None = None,
) -> pd.DataFrame:
    """Events of ``kinds`` (None = all) fully inside [start_us, end_us] (relative to the first
    event) and, if ``within`` is given, inside a ``record_function`` range of that name (shell
    wildcards allowed, e.g. ``"layer*"``)."""
    ev = trace.events
    src = trace.source
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise SpecError(f"unknown event kind {bad[0]!r}; allowed: {', '.join(KINDS)}", field="kinds")
    mask = np.ones(len(ev), dtype=bool)
    starts = ev["ts_us"].to_numpy(dtype=float)
    ends = starts + ev["dur_us"].to_numpy(dtype=float)
    if start_us is not None:
        mask &= starts >= start_us - 1e-9
    if end_us is not None:
        mask &= ends <= end_us + 1e-9
    if within is not None:
        is_ann = (ev["kind"] == "annotation").to_numpy()
        named = is_ann & np.array([fnmatch.fnmatchcase(n, within) for n in ev["name"]], dtype=bool)
        if not named.any():
            names = sorted(set(ev.loc[is_ann, "name"]))
            shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            raise TraceError(
                f"no record_function range named {within!r} in the trace"
                + (f" (ranges: {shown})" if names else " (it has no record_function ranges)"),
                source=src,
                field="--within",
            )
        gpu = ev["gpu"].to_numpy(dtype=bool)
        inside = np.zeros(len(ev), dtype=bool)
        # CPU side: inside a CPU annotation of the same process
        for pid in sorted(set(ev.loc[~gpu, "pid"])):
            sel = (~gpu) & (ev["pid"] == pid).to_numpy()
            rng = _ranges(ev, named & ~gpu & (ev["pid"] == pid).to_numpy())
            inside[sel] = _inside(starts[sel], ends[sel], rng)
        # GPU side: inside a GPU annotation range, or launched from inside a CPU range
        if gpu.any():
            inside[gpu] = _inside(starts[gpu], ends[gpu], _ranges(ev, named & gpu))
            runtime = (ev["kind"] == "runtime").to_numpy() & inside & ev["correlation"].notna().to_numpy()
            launched = set(ev.loc[runtime, "correlation"].tolist())
            if launched:
                inside[gpu] |= ev.loc[gpu, "correlation"].isin(launched).to_numpy()
        mask &= inside
    if kinds is not None:
        mask &= ev["kind"].isin(list(kinds)).to_numpy()
    out = ev.loc[mask].reset_index(drop=True)
    if out.empty:
        what = []
        if kinds is not None:
            what.append(f"kinds {', '.join(kinds)}")
        if start_us is not None or end_us is not None:
            lo = start_us if start_us is not None else 0
            hi = end_us if end_us is not None else "end"
            what.append(f"window [{lo}, {hi}] us")
        if within is not None:
            what.append(f"within {within!r}")
        raise TraceError("no events match " + " and ".join(what), source=src)
    return out


def summarize_ops(events: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, name): count, total_s, self_s, mean_s, median_s, min_s, max_s and ``share``
    (total / sum of totals of the same kind); sorted by kind, then total descending."""
    if events.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    g = events.groupby(["kind", "name"], sort=True)
    out = g.agg(
        count=("dur_us", "size"),
        total_s=("dur_us", "sum"),
        self_s=("self_us", "sum"),
        mean_s=("dur_us", "mean"),
        median_s=("dur_us", "median"),
        min_s=("dur_us", "min"),
        max_s=("dur_us", "max"),
    ).reset_index()
    for col in ("total_s", "self_s", "mean_s", "median_s", "min_s", "max_s"):
        out[col] = out[col] * 1e-6
    out["share"] = out["total_s"] / out.groupby("kind")["total_s"].transform("sum")
    kind_order = {k: i for i, k in enumerate(KINDS)}
    out = out.sort_values(
        ["kind", "total_s", "name"],
        key=lambda s: s.map(kind_order) if s.name == "kind" else s,
        ascending=[True, False, True],
    )
    return out.reset_index(drop=True).loc[:, list(SUMMARY_COLUMNS)]


def write_table_file(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` atomically as CSV or Parquet (by extension)."""
    from netsim.io import atomic_file

    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        with atomic_file(p, "wb") as fh:
            df.to_parquet(fh, index=False)
    else:
        with atomic_file(p) as fh:
            df.to_csv(fh, index=False, float_format="%.9g")
