"""Published kernel measurements that netsim's compute model predicts, without a device.

Two shipped files in ``netsim/data/kernels/`` hold throughputs that others measured and
published, each row naming its source (``netsim validate-kernels TABLE --published``; docs
"Kernels"):

* ``published-gemm.csv``: GEMMs and grouped expert GEMMs (maximum-achievable matmul FLOPS,
  cuBLAS with random inputs, DeepGEMM's FP8 GEMMs and grouped GEMMs on H800), predicted with a
  compute model built on a kernel table (:func:`published_errors`);
* ``published-attention.csv``: the causal attention core (cuDNN, FlashAttention-2,
  FlashAttention-3) at given batch, heads, sequence length and head dimension, predicted with
  the compute profile's attention curves (:func:`published_attention_errors`).  The curves come
  from one paper (FlashAttention-3's, :mod:`netsim.calibration.profiles`); the rows do not.

Both are predicted at the clock the measurement ran at (microbenchmarks run a cool GPU at its
boost clock), not scaled to the SM clock of a training step.  Every error is in time:
``100 * (predicted - measured) / measured``, + when netsim is slower.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsim.calibration.kernels import canonical_dtype
from netsim.calibration.profiles import KERNEL_DATA_DIR, ComputeProfile
from netsim.errors import SpecError, TraceError

__all__ = [
    "ATTENTION_COLUMNS",
    "PUBLISHED_ATTENTION_PATH",
    "PUBLISHED_COLUMNS",
    "PUBLISHED_GEMM_PATH",
    "SAME_COMPUTE",
    "load_published",
    "load_published_attention",
    "published_attention_errors",
    "published_errors",
]

#: Shipped published GEMM measurements (see the file's header and docs/sections/kernels.md).
PUBLISHED_GEMM_PATH = KERNEL_DATA_DIR / "published-gemm.csv"
PUBLISHED_COLUMNS = ("source", "gpu", "dtype", "kind", "groups", "m", "n", "k", "tflops", "note")
#: Shipped published attention measurements (the file's header; docs/sections/kernels.md).
PUBLISHED_ATTENTION_PATH = KERNEL_DATA_DIR / "published-attention.csv"
ATTENTION_COLUMNS = (
    "source",
    "gpu",
    "dtype",
    "impl",
    "batch",
    "heads",
    "seq",
    "head_dim",
    "causal",
    "pass",
    "tflops",
    "note",
)
#: A published measurement on ``gpu`` is predicted with the table or profile of this device
#: (H800 and H200: the H100's GH100 compute, same SMs and clocks).
SAME_COMPUTE = {"h800": "h100", "h200": "h100"}


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The CSV at ``path`` with ``columns`` (the last, a note, optional); TraceError naming the
    file and the field."""
    src = str(path)
    try:
        df = pd.read_csv(path, comment="#")
    except FileNotFoundError:
        raise TraceError("published measurements file not found", source=src) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise TraceError(f"cannot read: {' '.join(str(exc).split())}", source=src) from None
    for col in columns[:-1]:
        if col not in df.columns:
            raise TraceError(f"missing column (needs {', '.join(columns[:-1])})", source=src, field=col)
    return df


def _positive(df: pd.DataFrame, cols: tuple[str, ...], src: str) -> None:
    """Columns ``cols`` as numbers > 0, in place; TraceError naming the first bad row."""
    for col in cols:
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TraceError(f"row {i + 1}: must be a number > 0 (got {df[col].iloc[i]!r})", source=src, field=col)
        df[col] = v


def _one_of(df: pd.DataFrame, col: str, allowed: tuple[str, ...], src: str, what: str) -> None:
    """TraceError naming the first row whose ``col`` is not in ``allowed``."""
    bad = ~df[col].astype(str).isin(allowed)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(f"row {i + 1}: {what} (got {df[col].iloc[i]!r})", source=src, field=col)


def load_published(path: str | Path | None = None) -> pd.DataFrame:
    """Published GEMM measurements (``published-gemm.csv`` format); TraceError naming the field."""
    p = Path(path) if path is not None else PUBLISHED_GEMM_PATH
    df = _read(p, PUBLISHED_COLUMNS)
    _positive(df, ("groups", "m", "n", "k", "tflops"), str(p))
    _one_of(df, "kind", ("gemm", "grouped"), str(p), "kind must be gemm or grouped")
    df["dtype"] = [canonical_dtype(d, field="dtype") for d in df["dtype"].astype(str)]
    df["gpu"] = df["gpu"].astype(str).str.lower()
    return df


def load_published_attention(path: str | Path | None = None) -> pd.DataFrame:
    """Published attention measurements (``published-attention.csv`` format); TraceError naming
    the file and the field.  Rows must be causal: the catalogue's attention kernel is."""
    p = Path(path) if path is not None else PUBLISHED_ATTENTION_PATH
    src = str(p)
    df = _read(p, ATTENTION_COLUMNS)
    _positive(df, ("batch", "heads", "seq", "head_dim", "tflops"), src)
    df["causal"] = df["causal"].astype(str).str.lower()
    _one_of(df, "causal", ("true",), src, "must be true: netsim's attention kernel is causal")
    _one_of(df, "pass", ("fwd", "bwd"), src, "pass must be fwd or bwd")
    df["dtype"] = [canonical_dtype(d, field="dtype") for d in df["dtype"].astype(str)]
    df["gpu"] = df["gpu"].astype(str).str.lower()
    df["impl"] = df["impl"].astype(str)
    return df


def _source_name(source: str) -> str:
    """The source's name without its parenthesised detail."""
    return source.split(" (")[0]


def _compared(flops: float, predicted_s: float, tflops: float) -> dict[str, float]:
    """A published rate ``tflops`` for work of ``flops`` against netsim's ``predicted_s``: both
    rates and the error in time (module doc)."""
    measured_s = flops / (tflops * 1e12)
    return {
        "published_tflops": tflops,
        "predicted_tflops": flops / predicted_s / 1e12,
        "error_pct": 100.0 * (predicted_s - measured_s) / measured_s,
    }


def published_errors(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """Predict each published GEMM with ``model`` (a ComputeModel); error in % of the measured time.

    ``gemm`` rows are one ``m x n x k`` GEMM; ``grouped`` rows are ``groups`` experts of ``m``
    rows each (``grouped_gemm`` with ``tokens = groups * m``).
    """
    recs = []
    for r in rows.to_dict("records"):
        groups, m, n, k = (float(r[c]) for c in ("groups", "m", "n", "k"))
        flops = 2.0 * groups * m * n * k
        if r["kind"] == "gemm":
            est = model.estimate("gemm", "fwd", dtype=r["dtype"], m=m, n=n, k=k)
        else:
            est = model.estimate("grouped_gemm", "fwd", dtype=r["dtype"], tokens=groups * m, experts=groups, n=n, k=k)
        recs.append(
            {
                "source": _source_name(r["source"]),
                "gpu": r["gpu"],
                "dtype": r["dtype"],
                "kind": r["kind"],
                "groups": int(groups),
                "m": int(m),
                "n": int(n),
                "k": int(k),
                **_compared(flops, est.time_s, float(r["tflops"])),
                "model_source": est.source,
            }
        )
    return pd.DataFrame.from_records(recs)


def published_attention_errors(
    profile: ComputeProfile, rows: pd.DataFrame, memory_Bps: float, *, field: str = "impl"
) -> pd.DataFrame:
    """Predict each published attention measurement with ``profile``'s curves for its ``impl``
    (at the clock the curves were measured at); error in % of the measured time.  An ``impl``
    the profile does not have is a SpecError naming ``field`` and the profile's kernels."""
    models: dict[str, Callable[..., Any]] = {}
    recs = []
    for i, r in enumerate(rows.to_dict("records")):
        impl = str(r["impl"])
        if impl not in models:
            if impl not in profile.attention_kernels:
                allowed = ", ".join(profile.attention_kernels) or "none"
                raise SpecError(
                    f"row {i + 1}: unknown attention kernel {impl!r} for compute profile {profile.name!r}; "
                    f"allowed: {allowed}",
                    field=field,
                )
            models[impl] = profile.attention_kernels[impl].model(memory_Bps).estimate
        shape = {k: float(r[k]) for k in ("batch", "heads", "seq", "head_dim")}
        est = models[impl]("attention", str(r["pass"]), dtype=r["dtype"], **shape)
        recs.append(
            {
                "source": _source_name(str(r["source"])),
                "gpu": r["gpu"],
                "dtype": r["dtype"],
                "impl": impl,
                "batch": int(r["batch"]),
                "heads": int(r["heads"]),
                "seq": int(r["seq"]),
                "head_dim": int(r["head_dim"]),
                "pass": r["pass"],
                **_compared(est.flops, est.time_s, float(r["tflops"])),
                "model_source": est.source,
            }
        )
    return pd.DataFrame.from_records(recs)
