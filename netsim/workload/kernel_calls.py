"""A kernel call: one kernel of the catalogue with its shape, pass and time multipliers, and how
a forward call becomes the calls of a backward part.

Every compute op of a training step is a list of :class:`KernelCall`
(:mod:`netsim.workload.costs` builds them per layer); a compute model that satisfies
:class:`TimeModel` (:mod:`netsim.calibration.compute`: a measured table or the roofline) turns
each into seconds.  A backward GEMM computes the input gradient and the weight gradient, equal
FLOPs: :func:`split` turns a forward call into its ``B`` (input-gradient) half, ``W``
(weight-gradient) half or both (``BW``), each half scaled by the SMs a TP overlap takes from it,
and with frozen weights (LoRA, :mod:`netsim.workload.lora`) into its input-gradient half only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from netsim.calibration.catalogue import canonical_dtype

__all__ = [
    "KERNEL_CLASS",
    "RESIDUAL_BYTES_PER_ELEMENT",
    "KernelCall",
    "Part",
    "Pass",
    "TimeModel",
    "byte_call",
    "call",
    "kernels_time_s",
    "memo_kernels",
    "split",
    "trains_weight",
]

_T = TypeVar("_T")

Pass = Literal["fwd", "bwd", "step"]
Part = Literal["F", "B", "W", "BW"]

_WEIGHT_KERNELS = frozenset({"gemm", "grouped_gemm"})

#: the class of a catalogue kernel (netsim.traces.kernel_classes puts a trace's kernels in the
#: same classes); every other kernel is ``other``, the optimizer step ``optimizer``, an FP8 cast
#: ``fp8_cast``
KERNEL_CLASS: dict[str, str] = {
    "gemm": "gemm",
    "grouped_gemm": "gemm",
    "router_linear": "gemm",
    "attention": "attention",
    "layernorm": "norm",
    "rmsnorm": "norm",
    "rmsnorm_eager": "norm",
    "adamw": "optimizer",
}


class TimeModel(Protocol):
    """What the op graph needs from a compute model (netsim.calibration.compute.ComputeModel)."""

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float: ...


@dataclass(frozen=True)
class KernelCall:
    """One kernel call: ``scale`` multiplies its time (0.5 = one half of a GEMM backward);
    ``no_fp8``: the call stays in 16 bits when the model trains in FP8 (DeepSeek-V3, arXiv
    2412.19437, section 3.3.1: the embedding, the output head, the MoE gating, the norms and the
    attention operators keep their BF16/FP32 precision; only the linear layers' GEMMs run in FP8);
    ``quant``: an FP8 quantisation cast (:mod:`netsim.workload.fp8`), not repeated in the backward;
    ``slow``: the time multipliers of a GEMM's forward, input-gradient and weight-gradient halves
    when a TP overlap takes SMs from them (:mod:`netsim.workload.tp_overlap`), or of another
    kernel's forward and whole backward (the fused attention's deterministic backward,
    ``training.deterministic``); a forward call applies the first, :func:`split` folds the
    others into the backward calls' ``scale``;
    ``adapter``: a LoRA adapter's GEMM (:mod:`netsim.workload.lora`);
    ``label``: what a call that times another kernel's bytes stands for."""

    kernel: str
    pass_: Pass
    shape: tuple[tuple[str, float], ...]
    scale: float = 1.0
    no_fp8: bool = False
    quant: bool = False
    slow: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: a LoRA adapter's GEMM: trained (its weight gradient computed) when the base is frozen
    adapter: bool = False
    #: what the call stands for when it times another kernel's bytes (the kernel tally prints it
    #: after the kernel's name), e.g. ``fp32 router cast``: the ``residual`` kernel scaled to a cast
    label: str = ""

    @property
    def kernel_class(self) -> str:
        """The call's class (:data:`KERNEL_CLASS`; an FP8 quantisation cast is ``fp8_cast``)."""
        return "fp8_cast" if self.quant else KERNEL_CLASS.get(self.kernel, "other")

    def run_dtype(self, dtype: str | None) -> str | None:
        """The dtype the call asks the compute model for in a model of ``dtype``: the
        optimizer's own, 16 bits for an FP8 model's ``no_fp8`` calls, else ``dtype``."""
        dt = None if self.kernel == "adamw" else dtype
        if self.no_fp8 and dt is not None and canonical_dtype(dt) == "float8":
            dt = "bf16"
        return dt

    def class_factor(self, model: TimeModel) -> float:
        """The model's ``class_scale`` of the call's class (1 without one,
        :mod:`netsim.calibration.class_scale`)."""
        class_scale: Mapping[str, float] | None = getattr(model, "class_scale", None)
        return class_scale.get(self.kernel_class, 1.0) if class_scale else 1.0

    def time_s(self, model: TimeModel, dtype: str | None) -> float:
        """Seconds of the call on ``model``, times the model's ``class_scale`` of its class if
        it has one (:mod:`netsim.calibration.class_scale`)."""
        scale = self.scale * self.slow[0] if self.pass_ == "fwd" else self.scale
        t = scale * model.time(self.kernel, self.pass_, dtype=self.run_dtype(dtype), **dict(self.shape))
        return t * self.class_factor(model)


def kernels_time_s(
    calls: Sequence[KernelCall],
    model: TimeModel,
    dtype: str | None,
    cache: dict[tuple[KernelCall, str | None], float] | None = None,
) -> float:
    """Sum of the times of ``calls`` (seconds); ``cache`` memoises per call."""
    total = 0.0
    for c in calls:
        if cache is not None:
            key = (c, dtype)
            t = cache.get(key)
            if t is None:
                t = c.time_s(model, dtype)
                cache[key] = t
        else:
            t = c.time_s(model, dtype)
        total += t
    return total


def call(kernel: str, pass_: Pass, scale: float = 1.0, *, no_fp8: bool = False, **shape: float) -> KernelCall:
    return KernelCall(kernel, pass_, tuple(sorted((k, float(v)) for k, v in shape.items())), scale, no_fp8)


#: the 16-bit bytes the ``residual`` catalogue kernel moves per element (read two, write one)
RESIDUAL_BYTES_PER_ELEMENT = 6.0


def byte_call(
    rows: float, width: float, bytes_per_element: float, *, quant: bool = False, label: str = ""
) -> KernelCall:
    """A memory-bound pass over a ``[rows, width]`` tensor moving ``bytes_per_element``, timed as
    the ``residual`` kernel on that shape scaled to those bytes (an FP8 quantisation cast with
    ``quant``, an fp32 router cast, a gradient add: ``label`` says which to the kernel tally)."""
    shape = (("hidden", float(width)), ("tokens", float(rows)))
    scale = bytes_per_element / RESIDUAL_BYTES_PER_ELEMENT
    return KernelCall("residual", "fwd", shape, scale, no_fp8=True, quant=quant, label=label)


def trains_weight(c: KernelCall, frozen: bool = False) -> bool:
    """Whether ``c`` is a GEMM whose weight gets a gradient: not an FP8 cast, and with ``frozen``
    base weights (LoRA) only a LoRA adapter's."""
    return c.kernel in _WEIGHT_KERNELS and not c.quant and (c.adapter or not frozen)


def split(calls: list[KernelCall], part: Part, frozen: bool = False) -> list[KernelCall]:
    """Forward calls -> the calls of a backward part (``B``, ``W`` or both ``BW``); ``frozen``:
    the weights are not trained (LoRA, :mod:`netsim.workload.lora`): a GEMM's backward is its
    input-gradient half, except an adapter's."""
    out: list[KernelCall] = []
    for c in calls:
        if c.quant:
            continue
        weighted = c.kernel in _WEIGHT_KERNELS
        _, dgrad, wgrad = c.slow
        if weighted and not trains_weight(c, frozen):
            wgrad = 0.0
            if part == "W":
                continue
        if part == "BW":
            scale = c.scale * (0.5 * (dgrad + wgrad) if weighted else dgrad)
            out.append(KernelCall(c.kernel, "bwd", c.shape, scale, c.no_fp8, adapter=c.adapter))
        elif part == "B":
            scale = c.scale * (0.5 * dgrad if weighted else dgrad)
            out.append(KernelCall(c.kernel, "bwd", c.shape, scale, c.no_fp8, adapter=c.adapter))
        elif part == "W" and weighted:
            out.append(KernelCall(c.kernel, "bwd", c.shape, c.scale * 0.5 * wgrad, c.no_fp8, adapter=c.adapter))
    return out


def memo_kernels(method: Callable[..., _T]) -> Callable[..., _T]:
    """Memoise a kernel-list method per arguments in the instance's ``_memo`` dict (the lists
    are shared: callers must not mutate them).  A training step asks for the same layer's
    kernels millions of times at scale; the same list object also lets the op builder cache its
    duration."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> _T:
        key = (method.__name__, *args, *sorted(kwargs.items()))
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = method(self, *args, **kwargs)
        return hit

    return wrapper
