"""``netsim validate``: predict every published measurement and compare.

For every case of every source (:mod:`netsim.validation.sources`) the runner asks the case
kind's predictor (:mod:`netsim.validation.cases`) for netsim's prediction of each measured point
and records the relative error ``predicted / measured - 1``.  A point is *asserted* when it has a
tolerance:

* collectives: the case's ``tolerance`` if it sets one, else by size: 10% at 1 MiB and above,
  25% from 64 KiB, not asserted below 64 KiB (reported only: microsecond-scale times depend on
  the software stack more than on anything a cluster designer chooses);
* training cases: their ``tolerance`` (default 10%);
* layer cases: their ``tolerance`` (default 10%) on the classes they assert (default the GPU's
  busy time, ``compute``); the other classes are reported only;
* ep-kernel cases: their ``tolerance`` (default 10%) on the bandwidth;
* moe-layer cases: their ``tolerance`` (default 10%) on the forward and the backward time.

The result is a flat table (one row per point, :data:`COLUMNS`) that
:mod:`netsim.validation.report` turns into an error table and a parity plot.  ``quick`` keeps
what CI can afford on two cores: collective cases of sources on at most two nodes (out-of-place
columns; in-place repeats them), every size; training and moe-layer cases marked ``quick``;
every layer case (a few hundred kernel lookups).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import Field

from netsim.accuracy import REGIME_FIELDS
from netsim.config.common import SpecModel, load_mapping, validate_model
from netsim.errors import SpecError
from netsim.validation.cases import PREDICTORS, Prediction
from netsim.validation.ep_kernels import predict_ep_kernel  # noqa: F401  (registers the ep-kernel predictor)
from netsim.validation.layer import predict_layer  # noqa: F401  (registers the layer predictor)
from netsim.validation.moe_layer import predict_moe_layer  # noqa: F401  (registers the moe-layer predictor)
from netsim.validation.sources import (
    DATA_DIR,
    CollectiveCase,
    EPKernelCase,
    LayerCase,
    MoELayerCase,
    Source,
    TrainingCase,
    load_sources,
)
from netsim.validation.training import predict_training  # noqa: F401  (registers the training predictor)

__all__ = [
    "CASE_KINDS",
    "COLUMNS",
    "KnownGap",
    "ValidationResult",
    "load_known_gaps",
    "run_validation",
    "select_cases",
    "tolerance_for",
]

MiB = 1 << 20
KiB = 1 << 10
#: the result table's columns
COLUMNS = (
    "source",
    "case",
    "kind",
    "source_kind",
    "topology",
    "nodes",
    "gpus_per_node",
    "op",
    "forced",
    "metric",
    "size_bytes",
    "measured",
    "predicted",
    "rel_error",
    "tolerance",
    "asserted",
    "passed",
    "known_gap",
    "library_algo",
    "proto",
    "measured_busbw_GBps",
    "predicted_busbw_GBps",
    "flops",
    "step_time_s",
    "compute_share",
    "communication_share",
    "overlap_share",
    "idle_share",
    "exposed_by_class",
    "kernel_classes",
    *REGIME_FIELDS,
    "wall_s",
)
#: the training columns (from the prediction's detail; empty for collectives)
TRAINING_DETAIL = (
    "flops",
    "step_time_s",
    "compute_share",
    "communication_share",
    "overlap_share",
    "idle_share",
    "exposed_by_class",
    "kernel_classes",
    *REGIME_FIELDS,
    "wall_s",
)
#: measured points netsim does not model yet (reported, not asserted); see the file
KNOWN_GAPS_PATH = DATA_DIR / "known_gaps.yaml"


class KnownGap(SpecModel):
    """A range of measured points netsim does not model yet, and why."""

    source: str = Field(min_length=1)
    """Source id (a glob)."""
    case: str = "*"
    """Case id (a glob)."""
    min_bytes: int = Field(default=0, ge=0)
    max_bytes: int = Field(default=1 << 62, ge=0)
    reason: str = Field(min_length=10)


class KnownGaps(SpecModel):
    gaps: list[KnownGap] = Field(default_factory=list)


def load_known_gaps(path: str | Path | None = None) -> list[KnownGap]:
    """The known gaps (one-line errors naming the file and field)."""
    p = Path(path) if path is not None else KNOWN_GAPS_PATH
    if not p.exists():
        return []
    return validate_model(KnownGaps, load_mapping(p), source=str(p)).gaps


def _gap_of(gaps: Sequence[KnownGap], source: str, case: str, size: int | None) -> str:
    for g in gaps:
        if (
            fnmatch.fnmatch(source, g.source)
            and fnmatch.fnmatch(case, g.case)
            and (size is None or g.min_bytes <= size <= g.max_bytes)
        ):
            return g.reason
    return ""


AnyCase = CollectiveCase | TrainingCase | LayerCase | EPKernelCase | MoELayerCase
#: the case kinds (``--kind``)
CASE_KINDS = ("collective", "training", "layer", "ep-kernel", "moe-layer")


def tolerance_for(case: AnyCase, size_bytes: int | None, layer_class: str | None = None) -> float | None:
    """The relative error allowed at one point (module doc); ``None``: reported only."""
    if isinstance(case, LayerCase) and layer_class not in case.asserted:
        return None
    if case.tolerance is not None:
        return float(case.tolerance)
    if isinstance(case, TrainingCase | LayerCase | EPKernelCase | MoELayerCase):
        return 0.10
    if size_bytes is None:
        return None
    if size_bytes >= MiB:
        return 0.10
    if size_bytes >= 64 * KiB:
        return 0.25
    return None


def _globs(only: str | Sequence[str] | None) -> tuple[str, ...]:
    """``only`` as a tuple of globs (empty: every case)."""
    if only is None:
        return ()
    return (only,) if isinstance(only, str) else tuple(only)


def select_cases(
    sources: Sequence[Source],
    *,
    quick: bool = False,
    only: str | Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
) -> list[tuple[Source, AnyCase]]:
    """The (source, case) pairs to run: not excluded, matching ``only`` (a glob on
    ``source/case``, or several: any of them), of the given kinds, and cheap ones when ``quick``
    (module doc)."""
    globs = _globs(only)
    out: list[tuple[Source, AnyCase]] = []
    for src in sources:
        if src.exclude:
            continue
        for case in src.cases:
            if case.exclude or (kinds is not None and case.kind not in kinds):
                continue
            if globs and not any(fnmatch.fnmatch(f"{src.source.id}/{case.id}", g) for g in globs):
                continue
            if quick:
                if isinstance(case, TrainingCase | MoELayerCase) and not case.quick:
                    continue
                if isinstance(case, CollectiveCase) and (src.system.nodes > 2 or _repeats(src, case)):
                    continue
            out.append((src, case))
    return out


def _repeats(src: Source, case: CollectiveCase) -> bool:
    """An in-place column whose source also has the out-of-place one (the same measurement)."""
    return case.column == "in-place" and any(
        isinstance(c, CollectiveCase)
        and c.column == "out-of-place"
        and c.op == case.op
        and c.algo == case.algo
        and c.proto == case.proto
        for c in src.cases
    )


@dataclass(frozen=True)
class ValidationResult:
    """The result table and what ran."""

    table: pd.DataFrame
    sources: int
    cases: int
    cost_model: str | None

    @property
    def asserted(self) -> pd.DataFrame:
        return self.table[self.table["asserted"]]

    @property
    def failures(self) -> pd.DataFrame:
        t = self.asserted
        return t[~t["passed"].astype(bool)]

    @property
    def ok(self) -> bool:
        return self.failures.empty


def _row(src: Source, case: AnyCase, p: Prediction, gaps: Sequence[KnownGap]) -> dict[str, object]:
    d = p.detail or {}
    gap = _gap_of(gaps, src.source.id, case.id, p.size_bytes)
    tol = None if gap else tolerance_for(case, p.size_bytes, d.get("layer_class"))
    err = p.rel_error
    forced = ""
    op = ""
    if isinstance(case, CollectiveCase):
        op = case.netsim_op
        forced = "/".join(x for x in (case.algo, case.proto) if x)
    return {
        "source": src.source.id,
        "case": case.id,
        "kind": case.kind,
        "source_kind": src.source.kind,
        "topology": src.system.topology,
        "nodes": _nodes(src, case),
        "gpus_per_node": getattr(case, "gpus_per_node", None) or src.system.gpus_per_node,
        "op": op,
        "forced": forced,
        "metric": p.metric,
        "size_bytes": p.size_bytes,
        "measured": p.measured,
        "predicted": p.predicted,
        "rel_error": err,
        "tolerance": tol,
        "asserted": tol is not None,
        "passed": bool(tol is None or abs(err) <= tol),
        "known_gap": gap,
        "library_algo": d.get("library_algo", ""),
        "proto": d.get("proto", ""),
        "measured_busbw_GBps": d.get("measured_busbw_GBps"),
        "predicted_busbw_GBps": d.get("predicted_busbw_GBps"),
        **{k: d.get(k) for k in TRAINING_DETAIL},
    }


def _nodes(src: Source, case: AnyCase) -> int:
    """The servers a case ran on."""
    if isinstance(case, EPKernelCase):
        return max(1, -(-case.ranks // src.system.gpus_per_node))
    return getattr(case, "nodes", None) or src.system.nodes


def run_validation(
    sources: Sequence[Source] | None = None,
    *,
    quick: bool = False,
    only: str | Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    cost_model: str | None = None,
    known_gaps: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> ValidationResult:
    """Predict every selected case (module doc).

    Args:
        sources: the sources (default: every shipped one).
        quick, only, kinds: which cases (:func:`select_cases`).
        cost_model: the collective cost model (default: each topology's, i.e. ``nccl``).
        known_gaps: leave the points of ``known_gaps.yaml`` unasserted (reported as gaps).
        progress: ``fn(label, done, total)`` after each case.
    """
    srcs = list(sources) if sources is not None else load_sources()
    todo = select_cases(srcs, quick=quick, only=only, kinds=kinds)
    if not todo:
        globs = _globs(only)
        raise SpecError(
            f"no validation case matches{''.join(f' --only {g!r}' for g in globs)}"
            f"{' --kind ' + ','.join(kinds) if kinds else ''}{' (quick)' if quick else ''}",
            field="--only" if globs else None,
        )
    gaps = load_known_gaps() if known_gaps else []
    rows: list[dict[str, object]] = []
    for k, (src, case) in enumerate(todo):
        predictor = PREDICTORS.get(case.kind)
        for p in predictor(src, case, cost_model):
            rows.append(_row(src, case, p, gaps))
        if progress is not None:
            progress(f"{src.source.id}/{case.id}", k + 1, len(todo))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return ValidationResult(
        table=table, sources=len({s.source.id for s, _ in todo}), cases=len(todo), cost_model=cost_model
    )
