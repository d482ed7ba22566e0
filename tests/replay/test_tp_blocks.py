"""A sequence-parallel block's backward (netsim.workload.tp_blocks): Megatron-Core's linear
layer all-gathers the block's input again beside the column-parallel GEMM's input gradient and
reduce-scatters that gradient beside its weight gradient; the norm's backward waits for it.
The cut moves no kernel: the block's ops add up to its unsplit backward.  Without sequence
parallelism the block stays one op and an all-reduce after it.  NCCL's TP collectives hold one
SM per channel while in flight (``overlap.nccl_sms.tp`` overrides; 0: none)."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.workload.costs import ModelCosts
from netsim.workload.kernel_calls import kernels_time_s

from .conftest import replay, tiny_scenario
from .test_tp_comm_overlap import DENSE as UB_DENSE

#: the userbuffers tests' dense model at TP 4
DENSE: dict[str, Any] = {**UB_DENSE, "parallelism": {**UB_DENSE["parallelism"], "tp": 4}}


def _run(**parallelism: Any) -> tuple[Any, Any, dict[str, Any]]:
    wl = {**DENSE, "parallelism": {**DENSE["parallelism"], **parallelism}}
    return replay(tiny_scenario(workload=wl))


def _ops(prep: Any, layer: int = 1) -> dict[str, Any]:
    return {
        (o.name if o.coll is None else o.coll.phase): o
        for o in prep.plan.ops
        if o.rank == 0 and o.layer == layer and o.microbatch == 0
    }


def test_the_input_is_gathered_again_beside_the_input_gradient() -> None:
    prep, res, _ = _run()
    ops = _ops(prep)
    start, end = res.op_start, res.op_end
    for blk in ("attn", "mlp"):
        ag_in, fwd_ag = ops[f"bwd-{blk}-ag-in"].coll, ops[f"fwd-{blk}-ag"].coll
        assert ag_in.op == "all_gather" and ag_in.nbytes == fwd_ag.nbytes and ag_in.ranks == fwd_ag.ranks
        post, dgrad, wgrad, norm = (ops[f"BW.{blk}-{s}"] for s in ("post", "dgrad", "wgrad", "norm"))
        # the output gradient's all-gather before the block's backward, as before
        assert start[post.id] >= end[ops[f"bwd-{blk}-ag"].id]
        # the input's all-gather beside the input-gradient GEMM
        assert start[ops[f"bwd-{blk}-ag-in"].id] == start[dgrad.id] >= end[post.id]
        # the input gradient's reduce-scatter beside the weight-gradient GEMM, which waits for
        # the gathered input; the norm waits for both
        rs = ops[f"bwd-{blk}-rs"]
        assert start[rs.id] == start[wgrad.id] == pytest.approx(max(end[dgrad.id], end[ops[f"bwd-{blk}-ag-in"].id]))
        assert start[norm.id] == pytest.approx(max(end[rs.id], end[wgrad.id]))


def test_the_cut_moves_no_kernel() -> None:
    prep, _, _ = _run()
    spec = prep.workload
    costs = ModelCosts(spec.model, 1, 4)
    ops = _ops(prep)
    for blk, calls in (("attn", costs.attention("BW")), ("mlp", costs.mlp("BW"))):
        parts = sum(ops[f"BW.{blk}-{s}"].duration_s for s in ("post", "dgrad", "wgrad", "norm"))
        assert parts == pytest.approx(kernels_time_s(calls, prep.compute, spec.model.dtype), rel=1e-12)


def test_without_sequence_parallelism_the_block_is_one_op_and_an_all_reduce() -> None:
    prep, res, _ = _run(sequence_parallel=False)
    ops = _ops(prep)
    assert "BW.mlp" in ops and not any(k.startswith("BW.mlp-") for k in ops)
    assert not any(k.endswith("-ag") or k.endswith("-ag-in") for k in ops)
    ar = ops["bwd-mlp-ar"]
    assert ar.coll.op == "all_reduce" and res.op_start[ar.id] >= res.op_end[ops["BW.mlp"].id]


def test_nccl_tp_collectives_hold_their_channels_sms() -> None:
    """One SM per channel of NCCL's kernel, as its tuner gives the call; the input-gradient GEMM
    beside the input's all-gather runs on the other SMs and takes longer than its duration."""
    from netsim.collectives.setup import nccl_cost

    prep, res, s_held = _run()
    ops = _ops(prep)
    sms = int(prep.graph.graph["accelerator"]["sms"])
    coll = ops["bwd-mlp-ag-in"].coll
    devices = [prep.plan.devices[r] for r in coll.ranks]
    channels = nccl_cost(prep.graph).choice("all_gather", devices, coll.nbytes).n_channels
    assert channels > 0 and coll.sm_share == pytest.approx(channels / sms)
    dgrad = ops["BW.mlp-dgrad"]
    assert res.op_end[dgrad.id] - res.op_start[dgrad.id] > dgrad.duration_s * (1 + 1e-9)
    # overridden, and switched off
    p16, _, _ = _run_overlap({"nccl_sms": {"tp": 16}})
    assert _ops(p16)["bwd-mlp-ag-in"].coll.sm_share == pytest.approx(16 / sms)
    p0, r0, s_free = _run_overlap({"nccl_sms": {"tp": 0}})
    free = _ops(p0)
    assert all(o.coll.sm_share == 0.0 for o in free.values() if o.coll is not None)
    d0 = free["BW.mlp-dgrad"]
    assert r0.op_end[d0.id] - r0.op_start[d0.id] == pytest.approx(d0.duration_s)
    assert s_free["step_time_s"] < s_held["step_time_s"]


def test_a_tp_sm_count_the_accelerator_cannot_give_is_a_one_line_error() -> None:
    from netsim.errors import SpecError

    with pytest.raises(SpecError) as info:
        _run_overlap({"nccl_sms": {"tp": 132}})
    msg = str(info.value)
    assert "overlap.nccl_sms.tp" in msg and "131" in msg and "\n" not in msg


def _run_overlap(overlap: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    return replay(tiny_scenario(workload={**DENSE, "overlap": overlap}))
