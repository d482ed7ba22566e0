"""NCCL's point-to-point channels (netsim/collectives/nccl/p2p.py): the channel rule by hand
(enqueue.cc addP2pToPlan, paths.cc ncclTopoComputeP2pChannels at NCCL 2.30.7) and the flows it
caps: a send/recv runs at its channels' rate until the link binds; an all-to-all inside a
server is not slowed (every peer has its own channels)."""

from __future__ import annotations

import pytest

from netsim.collectives import accelerators, simulate_collective
from netsim.collectives.cost import NcclCost
from netsim.collectives.setup import collective_setup
from netsim.topology import load_topology

KiB = 2**10
MiB = 2**20
GiB = 2**30


def cost_of(topology: str, nodes: int = 1, overrides: tuple[str, ...] = ()) -> NcclCost:
    cost = collective_setup(load_topology(topology, nodes=nodes, overrides=overrides)).cost
    assert isinstance(cost, NcclCost)
    return cost


def test_the_channel_rule_on_one_dgx_h100() -> None:
    cost = cost_of("dgx-h100")
    devs = accelerators(cost.graph)
    # 24 communicator channels -> 32 p2p channels; 18 NVLinks -> 36 per peer, capped at 32;
    # 8 ranks share the 32: a transfer starts from 4; parts 64 KiB .. 16 MiB (512 KiB chunk)
    rule = cost.call("sendrecv", devs, 32 * MiB).p2p
    assert rule is not None
    assert (rule.min_channels, rule.max_channels) == (4, 32)
    assert (rule.min_part_bytes, rule.max_part_bytes) == (64 * KiB, 16 * MiB)
    got = {s: rule.channels(s * MiB) for s in (0.05, 1, 32, 64, 128, 256, 512, 1024)}
    assert got == {0.05: 1, 1: 4, 32: 4, 64: 4, 128: 8, 256: 16, 512: 32, 1024: 32}
    # 4 ranks: 8 channels to start from
    four = cost.call("sendrecv", devs[:4], 32 * MiB).p2p
    assert four is not None and (four.min_channels, four.channels(32 * MiB)) == (8, 8)


def test_the_channel_rule_across_two_servers() -> None:
    cost = cost_of("dgx-h100", nodes=2)
    devs = accelerators(cost.graph)
    rule = cost.call("sendrecv", devs, GiB).p2p
    assert rule is not None
    # a 48 GB/s NIC needs ceil(48 / 14) = 4 channels per network peer (P2P_PER_CHANNEL_NET_BW);
    # 16 ranks on 16 p2p channels start from 1; parts 64 .. 128 KiB (128 KiB network chunk)
    assert (rule.min_channels, rule.max_channels) == (1, 4)
    assert (rule.min_part_bytes, rule.max_part_bytes) == (64 * KiB, 128 * KiB)
    assert [rule.channels(b) for b in (64 * KiB, 200 * KiB, 300 * KiB, GiB)] == [1, 2, 4, 4]


@pytest.mark.parametrize("nodes", [1, 2])
def test_the_vectorised_rule_equals_the_rule_per_transfer(nodes: int) -> None:
    """An all-to-all's caps come from the array form of the rule: the same channels for every
    size (zero, below a part, odd byte counts, each doubling, past the most channels)."""
    cost = cost_of("dgx-h100", nodes=nodes)
    rule = cost.call("sendrecv", accelerators(cost.graph), 32 * MiB).p2p
    assert rule is not None
    sizes = [0, 1, 1000, 64 * KiB - 1, 64 * KiB + 1, 200 * KiB, 3 * MiB + 7, 32 * MiB, 129 * MiB, 3 * GiB]
    assert rule.rate_caps_Bps(sizes).tolist() == [rule.rate_cap_Bps(b) for b in sizes]


def test_protocol_follows_the_bytes_per_channel() -> None:
    cost = cost_of("dgx-h100")
    devs = accelerators(cost.graph)
    assert cost.call("sendrecv", devs, 16 * KiB).proto == "LL"
    assert cost.call("sendrecv", devs, 48 * KiB).proto == "Simple"  # one channel, above 16 KiB
    call = cost.call("sendrecv", devs, 32 * MiB)
    assert call.proto == "Simple" and call.p2p is not None and call.p2p.channels(32 * MiB) == 4


@pytest.mark.parametrize(("nranks", "nbytes", "channels"), [(8, 32 * MiB, 4), (8, 128 * MiB, 8), (4, 64 * MiB, 8)])
def test_a_send_recv_runs_at_its_channels_rate(nranks: int, nbytes: int, channels: int) -> None:
    """Below the link rate the time is the bytes over channels x 20.2 GB/s (plus NCCL's latencies):
    what nccl-tests measures on one DGX H100 (79.5 GB/s at 32 MiB on 8 ranks, 162.5 at 128 MiB)."""
    cost = cost_of("dgx-h100")
    devs = accelerators(cost.graph)[:nranks]
    t = simulate_collective(cost.graph, "sendrecv", devs, nbytes, cost=cost, efficiency=cost.efficiency)
    call = cost.call("sendrecv", devs, nbytes)
    latency = call.base_latency_s + call.hop_latency_s["intra"]
    assert t == pytest.approx(latency + nbytes / (channels * 20.2e9), rel=0.01)


def test_large_send_recv_and_all_to_all_stay_link_bound() -> None:
    cost = cost_of("dgx-h100")
    devs = accelerators(cost.graph)
    link = 450 * 0.824  # the achieved NVLink port, GB/s
    t = simulate_collective(cost.graph, "sendrecv", devs, 4 * GiB, cost=cost, efficiency=cost.efficiency)
    assert 4 * GiB / t / 1e9 == pytest.approx(link, rel=0.01)  # 32 channels x 20.2 > the port
    # all-to-all of 256 MiB: 32 MiB to each peer on 4 channels each, 7 peers: 565 GB/s of
    # channels against a 371 GB/s port
    capped = simulate_collective(cost.graph, "all_to_all", devs, 256 * MiB, cost=cost, efficiency=cost.efficiency)
    assert 7 / 8 * 256 * MiB / capped / 1e9 == pytest.approx(link, rel=0.02)


def test_the_channel_rate_is_an_overridable_constant() -> None:
    cost = cost_of("dgx-h100", overrides=("collectives.constants.p2p_channel_bw_GBps.hopper=40",))
    devs = accelerators(cost.graph)
    t = simulate_collective(cost.graph, "sendrecv", devs, 32 * MiB, cost=cost, efficiency=cost.efficiency)
    call = cost.call("sendrecv", devs, 32 * MiB)
    latency = call.base_latency_s + call.hop_latency_s["intra"]
    assert t == pytest.approx(latency + 32 * MiB / (4 * 40e9), rel=0.01)
    a100 = cost_of("dgx-a100")
    rule = a100.call("sendrecv", accelerators(a100.graph), 128 * MiB).p2p
    assert rule is not None and rule.channel_bw_Bps == pytest.approx(14.4e9)
