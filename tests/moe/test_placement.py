"""Placement: contiguous, round-robin and EPLB (hand-worked cases and invariants)."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe import (
    Placement,
    balanced_packing,
    contiguous_placement,
    eplb,
    eplb_placements,
    make_placement,
    placement_names,
    replicate_experts,
    round_robin_placement,
)


def test_contiguous_and_round_robin() -> None:
    c = contiguous_placement(8, 4)
    assert c.expert_rank.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert c.experts_on_rank(2).tolist() == [4, 5]
    r = round_robin_placement(8, 4)
    assert r.expert_rank.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert r.experts_on_rank(1).tolist() == [1, 5]
    assert r.replica_counts.tolist() == [1] * 8
    with pytest.raises(SpecError, match="multiple of ep"):
        contiguous_placement(6, 4)


def test_placement_maps_and_local_experts() -> None:
    p = Placement(np.array([0, 1, 0, 2, 3, 0]), ep=3, n_logical=4)
    assert p.slots_per_rank == 2
    assert p.log2phy.tolist() == [[0, 2, 5], [1, -1, -1], [3, -1, -1], [4, -1, -1]]
    assert p.replica_counts.tolist() == [3, 1, 1, 1]
    assert p.replica_ranks(0).tolist() == [0, 1, 2]
    node = np.array([0, 0, 1])
    assert p.local_experts(node) == [[0, 1, 2], [0, 1, 2], [0, 3]]
    with pytest.raises(SpecError, match="no slot"):
        Placement(np.array([0, 0]), ep=1, n_logical=2)


def test_balanced_packing_hand_worked() -> None:
    w = np.array([[10.0, 9.0, 8.0, 1.0, 1.0, 1.0]])
    pack, rank = balanced_packing(w, 2)
    # 10 -> p0; 9 -> p1; 8 -> p1 (9 < 10); 1 -> p0; 1 -> p0 (full now); 1 -> p1
    assert pack.tolist() == [[0, 1, 1, 0, 0, 1]]
    assert rank.tolist() == [[0, 0, 1, 1, 2, 2]]


def test_balanced_packing_each_pack_gets_exactly_its_share() -> None:
    w = np.random.default_rng(0).pareto(1.5, size=(5, 24))
    pack, rank = balanced_packing(w, 4)
    for row_p, row_r in zip(pack, rank, strict=True):
        assert np.bincount(row_p, minlength=4).tolist() == [6, 6, 6, 6]
        for k in range(4):
            assert sorted(row_r[row_p == k].tolist()) == list(range(6))


def test_replicate_experts_highest_load_per_replica() -> None:
    phy2log, rank, cnt = replicate_experts(np.array([[90.0, 30.0, 20.0, 10.0]]), 7)
    # 90 -> 45 (2 replicas) -> 30 (3) ; then 30 vs 30: tie -> expert 0 (4: 22.5); then expert 1
    assert phy2log.tolist() == [[0, 1, 2, 3, 0, 0, 0]]
    assert rank.tolist() == [[0, 0, 0, 0, 1, 2, 3]]
    assert cnt.tolist() == [[4, 1, 1, 1]]
    _, _, cnt2 = replicate_experts(np.array([[90.0, 30.0, 20.0, 10.0]]), 8)
    assert cnt2.tolist() == [[4, 2, 1, 1]]


def test_eplb_global_replicas_to_hottest_and_packs_balanced() -> None:
    w = np.array([[100.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    phy2log, log2phy, cnt = eplb(w, 8, num_groups=1, num_nodes=1, num_gpus=4)
    assert cnt.tolist() == [[3, 1, 1, 1, 1, 1]]
    assert sorted(phy2log[0].tolist()) == [0, 0, 0, 1, 2, 3, 4, 5]
    # the three replicas of expert 0 land on three different GPUs (2 slots per GPU)
    gpus = {int(s) // 2 for s in log2phy[0, 0] if s >= 0}
    assert len(gpus) == 3
    assert log2phy.shape == (1, 6, 3)
    # log2phy and phy2log agree, padding is -1
    for e in range(6):
        slots = log2phy[0, e][log2phy[0, e] >= 0]
        assert slots.size == cnt[0, e]
        assert np.all(phy2log[0, slots] == e)


def test_eplb_hierarchical_keeps_groups_on_one_node() -> None:
    rng = np.random.default_rng(3)
    w = rng.pareto(1.2, size=(4, 16)) * 100
    n_phys, groups, nodes, gpus = 24, 4, 2, 8
    phy2log, log2phy, cnt = eplb(w, n_phys, groups, nodes, gpus)
    slots_per_node = n_phys // nodes
    for layer in range(4):
        assert sorted(set(phy2log[layer].tolist())) == list(range(16))
        assert cnt[layer].sum() == n_phys
        node_of_slot = np.arange(n_phys) // slots_per_node
        for g in range(groups):
            experts = range(g * 4, (g + 1) * 4)
            nodes_of_group = {int(node_of_slot[s]) for e in experts for s in log2phy[layer, e] if s >= 0}
            assert len(nodes_of_group) == 1
        # each node holds exactly 2 of the 4 groups
        groups_on_node = [{int(phy2log[layer, s]) // 4 for s in range(k * 12, (k + 1) * 12)} for k in range(2)]
        assert [len(x) for x in groups_on_node] == [2, 2]


def test_eplb_improves_the_max_gpu_load() -> None:
    w = np.random.default_rng(1).pareto(1.0, size=(1, 32)) * 100
    contiguous = w[0].reshape(8, 4).sum(axis=1).max()
    pl = eplb_placements(w, 8, num_redundant=8)[0]
    load_per_slot = w[0][pl.phy2log] / pl.replica_counts[pl.phy2log]
    balanced = load_per_slot.reshape(8, -1).sum(axis=1)
    assert balanced.max() < contiguous
    assert balanced.sum() == pytest.approx(w.sum())


def test_make_placement_registry() -> None:
    assert placement_names() == ["contiguous", "eplb", "eplb_global", "eplb_hierarchical", "round_robin"]
    p = make_placement("eplb", 8, 4, load=np.arange(8.0), num_redundant=4, num_groups=4, num_nodes=2)
    assert p.n_phys == 12 and p.name == "eplb"
    with pytest.raises(SpecError, match="needs the expert load"):
        make_placement("eplb", 8, 4)
    with pytest.raises(SpecError, match="unknown placement"):
        make_placement("zigzag", 8, 4)
    with pytest.raises(SpecError, match="redundant experts need an eplb"):
        make_placement("contiguous", 8, 4, num_redundant=2)
