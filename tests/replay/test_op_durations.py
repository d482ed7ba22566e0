"""Op durations the replay refuses: a compute op longer than a day (or not finite) is a compute
model out of range, and at such simulated times the float clock can no longer order a network's
microsecond events (an efficiency of 1e-300 used to run forever)."""

from __future__ import annotations

import math

import pytest

from netsim.errors import WorkloadError
from netsim.network.engine import Network
from netsim.replay import MAX_OP_S, replay
from netsim.topology import load_topology
from netsim.workload.plan import Collective, Op, StepPlan


def _plan(compute_s: float) -> StepPlan:
    done = Collective(("end",), "barrier", (0, 1), 0.0, "", "end")
    ops = [
        Op(0, 0, 0, "compute", "compute", "F.mlp", duration_s=compute_s),
        Op(1, 0, 0, "barrier", "sync", "e0", deps=[0], coll=done, ordered=False),
        Op(2, 1, 0, "barrier", "sync", "e1", coll=done, ordered=False),
    ]
    return StepPlan(steps=1, ops=ops, collectives={("end",): done}, devices=("n0.g0", "n0.g1"))


def _run(compute_s: float) -> float:
    net = Network(load_topology("dgx-h100", nodes=1), routing="shortest")
    return float(replay(_plan(compute_s), net).op_end[0])


def test_a_day_long_op_still_runs() -> None:
    assert _run(MAX_OP_S) == pytest.approx(MAX_OP_S)


@pytest.mark.parametrize("seconds", [2 * MAX_OP_S, 1e300, math.inf, math.nan])
def test_an_op_out_of_range_is_a_one_line_error(seconds: float) -> None:
    with pytest.raises(WorkloadError) as err:
        _run(seconds)
    line = str(err.value)
    assert "\n" not in line and line.startswith("op F.mlp of rank 0 would take ")
    assert "more than a day" in line and "options.flops_efficiency" in line
