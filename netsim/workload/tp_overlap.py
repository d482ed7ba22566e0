"""Transformer Engine's userbuffers: the SMs a TP overlap takes from the GEMM it runs beside.

With ``overlap.tp_comm_overlap`` (Megatron-Core / NeMo ``tp_comm_overlap``) Transformer Engine
runs each sequence-parallel all-gather and reduce-scatter beside one of the block's GEMMs
(:meth:`netsim.workload.layers.LayerEmitter.tp_block` places them).  The communication kernels
run on the same streaming multiprocessors (SMs) as the GEMM.  Each overlap is configured by
name (``qkv_fprop``, ``proj_fprop``, ``fc1_dgrad``, ...) with a method, ``num_sm`` (the SMs its
communication kernel runs on) and ``set_sm_margin``.  With the margin set, TE launches the GEMM
on the device's SMs less ``num_sm`` for the whole GEMM (``CommOverlapCore``: ``_math_sms =
sm_count - num_comm_sm``, transformer_engine/common/comm_gemm_overlap/comm_gemm_overlap.cpp at
d0067d0da6); without it the GEMM is launched on every SM.

Here a GEMM whose overlap sets the margin takes ``sms / (sms - num_sm)`` of its time (the same
assumption as :mod:`netsim.calibration.shared_sms`: a training-size GEMM has many waves of output
tiles, so its time is inversely proportional to the SMs it runs on).  ``overlap.tp_comm_sms``
gives the margin per GEMM name: ``num_sm`` where ``set_sm_margin`` is true, else 0.

Defaults (a name the workload does not give): Transformer Engine's own (``initialize_ub``,
transformer_engine/pytorch/module/base.py at d0067d0da6): the pipelined reduce-scatters
(``proj_fprop``, ``fc2_fprop``) and the bulk overlaps of the backward (``qkv_dgrad``,
``qkv_wgrad``, ``fc1_dgrad``, ``fc1_wgrad``) take 16 SMs with the margin set; the ring exchanges
(``qkv_fprop``, ``fc1_fprop``, ``proj_dgrad``, ``fc2_dgrad``) copy with the copy engines and set
no margin.  NVIDIA's tuned recipes override them (Megatron-Bridge training/comm_overlap.py at
067f987df0, the same values as NeMo 2.0's recipes/tp_overlap_configs/userbuffers.py): on H100 in
BF16, ``proj_fprop`` 24 and ``fc2_fprop`` 16 (hidden 8192, TP 4) or 24 and 8 (hidden 16384, TP 8),
every bulk overlap without the margin; in FP8 both are ring exchanges with 1 SM and the margin.

Not modelled (*approx.*): a bulk overlap without the margin still holds its ``num_sm`` SMs while
its communication runs (2-24 SMs for a fraction of the GEMM in NVIDIA's recipes), and the newer
``external`` overlaps of the ``proj`` and ``fc2`` weight gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from netsim.calibration.shared_sms import held_share
from netsim.config.workload import OverlapSpec, TpOverlapGemm

__all__ = ["TE_DEFAULT_MARGIN_SMS", "TP_OVERLAP_GEMMS", "tp_gemm_slowdowns"]

#: the GEMMs of a transformer layer TE's userbuffers overlap with TP communication
TP_OVERLAP_GEMMS: tuple[str, ...] = get_args(TpOverlapGemm)

#: Transformer Engine's default margin per GEMM (initialize_ub's get_default_config at d0067d0da6:
#: num_sm 16 with set_sm_margin for the pipeline and bulk methods; ring exchanges set none)
TE_DEFAULT_MARGIN_SMS: Mapping[str, int] = {
    "qkv_fprop": 0,
    "qkv_dgrad": 16,
    "qkv_wgrad": 16,
    "proj_fprop": 16,
    "proj_dgrad": 0,
    "fc1_fprop": 0,
    "fc1_dgrad": 16,
    "fc1_wgrad": 16,
    "fc2_fprop": 16,
    "fc2_dgrad": 0,
}


def tp_gemm_slowdowns(overlap: OverlapSpec, sms: int | None, accelerator: str = "") -> dict[str, float]:
    """Time multiplier per TE GEMM name for a run with userbuffers on ``sms`` SMs: ``sms / (sms
    - margin)`` for every GEMM with a margin (:data:`TE_DEFAULT_MARGIN_SMS` overridden by
    ``overlap.tp_comm_sms``); GEMMs without one are left out.

    Raises: SpecError naming ``accelerator.sms`` when a margin is set and the topology does not
    give the SM count, or ``overlap.tp_comm_sms`` when a margin leaves no SM for the GEMM."""
    margins = dict(TE_DEFAULT_MARGIN_SMS)
    margins.update((str(k), v) for k, v in (overlap.tp_comm_sms or {}).items())
    out: dict[str, float] = {}
    for name, n in margins.items():
        hint = " or overlap.tp_comm_sms to 0 for every GEMM"
        if held_share(n, sms, f"overlap.tp_comm_sms.{name}", accelerator, hint) > 0:
            assert sms is not None
            out[name] = sms / (sms - n)
    return out
