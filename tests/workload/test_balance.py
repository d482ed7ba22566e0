"""The balanced pipeline split (``parallelism.pipeline_layers: balanced``): the block split is the
exact min-max of a brute-force search, the stage search never loses to it, and a plan built
with it gives a heavy output head fewer layers."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import pytest

from netsim.config.workload import load_workload
from netsim.topology import load_topology
from netsim.workload.balance import balance_stages, min_max_split, stage_blocks
from netsim.workload.graph import build_plan
from netsim.workload.schedules import get_schedule
from tests.workload.plans import ShapeCompute


def _splits(n: int, blocks: int) -> Iterator[list[int]]:
    """Every split of ``n`` layers into ``blocks`` (only the first and the last may be empty)."""
    for cuts in itertools.combinations_with_replacement(range(n + 1), blocks - 1):
        sizes = [cuts[0], *(b - a for a, b in itertools.pairwise(cuts)), n - cuts[-1]]
        if all(s > 0 for s in sizes[1:-1]):
            yield sizes


def _loads(cost: Sequence[float], sizes: Sequence[int], extra: float) -> list[float]:
    out, i = [], 0
    for b, s in enumerate(sizes):
        out.append(sum(cost[i : i + s]) + (extra if b == len(sizes) - 1 else 0.0))
        i += s
    return out


def test_min_max_split_by_hand() -> None:
    assert min_max_split([1.0] * 10, 3) == [3, 3, 4]  # max 4, the most even, the remainder late
    assert min_max_split([1.0] * 10, 4, 2.0) == [3, 3, 3, 1]  # the head costs two layers
    assert min_max_split([1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0], 3) == [3, 1, 3]
    assert min_max_split([1.0] * 6, 8) == [0, 1, 1, 1, 1, 1, 1, 0]  # only the ends may be empty
    assert min_max_split([2.0] * 4, 4, 10.0) == [1, 1, 2, 0]  # the head alone in the last block
    with pytest.raises(ValueError, match="cannot fill"):
        min_max_split([1.0] * 3, 6)


def test_min_max_split_is_the_brute_force_optimum() -> None:
    rng = random.Random(7)
    for _ in range(150):
        n, blocks = rng.randint(3, 9), rng.randint(2, 5)
        if n < blocks - 2:
            continue
        cost = [rng.choice([0.5, 1.0, 1.5, 3.0]) for _ in range(n)]
        extra = rng.choice([0.0, 1.0, 4.0])
        best = min(max(_loads(cost, s, extra)) for s in _splits(n, blocks))
        got = min_max_split(cost, blocks, extra)
        assert sum(got) == n and all(s > 0 for s in got[1:-1])
        assert max(_loads(cost, got, extra)) == pytest.approx(best), (cost, blocks, extra)


def test_stage_blocks_follow_the_schedule() -> None:
    assert stage_blocks(get_schedule("1f1b", 4, 8)) == [(0,), (1,), (2,), (3,)]
    assert stage_blocks(get_schedule("interleaved-1f1b", 2, 4, 3)) == [(0, 2, 4), (1, 3, 5)]
    assert stage_blocks(get_schedule("dualpipe", 4, 8)) == [(0, 3), (1, 2), (1, 2), (0, 3)]


@pytest.mark.parametrize(
    ("name", "pp", "v"), [("interleaved-1f1b", 2, 2), ("dualpipe", 4, 1), ("interleaved-1f1b", 2, 3)]
)
def test_stage_balance_beats_the_block_split_and_often_finds_the_optimum(name: str, pp: int, v: int) -> None:
    """Models of identical layers (a few lighter dense ones first, an output head last): the
    stage search is never worse than the best block split and finds the brute-force optimum of
    the slowest stage in most cases (it is a local search)."""
    sched = get_schedule(name, pp, 8, v)
    blocks, stages = sched.num_virtual_stages, stage_blocks(sched)
    rng = random.Random(3)
    exact = total = 0
    for _ in range(60):
        n = rng.randint(blocks, 10)
        dense = rng.randint(0, 3)
        cost = [0.8] * dense + [1.0] * (n - dense)
        extra = rng.choice([0.0, 0.5, 1.0, 2.5, 4.0])

        def slowest(sizes: Sequence[int], cost: list[float] = cost, extra: float = extra) -> float:
            loads = _loads(cost, sizes, extra)
            return max(sum(loads[b] for b in held) for held in stages)

        got = slowest(balance_stages(cost, stages, blocks, extra))
        assert got <= slowest(min_max_split(cost, blocks, extra)) + 1e-9
        best = min(slowest(s) for s in _splits(n, blocks))
        assert got <= best * 1.1 + 1e-9
        exact += got <= best + 1e-9
        total += 1
    assert exact >= 0.9 * total


def test_balanced_plan_gives_the_heavy_head_fewer_layers() -> None:
    """``pipeline_layers: balanced`` on a model whose output head costs more than a layer: the
    last stage holds fewer layers than the others; a misspelt value is a one-line error."""
    base = ["model.layers=12", "model.vocab=400000", "parallelism.pp=4", "parallelism.tp=4"]
    graph = load_topology("dgx-h100", nodes=2)
    plan = build_plan(
        load_workload("gpt-dense", [*base, "parallelism.pipeline_layers=balanced"]), graph, ShapeCompute()
    )
    sizes = [len(b) for b in plan.layers_of_block]
    assert sum(sizes) == 12 and sizes[-1] < 3 and max(sizes) >= 4
    even = build_plan(load_workload("gpt-dense", base), graph, ShapeCompute())
    assert [len(b) for b in even.layers_of_block] == [3, 3, 3, 3]
    with pytest.raises(Exception, match=r"pipeline_layers"):
        load_workload("gpt-dense", [*base, "parallelism.pipeline_layers=balance"])


def test_balanced_dualpipe_plan_with_mtp_balances_the_mirrored_ranks() -> None:
    """A small DeepSeek-style model (MLA, MoE, one dense layer first, an MTP block after the last
    layer) under DualPipe: ``balanced`` moves layers off the ranks holding the MTP block and the
    heads (blocks 0 + 3), so the slowest rank computes less than under the even split."""
    from tests.workload.plans import MLA_MOE, small_plan

    model = {"layers": 8, "hidden": 256, "ffn_hidden": 512, "heads": 4, "vocab": 32000, "seq_len": 128, **MLA_MOE}
    par = {"pp": 4, "tp": 1, "ep": 4, "zero_stage": 1}

    def loads(*sets: str) -> tuple[list[int], list[float]]:
        plan = small_plan(model, par, "dualpipe", "model.mtp_depth=1", "num_microbatches=8", *sets)
        sizes = [len(b) for b in plan.layers_of_block]
        sizes[-1] -= 1  # the MTP block rides on the last block
        busy = [0.0] * 4
        for op in plan.ops:
            if op.kind == "compute" and op.step == 0:
                busy[plan.layout.coords(op.rank)[0]] += op.duration_s
        return sizes, busy

    even_sizes, even = loads()
    sizes, bal = loads("parallelism.pipeline_layers=balanced")
    assert even_sizes == [2, 2, 2, 2] and sum(sizes) == 8 and sizes != even_sizes
    assert bal[0] == pytest.approx(bal[3]) and bal[1] == pytest.approx(bal[2])  # mirrored ranks, same blocks
    assert max(bal) < max(even) and max(bal) - min(bal) < max(even) - min(even)
