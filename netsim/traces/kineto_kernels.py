"""A PyTorch profiler (Kineto) trace as a kernel table, and the step it measured.

``torch.profiler.profile(record_shapes=True)`` records every operator's input shapes and dtypes
(``args["Input Dims"]``, ``args["Input type"]``).  The operators that are one kernel of netsim's
catalogue (:mod:`netsim.calibration.catalogue`) become rows of a kernel table
(:mod:`netsim.calibration.kernels`), which ``netsim run --kernels`` (``options.kernels``) uses
as the compute model of a run:

=============================================  ===========  ===============================
operator (inputs)                              kernel       shape
=============================================  ===========  ===============================
``aten::mm`` ([m, k], [k, n])                  gemm fwd     m, n, k
``aten::addmm`` (bias, [m, k], [k, n])         gemm fwd     m, n, k
``aten::rms_norm`` ([..., h], ...)             rmsnorm fwd  tokens = product of ..., hidden h
``aten::layer_norm`` ([..., h], ...)           layernorm    same (fwd)
``aten::native_layer_norm_backward``           layernorm    same, from the gradient (bwd)
``aten::scaled_dot_product_attention``         attention    q [batch, heads, seq, head_dim]
(q, k, v)                                      fwd
``aten::_scaled_dot_product_*_backward``       attention    grad_out [batch, heads, seq,
                                               bwd          head_dim]
=============================================  ===========  ===============================

A GEMM in the backward pass (dX or dW) is one GEMM of its own shape, so it becomes a ``gemm
fwd`` row at that shape: a GEMM's time depends on its shape, not on the pass that calls it;
the compute model derives the catalogue's ``gemm bwd`` (both GEMMs) from those rows.  Only the
outermost mapped operator of a nest counts (``aten::rms_norm`` calls ``aten::_fused_rms_norm``).
The catalogue's attention is causal; whether the profiled call was is not recorded.

Time of an operator: on a trace with GPU kernels, the summed durations of the kernels its
runtime calls launched (``args.correlation``); on a CPU-only trace, its own duration.  Calls of
one (kernel, dtype, pass, shape) are merged (median, 10th and 90th percentiles, ``repeats``
the count); ``label`` is ``kineto:<operator>``.

The measured step (:func:`measured_step`): the mean duration of ``ProfilerStep#N`` ranges
(what ``torch.profiler.schedule`` records), else of the ranges named ``step_range``, else the
span of the trace.  It is stored in the table's metadata (``measured_step_s``) to compare with
the step time of a run.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from netsim.calibration.catalogue import canonical_dtype
from netsim.calibration.kernels import KernelTable
from netsim.errors import SpecError, TraceError
from netsim.traces.kineto import KinetoTrace

__all__ = ["kernel_rows", "kernel_table_from_kineto", "measured_step"]

_STEP_RANGE = "ProfilerStep#*"


def _numel(dims: Sequence[Any]) -> int:
    return int(math.prod(int(d) for d in dims))


def _gemm(dims: list[Any], bias: bool) -> dict[str, float] | None:
    a, b = (dims[1], dims[2]) if bias else (dims[0], dims[1])
    if len(a) != 2 or len(b) != 2 or a[1] != b[0]:
        return None
    return {"m": a[0], "n": b[1], "k": a[1]}


def _norm(dims: list[Any]) -> dict[str, float] | None:
    x = dims[0]
    return {"tokens": _numel(x[:-1]), "hidden": x[-1]} if len(x) >= 2 else None


def _attention(dims: list[Any]) -> dict[str, float] | None:
    q = dims[0]
    return {"batch": q[0], "heads": q[1], "seq": q[2], "head_dim": q[3]} if len(q) == 4 else None


#: operator name pattern -> (kernel, pass, shape from the input dims)
_OPS: tuple[tuple[str, str, str, Any], ...] = (
    ("aten::mm", "gemm", "fwd", lambda d: _gemm(d, bias=False)),
    ("aten::addmm", "gemm", "fwd", lambda d: _gemm(d, bias=True)),
    ("aten::rms_norm", "rmsnorm", "fwd", _norm),
    ("aten::layer_norm", "layernorm", "fwd", _norm),
    ("aten::native_layer_norm_backward", "layernorm", "bwd", _norm),
    ("aten::scaled_dot_product_attention", "attention", "fwd", _attention),
    ("aten::_scaled_dot_product_*attention*_backward", "attention", "bwd", _attention),
    ("aten::_efficient_attention_backward", "attention", "bwd", _attention),
)


def _match(name: str) -> tuple[str, str, Any] | None:
    for pattern, kernel, pass_, shape in _OPS:
        if fnmatch.fnmatchcase(name, pattern):
            return kernel, pass_, shape
    return None


def _dtype(types: Any) -> str | None:
    first = types[0] if isinstance(types, list) and types else None
    if not isinstance(first, str):
        return None
    try:
        return canonical_dtype(first.removeprefix("c10::"))
    except SpecError:
        return None  # double, int ...: no catalogue dtype


def _gpu_times(trace: KinetoTrace) -> np.ndarray | None:
    """Per event row: the GPU kernel time its launches account for (None: no GPU kernels)."""
    ev = trace.events
    kern = ev["kind"].isin(["kernel", "gpu_mem"]).to_numpy()
    if not kern.any():
        return None
    by_corr = ev.loc[kern].groupby("correlation")["dur_us"].sum()
    rt = ev.loc[(ev["kind"] == "runtime").to_numpy() & ev["correlation"].notna().to_numpy()]
    out = np.zeros(len(ev))
    starts = ev["ts_us"].to_numpy(dtype=float)
    ends = starts + ev["dur_us"].to_numpy(dtype=float)
    for (pid, tid), g in rt.groupby(["pid", "tid"], sort=False):
        rts = g["ts_us"].to_numpy(dtype=float)
        gpu = g["correlation"].map(by_corr).fillna(0.0).to_numpy(dtype=float)
        same = ((ev["pid"] == pid) & (ev["tid"] == tid)).to_numpy() & ~kern
        for i in np.flatnonzero(same):
            inside = (rts >= starts[i] - 1e-9) & (rts <= ends[i] + 1e-9)
            out[i] = gpu[inside].sum()
    return out


def kernel_rows(trace: KinetoTrace) -> pd.DataFrame:
    """One row per mapped operator call: kernel, dtype, pass, shape columns, time_s, label."""
    ev = trace.events
    gpu = _gpu_times(trace)
    outer_end: dict[tuple[str, str], float] = {}
    rows: list[dict[str, Any]] = []
    for i in sorted(trace.shapes):  # events are sorted by start, longer first
        name = str(ev.at[i, "name"])
        hit = _match(name)
        if hit is None:
            continue
        thread = (str(ev.at[i, "pid"]), str(ev.at[i, "tid"]))
        start, dur = float(ev.at[i, "ts_us"]), float(ev.at[i, "dur_us"])
        if start < outer_end.get(thread, -1.0):
            continue  # nested in a mapped operator
        outer_end[thread] = start + dur
        kernel, pass_, shape_of = hit
        dims, types = trace.shapes[i]
        dtype = _dtype(types)
        shape = shape_of(dims) if isinstance(dims, list) and dims and all(isinstance(d, list) for d in dims) else None
        time_us = float(gpu[i]) if gpu is not None else dur
        if dtype is None or shape is None or time_us <= 0:
            continue
        rows.append(
            {
                "kernel": kernel,
                "dtype": dtype,
                "pass": pass_,
                **shape,
                "time_s": time_us * 1e-6,
                "label": f"kineto:{name}",
            }
        )
    return pd.DataFrame(rows)


def measured_step(trace: KinetoTrace, step_range: str | None = None) -> tuple[float, str]:
    """(seconds, what was measured): see the module docstring."""
    ev = trace.events
    ann = ev[(ev["kind"] == "annotation").to_numpy() & ~ev["gpu"].to_numpy(dtype=bool)]  # CPU side only
    for pattern in ([step_range] if step_range else []) + [_STEP_RANGE]:
        hit = ann[[fnmatch.fnmatchcase(str(n), pattern) for n in ann["name"]]]
        if len(hit):
            return float(hit["dur_us"].mean()) * 1e-6, f"mean of {len(hit)} {pattern!r} range(s)"
        if pattern == step_range:
            raise TraceError(
                f"no record_function range named {step_range!r} in the trace", source=trace.source, field="--step-range"
            )
    span = float((ev["ts_us"] + ev["dur_us"]).max() - ev["ts_us"].min())
    return span * 1e-6, "span of the trace"


def kernel_table_from_kineto(trace: KinetoTrace, *, step_range: str | None = None, command: str = "") -> KernelTable:
    """The kernel table of ``trace`` (module docstring), with the measured step in its
    metadata; :class:`TraceError` when no operator has recorded shapes."""
    raw = kernel_rows(trace)
    if raw.empty:
        hint = (
            "record it with torch.profiler.profile(record_shapes=True)"
            if not trace.shapes
            else "none of its shaped operators is a catalogue kernel (aten::mm, addmm, rms_norm, layer_norm, "
            "scaled_dot_product_attention)"
        )
        raise TraceError(f"no operator to make a kernel table from: {hint}", source=trace.source)
    keys = [c for c in raw.columns if c not in ("time_s", "label")]
    shape_cols = [c for c in keys if c not in ("kernel", "dtype", "pass")]
    raw[shape_cols] = raw[shape_cols].fillna(-1.0)  # no such parameter: one group key
    groups = raw.groupby(keys, sort=True)
    table = groups.agg(time_s=("time_s", "median"), repeats=("time_s", "size"), label=("label", "first"))
    table["time_p10_s"] = groups["time_s"].quantile(0.1).clip(upper=table["time_s"])
    table["time_p90_s"] = groups["time_s"].quantile(0.9).clip(lower=table["time_s"])
    table = table.reset_index()
    table[shape_cols] = table[shape_cols].where(table[shape_cols] > 0)
    step_s, how = measured_step(trace, step_range)
    on_gpu = bool(trace.events["kind"].isin(["kernel"]).any())
    meta = {
        "source": "kineto",
        "trace": trace.source,
        "device": "cuda" if on_gpu else "cpu",
        "time_source": "GPU kernels launched by each operator" if on_gpu else "CPU operator durations",
        "measured_step_s": step_s,
        "measured_step": how,
        "operator_calls": len(raw),
        "command": command,
    }
    return KernelTable(table, meta, source=trace.source)
