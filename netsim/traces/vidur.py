"""Import Vidur's measured operator timings (H100, A100) as a netsim kernel table.

Vidur (microsoft/vidur, MIT) profiles the forward pass of one transformer block on a real GPU
for several models, at many token counts and tensor-parallel degrees, and publishes the
timings as ``data/profiling/compute/<gpu>/<org>/<model>/mlp.csv``.  Each row is one
(model, ``num_tokens``, ``num_tensor_parallel_workers``) measurement with
``time_stats.<op>.{min,max,mean,median,std}`` in **milliseconds** (CUDA kernel time of the op,
20 samples: ``vidur/profiling/mlp/mlp_wrapper.py``, ``ACTIVE_STEPS = 20``; the model runs in
``torch.float16``).

:func:`read_vidur` maps the operators onto the kernel catalogue (``h`` = ``n_embd``, ``d = h /
n_head``, ``f`` = ``n_expanded_embd``, ``t`` = tensor-parallel degree, ``T`` = tokens):

=====================================  ==========================================================
Vidur operator                         netsim kernel (forward)
=====================================  ==========================================================
``attn_pre_proj`` (QKV projection)     ``gemm`` m=T, n=(n_head + 2 n_kv_head) d / t, k=h
``attn_post_proj`` (output proj.)      ``gemm`` m=T, n=h, k=n_head d / t
``mlp_up_proj``                        ``gemm`` m=T, n=(2 if gated else 1) f / t, k=h
``mlp_down_proj``                      ``gemm`` m=T, n=h, k=f / t
``input_layernorm``,                   ``rmsnorm`` (or ``layernorm`` for a model without the
``post_attention_layernorm``           post-attention norm: Vidur pairs that norm with RMSNorm
                                       only) tokens=T, hidden=h
``mlp_act`` (gated models: SiLU*mul)   ``swiglu`` tokens=T, hidden=f / t
``emb``, ``attn_rope``, ``add``,       not imported (no catalogue kernel)
``mlp_act`` of a non-gated model
=====================================  ==========================================================

Rows measured more than once at the same shape are merged: ``time_s`` is the median of their
medians; ``time_p10_s`` / ``time_p90_s`` are ``median -/+ 1.2816 std`` clipped to the measured
min / max (the 10th/90th percentiles of a normal distribution: Vidur publishes moments, not
percentiles).  Each row keeps a ``label`` ``<org>/<model>:<op>:tp<t>`` so that validation can
hold a model out.  ``tokens_per_octave`` thins the token counts to a geometric grid (the
published grid steps by 8 to 32 tokens; neighbouring counts differ by well under 1 %).

The table's metadata records the source, the models, what was skipped, the backward rule (not
measured: derived from the forward, see :mod:`netsim.calibration.compute`), the fp16 = bf16
equivalence and the fitted GEMM surface (:mod:`netsim.calibration.surface`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from netsim.calibration.kernels import TABLE_COLUMNS, KernelTable
from netsim.errors import TraceError
from netsim.traces.csv_input import read_measurements

__all__ = ["GEMM_OPS", "find_profiles", "fit_surfaces", "read_vidur", "thin_tokens"]

SHAPE_FIELDS: Final = (
    "n_head",
    "n_kv_head",
    "n_embd",
    "n_expanded_embd",
    "vocab_size",
    "use_gated_mlp",
    "num_tokens",
    "num_tensor_parallel_workers",
)
MODEL_FIELDS: Final = SHAPE_FIELDS[:6]
GEMM_OPS: Final = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
NORM_OPS: Final = ("input_layernorm", "post_attention_layernorm")
STATS: Final = ("min", "max", "median", "std")
SAMPLES_PER_ROW: Final = 20  # vidur/profiling/mlp/mlp_wrapper.py: ACTIVE_STEPS
Z90: Final = 1.2815515655446004  # 90th percentile of the standard normal

BACKWARD_RULE: Final = (
    "not measured: GEMM backward = 2 x forward (the dX and dW GEMMs each have the forward's FLOPs); "
    "other kernels: forward x the catalogue's backward/forward cost ratio"
)
DTYPE_NOTE: Final = (
    "Vidur runs the model in torch.float16 (vidur/profiling/mlp/mlp_wrapper.py); A100 and H100 "
    "tensor cores run FP16 and BF16 at the same peak (NVIDIA A100 and H100 datasheets), so "
    "bfloat16 is answered from these float16 rows"
)


def find_profiles(directory: str | Path) -> tuple[str, list[tuple[str, Path]]]:
    """``(device, [(model, path), ...])`` of the ``mlp.csv`` files under ``directory``.

    ``directory`` is one device's folder (``.../compute/h100``: models are ``<org>/<model>``) or
    a folder holding exactly one device folder.  A folder with several device folders is an
    error (import them one at a time).
    """
    root = Path(directory)
    src = str(directory)
    if not root.is_dir():
        raise TraceError("not a directory (give a Vidur profiling folder such as .../compute/h100)", source=src)
    files = sorted(p for p in root.rglob("mlp.csv") if p.is_file())
    if not files:
        raise TraceError("no mlp.csv under this directory (Vidur layout: <gpu>/<org>/<model>/mlp.csv)", source=src)
    rels = [p.relative_to(root).parts for p in files]
    device = root.resolve().name
    if all(len(r) == 4 for r in rels):
        devices = sorted({r[0] for r in rels})
        if len(devices) > 1:
            raise TraceError(
                f"holds profiles of several devices ({', '.join(devices)}); import one folder, "
                f"e.g. {root / devices[0]}",
                source=src,
            )
        device = devices[0]
        rels = [r[1:] for r in rels]
    return device, [("/".join(r[:-1]) or root.resolve().name, p) for r, p in zip(rels, files, strict=True)]


def _read_csv(path: Path) -> pd.DataFrame:
    """One Vidur CSV, checked: columns present, numbers finite, times > 0, one model."""
    src = str(path)
    df = read_measurements(path)
    for col in SHAPE_FIELDS + tuple(f"time_stats.{op}.{s}" for op in GEMM_OPS for s in STATS):
        if col not in df.columns:
            raise TraceError(
                "missing column (a Vidur mlp.csv has the shape columns and time_stats.<op>.{min,max,mean,median,std})",
                source=src,
                field=col,
            )
    gated = df["use_gated_mlp"].astype(str).str.strip().str.lower()
    bad = ~gated.isin(("true", "false", "1", "0"))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(
            f"row {i + 1}: must be True or False (got {df['use_gated_mlp'].iloc[i]!r})",
            source=src,
            field="use_gated_mlp",
        )
    df["use_gated_mlp"] = gated.isin(("true", "1"))
    time_cols = [c for c in df.columns if c.startswith("time_stats.") and c.rsplit(".", 1)[-1] in STATS]
    for col in (*SHAPE_FIELDS[:5], *SHAPE_FIELDS[6:], *time_cols):
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        is_std = col.endswith(".std")
        bad = ~np.isfinite(vals) | ((vals < 0) if is_std else (vals <= 0))
        if col.startswith("time_stats.") and col.split(".")[1] not in GEMM_OPS:
            bad &= ~np.isnan(vals)  # optional operators may be empty
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            need = ">= 0" if is_std else "> 0"
            raise TraceError(
                f"row {i + 1}: must be a finite number {need} (got {df[col].iloc[i]!r})", source=src, field=col
            )
        df[col] = vals
    dims = df[list(MODEL_FIELDS)].drop_duplicates()
    if len(dims) > 1:
        raise TraceError(
            f"rows of {len(dims)} different models in one file (one model per mlp.csv)", source=src, field="n_embd"
        )
    _check_dims(df.iloc[0], df["num_tensor_parallel_workers"], src)
    return df


def _check_dims(r: pd.Series, tps: pd.Series, src: str) -> None:
    h, nh, nkv, f = (int(r[c]) for c in ("n_embd", "n_head", "n_kv_head", "n_expanded_embd"))
    for name, val in (("n_embd", h), ("n_head", nh), ("n_kv_head", nkv), ("n_expanded_embd", f)):
        if float(r[name]) != val:
            raise TraceError(f"must be an integer (got {r[name]!r})", source=src, field=name)
    if h % nh:
        raise TraceError(f"n_embd {h} is not a multiple of n_head {nh}", source=src, field="n_embd")
    for t in sorted({int(x) for x in tps}):
        for name, val in (("n_head", nh), ("n_kv_head", nkv), ("n_expanded_embd", f)):
            if val % t:
                raise TraceError(
                    f"{name} {val} does not split over {t} tensor-parallel workers",
                    source=src,
                    field="num_tensor_parallel_workers",
                )


def thin_tokens(tokens: Iterable[float], per_octave: int) -> list[int]:
    """Token counts at least ``2^(1/per_octave)`` apart, greedily from the smallest; the
    largest count is always kept (so the thinned table spans the same range)."""
    if per_octave < 1:
        raise TraceError(f"tokens per octave must be >= 1 (got {per_octave})", field="--tokens-per-octave")
    keep: list[int] = []
    values = sorted({int(x) for x in tokens})
    for t in values:
        if not keep or math.log2(t) - math.log2(keep[-1]) >= 1.0 / per_octave - 1e-9:
            keep.append(t)
    if values and keep[-1] != values[-1]:
        keep.append(values[-1])
    return keep


def _op_rows(df: pd.DataFrame, model: str) -> list[dict[str, Any]]:
    """Per source row and operator: kernel, shape, label and the timing moments (seconds)."""
    r0 = df.iloc[0]
    h, nh, nkv, f = (int(r0[c]) for c in ("n_embd", "n_head", "n_kv_head", "n_expanded_embd"))
    d = h // nh
    gated = bool(r0["use_gated_mlp"])
    norm = "rmsnorm" if "time_stats.post_attention_layernorm.median" in df.columns else "layernorm"
    out: list[dict[str, Any]] = []
    for _, r in df.iterrows():
        T, t = int(r["num_tokens"]), int(r["num_tensor_parallel_workers"])
        shapes: dict[str, tuple[str, dict[str, float]]] = {
            "attn_pre_proj": ("gemm", {"m": T, "n": (nh + 2 * nkv) * d // t, "k": h}),
            "attn_post_proj": ("gemm", {"m": T, "n": h, "k": nh * d // t}),
            "mlp_up_proj": ("gemm", {"m": T, "n": (2 if gated else 1) * f // t, "k": h}),
            "mlp_down_proj": ("gemm", {"m": T, "n": h, "k": f // t}),
        }
        for op in NORM_OPS:
            shapes[op] = (norm, {"tokens": T, "hidden": h})
        if gated:
            shapes["mlp_act"] = ("swiglu", {"tokens": T, "hidden": f // t})
        for op, (kernel, shape) in shapes.items():
            med = r.get(f"time_stats.{op}.median")
            if med is None or not np.isfinite(med):
                continue
            out.append(
                {
                    "kernel": kernel,
                    "label": f"{model}:{op}:tp{t}",
                    **shape,
                    "median": med * 1e-3,
                    "min": r[f"time_stats.{op}.min"] * 1e-3,
                    "max": r[f"time_stats.{op}.max"] * 1e-3,
                    "std": r[f"time_stats.{op}.std"] * 1e-3,
                }
            )
    return out


def _merge(rows: pd.DataFrame) -> pd.DataFrame:
    """Merge repeated measurements of one (label, shape) into one table row."""
    rows = rows.assign(
        p10=np.clip(rows["median"] - Z90 * rows["std"], rows["min"], rows["median"]),
        p90=np.clip(rows["median"] + Z90 * rows["std"], rows["median"], rows["max"]),
    )
    keys = ["kernel", "label", *[c for c in ("m", "n", "k", "tokens", "hidden") if c in rows.columns]]
    g = rows.groupby(keys, sort=True, dropna=False)
    out = g.agg(
        time_s=("median", "median"), time_p10_s=("p10", "min"), time_p90_s=("p90", "max"), samples=("median", "size")
    ).reset_index()
    out["time_p10_s"] = np.minimum(out["time_p10_s"], out["time_s"])
    out["time_p90_s"] = np.maximum(out["time_p90_s"], out["time_s"])
    out["repeats"] = out.pop("samples") * SAMPLES_PER_ROW
    out["inner"] = 1
    out["dtype"] = "float16"
    out["pass"] = "fwd"
    return out


def fit_surfaces(table: KernelTable) -> dict[str, Any]:
    """Fitted GEMM surfaces of every (dtype, pass) with GEMM rows: ``{"dtype/pass": params}``."""
    from netsim.calibration.catalogue import DTYPE_BYTES
    from netsim.calibration.surface import MIN_FIT_POINTS, fit_gemm_surface

    out: dict[str, Any] = {}
    gem = table.df[table.df["kernel"] == "gemm"]
    for (dtype, pass_), g in gem.groupby(["dtype", "pass"], sort=True):
        if len(g) < MIN_FIT_POINTS:
            continue
        surf = fit_gemm_surface(
            g["m"], g["n"], g["k"], g["time_s"], bytes_per_element=DTYPE_BYTES[str(dtype)], source=table.source
        )
        out[f"{dtype}/{pass_}"] = surf.to_dict()
    return out


def read_vidur(
    directory: str | Path, *, tokens_per_octave: int | None = None, command: str | None = None, fit_surface: bool = True
) -> KernelTable:
    """Read a Vidur profiling folder (one device) into a :class:`KernelTable` (see module doc)."""
    device, files = find_profiles(directory)
    parts: list[pd.DataFrame] = []
    models: dict[str, dict[str, Any]] = {}
    for model, path in files:
        df = _read_csv(path)
        r0 = df.iloc[0]
        models[model] = {c: (bool(r0[c]) if c == "use_gated_mlp" else int(r0[c])) for c in MODEL_FIELDS}
        models[model]["tp"] = sorted({int(x) for x in df["num_tensor_parallel_workers"]})
        parts.append(pd.DataFrame.from_records(_op_rows(df, model)))
    rows = pd.concat(parts, ignore_index=True)
    n_read = len(rows)
    if tokens_per_octave is not None:
        sweep = rows["m"].fillna(rows["tokens"])
        rows = rows[sweep.isin(thin_tokens(sweep, tokens_per_octave))]
    merged = _merge(rows)
    for col in TABLE_COLUMNS:
        if col not in merged.columns:
            merged[col] = np.nan
    meta: dict[str, Any] = {
        "source": "vidur",
        "source_url": "https://github.com/microsoft/vidur (data/profiling/compute)",
        "license": "MIT License, Copyright (c) Microsoft Corporation (notice in netsim/data/kernels/README.md)",
        "device": "cuda",
        "device_name": f"{device} (Vidur profiling data)",
        "vidur_device": device,
        "dtype_note": DTYPE_NOTE,
        "dtype_equivalents": {"bfloat16": "float16"},
        "backward": BACKWARD_RULE,
        "models": models,
        "skipped_ops": ["emb", "attn_rope", "add", "mlp_act of non-gated models (GELU)"],
        "time_percentiles": "p10/p90 = median -/+ 1.2816 std, clipped to the measured min/max",
        "tokens_per_octave": tokens_per_octave,
        "source_measurements": int(n_read),
        "command": command,
    }
    table = KernelTable(merged.loc[:, list(TABLE_COLUMNS)], meta, source=str(directory))
    if fit_surface:  # a table reads its surfaces from the metadata when it is built
        table = KernelTable(table.df, {**meta, "gemm_surface": fit_surfaces(table)}, source=str(directory))
    return table
