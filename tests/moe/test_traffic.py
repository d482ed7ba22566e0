"""Dispatch/combine byte matrices and routing metrics (hand-worked)."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe import Placement, contiguous_placement, dispatch_plan, rank_token_matrix, routing_metrics


def test_dispatch_and_combine_bytes_hand_worked() -> None:
    pl = contiguous_placement(2, 2)
    counts = np.array([[3, 1], [2, 4]])
    plan = dispatch_plan(counts, pl, hidden=4, bytes_per_element=2, ranks_per_node=1)
    assert plan.tokens.tolist() == [[3, 1], [2, 4]]
    assert plan.dispatch_bytes.tolist() == [[24.0, 8.0], [16.0, 32.0]]  # tokens * 4 * 2
    assert plan.combine_bytes.tolist() == [[24.0, 16.0], [8.0, 32.0]]  # the transpose
    assert plan.bytes_by_locality() == {"same_rank": 56.0, "same_node": 0.0, "cross_node": 24.0}
    assert plan.rank_tokens.tolist() == [5, 5]


def test_experts_on_the_same_node_are_intra_node() -> None:
    pl = contiguous_placement(4, 4)  # expert e on rank e
    counts = np.ones((4, 4), dtype=np.int64)
    loc = dispatch_plan(counts, pl, hidden=1, bytes_per_element=1, ranks_per_node=2).bytes_by_locality()
    assert loc == {"same_rank": 4.0, "same_node": 4.0, "cross_node": 8.0}
    loc2 = dispatch_plan(counts, pl, hidden=1, rank_node=np.array([0, 1, 0, 1])).bytes_by_locality()
    assert loc2 == {"same_rank": 4 * 2.0, "same_node": 4 * 2.0, "cross_node": 8 * 2.0}


def test_replicas_split_evenly_with_rotation() -> None:
    # 2 ranks, each holds a replica of both experts
    pl = Placement(np.array([0, 1, 0, 1]), ep=2, n_logical=2)
    counts = np.array([[3, 1], [2, 4]])
    tokens, slots = rank_token_matrix(counts, pl)
    # src 0: e0 3 -> (2, 1), e1 1 -> (1, 0); src 1: e0 2 -> (1, 1), e1 4 -> (2, 2)
    assert tokens.tolist() == [[3, 1], [3, 3]]
    assert slots.tolist() == [3, 3, 2, 2]
    # remainder rotates with the source rank: src 1 with 1 token goes to its replica 1
    t2, _ = rank_token_matrix(np.array([[1, 0], [1, 0]]), pl)
    assert t2.tolist() == [[1, 0], [0, 1]]


def test_nearest_replica_policy() -> None:
    pl = Placement(np.array([0, 1, 0, 1]), ep=2, n_logical=2)
    counts = np.array([[3, 1], [2, 4]])
    tokens, _ = rank_token_matrix(counts, pl, replica_policy="nearest", rank_node=np.array([0, 1]))
    assert tokens.tolist() == [[4, 0], [0, 6]]
    # no replica on the source's rank but one on its node: that one; 4 ranks on 2 nodes
    pl4 = Placement(np.array([0, 1, 2, 1]), ep=4, n_logical=3)  # e1 on ranks 1 and 3
    c = np.array([[0, 4, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    t, _ = rank_token_matrix(c, pl4, replica_policy="nearest", rank_node=np.array([0, 0, 1, 1]))
    assert t[0].tolist() == [0, 4, 0, 0]
    t, _ = rank_token_matrix(c, pl4, replica_policy="nearest", rank_node=np.array([0, 1, 1, 0]))
    assert t[0].tolist() == [0, 0, 0, 4]
    with pytest.raises(SpecError, match="replica policy"):
        rank_token_matrix(counts, pl, replica_policy="random")


def test_routing_metrics_hand_worked() -> None:
    pl = contiguous_placement(4, 2)
    counts = np.array([[6, 2, 0, 0], [2, 2, 4, 0]])
    m = routing_metrics(counts, pl, dropped=np.array([[1, 0, 0, 0], [0, 0, 0, 1]]), ranks_per_node=1)
    # expert loads [8, 4, 4, 0]: mean 4, max/mean 2, std sqrt((16+0+0+16)/4)=sqrt(8)
    assert m.expert_load_max_mean == pytest.approx(2.0)
    assert m.expert_load_cv == pytest.approx(np.sqrt(8) / 4)
    assert m.unused_experts == 1
    assert m.drop_rate == pytest.approx(2 / 18)
    # rank loads [12, 4]
    assert m.rank_load_max_mean == pytest.approx(1.5)
    # same rank: src0 -> 8, src1 -> 4; cross: 4
    assert m.share_same_rank == pytest.approx(12 / 16)
    assert m.share_cross_node == pytest.approx(4 / 16)
    assert m.share_same_node == 0.0
    assert set(m.to_dict()) >= {"drop_rate", "expert_load_cv", "share_cross_node"}


def test_bad_counts_shape() -> None:
    with pytest.raises(SpecError, match="shape"):
        dispatch_plan(np.zeros((3, 4), dtype=np.int64), contiguous_placement(4, 2), hidden=8)
    with pytest.raises(SpecError, match=">= 0"):
        dispatch_plan(-np.ones((2, 4), dtype=np.int64), contiguous_placement(4, 2), hidden=8)
