"""Every algorithm on an ideal topology takes its closed-form alpha-beta time (within 1%).

Notation: ``n`` ranks, ``S`` bytes, ``B`` link bandwidth, ``alpha`` GPU-to-GPU path latency,
``lam`` the per-step software latency, ``tau = alpha + lam`` (what every dependent step pays),
``k`` pipeline chunks.  The topologies are in :mod:`netsim.collectives.reference`.
"""

from __future__ import annotations

import math

import networkx as nx
import pytest

from netsim.collectives import accelerators, simulate_collective
from netsim.collectives.phases import double_binary_trees
from netsim.collectives.reference import full_mesh_topology, star_topology, two_tier_topology

B = 100e9
LINK = 0.5e-6
SW = 0.2e-6
ALPHA = 2 * LINK + SW  # GPU -> switch -> GPU on the star
LAM = 0.7e-6
TAU = ALPHA + LAM
MiB = 2**20


def close(sim: float, expect: float) -> None:
    assert sim == pytest.approx(expect, rel=0.01), f"simulated {sim * 1e6:.4f} us, closed form {expect * 1e6:.4f} us"


def star(n: int) -> tuple[nx.DiGraph, list[str]]:
    g = star_topology(n, B, LINK, switch_latency_s=SW)
    return g, accelerators(g)


@pytest.mark.parametrize("n", [2, 5, 8])
@pytest.mark.parametrize("size", [4096, 64 * MiB])
def test_ring_all_reduce(n: int, size: float) -> None:
    g, d = star(n)
    t = simulate_collective(g, "all_reduce", d, size, algo="ring", step_latency_s=LAM)
    close(t, 2 * (n - 1) * TAU + 2 * (n - 1) / n * size / B)


def test_ring_all_reduce_chunked() -> None:
    n, size, k = 8, 64 * MiB, 4
    g, d = star(n)
    t = simulate_collective(g, "all_reduce", d, size, chunk_bytes=size / n / k, step_latency_s=LAM)
    # chunks stream through the ring: 2(n-1) + k - 1 latencies, the same bandwidth term
    close(t, (2 * (n - 1) + k - 1) * TAU + 2 * (n - 1) / n * size / B)


@pytest.mark.parametrize("op", ["reduce_scatter", "all_gather"])
def test_ring_reduce_scatter_all_gather(op: str) -> None:
    n, size = 8, 32 * MiB
    g, d = star(n)
    t = simulate_collective(g, op, d, size, step_latency_s=LAM)
    close(t, (n - 1) * TAU + (n - 1) / n * size / B)


@pytest.mark.parametrize("n", [8, 6])
def test_halving_doubling(n: int) -> None:
    size = 16 * MiB
    g, d = star(n)
    t = simulate_collective(g, "all_reduce", d, size, algo="halving_doubling", step_latency_s=LAM)
    p = 1 << (n.bit_length() - 1)
    expect = 2 * math.log2(p) * TAU + 2 * (p - 1) / p * size / B
    if n != p:  # fold in and out: two more steps carrying the whole buffer
        expect += 2 * (TAU + size / B)
    close(t, expect)


@pytest.mark.parametrize("k", [1, 4])
def test_double_binary_tree_full_mesh(k: int) -> None:
    # on a full mesh every tree edge has its own link; the trees of 8 ranks have height 3
    n, size = 8, 32 * MiB
    g = full_mesh_topology(n, B, LINK)
    d = accelerators(g)
    t = simulate_collective(g, "all_reduce", d, size, algo="flat_tree", chunk_bytes=size / 2 / k, step_latency_s=LAM)
    tau = LINK + LAM
    height = 3
    close(t, (2 * height + k - 1) * (tau + size / 2 / k / B))


def test_double_binary_tree_shapes() -> None:
    for n in (2, 3, 4, 5, 8, 16, 13):
        for parents in double_binary_trees(n):
            roots = [r for r, p in enumerate(parents) if p < 0]
            assert len(roots) == 1
            for r in range(n):  # every rank reaches the root
                seen = 0
                while parents[r] >= 0:
                    r = parents[r]
                    seen += 1
                    assert seen <= n
        if n & (n - 1) == 0:  # power of two: no rank is an interior node of both trees
            t0, t1 = double_binary_trees(n)
            inner0, inner1 = set(t0) - {-1}, set(t1) - {-1}
            assert not inner0 & inner1


@pytest.mark.parametrize("op", ["broadcast", "reduce"])
def test_chain_pipeline(op: str) -> None:
    n, size, k = 6, 24 * MiB, 8
    g, d = star(n)
    t = simulate_collective(g, op, d, size, algo="ring", chunk_bytes=size / k, step_latency_s=LAM)
    close(t, (n - 1 + k - 1) * (TAU + size / k / B))


def test_tree_broadcast_full_mesh() -> None:
    n, size, k = 8, 8 * MiB, 4
    g = full_mesh_topology(n, B, LINK)
    t = simulate_collective(
        g, "broadcast", accelerators(g), size, algo="tree", chunk_bytes=size / k, step_latency_s=LAM
    )
    close(t, (3 + k - 1) * (LINK + LAM + size / k / B))  # btree of 8 ranks: height 3


def test_nvls_single_server() -> None:
    # NVLS is a pipeline through the switch: every GPU port carries S (1 + 1/n) each way at once
    # (the switch reads every GPU's share of each slice, then multicasts the reduced slices)
    n, size = 8, 64 * MiB
    g, d = star(n)
    t = simulate_collective(g, "all_reduce", d, size, algo="nvls", step_latency_s=LAM)
    close(t, LAM + size * (1 + 1 / n) / B + LINK + SW)


def test_nvls_is_bounded_by_the_gpu_ports() -> None:
    # issue 18.1: bus bandwidth 2(n-1)/n S / t may exceed a port, but never 2(n-1)/(n+1) x the port
    n, size = 8, 8 * 2**30
    g, d = star(n)
    t = simulate_collective(g, "all_reduce", d, size, algo="nvls")
    busbw = 2 * (n - 1) / n * size / t
    assert busbw <= 2 * (n - 1) / (n + 1) * B * (1 + 1e-6)
    assert busbw > 0.99 * 2 * (n - 1) / (n + 1) * B


def test_direct_and_pairwise_all_to_all() -> None:
    n, size = 8, 64 * MiB
    g, d = star(n)
    close(simulate_collective(g, "all_to_all", d, size, step_latency_s=LAM), TAU + (n - 1) / n * size / B)
    close(
        simulate_collective(g, "all_to_all", d, size, algo="pairwise", step_latency_s=LAM),
        (n - 1) * (TAU + size / n / B),
    )


def test_sendrecv() -> None:
    g, d = star(4)
    close(simulate_collective(g, "sendrecv", d[:2], 8 * MiB, step_latency_s=LAM), TAU + 8 * MiB / B)
    close(simulate_collective(g, "sendrecv", d, 8 * MiB, algo="pairs", step_latency_s=LAM), TAU + 8 * MiB / B)


# ------------------------------------------------------------------ two tiers: servers + leaf
BI, LI = 400e9, 0.4e-6  # NVLink per GPU, link latency
BE, LE = 25e9, 1.0e-6  # NIC, link latency
LP = 0.1e-6  # GPU-NIC (PCIe, 4 x BE) latency
LEAF = 0.3e-6
ALPHA_I = 2 * LI
ALPHA_E = 2 * (LP + LE) + LEAF


def tiers(nodes: int, per: int) -> tuple[nx.DiGraph, list[str]]:
    g = two_tier_topology(
        nodes,
        per,
        intra_bw_Bps=BI,
        intra_latency_s=LI,
        nic_bw_Bps=BE,
        nic_latency_s=LE,
        pcie_latency_s=LP,
        leaf_latency_s=LEAF,
    )
    return g, accelerators(g)


def test_hierarchical_all_reduce() -> None:
    nodes, per, size = 2, 4, 32 * MiB
    g, d = tiers(nodes, per)
    # one chunk: the phases run one after the other (the closed form)
    t = simulate_collective(g, "all_reduce", d, size, algo="hierarchical", step_latency_s=LAM, chunk_bytes=size / per)
    intra = 2 * (per - 1) * (LAM + ALPHA_I + size / per / BI)
    inter = 2 * (nodes - 1) * (LAM + ALPHA_E + size / per / nodes / BE)
    close(t, intra + inter)
    # by default the phases pipeline chunk by chunk: faster
    assert simulate_collective(g, "all_reduce", d, size, algo="hierarchical", step_latency_s=LAM) < 0.95 * t


def test_sharp_all_reduce() -> None:
    nodes, per, size = 2, 4, 32 * MiB
    g, d = tiers(nodes, per)
    c = size / per  # one chunk: the phases run one after the other
    t = simulate_collective(g, "all_reduce", d, size, algo="sharp", chunk_bytes=c, step_latency_s=LAM)
    ring = 2 * (per - 1) * (LAM + ALPHA_I + size / per / BI)  # reduce-scatter, all-gather in servers
    up = LAM + LP + LE + LEAF + c / BE  # GPU -> NIC -> leaf, reduced in the leaf
    down = LAM + LE + LP + c / BE
    close(t, ring + up + down)
    # in chunks, chunk j goes on to the switch as soon as its reduce-scatter is done: the phases
    # overlap, and the time approaches the NIC bound (S/G up and down at BE, both directions at once)
    k = 16
    t_k = simulate_collective(g, "all_reduce", d, size, algo="sharp", chunk_bytes=c / k, step_latency_s=LAM)
    assert size / per / BE < t_k < 0.7 * t


def test_sharp_one_gpu_per_server() -> None:
    nodes, size, k = 4, 16 * MiB, 8
    g, d = tiers(nodes, 1)
    t = simulate_collective(g, "all_reduce", d, size, algo="sharp", chunk_bytes=size / k, step_latency_s=LAM)
    c = size / k
    close(t, k * (LAM + LP + LE + LEAF + c / BE) + (LAM + LE + LP + c / BE))


def test_deepep_all_to_all() -> None:
    nodes, per, size = 2, 4, 64 * MiB
    g, d = tiers(nodes, per)
    q = size / (nodes * per)  # bytes per pair
    # one chunk: store and forward (the closed form)
    t = simulate_collective(
        g, "all_to_all", d, size, algo="deepep", step_latency_s=LAM, chunk_bytes=(nodes - 1) * per * q
    )
    rdma = LAM + ALPHA_E + (nodes - 1) * per * q / BE  # to the same-index GPU of the other server
    forward = LAM + ALPHA_I + (per - 1) * (nodes - 1) * q / BI  # NVLink to the owners
    close(t, rdma + forward)
    # by default the forwarding is pipelined in chunks behind the RDMA transfer
    t_p = simulate_collective(g, "all_to_all", d, size, algo="deepep", step_latency_s=LAM)
    assert rdma < t_p < t


def test_hierarchical_all_to_all() -> None:
    nodes, per, size = 2, 2, 64 * MiB
    g, d = tiers(nodes, per)
    q = size / (nodes * per)
    t = simulate_collective(g, "all_to_all", d, size, algo="hierarchical", step_latency_s=LAM)
    # gather 2q to the proxy while a direct q shares the link (3q drained), one 4q transfer per server
    # pair between proxies, scatter 2q to the other GPU
    gather = LAM + ALPHA_I + 3 * q / BI
    inter = LAM + ALPHA_E + 4 * q / BE
    scatter = LAM + ALPHA_I + 2 * q / BI
    close(t, gather + inter + scatter)
