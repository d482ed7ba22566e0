"""The host's wait for the received token counts before each forward dispatch
(netsim.moe.dispatchers, "Host synchronisation"): one host op per forward dispatch, what the
rank issues after it waits for it, and the GPU idles for it."""

from __future__ import annotations

import pytest

from netsim.moe.dispatchers import DISPATCHERS, HYBRIDEP_HOST_SYNC_S
from netsim.network.engine import Network
from netsim.replay import Breakdown, ReplayResult, rank_breakdown, replay
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan

from .test_dispatch import _plan


def _breakdown(plan: StepPlan, res: ReplayResult, rank: int) -> Breakdown:
    """Rank ``rank``'s step split into compute, communication, overlap and idle."""
    comp = [(res.op_start[o.id], res.op_end[o.id]) for o in plan.ops if o.rank == rank and o.kind == "compute"]
    comm: dict[str, list[tuple[float, float]]] = {}
    for o in plan.ops:
        if o.rank == rank and o.kind == "comm":
            comm.setdefault(o.traffic_class, []).append((res.op_start[o.id], res.op_end[o.id]))
    return rank_breakdown((0.0, res.step_end[0]), comp, comm)


def _host_ops(plan: StepPlan) -> list:
    return [o for o in plan.ops if o.kind == "host"]


def test_hybridep_waits_once_per_forward_dispatch_and_the_others_do_not() -> None:
    assert {n: DISPATCHERS.get(n).host_sync_s for n in DISPATCHERS.names()} == {
        "alltoall": 0.0,
        "dedup-rank": 0.0,
        "deepep": 0.0,
        "hybridep": HYBRIDEP_HOST_SYNC_S,
    }
    plan = _plan("model.moe.dispatcher=hybridep")
    hosts = _host_ops(plan)
    # one layer, one micro-batch: one wait per rank, after the routing-map all-gather
    assert len(hosts) == 16 and {o.rank for o in hosts} == set(range(16))
    by_id = {o.id: o for o in plan.ops}
    for h in hosts:
        assert h.duration_s == pytest.approx(HYBRIDEP_HOST_SYNC_S) and h.name == "host.fwd-dispatch-sync"
        # it waits for the routing maps and for everything queued on the compute stream before
        # it (HybridEP's current_stream().synchronize()): here the router, the last compute op
        assert [by_id[d].coll.phase for d in h.deps if by_id[d].coll is not None] == ["fwd-dispatch-meta"]
        before = [o for o in plan.ops if o.rank == h.rank and o.kind == "compute" and o.issue < h.issue]
        last = max(before, key=lambda o: o.issue)
        assert last.name == "F.router" and last.id in h.deps
    for o in plan.ops:
        if o.coll is not None and o.coll.phase == "fwd-dispatch":
            assert any(by_id[d].kind == "host" for d in o.deps)
    assert not _host_ops(_plan("model.moe.dispatcher=alltoall"))
    assert not _host_ops(_plan("model.moe.dispatcher=deepep"))


def test_the_override_sets_it_for_any_dispatcher_and_padding_needs_none() -> None:
    hosts = _host_ops(_plan("model.moe.dispatcher=alltoall", "model.moe.host_sync_us=150"))
    assert hosts and [o.duration_s for o in hosts] == pytest.approx([150e-6] * len(hosts))
    assert not _host_ops(_plan("model.moe.dispatcher=hybridep", "model.moe.host_sync_us=0"))
    padded = ("model.moe.capacity_factor=1.0", "model.moe.padding=capacity")
    assert not _host_ops(_plan("model.moe.dispatcher=alltoall", "model.moe.host_sync_us=150", *padded))
    # full recomputation repeats the forward, and its dispatch waits again
    recomputed = _host_ops(_plan("model.moe.dispatcher=hybridep", "training.recompute=full"))
    assert sorted({o.name for o in recomputed}) == ["host.fwd-dispatch-sync", "host.rcp-fwd-dispatch-sync"]


def test_what_the_rank_issues_after_the_wait_waits_for_it() -> None:
    plan = _plan("model.moe.dispatcher=hybridep", "num_microbatches=2")
    by_id = {o.id: o for o in plan.ops}
    for h in _host_ops(plan):
        later = sorted((o for o in plan.ops if o.rank == h.rank and o.issue > h.issue), key=lambda o: o.issue)
        first_per_stream: dict[str, object] = {}
        for o in later:
            if o.ordered and o.kind != "host":
                first_per_stream.setdefault(o.stream, o)
        assert first_per_stream
        for o in first_per_stream.values():
            assert h.id in o.deps or any(by_id[d].kind == "host" and by_id[d].issue > h.issue for d in o.deps)
    # one host thread: each wait after the first on a rank follows the one before it
    for r in range(16):
        waits = sorted((o for o in _host_ops(plan) if o.rank == r), key=lambda o: o.issue)
        assert len(waits) == 2 and waits[0].id in waits[1].deps


@pytest.mark.parametrize("us", [300, 3000])
def test_the_gpu_idles_for_the_wait(us: int) -> None:
    graph = load_topology("dgx-h100", nodes=2)
    base = _plan("model.moe.dispatcher=hybridep", "model.moe.host_sync_us=0")
    slow = _plan("model.moe.dispatcher=hybridep", f"model.moe.host_sync_us={us}")
    rb, rs = replay(base, Network(graph)), replay(slow, Network(graph))
    # one forward dispatch on the critical path: the step grows by the wait, all of it idle
    assert rs.step_times_s[0] - rb.step_times_s[0] == pytest.approx(us * 1e-6, rel=0.02)
    for rank in (0, 9):
        b, s = _breakdown(base, rb, rank), _breakdown(slow, rs, rank)
        assert s.compute_s == pytest.approx(b.compute_s)
        assert s.idle_s - b.idle_s == pytest.approx(us * 1e-6, rel=0.05)
    hosts = _host_ops(slow)
    for h in hosts:
        end = rs.op_end[h.id]
        for o in slow.ops:
            if h.id in o.deps:
                assert rs.op_start[o.id] >= end - 1e-12
