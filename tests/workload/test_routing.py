"""MoE traffic of a workload: routers, placements and routing traces feed the all-to-all matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netsim.config.workload import load_workload
from netsim.errors import WorkloadError
from netsim.moe.trace import RoutingTrace, TraceMeta, write_routing_trace
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan, build_plan
from netsim.workload.moe_traffic import EPRouting

from ..replay.helpers import FixedCompute

MODEL = {
    "layers": 2,
    "hidden": 64,
    "ffn_hidden": 128,
    "heads": 4,
    "vocab": 100,
    "seq_len": 64,
    "moe": {"experts": 8, "top_k": 1, "every_n": 1},
}


def _plan(sets: list[str] | None = None, **kw: Any) -> StepPlan:
    graph = load_topology("dgx-h100", nodes=1)
    spec = load_workload(
        {
            "model": MODEL,
            "parallelism": {"pp": 1, "tp": 1, "ep": 8, "dp": 8},
            "num_microbatches": 2,
            "storage": {"enabled": False},
        },
        sets or [],
        source="t",
    )
    return build_plan(spec, graph, FixedCompute(1e-3, 2e-3), **kw)


def test_routing_trace_drives_the_dispatch_matrices(tmp_path: Path) -> None:
    # every rank sends all its tokens to expert 3 (on EP rank 3 with the contiguous placement)
    tokens = np.zeros((8, 8), dtype=np.int64)
    tokens[:, 3] = 64
    meta = TraceMeta(experts=8, ep=8, ranks_per_node=8, hidden=64, top_k=1, router="test")
    trace = RoutingTrace.from_counts([(0, ly, 0, tokens, None) for ly in range(2)], meta)
    path = write_routing_trace(trace, tmp_path / "t.parquet")
    plan = _plan(routing_trace=str(path))
    for coll in plan.collectives.values():
        if coll.phase == "fwd-dispatch":
            m = coll.matrix
            assert m is not None
            assert m[:, 3].sum() == pytest.approx(7 * 64 * 64 * 2) and m.sum() == m[:, 3].sum()
            assert coll.local_bytes == pytest.approx(64 * 64 * 2)
    load = {(ly, e): t for _, ly, e, t, _ in plan.expert_load}
    assert load[(0, 3)] == 2 * 8 * 64 and load[(0, 0)] == 0


def _dispatch(seed: int) -> list[np.ndarray]:
    return [
        c.matrix for c in _plan(seed=seed).collectives.values() if c.phase == "fwd-dispatch" and c.matrix is not None
    ]


def test_uniform_router_is_seeded() -> None:
    a, b, c = _dispatch(1), _dispatch(1), _dispatch(2)
    assert len(a) == 2 * 2  # 2 MoE layers x 2 micro-batches, one EP group
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_capacity_factor_drops_tokens() -> None:
    plan = _plan(["model.moe.capacity_factor=0.5"])
    kept = sum(t for *_, t, _ in plan.expert_load)
    dropped = sum(d for *_, d in plan.expert_load)
    assert dropped > 0 and kept + dropped == 2 * 2 * 8 * 64  # layers x micro-batches x ranks x tokens


def test_eplb_with_redundant_experts_and_round_robin() -> None:
    eplb = _plan(["placement.name=eplb", "placement.redundant_experts=8", "router.name=zipf", "router.options.s=1.5"])
    assert eplb.expert_load
    rr = _plan(["placement.name=round-robin"])
    assert any(c.phase == "fwd-dispatch" for c in rr.collectives.values())
    with pytest.raises(WorkloadError, match="placement"):
        _plan(["placement.name=nowhere"])


def test_unknown_router_is_a_workload_error() -> None:
    with pytest.raises(WorkloadError) as exc:
        _plan(["router.name=oracle"])
    assert "uniform" in exc.value.one_line()


def _dispatch_by_mb(**kw: Any) -> dict[tuple[int, int], np.ndarray]:
    return {
        (c.layer, c.microbatch): c.matrix
        for c in _plan(["num_microbatches=4"], **kw).collectives.values()
        if c.phase == "fwd-dispatch" and c.matrix is not None
    }


def test_routing_samples_reuse_samples_across_microbatches() -> None:
    full = _dispatch_by_mb()
    two = _dispatch_by_mb(routing_samples=2)
    assert len(full) == len(two) == 2 * 4
    for layer in (0, 1):
        # micro-batch i reuses sample i mod 2, which is what the full plan routed for i < 2
        for mb in range(4):
            assert np.array_equal(two[(layer, mb)], full[(layer, mb % 2)])
        assert not np.array_equal(full[(layer, 0)], full[(layer, 2)])
    with pytest.raises(WorkloadError, match="routing_samples"):
        _plan(routing_samples=0)


def _replica_plan(*sets: str) -> StepPlan:
    return _plan(["placement.name=eplb", "router.name=zipf", "router.options.s=1.5", "parallelism.ep=4", *sets])


def test_eplb_replicas_all_reduce_their_gradients() -> None:
    # EP 4 over 8 ranks (EDP 2): without redundant experts each expert's gradient is reduced over
    # its EDP pair; with 4 redundant experts, the ranks of an EP group holding copies of one expert
    # then all-reduce their (ZeRO-1) shard of it (issue 18 item 16: DP bytes did not change)
    base, rep = _replica_plan(), _replica_plan("placement.redundant_experts=4")
    phase = "replica-grad-all-reduce"
    assert phase not in {c.phase for c in base.collectives.values()}
    syncs = [c for c in rep.collectives.values() if c.phase == phase]
    assert syncs
    shard = 3 * 64 * 128 * 4 / 2  # SwiGLU expert: 3 matrices of hidden x ffn, fp32, over EDP 2
    for c in syncs:
        assert c.op == "all_reduce" and c.nbytes == shard and 2 <= len(c.ranks) <= 4
        assert len({rep.layout.ep_coords(r)[0] for r in c.ranks}) == 1  # inside one EP group
    dp = {
        n: sum(c.nbytes * len(c.ranks) for c in p.collectives.values() if c.traffic_class == "dp")
        for n, p in (("base", base), ("rep", rep))
    }
    assert dp["rep"] > dp["base"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["placement.options.policy=fancy"],
            "placement.options.policy: unknown EPLB policy 'fancy'; allowed: auto, hierarchical, global",
        ),
        (
            ["placement.options.colour=red"],
            "placement.options.colour: unknown option 'colour' of placement eplb; "
            "allowed: replica_policy, num_groups, policy",
        ),
        (
            ["placement.options.replica_policy=nearest"],
            "placement.options.replica_policy: replica_policy splits tokens over an expert's replicas",
        ),
        (
            ["placement.name=contiguous", "placement.options.policy=global"],
            "placement.options.policy: unknown option 'policy' of placement contiguous; allowed: none",
        ),
        (
            ["placement.name=eplb_global", "placement.options.policy=global"],
            "placement.options.policy: unknown option 'policy' of placement eplb_global",
        ),
    ],
)
def test_placement_options_are_checked(sets: list[str], message: str) -> None:
    with pytest.raises(WorkloadError, match=message) as exc:
        _replica_plan(*sets)
    assert "\n" not in exc.value.one_line()


def test_eplb_policy_option_selects_the_policy() -> None:
    # 4 expert groups over 2 nodes: auto picks the hierarchical policy; options.policy=global is
    # the global one (what the name eplb_global selects); it used to be ignored
    def placement(*sets: str) -> list[int]:
        spec = load_workload(
            {"model": MODEL, "parallelism": {"ep": 4}},
            [
                "placement.name=eplb",
                "router.name=zipf",
                "router.options.s=1.5",
                "placement.redundant_experts=4",
                "placement.options.num_groups=4",
                *sets,
            ],
            source="t",
        )
        return EPRouting(spec, ep=4, tokens_per_rank=64, rank_node=[0, 0, 1, 1], seed=0).placements[0].phy2log.tolist()

    assert placement("placement.options.policy=global") == placement("placement.name=eplb_global")
    assert placement("placement.options.policy=global") != placement()
    assert placement("placement.options.policy=hierarchical") == placement()


def test_replica_all_reduces_replay_alike_under_lockstep() -> None:
    from netsim.network.engine import Network
    from netsim.replay import replay

    sets = [
        "placement.name=eplb",
        "router.name=zipf",
        "router.options.s=1.5",
        "parallelism.ep=4",
        "placement.redundant_experts=4",
    ]
    graph = load_topology("dgx-h100", nodes=1)
    dp = {}
    for lock in (False, True):
        plan = _plan(sets, lockstep=lock)
        net = Network(graph, routing="shortest")
        replay(plan, net)  # every replica all-reduce finds all its members (no deadlock)
        flows = net.flow_records()
        dp[lock] = float(flows.loc[flows["traffic_class"] == "dp", "bytes"].sum())
    assert dp[True] == pytest.approx(dp[False])
