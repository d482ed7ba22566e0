"""Parser for nccl-tests output (``all_reduce_perf``, ``all_gather_perf``, ``reduce_scatter_perf``,
``alltoall_perf``, ``sendrecv_perf``, ``broadcast_perf``, ``reduce_perf``).

A log is the stdout of one or more runs.  What is read:

* ``# Collective test starting: all_reduce_perf`` (newer nccl-tests): which collective;
  otherwise the ``op`` argument, otherwise the file name (``all_reduce_perf_2n.log``).
* ``# nThread 1 nGpus 1 minBytes 8 maxBytes 8589934592 step: 2(factor) ...``: starts a run.
* ``#  Rank  3 Group  0 Pid 1234 on host-a device  3 [0x18] NVIDIA H100 80GB HBM3``: one per
  rank; the number of these lines is the rank count and the distinct hosts the node count.
* the column header (``#  size  count  type  redop  root  time  algbw  busbw  #wrong ...``):
  one ``time`` column means out-of-place only, two mean out-of-place and in-place.
* result rows: ``size count type redop root`` then ``time algbw busbw #wrong`` per variant;
  ``N/A`` is accepted for any value (alltoall's in-place, ``#wrong`` without validation).
* ``# Out of bounds values : 0 OK`` and ``# Avg bus bandwidth : 55.7``: the run's trailer.

Other ``#`` lines are comments; lines that do not start with a digit (NCCL INFO/WARN debug
output, MPI messages) are skipped.  A row that starts with a number but cannot be read, a row
before any column header, a run with no rows, or a run without its ``# Avg bus bandwidth``
trailer (a truncated log) raises :class:`~netsim.errors.TraceError` naming the file and line.

Result: one DataFrame row per result row with :data:`COLUMNS`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from netsim.collectives.nccl_tests import NCCL_TEST_OPS
from netsim.errors import TraceError
from netsim.limits import INT64_MAX, MAX_ACCELERATORS, MAX_TEXT_BYTES, QUANTITY_MAX, check_file_size

COLUMNS: tuple[str, ...] = (
    "op",
    "size_bytes",
    "count",
    "type",
    "redop",
    "root",
    "oop_time_us",
    "oop_algbw_GBps",
    "oop_busbw_GBps",
    "oop_wrong",
    "ip_time_us",
    "ip_algbw_GBps",
    "ip_busbw_GBps",
    "ip_wrong",
    "nranks",
    "nnodes",
    "source",
    "line",
)

_STARTING = re.compile(r"^#\s*Collective test starting:\s*(\S+)")
_NTHREAD = re.compile(r"^#\s*nThread\s+(\d+)\s+nGpus\s+(\d+)\b(.*)$")
_RANK = re.compile(
    r"^#\s*Rank\s+(\d+)\s+Group\s+(\d+)\s+Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(\d+)"
    r"\s*(\[[^\]]*\])?\s*(.*)$"
)
_AVG = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*(\S+)")
_OOB = re.compile(r"^#\s*Out of bounds values\s*:\s*(\d+)\s*(\S*)")
_KV = re.compile(r"(\w+):?\s+([\w.()]+)")


def _perf_name_to_op(name: str) -> str | None:
    base = name.lower()
    for key in sorted(NCCL_TEST_OPS, key=len, reverse=True):  # reduce_scatter before reduce
        if key in base:
            return NCCL_TEST_OPS[key]
    return None


@dataclass
class NcclRun:
    """One run of a nccl-tests binary inside a log.

    Attributes:
        op: netsim op name (``all_reduce``, ``all_to_all``, ...).
        source: the file (or label) it came from; ``line``: the line its header is on.
        nranks, nnodes: ranks (``#  Rank`` lines; ``nThread * nGpus`` if there are none) and
            distinct hosts.
        hosts: host of every rank, in rank order.
        devices: the device description of every rank (``NVIDIA H100 80GB HBM3``).
        header: the ``# nThread`` line's values (``nThread``, ``nGpus``, ``minBytes``, ...).
        avg_busbw_GBps: the trailer's average bus bandwidth.
        out_of_bounds: the ``# Out of bounds values`` count, if printed.
        rows: the result rows (columns :data:`COLUMNS`).
    """

    op: str
    source: str
    line: int
    nranks: int
    nnodes: int
    hosts: list[str]
    devices: list[str]
    header: dict[str, str]
    avg_busbw_GBps: float | None
    out_of_bounds: int | None
    rows: pd.DataFrame = field(repr=False)


def _num(tok: str, kind: type, source: str, lineno: int, what: str) -> float:
    if tok.upper() == "N/A":
        return math.nan
    try:
        v = int(tok) if kind is int else float(tok)
    except ValueError:
        raise TraceError(f"line {lineno}: cannot read {what} {tok!r} as a number", source=source) from None
    if kind is int and abs(v) > INT64_MAX:
        raise TraceError(f"line {lineno}: {what} {tok[:30]!r} is beyond int64", source=source)
    if not math.isfinite(v):
        raise TraceError(f"line {lineno}: {what} {tok!r} is not a finite number", source=source)
    return v


class _Section:
    def __init__(self, line: int, op: str | None) -> None:
        self.line = line
        self.op = op
        self.header: dict[str, str] = {}
        self.ranks: dict[int, tuple[str, str]] = {}
        self.variants = 0  # 1 or 2 once the column header is seen
        self.rows: list[dict[str, object]] = []
        self.avg: float | None = None
        self.oob: int | None = None
        self.last_line = line


def _finish(sec: _Section, source: str, last_line: int, runs: list[NcclRun]) -> None:
    if sec.avg is None:
        if not sec.rows:
            raise TraceError(
                f"line {last_line}: the run started on line {sec.line} has no result rows (truncated or empty log)",
                source=source,
            )
        raise TraceError(
            f"line {last_line}: truncated log: the run started on line {sec.line} ends without its "
            "'# Avg bus bandwidth' line",
            source=source,
        )
    if not sec.rows:
        raise TraceError(f"line {sec.line}: the run has no result rows", source=source)
    if sec.op is None:
        raise TraceError(
            f"line {sec.line}: cannot tell which collective this is (no '# Collective test "
            "starting' line and the file name names none); pass the op",
            source=source,
        )
    if sec.ranks:
        nranks = len(sec.ranks)
        hosts = [sec.ranks[r][0] for r in sorted(sec.ranks)]
        devices = [sec.ranks[r][1] for r in sorted(sec.ranks)]
    else:
        nranks = int(sec.header.get("nThread", "1")) * int(sec.header.get("nGpus", "1"))
        if nranks > MAX_ACCELERATORS:
            raise TraceError(
                f"line {sec.line}: nThread x nGpus = {nranks:,} ranks is beyond the "
                f"{MAX_ACCELERATORS:,} accelerators netsim models",
                source=source,
            )
        hosts, devices = [], []
    nnodes = len(set(hosts)) if hosts else 1
    df = pd.DataFrame(sec.rows)
    df.insert(0, "op", sec.op)
    df["nranks"] = nranks
    df["nnodes"] = nnodes
    df["source"] = source
    df = df[[c for c in COLUMNS if c != "line"] + ["line"]]
    runs.append(
        NcclRun(
            sec.op,
            source,
            sec.line,
            nranks,
            nnodes,
            hosts,
            devices,
            sec.header,
            sec.avg,
            sec.oob,
            df.reset_index(drop=True),
        )
    )


def _section_comment(sec: _Section, line: str, lineno: int, source: str) -> None:
    """Record a ``#`` line inside a run: a rank's host and device, the column header (how many
    variants: out-of-place, in-place), the average bus bandwidth or the out-of-bounds count."""
    m = _RANK.match(line)
    if m:
        rank = int(_num(m.group(1), int, source, lineno, "rank"))
        if rank >= MAX_ACCELERATORS:
            raise TraceError(
                f"line {lineno}: rank {rank} is beyond the {MAX_ACCELERATORS:,} accelerators netsim models",
                source=source,
            )
        sec.ranks[rank] = (m.group(4), m.group(7).strip())
        return
    toks = line.lstrip("#").split()
    if "size" in toks and "time" in toks and "busbw" in toks:
        sec.variants = toks.count("time")
        return
    m = _AVG.match(line)
    if m:
        sec.avg = _num(m.group(1), float, source, lineno, "average bus bandwidth")
        return
    m = _OOB.match(line)
    if m:
        sec.oob = int(m.group(1))


def _result_row(line: str, variants: int, lineno: int, source: str) -> dict[str, object]:
    """One result row: size, count, type, redop, root and per variant time, algbw, busbw, #wrong
    (NaN for a variant the run does not print)."""
    toks = line.split()
    want = 5 + 4 * variants
    if len(toks) != want:
        raise TraceError(
            f"line {lineno}: expected {want} columns (size count type redop root + "
            f"{variants} x time algbw busbw #wrong), got {len(toks)}: {line!r}",
            source=source,
        )
    row: dict[str, object] = {
        "size_bytes": int(_num(toks[0], int, source, lineno, "size")),
        "count": int(_num(toks[1], int, source, lineno, "count")),
        "type": toks[2],
        "redop": toks[3],
        "root": int(_num(toks[4], int, source, lineno, "root")),
    }
    if row["size_bytes"] < 0 or row["count"] < 0:  # type: ignore[operator]
        raise TraceError(f"line {lineno}: size and count must be >= 0", source=source)
    if row["size_bytes"] > QUANTITY_MAX["bytes"]:  # type: ignore[operator]
        raise TraceError(f"line {lineno}: size {toks[0]} is beyond any real message", source=source)
    for v, prefix in enumerate(("oop", "ip")):
        if v < variants:
            row.update(_variant_columns(toks, 5 + 4 * v, prefix, lineno, source))
        else:
            for col in ("time_us", "algbw_GBps", "busbw_GBps", "wrong"):
                row[f"{prefix}_{col}"] = math.nan
    if math.isnan(row["oop_time_us"]):  # type: ignore[arg-type]
        raise TraceError(f"line {lineno}: the out-of-place time is N/A", source=source)
    row["line"] = lineno
    return row


def _variant_columns(toks: list[str], base: int, prefix: str, lineno: int, source: str) -> dict[str, float]:
    """Time (us), algbw, busbw (GB/s) and #wrong of one variant from the tokens at ``base``."""
    t = _num(toks[base], float, source, lineno, "time")
    if not (math.isnan(t) or t >= 0):
        raise TraceError(f"line {lineno}: negative time {toks[base]!r}", source=source)
    if t * 1e-6 > QUANTITY_MAX["duration"]:
        raise TraceError(f"line {lineno}: time {toks[base]} us is beyond any real run", source=source)
    return {
        f"{prefix}_time_us": t,
        f"{prefix}_algbw_GBps": _num(toks[base + 1], float, source, lineno, "algbw"),
        f"{prefix}_busbw_GBps": _num(toks[base + 2], float, source, lineno, "busbw"),
        f"{prefix}_wrong": _num(toks[base + 3], float, source, lineno, "#wrong"),
    }


def parse_nccl_runs(text: str, *, source: str = "<log>", op: str | None = None) -> list[NcclRun]:
    """Parse the text of a nccl-tests log into its runs (see the module docstring)."""
    default_op = op if op is not None else _perf_name_to_op(os.path.basename(source))
    if op is not None and op not in set(NCCL_TEST_OPS.values()):
        raise TraceError(
            f"unknown collective {op!r}; allowed: {', '.join(sorted(set(NCCL_TEST_OPS.values())))}", source=source
        )
    runs: list[NcclRun] = []
    sec: _Section | None = None
    pending_op: str | None = None
    lineno = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = _STARTING.match(line)
            if m:
                if sec is not None and (sec.rows or sec.avg is not None):
                    _finish(sec, source, lineno, runs)
                    sec = None
                pending_op = op if op is not None else (_perf_name_to_op(m.group(1)) or default_op)
                continue
            m = _NTHREAD.match(line)
            if m:
                if sec is not None:
                    _finish(sec, source, lineno, runs)
                sec = _Section(lineno, pending_op or default_op)
                pending_op = None
                sec.header = {"nThread": m.group(1), "nGpus": m.group(2)}
                sec.header.update({k: v for k, v in _KV.findall(m.group(3))})
                continue
            if sec is not None:
                _section_comment(sec, line, lineno, source)
            continue
        if not line[0].isdigit():
            continue  # NCCL INFO/WARN lines, MPI noise
        if sec is None or sec.variants == 0:
            raise TraceError(f"line {lineno}: result row before the nccl-tests column header", source=source)
        if sec.avg is not None:
            raise TraceError(f"line {lineno}: result row after the '# Avg bus bandwidth' trailer", source=source)
        sec.rows.append(_result_row(line, sec.variants, lineno, source))
    if sec is not None:
        _finish(sec, source, lineno, runs)
    if not runs:
        raise TraceError("no nccl-tests run found (no '# nThread ... nGpus ...' header)", source=source)
    return runs


def parse_nccl_log(
    path_or_text: str | os.PathLike[str], *, op: str | None = None, source: str | None = None
) -> pd.DataFrame:
    """Parse a nccl-tests log file (a path) or its text (a string with newlines) into one
    DataFrame with :data:`COLUMNS` (all runs of the log, in order)."""
    text, src = _read(path_or_text, source)
    runs = parse_nccl_runs(text, source=src, op=op)
    return pd.concat([r.rows for r in runs], ignore_index=True)


def read_nccl_runs(paths: Iterable[str | os.PathLike[str]], *, op: str | None = None) -> list[NcclRun]:
    """All runs of several log files."""
    out: list[NcclRun] = []
    for p in paths:
        text, src = _read(p, None)
        out.extend(parse_nccl_runs(text, source=src, op=op))
    return out


def _read(path_or_text: str | os.PathLike[str], source: str | None) -> tuple[str, str]:
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return path_or_text, source or "<log>"
    path = Path(path_or_text)
    check_file_size(path, MAX_TEXT_BYTES, "an nccl-tests log")
    try:
        return path.read_text(errors="replace"), source or str(path)
    except FileNotFoundError:
        raise TraceError("no such file", source=str(path)) from None
    except OSError as exc:
        raise TraceError(f"cannot read: {exc.strerror}", source=str(path)) from None


def runs_summary(runs: Sequence[NcclRun]) -> pd.DataFrame:
    """One row per run: source, line, op, nranks, nnodes, sizes, avg busbw."""
    return pd.DataFrame(
        [
            {
                "source": r.source,
                "line": r.line,
                "op": r.op,
                "nranks": r.nranks,
                "nnodes": r.nnodes,
                "sizes": len(r.rows),
                "avg_busbw_GBps": r.avg_busbw_GBps,
            }
            for r in runs
        ]
    )
