"""Megatron-Core's combined 1F1B (``overlap.ep_a2a_overlap``): each steady-state forward runs
with another micro-batch's backward, layer segments interleaved, so that the expert all-to-alls
of one fly under the other's compute.  On a tiny MoE step (EP 8 over two servers) the exposed
expert traffic falls and the step gets shorter; the schedule's constraints are one-line errors."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.scenario import load_scenario
from netsim.errors import WorkloadError
from netsim.run import prepare

from .conftest import TINY_MOE, replay, tiny_scenario


def _scenario(overlap: bool, **parallelism: Any) -> dict[str, Any]:
    workload = {
        **TINY_MOE,
        "parallelism": {**TINY_MOE["parallelism"], "pp": 1, **parallelism},
        "num_microbatches": 6,
        "schedule": {"name": "1f1b"},
        "overlap": {"ep_a2a_overlap": overlap},
    }
    return tiny_scenario(workload=workload)


def _summary(scenario: dict[str, Any]) -> dict[str, Any]:
    return replay(scenario)[2]


def test_the_combined_1f1b_hides_expert_all_to_alls() -> None:
    plain, combined = _summary(_scenario(False)), _summary(_scenario(True))
    ep = [s["exposed_comm_s_by_class"]["ep"] for s in (plain, combined)]
    # 3.32 -> 2.63 ms; the exposed all-to-all time 0.70 -> 0.16 ms
    assert combined["step_time_s"] < plain["step_time_s"] * 0.85
    assert ep[1] < ep[0] * 0.5


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"ep": 1}, "needs MoE layers and parallelism.ep > 1"), ({"pp": 2}, "the combined 1F1B runs on interleaved-1f1b")],
)
def test_the_combined_1f1b_constraints(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(WorkloadError, match=match):
        prepare(load_scenario(_scenario(True, **changes)))


def test_no_full_recomputation_under_the_combined_1f1b() -> None:
    sc = _scenario(True)
    sc["workload"]["training"] = {"recompute": "full"}
    with pytest.raises(WorkloadError, match=r"overlap\.ep_a2a_overlap: cannot run with training.recompute full"):
        prepare(load_scenario(sc))
