"""nccl-tests conventions: bus bandwidth, the result table, and size sweeps.

nccl-tests (``all_reduce_perf`` and friends) print one row per message size: ``size`` (bytes),
``count`` (elements), ``type``, ``redop``, ``root``, then for the out-of-place and the in-place
variant ``time`` (us), ``algbw`` and ``busbw`` (GB/s, 1e9 bytes/s) and ``#wrong``, and finish
with ``# Avg bus bandwidth``.  ``algbw = size / time``; ``busbw = algbw * factor`` with the factor
of :func:`busbw_factor` (the fraction of the data every rank must move over its slowest link,
so that busbw is comparable with the hardware bandwidth whatever the rank count).

:func:`sweep` simulates one collective per size, each on a fresh ``Network`` (sizes are
independent, and a fresh engine keeps each run small); :func:`format_table` and
:func:`format_log` print results the way nccl-tests does, so they can be compared with
(and fed back to the calibration like) measured logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from netsim.collectives.plan import CollectiveError

#: nccl-tests binary name -> netsim op
NCCL_TEST_OPS: dict[str, str] = {
    "all_reduce": "all_reduce",
    "all_gather": "all_gather",
    "reduce_scatter": "reduce_scatter",
    "alltoall": "all_to_all",
    "sendrecv": "sendrecv",
    "broadcast": "broadcast",
    "reduce": "reduce",
}
#: netsim op -> nccl-tests binary name (``all_reduce_perf``)
PERF_BINARY: dict[str, str] = {
    "all_reduce": "all_reduce_perf",
    "all_gather": "all_gather_perf",
    "reduce_scatter": "reduce_scatter_perf",
    "all_to_all": "alltoall_perf",
    "all_to_allv": "alltoall_perf",
    "sendrecv": "sendrecv_perf",
    "broadcast": "broadcast_perf",
    "reduce": "reduce_perf",
}

FLOAT_BYTES = 4


def busbw_factor(op: str, n: int) -> float:
    """nccl-tests bus-bandwidth factor: ``2(n-1)/n`` all-reduce, ``(n-1)/n`` all-gather,
    reduce-scatter and all-to-all, 1 broadcast, reduce and send/recv."""
    if n < 1:
        raise CollectiveError(f"group size must be >= 1, got {n}", field="devices")
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all", "all_to_allv"):
        return (n - 1) / n
    return 1.0


def _redop_root(op: str) -> tuple[str, int]:
    if op in ("all_reduce", "reduce_scatter", "sendrecv"):
        return "sum", -1
    if op == "reduce":
        return "sum", 0
    if op == "broadcast":
        return "none", 0
    return "none", -1


@dataclass(frozen=True)
class SweepRow:
    """One simulated size: bytes, seconds, and the nccl-tests bandwidths (GB/s)."""

    op: str
    algo: str
    size_bytes: int
    time_s: float
    algbw_GBps: float
    busbw_GBps: float
    library_algo: str | None = None
    proto: str | None = None


def sizes_between(min_bytes: float, max_bytes: float, factor: float) -> list[int]:
    """``min, min*f, min*f^2, ... <= max`` (nccl-tests ``-b/-e/-f``), as integer bytes."""
    if not min_bytes > 0 or max_bytes < min_bytes:
        raise CollectiveError(
            f"need 0 < min bytes <= max bytes, got {min_bytes:g} and {max_bytes:g}", field="min_bytes"
        )
    if not factor > 1:
        raise CollectiveError(f"the step factor must be > 1, got {factor:g}", field="step_factor")
    out = []
    s = float(min_bytes)
    while s <= max_bytes * (1 + 1e-12):
        out.append(round(s))
        s *= factor
    return out


def make_row(
    op: str,
    algo: str,
    n: int,
    size_bytes: int,
    time_s: float,
    library_algo: str | None = None,
    proto: str | None = None,
) -> SweepRow:
    algbw = size_bytes / time_s / 1e9 if time_s > 0 else 0.0
    return SweepRow(op, algo, int(size_bytes), float(time_s), algbw, algbw * busbw_factor(op, n), library_algo, proto)


def sweep(
    graph: nx.DiGraph,
    op: str,
    devices: Sequence[str],
    sizes: Sequence[int],
    *,
    algo: str | None = None,
    chunk_bytes: float | None = None,
    step_latency_s: float | None = None,
    channels: int | None = None,
    on_row: Callable[[SweepRow], None] | None = None,
    cost: Any = None,
    proto: str | None = None,
    **engine_kwargs: Any,
) -> list[SweepRow]:
    """Simulate ``op`` at every size (a fresh ``Network(graph, **engine_kwargs)`` each) under the
    collective cost model ``cost`` (default: ideal); ``on_row`` is called after each size."""
    return list(
        iter_sweep(
            graph,
            op,
            devices,
            sizes,
            algo=algo,
            chunk_bytes=chunk_bytes,
            step_latency_s=step_latency_s,
            channels=channels,
            on_row=on_row,
            cost=cost,
            proto=proto,
            **engine_kwargs,
        )
    )


def iter_sweep(
    graph: nx.DiGraph,
    op: str,
    devices: Sequence[str],
    sizes: Sequence[int],
    *,
    algo: str | None = None,
    chunk_bytes: float | None = None,
    step_latency_s: float | None = None,
    channels: int | None = None,
    on_row: Callable[[SweepRow], None] | None = None,
    model: str = "exact",
    cost: Any = None,
    proto: str | None = None,
    **engine_kwargs: Any,
) -> Iterator[SweepRow]:
    from netsim.collectives.executor import result_of, run_collective
    from netsim.network.engine import Network

    for size in sizes:
        net = Network(graph, **engine_kwargs)
        proc = run_collective(
            net,
            op,
            devices,
            float(size),
            algo=algo,
            chunk_bytes=chunk_bytes,
            step_latency_s=step_latency_s,
            channels=channels,
            model=model,
            cost=cost,
            proto=proto,
        )
        net.run()
        res = result_of(proc)
        row = make_row(op, res.algo, len(devices), int(size), res.time_s, res.library_algo, res.proto)
        if on_row is not None:
            on_row(row)
        yield row


def rows_frame(rows: Sequence[SweepRow]) -> pd.DataFrame:
    """The CSV table: ``op, algo, size_bytes, time_us, algbw_GBps, busbw_GBps``."""
    return pd.DataFrame(
        {
            "op": [r.op for r in rows],
            "algo": [r.algo for r in rows],
            "size_bytes": np.array([r.size_bytes for r in rows], dtype=np.int64),
            "time_us": [r.time_s * 1e6 for r in rows],
            "algbw_GBps": [r.algbw_GBps for r in rows],
            "busbw_GBps": [r.busbw_GBps for r in rows],
            "library_algo": [r.library_algo or "" for r in rows],
            "proto": [r.proto or "" for r in rows],
        }
    )


def _time_str(us: float) -> str:
    if us >= 10000.0:
        return f"{us:7.0f}"
    if us >= 100.0:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


HEADER_LINES = (
    "#" + " " * 62 + "out-of-place" + " " * 23 + "in-place" + " " * 10,
    "#       size         count      type   redop    root     time   algbw   busbw #wrong"
    "     time   algbw   busbw #wrong",
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)       "
    "     (us)  (GB/s)  (GB/s)       ",
)


def format_row(row: SweepRow, *, in_place: bool = True) -> str:
    """One nccl-tests result line (the in-place columns repeat the out-of-place result: the
    simulator moves the same bytes either way)."""
    redop, root = _redop_root(row.op)
    count = row.size_bytes // FLOAT_BYTES
    cols = f"{row.size_bytes:12d}  {count:12d}  {'float':>8s}  {redop:>6s}  {root:6d}"
    var = f"  {_time_str(row.time_s * 1e6)}  {row.algbw_GBps:6.2f}  {row.busbw_GBps:6.2f}  {0:5d}"
    return cols + var + (var if in_place else "")


def avg_busbw(rows: Sequence[SweepRow]) -> float:
    return float(np.mean([r.busbw_GBps for r in rows])) if rows else 0.0


def format_trailer(rows: Sequence[SweepRow]) -> list[str]:
    return ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {avg_busbw(rows):.4f} ", "#"]


def format_choices(rows: Sequence[SweepRow]) -> list[str]:
    """What the collective library ran, as ranges of sizes: ``8 B - 512 KiB: ring/LL``."""
    from netsim.units import format_bytes

    out: list[str] = []
    run: list[SweepRow] = []
    for r in [*rows, None]:
        key = None if r is None else (r.library_algo, r.proto)
        if run and (r is None or key != (run[0].library_algo, run[0].proto)):
            lo, hi = format_bytes(run[0].size_bytes), format_bytes(run[-1].size_bytes)
            what = f"{run[0].library_algo}/{run[0].proto}" if run[0].proto else str(run[0].algo)
            out.append(f"{lo} - {hi}: {what}" if lo != hi else f"{lo}: {what}")
            run = []
        if r is not None:
            run.append(r)
    return out


def format_table(rows: Sequence[SweepRow], *, comments: Sequence[str] = ()) -> str:
    """The nccl-tests table (column header, one line per size, the trailer)."""
    lines = [f"# {c}" if c else "#" for c in comments]
    lines += [*HEADER_LINES, *(format_row(r) for r in rows), *format_trailer(rows)]
    return "\n".join(lines) + "\n"


def format_log(
    rows: Sequence[SweepRow],
    *,
    hosts: Sequence[str],
    device_name: str = "NVIDIA H100 80GB HBM3",
    comments: Sequence[str] = (),
    min_bytes: int | None = None,
    max_bytes: int | None = None,
    factor: float = 2.0,
) -> str:
    """A complete nccl-tests log (as ``mpirun ... <op>_perf -b MIN -e MAX -f F -g 1`` prints it):
    comment lines, the ``# nThread`` header, one ``#  Rank`` line per rank (``hosts[i]`` is
    the host of rank ``i``), the table and the trailer."""
    if not rows:
        raise CollectiveError("no rows to write", field="rows")
    op = rows[0].op
    lo = min_bytes if min_bytes is not None else min(r.size_bytes for r in rows)
    hi = max_bytes if max_bytes is not None else max(r.size_bytes for r in rows)
    lines = [f"# {c}" if c else "#" for c in comments]
    lines.append(f"# Collective test starting: {PERF_BINARY.get(op, op)}")
    lines.append(
        f"# nThread 1 nGpus 1 minBytes {lo} maxBytes {hi} step: {factor:g}(factor) warmup iters: 5 "
        "iters: 20 agg iters: 1 validation: 1 graph: 0"
    )
    lines.append("#")
    lines.append("# Using devices")
    local: dict[str, int] = {}
    for rank, host in enumerate(hosts):
        dev = local.get(host, 0)
        local[host] = dev + 1
        bus = 0x18 + 0x11 * dev
        lines.append(
            f"#  Rank {rank:2d} Group  0 Pid {100000 + rank:6d} on {host:>10s} device {dev:2d} "
            f"[0x{bus:02x}] {device_name}"
        )
    lines.append("#")
    lines += [*HEADER_LINES, *(format_row(r) for r in rows), *format_trailer(rows)]
    lines.append(f"# Collective test concluded: {PERF_BINARY.get(op, op)}")
    return "\n".join(lines) + "\n"
