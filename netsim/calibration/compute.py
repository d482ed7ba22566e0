"""The compute-time API the training-step replay calls: ``ComputeModel``.

A compute model answers one question: how long does one call of a catalogue kernel take?

.. code-block:: python

    model.time(kernel, pass_="fwd", *, dtype=None, **shape) -> float            # seconds
    model.estimate(kernel, pass_="fwd", *, dtype=None, **shape) -> ComputeEstimate

* ``kernel``: a name of :data:`netsim.calibration.kernels.KERNELS` (``gemm``, ``grouped_gemm``,
  ``attention``, ``router_linear``, ``router_grap``, ``permute``, ``unpermute``, ``layernorm``,
  ``rmsnorm``, ``swiglu``, ``adamw``);
* ``pass_``: ``fwd`` or ``bwd`` (``step`` for ``adamw``);
* ``dtype``: ``bfloat16``/``bf16``, ``float16``, ``float32``, ``float8``; None = the model's
  default (the table's only dtype for that kernel, or the roofline's default dtype);
* ``shape``: the kernel's shape parameters as keywords, e.g.
  ``model.time("gemm", "bwd", m=4096, n=14336, k=4096)``,
  ``model.time("grouped_gemm", "fwd", tokens=8192, experts=8, n=2048, k=4096)``,
  ``model.time("attention", "fwd", batch=1, heads=32, seq=4096, head_dim=128)``,
  ``model.time("adamw", "step", params=1.2e9)``.

Errors (unknown kernel or pass, missing or non-positive shape parameter, unknown dtype) are
:class:`~netsim.errors.SpecError`.  Implementations:

* :class:`TableComputeModel`: a measured :class:`KernelTable` first, then what can be derived
  from it, then a fallback model (by default the empirical roofline of the table itself,
  :meth:`RooflineComputeModel.from_table`); the order is spelled out in its docstring;
* :class:`~netsim.calibration.roofline.RooflineComputeModel`: ``max(flops / (peak * eff),
  bytes / (mem_bw * mem_eff))``;
* :class:`~netsim.calibration.attention.FlashAttentionModel`: attention from published
  flash-attention throughputs.

:func:`make_compute_model` builds the right one from a topology's accelerator (its ``compute``
section names a profile of :mod:`netsim.calibration.profiles`) and an optional table path.
``ComputeEstimate.source`` tells where a number came from (``table``, ``table:surface``,
``table:fwd-scaled``, ``flash-attention:...`` or the fallback's name), and
``TableComputeModel.notes`` lists every assumption a run leaned on (a dtype answered from
another dtype's rows, a backward derived from the forward), so the run summary can say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from netsim.calibration.estimate import ComputeEstimate, ComputeModel
from netsim.calibration.kernels import KernelSpec, KernelTable, canonical_dtype, get_kernel
from netsim.calibration.roofline import RooflineComputeModel
from netsim.errors import SpecError

#: Kernels whose FLOPs are tensor-core GEMMs (what an FP8 speed-up applies to).
GEMM_KERNELS = frozenset({"gemm", "grouped_gemm"})
#: Order in which a missing dtype is answered from another one the table has.
_NEAREST = ("bfloat16", "float16", "float32", "float8")


class TableComputeModel:
    """Measured kernel table, what derives from it, then a fallback (a :class:`ComputeModel`).

    For ``kernel, pass, dtype`` it answers, in this order:

    1. the table's rows of (kernel, dtype, pass) (``source="table"``; GEMMs from the table's
       fitted surface when it has one, ``table:surface``);
    2. a dtype the table lacks from another one: an equivalent dtype the table declares
       (``meta["dtype_equivalents"]``, e.g. bf16 = fp16 on A100/H100 tensor cores); FP8 GEMMs
       from the 16-bit rows with the compute term divided by ``fp8_gemm_speedup`` (and FP8
       operand bytes in the memory term); the non-GEMM kernels of an FP8 run at 16 bits (FP8
       recipes keep activations, norms and attention in BF16); any other dtype from the
       fallback when it knows that dtype, else from the table's nearest dtype at the same
       speed (x1.0); each with a note;
    3. a backward the table lacks from its forward times the catalogue's backward/forward
       cost ratio (GEMM: 2x, the dX and dW GEMMs; memory-bound kernels: the byte ratio),
       ``source="table:fwd-scaled"``;
    4. ``grouped_gemm`` the table lacks as ``experts`` GEMMs of ``tokens/experts`` rows
       (Megatron's sequential expert loop; small per-expert GEMMs are less efficient);
    5. ``attention`` the table lacks from ``attention`` (a
       :class:`~netsim.calibration.attention.FlashAttentionModel`) when given;
    6. a kernel the table lacks that ``analogs`` maps to one it has: the analog's time at equal
       bytes (same tokens, its width scaled so that its catalogue bytes match; the kernels are
       the same kind of memory-bound elementwise pass, e.g. Megatron's jit-fused bias-GELU timed
       as its measured jit-fused SwiGLU), ``source="table:analog"``;
    7. the fallback model (default: the table's empirical roofline), in the dtype the table
       answers in when the fallback has no peak for the requested one.

    Args:
        table: a :class:`KernelTable` or a path to one.
        fallback: the model for what the table cannot answer; default: the table's empirical
            roofline (:meth:`RooflineComputeModel.from_table`).
        strict: raise SpecError instead of using the fallback (steps 1-6 still apply).
        default_dtype: dtype used when a call gives none.
        name: label for reports.
        attention: model for attention when the table has none.
        fp8_gemm_speedup: FP8 GEMM compute-term speed-up over the table's 16-bit GEMMs (None:
            FP8 is answered like any missing dtype).
        analogs: ``{kernel: analog}``: a ``(tokens, hidden)`` kernel the table lacks timed as
            ``analog`` at equal bytes (step 6).
    """

    def __init__(
        self,
        table: KernelTable | str | Path,
        fallback: ComputeModel | None = None,
        *,
        strict: bool = False,
        default_dtype: str | None = None,
        name: str | None = None,
        attention: ComputeModel | None = None,
        fp8_gemm_speedup: float | None = None,
        analogs: Mapping[str, str] | None = None,
    ) -> None:
        self.table = table if isinstance(table, KernelTable) else KernelTable.load(table)
        self.analogs: dict[str, str] = dict(analogs or {})
        for kernel, analog in self.analogs.items():
            for k in (kernel, analog):
                if tuple(get_kernel(k).params) != ("tokens", "hidden"):
                    raise SpecError(
                        f"an analog pair must be (tokens, hidden) kernels (got {kernel!r} -> {analog!r})",
                        field="analogs",
                    )
        self.fallback: ComputeModel | None = (
            None if strict else (fallback if fallback is not None else RooflineComputeModel.from_table(self.table))
        )
        self.default_dtype = canonical_dtype(default_dtype) if default_dtype is not None else None
        self.name = name or f"table:{self.table.meta.get('device_name', self.table.source)}"
        self.attention = attention
        if fp8_gemm_speedup is not None and not (math.isfinite(fp8_gemm_speedup) and fp8_gemm_speedup > 0):
            raise SpecError(f"must be finite and > 0 (got {fp8_gemm_speedup!r})", field="fp8_gemm_speedup")
        self.fp8_gemm_speedup = fp8_gemm_speedup
        raw = self.table.meta.get("dtype_equivalents") or {}
        self.equivalents = {canonical_dtype(k): canonical_dtype(v) for k, v in dict(raw).items()}
        self.notes: list[str] = []
        self._cache: dict[tuple[Any, ...], ComputeEstimate] = {}

    # ------------------------------------------------------------------ public API

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        key = (kernel, pass_, dtype, tuple(sorted(shape.items())))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        spec = get_kernel(kernel)
        spec.check_pass(pass_)
        q = spec.check_shape(shape)
        raw = dtype if dtype is not None else self.default_dtype
        want = spec.fixed_dtype or (canonical_dtype(raw) if raw is not None else None)
        est = self._from_table(spec, pass_, want, q)
        if est is None and kernel in self.analogs:
            est = self._from_analog(spec, pass_, want, q)
        if est is None and kernel == "attention" and self.attention is not None:
            est = self.attention.estimate(kernel, pass_, dtype=want, **q)
        if est is None:
            est = self._fallback(spec, pass_, want, q)
        self._cache[key] = est
        return est

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return self.estimate(kernel, pass_, dtype=dtype, **shape).time_s

    # ------------------------------------------------------------------ routes

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _table_dtype(self, kernel: str, want: str | None) -> tuple[str, str] | None:
        """(dtype the table answers ``kernel`` in, how: same | alias | fp8 | 16bit | nearest)."""
        family = "gemm" if kernel == "grouped_gemm" and not self.table.dtypes("grouped_gemm") else kernel
        have = self.table.dtypes(family)
        if not have:
            return None
        if want is None:
            return (have[0], "same") if len(have) == 1 else None
        if want in have:
            return want, "same"
        alias = self.equivalents.get(want)
        if alias in have:
            assert alias is not None
            return alias, "alias"
        if want == "float8":
            sixteen = next((d for d in ("bfloat16", "float16") if d in have or self.equivalents.get(d) in have), None)
            if sixteen is not None:
                d16 = sixteen if sixteen in have else self.equivalents[sixteen]
                if kernel in GEMM_KERNELS and self.fp8_gemm_speedup is not None:
                    return d16, "fp8"
                return d16, "16bit"
        return next(d for d in (*_NEAREST, *have) if d in have), "nearest"

    def _from_table(
        self, spec: KernelSpec, pass_: str, want: str | None, q: dict[str, float]
    ) -> ComputeEstimate | None:
        route = self._table_dtype(spec.name, want)
        if route is None:
            return None
        d, how = route
        if how == "nearest" and self.fallback is not None:
            try:  # a fallback that knows the requested dtype beats another dtype's rows at x1.0
                est = self.fallback.estimate(spec.name, pass_, dtype=want, **q)
            except SpecError:
                pass
            else:
                self._note(
                    f"the kernel table has no {want} rows: {want} kernels timed by "
                    f"{getattr(self.fallback, 'name', 'the fallback')}"
                )
                return est
        t = self._time_in(spec.name, pass_, d, q, fp8=how == "fp8")
        if t is None:
            return None
        seconds, source = t
        shown = want or d
        if how == "alias":
            self._note(
                f"{shown} kernels timed from the table's {d} rows (the table declares them equivalent: "
                "same tensor-core peak on this GPU)"
            )
        elif how == "fp8":
            self._note(
                f"float8 GEMMs: the table's {d} GEMMs with the compute term / {self.fp8_gemm_speedup:g} "
                "and FP8 operand bytes (assumption, see the accelerator's compute section)"
            )
            source += f"+fp8/{self.fp8_gemm_speedup:g}"
        elif how == "16bit":
            self._note(f"non-GEMM kernels of a float8 workload run in {d} (FP8 recipes keep them in 16 bits)")
        elif how == "nearest":
            self._note(
                f"the kernel table has no {shown} rows: {shown} kernels timed from its {d} rows at the "
                "same speed (x1.0)"
            )
        return ComputeEstimate(
            spec.name, pass_, shown, seconds, spec.flops(q, pass_), spec.nbytes(q, pass_, shown), source
        )

    def _from_analog(
        self, spec: KernelSpec, pass_: str, want: str | None, q: dict[str, float]
    ) -> ComputeEstimate | None:
        """``spec`` timed as its analog kernel moving the same bytes (step 6), or None."""
        analog = get_kernel(self.analogs[spec.name])
        if pass_ not in analog.passes:
            return None
        d = want or self.default_dtype or "bfloat16"
        per_width = analog.nbytes(q, pass_, d) / q["hidden"]
        width = spec.nbytes(q, pass_, d) / per_width
        base = self._from_table(analog, pass_, want, {"tokens": q["tokens"], "hidden": width})
        if base is None:
            return None
        self._note(
            f"{spec.name} timed as the table's {analog.name} moving the same bytes (an analog the profile "
            "declares: the same kind of memory-bound elementwise kernel)"
        )
        return ComputeEstimate(
            spec.name,
            pass_,
            base.dtype,
            base.time_s,
            spec.flops(q, pass_),
            spec.nbytes(q, pass_, base.dtype),
            f"{base.source}:analog",
        )

    def _time_in(
        self, kernel: str, pass_: str, d: str, q: Mapping[str, float], *, fp8: bool = False
    ) -> tuple[float, str] | None:
        """Seconds of ``kernel`` from the table's ``d`` rows (steps 1, 3, 4), or None."""
        spec = get_kernel(kernel)
        if kernel == "grouped_gemm" and not self.table.covers("grouped_gemm", "fwd", d):
            return self._grouped_from_gemm(pass_, d, q, fp8=fp8)
        if self.table.covers(kernel, pass_, d):
            base_pass, factor, source = pass_, 1.0, "table"
        elif pass_ == "bwd" and self.table.covers(kernel, "fwd", d):
            base_pass, source = "fwd", "table:fwd-scaled"
            factor = spec.cost_value(q, "bwd", d) / spec.cost_value(q, "fwd", d)
            self._note(
                "backward passes the table lacks = forward x the catalogue's backward/forward cost ratio "
                "(GEMM: 2x for the dX and dW GEMMs)"
            )
        else:
            return None
        surf = self.table.gemm_surface(d, base_pass) if kernel == "gemm" else None
        if surf is not None:
            kw: dict[str, float] = {}
            if fp8:
                assert self.fp8_gemm_speedup is not None
                kw = {"compute_speedup": self.fp8_gemm_speedup, "operand_bytes": 1.0}
            t = surf.time1(q["m"], q["n"], q["k"], **kw)
            return factor * t, source + ":surface" if source == "table" else source
        t = self.table.predict(kernel, base_pass, dtype=d, **q)
        if fp8:
            assert self.fp8_gemm_speedup is not None
            t /= self.fp8_gemm_speedup
        return factor * t, source

    def _grouped_from_gemm(self, pass_: str, d: str, q: Mapping[str, float], *, fp8: bool) -> tuple[float, str] | None:
        """A grouped GEMM the table lacks: one grouped kernel on the GEMM surface (tokens split
        evenly over the experts), else ``experts`` interpolated GEMMs of ``tokens/experts`` rows."""
        e = max(1, round(q["experts"]))
        per = {"m": q["tokens"] / e, "n": q["n"], "k": q["k"]}
        base = pass_ if self.table.covers("gemm", pass_, d) else "fwd"
        surf = self.table.gemm_surface(d, base)
        if surf is None or not self.table.covers("gemm", base, d):
            one = self._time_in("gemm", pass_, d, per, fp8=fp8)
            return None if one is None else (e * one[0], one[1] + "+per-expert")
        factor = 1.0
        if base != pass_:
            spec = get_kernel("gemm")
            factor = spec.cost_value(per, pass_, d) / spec.cost_value(per, base, d)
            self._note(
                "backward passes the table lacks = forward x the catalogue's backward/forward cost ratio "
                "(GEMM: 2x for the dX and dW GEMMs)"
            )
        kw: dict[str, float] = {}
        if fp8:
            assert self.fp8_gemm_speedup is not None
            kw = {"compute_speedup": self.fp8_gemm_speedup, "operand_bytes": 1.0}
        t = surf.grouped_time_s(np.full(e, per["m"]), q["n"], q["k"], **kw)
        return factor * t, "table:surface+grouped" if base == pass_ else "table:fwd-scaled+grouped"

    def _fallback(self, spec: KernelSpec, pass_: str, want: str | None, q: dict[str, float]) -> ComputeEstimate:
        if self.fallback is None:
            raise SpecError(
                f"{self.name}: the kernel table does not cover {spec.name}/{pass_}"
                + (f" in {want}" if want else "")
                + f" (it has: {', '.join(self.table.kernels())})"
            )
        if want == "float8" and spec.name not in GEMM_KERNELS:
            self._note("non-GEMM kernels of a float8 workload run in bfloat16 (FP8 recipes keep them in 16 bits)")
            want = "bfloat16"
        alias = self.equivalents.get(want) if want else None
        have = sorted(set(self.table.df["dtype"]))
        candidates = list(dict.fromkeys([want, alias, *(x for x in (*_NEAREST, *have) if x in have)]))
        error: SpecError | None = None
        for d in candidates:  # the requested dtype, its declared equivalent, then the table's nearest
            if d is None and want is not None:
                continue
            try:
                est = self.fallback.estimate(spec.name, pass_, dtype=d, **q)
            except SpecError as exc:
                error = error or exc
                continue
            if d not in (want, alias):
                self._note(
                    f"{getattr(self.fallback, 'name', 'the fallback')} knows no {want} peak: {spec.name} "
                    f"timed at its {d} speed"
                )
            return ComputeEstimate(
                est.kernel, est.pass_, want or est.dtype, est.time_s, est.flops, est.bytes, est.source
            )
        assert error is not None
        raise error
