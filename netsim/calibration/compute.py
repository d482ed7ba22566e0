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

* :class:`TableComputeModel`: interpolates a measured :class:`KernelTable` and falls back to
  a roofline for (kernel, pass, dtype) the table lacks (by default the empirical roofline of
  the table itself, :meth:`RooflineComputeModel.from_table`);
* :class:`~netsim.calibration.roofline.RooflineComputeModel`: ``max(flops / (peak * eff),
  bytes / (mem_bw * mem_eff))``.

:func:`make_compute_model` builds the right one from a topology's accelerator and an optional
table path.  ``ComputeEstimate.source`` tells where a number came from (``table`` or the
fallback's name), so reports can show how much of a step was measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from netsim.calibration.kernels import KernelTable, canonical_dtype, get_kernel
from netsim.errors import SpecError


@dataclass(frozen=True)
class ComputeEstimate:
    """One answer of a compute model.

    Attributes: ``kernel``, ``pass_``, ``dtype`` (the dtype it ran in), ``time_s`` (seconds per
    call), ``flops`` and ``bytes`` (catalogue counts of one call), ``source`` (``table`` or the
    name of the roofline that answered).
    """

    kernel: str
    pass_: str
    dtype: str
    time_s: float
    flops: float
    bytes: float
    source: str


@runtime_checkable
class ComputeModel(Protocol):
    """What the replay needs: seconds for one call of a catalogue kernel."""

    name: str

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        """Seconds of one call of ``kernel`` / ``pass_`` at ``shape`` in ``dtype``."""
        ...

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """Like :meth:`time` with the FLOP/byte counts and where the number came from."""
        ...


class TableComputeModel:
    """Measured kernel table with a roofline fallback (implements :class:`ComputeModel`).

    Args:
        table: a :class:`KernelTable` or a path to one.
        fallback: the model for (kernel, pass, dtype) the table does not cover; default: the
            empirical roofline of the table (:meth:`RooflineComputeModel.from_table`).
        strict: raise SpecError instead of falling back.
        default_dtype: dtype used when a call gives none (default: the table's only dtype for
            the kernel/pass, else the fallback's default).
    """

    def __init__(
        self,
        table: KernelTable | str | Path,
        fallback: ComputeModel | None = None,
        *,
        strict: bool = False,
        default_dtype: str | None = None,
        name: str | None = None,
    ) -> None:
        from netsim.calibration.roofline import RooflineComputeModel

        self.table = table if isinstance(table, KernelTable) else KernelTable.load(table)
        self.fallback: ComputeModel | None = (
            None if strict else (fallback if fallback is not None else RooflineComputeModel.from_table(self.table))
        )
        self.default_dtype = canonical_dtype(default_dtype) if default_dtype is not None else None
        self.name = name or f"table:{self.table.meta.get('device_name', self.table.source)}"
        self._cache: dict[tuple[Any, ...], ComputeEstimate] = {}

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        key = (kernel, pass_, dtype, tuple(sorted(shape.items())))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        spec = get_kernel(kernel)
        spec.check_pass(pass_)
        q = spec.check_shape(shape)
        want = dtype if dtype is not None else self.default_dtype
        if self.table.covers(kernel, pass_, want):
            t = self.table.predict(kernel, pass_, dtype=want, **q)
            d = spec.fixed_dtype or (canonical_dtype(want) if want else self.table.dtypes(kernel, pass_)[0])
            est = ComputeEstimate(kernel, pass_, d, t, spec.flops(q, pass_), spec.nbytes(q, pass_, d), "table")
        elif self.fallback is None:
            raise SpecError(
                f"{self.name}: the kernel table does not cover {kernel}/{pass_}"
                + (f" in {canonical_dtype(want)}" if want else "")
                + f" (it has: {', '.join(self.table.kernels())})"
            )
        else:
            est = self.fallback.estimate(kernel, pass_, dtype=want, **q)
        self._cache[key] = est
        return est

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return self.estimate(kernel, pass_, dtype=dtype, **shape).time_s


def make_compute_model(
    accelerator: Mapping[str, Any] | None = None,
    table: KernelTable | str | Path | None = None,
    *,
    efficiency: float = 1.0,
    memory_efficiency: float = 1.0,
    default_dtype: str | None = None,
) -> ComputeModel:
    """The compute model for a run.

    With a ``table``: :class:`TableComputeModel` (fallback: the table's empirical roofline).
    Without: :class:`RooflineComputeModel` from ``accelerator`` (a topology's
    ``graph.graph["accelerator"]``) with the given efficiencies.
    """
    from netsim.calibration.roofline import RooflineComputeModel

    if table is not None:
        return TableComputeModel(table, default_dtype=default_dtype)
    if accelerator is None:
        raise SpecError("a compute model needs a kernel table or an accelerator with peak_flops and memory_Bps")
    return RooflineComputeModel.from_accelerator(
        accelerator, efficiency, memory_efficiency, default_dtype=default_dtype
    )
