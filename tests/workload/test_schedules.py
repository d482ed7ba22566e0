"""Pipeline schedules: every micro-batch's F and B once per chunk, in a dependency-respecting order."""

from __future__ import annotations

import pytest

from netsim.errors import SpecError, WorkloadError
from netsim.workload.schedules import SCHEDULES, get_schedule


def test_registry() -> None:
    assert {"gpipe", "1f1b", "interleaved-1f1b", "dualpipe", "zb-h1"} <= set(SCHEDULES)
    with pytest.raises(
        SpecError,
        match=r"schedule\.name: unknown schedule 'zigzag'; allowed: gpipe, 1f1b, "
        r"interleaved-1f1b, dualpipe, zb-h1$",
    ):
        get_schedule("zigzag", 2, 4)
    assert get_schedule("zb1p", 2, 4).name == "zb-h1"  # REFERENCE.md's spelling


def test_zb_h1_order_by_hand() -> None:
    s = get_schedule("zb-h1", 4, 6)

    def seq(stage: int) -> list[str]:
        return [a.kind + str(a.microbatch) for a in s.order(stage)]

    # stage 0: 1F1B with W right after its B (3 warm-up forwards + 1 = 4 in flight)
    assert seq(0) == [
        "F0",
        "F1",
        "F2",
        "F3",
        "B0",
        "W0",
        "F4",
        "B1",
        "W1",
        "F5",
        "B2",
        "W2",
        "B3",
        "W3",
        "B4",
        "W4",
        "B5",
        "W5",
    ]
    # stage 3 (no warm-up): W three backwards behind B, the rest in the cool-down
    assert seq(3) == [
        "F0",
        "B0",
        "F1",
        "B1",
        "F2",
        "B2",
        "F3",
        "B3",
        "W0",
        "F4",
        "B4",
        "W1",
        "F5",
        "B5",
        "W2",
        "W3",
        "W4",
        "W5",
    ]
    assert all(a.split_w for st in range(4) for a in s.order(st) if a.kind == "B")


def test_1f1b_order_by_hand() -> None:
    s = get_schedule("1f1b", 4, 6)
    seq = ["".join((a.kind, str(a.microbatch))) for a in s.order(1)]
    # stage 1 of 4: 2 warm-up forwards, then 1F1B, then the remaining backwards
    assert seq == ["F0", "F1", "F2", "B0", "F3", "B1", "F4", "B2", "F5", "B3", "B4", "B5"]
    assert [a.kind for a in s.order(3)][:4] == ["F", "B", "F", "B"]


@pytest.mark.parametrize(
    ("name", "pp", "m", "v"),
    [
        ("gpipe", 4, 5, 1),
        ("1f1b", 4, 3, 1),
        ("1f1b", 3, 8, 1),
        ("interleaved-1f1b", 4, 8, 2),
        ("interleaved-1f1b", 2, 4, 3),
        ("dualpipe", 4, 8, 1),
        ("dualpipe", 8, 20, 1),
        ("zb-h1", 4, 8, 1),
        ("zb-h1", 4, 2, 1),
    ],
)
def test_each_microbatch_once_per_chunk_and_backward_after_forward(name: str, pp: int, m: int, v: int) -> None:
    s = get_schedule(name, pp, m, v)
    for stage in range(pp):
        order = s.order(stage)
        chunks = {a.chunk for a in order}
        for kind in ("F", "B"):
            done = sorted((a.microbatch, a.chunk) for a in order if a.kind == kind)
            mbs_of_chunk = {c: sorted(mb for mb, cc in done if cc == c) for c in chunks}
            if name == "dualpipe":  # chunk 0 serves the first half of the micro-batches, chunk 1 the rest
                assert mbs_of_chunk == {0: list(range(m // 2)), 1: list(range(m // 2, m))}
            else:
                assert all(v_ == list(range(m)) for v_ in mbs_of_chunk.values()) and len(chunks) == v
        pos = {(a.kind, a.microbatch, a.chunk): i for i, a in enumerate(order)}
        for (kind, mb, c), i in pos.items():
            if kind == "B":
                assert pos[("F", mb, c)] < i
            if kind == "W":
                assert pos[("B", mb, c)] < i
        assert sum(a.kind == "W" for a in order) == sum(a.split_w for a in order)


def test_virtual_stage_mapping() -> None:
    inter = get_schedule("interleaved-1f1b", 4, 8, 2)
    assert inter.num_virtual_stages == 8
    assert [inter.locate(0, vs) for vs in (0, 3, 4, 7)] == [(0, 0), (3, 0), (0, 1), (3, 1)]
    dual = get_schedule("dualpipe", 4, 8)
    assert dual.num_virtual_stages == 4
    assert dual.locate(0, 0) == (0, 0) and dual.locate(7, 0) == (3, 1)
    assert dual.virtual_stage(0, 1) == 3


def test_schedule_constraints() -> None:
    with pytest.raises(WorkloadError, match="num_microbatches"):
        get_schedule("interleaved-1f1b", 4, 6, 2)
    with pytest.raises(WorkloadError, match=r"parallelism.pp"):
        get_schedule("dualpipe", 3, 12)
    with pytest.raises(WorkloadError, match="num_microbatches"):
        get_schedule("dualpipe", 4, 6)
    with pytest.raises(WorkloadError, match="virtual_chunks"):
        get_schedule("1f1b", 4, 8, 2)


def test_work_units_and_final_weight_gradients() -> None:
    one = get_schedule("1f1b", 2, 3)
    units = one.work(0)
    assert all(len(u.actions) == 1 for u in units)
    # only the last micro-batch's backward completes the weight gradients of the chunk
    finals = [(u.actions[0].kind, u.actions[0].microbatch) for u in units if u.final[0]]
    assert finals == [("B", 2)]
    assert one.replica_stages(1) == (1,)
    dual = get_schedule("dualpipe", 4, 8)
    for stage in range(4):
        units = dual.work(stage)
        assert [a for u in units for a in u.actions] == dual.order(stage)
        pairs = [u for u in units if len(u.actions) == 2]
        assert pairs and all(
            u.actions[0].kind == "F" and u.actions[0].overlap and u.actions[1].kind == "B" for u in pairs
        )
        # every chunk's gradients become final exactly once, in a W or a non-deferring B
        final = [a for u in units for a, f in zip(u.actions, u.final, strict=True) if f]
        assert sorted(a.chunk for a in final) == [0, 1]
        assert all(a.kind == "W" or (a.kind == "B" and not a.split_w) for a in final)
        assert dual.replica_stages(stage) == (stage, 3 - stage)


def test_combined_1f1b_pairs_each_steady_forward_with_an_independent_backward() -> None:
    """Megatron-Core's combined 1F1B (overlap_moe_expert_parallel_comm, schedules.py): one more
    warm-up forward, then every forward runs together with the backward after it."""
    one = get_schedule("1f1b", 1, 4, a2a_overlap=True)
    units = [[a.kind + str(a.microbatch) for a in u.actions] for u in one.work(0)]
    # combined_1f1b_schedule_for_no_pipelining: F0 alone, then B(k-1) + F(k), then B3 alone
    assert units == [["F0"], ["F1", "B0"], ["F2", "B1"], ["F3", "B2"], ["B3"]]
    inter = get_schedule("interleaved-1f1b", 4, 8, 2, a2a_overlap=True)
    plain = get_schedule("interleaved-1f1b", 4, 8, 2)
    for stage in range(4):
        warm = [a.kind for a in inter.order(stage)].index("B")
        assert warm == [a.kind for a in plain.order(stage)].index("B") + 1
        order = inter.order(stage)
        assert sorted((a.kind, a.microbatch, a.chunk) for a in order) == sorted(
            (a.kind, a.microbatch, a.chunk) for a in plain.order(stage)
        )
        for u in inter.work(stage):
            if len(u.actions) == 2:
                f, b = u.actions
                assert (f.kind, b.kind) == ("F", "B") and (f.microbatch, f.chunk) != (b.microbatch, b.chunk)


def test_combined_1f1b_needs_megatrons_schedules() -> None:
    for name, pp in (("1f1b", 4), ("gpipe", 1), ("dualpipe", 4), ("zb-h1", 2)):
        with pytest.raises(WorkloadError, match=r"overlap\.ep_a2a_overlap: the combined 1F1B runs on"):
            get_schedule(name, pp, 8, a2a_overlap=True)
