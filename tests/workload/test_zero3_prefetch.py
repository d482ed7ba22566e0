"""ZeRO 3 / FSDP parameter prefetch (``overlap.zero3_prefetch``): each layer's all-gather flies
under the layer before it."""

from __future__ import annotations

import itertools
from typing import Any

from ..replay.conftest import TINY_MOE, replay, tiny_scenario


def _zero3(prefetch: bool) -> dict[str, Any]:
    wl = {
        **TINY_MOE,
        "model": {**TINY_MOE["model"], "moe": None, "layers": 4},
        "parallelism": {"pp": 1, "tp": 1, "ep": 1, "zero_stage": 3},
        "overlap": {"zero3_prefetch": prefetch},
    }
    return tiny_scenario(workload=wl)


def test_prefetch_issues_each_gather_when_the_layer_before_starts() -> None:
    from netsim.config.scenario import load_scenario
    from netsim.run import prepare

    plan = prepare(load_scenario(_zero3(True))).plan
    ops = {o.id: o for o in plan.ops}
    rank0 = [o for o in plan.ops if o.rank == 0]
    gathers = [o for o in rank0 if o.name == "dp.fwd-param-gather" and o.microbatch == 0]
    assert len(gathers) == 4
    for prev, nxt in itertools.pairwise(gathers):
        # the next gather does not wait for the previous layer's compute: only for what it waited for
        computes = [ops[d] for d in nxt.deps if ops[d].kind == "compute"]
        assert all(c.layer < prev.layer for c in computes), (nxt.layer, [c.name for c in computes])
    off = prepare(load_scenario(_zero3(False))).plan
    fwd = [o for o in off.ops if o.rank == 0 and o.name == "dp.fwd-param-gather" and o.microbatch == 0]
    offops = {o.id: o for o in off.ops}
    assert any(offops[d].kind == "compute" and offops[d].layer == fwd[1].layer - 1 for d in fwd[1].deps)


def test_prefetch_hides_the_gathers_under_compute() -> None:
    _, _, on = replay(_zero3(True))
    _, _, off = replay(_zero3(False))
    assert on["step_time_s"] < off["step_time_s"]
    assert on["exposed_comm_s_by_class"]["dp"] < off["exposed_comm_s_by_class"]["dp"]
