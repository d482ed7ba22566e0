"""GPU time by kernel class: a measured trace and netsim's compute model on the same footing.

A profiled training step is a few hundred distinct kernels; netsim's compute model is a catalogue
of a dozen (:mod:`netsim.calibration.catalogue`).  To compare the two without matching kernels
one by one (a trace without ``record_shapes`` has no shapes to match on), both are reduced to the
same few classes:

=================  ====================================================  ============================
class              kernels of a trace (name contains, case-insensitive)  netsim catalogue kernels
=================  ====================================================  ============================
``communication``  nccl, ``::ep::``, deep_ep, all_reduce, allgather,     (not compute: excluded)
                   reduce_scatter, alltoall, sendrecv, userbuffers
``fp8_cast``       cast, quantiz, amax                                   the FP8 quantisation casts
                                                                         (:mod:`netsim.workload.fp8`)
``other``          transpose (also in a GEMM library's namespace)        -
``attention``      flash, fmha, attn, sdpa, cudnn_generated_fort         ``attention``
``gemm``           gemm, matmul, xmma, cutlass, nvjet (cuBLAS 12.x)      ``gemm``, ``grouped_gemm``,
                                                                         ``router_linear``
``norm``           layer_norm, rms_norm, ln_fwd, ln_bwd                  ``layernorm``, ``rmsnorm``
``other``          everything else (element-wise, copies,                every other kernel
                   permutations, top-k, ...)
=================  ====================================================  ============================

Names are matched without their argument lists, and PyTorch's dtype-converting element-wise
loads (``LoadWithCast``) are not casts.  The first matching row wins, top to bottom
(``per_channel_cast_and_transpose`` is a cast; ``grouped_gemm::utils::transpose`` is a transpose,
``other``, not a GEMM).  Per class the breakdown gives the kernel count, the summed durations and
the *busy* time (the union of the kernels' intervals: two kernels of one class running at once on
two streams count once); ``compute`` is the busy time of every class but communication, the time
the GPU spent computing.  ``--per N`` divides by N (the layers or micro-batches the trace holds)
to give per-layer numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import numpy as np
import pandas as pd

from netsim.errors import TraceError
from netsim.traces.kineto import KinetoTrace
from netsim.workload.kernel_calls import KERNEL_CLASS

__all__ = ["CLASSES", "COMPUTE_CLASSES", "class_breakdown", "kernel_class", "netsim_kernel_class"]

#: (class, name pattern) in matching order (module doc)
_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    (
        "communication",
        re.compile(r"nccl|::ep::|deep_?ep|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|sendrecv|userbuffers"),
    ),
    ("fp8_cast", re.compile(r"cast|quantiz|amax")),
    ("other", re.compile(r"transpose")),
    ("attention", re.compile(r"flash|fmha|attn|sdpa|cudnn_generated_fort")),
    ("gemm", re.compile(r"gemm|matmul|xmma|cutlass|nvjet")),
    ("norm", re.compile(r"layer_?norm|rms_?norm|\bln_(fwd|bwd)")),
)
_WITH_CAST: Final = re.compile(r"(load|store)withcast")
#: every class, in report order
CLASSES: Final = ("gemm", "attention", "fp8_cast", "norm", "other", "communication")
#: the classes that are computation
COMPUTE_CLASSES: Final = tuple(c for c in CLASSES if c != "communication")


def kernel_class(name: str) -> str:
    """The class of a GPU kernel of a trace, from its name (module doc)."""
    # drop the argument list, and PyTorch's dtype-converting loads and stores (LoadWithCast)
    low = _WITH_CAST.sub("", name.split("(", 1)[0].lower())
    for cls, pat in _PATTERNS:
        if pat.search(low):
            return cls
    return "other"


def netsim_kernel_class(kernel: str, *, quant: bool = False) -> str:
    """The class of a netsim catalogue kernel call (``quant``: an FP8 quantisation cast;
    :attr:`netsim.workload.kernel_calls.KernelCall.kernel_class` for a call)."""
    return "fp8_cast" if quant else KERNEL_CLASS.get(kernel, "other")


def _busy_us(starts: np.ndarray, ends: np.ndarray) -> float:
    """Length of the union of the intervals [starts, ends) (microseconds)."""
    if starts.size == 0:
        return 0.0
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    # a new run starts where an interval begins after everything before it has ended
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    run = np.cumsum(new) - 1
    run_start = s[new]
    run_end = np.zeros(run_start.size)
    np.maximum.at(run_end, run, e)
    return float((run_end - run_start).sum())


def class_breakdown(trace: KinetoTrace, *, per: float = 1.0, streams: Iterable[str] | None = None) -> pd.DataFrame:
    """GPU kernel time of ``trace`` by class (module doc), divided by ``per``.

    Returns one row per class with kernels (columns ``class``, ``kernels``, ``sum_s``,
    ``busy_s``), then a ``compute`` row (every class but communication) and a ``all`` row.
    ``streams``: only kernels on these streams (the trace's ``tid`` of a kernel).  Busy time is
    per device (a kernel's ``pid``) and summed over the devices of the trace: with several, pass
    ``per`` = devices x layers for one device's per-layer numbers.
    """
    if not per > 0:
        raise TraceError(f"must be > 0 (got {per})", field="--per")
    ev = trace.events
    k = ev[ev["kind"] == "kernel"]
    if streams is not None:
        keep = {str(s) for s in streams}
        known = set(k["tid"].astype(str))
        missing = sorted(keep - known)
        if missing:
            raise TraceError(
                f"no GPU kernels on stream(s) {', '.join(missing)}; the trace's kernel streams: "
                f"{', '.join(sorted(known)) or 'none'}",
                source=trace.source,
                field="--streams",
            )
        k = k[k["tid"].astype(str).isin(keep)]
    if k.empty:
        raise TraceError(
            "no GPU kernels in the trace" + (" on the given streams" if streams is not None else ""),
            source=trace.source,
        )
    cls = k["name"].map(kernel_class).to_numpy()
    start = k["ts_us"].to_numpy(dtype=float)
    end = start + k["dur_us"].to_numpy(dtype=float)
    device = k["pid"].astype(str).to_numpy()
    rows: list[dict[str, object]] = []

    def add(label: str, mask: np.ndarray) -> None:
        busy = sum(_busy_us(start[mask & (device == d)], end[mask & (device == d)]) for d in np.unique(device[mask]))
        rows.append(
            {
                "class": label,
                "kernels": int(mask.sum()),
                "sum_s": float((end[mask] - start[mask]).sum()) * 1e-6 / per,
                "busy_s": busy * 1e-6 / per,
            }
        )

    for c in CLASSES:
        mask = cls == c
        if mask.any():
            add(c, mask)
    add("compute", cls != "communication")
    add("all", np.ones(cls.size, dtype=bool))
    return pd.DataFrame(rows, columns=["class", "kernels", "sum_s", "busy_s"])
