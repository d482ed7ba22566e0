"""Roofline compute model: a kernel's time from its FLOPs, its bytes and two peaks.

``time = max(flops / (peak_flops[dtype] * efficiency), bytes / (memory_Bps * memory_efficiency))
+ overhead_s``

The FLOP and byte counts come from the kernel catalogue (:data:`netsim.calibration.kernels.KERNELS`),
so any kernel of the catalogue can be timed without a measurement.  The peaks come from the
topology's accelerator (``graph.graph["accelerator"]``: ``peak_flops`` {dtype: FLOP/s},
``memory_Bps``; :meth:`RooflineComputeModel.from_accelerator`) or from the best throughputs a
measured kernel table achieved (:meth:`RooflineComputeModel.from_table`: an *empirical*
roofline of the measured device, what :class:`~netsim.calibration.compute.TableComputeModel`
falls back to for kernels its table lacks).

Efficiencies default to 1 (the datasheet roofline is a lower bound on time); pass measured
fractions to make it realistic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from netsim.calibration.estimate import ComputeEstimate
from netsim.calibration.kernels import KERNELS, KernelTable, canonical_dtype, get_kernel
from netsim.errors import SpecError
from netsim.units import parse_bandwidth, parse_flops


class RooflineComputeModel:
    """Roofline times for catalogue kernels (implements ``ComputeModel``).

    Args:
        peak_flops: peak FLOP/s, one number for every dtype or a mapping {dtype: FLOP/s}
            (dtype names or aliases: ``bf16``, ``fp16``, ``fp8``, ``fp32`` ...).
        memory_Bps: memory bandwidth in bytes/s.
        efficiency: achieved fraction of ``peak_flops`` in (0, 1].
        memory_efficiency: achieved fraction of ``memory_Bps`` in (0, 1].
        overhead_s: fixed time added to every call (launch / dispatch), seconds, >= 0.
        default_dtype: dtype used when a call gives none (default: ``bfloat16`` if the peaks
            have it, else the first dtype of ``peak_flops``).
        name: a label for reports.
    """

    def __init__(
        self,
        peak_flops: float | Mapping[str, float],
        memory_Bps: float,
        efficiency: float = 1.0,
        memory_efficiency: float = 1.0,
        *,
        overhead_s: float = 0.0,
        default_dtype: str | None = None,
        name: str = "roofline",
    ) -> None:
        if isinstance(peak_flops, Mapping):
            peaks = {canonical_dtype(k, field="peak_flops"): float(v) for k, v in peak_flops.items()}
            if not peaks:
                raise SpecError("peak_flops must name at least one dtype", field="peak_flops")
        else:
            peaks = {"*": float(peak_flops)}
        for k, v in peaks.items():
            if not (math.isfinite(v) and v > 0):
                raise SpecError(f"must be finite and > 0 (got {v!r} for {k})", field="peak_flops")
        if not (math.isfinite(memory_Bps) and memory_Bps > 0):
            raise SpecError(f"must be finite and > 0 (got {memory_Bps!r})", field="memory_Bps")
        for fname, val in (("efficiency", efficiency), ("memory_efficiency", memory_efficiency)):
            if not (0 < val <= 1):
                raise SpecError(f"must be in (0, 1] (got {val!r})", field=fname)
        if not (math.isfinite(overhead_s) and overhead_s >= 0):
            raise SpecError(f"must be >= 0 (got {overhead_s!r})", field="overhead_s")
        self.peak_flops = peaks
        self.memory_Bps = float(memory_Bps)
        self.efficiency = float(efficiency)
        self.memory_efficiency = float(memory_efficiency)
        self.overhead_s = float(overhead_s)
        self.name = name
        if default_dtype is not None:
            self.default_dtype = canonical_dtype(default_dtype)
        elif "bfloat16" in peaks:
            self.default_dtype = "bfloat16"
        elif "*" in peaks:
            self.default_dtype = "float32"
        else:
            self.default_dtype = next(iter(peaks))

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_accelerator(
        cls, accelerator: Mapping[str, Any], efficiency: float = 1.0, memory_efficiency: float = 1.0, **kwargs: Any
    ) -> RooflineComputeModel:
        """From a topology's ``graph.graph["accelerator"]`` dict (peak_flops, memory_Bps).

        Values may be numbers or unit strings ("989TFLOPS", "3.35TB/s"); peaks of dtypes that
        are not kernel dtypes (``fp64``, ``int8``) are ignored.
        """
        try:
            raw_peaks = accelerator["peak_flops"]
            raw_mem = accelerator["memory_Bps"]
        except (KeyError, TypeError):
            raise SpecError(
                "accelerator needs peak_flops {dtype: FLOP/s} and memory_Bps", field="accelerator"
            ) from None
        if isinstance(raw_peaks, Mapping):
            # dtypes no training-step kernel runs in (fp64, int8 ...) are listed by datasheets: skip them
            peaks: float | dict[str, float] = {
                str(k): parse_flops(v, f"accelerator.peak_flops.{k}") for k, v in raw_peaks.items() if _is_dtype(k)
            }
        else:
            peaks = parse_flops(raw_peaks, "accelerator.peak_flops")
        mem = parse_bandwidth(raw_mem, "accelerator.memory_Bps")
        kwargs.setdefault("name", f"roofline:{accelerator.get('name', 'accelerator')}")
        return cls(peaks, mem, efficiency, memory_efficiency, **kwargs)

    @classmethod
    def from_table(cls, table: KernelTable, *, name: str | None = None) -> RooflineComputeModel:
        """An empirical roofline: the best FLOP/s per dtype and the best bytes/s the table shows.

        FLOP/s peaks are taken from compute-bound kernels (cost axis ``flops``), the memory
        bandwidth from memory-bound ones (cost axis ``bytes``); efficiencies are 1 since the
        peaks are already achieved numbers.
        """
        df = table.throughput()
        is_flops = df["kernel"].map(lambda k: KERNELS[k].cost == "flops")
        peaks: dict[str, float] = {}
        for dtype, g in df[is_flops].groupby("dtype"):
            peaks[str(dtype)] = float(g["flops_per_s"].max())
        mem_rows = df[~is_flops]
        mem = float(mem_rows["bytes_per_s"].max()) if len(mem_rows) else float(df["bytes_per_s"].max())
        if not peaks:  # only memory-bound kernels measured: use the best FLOP/s seen at all
            peaks = {str(d): float(g["flops_per_s"].max()) for d, g in df.groupby("dtype")}
            peaks = {d: v for d, v in peaks.items() if v > 0} or {"float32": mem}
        label = name or f"roofline:table:{table.meta.get('device_name', table.source)}"
        return cls(peaks, mem, 1.0, 1.0, name=label)

    # ---------------------------------------------------------------- queries

    def peak_for(self, dtype: str | None) -> float:
        """Peak FLOP/s (before efficiency) for ``dtype``."""
        if "*" in self.peak_flops:
            return self.peak_flops["*"]
        d = canonical_dtype(dtype) if dtype is not None else self.default_dtype
        if d not in self.peak_flops:
            raise SpecError(
                f"{self.name}: no peak FLOP/s for dtype {d}; known: {', '.join(self.peak_flops)}", field="peak_flops"
            )
        return self.peak_flops[d]

    def has_peak(self, dtype: str | None) -> bool:
        """True if a peak FLOP/s is known for ``dtype``."""
        return "*" in self.peak_flops or (canonical_dtype(dtype) if dtype else self.default_dtype) in self.peak_flops

    def time_for(self, flops: float, nbytes: float, dtype: str | None = None, *, memory_bound: bool = False) -> float:
        """Roofline seconds for an op of ``flops`` FLOPs moving ``nbytes`` bytes.

        ``memory_bound=True`` drops the compute term when no peak is known for ``dtype``
        (elementwise kernels such as the fp32 AdamW step on an accelerator listed by its
        tensor-core peaks only).
        """
        if flops < 0 or nbytes < 0:
            raise SpecError(f"flops and bytes must be >= 0 (got {flops}, {nbytes})")
        skip = memory_bound and not self.has_peak(dtype)
        t_compute = flops / (self.peak_for(dtype) * self.efficiency) if flops and not skip else 0.0
        t_memory = nbytes / (self.memory_Bps * self.memory_efficiency)
        return max(t_compute, t_memory) + self.overhead_s

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """Time, FLOPs and bytes of one call of a catalogue kernel."""
        spec = get_kernel(kernel)
        spec.check_pass(pass_)
        q = spec.check_shape(shape)
        d = spec.dtype_for(dtype if dtype is not None else self.default_dtype)
        flops = spec.flops(q, pass_)
        nbytes = spec.nbytes(q, pass_, d)
        t = self.time_for(flops, nbytes, d, memory_bound=spec.cost == "bytes")
        return ComputeEstimate(kernel, pass_, d, t, flops, nbytes, self.name)

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        """Roofline seconds of one call of a catalogue kernel."""
        return self.estimate(kernel, pass_, dtype=dtype, **shape).time_s

    def __repr__(self) -> str:
        return (
            f"RooflineComputeModel(peak_flops={self.peak_flops}, memory_Bps={self.memory_Bps:.4g}, "
            f"efficiency={self.efficiency}, memory_efficiency={self.memory_efficiency})"
        )


def _is_dtype(name: object) -> bool:
    try:
        canonical_dtype(str(name))
    except SpecError:
        return False
    return True
