"""Sharding the model state inside groups of the data-parallel ranks (``parallelism.dp_replicas``:
Megatron-Core's partial distributed optimizer, ``num_distributed_optimizer_instances``; PyTorch's
hybrid sharding): which ranks reduce-scatter, all-reduce and gather what (hand-counted), the
memory tally's shards, and one-line errors for what cannot be split."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import SpecError, WorkloadError
from netsim.workload.gradients import split_group
from netsim.workload.graph import StepPlan

from .plans import MLA_MOE, plan_digest, small_plan

MODEL: dict[str, Any] = {
    "layers": 4,
    "hidden": 256,
    "ffn_hidden": 512,
    "heads": 8,
    "kv_heads": 8,
    "vocab": 1000,
    "seq_len": 128,
    "activation": "swiglu",
}


def _plan(zero: int, replicas: int | str, model: dict[str, Any] | None = None, **par: Any) -> StepPlan:
    base = {"pp": 1, "tp": 1, "ep": 1, "zero_stage": zero, "sequence_parallel": False, "dp_replicas": replicas}
    return small_plan(model or MODEL, {**base, **par}, "1f1b")  # 2 DGX H100s: DP 16


def test_split_group_is_megatrons_intra_and_inter_instance_groups() -> None:
    group = tuple(range(0, 32, 2))  # 16 members
    assert split_group(group, 10, 4) == ((8, 10, 12, 14), (2, 10, 18, 26))
    assert split_group(group, 0, 1) == (group, group[::16])


@pytest.mark.parametrize("zero", [1, 3])
@pytest.mark.parametrize("replicas", [2, 4])
def test_gradients_reduce_scatter_inside_and_all_reduce_across(zero: int, replicas: int) -> None:
    one, split = _plan(zero, 1), _plan(zero, replicas)
    size = 16 // replicas

    def dp(plan: StepPlan) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for c in plan.collectives.values():
            if c.traffic_class == "dp" and 0 in c.ranks:
                out.setdefault(c.phase, []).append(c)
        return out

    a, b = dp(one), dp(split)
    # the same buckets reduce-scattered, over rank 0's slice: the first `size` DP ranks
    assert [c.nbytes for c in b["grad-reduce-scatter"]] == [c.nbytes for c in a["grad-reduce-scatter"]]
    assert {c.ranks for c in b["grad-reduce-scatter"]} == {tuple(range(size))}
    # then each bucket's shard all-reduced with the ranks at the same place in the other slices
    peers = tuple(range(0, 16, size))
    assert {c.ranks for c in b["grad-replica-all-reduce"]} == {peers}
    assert [c.nbytes for c in b["grad-replica-all-reduce"]] == pytest.approx(
        [c.nbytes / size for c in b["grad-reduce-scatter"]]
    )
    # the all-reduce follows its bucket's reduce-scatter, and the optimizer waits for it
    by_id = {o.id: o for o in split.ops}
    ar = next(o for o in split.ops if o.coll is not None and o.coll.phase == "grad-replica-all-reduce")
    assert any(by_id[d].coll is not None and by_id[d].coll.phase == "grad-reduce-scatter" for d in ar.deps)
    # parameters are gathered inside the slice (ZeRO 1 after the optimizer, ZeRO 3 per layer)
    gathers = [p for p in b if p.endswith("param-gather") or p == "param-all-gather"]
    assert gathers and all({c.ranks for c in b[p]} == {tuple(range(size))} for p in gathers)
    # the state is sharded over the slice: replicas x the optimizer state per rank
    assert split.memory is not None and one.memory is not None
    assert split.memory.ranks[0].optimizer == pytest.approx(replicas * one.memory.ranks[0].optimizer)


def test_per_node_is_one_slice_per_server() -> None:
    """HSDP's usual layout: the state sharded over a server's GPUs, replicated across servers (2
    DGX H100s: DP 16 in 2 slices; with TP 2, DP 8 in 2 slices of 4), the same plan as the number."""
    for zero in (1, 3):
        per_node = _plan(zero, "per-node")
        assert plan_digest(per_node, memory=True) == plan_digest(_plan(zero, 2), memory=True)
    tp2 = _plan(3, "per-node", tp=2)
    assert plan_digest(tp2) == plan_digest(_plan(3, 2, tp=2))
    rs = {c.ranks for c in tp2.collectives.values() if c.phase == "grad-reduce-scatter" and 0 in c.ranks}
    assert rs == {(0, 2, 4, 6)}  # rank 0's slice: the DP ranks of its server


def test_one_replica_is_the_whole_group() -> None:
    plan = _plan(1, 1)
    assert not any(c.phase == "grad-replica-all-reduce" for c in plan.collectives.values())


def test_expert_state_splits_its_own_group() -> None:
    moe = {**MODEL, **MLA_MOE, "heads": 4, "kv_heads": 4}
    plan = _plan(1, 2, model=moe, ep=4)  # expert-DP group: ranks 0, 4, 8, 12 (Megatron's folding)
    edp = [
        c
        for c in plan.collectives.values()
        if c.key[0] in ("dp", "dp-replicas") and c.key[3] == "expert" and 0 in c.ranks
    ]
    rs = {c.ranks for c in edp if c.op == "reduce_scatter"}
    ar = {c.ranks for c in edp if c.op == "all_reduce"}
    assert rs == {(0, 4)} and ar == {(0, 8)}


@pytest.mark.parametrize(
    ("zero", "replicas", "par", "words", "field"),
    [
        (1, 3, {}, "allowed dp_replicas: 1, 2, 4, 8, 16", "parallelism.dp_replicas"),
        (0, 2, {}, "needs zero_stage >= 1", "parallelism"),
        (0, "per-node", {}, "needs zero_stage >= 1", "parallelism"),
        (1, 0, {}, "must be >= 1 or 'per-node'", "parallelism"),
        (1, "per-rack", {}, "per-node", "parallelism.dp_replicas"),
        (1, "per-node", {"dp": 12}, "per-node needs every server to hold an equal run", "parallelism.dp_replicas"),
    ],
)
def test_bad_dp_replicas_is_a_one_line_error(
    zero: int, replicas: int | str, par: dict[str, Any], words: str, field: str
) -> None:
    with pytest.raises((SpecError, WorkloadError)) as info:
        _plan(zero, replicas, **par)
    msg = str(info.value)
    assert words in msg and field in msg and "\n" not in msg
