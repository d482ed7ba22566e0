"""Transformer Engine's userbuffers: the SMs a TP overlap takes from the GEMM it runs beside.

With ``overlap.tp_comm_overlap`` (Megatron-Core / NeMo ``tp_comm_overlap``) Transformer Engine
runs each sequence-parallel all-gather and reduce-scatter beside one of the block's GEMMs
(:mod:`netsim.workload.tp_blocks` places them).  The communication kernels
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

An overlap without the margin whose communication is a kernel (the ``bulk`` and ``pipeline``
methods: ``allgather2_userbuff_inplace`` / ``reducescatter2_userbuff_inplace`` on ``num_sm``
SMs, ``CommOverlapBase::bulk_overlap`` at d0067d0da6) holds its ``num_sm`` SMs only while that
kernel runs; the GEMM beside it is launched on every SM and gets the rest (netsim.replay, "SMs
held in flight").  ``overlap.tp_comm_held_sms`` gives those per GEMM name; NVIDIA's H100 recipes
hold 2-4 SMs beside the input gradients and 24 beside the QKV weight gradient (DGX Cloud
Benchmarking's llama3.1 configs at 143b90dd91, Megatron-Bridge's userbuffers configs at
067f987df0).  The ring exchanges copy with the copy engines (``use_ce``, true by default) and
hold none.  :data:`PHASE_GEMM` says which collective runs beside which GEMM
(:mod:`netsim.workload.tp_blocks`).

Not modelled (*approx.*): the newer ``external`` overlaps of the ``proj`` and ``fc2`` weight
gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from netsim.calibration.shared_sms import held_share
from netsim.config.workload import OverlapSpec, TpOverlapGemm
from netsim.errors import SpecError

__all__ = ["PHASE_GEMM", "TE_DEFAULT_MARGIN_SMS", "TP_OVERLAP_GEMMS", "tp_gemm_slowdowns", "tp_held_shares"]

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


#: the TE overlap (GEMM name) each TP collective phase runs beside (a recomputation's phases
#: start with ``rcp-``)
PHASE_GEMM: Mapping[str, str] = {
    "fwd-attn-ag": "qkv_fprop",
    "fwd-attn-rs": "proj_fprop",
    "fwd-mlp-ag": "fc1_fprop",
    "fwd-mlp-rs": "fc2_fprop",
    "bwd-attn-ag": "proj_dgrad",
    "bwd-attn-ag-in": "qkv_dgrad",
    "bwd-attn-rs": "qkv_wgrad",
    "bwd-mlp-ag": "fc2_dgrad",
    "bwd-mlp-ag-in": "fc1_dgrad",
    "bwd-mlp-rs": "fc1_wgrad",
}


def tp_held_shares(overlap: OverlapSpec, sms: int | None, accelerator: str = "") -> dict[str, float]:
    """The share of the ``sms`` SMs each overlap with ``overlap.tp_comm_held_sms`` holds while its
    communication is in flight, by GEMM name (names holding none are left out).

    Raises: SpecError as :func:`tp_gemm_slowdowns`, naming ``overlap.tp_comm_held_sms``, or
    naming a GEMM given both a margin and held SMs."""
    out: dict[str, float] = {}
    margins = overlap.tp_comm_sms or {}
    for name, n in (overlap.tp_comm_held_sms or {}).items():
        field = f"overlap.tp_comm_held_sms.{name}"
        if n and margins.get(name):
            raise SpecError(
                f"{name} cannot both take {margins[name]} SMs for its whole GEMM (overlap.tp_comm_sms, "
                f"set_sm_margin) and hold {n} while its communication runs (no margin): set one to 0",
                field=field,
            )
        hint = " or overlap.tp_comm_held_sms to 0 for every GEMM"
        share = held_share(n, sms, field, accelerator, hint)
        if share > 0:
            out[str(name)] = share
    return out


def tp_gemm_slowdowns(overlap: OverlapSpec, sms: int | None, accelerator: str = "") -> dict[str, float]:
    """Time multiplier per TE GEMM name for a run with userbuffers on ``sms`` SMs: ``sms / (sms
    - margin)`` for every GEMM with a margin (:data:`TE_DEFAULT_MARGIN_SMS` overridden by
    ``overlap.tp_comm_sms``; none for a name with ``overlap.tp_comm_held_sms``); GEMMs without one
    are left out.

    Raises: SpecError naming ``accelerator.sms`` when a margin is set and the topology does not
    give the SM count, or ``overlap.tp_comm_sms`` when a margin leaves no SM for the GEMM."""
    margins = dict(TE_DEFAULT_MARGIN_SMS)
    margins.update((str(k), 0) for k, v in (overlap.tp_comm_held_sms or {}).items() if v)
    margins.update((str(k), v) for k, v in (overlap.tp_comm_sms or {}).items())
    out: dict[str, float] = {}
    for name, n in margins.items():
        hint = " or overlap.tp_comm_sms to 0 for every GEMM"
        if held_share(n, sms, f"overlap.tp_comm_sms.{name}", accelerator, hint) > 0:
            assert sms is not None
            out[name] = sms / (sms - n)
    return out
