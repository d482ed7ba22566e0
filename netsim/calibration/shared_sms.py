"""The SM throughput compute kernels get: SMs held by communication, and the SM clock.

GPU communication kernels run on the same streaming multiprocessors (SMs) as the compute.  Where
a training system keeps its communication kernels resident for the whole step, overlapped with
compute, the compute kernels get only the remaining SMs.  DeepSeek-V3 is the published case:
its cross-node all-to-all kernels (dispatch and combine, warp-specialised, IB and NVLink
forwarding) need 20 SMs to saturate both fabrics (DeepSeek-V3 Technical Report, arXiv
2412.19437, section 3.2.2), and the report's hardware section (3.5.1) counts that as a cost:
20 of the H800's 132 SMs are allocated to communication, which limits the computational
throughput.

:class:`SharedSMs` wraps a compute model: kernels whose time scales with the SM count (dense and
grouped GEMMs, the attention core) take ``sms / (sms - comm_sms)`` of their time; kernels
bounded by HBM bandwidth (element-wise ops, norms, permutations, the optimizer) keep theirs,
since a fraction of the SMs already saturates HBM.  Assumptions (approx.): GEMM time is inversely
proportional to the SMs it runs on (true for GEMMs of many output tiles, the training shapes);
the communication SMs are held for the whole step (DualPipe overlaps all-to-alls with compute in
its steady state, which is most of a long step; the warm-up and drain phases are charged the
same).  Set by the workload's ``overlap.comm_sms`` and the accelerator's ``sms``.

:class:`SMClock` does the same for the SM clock: a kernel table measured at one clock (short
isolated benchmarks run a cool GPU at its maximum boost clock) used for a step whose SMs run at
another (a training step holds the tensor cores near the power limit).  The SM-bound kernels take
``measured / clock`` of their time; the HBM-bound ones keep theirs (a power cap lowers the SM
clock, not the memory clock).  :mod:`netsim.calibration.profiles` sets it from the profile's
clocks (``accelerator.compute.clock_mhz``).
"""

from __future__ import annotations

from dataclasses import replace

from netsim.calibration.compute import GEMM_KERNELS
from netsim.calibration.estimate import ComputeEstimate, ComputeModel
from netsim.errors import SpecError

__all__ = [
    "SM_BOUND_KERNELS",
    "SMBoundScaled",
    "SMClock",
    "SharedSMs",
    "held_share",
    "kernel_sm_share",
    "with_comm_sms",
]

#: kernels whose time scales with the SMs they run on (tensor-core bound at training shapes)
SM_BOUND_KERNELS = GEMM_KERNELS | {"attention"}


def kernel_sm_share(blocks: int, sms: int) -> float:
    """The share of ``sms`` SMs a communication kernel of ``blocks`` thread blocks holds: one SM
    per block (an NCCL channel's block fills its SM), leaving the compute at least one."""
    return min(blocks, sms - 1) / sms


def held_share(n: int, sms: int | None, field: str, accelerator: str = "", hint: str = "") -> float:
    """``n`` SMs taken by communication kernels (``field``) as a share of the accelerator's
    ``sms``; 0 when ``n`` is 0.  The one check of every such setting (``overlap.comm_sms``,
    ``overlap.ep_comm_sms``, ``overlap.tp_comm_sms``).

    Raises: SpecError naming ``accelerator.sms`` when the topology does not give the count
    (``hint``: another way out), or ``field`` when ``n`` leaves the compute no SM."""
    if n == 0:
        return 0.0
    if sms is None:
        raise SpecError(
            f"{field} = {n} needs the accelerator's SM count, which the topology's accelerator "
            f"{accelerator or '(unnamed)'} does not give: set accelerator.sms (an integer >= 2; "
            f"--set topology.accelerator.sms=N){hint}",
            field="accelerator.sms",
        )
    if not 0 < n < sms:
        raise SpecError(f"must be between 1 and the accelerator's SMs - 1 = {sms - 1} (got {n})", field=field)
    return n / sms


class SMBoundScaled:
    """``inner``'s kernel times with the SM-bound kernels' (:data:`SM_BOUND_KERNELS`) times
    ``slowdown`` (a :class:`~netsim.calibration.estimate.ComputeModel`); ``label`` says why."""

    def __init__(self, inner: ComputeModel, slowdown: float, label: str, why: str) -> None:
        self.inner = inner
        self.slowdown = slowdown
        self._label = label
        self.name = f"{getattr(inner, 'name', type(inner).__name__)} | {why}"

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.inner, "notes", []))

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """The inner model's estimate, its time scaled for an SM-bound kernel."""
        est = self.inner.estimate(kernel, pass_, dtype=dtype, **shape)
        if kernel not in SM_BOUND_KERNELS:
            return est
        return replace(est, time_s=est.time_s * self.slowdown, source=f"{est.source} {self._label}")

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        t = self.inner.time(kernel, pass_, dtype=dtype, **shape)
        return t * self.slowdown if kernel in SM_BOUND_KERNELS else t


class SharedSMs(SMBoundScaled):
    """``inner``'s kernel times with ``comm_sms`` of the accelerator's ``sms`` held by
    communication kernels."""

    def __init__(self, inner: ComputeModel, sms: int, comm_sms: int) -> None:
        held_share(comm_sms, sms, "overlap.comm_sms")  # checks it leaves the compute an SM
        self.sms = sms
        self.comm_sms = comm_sms
        super().__init__(
            inner,
            sms / (sms - comm_sms),
            f"x{sms}/{sms - comm_sms} SMs",
            f"{comm_sms} of {sms} SMs held by communication",
        )


class SMClock(SMBoundScaled):
    """``inner``'s kernel times, measured with the SMs at ``measured_mhz``, for SMs at ``clock_mhz``."""

    def __init__(self, inner: ComputeModel, measured_mhz: float, clock_mhz: float) -> None:
        self.measured_mhz = measured_mhz
        self.clock_mhz = clock_mhz
        super().__init__(
            inner,
            measured_mhz / clock_mhz,
            f"x{measured_mhz:g}/{clock_mhz:g} MHz",
            f"SM clock {clock_mhz:g} MHz (tables measured at {measured_mhz:g})",
        )


def with_comm_sms(inner: ComputeModel, comm_sms: int, sms: int | None, accelerator: str = "") -> ComputeModel:
    """``inner`` unchanged when no SMs are held (``comm_sms == 0``), else :class:`SharedSMs`.

    Raises: SpecError naming ``accelerator.sms`` when the topology does not give the count."""
    if held_share(comm_sms, sms, "overlap.comm_sms", accelerator) == 0:
        return inner
    assert sms is not None
    return SharedSMs(inner, sms, comm_sms)
