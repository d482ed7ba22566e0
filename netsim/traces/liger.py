"""Import Liger-Kernel's published kernel benchmarks of training kernels as a kernel table.

Liger-Kernel (linkedin/Liger-Kernel, BSD-2-Clause) benchmarks its Triton kernels against the
implementations they replace and publishes every measurement in one CSV,
``benchmark/data/all_benchmark_data.csv``: one row per (``kernel_name``, ``kernel_provider``,
``kernel_operation_mode``, ``metric_name``, ``x_value``) with the median and the 20th / 80th
percentiles (``y_value_50``, ``y_value_20``, ``y_value_80``, milliseconds for ``speed``), the
benchmark's fixed shape (``extra_benchmark_config_str``, JSON) and the GPU (``gpu_name``).  Its
``megatron_*`` benchmarks time the kernels Megatron-Core itself runs in training, in BF16
(``benchmark/scripts/benchmark_megatron_{swiglu,cross_entropy}.py``), which is what netsim's
training step needs and what inference profiles (Vidur) lack: the backward passes.  Its
``rms_norm`` benchmark times, as the ``huggingface`` provider, Hugging Face's ``LlamaRMSNorm``:
the eager fp32 op sequence of ``rmsnorm_eager`` (``benchmark/scripts/benchmark_rms_norm.py``).

:func:`read_liger` maps them onto the kernel catalogue (``S``, ``B``, ``TP`` from the
benchmark's config; ``x`` its swept value):

================================================  ===========================================
Liger benchmark, provider                         netsim kernel
================================================  ===========================================
``megatron_swiglu``, ``megatron`` (Megatron's     ``swiglu`` tokens = S B, hidden = x
``bias_swiglu_impl``: ``bias_activation_fusion``) (``ffn_local``: the FFN columns of a rank)
``megatron_cross_entropy``, ``megatron-unfused``  ``cross_entropy`` tokens = S B, vocab = x / TP
``megatron_cross_entropy``, ``megatron-fused``    ``cross_entropy_fused`` (same shape)
``megatron_cross_entropy``, ``liger``             ``cross_entropy_online`` (same shape): Liger's
                                                  one-pass kernel, standing in for Transformer
                                                  Engine's (``cross_entropy_fusion_impl: te``),
                                                  which computes the gradient in the forward
                                                  the same way; *approx.*
``rms_norm``, ``huggingface`` (``LlamaRMSNorm``)  ``rmsnorm_eager`` tokens = M, hidden = x, times
                                                  scaled by :data:`BYTE_SCALE` (below)
================================================  ===========================================

The ``rms_norm`` benchmark's module keeps its weight in fp32 (``nn.Parameter(torch.ones(H))``), so
its output and the gradients it back-propagates are fp32: 38 bytes per element forward and 114
backward by the op count of :mod:`netsim.calibration.eager_counts`, where a norm with a BF16
weight (what FSDP's BF16 mixed precision computes with) moves 36 and 92.  Its times are scaled by
those ratios (the same achieved bandwidth over fewer bytes, *approx.*); the table's metadata
says so (``scaled``).

Passes: ``forward`` rows are the forward; the backward is ``full`` minus ``forward`` (the
scripts' ``backward`` mode re-runs the forward inside its timed loop, so ``full`` and
``backward`` time the same work; ``full`` is used).  Both include what the benchmark adds around
the kernel: the ``.sum()`` of the output and its backward (one read of the output; for the
cross-entropy a per-token loss, negligible).  Where a cell was measured more than once the most
recent measurement is kept; a cell without both a forward and a full measurement is skipped and
listed in the table's ``skipped`` metadata.  ``time_p10_s`` / ``time_p90_s`` hold Liger's 20th / 80th
percentiles (the backward's: the full pass's percentiles less the forward's median).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from netsim.calibration.kernels import TABLE_COLUMNS, KernelTable, get_kernel
from netsim.errors import TraceError
from netsim.limits import MAX_WIDTH, QUANTITY_MAX
from netsim.traces.csv_input import read_measurements

__all__ = ["BYTE_SCALE", "LIGER_BENCHMARKS", "read_liger"]

#: (Liger benchmark, provider) -> (netsim kernel, the shape parameter ``x_value`` sets)
LIGER_BENCHMARKS: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("megatron_swiglu", "megatron"): ("swiglu", "hidden"),
    ("megatron_cross_entropy", "megatron-unfused"): ("cross_entropy", "vocab"),
    ("megatron_cross_entropy", "megatron-fused"): ("cross_entropy_fused", "vocab"),
    ("megatron_cross_entropy", "liger"): ("cross_entropy_online", "vocab"),
    ("rms_norm", "huggingface"): ("rmsnorm_eager", "hidden"),
}
#: (Liger benchmark, provider) -> (forward, backward) factor from the benchmark's bytes to the
#: kernel's (module docstring): LlamaRMSNorm with an fp32 weight, 38 and 114 bytes per element,
#: against a BF16-weight norm's 36 and 92
BYTE_SCALE: Final[dict[tuple[str, str], tuple[float, float]]] = {
    ("rms_norm", "huggingface"): (36.0 / 38.0, 92.0 / 114.0)
}
REQUIRED: Final = (
    "kernel_name",
    "kernel_provider",
    "kernel_operation_mode",
    "metric_name",
    "metric_unit",
    "x_value",
    "y_value_50",
    "y_value_20",
    "y_value_80",
    "extra_benchmark_config_str",
    "gpu_name",
    "timestamp",
)
BACKWARD_RULE: Final = (
    "backward = Liger's 'full' (forward + backward, one timed loop) less its 'forward' median; "
    "both include the benchmark's .sum() of the output and its backward"
)
DTYPE_NOTE: Final = (
    "the megatron_* benchmark scripts make their inputs in torch.bfloat16 "
    "(benchmark/scripts/benchmark_megatron_swiglu.py _make_input, benchmark_megatron_cross_entropy.py _make_inputs)"
)
ONLINE_NOTE: Final = (
    "cross_entropy_online: Liger's one-pass cross-entropy (LigerMegatronCrossEntropy) stands in for Transformer "
    "Engine's (cross_entropy_fusion_impl: te), which also writes the logits' gradient in the forward; approx."
)


def _names() -> set[str]:
    return {f"{k}/{p}" for k, p in LIGER_BENCHMARKS}


def _read(path: Path) -> pd.DataFrame:
    src = str(path)
    df = read_measurements(path)
    for col in REQUIRED:
        if col not in df.columns:
            raise TraceError(
                "missing column (Liger-Kernel's benchmark/data/all_benchmark_data.csv has " + ", ".join(REQUIRED) + ")",
                source=src,
                field=col,
            )
    return df


def _config(raw: object, src: str, row: int) -> dict[str, Any]:
    try:
        cfg = json.loads(str(raw))
    except json.JSONDecodeError:
        cfg = None
    if not isinstance(cfg, dict):
        raise TraceError(f"row {row}: not a JSON object (got {raw!r})", source=src, field="extra_benchmark_config_str")
    return cfg


def _positive(cfg: dict[str, Any], key: str, default: int | None, src: str, row: int) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise TraceError(
            f"row {row}: {key} must be a positive integer (got {v!r})", source=src, field="extra_benchmark_config_str"
        )
    return v


def _times(g: pd.DataFrame, src: str) -> pd.DataFrame:
    """The latest measurement of each cell, its times in seconds, checked finite and > 0."""
    g = g.sort_values("timestamp", kind="stable").drop_duplicates(
        ["kernel_name", "kernel_provider", "kernel_operation_mode", "x_value", "extra_benchmark_config_str"],
        keep="last",
    )
    out = g.copy()
    for col in ("x_value", "y_value_50", "y_value_20", "y_value_80"):
        vals = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float)
        if col == "x_value":  # a model dimension: a whole number within the widths a model may have
            what = f"a whole number in 1..{_MAX_X}"
            bad = ~np.isfinite(vals) | (vals < 1) | (vals > _MAX_X) | (np.mod(np.nan_to_num(vals), 1.0) != 0)
        else:  # milliseconds
            longest_ms = QUANTITY_MAX["duration"] * 1e3
            what = f"a finite number of ms > 0 and at most {longest_ms:.0e}"
            bad = ~np.isfinite(vals) | (vals <= 0) | (vals > longest_ms)
        if bad.any():
            i = int(out.index[np.flatnonzero(bad)[0]])
            raise TraceError(f"row {i + 2}: must be {what} (got {g.loc[i, col]!r})", source=src, field=col)
        out[col] = vals
    return out


#: the largest ``x_value`` (a vocabulary, hidden or FFN width): the widest dimension a model may have
_MAX_X = 16 * MAX_WIDTH


def read_liger(path: str | Path, gpu: str, *, command: str = "") -> KernelTable:
    """The speed measurements of the mapped benchmarks (:data:`LIGER_BENCHMARKS`) of ``gpu`` (its
    ``gpu_name``, exactly) in the Liger CSV at ``path`` as a kernel table (module docstring).
    TraceError for an unreadable or malformed file, or one without measurements of that GPU."""
    p = Path(path)
    src = str(path)
    df = _read(p)
    pair = df["kernel_name"].astype(str) + "/" + df["kernel_provider"].astype(str)
    mapped = pair.isin([f"{k}/{p}" for k, p in LIGER_BENCHMARKS])
    wanted = df[(df["gpu_name"].astype(str) == gpu) & (df["metric_name"].astype(str) == "speed") & mapped]
    if wanted.empty:
        have = sorted(set(df.loc[mapped, "gpu_name"].astype(str)))
        raise TraceError(
            f"no speed measurements of GPU {gpu!r} for the mapped benchmarks ({', '.join(sorted(_names()))})"
            + (f" (the file has them for: {', '.join(have)})" if have else " (the file has none for any GPU)"),
            source=src,
            field="gpu_name",
        )
    bad_unit = wanted["metric_unit"].astype(str) != "ms"
    if bad_unit.any():
        i = int(wanted.index[np.flatnonzero(bad_unit.to_numpy())[0]])
        raise TraceError(f"row {i + 2}: speed must be in ms (got {df.loc[i, 'metric_unit']!r})", source=src)
    t = _times(wanted, src)
    for i, raw in t["extra_benchmark_config_str"].items():  # every row's config, before cells are formed
        _config(raw, src, int(i) + 2)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for (name, provider, cfg_raw, x), cell in t.groupby(
        ["kernel_name", "kernel_provider", "extra_benchmark_config_str", "x_value"], sort=True
    ):
        by_mode = {str(m): r for m, r in cell.set_index("kernel_operation_mode").iterrows()}
        line = int(cell.index[0]) + 2
        if "forward" not in by_mode or "full" not in by_mode:
            skipped.append(
                f"{name}/{provider} x={x:g} {cfg_raw}: no {'forward' if 'forward' not in by_mode else 'full'}"
            )
            continue  # a cell without both passes cannot give the backward
        kernel, swept = LIGER_BENCHMARKS[(str(name), str(provider))]
        spec = get_kernel(kernel)
        cfg = _config(cfg_raw, src, line)
        if "M" in cfg:  # rms_norm: M rows of H
            tokens = _positive(cfg, "M", None, src, line)
        else:
            tokens = _positive(cfg, "S", None, src, line) * _positive(cfg, "B", None, src, line)
        f_scale, b_scale = BYTE_SCALE.get((str(name), str(provider)), (1.0, 1.0))
        tp = _positive(cfg, "TP", 1, src, line) if swept == "vocab" else 1
        shape = {"tokens": float(tokens), swept: float(x) / tp}
        fwd, full = by_mode["forward"], by_mode["full"]
        bwd_ms = float(full["y_value_50"]) - float(fwd["y_value_50"])
        if bwd_ms <= 0:
            raise TraceError(
                f"row {line}: {name}/{provider} at x={x:g}: the full pass ({full['y_value_50']:g} ms) is not longer "
                f"than the forward ({fwd['y_value_50']:g} ms)",
                source=src,
                field="y_value_50",
            )
        label = f"liger:{name}:{provider}"
        for pass_, k, med, lo, hi in (
            ("fwd", f_scale, float(fwd["y_value_50"]), float(fwd["y_value_20"]), float(fwd["y_value_80"])),
            (
                "bwd",
                b_scale,
                bwd_ms,
                float(full["y_value_20"]) - float(fwd["y_value_50"]),
                float(full["y_value_80"]) - float(fwd["y_value_50"]),
            ),
        ):
            med, lo, hi = k * med, k * lo, k * hi
            lo, hi = min(max(lo, 1e-6 * med), med), max(hi, med)
            rows.append(
                {
                    "kernel": kernel,
                    "dtype": "bfloat16",
                    "pass": pass_,
                    **shape,
                    "time_s": med * 1e-3,
                    "time_p10_s": lo * 1e-3,
                    "time_p90_s": hi * 1e-3,
                    "flops": spec.flops(shape, pass_),
                    "bytes": spec.nbytes(shape, pass_, "bfloat16"),
                    "repeats": 1,
                    "inner": 1,
                    "label": label,
                }
            )
    if not rows:
        raise TraceError(f"GPU {gpu!r}: no benchmark cell has both a forward and a full measurement", source=src)
    out = pd.DataFrame(rows)
    for col in TABLE_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    imported = set(pair[wanted.index])
    stamps = sorted(set(t["timestamp"].astype(str)))
    versions = sorted(set(t["liger_version"].astype(str))) if "liger_version" in t.columns else []
    meta = {
        "device": "cuda",
        "device_name": f"{gpu} (Liger-Kernel benchmarks)",
        "source": "linkedin/Liger-Kernel benchmark/data/all_benchmark_data.csv (BSD-2-Clause)",
        "source_file": p.name,
        "gpu_name": gpu,
        "benchmarks": {f"{k}/{prov}": f"{kern} ({swept} = x)" for (k, prov), (kern, swept) in LIGER_BENCHMARKS.items()},
        "measured": f"{stamps[0]} .. {stamps[-1]}",
        "liger_versions": versions,
        "backward": BACKWARD_RULE,
        "dtype_note": DTYPE_NOTE,
        "online_note": ONLINE_NOTE,
        "scaled": {
            f"{k}/{prov}": f"fwd x {f:.4f}, bwd x {b:.4f}"
            for (k, prov), (f, b) in BYTE_SCALE.items()
            if f"{k}/{prov}" in imported
        },
        "percentiles": "time_p10_s / time_p90_s hold Liger's 20th / 80th percentiles",
        "skipped": skipped,
        "command": command,
    }
    return KernelTable.from_frame(out.loc[:, list(TABLE_COLUMNS)], meta)
