"""``collective_model: auto``: the model, lockstep and routing samples chosen from the run's size."""

from __future__ import annotations

from typing import Any

import pytest

from netsim import auto
from netsim.collectives import COLLECTIVE_MODELS
from netsim.config.scenario import load_scenario
from netsim.run import prepare, simulate

from .conftest import tiny_scenario


def _prep(**options: Any) -> Any:
    base = tiny_scenario()
    base["options"] = {**base["options"], **options}
    return prepare(load_scenario(base, source="test"))


def test_the_exact_flow_count_is_what_an_exact_replay_simulates() -> None:
    prep = _prep(collective_model="exact")
    flows, alltoall = auto.exact_flows(prep.plan, prep.graph, prep.collectives.cost, prep.scenario.options.algorithms)
    _, net = simulate(prep)
    assert flows == net.num_flows and alltoall
    capped, _ = auto.exact_flows(prep.plan, prep.graph, prep.collectives.cost, limit=10)
    assert 10 < capped < flows  # stops counting once above the limit


def test_a_small_run_is_simulated_exactly() -> None:
    choice = _prep().choice
    assert (choice.requested, choice.collective_model, choice.lockstep, choice.routing_samples) == (
        "auto",
        "exact",
        False,
        None,
    )
    assert choice.exact_flows is not None and 0 < choice.exact_flows <= auto.EXACT_FLOW_LIMIT
    assert choice.line == f"auto: exact ({choice.exact_flows:,} flows, at most 20,000: every flow simulated)"


def test_above_the_limit_moe_runs_get_coflows_and_dense_runs_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "EXACT_FLOW_LIMIT", 50)
    prep = _prep()
    assert prep.choice.collective_model == "coflow"
    assert prep.collective_kwargs["model"] is prep.choice.model is COLLECTIVE_MODELS.get("coflow")
    assert prep.choice.line == "auto: coflow (more than 50 flows exact)"
    dense = tiny_scenario()
    dense["workload"] = {
        **dense["workload"],
        "model": {k: v for k, v in dense["workload"]["model"].items() if k != "moe"},
        "parallelism": {"pp": 2, "tp": 2},
    }
    assert prepare(load_scenario(dense, source="test")).choice.collective_model == "stream"
    # a lockstep plan's pipeline transfers (TP x DP instances merged) move as one coflow each
    dense["options"] = {**dense.get("options", {}), "lockstep": True}
    choice = prepare(load_scenario(dense, source="test")).choice
    assert choice.collective_model == "coflow"
    assert choice.line == "auto: coflow + lockstep (more than 50 flows exact; lockstep pipeline transfers as coflows)"


def test_large_runs_get_lockstep_and_one_routing_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "LARGE_RUN_RANKS", 16)
    choice = _prep().choice
    assert choice.lockstep and choice.routing_samples == 1
    assert choice.line.endswith("; 16 ranks >= 16 with expert parallelism)")
    kept = _prep(lockstep=False, routing_samples="all").choice  # what the user says stays
    assert not kept.lockstep and kept.routing_samples is None
    assert _prep(routing_samples=3).choice.routing_samples == 3


def test_explicit_models_change_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "LARGE_RUN_RANKS", 16)
    choice = _prep(collective_model="stream").choice
    assert (choice.collective_model, choice.lockstep, choice.routing_samples) == ("stream", False, None)
    assert choice.line == "stream (set by the user)"


def test_routing_samples_accepts_a_count_or_all_only() -> None:
    from netsim.errors import SpecError

    for bad in (0, "some", 2.5, True):
        base = tiny_scenario()
        base["options"] = {**base["options"], "routing_samples": bad}
        with pytest.raises(SpecError, match="must be an integer >= 1 or 'all'"):
            load_scenario(base, source="test")
