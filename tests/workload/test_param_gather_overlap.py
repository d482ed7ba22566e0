"""ZeRO 1/2 parameter all-gathers beside the next forward (``overlap.param_gather_overlap``,
Megatron's overlap_param_gather): the same buckets as the gradient reduction, each layer's first
forward waiting for its own, nothing gathered after the optimizer."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.errors import WorkloadError

from ..replay.conftest import TINY_MOE, replay, tiny_scenario


def _dense(overlap: bool, *, pp: int = 1, chunks: int = 1, zero: int = 1, layers: int = 8) -> dict[str, Any]:
    wl = {
        **TINY_MOE,
        "model": {**TINY_MOE["model"], "moe": None, "layers": layers, "hidden": 1024, "ffn_hidden": 4096},
        "parallelism": {"pp": pp, "tp": 1, "ep": 1, "zero_stage": zero},
        "num_microbatches": 4,
        "grad_bucket_bytes": "8MB",
        "overlap": {"param_gather_overlap": overlap},
    }
    if chunks > 1:
        wl["schedule"] = {"name": "interleaved-1f1b", "virtual_chunks": chunks}
    return tiny_scenario(workload=wl)


def _plan(scenario: dict[str, Any]) -> Any:
    from netsim.config.scenario import load_scenario
    from netsim.run import prepare

    return prepare(load_scenario(scenario)).plan


def _gathers(plan: Any, rank: int = 0) -> list[Any]:
    return [o for o in plan.ops if o.rank == rank and o.coll is not None and o.coll.phase == "param-all-gather"]


def test_the_gathers_move_from_after_the_optimizer_to_the_forward() -> None:
    off, on = _plan(_dense(False)), _plan(_dense(True))
    g_off, g_on = _gathers(off), _gathers(on)
    # the same buckets, the same bytes
    assert len(g_off) == len(g_on) > 1
    assert sorted(o.coll.nbytes for o in g_off) == pytest.approx(sorted(o.coll.nbytes for o in g_on))
    opt_on = next(o for o in on.ops if o.rank == 0 and o.name == "optimizer")
    assert all(opt_on.id not in o.deps for o in g_on)
    assert all(o.issue < opt_on.issue for o in g_on)
    ops = {o.id: o for o in on.ops}
    # every layer's first forward (micro-batch 0) waits for a gather, the later micro-batches do not
    # wait for one directly
    gather_ids = {o.id for o in g_on}
    waited: set[int] = set()
    for o in on.ops:
        if o.rank == 0 and o.kind == "compute" and o.name.startswith("F."):
            hit = gather_ids & set(o.deps)
            if o.microbatch == 0:
                waited |= hit
            else:
                assert not hit, o.name
    assert waited == gather_ids
    # unaligned (one chunk): each bucket after the one before it, in forward order
    chained = [g for g in g_on if any(d in gather_ids for d in g.deps)]
    assert len(chained) == len(g_on) - 1
    assert all(ops[d].kind != "compute" or ops[d].microbatch <= 0 for g in g_on for d in g.deps)


def test_aligned_chunks_issue_their_gathers_together() -> None:
    """PP 2 with 3 virtual chunks: stage 0 holds blocks 0, 2 and 4; the first two chunks' buckets
    are issued at the step's start (nothing of the step before them), the third chunk's when the
    second chunk's first forward starts; no bucket waits for another."""
    plan = _plan(_dense(True, pp=2, chunks=3, layers=12))
    g = _gathers(plan)
    gather_ids = {o.id for o in g}
    assert not any(d in gather_ids for o in g for d in o.deps)
    by_block: dict[int, list[Any]] = {}
    for o in g:
        by_block.setdefault(o.coll.key[2], []).append(o)
    assert sorted(by_block) == [0, 2, 4]
    assert all(not o.deps for b in (0, 2) for o in by_block[b])
    assert all(o.deps for o in by_block[4])


def test_overlap_shortens_a_step_whose_gathers_were_exposed() -> None:
    _, _, off = replay(_dense(False))
    _, _, on = replay(_dense(True))
    assert on["step_time_s"] < off["step_time_s"]
    assert on["exposed_comm_s_by_class"]["dp"] < off["exposed_comm_s_by_class"]["dp"]


@pytest.mark.parametrize("zero", [0, 3])
def test_needs_zero_1_or_2(zero: int) -> None:
    with pytest.raises(WorkloadError, match="zero_stage 1 or 2") as err:
        _plan(_dense(True, zero=zero))
    assert err.value.field == "overlap.param_gather_overlap"
