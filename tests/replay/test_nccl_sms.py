"""NCCL's kernels hold one SM per thread block while a DP, PP or CP call is in flight.

A collective's blocks are the channels NCCL's tuner gives it; a send/recv's, the blocks of NCCL's
p2p kernel by its channel rule.  The compute beside them runs on the other SMs, so a backward that
overlaps a gradient reduce-scatter takes longer than its duration.  ``overlap.nccl_sms`` sets a
class's count (0: none); an accelerator without an SM count holds nothing, and asking it to is a
one-line error naming ``accelerator.sms``."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.calibration.shared_sms import kernel_sm_share

from .conftest import replay, tiny_scenario
from .test_tp_comm_overlap import DENSE

#: the userbuffers tests' dense model on two DGX H100 servers: TP 2, PP 2, DP 4, the gradient
#: reduce-scatter overlapped with the last micro-batch's backward
PIPELINED: dict[str, Any] = {**DENSE, "parallelism": {**DENSE["parallelism"], "pp": 2}, "num_microbatches": 4}

SMS = 132  # the H100's


def _run(overlap: dict[str, Any] | None = None, **parallelism: Any) -> tuple[Any, Any, dict[str, Any]]:
    wl = {**PIPELINED, "parallelism": {**PIPELINED["parallelism"], **parallelism}, "overlap": overlap or {}}
    return replay(tiny_scenario(workload=wl))


def _colls(prep: Any, cls: str) -> list[Any]:
    return [c for c in prep.plan.collectives.values() if c.traffic_class == cls]


def test_a_dp_collective_holds_one_sm_per_channel_of_nccls_choice() -> None:
    from netsim.collectives.setup import nccl_cost

    prep, _, _ = _run()
    nccl = nccl_cost(prep.graph)
    dp = _colls(prep, "dp")
    assert {c.op for c in dp} == {"reduce_scatter", "all_gather"}
    for c in dp:
        ch = nccl.choice(c.op, [prep.plan.devices[r] for r in c.ranks], c.nbytes)
        assert ch is not None and ch.n_channels >= 1
        assert c.sm_share == pytest.approx(kernel_sm_share(ch.n_channels, SMS)) and c.sm_share > 0


def test_a_pipeline_transfer_holds_the_blocks_of_nccls_p2p_kernel() -> None:
    from netsim.collectives.setup import nccl_cost

    prep, _, _ = _run()
    nccl = nccl_cost(prep.graph)
    pp = _colls(prep, "pp")
    assert pp
    for c in pp:
        rule = nccl.p2p_rule(list(c.comm))
        assert c.sm_share == pytest.approx(kernel_sm_share(rule.kernel_ctas(c.nbytes, 1), SMS)) and c.sm_share > 0


def test_the_backward_beside_an_overlapped_reduction_runs_on_the_other_sms() -> None:
    prep, res, held = _run()
    _, _, free = _run({"nccl_sms": {"dp": 0, "pp": 0}})
    assert held["step_time_s"] > free["step_time_s"]
    # some backward op of rank 0 overlapped a DP reduce-scatter and took longer than its duration
    slowed = [
        o
        for o in prep.plan.ops
        if o.rank == 0
        and o.kind == "compute"
        and o.sm_share > 0
        and res.op_end[o.id] - res.op_start[o.id] > o.duration_s * (1 + 1e-9)
    ]
    assert slowed


def test_a_given_count_overrides_and_zero_holds_none() -> None:
    prep, _, _ = _run({"nccl_sms": {"dp": 8, "pp": 0}})
    assert all(c.sm_share == pytest.approx(8 / SMS) for c in _colls(prep, "dp"))
    assert all(c.sm_share == 0.0 for c in _colls(prep, "pp"))
    assert any(c.sm_share > 0 for c in _colls(prep, "tp"))  # the classes not given keep NCCL's rule


def test_context_parallel_exchanges_hold_sms() -> None:
    prep, _, _ = _run(cp=2)
    ring = [c for c in _colls(prep, "cp") if c.op == "sendrecv"]
    assert ring and all(c.sm_share > 0 for c in ring)
    prep6, _, _ = _run({"nccl_sms": {"cp": 6}}, cp=2)
    assert all(c.sm_share == pytest.approx(6 / SMS) for c in _colls(prep6, "cp"))
    gathered, _, _ = _run(cp=2, cp_comm_type="all_gather")
    cp = _colls(gathered, "cp")
    assert {c.op for c in cp} == {"all_gather", "reduce_scatter"} and all(c.sm_share > 0 for c in cp)


@pytest.mark.parametrize("cls", ["tp", "pp"])
def test_an_accelerator_without_an_sm_count_holds_nothing_and_asking_is_an_error(cls: str) -> None:
    from netsim.errors import SpecError

    fp16 = {**PIPELINED, "model": {**PIPELINED["model"], "dtype": "fp16"}}  # the 910A has no bf16 peak
    sc = {**tiny_scenario(workload=fp16), "topology": "ascend-910a", "nodes": 2}
    prep, _, _ = replay(sc)
    assert all(c.sm_share == 0.0 for c in prep.plan.collectives.values())
    with pytest.raises(SpecError) as info:
        replay({**sc, "workload": {**fp16, "overlap": {"nccl_sms": {cls: 4}}}})
    msg = str(info.value)
    assert "accelerator.sms" in msg and f"overlap.nccl_sms.{cls}" in msg and "\n" not in msg


def test_a_count_that_leaves_no_sm_is_a_one_line_error() -> None:
    from netsim.errors import SpecError

    with pytest.raises(SpecError) as info:
        _run({"nccl_sms": {"dp": SMS}})
    msg = str(info.value)
    assert "overlap.nccl_sms.dp" in msg and str(SMS - 1) in msg and "\n" not in msg
