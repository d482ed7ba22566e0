"""Side-by-side comparison of runs, with ratios against a baseline run.

:func:`compare_runs` turns the ``summary.json`` of each run into one row of a flat table: step
time, the mean time breakdown, bytes per traffic class, east-west / north-south bytes, exposed
communication per class, the busiest rank's kernel time by kernel class and, for MoE runs,
all-to-all share, expert-parallel byte locality, expert load CV and drop rate. Every metric
``m`` gets a column ``m_ratio`` = value / baseline value (NaN where the baseline is zero or
missing), the baseline being the first run unless another is named. :func:`write_compare` writes
that table (``compare.csv`` and ``compare.parquet``), grouped-bar figures and ``report.html`` /
``report.md`` into a directory.

Each row also carries the run's regime and netsim's mean step-time error on published runs of
it (``regime``, ``validated_runs``, ``validated_step_error``: the run's ``validation_accuracy``,
:mod:`netsim.accuracy`); when the runs' regimes have different errors, the report says how much
a step-time ratio between them can be off for that reason alone.

Runs are labelled by their directory name; when two directories share a name, by their
summary's topology/workload/router, and if that still collides, with a ``#n`` suffix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from netsim.errors import NetsimError
from netsim.io import atomic_file, claim_dir
from netsim.report import figures as F
from netsim.report.files import write_figures, write_text
from netsim.report.fmt import DASH, byte_scale, fmt_bytes, fmt_num, fmt_pct, fmt_ratio, fmt_time, ratio, time_scale
from netsim.report.render import Document, Figure, Note, Paragraph, Section, Table, render_html, render_markdown
from netsim.report.tables import BREAKDOWN, MOE_SUMMARY_FIELDS, RunData, load_run, summary_mapping, summary_number

#: Identity columns of the compare table (before the metrics).
ID_COLUMNS = (
    "label",
    "run_dir",
    "baseline",
    "topology",
    "workload",
    "router",
    "seed",
    "num_ranks",
    "regime",
    "validated_runs",
    "validated_step_error",
)


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """A unique, readable label per run (directory name, else topology/workload/router)."""
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    alt = []
    for r in runs:
        parts = [str(r.summary[k]) for k in ("topology", "workload", "router") if r.summary.get(k)]
        alt.append("/".join(parts) or r.name)
    if len(set(alt)) == len(alt):
        return alt
    seen: dict[str, int] = {}
    out = []
    for label in alt:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if alt.count(label) == 1 else f"{label}#{seen[label]}")
    return out


def _kernel_classes(summary: Mapping[str, Any]) -> dict[str, float]:
    """``compute_kernels.by_class_s`` of a run's summary (empty when absent: an older run or a
    replayed trace)."""
    kern = summary.get("compute_kernels")
    return summary_mapping(kern, "by_class_s") if isinstance(kern, Mapping) else {}


def _metrics(
    run: RunData, classes: Sequence[str], exposed: Sequence[str], kernels: Sequence[str], moe: bool
) -> dict[str, float]:
    s = run.summary
    nan = float("nan")

    def num(key: str) -> float:
        v = summary_number(s, key)
        return nan if v is None else v

    out: dict[str, float] = {"step_time_s": num("step_time_s")}
    br = summary_mapping(s, "breakdown_s")
    for comp in BREAKDOWN:
        out[f"{comp}_s"] = br.get(comp, nan)
    by_class = summary_mapping(s, "bytes_by_class")
    out["bytes_total"] = sum(by_class.values()) if by_class else nan
    for c in classes:
        out[f"bytes_{c}"] = by_class.get(c, 0.0 if by_class else nan)
    out["east_west_bytes"] = num("east_west_bytes")
    out["north_south_bytes"] = num("north_south_bytes")
    ex = summary_mapping(s, "exposed_comm_s_by_class")
    for c in exposed:
        out[f"exposed_comm_s_{c}"] = ex.get(c, 0.0 if ex else nan)
    out["checkpoint_time_s"] = num("checkpoint_time_s")
    if kernels:
        kc = _kernel_classes(s)
        out["kernel_time_s"] = sum(kc.values()) if kc else nan
        for c in kernels:
            out[f"kernel_s_{c}"] = kc.get(c, 0.0 if kc else nan)
    if moe:
        for key in MOE_SUMMARY_FIELDS:
            out[key] = num(key)
    return out


def compare_runs(run_dirs: Sequence[str | Path], baseline: str | Path | None = None) -> pd.DataFrame:
    """One row per run: identity, metrics from summary.json, and ``<metric>_ratio`` columns.

    ``baseline`` defaults to the first run; a baseline not among ``run_dirs`` is added first.
    """
    paths = [Path(p) for p in run_dirs]
    if baseline is not None:
        base = Path(baseline)
        match = [i for i, p in enumerate(paths) if p.resolve() == base.resolve()]
        if match:
            base_index = match[0]
        else:
            paths.insert(0, base)
            base_index = 0
    else:
        base_index = 0
    if not paths:
        raise NetsimError("compare needs at least one run directory")
    runs = [load_run(p) for p in paths]
    return _compare_table(runs, base_index)


def _compare_table(runs: Sequence[RunData], base_index: int) -> pd.DataFrame:
    labels = run_labels(runs)
    class_names: list[str] = []
    exposed_names: list[str] = []
    for r in runs:
        class_names += list(summary_mapping(r.summary, "bytes_by_class"))
        exposed_names += list(summary_mapping(r.summary, "exposed_comm_s_by_class"))
    classes = F.ordered_classes(list(dict.fromkeys(class_names)))
    exposed = F.ordered_classes(list(dict.fromkeys(exposed_names)))
    kernels = sorted({c for r in runs for c in _kernel_classes(r.summary)})
    moe = any(r.has_moe for r in runs)
    records = []
    metrics_list = [_metrics(r, classes, exposed, kernels, moe) for r in runs]
    base = metrics_list[base_index]
    for i, (r, label, m) in enumerate(zip(runs, labels, metrics_list, strict=True)):
        rec: dict[str, object] = {
            "label": label,
            "run_dir": str(r.path),
            "baseline": i == base_index,
            "topology": str(r.summary.get("topology", "")),
            "workload": str(r.summary.get("workload", "")),
            "router": str(r.summary.get("router", "") or ""),
            "seed": summary_number(r.summary, "seed"),
            "num_ranks": summary_number(r.summary, "num_ranks"),
            **_validated(r.summary),
        }
        rec.update(m)
        rec.update({f"{k}_ratio": ratio(v, base[k]) for k, v in m.items()})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _validated(summary: Mapping[str, Any]) -> dict[str, object]:
    """The run's regime and netsim's mean step-time error on published runs of it
    (``validation_accuracy``, :mod:`netsim.accuracy`; empty and NaN for a run without one)."""
    acc = summary.get("validation_accuracy")
    if not isinstance(acc, Mapping):
        return {"regime": "", "validated_runs": 0, "validated_step_error": float("nan")}
    regime = " ".join(str(acc.get(k, "")) for k in ("accelerator", "dtype", "model_kind")).strip()
    runs = int(acc.get("runs") or 0)
    err = acc.get("mean_step_error")
    return {
        "regime": regime,
        "validated_runs": runs,
        "validated_step_error": float(err) if runs and isinstance(err, int | float) else float("nan"),
    }


def regime_note(df: pd.DataFrame) -> str | None:
    """A warning when the runs sit in regimes whose validated step errors differ: a step-time
    ratio across them carries the difference as bias."""
    errs = {
        str(r["regime"]): float(r["validated_step_error"])
        for r in df.to_dict("records")
        if r["regime"] and np.isfinite(r["validated_step_error"])
    }
    unvalidated = sorted({str(r["regime"]) for r in df.to_dict("records") if r["regime"]} - set(errs))
    parts = []
    if len(errs) > 1 and max(errs.values()) - min(errs.values()) > 0:
        spread = 100 * (max(errs.values()) - min(errs.values()))
        listed = ", ".join(f"{k} {100 * v:+.1f}%" for k, v in sorted(errs.items()))
        parts.append(
            f"These runs sit in regimes where netsim's step has missed published runs by different amounts "
            f"on average ({listed}): a step-time ratio between them can be off by about {spread:.0f} points "
            "for that reason alone (`netsim validate --kind training`)."
        )
    if unvalidated:
        parts.append(f"No published run validates {', '.join(unvalidated)}: those steps are the model's alone.")
    return " ".join(parts) or None


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a compare table (neither identity nor ratio columns)."""
    return [c for c in df.columns if c not in ID_COLUMNS and not c.endswith("_ratio")]


def _fmt_validated(r: Mapping[str, Any]) -> str:
    """A run's regime record in the Runs table: mean step-time error over its published runs."""
    if not r.get("regime"):
        return DASH
    if not int(r.get("validated_runs") or 0):
        return f"none ({r['regime']})"
    return f"{100 * float(r['validated_step_error']):+.1f}% ({r['validated_runs']} {r['regime']} runs)"


def _fmt_metric(col: str, value: object) -> str:
    if col.endswith("_s") or "_s_" in col:
        return fmt_time(value)
    if "bytes" in col:
        return fmt_bytes(value)
    if col in ("alltoall_share", "drop_rate"):
        return fmt_pct(value)
    return fmt_num(value)


def _run_colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _grouped(ax: object, groups: Sequence[str], values: np.ndarray, labels: Sequence[str]) -> None:
    """Grouped bars: ``values[run, group]``."""
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    nrun = values.shape[0]
    width = 0.8 / max(1, nrun)
    x = np.arange(len(groups))
    for i, (label, color) in enumerate(zip(labels, _run_colors(nrun), strict=True)):
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(values[i]), width=width, color=color, label=label)
    ax.set_xticks(list(x))
    ax.set_xticklabels(list(groups), rotation=30 if len(groups) > 5 else 0, fontsize=8)


def fig_compare_breakdown(df: pd.DataFrame) -> MplFigure | None:
    """Grouped bars: mean compute / communication / overlap / idle per run."""
    cols = [f"{c}_s" for c in BREAKDOWN]
    vals = df[cols].to_numpy(dtype=float)
    if not np.isfinite(vals).any():
        return None
    div, unit = time_scale(float(np.nanmax(vals)))
    fig, (ax,) = F.new_figure(9.0, 4.0)
    _grouped(ax, list(BREAKDOWN), vals / div, list(df["label"]))
    ax.set_xlabel("component (mean over ranks)")
    ax.set_ylabel(f"time ({unit})")
    ax.set_title("Time breakdown by run")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, title="run")
    return fig


def _bars_with_ratio(df: pd.DataFrame, col: str, scale: tuple[float, str], ylabel: str, title: str) -> MplFigure:
    div, _ = scale
    vals = df[col].to_numpy(dtype=float)
    fig, (ax,) = F.new_figure(max(5.0, 1.0 + 0.9 * len(df)), 4.0)
    x = np.arange(len(df))
    bars = ax.bar(x, np.nan_to_num(vals / div), color=_run_colors(len(df)), width=0.7)
    for bar, r in zip(bars, df[f"{col}_ratio"], strict=True):
        ax.annotate(
            fmt_ratio(r), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(list(x))
    ax.set_xticklabels(list(df["label"]), rotation=30 if len(df) > 4 else 0, fontsize=8)
    ax.set_xlabel("run (label: ratio to baseline)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    top = np.nanmax(vals / div) if np.isfinite(vals).any() else 1.0
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    return fig


def fig_compare_step(df: pd.DataFrame) -> MplFigure | None:
    """Bars of step time per run, annotated with the ratio to the baseline."""
    vals = df["step_time_s"].to_numpy(dtype=float)
    if not np.isfinite(vals).any():
        return None
    div, unit = time_scale(float(np.nanmax(vals)))
    return _bars_with_ratio(df, "step_time_s", (div, unit), f"step time ({unit})", "Step time by run")


def fig_compare_bytes(df: pd.DataFrame) -> MplFigure | None:
    """Grouped bars: bytes per traffic class per run."""
    cols = [c for c in df.columns if c.startswith("bytes_") and c != "bytes_total" and not c.endswith("_ratio")]
    if not cols:
        return None
    vals = df[cols].to_numpy(dtype=float)
    if not np.isfinite(vals).any():
        return None
    div, unit = byte_scale(float(np.nanmax(vals)))
    fig, (ax,) = F.new_figure(9.0, 4.0)
    _grouped(ax, [c.removeprefix("bytes_") for c in cols], vals / div, list(df["label"]))
    ax.set_xlabel("traffic class")
    ax.set_ylabel(f"bytes ({unit})")
    ax.set_title("Bytes by traffic class by run")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, title="run")
    return fig


def fig_compare_alltoall(df: pd.DataFrame) -> MplFigure | None:
    """Bars of all-to-all share of step time per run (MoE runs), with ratios."""
    if "alltoall_share" not in df.columns or not np.isfinite(df["alltoall_share"].to_numpy(dtype=float)).any():
        return None
    return _bars_with_ratio(
        df, "alltoall_share", (0.01, "%"), "all-to-all share of step time (%)", "All-to-all share by run"
    )


def build_compare(df: pd.DataFrame) -> tuple[Document, dict[str, MplFigure]]:
    """The comparison document and its figures (not rendered yet) from a compare table."""
    labels = list(df["label"])
    base_label = str(df.loc[df["baseline"], "label"].iloc[0])
    doc = Document(f"netsim compare: {len(df)} runs")
    doc.header.append(("baseline", base_label))
    runs = Section("Runs", anchor="runs")
    runs.add(
        Table(
            [
                "label",
                "run directory",
                "topology",
                "workload",
                "router",
                "ranks",
                "seed",
                "baseline",
                "validated step error",
            ],
            [
                [
                    str(r["label"]),
                    f"`{r['run_dir']}`",
                    str(r["topology"]) or DASH,
                    str(r["workload"]) or DASH,
                    str(r["router"]) or DASH,
                    fmt_num(r["num_ranks"]),
                    fmt_num(r["seed"]),
                    "yes" if r["baseline"] else "",
                    _fmt_validated(r),
                ]
                for r in df.to_dict("records")
            ],
            align="llllllrll",
        )
    )
    note = regime_note(df)
    if note:
        runs.add(Paragraph(note))
    side = Section("Side by side", anchor="side-by-side")
    side.add(Paragraph(f"Each cell: the run's value and, in brackets, its ratio to the baseline `{base_label}`."))
    rows = []
    for col in metric_columns(df):
        row = [f"`{col}`"]
        for r in df.to_dict("records"):
            cell = _fmt_metric(col, r[col])
            if not r["baseline"]:
                cell += f" ({fmt_ratio(r[col + '_ratio'])})"
            row.append(cell)
        rows.append(row)
    side.add(Table(["metric", *labels], rows, align="l" + "r" * len(labels)))
    figs: dict[str, MplFigure] = {}
    fig_sec = Section("Figures", anchor="figures")
    notes: list[str] = []
    for file, fn, caption in (
        ("compare_breakdown.png", fig_compare_breakdown, "Mean time breakdown per run"),
        ("compare_step_time.png", fig_compare_step, "Step time per run with ratio to the baseline"),
        ("compare_bytes.png", fig_compare_bytes, "Bytes by traffic class per run"),
        ("compare_alltoall.png", fig_compare_alltoall, "All-to-all share of the step per run"),
    ):
        fig = fn(df)
        if fig is None:
            notes.append(f"{caption}: omitted, no run has the values.")
            continue
        figs[file] = fig
        fig_sec.add(Figure(file, caption))
    for note in notes:
        fig_sec.add(Note(note))
    doc.sections.extend([runs, side, fig_sec])
    files = Section("Files", anchor="files")
    files.add(
        Paragraph(
            "The table above is in `compare.csv` and `compare.parquet`: identity columns, one "
            "column per metric and a `<metric>_ratio` column per metric (value / baseline value)."
        )
    )
    doc.sections.append(files)
    return doc, figs


def write_compare(run_dirs: Sequence[str | Path], out: str | Path, baseline: str | Path | None = None) -> Path:
    """Compare runs; write compare.csv/.parquet, figures/, report.md and report.html into ``out``.

    Returns the path of ``out/report.html``.
    """
    df = compare_runs(run_dirs, baseline)
    out_dir = claim_dir(out, kind="compare")  # a compare folder is refreshed in place; others are refused
    doc, mpl_figs = build_compare(df)
    figs = F.render_all(mpl_figs)
    with atomic_file(out_dir / "compare.csv") as fh:
        df.to_csv(fh, index=False, float_format="%.12g")
    with atomic_file(out_dir / "compare.parquet", "wb") as fh:
        df.to_parquet(fh, index=False)
    write_figures(out_dir / "figures", figs)
    write_text(out_dir / "report.md", render_markdown(doc))
    return write_text(out_dir / "report.html", render_html(doc, figs))
