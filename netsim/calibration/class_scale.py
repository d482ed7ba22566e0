"""A compute model calibrated to a measured profile, one factor per kernel class.

A published or measured profile of a training step (a PyTorch profiler trace, read with
``netsim import kineto TRACE --classes``) gives the GPU time of a layer by kernel class; a layer
case of ``netsim validate`` puts netsim's compute model next to it (:mod:`netsim.validation.layer`).
Their ratio, measured / predicted per class, is a calibration of the compute model to that
system and software: ``options.compute_class_scale`` (``{gemm: 1.28, attention: 0.83, ...}``)
multiplies the time of every kernel call of a class by its factor.  The classes are those of
:data:`netsim.workload.kernel_calls.KERNEL_CLASS`: ``gemm`` (dense, grouped and router GEMMs),
``attention``, ``fp8_cast`` (the FP8 quantisation casts), ``norm``, ``other`` (element-wise
kernels, permutations); the optimizer step is not scaled (no layer profile measures it).

What it assumes: the factors of the profiled layer hold for the model's other layers and shapes
(the dense layers of an MoE model, the output head's GEMM, other micro-batch sizes).  It is a
calibration, not a model of why the kernels differ: use it to ask what the rest of the
simulation (network, schedule, overlap) predicts once the kernels are as measured.

:class:`ClassScaled` wraps a compute model and exposes ``class_scale``, which
:meth:`netsim.workload.kernel_calls.KernelCall.time_s` applies (a kernel's class depends on the call,
an FP8 cast being a ``residual`` kernel call marked as a cast, so the call applies it, not the
model's ``time``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netsim.calibration.estimate import ComputeEstimate, ComputeModel

__all__ = ["ClassScaled", "with_class_scale"]


class ClassScaled:
    """``inner`` with per-class factors (``class_scale``) for the kernel calls timed on it."""

    def __init__(self, inner: ComputeModel, class_scale: Mapping[Any, float]) -> None:
        self.inner = inner
        self.class_scale = dict(class_scale)
        scales = ", ".join(f"{k} x{v:g}" for k, v in sorted(self.class_scale.items()))
        self.name = f"{getattr(inner, 'name', type(inner).__name__)} | calibrated per class: {scales}"

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """The inner model's estimate (the class factor is the call's to apply)."""
        return self.inner.estimate(kernel, pass_, dtype=dtype, **shape)

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return self.inner.time(kernel, pass_, dtype=dtype, **shape)

    @property
    def notes(self) -> list[str]:
        """The inner model's notes (what it assumed where no measurement applied)."""
        return list(getattr(self.inner, "notes", []))


def with_class_scale(compute: ComputeModel, class_scale: Mapping[Any, float] | None) -> ComputeModel:
    """``compute`` calibrated per class (unchanged without factors)."""
    return ClassScaled(compute, class_scale) if class_scale else compute
