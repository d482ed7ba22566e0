"""A balanced pipeline split: layers per block chosen from the cost model.

Frameworks cut the layers into pipeline blocks (virtual stages) by hand: Megatron-LM's
``--decoder-first/last-pipeline-num-layers`` and ``--pipeline-model-parallel-layout``, the layouts
its DeepSeek-V3 recipes ship (lighter first and last stages for the embedding, the output head and
the multi-token-prediction block).  ``parallelism.pipeline_layers: balanced`` asks netsim for such a
layout: the contiguous split of the model's layers into the schedule's blocks whose slowest
*stage* computes least per micro-batch, as a team that tunes its layout would find.

The cost of a block is the compute one micro-batch spends in it, forward and backward, from the
same kernel calls and compute model the plan is built from (:class:`~netsim.workload.costs.ModelCosts`):

* a layer: attention, then the dense MLP or the MoE block (router, the experts at the expected
  ``tokens x top_k`` rows a rank receives under balanced routing, unpermute), forward and
  backward, plus what the recompute mode repeats (the whole forward under ``full``, the
  attention core under ``selective``, the norms and MLA up-projections under ``norms-mla-up``);
* the last block also runs the output head and the multi-token-prediction blocks (which follow
  the last layer); the embedding lookup is not timed (nor is it in the plan).

Communication is not counted: exposed tensor-parallel and expert all-to-all time grows with the
same layers, and a schedule that overlaps it (DualPipe) hides it.  Under ``recompute:
full`` with ``recompute_num_layers`` every layer is counted as recomputed (an upper bound: the
block method recomputes the first N layers of every block).

A stage's load is the sum of the blocks it holds (one block under 1F1B; blocks ``s, s + p, ...``
interleaved; ``s`` and ``p - 1 - s`` under DualPipe).  :func:`min_max_split` finds the split whose
slowest *block* is fastest, the most even on ties (two dynamic programmes over the layers): with
one block per stage that is the answer.  With several, :func:`balance_stages` searches from it
(and from the even split), one layer moved between two blocks at a time, for the slowest stage;
a local search, not guaranteed optimal (tests/workload/test_balance.py bounds it against brute
force).  Only the first and the last block may hold no layer (the layout of Llama 3's
interleaved pipeline, arXiv 2407.21783 section 3.3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from netsim.config.workload import WorkloadSpec
from netsim.workload.costs import ModelCosts
from netsim.workload.kernel_calls import KernelCall, Part, TimeModel, kernels_time_s
from netsim.workload.plan import split_layers
from netsim.workload.recompute import RecomputeMode
from netsim.workload.schedules import Schedule

__all__ = ["balance_stages", "balanced_layers", "layer_calls", "layer_costs_s", "min_max_split", "stage_blocks"]

#: relative slack when comparing float block costs with the optimum
_TOL = 1e-9


def layer_calls(spec: WorkloadSpec, costs: ModelCosts, layer: int, mode: RecomputeMode, etp: int) -> list[KernelCall]:
    """The kernel calls of one micro-batch through ``layer``: forward, backward, recomputation."""
    model = spec.model
    window = model.attention_window(layer)

    def block(part: Part) -> list[KernelCall]:
        calls = list(costs.attention(part, window))
        if not model.is_moe_layer(layer):
            return calls + costs.mlp(part)
        assert model.moe is not None
        rows = costs.route_tokens * model.moe.top_k * etp  # expected rows under balanced routing
        return calls + costs.moe_pre(part) + costs.experts(part, rows) + costs.moe_post(part)

    calls = block("F") + block("BW")
    if mode.whole_layer:
        calls += block("F")
    if mode.attention_core:
        calls += costs.attention_core("F", window)
    if mode.norms or mode.mla_up:
        calls += costs.recompute_norms_mla(True, mode.norms, mode.mla_up)
        calls += costs.recompute_norms_mla(False, mode.norms, mode.mla_up)
    if mode.mlp and not model.is_moe_layer(layer):
        calls += costs.mlp("F")
    if model.is_moe_layer(layer):
        assert model.moe is not None
        rows = costs.route_tokens * model.moe.top_k * etp
        if mode.moe_act:
            calls += costs.expert_act(rows)
        if mode.moe:
            calls += costs.moe_pre("F") + costs.experts("F", rows) + costs.moe_post("F")
        if mode.shared_experts:
            calls += costs.shared_experts("F", "fc1") + costs.shared_experts("F", "fc2")
    if model.is_mtp_layer(layer):
        calls += costs.mtp_in("F") + costs.mtp_in("BW") + costs.head("F") + costs.head("BW")
    return calls


def layer_costs_s(
    spec: WorkloadSpec, costs: ModelCosts, compute: TimeModel, mode: RecomputeMode, etp: int = 1
) -> tuple[list[float], float]:
    """Seconds one micro-batch computes in each transformer layer (forward + backward +
    recomputation), and what the last block adds: the output head and the multi-token-prediction
    blocks."""
    dtype = spec.model.dtype
    cache: dict[tuple[KernelCall, str | None], float] = {}

    def seconds(calls: Sequence[KernelCall]) -> float:
        return kernels_time_s(calls, compute, dtype, cache)

    per_layer = [seconds(layer_calls(spec, costs, x, mode, etp)) for x in range(spec.model.layers)]
    tail = seconds([*costs.head("F"), *costs.head("BW")])
    tail += sum(seconds(layer_calls(spec, costs, x, mode, etp)) for x in spec.model.mtp_layers())
    return per_layer, tail


def min_max_split(cost_s: Sequence[float], blocks: int, last_extra_s: float = 0.0) -> list[int]:
    """Layers per block: the contiguous split of ``cost_s`` into ``blocks`` blocks (every block
    but the first and the last non-empty; the last also costs ``last_extra_s``) whose slowest
    block is fastest, the most even such split on ties."""
    n = len(cost_s)
    if blocks < 1 or n < blocks - (2 if blocks > 2 else 0):
        raise ValueError(f"{n} layers cannot fill {blocks} blocks")
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(cost_s, dtype=np.float64))])
    best = _dp(prefix, blocks, last_extra_s, np.asarray, np.maximum, cap=None)[0]
    _, cut = _dp(prefix, blocks, last_extra_s, np.square, np.add, cap=best * (1 + _TOL) + 1e-300)
    sizes: list[int] = []
    j = n
    for b in range(blocks - 1, -1, -1):
        i = int(cut[b][j])
        sizes.append(j - i)
        j = i
    return sizes[::-1]


def _dp(
    prefix: np.ndarray,
    blocks: int,
    extra: float,
    cost: Callable[[np.ndarray], np.ndarray],
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    cap: float | None,
) -> tuple[float, list[np.ndarray]]:
    """``value[b][j]``: the best ``combine`` of ``cost(block)`` over blocks ``0..b`` holding
    layers ``0..j-1``; ``cut[b][j]``: where block ``b`` starts.  Blocks costing more than
    ``cap`` are not allowed."""
    n = len(prefix) - 1
    inf = np.inf
    value = np.full(n + 1, inf)
    value[0] = 0.0
    cuts: list[np.ndarray] = []
    idx = np.arange(n + 1)
    for b in range(blocks):
        last = b == blocks - 1
        may_be_empty = b == 0 or last
        new = np.full(n + 1, inf)
        cut = np.zeros(n + 1, dtype=np.int64)
        for j in range(n + 1) if not last else (n,):
            hi = j if may_be_empty else j - 1  # block b holds layers i..j-1
            if hi < 0:
                continue
            i = idx[: hi + 1]
            block = prefix[j] - prefix[i] + (extra if last else 0.0)
            cand = combine(value[i], cost(block))
            if cap is not None:
                cand = np.where(block <= cap, cand, inf)
            k = int(np.argmin(cand))
            new[j], cut[j] = cand[k], k
        value = new
        cuts.append(cut)
    return float(value[n]), cuts


def stage_blocks(schedule: Schedule) -> list[tuple[int, ...]]:
    """The blocks every stage computes: its chunks' (``s, s + p, ...`` interleaved), and under
    DualPipe block ``s`` and its mirror ``p - 1 - s``."""
    out = []
    for s in range(schedule.pp):
        chunks = range(schedule.chunks_per_stage)
        held = {schedule.virtual_stage(r, c) for r in schedule.replica_stages(s) for c in chunks}
        out.append(tuple(sorted(held)))
    return out


def _score(sizes: Sequence[int], prefix: np.ndarray, extra: float, stages: np.ndarray) -> tuple[float, ...]:
    """(slowest stage, slowest block, stages that slow, sum of squared block costs, sum of
    squared stage loads) of a split: the stages first, then the most even blocks."""
    ends = np.cumsum(sizes)
    block = prefix[ends] - prefix[ends - np.asarray(sizes)]
    block[-1] += extra
    load = block[stages].sum(axis=1)
    top = float(load.max())
    at_top = float(np.count_nonzero(load >= top * (1 - _TOL)))
    return top, float(block.max()), at_top, float(np.square(block).sum()), float(np.square(load).sum())


def balance_stages(
    cost_s: Sequence[float], stages: Sequence[tuple[int, ...]], blocks: int, last_extra_s: float = 0.0
) -> list[int]:
    """Layers per block balancing the *stages* (a stage's load is the sum of the blocks it holds,
    :func:`stage_blocks`): a local search from :func:`min_max_split` whose move takes one layer
    from a block to another (the blocks between shift by one layer), scored by (slowest stage,
    slowest block, stages that slow, sum of squared block costs, sum of squared stage loads):
    balanced stages first, then even blocks, which the schedule's bubbles follow.  The best
    improving move is taken; where none improves, the best move to an unvisited split of equal
    score (at most ``blocks`` such moves in a row) crosses a plateau.  With one block per stage
    the dynamic programme's split is returned as it is (exact); a local optimum otherwise."""
    starts = _starts(cost_s, blocks, last_extra_s)
    if all(len(held) == 1 for held in stages):
        return starts[0]  # one block per stage: the dynamic programme's split is the answer
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(cost_s, dtype=np.float64))])
    held = np.asarray(stages, dtype=np.int64)  # [stage, i]: the i-th block the stage holds
    found = [_descend(start, prefix, last_extra_s, held, blocks) for start in starts]
    return min(found, key=lambda f: f[0])[1]


def _starts(cost_s: Sequence[float], blocks: int, last_extra_s: float) -> list[list[int]]:
    """Where the local search starts: the best block split, and the even split (the remainder
    to the blocks after the first) where the layers fill every block."""
    out = [min_max_split(cost_s, blocks, last_extra_s)]
    if len(cost_s) >= blocks:
        out.append([len(b) for b in split_layers(len(cost_s), blocks)])
    return out


def _descend(
    sizes: list[int], prefix: np.ndarray, last_extra_s: float, stages: np.ndarray, blocks: int
) -> tuple[tuple[float, ...], list[int]]:
    """The local search of :func:`balance_stages` from ``sizes``: (best score, its split)."""
    score = _score(sizes, prefix, last_extra_s, stages)
    best_sizes, best_score = sizes, score
    seen = {tuple(sizes)}
    sideways = 0
    while sideways <= blocks:
        move: tuple[tuple[float, ...], list[int]] | None = None
        for trial in _moves(sizes, blocks):
            if tuple(trial) in seen:
                continue
            sc = _score(trial, prefix, last_extra_s, stages)
            if not _better(score, sc) and (move is None or _better(sc, move[0])):
                move = (sc, trial)
        if move is None:
            break
        sideways = sideways + 1 if not _better(move[0], score) else 0
        score, sizes = move
        seen.add(tuple(sizes))
        if _better(score, best_score):
            best_sizes, best_score = sizes, score
    return best_score, best_sizes


def _moves(sizes: list[int], blocks: int) -> list[list[int]]:
    """Every split one layer away: a layer taken from one block and given to another."""
    out = []
    for src in range(blocks):
        if sizes[src] <= (0 if src in (0, blocks - 1) else 1):
            continue
        for dst in range(blocks):
            if dst != src:
                trial = list(sizes)
                trial[src] -= 1
                trial[dst] += 1
                out.append(trial)
    return out


def _better(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` beats ``b`` lexicographically, beyond float noise."""
    for x, y in zip(a, b, strict=True):
        if x < y * (1 - _TOL):
            return True
        if x > y * (1 + _TOL):
            return False
    return False


def balanced_layers(
    spec: WorkloadSpec, costs: ModelCosts, compute: TimeModel, mode: RecomputeMode, schedule: Schedule, etp: int = 1
) -> list[int]:
    """``parallelism.pipeline_layers: balanced``: layers per block from :func:`balance_stages`
    of :func:`layer_costs_s` over the schedule's stages."""
    per_layer, tail = layer_costs_s(spec, costs, compute, mode, etp)
    return balance_stages(per_layer, stage_blocks(schedule), schedule.num_virtual_stages, tail)
