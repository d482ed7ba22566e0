"""Megatron's scatter/gather of pipeline messages (``parallelism.pipeline_scatter_gather``).

Without sequence parallelism each TP rank of a stage holds a micro-batch's whole activations;
Megatron-LM sends ``1 / tp`` of them from each TP rank and all-gathers them over the receiving
stage's TP group (megatron/p2p_communication.py at NVIDIA/Megatron-LM de7dc40f88), forward
activations and backward gradients alike.
"""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.scenario import load_scenario
from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.run import prepare, simulate, summarize_replay
from netsim.topology import load_topology
from netsim.workload.graph import StepPlan, build_plan

from ..replay.helpers import FixedCompute
from .plans import plan_digest

MODEL: dict[str, Any] = {"layers": 4, "hidden": 256, "ffn_hidden": 1024, "heads": 4, "vocab": 1000, "seq_len": 128}
WORKLOAD: dict[str, Any] = {
    "model": MODEL,
    "parallelism": {"pp": 2, "tp": 4, "zero_stage": 0, "sequence_parallel": False},
    "num_microbatches": 4,
    "grad_bucket_bytes": "1MB",
}
#: sha256 of every op and collective of the plans below built by netsim before scatter/gather
#: existed (commit 6dee64f): the option off must reproduce them exactly
OLD_PLAN = {
    False: "a87487b1f1ae0476d3240030de866cd77698e566f7f413d514e86e3e8a681cc8",
    True: "77af7783c3ed8e30643978f1b59bf13bf579592e35d68e68406a6d21b174c82a",
}


def _plan(*sets: str, lockstep: bool = False) -> StepPlan:
    spec = load_workload(WORKLOAD, list(sets), source="t")
    return build_plan(spec, load_topology("dgx-h100", nodes=2), FixedCompute(1e-3, 2e-3), lockstep=lockstep)


def _digest(plan: StepPlan) -> str:
    return plan_digest(plan)


def test_each_tp_rank_sends_a_tp_th_and_the_receiver_all_gathers_over_its_tp_group() -> None:
    plan = _plan()
    L, m = plan.layout, plan.schedule.m
    act = 1 * 128 * 256 * 2  # micro-batch x seq x hidden x bf16 bytes
    sends = [o for o in plan.ops if o.name.startswith("pp.send")]
    assert sends and all(o.coll is not None and o.coll.nbytes == act / L.tp for o in sends)
    by_id = {o.id: o for o in plan.ops}
    for direction in ("act", "grad"):
        gathers = [o for o in plan.ops if o.name == f"tp.pp-gather-{direction}"]
        # one per micro-batch on every rank of the receiving stage (stage 1 forward, 0 backward)
        assert len(gathers) == m * L.stage_size
        for g in gathers:
            assert g.coll is not None and g.coll.op == "all_gather" and g.coll.traffic_class == "tp"
            assert g.coll.ranks == L.tp_group(g.rank) and g.coll.nbytes == act
            # after the message arrived, before the block's first compute
            assert [by_id[d].name for d in g.deps] == [f"pp.recv.{direction}"]
            first = min(
                (o for o in plan.ops if o.rank == g.rank and o.kind == "compute" and g.id in o.deps),
                key=lambda o: o.issue,
            )
            assert first.microbatch == g.microbatch
            assert first.name == ("F.attn" if direction == "act" else "BW.mlp")


@pytest.mark.parametrize("lockstep", [False, True])
def test_off_reproduces_the_old_plan_exactly(lockstep: bool) -> None:
    assert _digest(_plan("parallelism.pipeline_scatter_gather=false", lockstep=lockstep)) == OLD_PLAN[lockstep]
    assert _digest(_plan(lockstep=lockstep)) != OLD_PLAN[lockstep]


def test_auto_is_off_with_sequence_parallelism_or_without_tp() -> None:
    for sets in (("parallelism.sequence_parallel=true",), ("parallelism.tp=1",)):
        off = _plan(*sets, "parallelism.pipeline_scatter_gather=false")
        for value in ("auto", "true"):
            assert _digest(_plan(*sets, f"parallelism.pipeline_scatter_gather={value}")) == _digest(off)
    assert _digest(_plan("parallelism.pipeline_scatter_gather=true")) == _digest(_plan())


def test_a_bad_value_is_a_one_line_error_naming_the_field() -> None:
    with pytest.raises(SpecError) as err:
        load_workload(WORKLOAD, ["parallelism.pipeline_scatter_gather=sometimes"], source="w.yaml")
    assert str(err.value) == (
        "--set parallelism.pipeline_scatter_gather=sometimes: parallelism.pipeline_scatter_gather: "
        "must be one of 'auto', True or False (got 'sometimes')"
    )
    bad = {**WORKLOAD, "parallelism": {**WORKLOAD["parallelism"], "pipeline_scatter_gather": "yes"}}
    with pytest.raises(SpecError) as err:
        load_workload(bad, [], source="w.yaml")
    assert (
        str(err.value)
        == "w.yaml: parallelism.pipeline_scatter_gather: must be one of 'auto', True or False (got 'yes')"
    )


def _step(model: str, scatter_gather: str | bool) -> dict[str, Any]:
    workload = {**WORKLOAD, "parallelism": {**WORKLOAD["parallelism"], "pipeline_scatter_gather": scatter_gather}}
    scenario = {
        "name": "sg",
        "topology": "dgx-a100",
        "nodes": 2,
        "workload": {**workload, "model": {**MODEL, "hidden": 2048, "ffn_hidden": 8192, "heads": 16, "seq_len": 2048}},
        "seed": 0,
        "options": {"lockstep": model != "exact", "collective_model": model},
    }
    prep = prepare(load_scenario(scenario, source="t"))
    res, net = simulate(prep)
    return summarize_replay(prep, res, net)[0]


@pytest.mark.parametrize("model", ["exact", "stream", "coflow"])
def test_scatter_gather_moves_a_tp_th_of_the_pipeline_bytes_under_every_collective_model(model: str) -> None:
    whole, split = _step(model, False), _step(model, "auto")
    assert split["bytes_by_class"]["pp"] == pytest.approx(whole["bytes_by_class"]["pp"] / 4, rel=1e-12)
    # the all-gathers add TP bytes (NVLink), and the step ends
    assert split["bytes_by_class"]["tp"] > whole["bytes_by_class"]["tp"]
    assert split["step_time_s"] > 0 and split["lockstep"] == (model != "exact")
