"""Where a rank's compute time goes: the kernel calls of its compute ops, tallied per kernel.

Every compute op of a planned step runs lists of kernel calls (:mod:`netsim.workload.kernel_calls`;
:mod:`netsim.workload.costs` builds them, memoised, so the ops of a rank share a few hundred
lists).  :class:`KernelTally` counts, per rank, how many times each op name ran each list while
the op emitter (:mod:`netsim.workload.emit`) builds the plan: one dictionary update per op and
list, nothing per call.  :meth:`KernelTally.rows` then expands the lists once for the ranks a
report shows -- the busiest rank of each pipeline stage, by kernel time -- into one row per
(op, kernel, pass, shape):

* ``calls`` per step and ``time_s`` per step (the call's own seconds, as the plan timed it: its
  ``scale`` -- a half backward --, the TP overlap's slowdown, the class factor);
* ``share``: of the rank's kernel time;
* ``dtype`` the kernel ran in and ``source``: where its time came from (the compute model's
  answer: ``table`` a measured row, ``table:surface`` the fitted GEMM surface,
  ``table:fwd-scaled`` a backward from the measured forward, ``table:analog`` a measured kernel
  of the same kind at equal bytes, an attention kernel's published curves, or a roofline);
* ``tflops`` and ``gbps``: the rate of one whole call of that shape as the model answers it
  (catalogue FLOPs and bytes over its seconds; a GEMM's efficiency at that shape).

The kernel time of a rank is what its compute ops would take alone: the replay stretches an op
while collectives in flight hold SMs (:mod:`netsim.replay`), so the ranks table's compute can
exceed it.  Lockstep plans tally the ops of the rank that stands for a unit, and an expert op the
lane it lasts for (its slowest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from netsim.workload.kernel_calls import KernelCall, TimeModel

__all__ = ["KERNEL_ROW_COLUMNS", "KernelTally", "kernel_summary"]

#: the columns of :meth:`KernelTally.rows`, in order
KERNEL_ROW_COLUMNS: tuple[str, ...] = (
    "stage",
    "rank",
    "op",
    "kernel",
    "kernel_class",
    "pass",
    "shape",
    "dtype",
    "source",
    "calls",
    "time_s",
    "share",
    "tflops",
    "gbps",
)


def _shape_text(c: KernelCall) -> str:
    return " ".join(f"{k}={v:g}" for k, v in c.shape)


class KernelTally:
    """Counts of (op name, call list) per rank, filled as the plan's compute ops are emitted."""

    def __init__(self) -> None:
        #: rank -> (op name, id of a call list) -> times run
        self.counts: dict[int, dict[tuple[str, int], int]] = {}
        #: id -> the call list (kept alive, so that no other list reuses its id)
        self.lists: dict[int, list[KernelCall]] = {}

    def add(self, rank: int, name: str, parts: Sequence[list[KernelCall]]) -> None:
        """One compute op of ``rank`` called ``name`` running ``parts``."""
        per = self.counts.setdefault(rank, {})
        for p in parts:
            if not p:
                continue
            i = id(p)
            self.lists.setdefault(i, p)
            per[(name, i)] = per.get((name, i), 0) + 1

    def rank_time_s(self, rank: int, list_time_s: Callable[[list[KernelCall]], float]) -> float:
        """Kernel seconds of ``rank``'s compute ops (``list_time_s``: seconds of one list)."""
        return sum(n * list_time_s(self.lists[i]) for (_, i), n in self.counts.get(rank, {}).items())

    def busiest(
        self, stage_of: Callable[[int], int], list_time_s: Callable[[list[KernelCall]], float]
    ) -> dict[int, int]:
        """Pipeline stage -> its rank with the most kernel time (the lowest rank on ties)."""
        best: dict[int, tuple[float, int]] = {}
        for r in sorted(self.counts):
            t = self.rank_time_s(r, list_time_s)
            s = stage_of(r)
            if s not in best or t > best[s][0]:
                best[s] = (t, r)
        return {s: r for s, (_, r) in sorted(best.items())}

    def rows(self, ranks: dict[int, int], model: TimeModel, dtype: str | None) -> list[dict[str, Any]]:
        """One row per (op, kernel, pass, shape) of each ``{stage: rank}`` (module doc), the
        rank's rows by time, longest first."""
        estimate = getattr(model, "estimate", None)
        out: list[dict[str, Any]] = []
        for stage, rank in ranks.items():
            calls_of: dict[tuple[str, KernelCall], int] = {}
            secs_of: dict[tuple[str, KernelCall], float] = {}
            for (name, i), n in self.counts.get(rank, {}).items():
                for c in self.lists[i]:
                    kc = KernelCall(
                        c.kernel, c.pass_, c.shape, no_fp8=c.no_fp8, quant=c.quant, adapter=c.adapter, label=c.label
                    )
                    key = (name, kc)
                    calls_of[key] = calls_of.get(key, 0) + n
                    secs_of[key] = secs_of.get(key, 0.0) + n * c.time_s(model, dtype)
            total = sum(secs_of.values())
            rank_rows = []
            for (name, c), calls in calls_of.items():
                secs = secs_of[(name, c)]
                row: dict[str, Any] = {
                    "stage": stage,
                    "rank": rank,
                    "op": name,
                    "kernel": c.kernel
                    + (" (fp8 cast)" if c.quant else "")
                    + (" (LoRA)" if c.adapter else "")
                    + (f" ({c.label})" if c.label else ""),
                    "kernel_class": c.kernel_class,
                    "pass": c.pass_,
                    "shape": _shape_text(c),
                    "dtype": None,
                    "source": None,
                    "calls": calls,
                    "time_s": secs,
                    "share": secs / total if total > 0 else 0.0,
                    "tflops": None,
                    "gbps": None,
                }
                if estimate is not None:
                    est = estimate(c.kernel, c.pass_, dtype=c.run_dtype(dtype), **dict(c.shape))
                    unit = est.time_s * c.class_factor(model)
                    row.update(dtype=est.dtype, source=est.source)
                    if unit > 0:
                        row["tflops"] = est.flops / unit / 1e12 if est.flops > 0 else None
                        row["gbps"] = est.bytes / unit / 1e9 if est.bytes > 0 else None
                rank_rows.append(row)
            rank_rows.sort(key=lambda r: (-r["time_s"], r["op"], r["kernel"], r["pass"], r["shape"]))
            out += rank_rows
        return out


def _source_kind(source: object) -> str:
    """A row's ``source`` without its clock note (``table:surface x1980/1830 MHz`` ->
    ``table:surface``; ``unknown`` when the model gave none, or a read-back table has a gap)."""
    return source.split(" x", 1)[0] if isinstance(source, str) and source else "unknown"


def kernel_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The busiest rank of :meth:`KernelTally.rows` (the most kernel time): its rank, stage,
    kernel seconds, and those seconds by kernel class and by where they came from (the
    ``source`` without its clock note), each largest first; None without rows."""
    if not rows:
        return None
    totals: dict[int, float] = {}
    for r in rows:
        totals[r["rank"]] = totals.get(r["rank"], 0.0) + r["time_s"]
    rank = min(totals, key=lambda k: (-totals[k], k))
    mine = [r for r in rows if r["rank"] == rank]
    by_class: dict[str, float] = {}
    by_source: dict[str, float] = {}
    for r in mine:
        by_class[r["kernel_class"]] = by_class.get(r["kernel_class"], 0.0) + r["time_s"]
        src = _source_kind(r["source"])
        by_source[src] = by_source.get(src, 0.0) + r["time_s"]
    return {
        "rank": rank,
        "stage": mine[0]["stage"],
        "kernel_time_s": totals[rank],
        "by_class_s": dict(sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_source_s": dict(sorted(by_source.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
