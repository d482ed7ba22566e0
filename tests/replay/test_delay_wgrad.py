"""Megatron-Core's ``delay_wgrad_compute`` under its combined 1F1B (``overlap.delay_wgrad_compute``):
an MoE layer's backward computes the experts' input gradients, issues the backward dispatch
all-to-all, then the experts' weight gradients while it flies (model_chunk_schedule_plan.py at
d98e8a64dd: mlp.backward, mlp.backward_dw, moe_dispatch.backward).  Same kernels, the all-to-all
no longer waits for the weight gradients; without the combined 1F1B it is a one-line error."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import WorkloadError

from .conftest import TINY_MOE, replay, tiny_scenario


def _run(delay: bool, a2a_overlap: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    wl = {
        **TINY_MOE,
        "parallelism": {**TINY_MOE["parallelism"], "pp": 1},
        "overlap": {"ep_a2a_overlap": a2a_overlap, "delay_wgrad_compute": delay},
    }
    return replay(tiny_scenario(workload=wl))


def test_the_experts_weight_gradients_run_while_the_dispatch_backward_flies() -> None:
    p0, _, s0 = _run(False)
    p1, r1, s1 = _run(True)
    names1 = {o.name for o in p1.plan.ops}
    assert "BW.experts-dw" in names1 and "BW.experts-dw" not in {o.name for o in p0.plan.ops}
    # the same kernels: input + weight gradients = the whole backward
    comp = [sum(o.duration_s for o in p.plan.ops if o.rank == 0 and o.kind == "compute") for p in (p0, p1)]
    assert comp[1] == pytest.approx(comp[0], rel=1e-9)
    by_id = {o.id: o for o in p1.plan.ops}
    ops = [o for o in p1.plan.ops if o.rank == 0 and o.layer == 1 and o.microbatch == 1]
    dw = next(o for o in ops if o.name == "BW.experts-dw")
    a2a = next(o for o in ops if o.coll is not None and o.coll.phase == "bwd-combine")
    # the all-to-all waits for the input gradients, not for the weight gradients ...
    assert any(by_id[d].name == "BW.experts" for d in a2a.deps)
    assert dw.id not in a2a.deps
    # ... which run while it flies
    assert r1.op_start[dw.id] < r1.op_end[a2a.id]
    assert s1["step_time_s"] <= s0["step_time_s"] + 1e-12


def test_it_needs_the_combined_1f1b() -> None:
    with pytest.raises(WorkloadError) as info:
        _run(True, a2a_overlap=False)
    msg = str(info.value)
    assert "overlap.delay_wgrad_compute" in msg and "ep_a2a_overlap" in msg and "\n" not in msg
