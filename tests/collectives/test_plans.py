"""Plans as plain data: byte conservation, dependency order, registry, errors (no simpy)."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.collectives import (
    CollectiveError,
    Plan,
    PlanBuilder,
    PlanRequest,
    Transfer,
    algorithm_names,
    build_plan,
    default_algorithm,
    register_algorithm,
)
from netsim.collectives import registry as registry_module
from netsim.collectives.reference import star_topology, two_tier_topology
from netsim.errors import NetsimError

S = 48 * 2**20


def names(nodes: int, per: int) -> list[str]:
    return [f"n{k}.g{i}" for k in range(nodes) for i in range(per)]


def check_order(plan: Plan) -> None:
    owner = np.repeat(np.arange(len(plan)), plan.num_deps)
    assert (plan.dep_idx < owner).all()
    assert (plan.src != plan.dst).all()


@pytest.mark.parametrize(("nodes", "per"), [(1, 8), (1, 5), (2, 4), (3, 4), (4, 1)])
def test_ring_all_reduce_moves_2_n_minus_1_over_n(nodes: int, per: int) -> None:
    devs = names(nodes, per)
    n = len(devs)
    plan = build_plan("all_reduce", devs, S)
    check_order(plan)
    sent, recv = plan.bytes_sent(), plan.bytes_received()
    for d in devs:
        assert sent[d] == pytest.approx(2 * (n - 1) / n * S)
        assert recv[d] == pytest.approx(2 * (n - 1) / n * S)
    assert plan.num_steps == 2 * (n - 1)
    assert plan.depth() == 2 * (n - 1)
    channels = per if nodes > 1 and per > 1 else 1
    assert plan.meta["channels"] == channels
    assert len(plan) == 2 * (n - 1) * n * channels


def test_multi_server_rings_stay_on_rails() -> None:
    devs = names(4, 8)
    plan = build_plan("all_reduce", devs, S)
    for t in plan.transfers[: plan.meta["channels"] * len(devs)]:  # the first step of every channel
        a, b = t.src.split("."), t.dst.split(".")
        if a[0] != b[0]:  # a server-to-server hop links the same local index (rail)
            assert a[1] == b[1]


@pytest.mark.parametrize("op", ["reduce_scatter", "all_gather"])
def test_ring_reduce_scatter_all_gather_bytes(op: str) -> None:
    devs = names(1, 6)
    plan = build_plan(op, devs, S)
    assert all(v == pytest.approx(5 / 6 * S) for v in plan.bytes_sent().values())


def test_chunks_keep_bytes_and_pipeline_dependencies() -> None:
    devs = names(1, 4)
    plan = build_plan("all_reduce", devs, S, chunk_bytes=S / 4 / 3)
    assert plan.meta["chunks"] == 3
    assert len(plan) == 6 * 4 * 3
    assert plan.bytes_sent()["n0.g0"] == pytest.approx(1.5 * S)
    # chunk j of a step waits for chunk j of the previous step and chunk j-1 of its own step
    assert plan.depth() == 6 + 3 - 1
    assert plan.num_deps.max() == 2


@pytest.mark.parametrize("n", [2, 3, 6, 8, 11])
def test_halving_doubling_bytes(n: int) -> None:
    plan = build_plan("all_reduce", names(1, n), S, algo="halving_doubling")
    check_order(plan)
    p = 1 << (n.bit_length() - 1)
    extra = n - p
    assert plan.total_bytes == pytest.approx(p * 2 * (p - 1) / p * S + 2 * extra * S)


def test_tree_all_reduce_each_rank_sends_its_halves() -> None:
    plan = build_plan("all_reduce", names(1, 8), S, algo="flat_tree", chunk_bytes=S / 8)
    check_order(plan)
    # two trees of S/2, reduce up (every non-root sends S/2) and broadcast down (S/2 per edge)
    assert plan.total_bytes == pytest.approx(2 * 2 * 7 * S / 2)
    assert plan.meta["chunks"] == 4


@pytest.mark.parametrize("algo", ["direct", "pairwise", "hierarchical", "deepep"])
def test_all_to_allv_delivers_the_matrix(algo: str) -> None:
    rng = np.random.default_rng(3)
    devs = names(3, 4)
    n = len(devs)
    m = rng.integers(0, 5, size=(n, n)).astype(float) * 2**20
    m[0, 5] = 0.0
    plan = build_plan("all_to_allv", devs, 0, algo=algo, matrix=m)
    check_order(plan)
    assert plan.nbytes == pytest.approx(m.sum() / n)  # the mean send buffer, self-chunk included
    np.fill_diagonal(m, 0.0)
    sent, recv = plan.bytes_sent(), plan.bytes_received()
    for i, d in enumerate(devs):
        # what arrives at d and is not forwarded is exactly what was addressed to d
        assert recv[d] - (sent[d] - m[i].sum()) == pytest.approx(m[:, i].sum())
    cross = sum(t.nbytes for t in plan if t.src.split(".")[0] != t.dst.split(".")[0])
    node = np.repeat(np.arange(3), 4)
    want = m[node[:, None] != node[None, :]].sum()
    if algo in ("hierarchical", "deepep"):  # each byte crosses between servers exactly once
        assert cross == pytest.approx(want)


def test_hierarchical_all_to_all_uses_one_pair_per_server_pair() -> None:
    plan = build_plan("all_to_all", names(4, 8), S, algo="hierarchical")
    inter = [t for t in plan if t.src.split(".")[0] != t.dst.split(".")[0]]
    assert len(inter) == 4 * 3
    for t in inter:  # proxy to proxy, same local index (rail) at both ends
        assert t.src.split(".")[1] == t.dst.split(".")[1]
        assert t.nbytes == pytest.approx(8 * 8 * S / 32)


def test_deepep_rdma_stays_on_rail() -> None:
    plan = build_plan("all_to_all", names(2, 4), S, algo="deepep")
    for t in plan:
        if t.src.split(".")[0] != t.dst.split(".")[0]:
            assert t.src.split(".")[1] == t.dst.split(".")[1] and t.step == 0
        elif t.deps:
            assert t.step == 1


def test_in_network_plans_send_to_switches() -> None:
    g = star_topology(4, 1e11, 1e-6)
    plan = build_plan("all_reduce", names(1, 4), S, algo="nvls", graph=g, chunk_bytes=S)
    assert set(plan.nodes) == {*names(1, 4), "n0.nvsw"}
    assert plan.meta["fluid"]
    # the switch reads every GPU's share of the 4 slices and gets each GPU's multicast store
    assert plan.bytes_received()["n0.nvsw"] == pytest.approx(4 * S * (1 + 1 / 4))
    assert all(v == pytest.approx(S * (1 + 1 / 4)) for k, v in plan.bytes_sent().items() if k != "n0.nvsw")
    g2 = two_tier_topology(3, 2, intra_bw_Bps=1e11, intra_latency_s=1e-6, nic_bw_Bps=1e10, nic_latency_s=1e-6)
    sharp = build_plan("all_reduce", names(3, 2), S, algo="sharp", graph=g2, chunk_bytes=S)
    assert "leaf0" in sharp.nodes
    # every GPU sends its reduced half (S/2) to the leaf and gets the result back
    assert sharp.bytes_received()["leaf0"] == pytest.approx(6 * S / 2)


def test_large_all_to_all_plan_is_columnar() -> None:
    n = 1024
    devs = [f"n{i // 8}.g{i % 8}" for i in range(n)]
    plan = build_plan("all_to_all", devs, 2**30)
    assert len(plan) == n * (n - 1)
    assert plan.total_bytes == pytest.approx((n - 1) / n * 2**30 * n)
    assert plan.dep_idx.size == 0
    assert plan[-1] == Transfer(n * (n - 1) - 1, devs[-1], devs[-2], 2**30 / n, (), 0)


def test_transfer_objects_and_indexing() -> None:
    plan = build_plan("sendrecv", ["a", "b"], 100)
    assert plan.transfers == [Transfer(0, "a", "b", 100.0, (), 0), Transfer(1, "b", "a", 100.0, (), 0)]
    assert plan[-1].src == "b" and len(plan) == 2
    with pytest.raises(IndexError):
        plan[2]
    assert build_plan("all_reduce", ["a"], 100).transfers == []
    assert len(build_plan("all_reduce", ["a", "b"], 0)) == 0


def test_registry_defaults_and_names() -> None:
    assert default_algorithm("all_reduce") == "ring"
    assert default_algorithm("all_to_all") == "direct"
    assert default_algorithm("sendrecv") == "shift"
    assert {"ring", "tree", "halving_doubling", "hierarchical", "sharp", "nvls"} <= set(algorithm_names("all_reduce"))
    assert set(algorithm_names("all_to_allv")) == {"direct", "pairwise", "hierarchical", "deepep", "groupwise"}


def test_register_a_new_algorithm() -> None:
    @register_algorithm("all_reduce", "test_star_root")
    def star_root(req: PlanRequest, b: PlanBuilder) -> dict[str, int]:
        """Everyone sends to rank 0, which sends the result back."""
        ups = [b.add(r, 0, req.nbytes, (), 0) for r in range(1, req.n)]
        for r in range(1, req.n):
            b.add(0, r, req.nbytes, ups, 1)
        return {"root": 0}

    try:
        plan = build_plan("all_reduce", names(1, 4), S, algo="test_star_root")
        assert plan.algo == "test_star_root" and plan.meta == {"root": 0} and len(plan) == 6
        assert plan.depth() == 2
    finally:
        registry_module._REGISTRY["all_reduce"].pop("test_star_root")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"op": "allreduce"}, "unknown collective 'allreduce'"),
        ({"algo": "butterfly"}, "unknown algorithm 'butterfly' for all_reduce"),
        ({"devices": ["a", "b", "a"]}, "appears twice"),
        ({"devices": []}, "at least one device"),
        ({"nbytes": -1.0}, "finite and >= 0"),
        ({"nbytes": float("nan")}, "finite and >= 0"),
        ({"matrix": [[0, 1], [1, 0]]}, "applies to all_to_all"),
        ({"op": "all_to_allv"}, "needs a byte matrix"),
        ({"op": "all_to_allv", "matrix": [[0, 1]]}, "must be 4x4"),
        ({"op": "all_to_allv", "matrix": -np.ones((4, 4))}, ">= 0"),
        ({"chunk_bytes": 0}, "chunk_bytes must be > 0"),
        ({"channels": 0}, "channels must be an integer >= 1"),
        ({"algo": "hierarchical", "devices": ["n0.g0", "n0.g1", "n1.g0"]}, "same number of devices on every server"),
        ({"algo": "sharp"}, "at least two servers"),
        ({"op": "sendrecv", "algo": "pairs", "devices": ["a", "b", "c"]}, "even number"),
    ],
)
def test_errors_are_netsim_errors(kwargs: dict, words: str) -> None:
    args = {"op": "all_reduce", "devices": names(1, 4), "nbytes": float(S)} | kwargs
    with pytest.raises(CollectiveError) as info:
        build_plan(args.pop("op"), args.pop("devices"), args.pop("nbytes"), **args)
    assert words in str(info.value)
    assert isinstance(info.value, NetsimError)


def test_unknown_device_and_missing_switches() -> None:
    g = star_topology(4, 1e11, 1e-6)
    with pytest.raises(CollectiveError, match=r"unknown device 'n9\.g0'"):
        build_plan("all_reduce", ["n0.g0", "n9.g0"], S, graph=g)
    g2 = two_tier_topology(2, 1, intra_bw_Bps=1e11, intra_latency_s=1e-6, nic_bw_Bps=1e10, nic_latency_s=1e-6)
    g2.remove_node("leaf0")
    with pytest.raises(CollectiveError, match="back-end fabric switches"):
        build_plan("all_reduce", ["n0.g0", "n1.g0"], S, algo="sharp", graph=g2)
    g.remove_node("n0.nvsw")
    with pytest.raises(CollectiveError, match="NVSwitch"):
        build_plan("all_reduce", names(1, 4), S, algo="nvls", graph=g)
