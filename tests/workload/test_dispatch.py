"""How a workload's all-to-alls send tokens: de-duplicating dispatchers (issue 18 item 3) and
capacity-padded buffers (item 10), reported in the summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan, build_plan

from .test_expert_layouts import _TokenCompute

MOE: dict[str, Any] = {"experts": 32, "top_k": 4, "every_n": 1}


def _plan(*sets: str, nodes: int = 2) -> StepPlan:
    """EP 16 over two DGX H100 servers (8 ranks each), 32 experts (2 per rank), top-4."""
    spec = load_workload(
        {
            "model": {
                "layers": 1,
                "hidden": 256,
                "ffn_hidden": 512,
                "heads": 8,
                "vocab": 1000,
                "seq_len": 256,
                "moe": MOE,
            },
            "parallelism": {"pp": 1, "tp": 1, "ep": 16, "zero_stage": 1},
            "num_microbatches": 1,
            "storage": {"enabled": False},
        },
        list(sets),
        source="dispatch.yaml",
    )
    return build_plan(spec, load_topology("dgx-h100", nodes=nodes), _TokenCompute(1e-4, 2e-4))


def test_deepep_sends_a_token_once_per_node() -> None:
    plans = {d: _plan(f"model.moe.dispatcher={d}") for d in ("alltoall", "dedup-rank", "deepep")}
    inter = {d: p.ep_bytes["inter_node"] for d, p in plans.items()}
    # top-4 of 32 experts on 2 nodes: a token reaches the other node at most once under DeepEP
    assert inter["deepep"] < inter["dedup-rank"] <= inter["alltoall"]
    per_token = 256 * 2  # hidden x bf16
    tokens = 16 * 256  # ranks x tokens routed per rank
    assert inter["deepep"] <= 4 * tokens * per_token  # 4 phases, at most one copy per token each
    md = plans["deepep"].summary_fields()["moe_dispatch"]
    assert md["dispatcher"] == "deepep" and md["dedup"].startswith("exact")
    assert md["dispatch_token_pairs"] == 2 * tokens * 4  # fwd + bwd dispatch, top-4
    # DeepEP's copies count the RDMA leg and the NVLink forward of a token apiece
    assert plans["dedup-rank"].summary_fields()["moe_dispatch"]["dispatch_token_copies"] < md["dispatch_token_pairs"]
    # the experts compute the same (token, expert) rows whatever the dispatcher
    comp = {d: sum(o.duration_s for o in p.ops if o.name.endswith(".experts")) for d, p in plans.items()}
    assert comp["deepep"] == pytest.approx(comp["alltoall"])
    assert plans["alltoall"].summary_fields()["moe_dispatch"]["dedup"] == "none"


def test_capacity_padding_sends_and_computes_full_buffers() -> None:
    cf = 1.25
    dropless = _plan(f"model.moe.capacity_factor={cf}")
    padded = _plan(f"model.moe.capacity_factor={cf}", "model.moe.padding=capacity")
    cap = int(np.ceil(cf * 4 * 256 / 32))  # capacity_factor x top_k x tokens / experts = 40 rows
    md = padded.summary_fields()["moe_dispatch"]
    assert (md["padding"], md["capacity_tokens"]) == ("capacity", cap)
    for c in padded.collectives.values():
        if c.phase == "fwd-dispatch":
            off = c.matrix[~np.eye(16, dtype=bool)]
            assert (off == 2 * cap * 256 * 2).all()  # both slots' buffers full size, routed or not
    assert padded.ep_bytes["inter_node"] > dropless.ep_bytes["inter_node"]
    rows = {n: max(o.duration_s for o in p.ops if o.name == "F.experts") for n, p in (("d", dropless), ("p", padded))}
    assert rows["p"] == pytest.approx(16 * 2 * cap * 1e-9 * 2)  # 16 sources x 2 slots x 40 rows, two GEMMs
    assert rows["d"] < rows["p"]
    assert dropless.summary_fields()["moe_dispatch"]["padding"] == "dropless"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.moe.padding=capacity"], "padding capacity needs capacity_factor"),
        (
            ["model.moe.padding=capacity", "model.moe.capacity_factor=1", "model.moe.dispatcher=deepep"],
            "padding capacity sends a buffer per \\(rank, expert\\): it needs dispatcher alltoall",
        ),
    ],
)
def test_bad_dispatch_fields(sets: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _plan(*sets)


def test_unknown_dispatcher_names_the_field() -> None:
    from netsim.errors import WorkloadError

    with pytest.raises(
        WorkloadError,
        match=r"model\.moe\.dispatcher: unknown token dispatcher 'nccl'; allowed: "
        r"alltoall, dedup-rank, deepep, hybridep$",
    ):
        _plan("model.moe.dispatcher=nccl")


def test_hybridep_gathers_the_routing_maps_before_each_forward_dispatch() -> None:
    deep, hybrid = _plan("model.moe.dispatcher=deepep"), _plan("model.moe.dispatcher=hybridep")
    # the same token paths as DeepEP ...
    for phase in ("fwd-dispatch", "fwd-combine", "bwd-dispatch", "bwd-combine"):
        a = sorted(c.nbytes for c in deep.collectives.values() if c.phase == phase)
        b = sorted(c.nbytes for c in hybrid.collectives.values() if c.phase == phase)
        assert a == b, phase
    # ... plus, before the forward dispatch only, an all-gather over the EP group of every rank's
    # [tokens, experts] torch.bool routing map: 256 tokens x 32 experts x 16 ranks bytes
    meta = [c for c in hybrid.collectives.values() if c.phase.endswith("-meta")]
    assert meta and {c.phase for c in meta} == {"fwd-dispatch-meta"}
    assert {(c.op, c.nbytes, len(c.ranks), c.traffic_class) for c in meta} == {("all_gather", 256 * 32 * 16, 16, "ep")}
    assert not [c for c in deep.collectives.values() if c.phase.endswith("-meta")]
    by_id = {o.id: o for o in hybrid.ops}

    def meta(d: int) -> bool:
        return by_id[d].coll is not None and by_id[d].coll.phase == "fwd-dispatch-meta"

    for o in hybrid.ops:
        if o.coll is not None and o.coll.phase == "fwd-dispatch":  # the dispatch waits for the maps
            # (through the host's wait for the counts they give: netsim.moe.dispatchers)
            assert any(meta(d) or (by_id[d].kind == "host" and any(meta(x) for x in by_id[d].deps)) for d in o.deps)


def test_alltoall_gathers_the_token_counts_before_each_forward_dispatch() -> None:
    # Megatron's MoEAlltoAllTokenDispatcher.preprocess: an all-gather over the EP group of every
    # rank's int64 token count per expert (32 experts x 8 bytes x 16 ranks), before the forward
    # dispatch only (the backward reuses the splits); none for a capacity-padded buffer
    plan = _plan("model.moe.dispatcher=alltoall")
    meta = [c for c in plan.collectives.values() if c.phase.endswith("-meta")]
    assert {(c.phase, c.op, c.nbytes, len(c.ranks), c.traffic_class) for c in meta} == {
        ("fwd-dispatch-meta", "all_gather", 32 * 8 * 16, 16, "ep")
    }
    by_id = {o.id: o for o in plan.ops}
    dispatches = [o for o in plan.ops if o.coll is not None and o.coll.phase == "fwd-dispatch"]
    assert dispatches
    for o in dispatches:
        assert any(by_id[d].coll is not None and by_id[d].coll.phase == "fwd-dispatch-meta" for d in o.deps)
    padded = _plan("model.moe.dispatcher=alltoall", "model.moe.capacity_factor=1.0", "model.moe.padding=capacity")
    assert not [c for c in padded.collectives.values() if c.phase.endswith("-meta")]
    assert not [c for c in _plan("model.moe.dispatcher=dedup-rank").collectives.values() if c.phase.endswith("-meta")]


def test_hybridep_gathers_again_when_full_recomputation_repeats_the_forward() -> None:
    plan = _plan("model.moe.dispatcher=hybridep", "training.recompute=full")
    phases = {c.phase for c in plan.collectives.values() if c.phase.endswith("-meta")}
    assert phases == {"fwd-dispatch-meta", "rcp-fwd-dispatch-meta"}


def test_dispatch_kernels_charge_their_fixed_time_per_call() -> None:
    # DeepEP's and HybridEP's fitted time per call (netsim.moe.dispatchers, "Time per call"); the
    # NCCL all-to-all's latencies are the cost model's; the routing-map all-gather is NCCL's too
    from netsim.moe.dispatchers import DEEPEP_CALL_LATENCY_S, HYBRIDEP_CALL_LATENCY_S

    want = {"alltoall": 0.0, "dedup-rank": 0.0, "deepep": DEEPEP_CALL_LATENCY_S, "hybridep": HYBRIDEP_CALL_LATENCY_S}
    for name, latency in want.items():
        plan = _plan(f"model.moe.dispatcher={name}")
        ep = [c for c in plan.collectives.values() if c.op == "all_to_allv"]
        assert len({c.phase for c in ep}) == 4 and {c.latency_s for c in ep} == {latency}, name
        assert all(c.latency_s == 0.0 for c in plan.collectives.values() if c.op != "all_to_allv")
    plan = _plan("model.moe.dispatcher=hybridep", "model.moe.dispatch_latency_us=40")
    assert [c.latency_s for c in plan.collectives.values() if c.op == "all_to_allv"] == pytest.approx([40e-6] * 4)


def test_the_time_per_call_lengthens_each_exposed_all_to_all() -> None:
    from netsim.network.engine import Network
    from netsim.replay import replay

    graph = load_topology("dgx-h100", nodes=2)
    res = {}
    for us in (0, 500):
        plan = _plan("model.moe.dispatcher=deepep", f"model.moe.dispatch_latency_us={us}")
        res[us] = (plan, replay(plan, Network(graph)))
    # every all-to-all (4 phases, one micro-batch, one layer: all on the critical path) now lasts
    # 0.5 ms more from its last member's arrival, and the step with them
    (plan, r0), (_, r1) = res[0], res[500]
    keys = [k for k, c in plan.collectives.items() if c.op == "all_to_allv"]
    assert len(keys) == 4
    for k in keys:
        d0, d1 = r0.coll_end[k] - r0.coll_start[k], r1.coll_end[k] - r1.coll_start[k]
        assert d1 - d0 == pytest.approx(500e-6, rel=1e-6)
    assert r1.end_s - r0.end_s == pytest.approx(4 * 500e-6, rel=1e-3)


def test_negative_dispatch_latency_names_the_field() -> None:
    with pytest.raises(SpecError, match=r"model\.moe\.dispatch_latency_us"):
        _plan("model.moe.dispatch_latency_us=-1")
