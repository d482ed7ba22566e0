"""How close netsim's step times have come to published runs like this one: accuracy by regime.

``netsim validate`` predicts published training runs (``netsim/validation/data/training/``) and
writes each run's error (``reports/validation/results.csv``).  Those errors are not spread evenly:
they cluster by *regime*, the accelerator, the precision the model computes in, whether it
has routed experts and the kind of training software (on H100 in BF16 the dense rows run fast on
average, the MoE rows faster still, the PyTorch FSDP rows fastest; the A100 rows sit within
a few percent).  A user pricing a cluster they do not own needs that evidence beside the
number, so every ``netsim run`` of a workload reports the regime's
record (``summary.json`` ``validation_accuracy``, the console, the report): how many published
runs of the same accelerator, precision and model kind netsim has predicted, and by how much
its step time missed them.  A step whose busiest rank spends more kernel time in the attention
core than in any other kernel class (long sequences) is its own regime, ``dense attention-bound``
or ``moe attention-bound`` (:func:`model_kind`).

The error of a run is its *step-time error*: netsim's step over the measured step, minus one
(negative: netsim's step is shorter, i.e. netsim is optimistic).  A source that publishes a
throughput (tokens/s, TFLOP/s or MFU per GPU, all inversely proportional to the step) with error
``e = predicted / measured - 1`` has the step-time error ``1 / (1 + e) - 1``.  Rows netsim does
not model yet (``known_gaps.yaml``) and memory rows do not count.

The record is nothing more than those errors: it is not a correction and netsim does not apply
it to the step.  It ships as ``netsim/data/accuracy/training.csv``, derived from the committed
validation results; after a validation run, regenerate it with
``python -m netsim.accuracy reports/validation/results.csv`` (a test checks that it is current).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ACCURACY_COLUMNS",
    "ACCURACY_PATH",
    "ATTENTION_BOUND",
    "REGIME_FIELDS",
    "RegimeAccuracy",
    "accuracy_for",
    "accuracy_line",
    "load_accuracy",
    "model_kind",
    "regime_accuracy",
    "step_error",
    "write_accuracy",
]

#: the shipped record (derived from reports/validation/results.csv)
ACCURACY_PATH = Path(__file__).resolve().parent / "data" / "accuracy" / "training.csv"

#: metrics inversely proportional to the step time
THROUGHPUT_METRICS: frozenset[str] = frozenset({"tokens_per_s_per_gpu", "tflops_per_gpu", "mfu"})

#: what a regime is: the accelerator's name (the topology's ``accelerator.name``), the dtype the
#: model computes in (``model.dtype``) and :func:`model_kind`
REGIME_FIELDS: tuple[str, str, str] = ("accelerator", "dtype", "model_kind")

#: the record's columns (one row per regime)
ACCURACY_COLUMNS: tuple[str, ...] = (
    *REGIME_FIELDS,
    "runs",
    "mean_step_error",
    "rms_step_error",
    "min_step_error",
    "max_step_error",
    "within_10pct",
    "cases",
)


#: the suffix of a model kind whose step the attention core dominates (:func:`model_kind`)
ATTENTION_BOUND = "attention-bound"


def model_kind(
    has_moe: bool, kernel_time_by_class: Mapping[str, float] | None = None, framework: str = "megatron"
) -> str:
    """The model-kind part of a regime: ``moe`` (routed experts) or ``dense``; then the training
    software where it is not Megatron-Core's kind (``training.framework``: ``dense pytorch`` for
    PyTorch modules under FSDP, whose published H100 runs measured steps 8-33% longer than
    netsim's while the same scripts on A100 are within 12%: docs "Training-step replay", "PyTorch
    FSDP on A100 and H100"); then
    ``attention-bound`` where the attention core is the largest kernel class of the busiest rank
    (``kernel_time_by_class``: seconds by class, :func:`netsim.workload.kernel_tally.kernel_summary`'s
    ``by_class_s``).  Such a step (long sequences) turns on the attention kernel's speed, which
    moves most between software releases: the nine rows of NeMo 24.03.01's long-sequence table fit
    one attention rate at two thirds of netsim's cuDNN curves (docs: "Training-step replay", "NeMo
    24.03's long sequences"), so their errors are their own regime and not the dense rows'."""
    kind = "moe" if has_moe else "dense"
    if framework != "megatron":
        kind = f"{kind} {framework}"
    classes = {k: v for k, v in (kernel_time_by_class or {}).items() if v > 0}
    if classes.get("attention", 0.0) > 0 and classes["attention"] >= max(classes.values()):
        kind = f"{kind} {ATTENTION_BOUND}"
    return kind


def step_error(metric: str, rel_error: float) -> float | None:
    """The step-time error of a validation row (module doc); None for a metric that is not a
    step time or a throughput (peak memory)."""
    if not math.isfinite(rel_error):
        return None
    if metric == "step_time_s":
        return rel_error
    if metric in THROUGHPUT_METRICS and rel_error > -1.0:
        return 1.0 / (1.0 + rel_error) - 1.0
    return None


@dataclass(frozen=True)
class RegimeAccuracy:
    """netsim's record on the published runs of one regime (step-time errors, module doc)."""

    accelerator: str
    dtype: str
    model_kind: str
    runs: int
    mean_step_error: float
    rms_step_error: float
    min_step_error: float
    max_step_error: float
    within_10pct: int
    #: the runs, as ``source/case``
    cases: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cases"] = list(self.cases)
        return d


def regime_accuracy(rows: Iterable[Mapping[str, Any]]) -> list[RegimeAccuracy]:
    """The record per regime from validation result rows (``kind``, ``metric``, ``rel_error``,
    ``known_gap``, ``accelerator``, ``dtype``, ``model_kind``, ``source``, ``case``): training
    rows only, known gaps left out; sorted by accelerator, dtype and model kind."""
    groups: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
    for r in rows:
        if r.get("kind") != "training" or _text(r.get("known_gap")):
            continue
        key = (_text(r.get("accelerator")), _text(r.get("dtype")), _text(r.get("model_kind")))
        if not all(key):
            continue
        err = step_error(str(r.get("metric")), _number(r.get("rel_error")))
        if err is not None:
            groups.setdefault(key, []).append((err, f"{r['source']}/{r['case']}"))
    out = []
    for (acc, dtype, kind), pts in sorted(groups.items()):
        errs = [e for e, _ in pts]
        out.append(
            RegimeAccuracy(
                accelerator=acc,
                dtype=dtype,
                model_kind=kind,
                runs=len(errs),
                mean_step_error=sum(errs) / len(errs),
                rms_step_error=math.sqrt(sum(e * e for e in errs) / len(errs)),
                min_step_error=min(errs),
                max_step_error=max(errs),
                within_10pct=sum(1 for e in errs if abs(e) <= 0.10),
                cases=tuple(sorted(c for _, c in pts)),
            )
        )
    return out


def _text(value: object) -> str:
    """A CSV cell as text ('' for empty or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _number(value: object) -> float:
    """A CSV cell as a float (NaN for empty or unreadable)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def write_accuracy(records: Sequence[RegimeAccuracy], path: str | Path) -> None:
    """Write the record as CSV (errors to six decimals, cases joined by ``;``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(ACCURACY_COLUMNS)
        for a in records:
            w.writerow(
                [
                    a.accelerator,
                    a.dtype,
                    a.model_kind,
                    a.runs,
                    *(f"{x:.6f}" for x in (a.mean_step_error, a.rms_step_error, a.min_step_error, a.max_step_error)),
                    a.within_10pct,
                    ";".join(a.cases),
                ]
            )


def load_accuracy(path: str | Path | None = None) -> list[RegimeAccuracy]:
    """The record (default: the shipped one)."""
    p = Path(path) if path is not None else ACCURACY_PATH
    with p.open(newline="") as f:
        return [
            RegimeAccuracy(
                accelerator=r["accelerator"],
                dtype=r["dtype"],
                model_kind=r["model_kind"],
                runs=int(r["runs"]),
                mean_step_error=float(r["mean_step_error"]),
                rms_step_error=float(r["rms_step_error"]),
                min_step_error=float(r["min_step_error"]),
                max_step_error=float(r["max_step_error"]),
                within_10pct=int(r["within_10pct"]),
                cases=tuple(c for c in r["cases"].split(";") if c),
            )
            for r in csv.DictReader(f)
        ]


def accuracy_for(
    accelerator: str, dtype: str, kind: str, records: Sequence[RegimeAccuracy] | None = None
) -> RegimeAccuracy | None:
    """The record of one regime (None: no published run of it has been predicted)."""
    for a in load_accuracy() if records is None else records:
        if (a.accelerator, a.dtype, a.model_kind) == (accelerator, dtype, kind):
            return a
    return None


def accuracy_line(accelerator: str, dtype: str, kind: str, acc: RegimeAccuracy | None) -> str:
    """One line for the console and the report: the regime's record, or that there is none."""
    what = f"{accelerator} {dtype} {kind}"
    hint = _ATTENTION_HINT if kind.endswith(ATTENTION_BOUND) else ""
    if acc is None:
        return (
            f"validated: no published {what} run in netsim's validation yet; this step is the model's "
            f"alone (netsim validate --kind training lists the regimes that are){hint}"
        )
    side = "shorter" if acc.mean_step_error < 0 else "longer"
    return (
        f"validated: {acc.runs} published {what} run{'s' if acc.runs != 1 else ''}; netsim's step was "
        f"{100 * abs(acc.mean_step_error):.1f}% {side} than measured on average (rms "
        f"{100 * acc.rms_step_error:.1f}%, from {100 * acc.min_step_error:+.1f}% to "
        f"{100 * acc.max_step_error:+.1f}%; {acc.within_10pct} of {acc.runs} within 10%){hint}"
    )


#: appended to an attention-bound regime's line: what sets such a step, and how to ask netsim
#: about the kernel a user's software release runs
_ATTENTION_HINT = (
    "; the attention kernel's speed sets this step: time it as your stack's with --set "
    "topology.accelerator.compute.attention=NAME (netsim presets lists them)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m netsim.accuracy RESULTS.csv [OUT.csv]``: derive the record from a validation
    results table (default output: the shipped record)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m netsim.accuracy RESULTS.csv [OUT.csv]", file=sys.stderr)
        return 2
    src = Path(args[0])
    try:
        with src.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        print(f"{src}: cannot read ({exc.strerror})", file=sys.stderr)
        return 2
    missing = {"kind", "metric", "rel_error", "accelerator", "dtype", "model_kind"} - set(rows[0] if rows else {})
    if missing:
        print(f"{src}: not a validation results table (missing {', '.join(sorted(missing))})", file=sys.stderr)
        return 2
    records = regime_accuracy(rows)
    out = Path(args[1]) if len(args) == 2 else ACCURACY_PATH
    write_accuracy(records, out)
    print(f"{out}: {len(records)} regimes from {sum(a.runs for a in records)} published runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
