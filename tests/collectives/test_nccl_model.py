"""The NCCL cost model: NCCL's tuner formulas by hand, its choices, and what the executor makes
of them (the collective time equals the tuner's own estimate when nothing else shares the links)."""

from __future__ import annotations

import pytest

from netsim.collectives import accelerators, simulate_collective
from netsim.collectives.cost import NcclCost
from netsim.collectives.nccl.constants import load_constants
from netsim.collectives.nccl.tuner import choose, tune
from netsim.collectives.setup import collective_setup
from netsim.errors import SpecError
from netsim.topology import load_topology

MiB = 2**20
GiB = 2**30


def h100(nodes: int = 1) -> tuple[NcclCost, list[str]]:
    g = load_topology("dgx-h100", nodes=nodes)
    setup = collective_setup(g)
    assert isinstance(setup.cost, NcclCost)
    return setup.cost, accelerators(g)


def test_channel_search_matches_nccls_on_dgx_h100() -> None:
    cost, devs = h100(1)
    sys = cost.table(devs).system
    # 18 NVLinks x 20.6 GB/s (topo.h SM90_NVLINK_BW) = 370.8 GB/s: 6 channels of 60 GB/s,
    # duplicated to 12 of 30 (ncclTopoDupChannels); the communicator doubles them again
    assert (sys.graphs["ring"].n_channels, sys.graphs["ring"].bw_intra_GBps) == (12, 30.0)
    assert sys.n_channels == 24
    # NVLS: (8 heads + 1) x 40 GB/s fits the port, the inter speed rises to 60 (< 2 x 40)
    nvls = sys.graphs["nvls"]
    assert (nvls.n_channels, nvls.bw_intra_GBps, nvls.bw_inter_GBps) == (8, 40.0, 60.0)
    cost2, devs2 = h100(2)
    ring2 = cost2.table(devs2).system.graphs["ring"]
    assert (ring2.n_channels, ring2.bw_intra_GBps) == (8, 48.0)  # one channel per NDR NIC at 48 GB/s


def test_tuner_bandwidths_and_latencies_by_hand() -> None:
    cost, devs = h100(1)
    t = cost.table(devs)
    n, steps = 8, 14
    # ring LL on one node: base 6.6 + 14 steps x 0.6 us; bandwidth min(llMaxBw 141, 360 x 0.5)
    assert t.latency[("all_reduce", "ring", "LL")] == pytest.approx(6.6 + steps * 0.6)
    assert t.bandwidth[("all_reduce", "ring", "LL")] == pytest.approx(141.0 * n / steps)
    # ring Simple: 8.4 + 14 x 3.4 us; 12 channels x 30 GB/s
    assert t.latency[("all_reduce", "ring", "Simple")] == pytest.approx(8.4 + steps * 3.4)
    assert t.bandwidth[("all_reduce", "ring", "Simple")] == pytest.approx(360.0 * n / steps)
    # NVLS: 8 x min(40 x 0.85 x 7/8 x 2, 60) = 476 GB/s bus bandwidth (the maintainers' ~480)
    assert t.bandwidth[("all_reduce", "nvls", "Simple")] * steps / n == pytest.approx(476.0)
    assert t.latency[("all_reduce", "nvls", "Simple")] == pytest.approx(25.0)


def test_nccls_choices_follow_the_size() -> None:
    cost, devs = h100(1)
    t = cost.table(devs)
    assert (choose(t, "all_reduce", 8).algo, choose(t, "all_reduce", 8).proto) == ("ring", "LL")
    assert choose(t, "all_reduce", 64 * MiB).algo == "nvls"
    assert choose(t, "all_gather", 8 * GiB).proto == "Simple"
    cost2, devs2 = h100(2)
    t2 = cost2.table(devs2)
    assert choose(t2, "all_reduce", 8).algo == "tree"
    assert choose(t2, "all_reduce", GiB).algo == "nvls_tree"
    a100 = collective_setup(load_topology("dgx-a100", nodes=1)).cost
    assert isinstance(a100, NcclCost)
    assert choose(a100.table(accelerators(a100.graph)), "all_reduce", GiB).algo == "ring"  # no NVLS on A100


@pytest.mark.parametrize(
    ("op", "nbytes"),
    [
        ("all_reduce", 4 * MiB),
        ("all_reduce", GiB),
        ("all_gather", 256 * MiB),
        ("reduce_scatter", 64 * MiB),
        ("broadcast", 64 * MiB),
    ],
)
def test_alone_the_simulated_time_is_nccls_estimate(op: str, nbytes: float) -> None:
    """Nothing else on the links: the engine adds no contention, so the collective takes what
    NCCL's tuner predicts (within the path latencies the engine cannot subtract exactly)."""
    cost, devs = h100(1)
    g = cost.graph
    call = cost.call(op, devs, nbytes)
    t = simulate_collective(g, op, devs, nbytes, cost=cost, efficiency=cost.efficiency)
    assert call.predicted_s is not None
    assert t == pytest.approx(call.predicted_s, rel=0.03)


def test_nvls_bandwidth_grows_with_the_gpu_count() -> None:
    """NVLS moves S (1 + 1/n) per GPU port at NCCL's NVLS efficiency: bus bandwidth
    2(n-1)/(n+1) x 0.85 x 370.8 GB/s, which the measurements of nccl-issue-1455 follow."""
    g = load_topology("dgx-h100", nodes=1)
    cost = collective_setup(g).cost
    for n in (4, 6, 8):
        devs = accelerators(g)[:n]
        t = simulate_collective(g, "all_reduce", devs, 4 * GiB, algo="nvls", cost=cost, efficiency={"nvlink": 0.824})
        busbw = 2 * (n - 1) / n * 4 * GiB / t / 1e9
        assert busbw == pytest.approx(2 * (n - 1) / (n + 1) * 0.85 * 450 * 0.824, rel=0.02)


def test_a_forced_protocol_and_algorithm() -> None:
    cost, devs = h100(1)
    call = cost.call("all_reduce", devs, GiB, algo="ring", proto="LL")
    assert (call.library_algo, call.proto, call.wire_factor) == ("ring", "LL", 2.0)
    with pytest.raises(SpecError, match="unknown protocol 'LL256'"):
        cost.call("all_reduce", devs, GiB, proto="LL256")


def test_constants_are_overridable_and_checked() -> None:
    c = load_constants({"hw_latency_us": {"nvlink": {"ring": {"LL": 1.2}}}})
    assert c.hw_latency_us("nvlink", "ring", "LL") == 1.2
    with pytest.raises(SpecError, match=r"unknown NCCL constant 'hw_latency_us\.nvlink\.rings'"):
        load_constants({"hw_latency_us": {"nvlink": {"rings": {"LL": 1.2}}}})
    with pytest.raises(SpecError, match="must be a number"):
        load_constants({"base_latency_us": {"ring": {"LL": "fast"}}})
    g = load_topology("dgx-h100", nodes=1, overrides=("collectives.constants.hw_latency_us.nvlink.ring.LL=1.6",))
    cost = collective_setup(g).cost
    assert isinstance(cost, NcclCost) and cost.constants.hw_latency_us("nvlink", "ring", "LL") == 1.6
    t = tune(cost.table(accelerators(g)).system, cost.constants)
    assert t.latency[("all_reduce", "ring", "LL")] == pytest.approx(6.6 + 14 * 1.6)


def test_ideal_stays_the_wire_bound() -> None:
    g = load_topology("dgx-h100", nodes=1)
    devs = accelerators(g)
    setup = collective_setup(g, cost_model="ideal")
    assert setup.efficiency == {}
    t = simulate_collective(g, "all_reduce", devs, 8 * GiB, cost=setup.cost)
    # ring at line rate: 2(n-1)/n S / 450 GB/s plus 14 steps of path latency
    assert 2 * 7 / 8 * 8 * GiB / t / 1e9 == pytest.approx(450.0, rel=0.001)


def test_hccl_uses_the_full_mesh_inside_an_atlas_a2_server() -> None:
    """Issue 18.14: ring and halving-doubling on one 910B server reached 56 GB/s (one HCCS link);
    HCCL runs its Mesh algorithm on a fully connected server, all 7 links at once."""
    g = load_topology("ascend-910b", nodes=1)
    devs = accelerators(g)
    setup = collective_setup(g)
    call = setup.cost.call("all_reduce", devs, GiB)
    assert call.algo == "mesh" and call.library_algo == "hccl-mesh"
    t_mesh = simulate_collective(g, "all_reduce", devs, GiB, cost=setup.cost, efficiency=setup.efficiency)
    t_ring = simulate_collective(g, "all_reduce", devs, GiB, algo="ring", cost=setup.cost, efficiency=setup.efficiency)
    busbw = 2 * 7 / 8 * GiB / t_mesh / 1e9
    assert busbw == pytest.approx(7 * 28 * 0.69, rel=0.03)  # every HCCS link of a rank busy
    assert t_ring > 5 * t_mesh
    # two groups of 4 (910A): not a full mesh, and across servers hierarchical
    g2 = load_topology("ascend-910a", nodes=2)
    s2 = collective_setup(g2)
    assert s2.cost.call("all_reduce", accelerators(g2)[:4], GiB).algo == "mesh"
    assert s2.cost.call("all_reduce", accelerators(g2)[:8], GiB).algo == "ring"
    assert s2.cost.call("all_reduce", accelerators(g2), GiB).algo == "hierarchical"


def test_hccl_rings_a_group_with_unequal_devices_per_server() -> None:
    """EPLB replica groups can hold 2 devices of one server and 1 of another; HCCL's
    hierarchical all-reduce needs equal shares, so such a group runs a ring and completes."""
    g = load_topology("ascend-910b", nodes=2)
    devs = accelerators(g)
    group = [devs[5], devs[6], devs[8]]
    setup = collective_setup(g)
    assert setup.cost.call("all_reduce", group, GiB).algo == "ring"
    assert simulate_collective(g, "all_reduce", group, GiB, cost=setup.cost, efficiency=setup.efficiency) > 0
