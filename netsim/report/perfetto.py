"""Export a run's timeline as a Chrome trace (JSON) for Perfetto and chrome://tracing.

The Chrome trace event format is a JSON object ``{"traceEvents": [...]}``; the exporter writes

* one *process* per node (``pid`` = the node index, ``process_name`` metadata ``node <n>``),
* one *thread* per rank stream (``thread_name`` metadata ``'<device> <stream>'``, e.g.
  ``'n0.g3 compute'``; sorted by rank, then compute before communication streams),
* a complete event (``"ph": "X"``) per op from the ``ops`` table, named ``'<op> L<layer>'``,
  with kind, traffic class, layer, micro-batch, rank and stream in ``args``,
* counter tracks (``"ph": "C"``) of link utilisation (%) per network/tier from
  ``tier_timeseries``, in an extra process ``network``.

Timestamps and durations are microseconds (the format's unit) with nanosecond resolution: the
exporter works on integer nanoseconds and divides by 1000 at the end, so that nesting decided
on integers stays exact in the file.

Events on one thread must nest (an event either ends before the next starts or contains it).
When a stream's ops overlap partially, e.g. two collectives in flight on one comm stream, the
exporter spreads them over sub-threads (``'n0.g3 comm (2)'``) with a greedy interval
assignment, so every thread is a properly nested stack.

Large runs: ``ranks`` keeps a subset of ranks, ``aggregate`` merges consecutive ops of the same
kind and traffic class on a stream into one event (``count`` in args), and ``max_events`` caps
the op events: whole ranks are dropped (keeping ranks spread evenly over the range) until the
rest fits, and if a single rank is still too large its latest events are cut.  What was kept
is recorded under ``otherData``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from netsim.errors import NetsimError
from netsim.io import atomic_file
from netsim.report.tables import read_summary, read_table, run_name

#: Columns the exporter needs from the ``ops`` table (the others are optional).
OPS_COLUMNS = ("rank", "device", "node", "stream", "name", "kind", "start_s", "end_s")

TraceSource: TypeAlias = str | Path | pd.DataFrame | Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class TraceInfo:
    """What :func:`write_chrome_trace` wrote: file, event counts, ranks kept, threads."""

    path: Path
    ops_total: int
    events_written: int
    counter_events: int
    ranks: list[int] = field(default_factory=list)
    ranks_total: int = 0
    threads: int = 0
    truncated_events: int = 0


def _load(source: TraceSource) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any], str]:
    """(ops, tier_timeseries or None, summary or {}, source label)."""
    if isinstance(source, pd.DataFrame):
        return source, None, {}, "DataFrame"
    if isinstance(source, Mapping):
        ops = source.get("ops")
        if ops is None:
            raise NetsimError("a trace needs an 'ops' table", source="trace")
        return ops, source.get("tier_timeseries"), {}, "DataFrames"

    run_dir = Path(source)
    summary = read_summary(run_dir)
    ops = read_table(run_dir, "ops")
    if ops is None:
        raise NetsimError(
            "the run has no ops table (ops.parquet / ops.csv); no timeline to export", source=str(run_dir)
        )
    return ops, read_table(run_dir, "tier_timeseries"), summary, run_name(run_dir)


def _optional_int_array(col: pd.Series) -> np.ndarray:
    """A column of optional ints as int64 with -1 for empty / NaN / negative."""
    vals = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    out = np.where(np.isfinite(vals) & (vals >= 0), vals, -1.0)
    return out.astype(np.int64)


def _prepare(ops: pd.DataFrame, ranks: Sequence[int] | None) -> pd.DataFrame:
    missing = [c for c in OPS_COLUMNS if c not in ops.columns]
    if missing:
        raise NetsimError(f"ops table lacks column(s) {', '.join(missing)}", source="trace")
    df = pd.DataFrame(
        {
            "rank": pd.to_numeric(ops["rank"], errors="raise").astype(np.int64).to_numpy(),
            "device": ops["device"].astype(str).to_numpy(),
            "node": ops["node"].to_numpy(),
            "stream": ops["stream"].astype(str).to_numpy(),
            "name": ops["name"].astype(str).to_numpy(),
            "kind": ops["kind"].astype(str).to_numpy(),
            "traffic_class": (
                ops["traffic_class"].fillna("").astype(str).replace({"nan": "", "None": ""}).to_numpy()
                if "traffic_class" in ops.columns
                else np.full(len(ops), "", dtype=object)
            ),
            "layer": _optional_int_array(ops["layer"]) if "layer" in ops.columns else np.full(len(ops), -1),
            "microbatch": (
                _optional_int_array(ops["microbatch"]) if "microbatch" in ops.columns else np.full(len(ops), -1)
            ),
        }
    )
    start = pd.to_numeric(ops["start_s"], errors="coerce").to_numpy(dtype=float)
    end = pd.to_numeric(ops["end_s"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(start) | ~np.isfinite(end)
    if bad.any():
        raise NetsimError(f"ops table has {int(bad.sum())} op(s) with a missing start_s/end_s", source="trace")
    df["start_ns"] = np.rint(start * 1e9).astype(np.int64)
    df["end_ns"] = np.maximum(np.rint(end * 1e9).astype(np.int64), df["start_ns"].to_numpy())
    df["count"] = 1
    df["last_name"] = df["name"]
    df["last_layer"] = df["layer"]
    df["distinct_names"] = 1
    if ranks is not None:
        wanted = sorted({int(r) for r in ranks})
        present = set(df["rank"].unique().tolist())
        unknown = [r for r in wanted if r not in present]
        if unknown:
            raise NetsimError(f"no ops for rank(s) {', '.join(map(str, unknown))}", source="trace")
        df = df[df["rank"].isin(wanted)]
    return df.sort_values(["rank", "stream", "start_ns", "end_ns", "name"], kind="mergesort").reset_index(drop=True)


def _aggregate(df: pd.DataFrame, gap_ns: int) -> pd.DataFrame:
    """Merge runs of consecutive ops on one stream with the same kind and traffic class."""
    if df.empty:
        return df
    same_stream = (df["rank"].to_numpy()[1:] == df["rank"].to_numpy()[:-1]) & (
        df["stream"].to_numpy()[1:] == df["stream"].to_numpy()[:-1]
    )
    same_key = (df["kind"].to_numpy()[1:] == df["kind"].to_numpy()[:-1]) & (
        df["traffic_class"].to_numpy()[1:] == df["traffic_class"].to_numpy()[:-1]
    )
    prev_end = df.groupby(["rank", "stream"], sort=False)["end_ns"].cummax().to_numpy()[:-1]
    close = df["start_ns"].to_numpy()[1:] <= prev_end + gap_ns
    brk = np.concatenate([[True], ~(same_stream & same_key & close)])
    group = np.cumsum(brk) - 1
    g = df.groupby(group, sort=True)
    out = g.agg(
        rank=("rank", "first"),
        device=("device", "first"),
        node=("node", "first"),
        stream=("stream", "first"),
        name=("name", "first"),
        last_name=("name", "last"),
        distinct_names=("name", "nunique"),
        kind=("kind", "first"),
        traffic_class=("traffic_class", "first"),
        layer=("layer", "first"),
        last_layer=("layer", "last"),
        microbatch=("microbatch", "first"),
        start_ns=("start_ns", "min"),
        end_ns=("end_ns", "max"),
        count=("count", "sum"),
    )
    return out.reset_index(drop=True)


def _select_ranks(df: pd.DataFrame, max_events: int) -> tuple[pd.DataFrame, int]:
    """Keep ranks spread over the range so that at most ``max_events`` events remain."""
    if max_events < 1:
        raise NetsimError(f"max_events must be >= 1 (got {max_events})", source="trace")
    if len(df) <= max_events:
        return df, 0
    counts = df.groupby("rank").size()
    ordered = counts.index.to_numpy()

    def chosen(k: int) -> np.ndarray:
        idx = np.unique(np.linspace(0, len(ordered) - 1, k).round().astype(int))
        return ordered[idx]

    lo, hi = 1, len(ordered)  # largest k whose spread subset fits (binary search; counts vary a little)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(counts.loc[chosen(mid)].sum()) <= max_events:
            lo = mid
        else:
            hi = mid - 1
    keep = chosen(lo)
    out = df[df["rank"].isin(keep)]
    truncated = 0
    if len(out) > max_events:  # one rank alone is too large: keep its earliest events
        order = np.lexsort((out["end_ns"].to_numpy(), out["start_ns"].to_numpy()))
        kept = np.sort(order[:max_events])
        truncated = len(out) - max_events
        out = out.iloc[kept]
    return out.reset_index(drop=True), truncated


def assign_lanes(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Lane per interval so that the intervals within one lane nest properly.

    ``starts``/``ends`` are integers sorted by (start, -end) is not required; any order works.
    Lane 0 is used whenever possible; an interval that would partially overlap an open one in
    every existing lane opens a new lane.
    """
    n = len(starts)
    lanes = np.zeros(n, dtype=np.int64)
    if n == 0:
        return lanes
    order = np.lexsort((-ends, starts))
    s, e = starts[order], ends[order]
    prev_max = np.maximum.accumulate(e)
    if n == 1 or bool(np.all(s[1:] >= prev_max[:-1])):
        return lanes  # disjoint (touching allowed): a single lane
    stacks: list[list[int]] = []
    for i in range(n):
        start, end = int(s[i]), int(e[i])
        placed = False
        for lane, stack in enumerate(stacks):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or end <= stack[-1]:
                stack.append(end)
                lanes[order[i]] = lane
                placed = True
                break
        if not placed:
            stacks.append([end])
            lanes[order[i]] = len(stacks) - 1
    return lanes


def _pid_map(nodes: Sequence[Any]) -> dict[Any, int]:
    uniq = list(dict.fromkeys(nodes))
    try:
        as_int = {n: int(n) for n in uniq}
        if all(float(n) == as_int[n] and as_int[n] >= 0 for n in uniq) and len(set(as_int.values())) == len(uniq):
            return as_int
    except (TypeError, ValueError):
        pass
    ordered = sorted(uniq, key=lambda n: str(n))
    return {n: i for i, n in enumerate(ordered)}


def _stream_key(stream: str) -> tuple[int, str]:
    return (0 if stream == "compute" else 1, stream)


def _us(ns: int) -> float | int:
    """Integer nanoseconds -> microseconds (an int when whole, to keep the file short)."""
    return ns // 1000 if ns % 1000 == 0 else ns / 1000


def chrome_trace(
    source: TraceSource,
    *,
    ranks: Sequence[int] | None = None,
    max_events: int | None = None,
    link_counters: bool = True,
    aggregate: bool = False,
    aggregate_gap_s: float = 0.0,
    label: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the Chrome trace object; returns (trace dict, stats). See :func:`write_chrome_trace`."""
    ops, ts, summary, source_label = _load(source)
    if metadata:
        summary = {**summary, **metadata}
    df = _prepare(ops, ranks)
    ops_total = len(df)
    ranks_total = int(df["rank"].nunique())
    if aggregate:
        df = _aggregate(df, max(0, round(aggregate_gap_s * 1e9)))
    truncated = 0
    if max_events is not None:
        df, truncated = _select_ranks(df, int(max_events))

    pids = _pid_map(list(df["node"]))
    df["pid"] = [pids[n] for n in df["node"]]
    df["lane"] = _all_lanes(df)
    meta = _process_meta(pids)
    tid_of = _thread_meta(df, meta)
    events = _op_events(df, tid_of)
    counters: list[dict[str, Any]] = []
    if link_counters and ts is not None and not ts.empty:
        counters = _counter_events(ts, max(pids.values(), default=-1) + 1, meta)

    other: dict[str, Any] = {
        "source": label or source_label,
        "generator": "netsim",
        "ops_total": ops_total,
        "op_events": len(events),
        "ranks_total": ranks_total,
        "ranks_shown": sorted(int(r) for r in df["rank"].unique()),
        "aggregated": bool(aggregate),
        "truncated_events": truncated,
    }
    other.update(_summary_fields(summary))
    trace = {"traceEvents": meta + events + counters, "displayTimeUnit": "ns", "otherData": other}
    stats = {
        "ops_total": ops_total,
        "events_written": len(events),
        "counter_events": len(counters),
        "ranks": other["ranks_shown"],
        "ranks_total": ranks_total,
        "threads": len(tid_of),
        "truncated_events": truncated,
    }
    return trace, stats


def _all_lanes(df: pd.DataFrame) -> np.ndarray:
    """Sub-thread lane of every op (:func:`assign_lanes` per rank stream), in row order."""
    lanes = np.zeros(len(df), dtype=np.int64)
    starts, ends = df["start_ns"].to_numpy(), df["end_ns"].to_numpy()
    for idx in df.groupby(["rank", "stream"], sort=False).indices.values():
        lanes[idx] = assign_lanes(starts[idx], ends[idx])
    return lanes


def _process_meta(pids: Mapping[Any, int]) -> list[dict[str, Any]]:
    """Name and sort-index metadata events of the node processes."""
    meta: list[dict[str, Any]] = []
    for node, pid in sorted(pids.items(), key=lambda kv: kv[1]):
        meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"node {node}"}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    return meta


def _thread_meta(df: pd.DataFrame, meta: list[dict[str, Any]]) -> dict[tuple[int, str, int], int]:
    """Thread ids per (rank, stream, lane), numbered per process in display order; appends the
    threads' name and sort-index metadata events to ``meta``."""
    threads = (
        df[["pid", "rank", "device", "stream", "lane"]]
        .drop_duplicates()
        .assign(skey=lambda d: [_stream_key(s) for s in d["stream"]])
        .sort_values(["pid", "rank", "skey", "lane"], kind="mergesort")
    )
    tid_of: dict[tuple[int, str, int], int] = {}
    next_tid: dict[int, int] = {}
    for row in threads.itertuples(index=False):
        pid = int(row.pid)
        tid = next_tid.get(pid, 1)
        next_tid[pid] = tid + 1
        tid_of[(int(row.rank), str(row.stream), int(row.lane))] = tid
        name = f"{row.device} {row.stream}" + (f" ({row.lane + 1})" if row.lane else "")
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return tid_of


_EVENT_COLUMNS = (
    "rank",
    "stream",
    "lane",
    "pid",
    "name",
    "last_name",
    "kind",
    "traffic_class",
    "layer",
    "last_layer",
    "microbatch",
    "start_ns",
    "end_ns",
    "count",
    "distinct_names",
)


def _event_name(name: str, kind: str, traffic_class: str, layer: int, count: int, distinct_names: int) -> str:
    """An op event's name: ``'<op> L<layer>'``, or for merged ops ``'<op or kind class> x<count>'``."""
    if count > 1:
        base = name if distinct_names == 1 else kind + (f" {traffic_class}" if traffic_class else "")
        return f"{base} x{count}"
    return f"{name} L{layer}" if layer >= 0 else name


def _op_events(df: pd.DataFrame, tid_of: Mapping[tuple[int, str, int], int]) -> list[dict[str, Any]]:
    """One complete event per (possibly merged) op, sorted by process, thread, start, longest first.

    Columns are read as Python lists once (a row loop over plain values, not over DataFrame rows:
    most of the exporter's time on runs with tens of thousands of ops)."""
    cols = [df[c].tolist() for c in _EVENT_COLUMNS]
    events: list[dict[str, Any]] = []
    for rank, stream, lane, pid, op, last_op, kind, tc, layer, last_layer, mb, start, end, count, distinct in zip(
        *cols, strict=True
    ):
        rank, layer, count, mb, start, end = int(rank), int(layer), int(count), int(mb), int(start), int(end)
        name, kind, stream = str(op), str(kind), str(stream)
        args: dict[str, Any] = {"kind": kind, "rank": rank, "stream": stream}
        if tc:
            args["traffic_class"] = tc
        if layer >= 0:
            args["layer"] = layer
        if mb >= 0:
            args["microbatch"] = mb
        if count > 1:
            args["count"] = count
            args["first_op"] = op
            args["last_op"] = last_op
            if int(last_layer) >= 0:
                args["last_layer"] = int(last_layer)
        events.append(
            {
                "name": _event_name(name, kind, tc, layer, count, int(distinct)),
                "cat": tc or kind,
                "ph": "X",
                "ts": _us(start),
                "dur": _us(end - start),
                "pid": int(pid),
                "tid": tid_of[(rank, stream, int(lane))],
                "args": args,
            }
        )
    events.sort(key=lambda ev: (ev["pid"], ev["tid"], ev["ts"], -ev["dur"], ev["name"]))
    return events


def _summary_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The run's topology, workload, seed and step time for ``otherData`` (scalars only)."""
    return {
        key: summary[key]
        for key in ("topology", "workload", "seed", "step_time_s")
        if key in summary and isinstance(summary[key], str | int | float) and not isinstance(summary[key], bool)
    }


def _counter_events(ts: pd.DataFrame, pid: int, meta: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Counter events: utilisation (%) of each network/tier over time, on process ``pid``."""
    needed = ("t0_s", "t1_s", "tier", "network", "bytes", "capacity_Bps")
    missing = [c for c in needed if c not in ts.columns]
    if missing:
        raise NetsimError(f"tier_timeseries lacks column(s) {', '.join(missing)}", source="trace")
    meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "network"}})
    meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    out: list[dict[str, Any]] = []
    df = ts.copy()
    df["network"] = df["network"].astype(str)
    df["tier"] = df["tier"].astype(str)
    for (network, tier), grp in df.groupby(["network", "tier"], sort=True):
        g = grp.sort_values("t0_s", kind="mergesort")
        t0 = np.rint(g["t0_s"].to_numpy(dtype=float) * 1e9).astype(np.int64)
        t1 = np.rint(g["t1_s"].to_numpy(dtype=float) * 1e9).astype(np.int64)
        width = g["t1_s"].to_numpy(dtype=float) - g["t0_s"].to_numpy(dtype=float)
        cap = g["capacity_Bps"].to_numpy(dtype=float)
        nbytes = g["bytes"].to_numpy(dtype=float)
        denom = cap * width
        util = np.where(denom > 0, nbytes / np.where(denom > 0, denom, 1.0), 0.0)
        name = f"{network}/{tier} utilisation (%)"
        for a, u in zip(t0, util, strict=True):
            value = round(100.0 * float(u), 4)
            out.append({"name": name, "ph": "C", "pid": pid, "tid": 0, "ts": _us(int(a)), "args": {"util": value}})
        if len(t1):
            out.append({"name": name, "ph": "C", "pid": pid, "tid": 0, "ts": _us(int(t1[-1])), "args": {"util": 0}})
    return out


def write_chrome_trace(
    source: TraceSource,
    path: str | Path,
    *,
    ranks: Sequence[int] | None = None,
    max_events: int | None = None,
    link_counters: bool = True,
    aggregate: bool = False,
    aggregate_gap_s: float = 0.0,
    label: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> TraceInfo:
    """Write the timeline of a run as a Chrome trace JSON file (open it in Perfetto).

    Args:
        source: a run directory, an ``ops`` DataFrame, or a mapping with ``ops`` (and optionally
            ``tier_timeseries``) DataFrames.
        path: the output file (written atomically), conventionally ``trace.json``.
        ranks: keep only these ranks (default: all).
        max_events: at most this many op events; whole ranks are dropped first (keeping ranks
            spread over the range), then a single remaining rank is cut at the end.
        link_counters: add counter tracks of link utilisation by tier (needs ``tier_timeseries``).
        aggregate: merge consecutive ops on a stream with the same kind and traffic class.
        aggregate_gap_s: largest idle gap (s) between two ops that still merges them.
        label: the run's name in ``otherData.source`` (default: the run directory's name).
        metadata: summary fields (topology, workload, seed, step_time_s) for ``otherData`` when
            ``source`` is not a run directory.
    """
    trace, stats = chrome_trace(
        source,
        ranks=ranks,
        max_events=max_events,
        link_counters=link_counters,
        aggregate=aggregate,
        aggregate_gap_s=aggregate_gap_s,
        label=label,
        metadata=metadata,
    )
    out = Path(path)
    with atomic_file(out) as fh:
        fh.write(json.dumps(trace, separators=(",", ":"), allow_nan=False))  # C encoder (dump is pure Python)
        fh.write("\n")
    return TraceInfo(path=out, **stats)


def check_nesting(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Problems with the complete events of a Chrome trace: partial overlaps on one thread.

    Returns a list of messages (empty when every thread's events nest properly).  Times are
    compared in integer nanoseconds.
    """
    by_thread: dict[tuple[Any, Any], list[tuple[int, int, str]]] = {}
    for ev in events:
        if ev.get("ph") != "X":
            continue
        start = round(float(ev["ts"]) * 1000)
        end = start + round(float(ev["dur"]) * 1000)
        if not math.isfinite(float(ev["ts"])) or end < start:
            return [f"bad time in event {ev.get('name')!r}"]
        by_thread.setdefault((ev["pid"], ev["tid"]), []).append((start, end, str(ev.get("name"))))
    problems: list[str] = []
    for (pid, tid), items in sorted(by_thread.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        items.sort(key=lambda x: (x[0], -x[1]))
        stack: list[tuple[int, int, str]] = []
        for start, end, name in items:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1]:
                problems.append(
                    f"pid {pid} tid {tid}: {name!r} [{start}, {end}] ns overlaps "
                    f"{stack[-1][2]!r} [{stack[-1][0]}, {stack[-1][1]}] ns partially"
                )
                break
            stack.append((start, end, name))
    return problems
