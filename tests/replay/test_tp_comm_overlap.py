"""Transformer Engine's userbuffers overlap of the TP communication (``overlap.tp_comm_overlap``):
the same collectives, bytes and kernels, but each block's sequence-parallel all-gather and
reduce-scatter run beside the block's compute instead of before and after it, so a step whose
GEMMs outlast its TP traffic loses (almost) all of its exposed TP time; without sequence
parallelism it is a one-line error."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import WorkloadError

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


def _run(overlap: bool, **parallelism: Any) -> tuple[Any, Any, dict[str, Any]]:
    wl = {**DENSE, "parallelism": {**DENSE["parallelism"], **parallelism}, "overlap": {"tp_comm_overlap": overlap}}
    return replay(tiny_scenario(workload=wl))


def test_tp_collectives_run_beside_the_blocks() -> None:
    p0, _, s0 = _run(False)
    p1, r1, s1 = _run(True)
    # the same collectives and kernels
    c0 = sorted((c.phase, c.nbytes, c.ranks) for c in p0.plan.collectives.values())
    c1 = sorted((c.phase, c.nbytes, c.ranks) for c in p1.plan.collectives.values())
    assert c0 == c1
    comp = [sum(o.duration_s for o in p.plan.ops if o.rank == 0 and o.kind == "compute") for p in (p0, p1)]
    assert comp[1] == pytest.approx(comp[0], rel=1e-12)
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
