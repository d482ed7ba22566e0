"""Megatron-Core's ``moe_shared_expert_overlap`` (``overlap.shared_expert_overlap``): the shared
experts' first GEMM and activation run while the dispatch all-to-all flies and their second GEMM
while the combine does (the backward in reverse), instead of after the combine.  On a tiny MoE
step with a shared expert the compute is the same kernels, the ops run beside the all-to-alls,
and the step gets shorter; without shared experts the option changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import TINY_MOE, replay, tiny_scenario


def _scenario(overlap: bool, shared: int = 1) -> dict[str, Any]:
    model = {**TINY_MOE["model"], "moe": {**TINY_MOE["model"]["moe"], "shared_experts": shared}}
    workload = {**TINY_MOE, "model": model, "overlap": {"shared_expert_overlap": overlap}}
    return tiny_scenario(workload=workload)


def _run(scenario: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    return replay(scenario)


def _compute_s(prep: Any, rank: int) -> float:
    return sum(o.duration_s for o in prep.plan.ops if o.rank == rank and o.kind == "compute")


def test_the_shared_experts_run_beside_the_all_to_alls() -> None:
    p0, _, s0 = _run(_scenario(False))
    p1, r1, s1 = _run(_scenario(True))
    names = {o.name for o in p1.plan.ops}
    assert {"F.shared-fc1", "F.shared-fc2", "BW.shared-fc1", "BW.shared-fc2"} <= names
    assert not any("shared" in o.name for o in p0.plan.ops)
    # the same kernels, split differently
    assert _compute_s(p1, 0) == pytest.approx(_compute_s(p0, 0), rel=1e-9)
    # a forward's fc1 starts before its dispatch ends, and its fc2 before its combine ends
    by_id = {o.id: o for o in p1.plan.ops}
    start, end = r1.op_start, r1.op_end
    for half, phase in (("F.shared-fc1", "fwd-dispatch"), ("F.shared-fc2", "fwd-combine")):
        op = next(o for o in p1.plan.ops if o.rank == 0 and o.name == half and o.layer == 0 and o.microbatch == 0)
        a2a = next(
            o
            for o in p1.plan.ops
            if o.rank == 0 and o.coll is not None and o.coll.phase == phase and o.layer == 0 and o.microbatch == 0
        )
        assert start[op.id] < end[a2a.id], half
    # the unpermute waits for the combine and the shared experts' output
    unp = next(o for o in p1.plan.ops if o.rank == 0 and o.name == "F.unpermute" and o.layer == 0 and o.microbatch == 0)
    assert any(by_id[d].name == "F.shared-fc2" for d in unp.deps)
    assert s1["step_time_s"] < s0["step_time_s"]


def test_without_shared_experts_the_option_changes_nothing() -> None:
    a, b = _run(_scenario(False, shared=0)), _run(_scenario(True, shared=0))
    assert a[2]["step_time_s"] == b[2]["step_time_s"]
    assert [o.name for o in a[0].plan.ops] == [o.name for o in b[0].plan.ops]
