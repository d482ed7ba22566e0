"""Exact pipeline timings on a hand-built topology with fixed compute times."""

from __future__ import annotations

import pytest

from netsim.network.engine import Network
from netsim.replay import rank_breakdown, replay
from netsim.workload.graph import build_plan

from .helpers import FixedCompute, chain_topology, dense_pipeline


def _run(pp: int, m: int, capacity_Bps: float, schedule: str = "1f1b", fwd_s: float = 1.0, bwd_s: float = 2.0):
    graph = chain_topology(pp, capacity_Bps)
    plan = build_plan(dense_pipeline(pp, m, schedule=schedule), graph, FixedCompute(fwd_s, bwd_s))
    res = replay(plan, Network(graph, routing="shortest"))
    return plan, res


def test_two_stages_two_microbatches_by_hand() -> None:
    # F = 1 s, B = 2 s per stage; every activation / gradient message takes 1 s (1e6 B at 1e6 B/s).
    # stage 0: F0 [0,1] F1 [1,2]          B0 [6,8]   B1 [9,11]
    # stage 1:        F0 [2,3] B0 [3,5] F1 [5,6] B1 [6,8]
    # messages: a0 [1,2], a1 [2,3], g0 [5,6], g1 [8,9]  ->  step = 11 s
    plan, res = _run(2, 2, 1e6)
    assert res.step_times_s == [pytest.approx(11.0, abs=1e-9)]
    names = {(o.rank, o.name, o.microbatch): (res.op_start[o.id], res.op_end[o.id]) for o in plan.ops}
    assert names[(0, "BW.attn", 1)] == pytest.approx((9.0, 11.0))
    assert names[(1, "F.attn", 1)] == pytest.approx((5.0, 6.0))
    assert names[(0, "pp.recv.grad", 0)] == pytest.approx((5.0, 6.0))


@pytest.mark.parametrize(("pp", "m"), [(2, 4), (4, 8), (4, 4)])
def test_1f1b_bubble_fraction_with_free_communication(pp: int, m: int) -> None:
    plan, res = _run(pp, m, 1e18)
    step = res.step_times_s[0]
    assert step == pytest.approx((m + pp - 1) * 3.0, rel=1e-9)
    for rank in range(pp):
        compute = [(res.op_start[o.id], res.op_end[o.id]) for o in plan.ops if o.rank == rank and o.kind == "compute"]
        bd = rank_breakdown((0.0, step), compute, {})
        assert bd.idle_s / step == pytest.approx((pp - 1) / (m + pp - 1), rel=1e-9)


def test_gpipe_and_1f1b_have_the_same_bubble() -> None:
    _, a = _run(4, 8, 1e18, "gpipe")
    _, b = _run(4, 8, 1e18, "1f1b")
    assert a.step_times_s[0] == pytest.approx(b.step_times_s[0], rel=1e-9)


def test_interleaving_shrinks_the_bubble() -> None:
    pp, m, v = 2, 4, 2
    graph = chain_topology(pp, 1e18)
    comp = FixedCompute(0.5, 1.0)  # one layer per virtual stage, 2 layers per stage: F = 1, B = 2 per stage
    spec = dense_pipeline(pp, m, layers=pp * v, schedule="interleaved-1f1b")
    spec = spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"virtual_chunks": v})})
    res = replay(build_plan(spec, graph, comp), Network(graph, routing="shortest"))
    ideal = m * 3.0
    bubble = res.step_times_s[0] - ideal
    assert bubble == pytest.approx((pp - 1) * 3.0 / v, rel=1e-9)


def test_dualpipe_runs_and_every_microbatch_is_computed() -> None:
    pp, m = 4, 8
    graph = chain_topology(pp, 1e9)
    plan = build_plan(dense_pipeline(pp, m, schedule="dualpipe"), graph, FixedCompute(1.0, 2.0))
    res = replay(plan, Network(graph, routing="shortest"))
    assert res.step_times_s[0] > m * 3.0  # at least the work of one rank
    for rank in range(pp):
        done = {(o.name, o.microbatch) for o in plan.ops if o.rank == rank and o.kind == "compute"}
        assert {mb for n, mb in done if n == "F.attn"} == set(range(m))
        assert {mb for n, mb in done if n in ("BW.attn", "B.attn")} == set(range(m))


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_recomputation_lengthens_every_backward_by_a_forward(mode: str) -> None:
    # the two-stage case above with the attention's forward (1 s) re-run before each backward (2 s):
    # stage 1: F0 [2,3] R+B0 [3,6] F1 [6,7] R+B1 [7,10]; gradients g0 [6,7], g1 [10,11];
    # stage 0: F0 [0,1] F1 [1,2] R+B0 [7,10] R+B1 [11,14]  ->  step = 14 s
    graph = chain_topology(2, 1e6)
    spec = dense_pipeline(2, 2, training={"recompute": mode})
    plan = build_plan(spec, graph, FixedCompute(1.0, 2.0))
    res = replay(plan, Network(graph, routing="shortest"))
    assert res.step_times_s == [pytest.approx(14.0, abs=1e-9)]
    name = "R.attn-core" if mode == "selective" else "R.attn"
    rc = {(o.rank, o.microbatch): (res.op_start[o.id], res.op_end[o.id]) for o in plan.ops if o.name == name}
    assert rc[(0, 1)] == pytest.approx((11.0, 12.0)) and rc[(1, 0)] == pytest.approx((3.0, 4.0))


class _SplitCompute(FixedCompute):
    """F = B = W = 1 s per layer: the attention kernel takes 1 s forward, the four GEMMs of a layer
    0.5 s backward each (half to B, half to W when the backward is split: 1 s each); the LM head's
    GEMM (n = vocab = 1000) and everything else take no time."""

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        if kernel == "gemm":
            return 0.5 if pass_ == "bwd" and shape.get("n") != 1000 else 0.0
        return 1.0 if kernel == "attention" and pass_ == "fwd" else 0.0


@pytest.mark.parametrize(("pp", "m"), [(2, 2), (4, 8), (4, 4)])
def test_zb_h1_bubble_is_a_third_of_1f1b(pp: int, m: int) -> None:
    # T_F = T_B = T_W = 1 s and free communication: 1F1B takes (m + p - 1) 3 s; ZB-H1 (Qi et al.,
    # arXiv 2401.10241, section 2.1) 3m + (p - 1)(F + B - 2W) = 3m + (p - 1) s (REFERENCE.md, section 4)
    graph = chain_topology(pp, 1e18)
    steps = {}
    for name in ("1f1b", "zb-h1"):
        plan = build_plan(dense_pipeline(pp, m, schedule=name), graph, _SplitCompute(1.0, 1.0))
        steps[name] = replay(plan, Network(graph, routing="shortest")).step_times_s[0]
        assert {o.name for o in plan.ops if o.kind == "compute"} >= (
            {"W.layer", "B.mlp"} if name == "zb-h1" else {"BW.mlp"}
        )
    assert steps["1f1b"] == pytest.approx((m + pp - 1) * 3.0, rel=1e-9)
    assert steps["zb-h1"] == pytest.approx(3.0 * m + (pp - 1), rel=1e-9)
