"""Transformer Engine's userbuffers overlap of the TP communication (``overlap.tp_comm_overlap``):
the same collectives, bytes and kernels, but each sequence-parallel collective runs beside the
GEMM it feeds or drains (netsim.workload.tp_blocks), so a step whose GEMMs outlast their TP
traffic loses (almost) all of its exposed TP time, and a collective longer than its GEMM shows; the GEMMs an overlap
takes SMs from (``overlap.tp_comm_sms``, Transformer Engine's defaults otherwise) run longer by
``sms / (sms - margin)``; without sequence parallelism it is a one-line error."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import SpecError, WorkloadError
from netsim.workload.tp_overlap import TP_OVERLAP_GEMMS

from .conftest import replay, tiny_scenario

DENSE: dict[str, Any] = {
    "name": "tiny-dense",
    "model": {"layers": 4, "hidden": 4096, "ffn_hidden": 16384, "heads": 32, "vocab": 4096, "seq_len": 4096},
    "parallelism": {"pp": 1, "tp": 2, "ep": 1, "zero_stage": 1, "sequence_parallel": True},
    "micro_batch_size": 1,
    "num_microbatches": 2,
    "grad_bucket_bytes": "4MB",
    "steps": 1,
}


NO_MARGIN = dict.fromkeys(TP_OVERLAP_GEMMS, 0)


def _run(overlap: bool, sms: dict[str, int] | None = None, **parallelism: Any) -> tuple[Any, Any, dict[str, Any]]:
    ov: dict[str, Any] = {"tp_comm_overlap": overlap, "tp_comm_sms": sms}
    wl = {**DENSE, "parallelism": {**DENSE["parallelism"], **parallelism}, "overlap": ov}
    return replay(tiny_scenario(workload=wl))


def _compute_s(prep: Any, block: str | None = None) -> float:
    """Seconds of rank 0's compute ops (of a block: names starting ``block``, e.g. ``F.mlp``)."""
    ops = (o for o in prep.plan.ops if o.rank == 0 and o.kind == "compute")
    return sum(o.duration_s for o in ops if block is None or o.name.startswith(block))


def _times(prep: Any, res: Any, layer: int = 1) -> dict[str, tuple[float, float]]:
    """(start, end) of rank 0's ops of ``layer`` and micro-batch 0 by name (collectives by phase)."""
    out = {}
    for o in prep.plan.ops:
        if o.rank == 0 and o.layer == layer and o.microbatch == 0:
            out[o.name if o.coll is None else o.coll.phase] = (res.op_start[o.id], res.op_end[o.id])
    return out


def test_tp_collectives_run_beside_the_gemms_they_feed_or_drain() -> None:
    p0, _, s0 = _run(False)
    p1, r1, s1 = _run(True, NO_MARGIN)
    # the same collectives and kernels
    c0 = sorted((c.phase, c.nbytes, c.ranks) for c in p0.plan.collectives.values())
    c1 = sorted((c.phase, c.nbytes, c.ranks) for c in p1.plan.collectives.values())
    assert c0 == c1
    assert _compute_s(p1) == pytest.approx(_compute_s(p0), rel=1e-12)
    t = _times(p1, r1)
    for blk in ("attn", "mlp"):
        # forward: the all-gather beside the norm and the column-parallel GEMM; what follows
        # waits for both; the reduce-scatter beside the row-parallel GEMM, not the core before it
        assert t[f"fwd-{blk}-ag"][0] == t[f"F.{blk}-pre"][0]
        assert t[f"F.{blk}-mid"][0] == pytest.approx(max(t[f"fwd-{blk}-ag"][1], t[f"F.{blk}-pre"][1]))
        assert t[f"fwd-{blk}-rs"][0] == t[f"F.{blk}-post"][0] >= t[f"F.{blk}-mid"][1]
        assert t[f"F.{blk}-close"][0] == pytest.approx(max(t[f"fwd-{blk}-rs"][1], t[f"F.{blk}-post"][1]))
        # backward: the output gradient's all-gather beside the row-parallel GEMM's input
        # gradient, the input's all-gather beside the column-parallel one's, the input
        # gradient's reduce-scatter beside its weight gradient; the norm waits for it
        assert t[f"bwd-{blk}-ag"][0] == t[f"BW.{blk}-post"][0]
        assert t[f"bwd-{blk}-ag-in"][0] == t[f"BW.{blk}-dgrad"][0]
        assert t[f"bwd-{blk}-rs"][0] == t[f"BW.{blk}-wgrad"][0] >= t[f"BW.{blk}-dgrad"][1]
        assert t[f"BW.{blk}-norm"][0] == pytest.approx(max(t[f"bwd-{blk}-rs"][1], t[f"BW.{blk}-wgrad"][1]))
    # the step loses its exposed TP time (every collective here is shorter than its GEMM)
    assert s1["step_time_s"] < s0["step_time_s"]
    tp0, tp1 = s0["exposed_comm_s_by_class"]["tp"], s1["exposed_comm_s_by_class"]["tp"]
    assert tp0 > 0 and tp1 < 0.25 * tp0


def test_a_reduce_scatter_longer_than_its_gemm_is_exposed() -> None:
    """The reduce-scatter of the attention's output starts with the output projection, after
    the attention core: with a long sequence and few heads per rank the core is long and the
    projection short, and the part of the reduce-scatter beyond the projection shows."""
    wl = {
        **DENSE,
        "model": {**DENSE["model"], "hidden": 2048, "heads": 16, "ffn_hidden": 4096, "seq_len": 16384},
        "parallelism": {**DENSE["parallelism"], "tp": 8},
        "overlap": {"tp_comm_overlap": True, "tp_comm_sms": NO_MARGIN},
    }
    prep, res, summary = replay(tiny_scenario(workload=wl))
    t = _times(prep, res)
    core, proj, rs = t["F.attn-mid"], t["F.attn-post"], t["fwd-attn-rs"]
    assert core[1] - core[0] > rs[1] - rs[0] > proj[1] - proj[0]
    assert t["F.attn-close"][0] == pytest.approx(rs[1])
    assert summary["exposed_comm_s_by_class"]["tp"] > 0


def test_it_needs_sequence_parallelism() -> None:
    with pytest.raises(WorkloadError) as info:
        _run(True, sequence_parallel=False)
    msg = str(info.value)
    assert "overlap.tp_comm_overlap" in msg and "sequence_parallel" in msg and "\n" not in msg


def test_overlaps_take_sms_from_their_gemms() -> None:
    """Transformer Engine's defaults: the pipelined reduce-scatters (proj and fc2 forward) and the
    bulk overlaps (qkv and fc1 input and weight gradients) take 16 of the H100's 132 SMs."""
    p0, _, _ = _run(True, NO_MARGIN)
    p1, _, s1 = _run(True)
    slow = 132 / (132 - 16)
    fwd0, fwd1 = _compute_s(p0, "F.mlp"), _compute_s(p1, "F.mlp")
    bwd0, bwd1 = _compute_s(p0, "BW.mlp"), _compute_s(p1, "BW.mlp")
    assert fwd0 < fwd1 < fwd0 * slow  # fc2's forward slows, fc1's (a ring exchange) does not
    assert bwd0 < bwd1 < bwd0 * slow  # fc1's input and weight gradients slow, fc2's do not
    # NVIDIA's BF16 H100 recipe: only the forward reduce-scatters take SMs (24 and 16)
    recipe = {**NO_MARGIN, "proj_fprop": 24, "fc2_fprop": 16}
    p2, _, s2 = _run(True, recipe)
    assert _compute_s(p2, "BW.mlp") == pytest.approx(bwd0, rel=1e-12)
    assert fwd0 < _compute_s(p2, "F.mlp") < fwd0 * 132 / 116
    assert s2["step_time_s"] < s1["step_time_s"]


def test_margin_errors_name_the_field() -> None:
    with pytest.raises(SpecError) as info:
        _run(True, {"proj_fprop": 132})
    msg = str(info.value)
    assert "overlap.tp_comm_sms.proj_fprop" in msg and "132" in msg and "\n" not in msg
    with pytest.raises(SpecError) as info:
        _run(True, {"proj_wgrad": 4})
    assert "tp_comm_sms" in str(info.value)
    with pytest.raises(SpecError) as info:
        _run(True, {"fc2_fprop": -1})
    assert "tp_comm_sms" in str(info.value)


def test_a_bulk_overlap_without_a_margin_holds_its_sms_while_in_flight() -> None:
    """NVIDIA's recipes run the QKV weight gradient's reduce-scatter on 24 SMs without the
    margin: the GEMM is launched on every SM and loses those 24 only while the kernel runs."""
    held = {"qkv_wgrad": 24, "fc1_dgrad": 2}
    p0, r0, _ = _run(True, NO_MARGIN)
    wl = {**DENSE, "overlap": {"tp_comm_overlap": True, "tp_comm_sms": NO_MARGIN, "tp_comm_held_sms": held}}
    p1, r1, _ = replay(tiny_scenario(workload=wl))
    shares = {o.coll.phase: o.coll.sm_share for o in p1.plan.ops if o.coll is not None and o.coll.traffic_class == "tp"}
    assert shares["bwd-attn-rs"] == pytest.approx(24 / 132) and shares["bwd-mlp-ag-in"] == pytest.approx(2 / 132)
    assert shares["fwd-attn-ag"] == shares["bwd-mlp-rs"] == 0.0
    # the same ops and durations; the weight gradient beside the held SMs takes longer
    assert _compute_s(p1) == pytest.approx(_compute_s(p0), rel=1e-12)
    t0, t1 = _times(p0, r0), _times(p1, r1)
    span = {k: (v[1] - v[0]) for k, v in t1.items()}
    assert span["BW.attn-wgrad"] > (t0["BW.attn-wgrad"][1] - t0["BW.attn-wgrad"][0]) * (1 + 1e-9)
    # a name with held SMs loses TE's default margin (16 for the bulk overlaps)
    p2, _, _ = replay(tiny_scenario(workload={**DENSE, "overlap": {"tp_comm_overlap": True, "tp_comm_held_sms": held}}))
    p3, _, _ = _run(True)
    assert _compute_s(p2, "BW.attn-wgrad") < _compute_s(p3, "BW.attn-wgrad")


def test_held_sms_errors_name_the_field() -> None:
    both = {"tp_comm_overlap": True, "tp_comm_sms": {"qkv_wgrad": 8}, "tp_comm_held_sms": {"qkv_wgrad": 24}}
    with pytest.raises(SpecError) as info:
        replay(tiny_scenario(workload={**DENSE, "overlap": both}))
    msg = str(info.value)
    assert "overlap.tp_comm_held_sms.qkv_wgrad" in msg and "tp_comm_sms" in msg and "\n" not in msg
    with pytest.raises(SpecError) as info:
        replay(
            tiny_scenario(
                workload={**DENSE, "overlap": {"tp_comm_overlap": True, "tp_comm_held_sms": {"fc1_wgrad": 132}}}
            )
        )
    assert "overlap.tp_comm_held_sms.fc1_wgrad" in str(info.value) and "131" in str(info.value)
