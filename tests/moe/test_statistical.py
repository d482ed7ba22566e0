"""Statistical routing models."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe import contiguous_placement, make_stat_model, rank_nodes, routing_metrics, sample_counts
from netsim.moe.statistical import LocalityModel, ZipfModel


def test_counts_shape_and_totals() -> None:
    m = make_stat_model("uniform")
    c = m.counts([100, 200, 0, 50], 4, 8, np.random.default_rng(0), top_k=2)
    assert c.shape == (4, 8) and c.dtype == np.int64
    assert c.sum(axis=1).tolist() == [200, 400, 0, 100]


def test_top_k_experts_are_distinct() -> None:
    # with top_k = n every token takes every expert exactly once, whatever p is
    p = np.array([[0.7, 0.2, 0.05, 0.05]])
    c = sample_counts(p, 1000, 4, np.random.default_rng(1))
    assert c.tolist() == [[1000, 1000, 1000, 1000]]
    with pytest.raises(SpecError, match="fewer than top_k"):
        sample_counts(np.array([[1.0, 0.0, 0.0]]), 10, 2, np.random.default_rng(0))


def test_uniform_is_uniform() -> None:
    c = make_stat_model("uniform").counts(80_000, 2, 8, np.random.default_rng(2))
    assert np.allclose(c / 10_000, 1.0, atol=0.05)


def test_zipf_ratios_and_seeded_permutation() -> None:
    m = ZipfModel(s=1.0)
    p = m.probabilities(3, 6, np.random.default_rng(0))
    assert np.allclose(p[0], p[2])  # the same popularity for every rank
    assert np.allclose(np.sort(p[0])[::-1], (1 / np.arange(1, 7)) / np.sum(1 / np.arange(1, 7)))
    c = m.counts(200_000, 1, 6, np.random.default_rng(0))[0]
    hot = np.argsort(-p[0])
    assert c[hot[0]] / c[hot[1]] == pytest.approx(2.0, rel=0.03)  # 2^s
    unpermuted = ZipfModel(s=2.0, permute=False).probabilities(1, 4, np.random.default_rng(0))[0]
    assert np.argmax(unpermuted) == 0 and unpermuted[0] / unpermuted[1] == pytest.approx(4.0)


def test_dirichlet_skew_and_per_rank() -> None:
    rng = np.random.default_rng(3)
    shared = make_stat_model("dirichlet", alpha=0.1).probabilities(4, 16, rng)
    assert np.allclose(shared, shared[0])
    per = make_stat_model("dirichlet", alpha=0.1, per_rank=True).probabilities(4, 16, rng)
    assert not np.allclose(per[0], per[1])
    flat = make_stat_model("dirichlet", alpha=1000.0).probabilities(1, 16, rng)[0]
    assert np.abs(flat - 1 / 16).max() < 0.01  # large alpha: near uniform


def test_locality_fraction_is_the_local_share() -> None:
    ep, n, rpn = 8, 16, 4
    pl = contiguous_placement(n, ep)
    node = rank_nodes(ep, rpn)
    c = LocalityModel(0.8).counts(20_000, ep, n, np.random.default_rng(4), placement=pl, rank_node=node)
    m = routing_metrics(c, pl, ranks_per_node=rpn)
    assert m.share_same_rank + m.share_same_node == pytest.approx(0.8, abs=0.01)
    assert m.share_same_rank == pytest.approx(0.8 / 4, abs=0.01)  # 2 of the node's 8 experts
    with pytest.raises(SpecError, match="needs a placement"):
        LocalityModel(0.5).probabilities(ep, n, np.random.default_rng(0))


def test_seeded_and_parameter_errors() -> None:
    m = make_stat_model("zipf", s=1.3)
    a = m.counts(1000, 4, 8, np.random.default_rng(7), top_k=2)
    b = m.counts(1000, 4, 8, np.random.default_rng(7), top_k=2)
    assert np.array_equal(a, b)
    with pytest.raises(SpecError, match="unknown routing model"):
        make_stat_model("pareto")
    with pytest.raises(SpecError, match=r"no parameter\(s\) \['alpha'\]"):
        make_stat_model("zipf", alpha=1.0)
    with pytest.raises(SpecError, match="fraction"):
        make_stat_model("locality", fraction=1.5)
