"""Whole runs of a tiny MoE scenario: accounting invariants, checkpoints, determinism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from netsim.config.scenario import load_scenario
from netsim.run import prepare, run_scenario, simulate, summarize_replay
from netsim.workload.graph import StepPlan

from .conftest import tiny_scenario


def _summary(scenario: dict[str, Any], overrides: list[str] | None = None) -> tuple[dict[str, Any], Any, Any]:
    prep = prepare(load_scenario(scenario, overrides or []))
    res, net = simulate(prep)
    base = simulate(prep, skip_classes=("checkpoint",))[0] if prep.plan.checkpoint_steps else None
    summary, tables = summarize_replay(prep, res, net, base)
    return summary, tables, (prep, res, net)


@pytest.fixture(scope="module")
def tiny_run() -> tuple[dict[str, Any], Any, Any]:
    return _summary(tiny_scenario())


def test_breakdown_parts_add_up_to_the_step_time_for_every_rank(tiny_run: Any) -> None:
    summary, tables, _ = tiny_run
    ranks = tables["ranks"]
    total = ranks[["compute_s", "communication_s", "overlap_s", "idle_s"]].sum(axis=1).to_numpy()
    np.testing.assert_allclose(total, summary["step_time_s"], rtol=1e-12)
    assert (ranks[["compute_s", "communication_s", "overlap_s", "idle_s"]].to_numpy() >= -1e-15).all()
    assert sum(summary["breakdown_s"].values()) == pytest.approx(summary["step_time_s"], rel=1e-12)
    assert sum(summary["exposed_comm_s_by_class"].values()) == pytest.approx(
        summary["breakdown_s"]["communication"], rel=1e-9
    )


def test_memory_per_rank_is_in_the_summary_and_the_ranks_table(tiny_run: Any) -> None:
    summary, tables, (prep, _, _) = tiny_run
    mem, ranks = summary["memory"], tables["ranks"]
    held = ["params_bytes", "weight_copies_bytes", "grads_bytes", "optimizer_bytes"]
    parts = ranks[held].sum(axis=1) + ranks[["activations_bytes", "main_grads_bytes"]].max(axis=1)
    np.testing.assert_allclose(parts.to_numpy(), ranks["memory_bytes"].to_numpy(), rtol=1e-12)
    assert mem["peak_bytes"] == pytest.approx(float(ranks["memory_bytes"].max()))
    assert mem["fits"] is True and mem["capacity_bytes"] == prep.graph.graph["accelerator"]["memory_bytes"]
    assert mem["recompute"] == "none" and len(mem["per_stage_bytes"]) == prep.plan.layout.pp
    # bf16 weights, fp32 gradients, ZeRO 1 over the DP group of 4 (and the expert-DP group of 1)
    r = 0
    dense = prep.plan.params_per_rank[r] - prep.plan.expert_params_per_rank[r]
    expert = prep.plan.expert_params_per_rank[r]
    assert ranks.loc[r, "params_bytes"] == pytest.approx(2 * (dense + expert))
    assert ranks.loc[r, "optimizer_bytes"] == pytest.approx(12 * (dense / 4 + expert / 1))


def test_every_traffic_class_of_the_step_is_present(tiny_run: Any) -> None:
    summary, _, _ = tiny_run
    for cls in ("dp", "pp", "ep", "tp", "storage"):
        assert summary["bytes_by_class"][cls] > 0, cls
    assert summary["north_south_bytes"] == pytest.approx(summary["bytes_by_class"]["storage"])


def test_ep_alltoall_bytes_equal_the_dispatch_matrices(tiny_run: Any) -> None:
    summary, tables, (prep, _, net) = tiny_run
    plan: StepPlan = prep.plan
    flows = net.flow_records()
    # the all-to-alls; Megatron's alltoall dispatcher also all-gathers the token counts before
    # each forward dispatch (phase fwd-dispatch-meta, class ep: one int64 per expert and rank)
    a2a = (flows["traffic_class"] == "ep") & ~flows["label"].str.endswith("-meta")
    flow_ep = float(flows.loc[a2a, "bytes"].sum())
    ep = [c for c in plan.collectives.values() if c.traffic_class == "ep"]
    colls = [c for c in ep if not c.phase.endswith("-meta")]
    meta = [c for c in ep if c.phase.endswith("-meta")]
    assert {(c.op, c.phase) for c in meta} == {("all_gather", "fwd-dispatch-meta")}
    assert {c.nbytes for c in meta} == {plan.spec.model.moe.experts * 8 * plan.layout.ep}
    assert len(meta) == plan.schedule.m * (plan.layout.stage_size // plan.layout.ep) * plan.layout.pp
    matrices = [c.matrix for c in colls if c.matrix is not None]
    assert len(matrices) == len(colls)
    matrix_total = sum(float(m.sum()) for m in matrices)
    assert flow_ep == pytest.approx(matrix_total, rel=1e-12)
    assert summary["ep_bytes_intra_node"] + summary["ep_bytes_inter_node"] == pytest.approx(matrix_total)
    # 4 all-to-alls per MoE layer per micro-batch per EP group; 2 MoE layers, one per stage
    groups_per_stage = plan.layout.stage_size // plan.layout.ep
    assert len(colls) == 4 * plan.schedule.m * groups_per_stage * plan.layout.pp
    # dispatch bytes = tokens * top_k * hidden * bytes_per_element, summed over the group
    one = next(c for c in colls if c.phase == "fwd-dispatch")
    tokens = plan.spec.micro_batch_size * plan.spec.model.seq_len // plan.layout.tp
    expect = plan.layout.ep * tokens * 2 * plan.spec.model.hidden * 2
    assert one.matrix is not None
    assert float(one.matrix.sum()) + one.local_bytes == pytest.approx(expect)
    layers = tables["alltoall_layers"]
    phases = {"fwd-dispatch", "fwd-combine", "bwd-dispatch", "bwd-combine"}
    assert set(layers["phase"]) == phases | {"fwd-dispatch-meta"}
    assert float(layers.loc[layers["phase"].isin(phases), "bytes"].sum()) == pytest.approx(matrix_total)


@pytest.mark.parametrize(("cost", "tol"), [("ideal", 1e-9), ("nccl", 1e-6)])
def test_doubling_a_link_never_slows_the_step(cost: str, tol: float) -> None:
    # the flow engine is monotone in capacity (ideal: to rounding); NCCL's per-flow bandwidth
    # caps can re-order which flows meet at a later bottleneck, a sub-ppm effect
    summary, tables, (prep, _, _) = _summary(
        tiny_scenario(options={"algorithms": {"all_to_allv": "direct"}, "collective_cost": cost})
    )
    links = tables["links"]
    busiest = links.sort_values(["bytes", "link"], ascending=[False, True])
    candidates = [*busiest["link"].head(3), *busiest.loc[busiest["class"] == "ib", "link"].head(2)]
    for link in candidates:
        src, dst = link.split("->")
        graph = prep.graph.copy()
        graph.edges[src, dst]["capacity_Bps"] *= 2
        prep2 = prep.__class__(**{**prep.__dict__, "graph": graph})
        res2, _ = simulate(prep2)
        assert res2.step_times_s[0] <= summary["step_time_s"] * (1 + tol), link


@pytest.mark.parametrize(("target", "slows"), [("backend", True), ("frontend", False)])
def test_checkpoint_on_the_backend_slows_the_step_and_on_the_frontend_does_not(target: str, slows: bool) -> None:
    sets = [
        "steps=2",
        "workload.checkpoint.every_steps=1",
        f"workload.checkpoint.target={target}",
        # storage fast enough that the writers take a real share of the GPUs' NICs
        "topology.backend.storage.bandwidth=3200Gbps",
    ]
    summary, _, _ = _summary(tiny_scenario(), sets)
    assert summary["checkpoint_time_s"] > 0
    assert summary["bytes_by_class"]["checkpoint"] > 0
    if slows:
        assert summary["checkpoint_slowdown_s"] > 0
    else:
        assert summary["checkpoint_slowdown_s"] == pytest.approx(0.0, abs=1e-12 * summary["step_time_s"])


def test_same_seed_gives_byte_identical_run_directories(tmp_path: Path) -> None:
    spec = load_scenario(tiny_scenario())
    a = run_scenario(spec, tmp_path / "a", report=None).path
    b = run_scenario(spec, tmp_path / "b", report=None).path
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in ("summary.json", "scenario.yaml", "ranks.parquet", "ops.csv", "links.parquet", "expert_load.csv"):
        assert name in files
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_stream_collective_model_keeps_the_step_time_with_fewer_flows(tiny_run: Any) -> None:
    exact, _, (_, _, net_exact) = tiny_run
    stream, _, (_, _, net_stream) = _summary(tiny_scenario(), ["options.collective_model=stream"])
    assert net_stream.num_flows < net_exact.num_flows
    assert stream["step_time_s"] == pytest.approx(exact["step_time_s"], rel=0.02)
    # the bytes on the wire do not change, only how they are grouped into flows
    for key in ("east_west_bytes", "ep_bytes_inter_node", "ep_bytes_intra_node"):
        assert stream[key] == pytest.approx(exact[key], rel=1e-9)


def test_coflow_collective_model_keeps_the_step_bytes_and_flows(tiny_run: Any) -> None:
    exact, exact_tables, _ = tiny_run
    _, _, (_, _, net_stream) = _summary(tiny_scenario(), ["options.collective_model=stream"])
    coflow, tables, (_, _, net_coflow) = _summary(tiny_scenario(), ["options.collective_model=coflow"])
    assert coflow["collective_model"] == "coflow" and coflow["routing_samples"] is None
    # a coflow's transfers are listed as flows: as many as the stream model's
    assert net_coflow.num_flows == net_stream.num_flows == coflow["num_flows"]
    assert coflow["step_time_s"] == pytest.approx(exact["step_time_s"], rel=0.05)
    for key in ("east_west_bytes", "north_south_bytes"):
        assert coflow[key] == pytest.approx(exact[key], rel=1e-9)
    assert tables["traffic_matrix"]["bytes"].sum() == pytest.approx(exact_tables["traffic_matrix"]["bytes"].sum())


def test_routing_samples_reuse_the_routing_of_the_first_samples(tiny_run: Any) -> None:
    exact = tiny_run[0]
    one, _, (prep, _, _) = _summary(tiny_scenario(), ["options.routing_samples=1"])
    assert one["routing_samples"] == 1
    dispatch = [c.matrix for c in prep.plan.collectives.values() if c.phase == "fwd-dispatch"]
    by_layer: dict[int, list[Any]] = {}
    for c in prep.plan.collectives.values():
        if c.phase == "fwd-dispatch":
            by_layer.setdefault(c.layer, []).append(c.matrix)
    assert dispatch and all(np.array_equal(m[0], x) for m in by_layer.values() for x in m)
    assert one["step_time_s"] == pytest.approx(exact["step_time_s"], rel=0.05)


@pytest.fixture(scope="module")
def lockstep_run() -> tuple[dict[str, Any], Any, Any]:
    return _summary(tiny_scenario(), ["options.lockstep=true"])


def test_lockstep_plans_one_rank_per_stage_and_keeps_every_byte_and_flow(tiny_run: Any, lockstep_run: Any) -> None:
    exact, exact_tables, (exact_prep, _, exact_net) = tiny_run
    lock, tables, (prep, _, net) = lockstep_run
    L = prep.plan.layout
    assert lock["lockstep"] is True and exact["lockstep"] is False
    assert prep.plan.rep_of == [r - r % L.stage_size for r in range(L.world)]
    assert {op.rank for op in prep.plan.ops} == {p * L.stage_size for p in range(L.pp)}
    assert len(prep.plan.ops) < len(exact_prep.plan.ops) / 4
    # gradient reductions stay per rank (one op and stream per rank of the unit)
    dp_ops = [o for o in prep.plan.ops if o.traffic_class == "dp"]
    assert len(dp_ops) == sum(o.traffic_class == "dp" for o in exact_prep.plan.ops)
    assert len({o.stream for o in dp_ops}) == L.stage_size * len(
        {o.stream for o in exact_prep.plan.ops_of_rank(0) if o.traffic_class == "dp"}
    )
    # every transfer of the exact plan still runs
    assert lock["num_flows"] == exact["num_flows"] == net.num_flows == exact_net.num_flows
    for cls, v in exact["bytes_by_class"].items():
        assert lock["bytes_by_class"][cls] == pytest.approx(v, rel=1e-12), cls
    for key in ("ep_bytes_local_rank", "ep_bytes_intra_node", "ep_bytes_inter_node", "expert_load_cv"):
        assert lock[key] == pytest.approx(exact[key], rel=1e-12), key
    pd.testing.assert_frame_equal(tables["traffic_matrix"], exact_tables["traffic_matrix"], rtol=1e-12)
    # every rank has a breakdown adding up to the step, on its representative's timeline with
    # its own expert compute: its compute time is exactly that of its ops in the exact plan
    ranks = tables["ranks"].set_index("rank")
    assert len(ranks) == L.world
    parts = ["compute_s", "communication_s", "overlap_s", "idle_s"]
    np.testing.assert_allclose(ranks[parts].sum(axis=1), lock["step_time_s"], rtol=1e-12)
    own = np.zeros(L.world)
    for op in exact_prep.plan.ops:
        if op.kind == "compute":
            own[op.rank] += op.duration_s
    # a rank computes for its ops' durations, longer while collectives hold SMs (NCCL's TP
    # collectives here): at most 1 / (1 - the largest share held) longer
    busy = (ranks["compute_s"] + ranks["overlap_s"]).to_numpy()
    held = max((c.sm_share for c in exact_prep.plan.collectives.values()), default=0.0)
    assert held > 0
    assert (busy >= own * (1 - 1e-9)).all() and (busy <= own / (1 - held) * (1 + 1e-9)).all()
    assert ranks.loc[L.stage_size :, "compute_s"].nunique() > 1
    assert lock["step_time_s"] == pytest.approx(exact["step_time_s"], rel=0.05)


def test_lockstep_expert_compute_is_the_slowest_rank_of_the_stage(tiny_run: Any, lockstep_run: Any) -> None:
    exact_plan = tiny_run[2][0].plan
    plan = lockstep_run[2][0].plan
    L = plan.layout
    slowest: dict[tuple[int, int, int, str], float] = {}
    for op in exact_plan.ops:
        if ".experts" in op.name:
            key = (L.coords(op.rank)[0], op.layer, op.microbatch, op.name)
            slowest[key] = max(slowest.get(key, 0.0), op.duration_s)
    got = {
        (L.coords(op.rank)[0], op.layer, op.microbatch, op.name): op.duration_s
        for op in plan.ops
        if ".experts" in op.name
    }
    assert got and got.keys() == slowest.keys()
    for key, dur in got.items():
        assert dur == pytest.approx(slowest[key], rel=1e-12), key
    # the exact plan's expert times differ across the ranks of a stage (the test is not vacuous)
    assert len({op.duration_s for op in exact_plan.ops if op.name == "F.experts"}) > 1


def test_lockstep_collectives_merge_the_instances_of_the_stage(lockstep_run: Any) -> None:
    plan = lockstep_run[2][0].plan
    L = plan.layout
    reps = {p * L.stage_size for p in range(L.pp)}
    by_op: dict[str, int] = {}
    for coll in plan.collectives.values():
        if coll.op == "barrier":
            assert set(coll.ranks) == reps
            continue
        assert coll.instances and set(coll.ranks) <= reps
        assert coll.nbytes == pytest.approx(sum(c.nbytes for c in coll.instances))
        members = {r for c in coll.instances for r in c.ranks}
        assert {r - r % L.stage_size for r in members} == set(coll.ranks)
        by_op[coll.traffic_class] = max(by_op.get(coll.traffic_class, 0), len(coll.instances))
    # TP: one group per DP position of the stage; PP: one transfer per (DP, TP) position
    assert by_op["tp"] == L.dp and by_op["pp"] == L.stage_size and by_op["ep"] == L.stage_size // L.ep


def test_lockstep_equals_the_exact_plan_when_a_stage_has_one_rank() -> None:
    wl = dict(tiny_scenario()["workload"], parallelism={"pp": 2, "tp": 1, "dp": 1, "ep": 1, "zero_stage": 1})
    exact, _, _ = _summary(tiny_scenario(workload=wl))
    lock, _, _ = _summary(tiny_scenario(workload=wl), ["options.lockstep=true"])
    assert lock.pop("lockstep") and not exact.pop("lockstep")
    assert "+ lockstep" in lock.pop("model_choice") and "lockstep" not in exact.pop("model_choice")
    assert lock == exact


def test_lockstep_with_coflows_keeps_the_bytes_and_the_step(tiny_run: Any) -> None:
    exact = tiny_run[0]
    lock, _, _ = _summary(tiny_scenario(), ["options.lockstep=true", "options.collective_model=coflow"])
    assert lock["num_flows"] == _summary(tiny_scenario(), ["options.collective_model=coflow"])[0]["num_flows"]
    for cls, v in exact["bytes_by_class"].items():
        assert lock["bytes_by_class"][cls] == pytest.approx(v, rel=1e-12), cls
    assert lock["step_time_s"] == pytest.approx(exact["step_time_s"], rel=0.05)


def test_in_network_reduction_lowers_what_gpus_send() -> None:
    """Issue 18.15: bytes by class are what devices send; an NVLS all-reduce's results come
    back from the switch and are not traffic of the class (the links table keeps them)."""
    from netsim.collectives import accelerators, run_collective
    from netsim.network.engine import Network
    from netsim.run_accounting import traffic_totals
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=1)
    devs = accelerators(g)
    size = 64 * 2**20
    sent = {}
    for algo in ("ring", "nvls"):
        net = Network(g)
        run_collective(net, "all_reduce", devs, size, algo=algo, traffic_class="dp")
        net.run()
        sent[algo] = traffic_totals(g, net)[0]["dp"]
    n = len(devs)
    assert sent["ring"] == pytest.approx(n * 2 * (n - 1) / n * size)
    assert sent["nvls"] == pytest.approx(n * (1 + 1 / n) * size)
    assert sent["nvls"] < sent["ring"]
