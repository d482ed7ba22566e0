"""Compute beside persistent communication kernels: the SMs the communication holds.

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
"""

from __future__ import annotations

from dataclasses import replace

from netsim.calibration.compute import GEMM_KERNELS
from netsim.calibration.estimate import ComputeEstimate, ComputeModel
from netsim.errors import SpecError

__all__ = ["SM_BOUND_KERNELS", "SharedSMs", "with_comm_sms"]

#: kernels whose time scales with the SMs they run on (tensor-core bound at training shapes)
SM_BOUND_KERNELS = GEMM_KERNELS | {"attention"}


class SharedSMs:
    """``inner``'s kernel times with ``comm_sms`` of the accelerator's ``sms`` held by
    communication kernels (a :class:`~netsim.calibration.estimate.ComputeModel`)."""

    def __init__(self, inner: ComputeModel, sms: int, comm_sms: int) -> None:
        if not 0 < comm_sms < sms:
            raise SpecError(
                f"must be between 1 and the accelerator's SMs - 1 = {sms - 1} (got {comm_sms})",
                field="overlap.comm_sms",
            )
        self.inner = inner
        self.sms = sms
        self.comm_sms = comm_sms
        self.slowdown = sms / (sms - comm_sms)
        self.name = f"{getattr(inner, 'name', type(inner).__name__)} | {comm_sms} of {sms} SMs held by communication"

    def estimate(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> ComputeEstimate:
        """The inner model's estimate, its time scaled for an SM-bound kernel."""
        est = self.inner.estimate(kernel, pass_, dtype=dtype, **shape)
        if kernel not in SM_BOUND_KERNELS:
            return est
        return replace(
            est, time_s=est.time_s * self.slowdown, source=f"{est.source} x{self.sms}/{self.sms - self.comm_sms} SMs"
        )

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        t = self.inner.time(kernel, pass_, dtype=dtype, **shape)
        return t * self.slowdown if kernel in SM_BOUND_KERNELS else t


def with_comm_sms(inner: ComputeModel, comm_sms: int, sms: int | None, accelerator: str = "") -> ComputeModel:
    """``inner`` unchanged when no SMs are held (``comm_sms == 0``), else :class:`SharedSMs`.

    Raises: SpecError naming ``accelerator.sms`` when the topology does not give the count."""
    if comm_sms == 0:
        return inner
    if sms is None:
        raise SpecError(
            f"overlap.comm_sms = {comm_sms} needs the accelerator's SM count, which the topology's "
            f"accelerator {accelerator or '(unnamed)'} does not give: set accelerator.sms (an integer >= 2; "
            "--set topology.accelerator.sms=N)",
            field="accelerator.sms",
        )
    return SharedSMs(inner, sms, comm_sms)
