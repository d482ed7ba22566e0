"""Parallel layout, rank placement and the op graph (pure data, no simulation)."""

from __future__ import annotations

from collections import Counter

import pytest

from netsim.config.workload import load_workload
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan, build_plan, split_layers
from netsim.workload.layout import build_layout

from ..replay.helpers import FixedCompute


def test_groups_partition_the_ranks_and_tp_stays_inside_a_server() -> None:
    graph = load_topology("dgx-h100", nodes=4)
    spec = load_workload("mixtral-8x7b", ["parallelism.tp=2", "parallelism.pp=2", "parallelism.ep=4"])
    L = build_layout(spec, graph)
    assert (L.world, L.dp, L.pp, L.tp, L.ep) == (32, 8, 2, 2, 4)
    for kind in ("tp_group", "dp_group", "ep_group", "expert_dp_group", "pp_group"):
        groups = {getattr(L, kind)(r) for r in range(L.world)}
        assert sorted(r for g in groups for r in g) == list(range(L.world)), kind
    assert all(len({L.nodes[r] for r in L.tp_group(r0)}) == 1 for r0 in range(L.world))
    assert all(len({L.nodes[r] for r in L.ep_group(r0)}) == 1 for r0 in range(L.world))
    assert L.nodes[L.rank_of(0, 0, 0)] != L.nodes[L.rank_of(1, 0, 0)]  # stages on different servers
    assert L.expert_dp_group(0) == (0, 4, 8, 12)


def test_round_robin_and_explicit_device_placement() -> None:
    graph = load_topology("dgx-h100", nodes=2)
    rr = build_layout(load_workload("gpt-dense", ["device_placement.policy=round-robin"]), graph)
    assert rr.devices[:3] == ("n0.g0", "n1.g0", "n0.g1")
    devs = [f"n{k}.g{i}" for i in range(8) for k in (1, 0)]
    ex = build_layout(load_workload("gpt-dense", [f"device_placement.devices={devs}"]), graph)
    assert list(ex.devices) == devs


def test_split_layers() -> None:
    assert split_layers(61, 16)[0] == [0, 1, 2] and [len(b) for b in split_layers(61, 16)].count(4) == 13
    assert split_layers(4, 4) == [[0], [1], [2], [3]]


def test_explicit_pipeline_layers_set_each_blocks_layers() -> None:
    """``parallelism.pipeline_layers`` puts its counts of layers on the pipeline blocks, in order;
    a count list that does not fit the blocks or the model is a one-line error naming the field."""
    graph = load_topology("dgx-h100", nodes=2)
    base = ["model.layers=8", "parallelism.pp=4", "parallelism.tp=4"]
    even = build_plan(load_workload("gpt-dense", base), graph, FixedCompute(1e-3, 2e-3))
    plan = build_plan(
        load_workload("gpt-dense", [*base, "parallelism.pipeline_layers=[1, 3, 3, 1]"]), graph, FixedCompute(1e-3, 2e-3)
    )

    def layers_of_stage(p: StepPlan) -> list[set[int]]:
        out: list[set[int]] = [set() for _ in range(4)]
        for op in p.ops:
            if op.kind == "compute" and op.layer >= 0:
                out[p.layout.coords(op.rank)[0]].add(op.layer)
        return out

    assert layers_of_stage(even) == [{0, 1}, {2, 3}, {4, 5}, {6, 7}]
    assert layers_of_stage(plan) == [{0}, {1, 2, 3}, {4, 5, 6}, {7}]
    for bad, says in (
        ("[2, 2, 4]", "one count per pipeline block (4"),
        ("[2, 2, 2, 1]", "add up to model.layers = 8"),
        ("[4, 0, 2, 2]", "only the first and the last block may hold no layer"),
    ):
        with pytest.raises(Exception, match=r"parallelism\.pipeline_layers") as err:
            build_plan(
                load_workload("gpt-dense", [*base, f"parallelism.pipeline_layers={bad}"]),
                graph,
                FixedCompute(1e-3, 2e-3),
            )
        assert says in str(err.value)


def _tiny_plan(**sets: str) -> StepPlan:
    graph = load_topology("dgx-h100", nodes=2)
    over = [f"{k}={v}" for k, v in sets.items()]
    spec = load_workload(
        {
            "model": {
                "layers": 2,
                "hidden": 256,
                "ffn_hidden": 512,
                "heads": 4,
                "vocab": 1000,
                "seq_len": 128,
                "moe": {"experts": 16, "top_k": 2, "every_n": 2},
            },
            "parallelism": {"pp": 2, "tp": 2, "ep": 8, "zero_stage": 0},
            "num_microbatches": 4,
            "grad_bucket_bytes": "1MB",
        },
        over,
        source="t",
    )
    return build_plan(spec, graph, FixedCompute(1e-3, 2e-3))


def test_op_graph_counts() -> None:
    plan = _tiny_plan()
    names = Counter(o.name for o in plan.ops)
    L, m = plan.layout, plan.schedule.m
    stage_ranks = L.stage_size
    # one MoE layer (layer 1, on stage 1): 4 all-to-alls per micro-batch on every rank of stage 1
    for phase in ("fwd-dispatch", "fwd-combine", "bwd-dispatch", "bwd-combine"):
        assert names[f"ep.{phase}"] == m * stage_ranks
    # pipeline: each micro-batch's activation and gradient once, each side an op
    assert names["pp.send.act"] == names["pp.recv.act"] == m * stage_ranks
    assert names["pp.send.grad"] == names["pp.recv.grad"] == m * stage_ranks
    # DP gradients: the all-reduced bytes per rank equal its parameters (4-byte gradients); with
    # ep = 4 the expert gradients are reduced too (expert-DP group of 2)
    plan = _tiny_plan(**{"parallelism.ep": "4"})
    for rank in (0, L.world - 1):
        dp_bytes = sum(o.coll.nbytes for o in plan.ops if o.rank == rank and o.traffic_class == "dp" and o.coll)
        assert dp_bytes == pytest.approx(plan.params_per_rank[rank] * 4)
    assert names["step.barrier"] == L.world


def test_overlap_slices_split_the_all_to_all() -> None:
    one = _tiny_plan()
    four = _tiny_plan(**{"overlap.ep_overlap_slices": "4"})
    # the all-to-alls (the token-count all-gather before each forward dispatch is not sliced)
    ep1 = [c for c in one.collectives.values() if c.traffic_class == "ep" and not c.phase.endswith("-meta")]
    ep4 = [c for c in four.collectives.values() if c.traffic_class == "ep" and not c.phase.endswith("-meta")]
    assert len(ep4) == 4 * len(ep1)
    assert sum(c.nbytes for c in ep4) == pytest.approx(sum(c.nbytes for c in ep1))


def test_zero_stages_change_the_dp_collectives() -> None:
    z0 = Counter(o.name for o in _tiny_plan().ops)
    z1 = Counter(o.name for o in _tiny_plan(**{"parallelism.zero_stage": "1"}).ops)
    z3 = Counter(o.name for o in _tiny_plan(**{"parallelism.zero_stage": "3"}).ops)
    assert z0["dp.grad-all-reduce"] > 0 and z0["dp.param-all-gather"] == 0
    assert z1["dp.grad-reduce-scatter"] == z0["dp.grad-all-reduce"] == z1["dp.param-all-gather"]
    assert z3["dp.fwd-param-gather"] > 0 and z3["dp.bwd-param-gather"] > 0


def test_no_dp_overlap_moves_the_reduction_after_the_backward() -> None:
    plan = _tiny_plan(**{"overlap.dp_overlap_backward": "false"})
    for rank in range(plan.layout.world):
        ops = [o for o in plan.ops if o.rank == rank]
        last_bwd = max(o.issue for o in ops if o.kind == "compute" and o.name.startswith("BW"))
        first_dp = min(o.id for o in ops if o.traffic_class == "dp")
        assert all(
            o.issue <= last_bwd or o.id >= first_dp for o in ops if o.kind == "compute" and o.name != "optimizer"
        )
        dp_deps = {d for o in ops if o.traffic_class == "dp" for d in o.deps}
        assert max(plan.ops[d].issue for d in dp_deps if plan.ops[d].rank == rank) >= last_bwd


def test_recompute_num_layers_recomputes_the_first_layers_of_every_block() -> None:
    """Megatron's block method: with ``recompute_num_layers: 1`` and two layers per pipeline
    block only the first layer of each block re-runs its forward (``R.*`` ops), and the memory
    lies between no and full recomputation; without ``recompute: full`` it is a one-line error."""
    graph = load_topology("dgx-h100", nodes=2)
    base = ["model.layers=8", "parallelism.pp=4", "parallelism.tp=4"]

    def plan(*sets: str) -> StepPlan:
        return build_plan(load_workload("gpt-dense", [*base, *sets]), graph, FixedCompute(1e-3, 2e-3))

    full = plan("training.recompute=full")
    part = plan("training.recompute=full", "training.recompute_num_layers=1")
    none = plan("training.recompute=none")

    def redone(p: StepPlan) -> set[int]:
        return {o.layer for o in p.ops if o.kind == "compute" and o.name.startswith("R.")}

    assert redone(full) == set(range(8)) and redone(part) == {0, 2, 4, 6} and not redone(none)

    def peak(p: StepPlan) -> float:
        return max(r.total for r in p.memory.ranks)

    assert peak(full) < peak(part) < peak(none)
    with pytest.raises(Exception, match=r"training\.recompute_num_layers") as err:
        plan("training.recompute=selective", "training.recompute_num_layers=1")
    assert "needs training.recompute full" in str(err.value)
