"""Token dispatchers: one copy per (token, expert), per destination rank, or per destination
node (DeepEP), from the token-to-rank / token-to-node sets (issue 18 item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe import contiguous_placement, dispatch_plan, eplb_placements, rank_token_matrix
from netsim.moe.dispatchers import DISPATCHERS, dedup_counts, token_destinations
from netsim.moe.sources import routing_source, step_dispatch
from netsim.moe.traffic import padded_tokens, replica_shares

# 4 ranks on 2 nodes (ranks 0, 1 on node 0; 2, 3 on node 1), 8 experts, 2 per rank (e on rank e // 2)
NODE = np.array([0, 0, 1, 1])
PL = contiguous_placement(8, 4)


def _hand() -> tuple[np.ndarray, np.ndarray]:
    """Rank 0 routes three tokens, top-2: t0 -> {2, 3} (both on rank 1, same node), t1 -> {4, 6}
    (ranks 2 and 3, the other node), t2 -> {0, 5} (itself and rank 2).  The other ranks route
    nothing."""
    experts = np.full((4, 3, 2), -1, dtype=np.int64)
    experts[0] = [[2, 3], [4, 6], [0, 5]]
    counts = np.zeros((4, 8), dtype=np.int64)
    np.add.at(counts[0], experts[0].ravel(), 1)
    return counts, experts


def test_three_dispatchers_by_hand() -> None:
    counts, experts = _hand()
    plans = {
        name: dispatch_plan(
            counts, PL, hidden=1, bytes_per_element=1.0, rank_node=NODE, dispatcher=name, token_experts=experts
        )
        for name in ("alltoall", "dedup-rank", "deepep")
    }
    # what the experts compute is the same: (token, expert) pairs per destination rank
    for p in plans.values():
        assert p.tokens[0].tolist() == [1, 2, 2, 1]
    # Megatron's all-to-all: one copy per (token, expert); t0 goes to rank 1 twice
    assert plans["alltoall"].copies[0].tolist() == [1, 2, 2, 1]
    # once per destination rank: t0 once to rank 1; rank 2 gets t1 and t2
    assert plans["dedup-rank"].copies[0].tolist() == [1, 1, 2, 1]
    # DeepEP: t1 and t2 cross to node 1 once each, to rank 2 (rank 0's local index there), which
    # forwards t1 to rank 3 over NVLink
    deep = plans["deepep"].copies
    assert deep[0].tolist() == [1, 1, 2, 0] and deep[2].tolist() == [0, 0, 0, 1]
    assert deep.sum() - deep[0].sum() == 1
    cross = {n: p.bytes_by_locality()["cross_node"] for n, p in plans.items()}
    assert cross == {"alltoall": 3.0, "dedup-rank": 3.0, "deepep": 2.0}
    assert np.array_equal(plans["deepep"].combine_bytes, plans["deepep"].dispatch_bytes.T)
    rank_tokens, node_tokens = dedup_counts(token_destinations(experts, PL, replica_shares(counts, PL)), NODE)
    assert rank_tokens[0].tolist() == [1, 1, 2, 1] and node_tokens[0].tolist() == [2, 2]


def test_top1_counts_are_the_token_sets() -> None:
    rng = np.random.default_rng(3)
    ex = rng.integers(0, 8, size=(4, 50, 1))
    counts = np.zeros((4, 8), dtype=np.int64)
    for r in range(4):
        np.add.at(counts[r], ex[r].ravel(), 1)
    with_sets = dispatch_plan(counts, PL, hidden=1, rank_node=NODE, dispatcher="deepep", token_experts=ex)
    from_counts = dispatch_plan(counts, PL, hidden=1, rank_node=NODE, dispatcher="deepep", top_k=1)
    assert np.array_equal(with_sets.copies, from_counts.copies) and from_counts.dedup_exact
    # top-2 without token sets (a routing trace): no de-duplication, and the plan says so
    blind = dispatch_plan(counts, PL, hidden=1, rank_node=NODE, dispatcher="deepep", top_k=2)
    assert not blind.dedup_exact and np.array_equal(blind.copies, blind.tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_destinations_follow_the_replica_split(seed: int) -> None:
    rng = np.random.default_rng(seed)
    load = rng.gamma(0.5, size=8) + 0.01
    pl = eplb_placements(load, 4, num_redundant=4)[0]  # 12 slots, some experts replicated
    ex = np.stack([np.stack([rng.choice(8, size=2, replace=False) for _ in range(40)]) for _ in range(4)])
    counts = np.zeros((4, 8), dtype=np.int64)
    for r in range(4):
        np.add.at(counts[r], ex[r].ravel(), 1)
    for policy in ("even", "nearest"):
        shares = replica_shares(counts, pl, replica_policy=policy, rank_node=NODE)
        dest = token_destinations(ex, pl, shares)
        tokens, _ = rank_token_matrix(counts, pl, replica_policy=policy, rank_node=NODE)
        per_dest = np.stack([np.bincount(dest[r].ravel(), minlength=4) for r in range(4)])
        assert np.array_equal(per_dest, tokens), policy  # the same split, token by token


def test_node_limited_routing_crosses_at_most_m_nodes_per_token() -> None:
    # DeepSeek-V3 routing (arXiv 2412.19437, section 2.1.2): 16 experts in 4 groups = the 4
    # nodes of 8 ranks, top-4 within at most 2 groups; DeepEP sends a token once per node
    ep, tokens = 8, 256
    node = np.repeat(np.arange(4), 2)
    src = routing_source(
        "deepseek",
        experts=16,
        ep=ep,
        tokens_per_rank=tokens,
        seed=1,
        params={"top_k": 4, "n_groups": 4, "topk_groups": 2},
    )
    pl = contiguous_placement(16, ep)
    got = {
        d: step_dispatch(src, pl, step=0, layer=0, hidden=1, bytes_per_element=1.0, rank_node=node, dispatcher=d)[0]
        for d in ("alltoall", "deepep")
    }
    cross = {d: p.bytes_by_locality()["cross_node"] for d, p in got.items()}
    assert cross["deepep"] <= 2 * ep * tokens  # at most M = 2 nodes per token, one copy each
    assert cross["deepep"] < cross["alltoall"]  # two experts on one node cross once
    assert np.array_equal(got["deepep"].tokens, got["alltoall"].tokens)


def test_statistical_token_sets_match_their_counts() -> None:
    src = routing_source("zipf", experts=8, ep=4, tokens_per_rank=300, top_k=2, seed=0, params={"capacity_factor": 1.0})
    tok, drp, ex = src.routed(0, 0, 0, token_sets=True)  # type: ignore[attr-defined]
    assert np.array_equal((tok, drp), src.counts(0, 0, 0))
    assert ex is not None and ex.shape == (4, 300, 2)
    for r in range(4):
        assert np.bincount(ex[r][ex[r] >= 0], minlength=8).tolist() == tok[r].tolist()


def test_padded_buffers_and_unknown_dispatcher() -> None:
    # every source sends each expert slot a capacity-sized buffer (2 slots per rank, capacity 5)
    assert padded_tokens(PL, 5).tolist() == [[10] * 4] * 4
    assert DISPATCHERS.names() == ["alltoall", "dedup-rank", "deepep", "hybridep"]
    counts, _ = _hand()
    with pytest.raises(
        SpecError,
        match=r"model\.moe\.dispatcher: unknown token dispatcher 'nccl'; allowed: "
        r"alltoall, dedup-rank, deepep, hybridep",
    ):
        dispatch_plan(counts, PL, hidden=1, dispatcher="nccl")


@pytest.mark.parametrize("shape", [(16, 512, 8), (6, 50, 3), (4, 1, 8), (8, 64, 1)])
def test_compiled_dedup_counts_equal_the_numpy_path(shape: tuple[int, int, int], monkeypatch) -> None:
    """The compiled de-duplication (netsim/moe/_dedup_kernel.py) counts what the numpy sorts
    count, with repeated ranks and nodes inside a token, empty slots and nodes numbered by
    first appearance rather than by rank."""
    import netsim.moe.dispatchers as dispatchers
    from netsim.moe._dedup_kernel import HAVE_NUMBA

    if not HAVE_NUMBA:
        pytest.skip("numba not installed: only the numpy path exists")
    ep = shape[0]
    dest = np.random.default_rng(ep).integers(-1, ep, size=shape)
    dest[0, 0, :] = ep - 1  # one token naming the same rank in every slot
    rank_node = (np.arange(ep) // 2)[::-1].copy()
    compiled = dedup_counts(dest, rank_node)
    monkeypatch.setattr(dispatchers, "HAVE_NUMBA", False)
    reference = dedup_counts(dest, rank_node)
    for got, want in zip(compiled, reference, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert compiled[0][0, ep - 1] >= 1


def test_token_destinations_without_replicas_is_the_rank_of_every_expert() -> None:
    rng = np.random.default_rng(5)
    ex = rng.integers(-1, 8, size=(4, 30, 3))
    dest = token_destinations(ex, PL, replica_shares(np.zeros((4, 8), dtype=np.int64), PL))
    want = np.where(ex >= 0, PL.slot_rank[PL.log2phy[np.maximum(ex, 0), 0]], -1)
    assert dest.dtype == np.int64 and np.array_equal(dest, want)


def test_dispatch_plan_is_remembered_for_the_same_token_sets() -> None:
    """A routing replayed for many micro-batches (the same arrays) gets the same plan object,
    read-only; other arrays with the same values, or another node layout, get a fresh plan."""
    counts, experts = _hand()
    kw = {"hidden": 1, "bytes_per_element": 1.0, "dispatcher": "deepep"}
    first = dispatch_plan(counts, PL, rank_node=NODE, token_experts=experts, **kw)
    assert dispatch_plan(counts, PL, rank_node=NODE.copy(), token_experts=experts, **kw) is first
    assert not first.copies.flags.writeable and not first.dispatch_bytes.flags.writeable
    fresh = dispatch_plan(counts.copy(), PL, rank_node=NODE, token_experts=experts.copy(), **kw)
    assert fresh is not first and np.array_equal(fresh.copies, first.copies)
    other = dispatch_plan(counts, PL, rank_node=np.array([0, 1, 0, 1]), token_experts=experts, **kw)
    assert other is not first and not np.array_equal(other.copies, first.copies)
