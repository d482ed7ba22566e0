"""Routers against hand-worked examples (numpy only)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe import contiguous_placement, grap_weights, make_router, router_names
from netsim.moe.routers import (
    DeepSeekRouter,
    ExpertChoiceRouter,
    GShardRouter,
    HashRouter,
    LocMoERouter,
    MixtralRouter,
    RRERouter,
    SwitchRouter,
    TokenBatch,
    keep_within_capacity,
    kl_divergence,
    localised_distribution,
    softmax,
)


def one_hot_router(cls: type, n: int, **kw: object) -> Any:
    """A router whose logits are 10 * x (x = one-hot of the wanted expert)."""
    r = cls(n, n, **kw)
    r.weight = 10.0 * np.eye(n)
    return r


def onehots(experts: list[int], n: int) -> np.ndarray:
    return np.eye(n)[experts]


def test_registry_lists_all_routers() -> None:
    assert router_names() == ["deepseek", "expert_choice", "gshard", "hash", "locmoe", "mixtral", "rre", "switch"]


def test_make_router_rejects_unknown_name_and_parameter() -> None:
    with pytest.raises(SpecError, match="allowed: deepseek"):
        make_router("top3", n_experts=4, hidden=4)
    with pytest.raises(SpecError, match="no parameter 'mu'") as exc:
        make_router("switch", n_experts=4, hidden=4, mu=1.0)
    assert exc.value.field == "router.mu"


# -- GrAP / LocMoE -------------------------------------------------------------------------


def test_grap_weights_are_orthogonal_slice_means() -> None:
    w = grap_weights(4, 8)
    assert w.shape == (4, 8)
    # w_i[j] = n/d = 0.5 on the i-th slice of 2 dims
    assert np.array_equal(w[1], [0, 0, 0.5, 0.5, 0, 0, 0, 0])
    gram = w @ w.T
    assert np.allclose(gram, np.diag(np.diag(gram)))  # mutually orthogonal
    x = np.array([1.0, 1.0, 3.0, 3.0, 2.0, 2.0, 0.0, 0.0])
    assert np.allclose(w @ x, [1.0, 3.0, 2.0, 0.0])  # slice means
    with pytest.raises(SpecError, match="divisible"):
        grap_weights(3, 8)


def test_locmoe_picks_slice_with_largest_mean_and_gate_is_its_softmax() -> None:
    r = LocMoERouter(4, 8, capacity_factor=4.0)
    x = np.array([[1.0, 1.0, 3.0, 3.0, 2.0, 2.0, 0.0, 0.0], [-5.0, -5.0, -1.0, -3.0, 0.5, 0.1, -2.0, -2.0]])
    res = r.route(x)
    assert res.experts[:, 0].tolist() == [1, 2]
    # token 0: G = ReLU([1, 3, 2, 0]); gate = e^3 / (e^1 + e^3 + e^2 + e^0)
    e = math.e
    assert res.gates[0, 0] == pytest.approx(e**3 / (e + e**3 + e**2 + 1))
    # token 1: slice means [-5, -2, 0.3, -2] -> ReLU -> [0, 0, 0.3, 0]
    assert res.gates[1, 0] == pytest.approx(math.exp(0.3) / (3 + math.exp(0.3)))


def test_locmoe_loss_is_aux_plus_mu_kl_to_smoothed_local_distribution() -> None:
    # n = d = 2: GrAP = identity; one token on rank 0 whose node holds expert 0
    r = LocMoERouter(2, 2, local_experts=[[0]], mu=0.5, eps=0.1, alpha=0.01, capacity_factor=2.0)
    res = r.route(np.array([[2.0, 0.0]]), src_rank=np.array([0]))
    p = np.array([math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)])
    d_l = np.array([0.9 + 0.05, 0.05])  # (1 - eps) on the local expert + eps uniform
    kl = float(np.sum(p * np.log(p / d_l)))
    assert res.aux_losses["loc"] == pytest.approx(0.5 * kl)
    # aux: f = [1, 0], P = p -> alpha * n * p0
    assert res.aux_losses["aux"] == pytest.approx(0.01 * 2 * p[0])


def test_localised_distribution_and_kl() -> None:
    d = localised_distribution([2, 3], 4, 0.2)
    assert np.allclose(d, [0.05, 0.05, 0.45, 0.45])
    assert np.allclose(localised_distribution([], 4, 0.2), 0.25)  # no local expert: uniform
    assert kl_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


def test_locmoe_theorem1_capacity_is_a_token_count() -> None:
    # d = 3, delta = 0.5: p_delta = 1 - delta = 0.5; ec_min = 1 / (n * 0.5) = 2/3 tokens for n = 3,
    # so the Theorem-1 capacity is 1 token per expert, whatever the batch
    r = LocMoERouter(3, 3, delta=0.5, capacity="theorem1")
    assert r.min_capacity_tokens == 1
    x = np.eye(3)[[0, 0, 0, 0, 0, 0, 0, 1, 2]]
    res = r.route(x)
    assert res.experts[:, 0].tolist() == [0, -1, -1, -1, -1, -1, -1, 1, 2]
    assert res.drops.tolist() == [6, 0, 0]
    # the buffer mode: ceil(9/3 * 1.25) = 4 per expert, never below the count
    r = LocMoERouter(3, 3, delta=0.5)
    assert r.route(x).experts[:, 0].tolist() == [0, 0, 0, 0, -1, -1, -1, 1, 2]
    assert r.capacity(np.array([1, 9])).tolist() == [1, 4]


def test_locmoe_theorem1_at_the_papers_size_is_two_tokens() -> None:
    # d = 5120, n = 16, delta = 0.03 (the paper's measured delta): ec_min = 1.96 -> 2 tokens; the old
    # reading as a share of the batch (1.96 x T) gave no limit at all
    from netsim.moe.capacity import locmoe_capacity_tokens, locmoe_min_capacity

    assert locmoe_min_capacity(16, 5120, 0.03) == pytest.approx(1.965, abs=0.001)
    assert locmoe_capacity_tokens(16, 5120, 0.03) == 2
    r = LocMoERouter(16, 64, capacity="theorem1", capacity_hidden=5120)
    assert r.capacity(np.array([1024])).tolist() == [2]
    with pytest.raises(SpecError, match="unbounded"):
        locmoe_capacity_tokens(16, 5120, 0.9)


def test_balancing_loss_is_per_capacity_group() -> None:
    # two ranks (capacity groups), each sending everything to "its" expert: balanced over the batch
    # (f = P = [1/2, 1/2] -> alpha * 2 * 1/2 = alpha), but each group is fully imbalanced, which is what
    # its capacity sees: Switch/GShard average f.P over groups -> alpha * 2 * p_hi, nearly 2 alpha
    r = one_hot_router(SwitchRouter, 2, capacity_factor=None)
    x = onehots([0, 0, 1, 1], 2)
    p_hi = 1 / (1 + np.exp(-10.0))  # softmax of logits (10, 0)
    assert r.route(x).aux_losses["aux"] == pytest.approx(0.01)
    grouped = r.route(x, src_rank=np.array([0, 0, 1, 1])).aux_losses["aux"]
    assert grouped == pytest.approx(0.01 * 2 * p_hi)


# -- Switch --------------------------------------------------------------------------------


def test_switch_drops_exactly_the_overflow_in_token_order() -> None:
    r = one_hot_router(SwitchRouter, 2, capacity_factor=1.0)
    res = r.route(onehots([0, 0, 0, 1, 0, 1], 2))  # capacity ceil(6/2 * 1.0) = 3
    assert res.experts[:, 0].tolist() == [0, 0, 0, 1, -1, 1]
    assert res.requested[:, 0].tolist() == [0, 0, 0, 1, 0, 1]
    assert res.counts.tolist() == [3, 2]
    assert res.drops.tolist() == [1, 0]
    assert res.dropped == 1
    assert res.gates[4, 0] == 0.0
    p = softmax(np.array([10.0, 0.0]))
    assert res.gates[0, 0] == pytest.approx(p[0])


def test_switch_capacity_is_per_source_rank() -> None:
    r = one_hot_router(SwitchRouter, 2, capacity_factor=1.0)
    src = np.array([0, 0, 0, 1, 1, 1])  # capacity per rank: ceil(3/2) = 2
    res = r.route(onehots([0, 0, 0, 1, 0, 1], 2), src_rank=src)
    assert res.experts[:, 0].tolist() == [0, 0, -1, 1, 0, 1]
    tok, drp = res.by_source(src, 2)
    assert tok.tolist() == [[2, 0], [1, 2]]
    assert drp.tolist() == [[1, 0], [0, 0]]


def test_switch_aux_loss_hand_computed() -> None:
    r = one_hot_router(SwitchRouter, 2, capacity_factor=None, alpha=0.01)
    res = r.route(onehots([0, 0, 0, 1], 2))
    hi, lo = softmax(np.array([10.0, 0.0]))
    f = np.array([0.75, 0.25])
    p_mean = np.array([3 * hi + lo, 3 * lo + hi]) / 4
    assert res.aux_losses["aux"] == pytest.approx(0.01 * 2 * float(f @ p_mean))
    assert res.dropped == 0
    # uniform router probabilities give exactly alpha whatever the assignment
    r.weight = np.zeros((2, 2))
    assert r.route(onehots([0, 1, 1], 2)).aux_losses["aux"] == pytest.approx(0.01)


def test_keep_within_capacity_first_choices_before_second() -> None:
    # token 0 wants (1, 0), token 1 wants (0, 1), token 2 wants (0, -); capacity 2 per expert
    req = np.array([[1, 0], [0, 1], [0, -1]])
    keep = keep_within_capacity(req, 2, np.zeros(3, dtype=np.int64), np.array([2]))
    # expert 0: first choices of tokens 1 and 2 come before token 0's second choice
    assert keep.tolist() == [[True, False], [True, True], [True, False]]


# -- GShard / Mixtral ----------------------------------------------------------------------


def test_gshard_second_expert_probability_is_min_1_2g2() -> None:
    r = GShardRouter(3, 3, capacity_factor=None, seed=1)
    r.weight = np.eye(3)
    # logits [l, 0, -inf-ish] with g2 (renormalised) = 0.1 -> p(second) = 0.2
    l1 = math.log(9.0)
    x = np.tile([l1, 0.0, -30.0], (20000, 1))
    res = r.route(x)
    g = res.gates
    assert np.allclose(g[:, 0], 0.9, atol=1e-9)
    used = res.requested[:, 1] >= 0
    assert used.mean() == pytest.approx(0.2, abs=0.015)
    assert np.allclose(g[used, 1], 0.1, atol=1e-9)
    assert np.all(g[~used, 1] == 0) and res.dropped == 0
    # g2 >= 0.5 (two equal logits): always dispatched
    res2 = r.route(np.tile([1.0, 1.0, -30.0], (100, 1)))
    assert (res2.requested[:, 1] >= 0).all()


def test_gshard_capacity_two_t_over_n() -> None:
    r = GShardRouter(2, 2, capacity_factor=1.0)
    r.weight = np.eye(2)
    # all 4 tokens prefer expert 0 and (2*g2 >= 1) always also want expert 1; capacity 2*4/2 = 4
    res = r.route(np.tile([0.1, 0.0], (4, 1)))
    assert res.counts.tolist() == [4, 4]
    r2 = GShardRouter(2, 2, capacity_factor=0.5)  # capacity 2
    r2.weight = np.eye(2)
    res2 = r2.route(np.tile([0.1, 0.0], (4, 1)))
    assert res2.experts.tolist() == [[0, 1], [0, 1], [-1, -1], [-1, -1]]
    assert res2.dropped == 4


def test_mixtral_top2_renormalised_no_drops() -> None:
    r = MixtralRouter(4, 4)
    r.weight = np.eye(4)
    x = np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    res = r.route(x)
    assert res.experts[0].tolist() == [1, 2]
    assert res.experts[1, 0] == 3
    assert np.allclose(res.gates.sum(axis=1), 1.0)
    assert res.gates[0, 0] == pytest.approx(math.e**3 / (math.e**3 + math.e**2))
    assert res.dropped == 0 and res.counts.sum() == 4


# -- DeepSeek ------------------------------------------------------------------------------


def test_deepseek_group_selection_uses_top2_sum_not_max() -> None:
    r = DeepSeekRouter(4, 4, top_k=2, n_groups=2, topk_groups=1, route_scale=2.5)
    s = np.array([[0.8, 0.8, 0.9, 0.1]])  # group {0,1}: 1.6 > group {2,3}: 1.0
    res = r.assign(TokenBatch(s))
    assert sorted(res.experts[0].tolist()) == [0, 1]
    assert np.allclose(res.gates[0], [1.25, 1.25])  # 2.5 * 0.8 / 1.6


def test_deepseek_bias_changes_selection_not_gates() -> None:
    r = DeepSeekRouter(4, 4, top_k=1, n_groups=1, topk_groups=1)
    s = np.array([[0.9, 0.2, 0.3, 0.4]])
    assert r.assign(TokenBatch(s)).experts[0, 0] == 0
    r.bias = np.array([0.0, 1.0, 0.0, 0.0])
    res = r.assign(TokenBatch(s))
    assert res.experts[0, 0] == 1
    assert res.gates[0, 0] == pytest.approx(2.5)  # unbiased 0.2 / 0.2 * route_scale


def test_deepseek_bias_update_is_plus_minus_gamma() -> None:
    r = DeepSeekRouter(4, 4, top_k=1, n_groups=1, topk_groups=1, gamma=0.001)
    r.update_bias(np.array([5, 1, 3, 3]))
    assert np.allclose(r.bias, [-0.001, 0.001, 0.0, 0.0])


def test_deepseek_never_more_than_m_nodes_per_token() -> None:
    n, ep, m = 32, 8, 3
    r = DeepSeekRouter(n, 16, top_k=6, n_groups=ep, topk_groups=m, seed=3)
    r.bias = np.random.default_rng(0).normal(0, 0.1, n)
    x = np.random.default_rng(1).normal(size=(2000, 16))
    res = r.route(x)
    node = contiguous_placement(n, ep).expert_rank  # one rank per node: groups == nodes
    nodes_per_token = [len(set(node[row].tolist())) for row in res.experts]
    assert max(nodes_per_token) <= m
    assert max(nodes_per_token) == m  # the limit is reached, not trivially satisfied
    # unconstrained routing would exceed it
    free = DeepSeekRouter(n, 16, top_k=6, n_groups=ep, topk_groups=ep, seed=3)
    free.bias = r.bias
    assert max(len(set(node[row].tolist())) for row in free.route(x).experts) > m


def test_deepseek_sequence_wise_balance_loss() -> None:
    r = DeepSeekRouter(2, 2, top_k=1, n_groups=1, topk_groups=1, alpha=1e-4)
    s = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.6]])
    res = r.assign(TokenBatch(s, seq_ids=np.array([0, 0, 1])))
    # seq 0: both to expert 0: f = [2, 0] * 2 / (1 * 2) = [2, 0]; P = mean([0.9,0.1],[0.8,0.2])
    l0 = 2 * 0.85
    # seq 1: expert 1: f = [0, 2]; P = [1/3, 2/3]
    l1 = 2 * (0.6 / 0.9)
    assert res.aux_losses["seq_balance"] == pytest.approx(1e-4 * (l0 + l1) / 2)
    assert res.dropped == 0


def test_deepseek_rejects_impossible_groups() -> None:
    with pytest.raises(SpecError, match="n_groups must divide"):
        DeepSeekRouter(10, 4, n_groups=3)
    with pytest.raises(SpecError, match="exceeds"):
        DeepSeekRouter(16, 4, top_k=8, n_groups=8, topk_groups=2)


# -- expert choice -------------------------------------------------------------------------


def test_expert_choice_load_is_perfectly_balanced() -> None:
    r = ExpertChoiceRouter(4, 8, capacity_factor=2.0, seed=0)
    x = np.random.default_rng(0).normal(size=(32, 8))
    res = r.route(x)
    assert r.top_k == 2  # nominal experts per token = c
    assert res.counts.tolist() == [16, 16, 16, 16]  # k = 32 * 2 / 4
    # every (token, expert) pair at most once, gates are the token's softmax scores
    for t in range(32):
        row = res.experts[t][res.experts[t] >= 0]
        assert len(set(row.tolist())) == row.size
    s = softmax(x @ r.weight)
    ok = res.experts >= 0
    assert np.allclose(res.gates[ok], np.take_along_axis(s, np.maximum(res.experts, 0), 1)[ok])
    # tokens nobody took are drops, attributed to their best expert
    none = (~ok).all(axis=1)
    assert res.dropped == int(none.sum())
    assert res.drops.sum() == none.sum()


def test_expert_choice_takes_top_tokens_per_expert() -> None:
    r = ExpertChoiceRouter(2, 2, capacity_factor=1.0)  # k = 4 * 1 / 2 = 2 tokens per expert
    r.weight = np.eye(2)
    x = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    res = r.route(x)
    took = {e: sorted(np.nonzero((res.experts == e).any(axis=1))[0].tolist()) for e in range(2)}
    assert took[0] == [0, 1]  # highest S[:, 0]
    assert took[1] == [2, 3]  # highest S[:, 1]: token 3 (0.62) and token 2 (0.27)


# -- hash / RRE ----------------------------------------------------------------------------


def test_hash_load_follows_token_frequency() -> None:
    r = HashRouter(4, 8, vocab_size=50, seed=2)
    rng = np.random.default_rng(0)
    freq = 1.0 / np.arange(1, 51)
    ids = rng.choice(50, size=5000, p=freq / freq.sum())
    res = r.route(np.zeros((5000, 8)), token_ids=ids)
    expected = np.array([np.sum(np.bincount(ids, minlength=50)[r.table == e]) for e in range(4)])
    assert res.counts.tolist() == expected.tolist()
    assert np.all(res.gates == 1.0) and res.dropped == 0
    # the same token always goes to the same expert
    assert np.all(res.experts[:, 0] == r.table[ids])


def test_hash_balanced_table_greedy_by_frequency() -> None:
    r = HashRouter(2, 4, vocab_size=5, token_freq=[5, 4, 3, 3, 1])
    # 5 -> e0 (5); 4 -> e1 (4); 3 -> e1 (7); 3 -> e0 (8); 1 -> e1 (8)
    assert r.table.tolist() == [0, 1, 1, 0, 1]


def test_hash_needs_valid_token_ids() -> None:
    r = HashRouter(2, 4, vocab_size=5)
    with pytest.raises(SpecError, match="needs token ids"):
        r.route(np.zeros((3, 4)))
    with pytest.raises(SpecError, match="token ids must be in"):
        r.route(np.zeros((1, 4)), token_ids=np.array([5]))


def test_rre_routes_domain_to_its_expert_group() -> None:
    r = RRERouter(8, 4, domains=2, vocab_size=100, seed=0)
    ids = np.arange(100)
    dom = ids % 2
    res = r.route(np.zeros((100, 4)), token_ids=ids, domain_ids=dom)
    assert np.all(res.experts[:, 0] // 4 == dom)
    # inside the group: a fixed hash of the token id (same for both domains)
    res0 = r.route(np.zeros((100, 4)), token_ids=ids, domain_ids=np.zeros(100, dtype=int))
    assert np.all(res.experts[:, 0] % 4 == res0.experts[:, 0])
    with pytest.raises(SpecError, match="domains must divide"):
        RRERouter(8, 4, domains=3)


# -- common ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["switch", "gshard", "mixtral", "deepseek", "expert_choice", "locmoe", "hash"])
def test_result_invariants_and_seed_determinism(name: str) -> None:
    kw: dict[str, object] = {}
    if name == "deepseek":
        kw = {"top_k": 4, "n_groups": 4, "topk_groups": 2}
    x = np.random.default_rng(5).normal(size=(256, 32))
    ids = np.random.default_rng(6).integers(0, 256, 256)
    src = np.repeat(np.arange(4), 64)
    a = make_router(name, n_experts=16, hidden=32, seed=9, **kw).route(x, token_ids=ids, src_rank=src)
    b = make_router(name, n_experts=16, hidden=32, seed=9, **kw).route(x, token_ids=ids, src_rank=src)
    assert np.array_equal(a.experts, b.experts) and np.array_equal(a.gates, b.gates)
    assert a.experts.shape == a.gates.shape == a.requested.shape
    assert np.all(a.gates[a.experts < 0] == 0)
    kept = a.experts >= 0
    assert np.all(a.requested[kept] == a.experts[kept])
    assert a.counts.sum() == kept.sum()
    tok, drp = a.by_source(src, 4)
    assert np.array_equal(tok.sum(axis=0), a.counts) and np.array_equal(drp.sum(axis=0), a.drops)


def test_bad_hidden_shape_is_a_spec_error() -> None:
    r = make_router("switch", n_experts=4, hidden=8)
    with pytest.raises(SpecError, match=r"shape \[T, 8\]"):
        r.route(np.zeros((3, 7)))


@pytest.mark.parametrize("n", [8, 100, 300])
@pytest.mark.parametrize("k", [1, 2, 8])
def test_top_k_matches_a_stable_full_sort_ties_included(n: int, k: int) -> None:
    from netsim.moe.routers import _top_k

    rng = np.random.default_rng(n * 10 + k)
    tied = rng.integers(0, 5, size=(200, n)).astype(float)  # many ties
    smooth = rng.normal(size=(200, n))
    for s in (tied, smooth):
        assert np.array_equal(_top_k(s, k), np.argsort(-s, axis=-1, kind="stable")[:, :k])


@pytest.mark.parametrize(("n", "groups", "kg", "k"), [(256, 8, 4, 8), (64, 8, 3, 6), (16, 1, 1, 4), (16, 16, 4, 4)])
def test_deepseek_compiled_selection_matches_numpy(n: int, groups: int, kg: int, k: int) -> None:
    from netsim.moe import _select_kernel
    from netsim.moe.routers import DeepSeekRouter

    if not _select_kernel.HAVE_NUMBA:
        pytest.skip("numba not installed")
    r = DeepSeekRouter(n, 8, top_k=k, n_groups=groups, topk_groups=kg, seed=0)
    rng = np.random.default_rng(7)
    r.bias = np.round(rng.normal(scale=0.05, size=n), 2)
    for scores in (rng.random((500, n)), np.round(rng.random((500, n)), 1)):  # the second full of ties
        compiled = r.select(scores)
        DeepSeekRouter.USE_COMPILED = False
        try:
            reference = r.select(scores)
        finally:
            DeepSeekRouter.USE_COMPILED = True
        assert np.array_equal(compiled, reference)


def _numpy_counts(r: DeepSeekRouter, x: np.ndarray) -> np.ndarray:
    DeepSeekRouter.USE_COMPILED = False
    try:
        return r.counts(x)[0]
    finally:
        DeepSeekRouter.USE_COMPILED = True


# (experts, groups, kept groups, top_k): DeepSeek-V3; V2-like; one group; groups of one and of two
# experts; top_k above the four values per kept group that the vectorised steps know (every token
# then takes the per-token pass)
_DS_SHAPES = [(256, 8, 4, 8), (64, 8, 3, 6), (16, 1, 1, 4), (16, 16, 4, 4), (16, 8, 3, 5), (64, 4, 1, 8)]


@pytest.mark.parametrize(("n", "groups", "kg", "k"), _DS_SHAPES)
@pytest.mark.parametrize("biased", [False, True])
def test_deepseek_compiled_counts_match_numpy(n: int, groups: int, kg: int, k: int, biased: bool) -> None:
    from netsim.moe import _select_kernel

    if not _select_kernel.HAVE_NUMBA:
        pytest.skip("numba not installed")
    r = DeepSeekRouter(n, 8, top_k=k, n_groups=groups, topk_groups=kg, seed=0)
    rng = np.random.default_rng(11)
    if biased:  # update_bias makes the bias non-zero: the kernel then selects on s + b
        r.bias = np.round(rng.normal(scale=0.05, size=n), 2)
    weight = r.weight
    smooth = rng.normal(size=(700, 8))  # 700 tokens: two full blocks of 256 and a partial one
    cases = [
        (weight, smooth),
        (weight, smooth.astype(np.float32)),
        # integer weights and hidden states: integer logits, ties between experts and groups
        (rng.integers(-2, 3, size=(8, n)).astype(float), rng.integers(-2, 3, size=(700, 8)).astype(float)),
        # logits beyond +-37: distinct, but their sigmoids are 1.0 or tiny: ties only after the sigmoid
        (weight, 60.0 * smooth),
    ]
    for w, x in cases:
        r.weight = w
        counts, drops = r.counts(x)
        assert np.array_equal(counts, _numpy_counts(r, x))
        assert np.array_equal(counts, r.route(x).counts)
        assert counts.sum() == 700 * k and not drops.any()
    assert r.counts(np.zeros((0, 8)))[0].tolist() == [0] * n


@pytest.mark.parametrize(("n", "groups", "kg", "k"), _DS_SHAPES)
@pytest.mark.parametrize("biased", [False, True])
def test_deepseek_selected_experts_match_route(n: int, groups: int, kg: int, k: int, biased: bool) -> None:
    """``selected`` (compiled kernel and numpy path) gives route's experts, in route's order."""
    from netsim.moe import _select_kernel

    if not _select_kernel.HAVE_NUMBA:
        pytest.skip("numba not installed")
    r = DeepSeekRouter(n, 8, top_k=k, n_groups=groups, topk_groups=kg, seed=0)
    rng = np.random.default_rng(11)
    if biased:
        r.bias = np.round(rng.normal(scale=0.05, size=n), 2)
    weight = r.weight
    smooth = rng.normal(size=(700, 8))
    cases = [
        (weight, smooth.astype(np.float32)),
        (rng.integers(-2, 3, size=(8, n)).astype(float), rng.integers(-2, 3, size=(700, 8)).astype(float)),
        (weight, 60.0 * smooth),  # sigmoids that round to ties between distinct logits
    ]
    for w, x in cases:
        r.weight = w
        ref = r.route(x)
        counts, drops, experts = r.selected(x)
        DeepSeekRouter.USE_COMPILED = False
        try:
            numpy_counts, _, numpy_experts = r.selected(x)
        finally:
            DeepSeekRouter.USE_COMPILED = True
        assert np.array_equal(experts, ref.experts) and np.array_equal(numpy_experts, ref.experts)
        assert np.array_equal(counts, ref.counts) and np.array_equal(numpy_counts, ref.counts)
        assert np.array_equal(drops, ref.drops)
    assert r.selected(np.zeros((0, 8)))[2].shape == (0, k)


def test_experts_kernel_flags_ties_and_orders_the_rest() -> None:
    from netsim.moe import _select_kernel

    if not _select_kernel.HAVE_NUMBA:
        pytest.skip("numba not installed")
    r = DeepSeekRouter(256, 8, top_k=8, n_groups=8, topk_groups=4, seed=0)
    rng = np.random.default_rng(3)
    smooth = rng.random((600, 256))
    for scores in (smooth, np.round(smooth, 2)):
        experts, flagged = _select_kernel.experts(np.ascontiguousarray(scores.T), 8, 4, 8, sigmoid=False)
        reference = r.select(scores)
        assert np.array_equal(experts[~flagged], reference[~flagged])
        assert (experts[flagged] == -1).all()
        assert flagged.any() == (scores is not smooth)


def test_counts_kernel_resolves_clear_tokens_and_flags_ties() -> None:
    from netsim.moe import _select_kernel

    if not _select_kernel.HAVE_NUMBA:
        pytest.skip("numba not installed")
    r = DeepSeekRouter(256, 8, top_k=8, n_groups=8, topk_groups=4, seed=0)
    rng = np.random.default_rng(3)
    smooth = rng.random((600, 256))
    tied = np.round(smooth, 2)
    for scores in (smooth, tied):
        counts, flagged = _select_kernel.counts(np.ascontiguousarray(scores.T), 8, 4, 8, sigmoid=False)
        counts = counts + np.bincount(r.select(scores[flagged]).reshape(-1), minlength=256)
        assert np.array_equal(counts, np.bincount(r.select(scores).reshape(-1), minlength=256))
        assert flagged.any() == (scores is tied)
    # logits: the sigmoid decides the groups; the kernel's own sigmoid is accurate far beyond the
    # tolerance under which it leaves a boundary to the exact scores
    z = np.r_[np.linspace(-80.0, 80.0, 4001), rng.normal(scale=3.0, size=2000).astype(np.float32)]
    mine = np.array([_select_kernel._sig(float(v)) for v in z])
    assert np.max(np.abs(mine - 1.0 / (1.0 + np.exp(-z)))) < _select_kernel.SIGMOID_TOL / 1000


@pytest.mark.parametrize("name", ["deepseek", "switch"])
def test_counts_are_the_counts_of_route(name: str) -> None:
    from netsim.moe.routers import make_router

    r = make_router(
        name, n_experts=32, hidden=16, seed=3, **({"n_groups": 4, "topk_groups": 2} if name == "deepseek" else {})
    )
    x = np.random.default_rng(2).normal(size=(300, 16))
    res = r.route(x, src_rank=np.zeros(300, dtype=np.int64))
    counts, drops = r.counts(x, src_rank=np.zeros(300, dtype=np.int64))
    assert np.array_equal(counts, res.counts) and np.array_equal(drops, res.drops)


def test_token_batch_checks_its_side_arrays() -> None:
    s = np.full((3, 2), 0.5)
    b = TokenBatch(s, src_rank=np.array([0, 1, 1], dtype=np.int32))
    assert b.src_rank is not None and b.src_rank.dtype == np.int64 and b.num_tokens == 3
    with pytest.raises(SpecError, match=r"src_rank must have shape \(3,\), got \(2,\)") as exc:
        TokenBatch(s, src_rank=np.array([0, 1]))
    assert exc.value.field == "src_rank"
    with pytest.raises(SpecError, match="seq_ids must be integers"):
        TokenBatch(s, seq_ids=np.array([0.0, 0.5, 1.0]))
    with pytest.raises(SpecError, match="scores must be"):
        TokenBatch(np.zeros(3))
    with pytest.raises(AttributeError):
        b.src_rank = None  # type: ignore[misc]
    # the same batch routes the same through assign as through route
    r = SwitchRouter(2, 2, capacity_factor=1.0)
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    via_route = r.route(x, src_rank=np.array([0, 0, 1]))
    via_batch = r.assign(TokenBatch(r.scores(x), src_rank=np.array([0, 0, 1])))
    assert np.array_equal(via_route.experts, via_batch.experts)


@pytest.mark.parametrize("name", ["switch", "gshard", "mixtral", "expert_choice", "deepseek", "locmoe"])
def test_learned_gates_compute_float32_logits(name: str) -> None:
    # Switch Transformer's selective precision (Fedus et al. 2022, 2.4): the gate GEMM is float32
    extra = {"top_k": 2, "n_groups": 4, "topk_groups": 2} if name == "deepseek" else {}
    r: Any = make_router(name, n_experts=8, hidden=16, seed=1, **extra)
    x32 = np.random.default_rng(2).normal(size=(40, 16)).astype(np.float32)
    assert r._check_x(x32) is x32  # float32 hidden states are not copied
    x64 = x32.astype(np.float64) + 1e-12  # rounds back to x32
    assert np.array_equal(r.scores(r._check_x(x64)), r.scores(x32))
    w = r.grap.T if name == "locmoe" else r.weight
    want = x32 @ w.astype(np.float32)
    got = r.logits_t(x32).T if name == "deepseek" else r.logits(x32)
    got = got - r.gate_bias if name == "locmoe" else got
    assert np.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, x32.astype(np.float64) @ w, rtol=0, atol=1e-12)  # not float64


def test_float32_weight_copy_follows_the_parameter_array() -> None:
    r = make_router("switch", n_experts=4, hidden=4, seed=0)
    x = np.eye(4, dtype=np.float32)
    r.route(x)
    with pytest.raises(ValueError):
        r.weight[0, 0] = 1.0  # read-only once cached: an in-place edit would go unseen
    r.weight = np.eye(4)[:, ::-1].copy()
    assert r.route(x).experts[:, 0].tolist() == [3, 2, 1, 0]


def test_one_blas_thread_restores_the_count_and_routes_on_one_thread() -> None:
    """The router's product is the one-thread product, whatever the process's thread count
    (OpenBLAS may round it differently with more threads: the module docstring)."""
    from netsim.moe import _blas

    r = DeepSeekRouter(64, 16, top_k=6, n_groups=8, topk_groups=3, seed=0)
    x = np.random.default_rng(2).normal(size=(3000, 16)).astype(np.float32)
    inside = r.logits_t(x)  # computed under one_blas_thread
    with _blas.one_blas_thread():
        one = np.asarray(r._float32("weight").T @ x.T, dtype=np.float32)
    assert np.array_equal(inside, one)
    ctl = _blas._controls()
    if not ctl:
        pytest.skip("no OpenBLAS found in this process: the block runs unchanged")
    get, put = ctl[0]
    before = get()
    put(2)  # OpenBLAS may cap it at the CPUs it found
    want = get()
    try:
        with _blas.one_blas_thread():
            assert get() == 1
        assert get() == want
    finally:
        put(before)


def test_locmoe_counts_skip_the_losses_but_not_the_capacity() -> None:
    """LocMoE's counts (no gates, no losses) equal route's, drops included, with several
    capacity groups (source ranks)."""
    from netsim.moe.routers import make_router

    r = make_router("locmoe", n_experts=8, hidden=16, capacity_factor=0.8, local_experts=[[0, 1, 2, 3], [4, 5, 6, 7]])
    x = np.random.default_rng(4).normal(size=(400, 16)).astype(np.float32)
    src = np.repeat(np.array([1, 0]), 200)
    res = r.route(x, src_rank=src)
    counts, drops = r.counts(x, src_rank=src)
    assert drops.sum() > 0 and "loc" in res.aux_losses
    assert np.array_equal(counts, res.counts) and np.array_equal(drops, res.drops)
