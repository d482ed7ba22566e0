"""Megatron-LM's blocking pipeline exchanges (``schedule.p2p: blocking``): after each action (or,
in the interleaved schedule's steady state, each forward + backward pair) a rank posts its sends
and the next receives together and computes again only when all of them are done; timed by hand
on the two-stage chain of ``test_pipeline.py``."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import SpecError, WorkloadError
from netsim.network.engine import Network
from netsim.replay import replay
from netsim.workload.graph import build_plan

from .helpers import FixedCompute, chain_topology, dense_pipeline


def _run(pp: int, m: int, p2p: str, schedule: str = "1f1b", v: int = 1) -> tuple[Any, Any]:
    graph = chain_topology(pp, 1e6)  # every activation / gradient message takes 1 s
    spec = dense_pipeline(pp, m, layers=pp * v, schedule={"name": schedule, "virtual_chunks": v, "p2p": p2p})
    comp = FixedCompute(1.0 / v, 2.0 / v)  # F = 1 s, B = 2 s per stage
    plan = build_plan(spec, graph, comp)
    return plan, replay(plan, Network(graph, routing="shortest"))


def test_a_send_holds_its_sender_until_it_is_received() -> None:
    # async (test_pipeline.py): 11 s.  Blocking: stage 0 computes F1 only once a0 has arrived.
    # stage 0: F0 [0,1]; a0 [1,2]; F1 [2,3]; a1 and g0 [5,6]; B0 [6,8]; g1 [9,10]; B1 [10,12]
    # stage 1: F0 [2,3] B0 [3,5]; F1 [6,7] (after g0 left and a1 arrived) B1 [7,9]
    plan, res = _run(2, 2, "blocking")
    assert res.step_times_s == [pytest.approx(12.0, abs=1e-9)]
    at = {(o.rank, o.name, o.microbatch): (res.op_start[o.id], res.op_end[o.id]) for o in plan.ops}
    assert at[(0, "F.attn", 1)] == pytest.approx((2.0, 3.0))
    assert at[(1, "F.attn", 1)] == pytest.approx((6.0, 7.0))
    assert at[(0, "BW.attn", 1)] == pytest.approx((10.0, 12.0))
    _, fast = _run(2, 2, "async")
    assert fast.step_times_s == [pytest.approx(11.0, abs=1e-9)]


def test_interleaved_steady_state_sends_the_forward_after_the_backward() -> None:
    plan, res = _run(2, 4, "blocking", "interleaved-1f1b", 2)
    by_id = {o.id: o for o in plan.ops}
    # in the steady state a forward's activation leaves after the backward that follows it
    late = 0
    for o in plan.ops:
        if o.name == "pp.send.act" and o.deps:
            d = by_id[o.deps[0]]
            late += d.kind == "compute" and d.name.startswith("BW.")
    assert late > 0
    _, fast = _run(2, 4, "async", "interleaved-1f1b", 2)
    assert res.step_times_s[0] > fast.step_times_s[0]


def test_bad_values_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"schedule\.p2p"):
        dense_pipeline(2, 2, schedule={"name": "1f1b", "p2p": "eager"})
    graph = chain_topology(2, 1e6)
    spec = dense_pipeline(2, 4, schedule={"name": "dualpipe", "p2p": "blocking"})
    with pytest.raises(WorkloadError, match=r"schedule\.p2p"):
        build_plan(spec, graph, FixedCompute(1.0, 2.0))
