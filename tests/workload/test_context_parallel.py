"""Context parallelism (``parallelism.cp``, netsim.workload.context_parallel): the rank layout,
the per-rank tokens and attention FLOPs, the K/V ring's exchanges (hand-counted bytes), the
gradient group over ``dp * cp``, the memory tally, and one-line errors for what CP cannot do."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.catalogue import get_kernel
from netsim.config.workload import load_workload
from netsim.errors import SpecError, WorkloadError
from netsim.topology import load_topology
from netsim.workload.costs import ModelCosts
from netsim.workload.graph import StepPlan, build_plan

from .plans import MLA_MOE, ShapeCompute, small_plan

MODEL: dict[str, Any] = {
    "layers": 4,
    "hidden": 256,
    "ffn_hidden": 512,
    "heads": 8,
    "kv_heads": 2,
    "vocab": 1000,
    "seq_len": 128,
    "activation": "swiglu",
}
PAR: dict[str, Any] = {"pp": 2, "tp": 2, "ep": 1, "zero_stage": 1, "sequence_parallel": True}


def _plan(cp: int, *sets: str, model: dict[str, Any] | None = None, **par: Any) -> StepPlan:
    return small_plan(model or MODEL, {**PAR, "cp": cp, **par}, "1f1b", *sets)


def test_layout_puts_cp_between_tp_and_dp() -> None:
    L = _plan(2).layout  # 16 GPUs: TP 2, CP 2, DP 2, PP 2
    assert (L.tp, L.cp, L.dp, L.pp, L.world) == (2, 2, 2, 2, 16)
    # Megatron's order tp-cp-dp-pp: rank = pp * 8 + (dp * 2 + cp) * 2 + tp
    assert L.cp_group(0) == (0, 2) and L.cp_group(1) == (1, 3) and L.cp_group(5) == (5, 7)
    assert L.cp_group(9) == (9, 11)
    # gradients are reduced over dp * cp ranks of the same stage and TP rank
    assert L.dp_group(0) == (0, 2, 4, 6) and L.dp_group(9) == (9, 11, 13, 15)
    assert L.tp_group(2) == (2, 3)


def test_costs_hold_the_ranks_share_of_the_sequence() -> None:
    spec = load_workload({"model": MODEL}, source="t").model
    one, two = ModelCosts(spec, 1, 2), ModelCosts(spec, 1, 2, cp=2)
    assert (one.tokens, two.tokens) == (128, 64) and (one.sp_tokens, two.sp_tokens) == (64, 32)
    # the core: 1/cp of the sequence's causal FLOPs, as cp calls of seq / cp
    att = get_kernel("attention")
    f1 = sum(att.flops(att.check_shape(dict(c.shape)), "fwd") for c in one.attention_core("F"))
    f2 = sum(att.flops(att.check_shape(dict(c.shape)), "fwd") for c in two.attention_core("F"))
    assert f2 == pytest.approx(f1 / 2)
    assert dict(two.attention_core("F")[0].shape)["seq"] == 64
    # K and V of the rank's 64 tokens: 2 x (2 KV heads / TP 2) x head dim 32 x 2 bytes
    assert two.cp_kv_bytes == 64 * 2 * 1 * 32 * 2
    # the block is the same kernels cut in three
    assert [*two.attention_pre("BW"), *two.attention_core("BW"), *two.attention_post("BW")] != []
    comp = ShapeCompute()
    whole = sum(k.time_s(comp, "bf16") for k in two.attention("BW"))
    parts = sum(k.time_s(comp, "bf16") for p in ("pre", "post") for k in getattr(two, f"attention_{p}")("BW"))
    parts += sum(k.time_s(comp, "bf16") for k in two.attention_core("BW"))
    assert parts == pytest.approx(whole)


@pytest.mark.parametrize("cp", [2, 4])
def test_ring_exchanges_count_and_bytes(cp: int) -> None:
    plan = _plan(cp, "training.recompute=selective")
    L, costs_kv = plan.layout, 128 // cp * 2 * 1 * 32 * 2
    ring = [c for c in plan.collectives.values() if c.traffic_class == "cp"]
    assert all(c.op == "sendrecv" and len(c.ranks) == cp for c in ring)
    mb, layers_per_stage = 4, 2
    groups = L.world // cp
    by_phase: dict[str, list[float]] = {}
    for c in ring:
        by_phase.setdefault(c.phase, []).append(c.nbytes)
    # forward and its selective recomputation: cp - 1 K/V; backward: K/V, (K/V + dK/dV) x (cp - 2), dK/dV
    per_core = {"fwd-cp": (cp - 1) * costs_kv, "rcp-fwd-cp": (cp - 1) * costs_kv, "bwd-cp": 2 * (cp - 1) * costs_kv}
    n = {"fwd-cp": cp - 1, "rcp-fwd-cp": cp - 1, "bwd-cp": cp}
    assert set(by_phase) == set(per_core)
    for phase, sizes in by_phase.items():
        cores = mb * layers_per_stage * groups
        assert len(sizes) == cores * n[phase]
        assert sum(sizes) == pytest.approx(cores * per_core[phase])
    # the core runs beside its exchanges: the output projection waits for both
    by_id = {o.id: o for o in plan.ops}
    post = next(o for o in plan.ops if o.name == "F.attn-post")
    kinds = {by_id[d].name.split(".")[0] if by_id[d].kind == "compute" else by_id[d].kind for d in post.deps}
    assert "F" in kinds and len(post.deps) == 2


def test_no_cp_plan_is_unchanged_by_the_split() -> None:
    # cp = 1 keeps the single attention op and no ring
    plan = _plan(1)
    assert any(o.name == "F.attn" for o in plan.ops)
    assert not any(o.name.startswith("F.attn-") for o in plan.ops)
    assert not any(c.traffic_class == "cp" for c in plan.collectives.values())


def test_cp_halves_what_a_rank_computes_and_stores() -> None:
    one, two = _plan(1, dp=2), _plan(2, dp=1)  # 8 ranks each
    assert one.layout.world == two.layout.world == 8

    def mlp_time(p: StepPlan) -> float:
        return sum(o.duration_s for o in p.ops if o.rank == 0 and o.name == "F.mlp")

    # ShapeCompute is affine in the shape: the GEMMs' m and the norms' tokens halve
    assert mlp_time(two) < mlp_time(one)
    assert one.memory is not None and two.memory is not None
    a1, a2 = one.memory.ranks[0].activations, two.memory.ranks[0].activations
    assert a2 == pytest.approx(a1 / 2, rel=1e-9)
    # the gradient group is dp * cp ranks in both (2 replicas of 1 rank, 1 replica of 2 CP ranks):
    # the optimizer state is sharded alike
    assert one.layout.dp_group(0) == two.layout.dp_group(0) == (0, 2)
    assert two.memory.ranks[0].optimizer == pytest.approx(one.memory.ranks[0].optimizer)


def test_moe_with_cp_ties_cp_groups_into_lockstep_units() -> None:
    moe = {**MODEL, **MLA_MOE, "heads": 4}
    spec = load_workload(
        {
            "model": moe,
            "parallelism": {"pp": 1, "tp": 1, "cp": 2, "ep": 4, "zero_stage": 1, "sequence_parallel": False},
            "num_microbatches": 2,
        },
        source="t",
    )
    graph = load_topology("dgx-h100", nodes=2)
    exact = build_plan(spec, graph, ShapeCompute())
    lock = build_plan(spec, graph, ShapeCompute(), lockstep=True)
    ring_exact = sum(c.nbytes for c in exact.collectives.values() if c.traffic_class == "cp")
    ring_lock = sum(c.nbytes for c in lock.collectives.values() if c.traffic_class == "cp")
    assert ring_exact > 0 and ring_lock == pytest.approx(ring_exact)  # every byte still sent


@pytest.mark.parametrize(
    ("sets", "par", "words"),
    [
        (("model.seq_len=102",), {}, "must be a multiple of 2 * cp = 4"),
        (("training.flash_attention=false",), {}, "cp > 1 needs training.flash_attention: true"),
        ((), {"expert_layout": "deepspeed"}, "cp > 1 needs parallelism.expert_layout megatron"),
        ((), {"dp": 4}, "dp * pp * tp * cp = 4 * 2 * 2 * 2 = 32 ranks"),
    ],
)
def test_bad_cp_is_a_one_line_error(sets: tuple[str, ...], par: dict[str, Any], words: str) -> None:
    with pytest.raises(WorkloadError) as info:
        _plan(2, *sets, **par)
    msg = str(info.value)
    assert "parallelism" in msg and words in msg and "\n" not in msg


def test_all_gather_type_gathers_before_the_core_and_scatters_after_its_backward() -> None:
    cp = 4
    plan = _plan(cp, "parallelism.cp_comm_type=all_gather")
    kv = 128 // cp * 2 * 1 * 32 * 2
    ring = [c for c in plan.collectives.values() if c.traffic_class == "cp"]
    ops = {(c.phase, c.op) for c in ring}
    assert ops == {("fwd-cp", "all_gather"), ("bwd-cp", "all_gather"), ("bwd-cp-rs", "reduce_scatter")}
    assert all(c.nbytes == cp * kv and len(c.ranks) == cp for c in ring)
    cores = 4 * 2 * plan.layout.world // cp  # micro-batches x layers of a stage x CP groups
    assert len(ring) == 3 * cores
    # the core waits for the gather: it depends on a CP collective
    by_id = {o.id: o for o in plan.ops}
    core = next(o for o in plan.ops if o.name == "F.attn-core")
    assert any(by_id[d].coll is not None and by_id[d].coll.traffic_class == "cp" for d in core.deps)


A2A_MODEL: dict[str, Any] = {**MODEL, "kv_heads": 8}


@pytest.mark.parametrize(
    ("extra", "a2a", "ring"),
    [
        ({"cp_comm_type": "a2a"}, 4, 1),
        ({"cp_comm_type": "a2a+p2p", "hierarchical_cp": [2, 2]}, 2, 2),
        ({"cp_comm_type": "a2a+p2p", "hierarchical_cp": [4, 1]}, 4, 1),
    ],
)
def test_a2a_types_move_qkv_by_heads_and_ring_the_rest(extra: dict[str, Any], a2a: int, ring: int) -> None:
    """Transformer Engine's a2a types (AttnFuncWithCPAndQKVOA2A; a2a+p2p: AttnFuncWithCPAndKVP2P
    with an a2a group first): Q, K, V all-to-all over the a2a group before the core, O after; in
    the backward dO before, dQ, dK, dV after; a2a+p2p rings K/V over the groups' positions."""
    cp = 4
    plan = _plan(cp, "training.recompute=selective", model=A2A_MODEL, dp=1, **extra)
    L = plan.layout
    # hand-counted: 128 / 4 = 32 tokens, TP 2 -> 4 query and 4 KV heads of 32, 2 bytes
    tensor = 32 * 4 * 32 * 2
    kv = 2 * tensor  # K and V, what a ring step passes
    cp_colls = [c for c in plan.collectives.values() if c.traffic_class == "cp"]
    a2as = [c for c in cp_colls if c.op == "all_to_all"]
    assert a2as and all(c.nbytes == tensor for c in a2as)
    # the a2a groups are a2a consecutive CP ranks (Megatron's first hierarchical level)
    cp0 = L.cp_group(0)
    assert {c.ranks for c in a2as if 0 in c.ranks} == {cp0[:a2a]}
    cores = 4 * 2 * (L.world // a2a)  # micro-batches x layers of a stage x a2a groups
    per = {"fwd-cp-a2a": 3, "fwd-cp-a2a-out": 1, "rcp-fwd-cp-a2a": 3, "rcp-fwd-cp-a2a-out": 1}
    per |= {"bwd-cp-a2a": 1, "bwd-cp-a2a-out": 3}
    got: dict[str, int] = {}
    for c in a2as:
        got[c.phase] = got.get(c.phase, 0) + 1
    assert got == {k: v * cores for k, v in per.items()}
    ring_colls = [c for c in cp_colls if c.op == "sendrecv"]
    if ring == 1:
        assert not ring_colls
    else:
        assert {c.ranks for c in ring_colls if 0 in c.ranks} == {cp0[::a2a]}
        assert all(c.nbytes in (kv, 2 * kv) for c in ring_colls)
        fwd = [c for c in ring_colls if c.phase == "fwd-cp"]
        assert len(fwd) == (ring - 1) * 4 * 2 * (L.world // ring)
    # the core: 1 / a2a of the TP rank's heads, ring blocks of seq / ring queries
    core = next(o for o in plan.ops if o.name == "F.attn-core" and o.rank == 0)
    costs = ModelCosts(load_workload({"model": A2A_MODEL}, source="t").model, 1, 2, cp=cp, cp_a2a=a2a)
    shape = dict(costs.attention_core("F")[0].shape)
    assert (shape["heads"], shape["seq"], shape["batch"]) == (4 // a2a, 128 // ring, ring)
    # the same FLOPs as the ring's: 1 / cp of the sequence's causal attention
    att = get_kernel("attention")
    flops = att.flops(att.check_shape(shape), "fwd")
    model = load_workload({"model": A2A_MODEL}, source="t").model
    p2p = dict(ModelCosts(model, 1, 2, cp=cp).attention_core("F")[0].shape)
    assert flops == pytest.approx(att.flops(att.check_shape(p2p), "fwd"))
    # the core waits for the V all-to-all, the output projection for the O all-to-all
    by_id = {o.id: o for o in plan.ops}
    assert [by_id[d].coll.phase for d in core.deps if by_id[d].coll is not None] == ["fwd-cp-a2a"]
    post = next(o for o in plan.ops if o.name == "F.attn-post" and o.rank == 0)
    assert [by_id[d].coll.phase for d in post.deps if by_id[d].coll is not None] == ["fwd-cp-a2a-out"]


def test_cp_subgroups_follow_megatrons_hierarchical_groups() -> None:
    # create_hierarchical_groups with sizes [2, 4] over 8 ranks: [g0, g1], ... and [g0, g2, g4, g6]
    plan = _plan(8, model=A2A_MODEL, dp=1, pp=1, cp_comm_type="a2a+p2p", hierarchical_cp=[2, 4])
    L = plan.layout
    g = L.cp_group(0)
    assert len(g) == 8
    assert L.cp_a2a == 2
    assert L.cp_subgroup(g[3], "a2a") == g[2:4]
    assert L.cp_subgroup(g[3], "p2p") == (g[1], g[3], g[5], g[7])


@pytest.mark.parametrize(
    ("par", "words", "field"),
    [
        ({"cp_comm_type": "a2a"}, "allowed a2a sizes: 1", "parallelism.cp_comm_type"),
        ({"cp_comm_type": "a2a+p2p", "hierarchical_cp": [4, 1]}, "allowed a2a sizes: 1", "parallelism.cp_comm_type"),
        ({"cp_comm_type": "a2a+p2p"}, "needs hierarchical_cp", "parallelism"),
        ({"cp_comm_type": "a2a+p2p", "hierarchical_cp": [2, 3]}, "product is cp = 4", "parallelism"),
        ({"hierarchical_cp": [2, 2]}, "hierarchical_cp is for cp_comm_type a2a+p2p", "parallelism"),
    ],
)
def test_bad_a2a_cp_is_a_one_line_error(par: dict[str, Any], words: str, field: str) -> None:
    # MODEL: 8 heads, 2 KV heads: 4 and 1 per TP rank, so no a2a group of 4
    with pytest.raises((SpecError, WorkloadError)) as info:
        _plan(4, dp=1, **par)
    msg = str(info.value)
    assert words in msg and field in msg and "\n" not in msg


@pytest.mark.parametrize("extra", [{"cp_comm_type": "a2a"}, {"cp_comm_type": "a2a+p2p", "hierarchical_cp": [2, 2]}])
def test_lockstep_keeps_every_a2a_byte(extra: dict[str, Any]) -> None:
    # a lockstep unit holds whole CP groups, and so whole groups of either level
    moe = {**A2A_MODEL, "moe": MLA_MOE["moe"]}
    spec = load_workload(
        {
            "model": moe,
            "parallelism": {"pp": 1, "tp": 2, "cp": 4, "ep": 4, "zero_stage": 1, **extra},
            "num_microbatches": 2,
        },
        source="t",
    )
    graph = load_topology("dgx-h100", nodes=2)
    exact = build_plan(spec, graph, ShapeCompute())
    lock = build_plan(spec, graph, ShapeCompute(), lockstep=True)
    for op in ("all_to_all", "sendrecv"):
        a = sum(c.nbytes for c in exact.collectives.values() if c.traffic_class == "cp" and c.op == op)
        b = sum(c.nbytes for c in lock.collectives.values() if c.traffic_class == "cp" and c.op == op)
        assert b == pytest.approx(a)
    assert any(c.op == "all_to_all" for c in lock.collectives.values() if c.traffic_class == "cp")
