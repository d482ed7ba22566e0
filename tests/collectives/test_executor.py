"""The executor on the flow engine: contention, comparisons between algorithms, batching."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import networkx as nx
import numpy as np
import pytest
import simpy

from netsim.collectives import CollectiveError, accelerators, build_plan, run_collective, simulate_collective
from netsim.collectives.executor import CollectiveResult, execute_plan, result_of
from netsim.collectives.reference import star_topology, two_tier_topology
from netsim.network.engine import Network

MiB = 2**20


def tiers(nodes: int, per: int, nic_bw: float = 25e9) -> nx.DiGraph:
    return two_tier_topology(
        nodes,
        per,
        intra_bw_Bps=400e9,
        intra_latency_s=0.4e-6,
        nic_bw_Bps=nic_bw,
        nic_latency_s=1e-6,
        leaf_latency_s=0.3e-6,
    )


def test_yield_inside_a_process_and_result() -> None:
    g = star_topology(4, 100e9, 0.5e-6)
    net = Network(g)
    devs = accelerators(g)
    seen: list[CollectiveResult] = []

    def job(env: simpy.Environment) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1e-3)
        res = yield run_collective(net, "all_reduce", devs, 8 * MiB, traffic_class="dp", label="bucket0")
        seen.append(res)

    net.env.process(job(net.env))
    net.run()
    (res,) = seen
    assert res.start_s == pytest.approx(1e-3) and res.op == "all_reduce" and res.algo == "ring"
    assert res.num_devices == 4 and res.num_transfers == 24
    assert res.time_s == pytest.approx(simulate_collective(g, "all_reduce", devs, 8 * MiB))
    fr = net.flow_records()
    assert len(fr) == 24 and set(fr["traffic_class"]) == {"dp"} and set(fr["label"]) == {"bucket0"}
    assert fr["bytes"].sum() == pytest.approx(4 * 2 * 3 / 4 * 8 * MiB)


def test_concurrent_collectives_contend_for_links() -> None:
    g = tiers(2, 4)
    devs = accelerators(g)
    alone = simulate_collective(g, "all_reduce", devs, 64 * MiB)
    net = Network(g)
    a = run_collective(net, "all_reduce", devs, 64 * MiB, label="a")
    b = run_collective(net, "all_reduce", devs, 64 * MiB, label="b")
    net.run()
    assert result_of(a).time_s > 1.8 * alone and result_of(b).time_s > 1.8 * alone
    # groups that share no link do not slow each other down
    g2 = star_topology(8, 100e9, 0.5e-6)
    d2 = accelerators(g2)
    solo = simulate_collective(g2, "all_reduce", d2[:4], 64 * MiB)
    net2 = Network(g2)
    p1 = run_collective(net2, "all_reduce", d2[:4], 64 * MiB)
    p2 = run_collective(net2, "all_reduce", d2[4:], 64 * MiB)
    net2.run()
    assert result_of(p1).time_s == pytest.approx(solo) and result_of(p2).time_s == pytest.approx(solo)


def test_hierarchical_beats_flat_ring_when_inter_node_is_the_bottleneck() -> None:
    # 2 servers x 4 GPUs: per NIC the flat ring (one ring per rail) moves 2(n-1)/n S/4 = 0.44 S,
    # the hierarchical all-reduce 2(N-1)/N S/4 = 0.25 S
    g = tiers(2, 4, nic_bw=12.5e9)
    devs = accelerators(g)
    size = 256 * MiB
    flat = simulate_collective(g, "all_reduce", devs, size, algo="ring")
    flat_one_ring = simulate_collective(g, "all_reduce", devs, size, algo="ring", channels=1)
    hier = simulate_collective(g, "all_reduce", devs, size, algo="hierarchical")
    assert hier < 0.7 * flat < flat_one_ring
    # with a fast inter-node fabric the advantage disappears (the flat ring is as good)
    g_fast = tiers(2, 4, nic_bw=400e9)
    assert simulate_collective(g_fast, "all_reduce", devs, size, algo="hierarchical") > 0.9 * simulate_collective(
        g_fast, "all_reduce", devs, size, algo="ring"
    )


def test_skewed_all_to_allv_is_slower_than_uniform() -> None:
    g = star_topology(8, 100e9, 0.5e-6)
    devs = accelerators(g)
    n = len(devs)
    total = n * 64 * MiB
    uniform = np.full((n, n), total / (n * (n - 1)))
    np.fill_diagonal(uniform, 0.0)
    skewed = np.full((n, n), 0.02 * total / (n * (n - 1)))
    np.fill_diagonal(skewed, 0.0)
    hot = total - skewed.sum()
    skewed[1:, 0] += hot / (n - 1)  # a hot expert on rank 0: incast
    assert skewed.sum() == pytest.approx(uniform.sum())
    t_uni = simulate_collective(g, "all_to_allv", devs, 0, matrix=uniform)
    t_skew = simulate_collective(g, "all_to_allv", devs, 0, matrix=skewed)
    assert t_skew > 3 * t_uni
    for algo in ("pairwise",):
        assert simulate_collective(g, "all_to_allv", devs, 0, matrix=skewed, algo=algo) > simulate_collective(
            g, "all_to_allv", devs, 0, matrix=uniform, algo=algo
        )


def _bytes_by_class(g: nx.DiGraph, algo: str, devs: list[str], size: float) -> dict[str, float]:
    net = Network(g)
    run_collective(net, "all_reduce", devs, size, algo=algo)
    net.run()
    lr = net.link_records()
    return lr.groupby("class")["bytes"].sum().to_dict()


def test_in_network_reduction_halves_the_wire_bytes() -> None:
    g = tiers(4, 2)
    devs = accelerators(g)
    n, size = len(devs), 64 * MiB
    ring = _bytes_by_class(g, "ring", devs, size)["ib"]
    sharp = _bytes_by_class(g, "sharp", devs, size)["ib"]
    assert sharp / ring == pytest.approx(n / (2 * (n - 1)), rel=1e-6)
    assert sharp / ring < 0.6
    s = star_topology(8, 100e9, 0.5e-6)
    d = accelerators(s)
    # NVLS: every GPU sends and receives S (1 + 1/n) through its port, a ring 2 (n - 1) / n S
    assert _bytes_by_class(s, "nvls", d, size)["nvlink"] / _bytes_by_class(s, "ring", d, size)[
        "nvlink"
    ] == pytest.approx(9 / 14, rel=1e-6)


@pytest.mark.parametrize("algo", ["ring", "flat_tree", "halving_doubling"])
def test_step_latency_adds_depth_times_latency(algo: str) -> None:
    g = star_topology(8, 100e9, 0.5e-6)
    devs = accelerators(g)
    plan = build_plan("all_reduce", devs, 4 * MiB, algo=algo, graph=g)
    t0 = simulate_collective(g, "all_reduce", devs, 4 * MiB, algo=algo)
    t1 = simulate_collective(g, "all_reduce", devs, 4 * MiB, algo=algo, step_latency_s=5e-6)
    assert t1 - t0 == pytest.approx(plan.depth() * 5e-6, rel=1e-6)


def test_independent_transfers_go_to_the_engine_in_one_batch() -> None:
    g = tiers(64, 1)
    devs = accelerators(g)
    net = Network(g)
    calls: list[int] = []
    orig = net.transfer_notify

    def spy(src: np.ndarray, dst: np.ndarray, nbytes: Any, *args: Any, **kw: Any) -> np.ndarray:
        calls.append(len(src))
        return orig(src, dst, nbytes, *args, **kw)

    net.transfer_notify = spy  # type: ignore[method-assign]
    proc = run_collective(net, "all_to_all", devs, 64 * MiB)
    net.run()
    assert calls == [64 * 63]
    assert result_of(proc).num_transfers == 64 * 63
    # a ring step of n transfers is one batch too
    net2 = Network(star_topology(16, 1e11, 1e-6))
    calls.clear()
    orig = net2.transfer_notify
    net2.transfer_notify = spy  # type: ignore[method-assign]
    run_collective(net2, "all_reduce", accelerators(net2.graph), MiB)
    net2.run()
    assert calls == [16] * 30


def test_efficiency_slows_bandwidth_bound_collectives() -> None:
    g = star_topology(8, 100e9, 0.5e-6)
    devs = accelerators(g)
    full = simulate_collective(g, "all_reduce", devs, 512 * MiB)
    half = simulate_collective(g, "all_reduce", devs, 512 * MiB, efficiency={"nvlink": 0.5})
    assert half / full == pytest.approx(2.0, rel=0.01)


def test_trivial_collectives_finish_at_once() -> None:
    g = star_topology(4, 100e9, 0.5e-6)
    assert simulate_collective(g, "all_reduce", ["n0.g1"], MiB) == 0.0
    assert simulate_collective(g, "all_reduce", accelerators(g), 0) == 0.0


def test_executor_errors() -> None:
    g = star_topology(4, 100e9, 0.5e-6)
    net = Network(g)
    with pytest.raises(CollectiveError, match="step_latency_s must be >= 0"):
        run_collective(net, "all_reduce", accelerators(g), MiB, step_latency_s=-1.0)
    plan = build_plan("all_reduce", ["x0", "x1"], MiB)
    with pytest.raises(CollectiveError, match="unknown device 'x0'"):
        execute_plan(net, plan)
    with pytest.raises(CollectiveError, match="unknown device"):
        run_collective(net, "all_reduce", ["n0.g0", "n5.g0"], MiB)


def test_accelerators_per_node() -> None:
    g = tiers(3, 4)
    assert accelerators(g, per_node=2) == ["n0.g0", "n0.g1", "n1.g0", "n1.g1", "n2.g0", "n2.g1"]
    assert len(accelerators(g)) == 12
    with pytest.raises(CollectiveError):
        accelerators(g, per_node=0)


def test_deepep_forwards_while_the_rdma_transfer_is_still_arriving() -> None:
    """Issue 18.2: DeepEP pipelines tokens through the forwarding GPU; store-and-forward took
    2866 us against 2352 us for the direct all-to-all on 2 H800 nodes."""
    from netsim.topology import load_topology

    g = load_topology("h800", nodes=2)
    devs = accelerators(g)
    size = 234881024
    direct = simulate_collective(g, "all_to_all", devs, size, algo="direct")
    deepep = simulate_collective(g, "all_to_all", devs, size, algo="deepep")
    assert deepep < 1.1 * direct
    # chunking matters now: one chunk is store-and-forward again
    one = simulate_collective(g, "all_to_all", devs, size, algo="deepep", chunk_bytes=size)
    assert one > deepep * 1.1


def test_hierarchical_all_reduce_is_pipelined_by_default() -> None:
    """Issue 18.5: the phases of the hierarchical all-reduce pipeline chunk by chunk (293 GB/s
    busbw at 1 GiB on 2 DGX H100 before, 481 with 16 MiB chunks)."""
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=2)
    devs = accelerators(g)
    t = simulate_collective(g, "all_reduce", devs, 2**30, algo="hierarchical")
    busbw = 2 * 15 / 16 * 2**30 / t / 1e9
    assert busbw > 450
