"""SMs held in flight (netsim.replay): a collective with an ``sm_share`` slows the SM-bound part of
the compute running beside it on the same rank, for exactly as long as it is in flight; the
expert all-to-alls take ``overlap.ep_comm_sms`` of the accelerator's SMs."""

from __future__ import annotations

import pytest

from netsim.collectives.nccl.p2p import P2pChannels
from netsim.collectives.setup import nccl_cost
from netsim.errors import SpecError
from netsim.network.engine import Network
from netsim.replay import replay
from netsim.topology import load_topology
from netsim.workload.plan import Collective, Op, StepPlan

from .conftest import replay as replay_scenario
from .conftest import tiny_scenario


def _plan(compute_s: float, sm_share: float, held: float, hold_s: float, *, other_rank: bool = False) -> StepPlan:
    """Rank 0 computes for ``compute_s`` (``sm_share`` of it SM-bound) while a barrier of ranks 0
    and 1 holding ``held`` of their SMs lasts ``hold_s`` (the compute on rank 2, outside the
    barrier, when ``other_rank``)."""
    coll = Collective(("b",), "barrier", (0, 1), 0.0, "", "b", duration_s=hold_s, sm_share=held)
    ops = [
        Op(0, 0, 0, "comm", "c", "b0", coll=coll, ordered=False),
        Op(1, 1, 0, "comm", "c", "b1", coll=coll, ordered=False),
        Op(2, 2 if other_rank else 0, 0, "compute", "compute", "x", duration_s=compute_s, sm_share=sm_share),
    ]
    done = Collective(("end",), "barrier", (0, 1, 2), 0.0, "", "end")
    ops += [Op(3 + r, r, 0, "barrier", "sync", f"e{r}", deps=[0, 1, 2], coll=done, ordered=False) for r in range(3)]
    return StepPlan(steps=1, ops=ops, collectives={("b",): coll, ("end",): done}, devices=("n0.g0", "n0.g1", "n0.g2"))


def _end(plan: StepPlan) -> float:
    net = Network(load_topology("dgx-h100", nodes=1), routing="shortest")
    return float(replay(plan, net).op_end[2])


def test_compute_slows_while_the_collective_holds_sms() -> None:
    # half the SMs held for 0.5 s: the SM-bound op does 0.25 s of its work meanwhile, the rest after
    assert _end(_plan(1.0, 1.0, 0.5, 0.5)) == pytest.approx(1.25)
    # only 40% of it SM-bound: (0.6 + 0.4 / 0.5) per second of work while held
    assert _end(_plan(1.0, 0.4, 0.5, 0.5)) == pytest.approx(0.5 + (1.0 - 0.5 / 1.4))
    # the collective outlasts the op: the whole op runs slow
    assert _end(_plan(1.0, 1.0, 0.25, 5.0)) == pytest.approx(1.0 / 0.75)
    # nothing held, an op with no SM-bound kernels, or the SMs held on another rank: as planned
    assert _end(_plan(1.0, 1.0, 0.0, 0.5)) == pytest.approx(1.0)
    assert _end(_plan(1.0, 0.0, 0.5, 0.5)) == pytest.approx(1.0)
    assert _end(_plan(1.0, 1.0, 0.5, 0.5, other_rank=True)) == pytest.approx(1.0)


def _with_overlap(**overlap: object) -> dict[str, object]:
    """The tiny scenario with ``overlap`` settings; its NCCL TP collectives hold no SMs, so that
    only the expert all-to-alls do (their own test: tests/replay/test_tp_blocks.py)."""
    sc = tiny_scenario()
    ov = {**sc["workload"].get("overlap", {}), "nccl_sms": {"tp": 0, "dp": 0, "pp": 0, "cp": 0}, **overlap}
    sc["workload"] = {**sc["workload"], "overlap": ov}
    return sc


def _two_holds(classes: tuple[str, str], held: float) -> float:
    """Rank 0 computes 1 s (all SM-bound) while two collectives of ``classes`` hold ``held`` each
    for the first 0.5 s; when rank 0's compute ends."""
    colls = [
        Collective((c, i), "barrier", (0, 1), 0.0, c, c, duration_s=0.5, sm_share=held) for i, c in enumerate(classes)
    ]
    ops = [
        Op(2 * i + r, r, 0, "comm", f"c{i}", f"b{i}{r}", coll=c, ordered=False)
        for i, c in enumerate(colls)
        for r in (0, 1)
    ]
    ops.append(Op(4, 0, 0, "compute", "compute", "x", duration_s=1.0, sm_share=1.0))
    plan = StepPlan(steps=1, ops=ops, collectives={c.key: c for c in colls}, devices=("n0.g0", "n0.g1"))
    net = Network(load_topology("dgx-h100", nodes=1), routing="shortest")
    return float(replay(plan, net).op_end[4])


def test_one_class_holds_its_largest_share_classes_add_up() -> None:
    """Collectives of one class share a communicator stream whose kernels run one at a time."""
    assert _two_holds(("ep", "ep"), 0.25) == pytest.approx(0.5 + (1.0 - 0.5 * 0.75))
    assert _two_holds(("ep", "dp"), 0.25) == pytest.approx(1.25)


def test_expert_all_to_alls_hold_the_sms_they_are_given() -> None:
    prep0, _, s0 = replay_scenario(_with_overlap(ep_comm_sms=0))
    prep1, _, s1 = replay_scenario(_with_overlap(ep_comm_sms=32))
    # the all-to-alls (not the token-count all-gathers of Megatron's dispatcher, phase *-meta)
    ep = [c for c in prep1.plan.collectives.values() if c.traffic_class == "ep" and not c.phase.endswith("-meta")]
    assert ep and all(c.sm_share == pytest.approx(32 / 132) for c in ep)
    assert all(c.sm_share == 0.0 for c in prep1.plan.collectives.values() if c.traffic_class != "ep")
    comp = [o for o in prep1.plan.ops if o.kind == "compute"]
    assert all(0.0 <= o.sm_share <= 1.0 for o in comp) and max(o.sm_share for o in comp) > 0.5
    assert all(o.sm_share == 0.0 for o in prep0.plan.ops)  # not tracked when nothing holds SMs
    # the same plan otherwise; the step can only grow
    assert [o.duration_s for o in prep0.plan.ops] == [o.duration_s for o in prep1.plan.ops]
    assert s1["step_time_s"] >= s0["step_time_s"]


def test_nccl_all_to_alls_hold_the_thread_blocks_of_their_kernel() -> None:
    """Unset, an NCCL dispatcher's all-to-alls hold one SM per thread block NCCL's channel rule
    gives the EP communicator at the call's size; DeepEP's kernels hold DeepEP's default 20 SMs
    unless given, or none when the whole-step ``comm_sms`` already reserves them."""
    prep, _, s = replay_scenario(_with_overlap())
    _, _, s0 = replay_scenario(_with_overlap(ep_comm_sms=0))
    ep = [c for c in prep.plan.collectives.values() if c.traffic_class == "ep" and not c.phase.endswith("-meta")]
    cost = nccl_cost(prep.graph)
    for c in ep:
        n = len(c.ranks)
        rule = cost.p2p_rule([prep.plan.layout.devices[r] for r in c.ranks])
        ctas = rule.kernel_ctas(c.nbytes / (n * (n - 1)), n - 1)
        assert 0 < ctas <= rule.pool_channels and c.sm_share == pytest.approx(ctas / 132)
    assert any(o.sm_share > 0 for o in prep.plan.ops if o.kind == "compute")
    assert s["step_time_s"] >= s0["step_time_s"]

    def deepep(**overlap: object) -> list[Collective]:
        sc = _with_overlap(**overlap)
        moe = {**sc["workload"]["model"]["moe"], "dispatcher": "deepep"}
        sc["workload"] = {**sc["workload"], "model": {**sc["workload"]["model"], "moe": moe}}
        prep_d, _, _ = replay_scenario(sc)
        return list(prep_d.plan.collectives.values())

    held = [c.sm_share for c in deepep() if c.traffic_class == "ep"]
    assert held and held == pytest.approx([20 / 132] * len(held))  # deep_ep Buffer.num_sms
    assert all(c.sm_share == 0.0 for c in deepep() if c.traffic_class != "ep")
    assert all(c.sm_share == 0.0 for c in deepep(ep_comm_sms=0))
    assert all(c.sm_share == 0.0 for c in deepep(comm_sms=20))  # reserved for the whole step instead


def test_an_all_to_all_kernel_runs_on_the_communicators_p2p_channels() -> None:
    """NCCL's grid for a grouped call: one block per channel with a part, at most the pool."""
    rule = P2pChannels(1, 4, 65536, 131072, 20.2e9, 16384.0, pool_channels=16)
    assert rule.kernel_ctas(16e6 / 32, 31) == 16  # 4 channels per peer, 31 peers: the whole pool
    assert rule.kernel_ctas(1e3, 3) == 3  # one part per peer
    assert rule.kernel_ctas(1e6, 0) == 0


def test_errors_name_the_field() -> None:
    sc = tiny_scenario()
    sc["workload"] = {**sc["workload"], "overlap": {"ep_comm_sms": 132}}
    with pytest.raises(SpecError, match=r"overlap\.ep_comm_sms") as info:
        replay_scenario(sc)
    assert "132" in str(info.value) and "\n" not in str(info.value)
