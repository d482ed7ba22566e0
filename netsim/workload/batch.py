"""The global batch of a step: fixed, or growing with the cluster (tokens per device fixed).

Papers report scaling either way, and the two answer different questions:

* **fixed** (strong scaling): ``global_batch_size`` sequences per step whatever the cluster; a
  data-parallel replica runs ``global_batch_size / (micro_batch_size * dp)`` micro-batches, so
  each device gets fewer tokens as the cluster grows (and the pipeline bubble and the exposed
  gradient reduction weigh more);
* **per-device** (weak scaling): every DP replica runs the same number of micro-batches, so the
  tokens per device stay fixed and the global batch grows with ``dp``.  Given as
  ``num_microbatches`` (micro-batches per replica), or as ``global_batch_size`` together with
  ``batch_reference_devices``: the global batch at that many devices, scaled by
  ``devices / batch_reference_devices`` (``devices = dp * pp * tp``), e.g. "batch 32 on 64 NPUs"
  becomes 64 sequences on 128.

``batch_scaling`` names the choice (default: ``fixed`` when ``global_batch_size`` is given
without ``batch_reference_devices``, else ``per-device``); the run summary reports it with the
global batch it gave (``summary.json`` field ``batch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsim.config.workload import WorkloadSpec
from netsim.errors import WorkloadError

__all__ = ["BatchPlan", "batch_plan"]


@dataclass(frozen=True)
class BatchPlan:
    """The batch of one step on a cluster of ``devices`` ranks.

    Attributes:
        scaling: ``fixed`` (the global batch does not depend on the cluster) or ``per-device``.
        global_batch_size: sequences per step, all replicas together.
        microbatches: micro-batches per step per DP replica.
        devices: ranks (``dp * pp * tp``).
        tokens_per_sequence: ``model.seq_len``.
    """

    scaling: str
    global_batch_size: int
    microbatches: int
    devices: int
    tokens_per_sequence: int

    def summary(self) -> dict[str, Any]:
        """The ``batch`` field of ``summary.json``."""
        tokens = self.global_batch_size * self.tokens_per_sequence
        return {
            "scaling": self.scaling,
            "global_batch_size": self.global_batch_size,
            "global_batch_tokens": tokens,
            "tokens_per_device": tokens / self.devices,
            "microbatches_per_replica": self.microbatches,
        }


def batch_plan(spec: WorkloadSpec, dp: int) -> BatchPlan:
    """The batch of ``spec`` with ``dp`` data-parallel replicas (module docstring).

    Raises:
        WorkloadError: naming the field when the global batch does not split into whole
            micro-batches of every replica (or does not scale to whole sequences).
    """
    par = spec.parallelism
    devices = dp * par.pp * par.tp
    mbs = spec.micro_batch_size
    per = mbs * dp
    scaling = spec.batch_scaling_mode
    gbs = spec.global_batch_size
    if gbs is None:
        m = spec.num_microbatches
        return BatchPlan(scaling, m * per, m, devices, spec.model.seq_len)
    ref = spec.batch_reference_devices
    if ref is not None:
        if (gbs * devices) % ref:
            raise WorkloadError(
                f"global_batch_size {gbs} at {ref} devices does not scale to whole sequences on {devices} devices "
                f"(dp * pp * tp); pick a reference that divides {gbs} * {devices}",
                source=spec.source,
                field="batch_reference_devices",
            )
        gbs = gbs * devices // ref
    if gbs % per:
        what = f"global_batch_size {gbs}" + (f" (scaled from {spec.global_batch_size} at {ref} devices)" if ref else "")
        raise WorkloadError(
            f"{what} must be a multiple of micro_batch_size * dp = {mbs} * {dp}",
            source=spec.source,
            field="global_batch_size",
        )
    return BatchPlan(scaling, gbs, gbs // per, devices, spec.model.seq_len)
