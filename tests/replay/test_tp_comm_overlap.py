"""Transformer Engine's userbuffers overlap of the TP communication (``overlap.tp_comm_overlap``):
the same collectives, bytes and kernels, but each block's sequence-parallel all-gather and
reduce-scatter run beside the block's compute instead of before and after it, so a step whose
GEMMs outlast its TP traffic loses (almost) all of its exposed TP time; the GEMMs an overlap
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


def _compute_s(prep: Any, name: str | None = None) -> float:
    return sum(o.duration_s for o in prep.plan.ops if o.rank == 0 and o.kind == "compute" and name in (None, o.name))


def test_tp_collectives_run_beside_the_blocks() -> None:
    p0, _, s0 = _run(False)
    p1, r1, s1 = _run(True, NO_MARGIN)
    # the same collectives and kernels
    c0 = sorted((c.phase, c.nbytes, c.ranks) for c in p0.plan.collectives.values())
    c1 = sorted((c.phase, c.nbytes, c.ranks) for c in p1.plan.collectives.values())
    assert c0 == c1
    assert _compute_s(p1) == pytest.approx(_compute_s(p0), rel=1e-12)
    # a forward MLP block starts before its all-gather ends; the next block waits for its
    # reduce-scatter
    ops = [o for o in p1.plan.ops if o.rank == 0 and o.layer == 1 and o.microbatch == 0]
    ag = next(o for o in ops if o.coll is not None and o.coll.phase == "fwd-mlp-ag")
    rs = next(o for o in ops if o.coll is not None and o.coll.phase == "fwd-mlp-rs")
    mlp = next(o for o in ops if o.name == "F.mlp")
    assert r1.op_start[mlp.id] < r1.op_end[ag.id]
    nxt = next(o for o in p1.plan.ops if o.rank == 0 and o.layer == 2 and o.microbatch == 0 and o.kind == "compute")
    by_id = {o.id: o for o in p1.plan.ops}
    seen, todo = set(), list(nxt.deps)
    while todo:  # nxt's ancestors on rank 0 back to layer 1
        d = by_id[todo.pop()]
        if d.id in seen or d.rank != 0 or (d.layer is not None and d.layer < 1):
            continue
        seen.add(d.id)
        todo += d.deps
    assert rs.id in seen
    # the step loses its exposed TP time
    assert s1["step_time_s"] < s0["step_time_s"]
    tp0, tp1 = s0["exposed_comm_s_by_class"]["tp"], s1["exposed_comm_s_by_class"]["tp"]
    assert tp0 > 0 and tp1 < 0.25 * tp0


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
