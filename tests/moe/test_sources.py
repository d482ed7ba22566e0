"""Routing sources: trace, statistical model and router behind one interface for the replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe import (
    RoutingTrace,
    TraceMeta,
    contiguous_placement,
    eplb_placements,
    rank_nodes,
    routing_source,
    step_dispatch,
    write_routing_trace,
)
from netsim.moe.sources import RouterSource, StatisticalSource, TraceSource, rescale_rows


def test_rescale_rows_exact_totals() -> None:
    m = np.array([[1, 1, 1], [0, 0, 0], [5, 0, 3]])
    out = rescale_rows(m, np.array([10, 7, 16]))
    assert out.tolist() == [[4, 3, 3], [0, 0, 0], [10, 0, 6]]


def _trace() -> RoutingTrace:
    meta = TraceMeta(experts=4, ep=2, ranks_per_node=1, hidden=8, top_k=1, router="switch")
    a = np.array([[3, 1, 0, 0], [0, 0, 2, 2]])
    b = np.array([[0, 0, 0, 4], [4, 0, 0, 0]])
    return RoutingTrace.from_counts(
        [(0, 0, 0, a, None), (0, 1, 0, b, None), (1, 0, 0, b, None), (1, 1, 0, a, None)], meta
    )


def test_trace_source_wraps_and_rescales(tmp_path: Path) -> None:
    tr = _trace()
    src = TraceSource(tr)
    assert src.counts(0, 0)[0].tolist() == [[3, 1, 0, 0], [0, 0, 2, 2]]
    assert np.array_equal(src.counts(2, 0)[0], src.counts(0, 0)[0])  # steps wrap
    assert np.array_equal(src.counts(0, 3)[0], src.counts(0, 1)[0])  # layers wrap
    # unknown recorded batch size: rows scaled to tokens_per_rank * top_k
    scaled = TraceSource(tr, tokens_per_rank=8).counts(0, 0)[0]
    assert scaled.tolist() == [[6, 2, 0, 0], [0, 0, 4, 4]]
    # known recorded batch size (4 tokens per rank): rows scaled by 10 / 4, kept + dropped together
    meta = TraceMeta(experts=4, ep=2, ranks_per_node=1, hidden=8, top_k=2, router="gshard", tokens_per_rank=4)
    tr2 = RoutingTrace.from_counts([(0, 0, 0, np.array([[3, 1, 2, 0], [1, 1, 0, 0]]), np.eye(2, 4, dtype=int))], meta)
    tok2, drp2 = TraceSource(tr2, tokens_per_rank=10).counts(0, 0)
    assert (tok2 + drp2).sum(axis=1).tolist() == [18, 8]  # 7 * 2.5 = 17.5 -> 18, 3 * 2.5 = 7.5 -> 8
    assert tok2.tolist() == [[8, 3, 5, 0], [3, 3, 0, 0]]  # ties in the remainder: lowest column
    assert drp2.tolist() == [[2, 0, 0, 0], [0, 2, 0, 0]]
    path = write_routing_trace(tr, tmp_path / "t.parquet")
    from_file = routing_source(str(path), experts=4, ep=2, tokens_per_rank=4)
    assert from_file.counts(0, 0)[0].tolist() == [[3, 1, 0, 0], [0, 0, 2, 2]]
    with pytest.raises(SpecError, match="needs 8 on ep=2"):
        routing_source(str(path), experts=8, ep=2, tokens_per_rank=4)


def test_statistical_source_is_order_independent() -> None:
    s1 = routing_source("zipf", experts=8, ep=4, tokens_per_rank=512, top_k=2, seed=3, params={"s": 1.2})
    s2 = routing_source("zipf", experts=8, ep=4, tokens_per_rank=512, top_k=2, seed=3, params={"s": 1.2})
    a = s1.counts(5, 1, 2)[0]
    s2.counts(0, 0, 0)
    assert np.array_equal(s2.counts(5, 1, 2)[0], a)
    assert a.sum(axis=1).tolist() == [1024] * 4
    assert not np.array_equal(s1.counts(5, 1, 3)[0], a)  # another micro-batch, another draw
    # the hottest expert of a layer stays the same across steps
    assert isinstance(s1, StatisticalSource)
    hot = [int(np.argmax(s1.counts(step, 0)[0].sum(axis=0))) for step in range(5)]
    assert len(set(hot)) == 1


def test_statistical_source_capacity_drops() -> None:
    s = routing_source("zipf", experts=4, ep=2, tokens_per_rank=400, seed=0, params={"s": 2.0, "capacity_factor": 1.0})
    tok, drp = s.counts(0, 0)
    assert tok.max() <= 100  # ceil(1.0 * 400 / 4)
    assert (tok + drp).sum(axis=1).tolist() == [400, 400]
    assert drp.sum() > 0


def test_router_source_runs_real_gating() -> None:
    pl = contiguous_placement(8, 4)
    node = rank_nodes(4, 2)
    src = routing_source(
        "switch",
        experts=8,
        ep=4,
        tokens_per_rank=256,
        seed=1,
        params={"capacity_factor": 1.0},
        placement=pl,
        rank_node=node,
    )
    assert isinstance(src, RouterSource) and src.top_k == 1
    tok, drp = src.counts(0, 0)
    assert ((tok + drp).sum(axis=1) == 256).all()
    assert (tok <= 32).all()  # per-rank capacity ceil(256 / 8)
    assert np.array_equal(src.counts(0, 0)[0], tok)
    h = routing_source("hash", experts=8, ep=4, tokens_per_rank=256, seed=1)
    t2, d2 = h.counts(0, 0)
    assert t2.sum() == 1024 and d2.sum() == 0
    loc = routing_source("locmoe", experts=8, ep=4, tokens_per_rank=64, seed=1, placement=pl, rank_node=node)
    assert isinstance(loc, RouterSource) and "local_experts" in loc.params


@pytest.mark.parametrize("name", ["deepseek", "switch", "gshard", "mixtral", "expert_choice", "locmoe", "hash", "rre"])
def test_router_source_is_deterministic_for_every_router(name: str) -> None:
    from netsim.moe import router_names

    assert sorted(router_names()) == sorted(
        ["deepseek", "switch", "gshard", "mixtral", "expert_choice", "locmoe", "hash", "rre"]
    )
    params = {"n_groups": 4, "topk_groups": 2, "top_k": 4} if name == "deepseek" else {}
    kw = {"placement": contiguous_placement(16, 2), "rank_node": rank_nodes(2, 1)}
    a = routing_source(name, experts=16, ep=2, tokens_per_rank=300, seed=5, params=params, **kw)
    b = routing_source(name, experts=16, ep=2, tokens_per_rank=300, seed=5, params=params, **kw)
    b.counts(0, 0)
    tok, drp = a.counts(1, 2, 1)
    tok2, drp2 = b.counts(1, 2, 1)
    assert tok.shape == drp.shape == (2, 16) and tok.dtype == np.int64
    assert tok.tobytes() == tok2.tobytes() and drp.tobytes() == drp2.tobytes()
    if name not in ("expert_choice", "gshard"):  # zero or several experts per token; GShard may skip its 2nd
        assert ((tok + drp).sum(axis=1) == 300 * a.top_k).all()


def test_alias_table_is_the_distribution_and_normals_are_standard() -> None:
    from netsim.moe.sources import alias_sample, alias_table, standard_normal_f32

    w = 1.0 / np.arange(1, 501) ** 1.1
    p = w / w.sum()
    prob, alias = alias_table(p)
    # column j gives j with prob[j] and alias[j] otherwise: the columns add up to p exactly
    rebuilt = (prob + np.bincount(alias, weights=1.0 - prob, minlength=500)) / 500
    assert np.allclose(rebuilt, p, rtol=1e-12, atol=0)
    rng = np.random.default_rng(0)
    ids = alias_sample((prob, alias), rng, 200_000)
    assert ids.min() >= 0 and ids.max() < 500
    assert abs(np.mean(ids == 0) - p[0]) < 4 * np.sqrt(p[0] * (1 - p[0]) / 200_000)
    z = standard_normal_f32(rng, 400_001, scale=0.5).astype(np.float64)
    assert z.shape == (400_001,) and abs(z.mean()) < 0.005 and abs(z.std() - 0.5) < 0.003
    assert abs(np.mean(np.abs(z) < 0.5) - 0.6827) < 0.004  # one deviation
    assert abs(np.mean(np.abs(z) < 1.0) - 0.9545) < 0.002  # two
    a, b = standard_normal_f32(np.random.default_rng(4), 1001), standard_normal_f32(np.random.default_rng(4), 1001)
    assert a.dtype == np.float32 and a.tobytes() == b.tobytes()


def test_unknown_routing_name() -> None:
    with pytest.raises(SpecError, match=r"a routing-trace \.parquet path"):
        routing_source("banana", experts=4, ep=2, tokens_per_rank=8)


def test_step_dispatch_with_per_layer_placements() -> None:
    src = routing_source("zipf", experts=8, ep=4, tokens_per_rank=1000, seed=0, params={"s": 1.5})
    load = np.stack([src.counts(0, ly)[0].sum(axis=0) for ly in range(2)])
    pls = eplb_placements(load, 4, num_redundant=4)
    plan, tok, _ = step_dispatch(src, pls, step=0, layer=1, hidden=4096, bytes_per_element=2, ranks_per_node=2)
    assert plan.dispatch_bytes.sum() == pytest.approx(tok.sum() * 4096 * 2)
    assert np.array_equal(plan.combine_bytes, plan.dispatch_bytes.T)
    assert plan.tokens.sum(axis=1).tolist() == tok.sum(axis=1).tolist()
    contig, _, _ = step_dispatch(src, contiguous_placement(8, 4), step=0, layer=1, hidden=1, ranks_per_node=2)
    assert plan.rank_tokens.max() < contig.rank_tokens.max()  # EPLB balances the ranks


def _load_cv(src: RouterSource, layer: int = 1) -> float:
    loads = src.counts(0, layer, 0)[0].sum(axis=0).astype(float)
    return float(loads.std() / loads.mean())


@pytest.mark.parametrize("compiled", [True, False])
def test_a_balancing_router_starts_from_its_settled_bias(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # DeepSeek's auxiliary-loss-free bias, settled on the synthetic stream, spreads the popular
    # tokens' load: CV of the expert loads about 0.06 instead of about 0.6 with a zero bias
    from netsim.moe.routers.deepseek import DeepSeekRouter

    monkeypatch.setattr(DeepSeekRouter, "USE_COMPILED", compiled)
    kw: dict[str, Any] = {
        "experts": 64,
        "ep": 8,
        "tokens_per_rank": 2048,
        "seed": 3,
        "params": {"n_groups": 8, "topk_groups": 4, "top_k": 8},
    }
    settled = RouterSource("deepseek", **kw)
    assert np.any(settled._layer(1)[0].bias != 0)
    monkeypatch.setattr(DeepSeekRouter, "settle_bias", lambda self, x: None)
    raw = RouterSource("deepseek", **kw)
    assert _load_cv(raw) > 0.3
    assert _load_cv(settled) < 0.15
