"""Framework expert layouts (Megatron folding with expert TP, DeepSpeed, MindSpore), the
group-wise all-to-all and the gradient reductions each layout implies (issue 18 items 9, 11)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from netsim.config.workload import load_workload
from netsim.errors import SpecError, WorkloadError
from netsim.network.engine import Network
from netsim.replay import replay
from netsim.topology import load_topology
from netsim.workload.expert_layout import EXPERT_LAYOUTS, make_expert_layout
from netsim.workload.graph import StepPlan, build_plan

from ..replay.helpers import FixedCompute


def test_deepspeed_groups_are_deepspeeds_own_example() -> None:
    # deepspeed.utils.groups (its test of _get_expert_parallel_ranks): world 16, model parallel 2,
    # expert parallel 4
    lay = make_expert_layout("deepspeed", 8, 2, 4, None)
    assert {lay.ep_members(x) for x in range(16)} == {(0, 2, 4, 6), (8, 10, 12, 14), (1, 3, 5, 7), (9, 11, 13, 15)}
    assert {lay.edp_members(x) for x in range(16)} == {
        (0, 8),
        (2, 10),
        (4, 12),
        (6, 14),
        (1, 9),
        (3, 11),
        (5, 13),
        (7, 15),
    }
    assert lay.etp_members(3) == (3,) and lay.a2a_members(3) == tuple(range(8)) and lay.replicated


def test_megatron_folding_and_mindspore_groups() -> None:
    # Megatron's expert grid: ETP fastest, then EP, then EDP (8 ranks: ETP 2 x EP 2 x EDP 2)
    meg = make_expert_layout("megatron", 4, 2, 2, 2)
    assert (meg.etp_members(5), meg.ep_members(5), meg.edp_members(5), meg.ep_position(5)) == (
        (4, 5),
        (5, 7),
        (1, 5),
        0,
    )
    plain = make_expert_layout("megatron", 4, 2, 4, None)  # whole experts: ep consecutive ranks
    assert plain.ep_members(5) == (4, 5, 6, 7) and plain.edp_members(5) == (1, 5) and not plain.replicated
    # MindSpore: EP across data parallelism, every expert split over the TP (model-parallel) group
    ms = make_expert_layout("mindspore", 4, 2, 2, None)
    assert (ms.etp, ms.etp_members(3), ms.ep_members(3), ms.edp_members(3)) == (2, (2, 3), (1, 3), (3, 7))
    assert EXPERT_LAYOUTS.names() == ["megatron", "deepspeed", "mindspore"]


class _TokenCompute(FixedCompute):
    """FixedCompute, with expert GEMMs taking 1 ns per token row."""

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return shape["tokens"] * 1e-9 if kernel == "grouped_gemm" else super().time(kernel, pass_, **shape)


def _plan(layout: str, *, nodes: int = 2, lockstep: bool = False, **sets: Any) -> StepPlan:
    """A small MoE on DGX H100 servers with tp 8 (one server per TP group), 16 experts."""
    graph = load_topology("dgx-h100", nodes=nodes)
    data: dict[str, Any] = {
        "model": {
            "layers": 2,
            "hidden": 256,
            "ffn_hidden": 512,
            "heads": 8,
            "vocab": 1000,
            "seq_len": 128,
            "moe": {"experts": 16, "top_k": 2, "every_n": 1},
        },
        "parallelism": {
            "pp": 1,
            "tp": 8,
            "ep": 2,
            "zero_stage": 1,
            "expert_layout": layout,
            "sequence_parallel": layout == "megatron",
        },
        "num_microbatches": 2,
        "grad_bucket_bytes": "1MB",
        "storage": {"enabled": False},
    }
    spec = load_workload(data, [f"{k}={v}" for k, v in sets.items()], source="layout.yaml")
    return build_plan(spec, graph, _TokenCompute(1e-4, 2e-4), lockstep=lockstep)


def _dp_bytes(plan: StepPlan, rank: int) -> float:
    return sum(
        o.coll.nbytes for o in plan.ops if o.rank == rank and o.coll is not None and o.name == "dp.grad-reduce-scatter"
    )


def test_expert_parameters_and_their_gradient_reductions() -> None:
    # 16 experts, EP 2 over DP 2 (one server each): 8 experts per rank, whole (DeepSpeed) or
    # split over the 8 TP ranks (MindSpore); 4 servers: DP 4, each expert's shard on 2 ranks
    ds, ms = _plan("deepspeed"), _plan("mindspore")
    assert ds.expert_params_per_rank[0] == pytest.approx(8 * ms.expert_params_per_rank[0])
    dense = ms.params_per_rank[0] - ms.expert_params_per_rank[0]
    # EDP = dp / ep = 1: only the dense gradients are reduced (fp32, 4 bytes)
    assert _dp_bytes(ms, 0) == pytest.approx(4 * dense)
    ms4 = _plan("mindspore", nodes=4)
    assert ms4.layout.expert_dp_group(0) == (0, 16)
    assert _dp_bytes(ms4, 0) == pytest.approx(4 * ms4.params_per_rank[0])  # dense over DP, experts over EDP
    # Megatron folding with EP 2 on 32 ranks: each expert whole on 16 ranks, reduced over all of them
    meg = _plan("megatron", nodes=4)
    assert len(meg.layout.expert_dp_group(0)) == 16
    assert meg.expert_params_per_rank[0] == pytest.approx(8 * ms4.expert_params_per_rank[0])


def _ep(plan: StepPlan, phase: str) -> list[Any]:
    return [c for c in plan.collectives.values() if c.phase == phase]


def test_mindspore_all_to_all_is_replicated_or_groupwise() -> None:
    rep, grp = _plan("mindspore"), _plan("mindspore", **{"parallelism.expert_alltoall": "groupwise"})
    (a2a, *_) = _ep(rep, "fwd-dispatch")
    assert a2a.ranks == tuple(range(16)) and a2a.algo is None  # the TP group's 8 EP groups, one collective
    mat = a2a.matrix
    i, j = np.nonzero(mat)
    assert (i % 8 == j % 8).all()  # rank (k, t) sends to (k', t): every TP rank its own copy
    assert all(c.algo == "groupwise" for c in _ep(grp, "fwd-dispatch") + _ep(grp, "fwd-combine"))
    # the experts' partial outputs: reduced over the TP group, all-reduce or reduce-scatter
    assert _ep(rep, "fwd-combine-experts-ar") and not _ep(rep, "fwd-combine-experts-rs")
    assert _ep(grp, "fwd-combine-experts-rs")[0].op == "reduce_scatter"
    # the network carries 1/8 (one share per TP rank), the servers the all-gather of the rest
    assert grp.ep_bytes["inter_node"] == pytest.approx(rep.ep_bytes["inter_node"] / 8)
    assert grp.ep_bytes["intra_node"] == pytest.approx(rep.ep_bytes["inter_node"] * 7 / 8)
    assert grp.summary_fields()["moe_dispatch"]["expert_alltoall"] == "groupwise"


def test_deepspeed_groupwise_dispatch_drops_and_combine_gathers() -> None:
    rep, grp = _plan("deepspeed"), _plan("deepspeed", **{"parallelism.expert_alltoall": "groupwise"})
    d_rep, d_grp = _ep(rep, "fwd-dispatch")[0], _ep(grp, "fwd-dispatch")[0]
    assert d_grp.algo is None and d_grp.nbytes == pytest.approx(d_rep.nbytes / 8)  # its 1/tp share only
    assert _ep(grp, "fwd-combine")[0].algo == "groupwise"
    # each TP rank computes its share of the tokens: the TP group's expert time is the replicated one's / 8
    dur = {
        n: sum(o.duration_s for o in p.ops if o.name == "F.experts" and o.rank < 8)
        for n, p in (("rep", rep), ("grp", grp))
    }
    assert dur["grp"] == pytest.approx(dur["rep"] / 8)


def test_megatron_expert_tp_gathers_tokens_around_the_experts() -> None:
    plan = _plan("megatron", **{"parallelism.expert_tp": 2, "parallelism.ep": 4})
    ag, rs = _ep(plan, "fwd-dispatch-etp-ag"), _ep(plan, "fwd-combine-etp-rs")
    assert ag and rs and all(len(c.ranks) == 2 and c.ranks == plan.layout.expert_tp_group(c.ranks[0]) for c in ag)
    assert ag[0].traffic_class == "tp" and rs[0].op == "reduce_scatter"
    # the ETP pairs gather every token row their members' experts received: per (layer, micro-batch)
    # all of them, 16 ranks x 16 routed tokens (128 / tp 8) x top-2, of 256 bf16 elements
    for layer in (0, 1):
        got = sum(c.nbytes for c in ag if c.layer == layer and c.microbatch == 0)
        assert got == pytest.approx(16 * 16 * 2 * 256 * 2)
    half = _plan("megatron", **{"parallelism.ep": 4})
    assert plan.layout.etp == 2 and plan.expert_params_per_rank[0] == pytest.approx(half.expert_params_per_rank[0] / 2)


@pytest.mark.parametrize(
    ("layout", "sets"),
    [
        ("mindspore", {"parallelism.expert_alltoall": "groupwise"}),
        ("megatron", {"parallelism.expert_tp": 2, "parallelism.ep": 4}),
    ],
)
def test_lockstep_keeps_every_byte(layout: str, sets: dict[str, Any]) -> None:
    exact, lock = _plan(layout, **sets), _plan(layout, lockstep=True, **sets)
    assert lock.ep_bytes == pytest.approx(exact.ep_bytes)

    def tp(p: StepPlan) -> float:
        return sum(i.nbytes for c in p.collectives.values() for i in (c.instances or (c,)) if c.traffic_class == "tp")

    assert tp(lock) == pytest.approx(tp(exact)) and len(lock.ops) < len(exact.ops)


def test_groupwise_all_to_all_is_faster_on_fast_server_links() -> None:
    # NVLink (450 GB/s per GPU) against one 400G NIC per GPU: the group-wise all-to-all sends 1/8
    # over the network and all-gathers over NVLink (LocMoE, arXiv 2401.13920)
    times = {}
    graph = load_topology("dgx-h100", nodes=2)
    for mode in ("replicated", "groupwise"):
        plan = _plan("mindspore", **{"parallelism.expert_alltoall": mode, "model.seq_len": 8192})
        res = replay(plan, Network(graph, routing="ecmp"))
        times[mode] = sum(
            res.coll_end[k] - res.coll_start[k] for k, c in plan.collectives.items() if c.traffic_class == "ep"
        )
    assert times["groupwise"] < 0.5 * times["replicated"]


@pytest.mark.parametrize(
    ("sets", "error", "message"),
    [
        (
            {"parallelism.sequence_parallel": True},
            WorkloadError,
            "parallelism.sequence_parallel: expert_layout mindspore has the TP ranks route the same tokens",
        ),
        ({"parallelism.ep": 4}, WorkloadError, "parallelism.ep: expert_layout mindspore: ep = 4 must divide dp = 2"),
        (
            {"parallelism.expert_tp": 2},
            WorkloadError,
            "parallelism.expert_tp: expert_layout mindspore: experts are split over the model-parallel group",
        ),
        (
            {"parallelism.expert_layout": "fairseq"},
            SpecError,
            "parallelism.expert_layout: unknown expert layout 'fairseq'; allowed: megatron, deepspeed, mindspore",
        ),
    ],
)
def test_layout_errors_name_the_field(sets: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        _plan("mindspore", **sets)
    assert "layout.yaml" in str(exc.value) and "\n" not in str(exc.value)


def test_groupwise_needs_replicated_tp_groups_filling_a_server() -> None:
    with pytest.raises(
        WorkloadError,
        match=r"parallelism\.expert_alltoall: groupwise needs TP ranks that hold the "
        r"same tokens",
    ):
        _plan("megatron", **{"parallelism.expert_alltoall": "groupwise"})
    with pytest.raises(WorkloadError, match="every server must hold one TP group"):
        _plan("deepspeed", **{"parallelism.expert_alltoall": "groupwise", "parallelism.tp": 4, "parallelism.ep": 4})
