"""Hand-computed cases for the flow engine: every number here is worked out on paper."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from netsim.errors import NetsimError, RoutingError
from netsim.network import Network, max_min_rates
from tests.network.graphs import fabric_node, leaf_spine, link, rail_pair, star

GB = 1e9


def ends(net: Network) -> list[float]:
    return net.flow_records()["end_s"].tolist()


def test_one_flow_is_latency_plus_bytes_over_bandwidth() -> None:
    net = Network(star(2, bw=GB, lat=1e-6))
    net.submit("h0", "h1", 2 * GB)
    net.run()
    # two links of 1 us each; 2 GB at 1 GB/s
    assert ends(net) == pytest.approx([2.0 + 2e-6], rel=1e-12)


def test_switch_forwarding_latency_is_added() -> None:
    g = star(2, bw=GB, lat=1e-6)
    g.nodes["sw"]["latency_s"] = 5e-7
    net = Network(g)
    net.submit("h0", "h1", 1.0)
    net.run()
    assert ends(net)[0] == pytest.approx(2e-6 + 5e-7 + 1e-9, rel=1e-9)


def test_two_flows_on_one_link_share_it() -> None:
    net = Network(star(3, lat=0.0))
    net.submit_many(["h0", "h1"], ["h2", "h2"], GB)
    net.run()
    assert ends(net) == pytest.approx([2.0, 2.0])


def test_staggered_start() -> None:
    net = Network(star(3, lat=0.0))
    net.submit("h0", "h2", GB, 0.0)
    net.submit("h1", "h2", GB, 0.5)
    net.run()
    # h0 alone for 0.5 s (0.5 GB), then both at 0.5 GB/s: h0 ends at 1.5; h1 has 0.5 GB left
    # at 1.5 and finishes alone at 2.0.
    assert ends(net) == pytest.approx([1.5, 2.0])


@pytest.mark.parametrize("n", [2, 5, 16])
def test_incast_takes_n_times_one_flow(n: int) -> None:
    net = Network(star(n + 1, lat=0.0))
    net.submit_many([f"h{i}" for i in range(1, n + 1)], ["h0"] * n, GB)
    net.run()
    assert max(ends(net)) == pytest.approx(n * 1.0)


def test_textbook_max_min_gives_different_rates() -> None:
    # a -> b (10 B/s) -> c (4 B/s).  f1: a->c, f2: a->b, f3: b->c.
    # b->c is the bottleneck of f1 and f3: 2 each; f2 gets the rest of a->b: 8.
    g = nx.DiGraph()
    for v in "abc":  # b forwards f1, so it is a switch (accelerators do not relay)
        fabric_node(g, v, kind="switch" if v == "b" else "accelerator")
    link(g, "a", "b", 10.0)
    link(g, "b", "c", 4.0)
    n_f, l_f = np.array([0, 0, 1, 2]), np.array([0, 2, 0, 2])
    rates = max_min_rates(3, n_f, l_f, None, np.array([10.0, 10.0, 4.0, 4.0]))
    assert rates.tolist() == pytest.approx([2.0, 8.0, 2.0])
    net = Network(g)
    net.submit_many(["a", "a", "b"], ["c", "b", "c"], 8.0)
    net.run()
    # f2: 8 B at 8 B/s = 1 s; f1 and f3 stay at 2 B/s (bottleneck b->c) -> 4 s
    assert ends(net) == pytest.approx([4.0, 1.0, 4.0])


def test_rate_cap_limits_a_flow_and_frees_capacity() -> None:
    net = Network(star(3, lat=0.0))
    net.submit("h0", "h2", GB, rate_cap_Bps=0.25 * GB)
    net.submit("h1", "h2", GB)
    net.run()
    # capped flow 0.25 GB/s, the other 0.75 GB/s: ends at 4/3 s; then the capped one alone
    # (still capped) has 1 - 1/3 GB left -> 4/3 + (2/3)/0.25 = 4 s
    assert ends(net) == pytest.approx([4.0, 4.0 / 3.0])


def test_link_class_efficiency_scales_capacity() -> None:
    net = Network(star(2, lat=0.0), efficiency={"ib": 0.8})
    net.submit("h0", "h1", GB)
    net.run()
    assert ends(net) == pytest.approx([1.25])


def test_ecmp_spreads_flows_across_spines_and_shortest_does_not() -> None:
    g = leaf_spine(leaves=2, spines=4, hosts_per_leaf=16)
    src = [f"h0_{i}" for i in range(16)]
    dst = [f"h1_{i}" for i in range(16)]
    used = {}
    for policy in ("ecmp", "shortest"):
        net = Network(g, routing=policy, seed=3)
        net.submit_many(src, dst, GB)
        net.run()
        lk = net.link_records().set_index("link")
        used[policy] = sum(lk.loc[f"leaf0->spine{s}", "bytes"] > 0 for s in range(4))
    assert used["ecmp"] >= 3
    assert used["shortest"] == 1


def test_spray_splits_a_flow_evenly_over_spines() -> None:
    g = leaf_spine(leaves=2, spines=4, hosts_per_leaf=1, bw=4 * GB, up_bw=GB)
    net = Network(g, routing="spray")
    net.submit("h0_0", "h1_0", 4 * GB)
    net.run()
    # 4 spines x 1 GB/s = 4 GB/s: 1 s; each uplink carries a quarter of the bytes
    assert ends(net) == pytest.approx([1.0])
    lk = net.link_records().set_index("link")
    assert [lk.loc[f"leaf0->spine{s}", "bytes"] for s in range(4)] == pytest.approx([GB] * 4)


def test_cross_rail_flow_on_rail_optimised_fabric() -> None:
    g = rail_pair()
    net = Network(g, routing="ecmp")
    net.submit("n0.g0", "n1.g1", GB)
    net.run()
    lk = net.link_records().set_index("link")
    carried = set(lk.index[lk["bytes"] > 0])
    assert carried == {
        "n0.g0->n0.nic0",
        "n0.nic0->r0.leaf0",
        "r0.leaf0->spine0",
        "spine0->r1.leaf0",
        "r1.leaf0->n1.nic1",
        "n1.nic1->n1.g1",
    }
    net = Network(g, routing="pxn")
    net.submit("n0.g0", "n1.g1", GB)
    net.run()
    lk = net.link_records().set_index("link")
    carried = set(lk.index[lk["bytes"] > 0])
    # PXN: NVLink to the GPU on the destination's rail, then rail 1 only
    assert carried == {
        "n0.g0->n0.nvsw",
        "n0.nvsw->n0.g1",
        "n0.g1->n0.nic1",
        "n0.nic1->r1.leaf0",
        "r1.leaf0->n1.nic1",
        "n1.nic1->n1.g1",
    }


def test_intra_node_flow_stays_on_nvlink() -> None:
    net = Network(rail_pair())
    net.submit("n0.g0", "n0.g1", 400 * GB)
    net.run()
    assert ends(net) == pytest.approx([1.0])
    lk = net.link_records()
    assert set(lk.loc[lk["bytes"] > 0, "class"]) == {"nvlink"}


def test_pinned_path_is_followed() -> None:
    g = leaf_spine(leaves=2, spines=2, hosts_per_leaf=1)
    net = Network(g)
    net.submit("h0_0", "h1_0", GB, path=["h0_0", "leaf0", "spine1", "leaf1", "h1_0"])
    net.run()
    lk = net.link_records().set_index("link")
    assert lk.loc["leaf0->spine1", "bytes"] == pytest.approx(GB)
    assert lk.loc["leaf0->spine0", "bytes"] == 0


def test_bad_inputs_raise_netsim_errors() -> None:
    net = Network(star(2))
    with pytest.raises(NetsimError, match="unknown device 'nope'"):
        net.submit("h0", "nope", 1.0)
    with pytest.raises(RoutingError, match="no link"):
        net.submit("h0", "h1", 1.0, path=["h0", "h1"])
    with pytest.raises(NetsimError, match=">= 0"):
        net.submit("h0", "h1", -1.0)


def test_zero_bytes_and_local_flows() -> None:
    net = Network(star(2, lat=1e-6))
    net.submit("h0", "h1", 0.0)
    net.submit("h0", "h0", GB)
    net.run()
    assert ends(net) == pytest.approx([2e-6, 0.0])


def test_transfer_inside_simpy_processes() -> None:
    net = Network(star(3, lat=0.0))
    log: list[tuple[str, float]] = []

    def sender(env, name: str, peer: str, delay: float):  # type: ignore[no-untyped-def]
        yield env.timeout(delay)
        yield net.transfer(name, peer, GB, traffic_class="dp")
        log.append((name, env.now))

    net.env.process(sender(net.env, "h0", "h2", 0.0))
    net.env.process(sender(net.env, "h1", "h2", 0.0))
    net.run()
    assert sorted(log) == [("h0", pytest.approx(2.0)), ("h1", pytest.approx(2.0))]
    assert set(net.flow_records()["traffic_class"]) == {"dp"}
    assert net.num_rate_updates <= 2  # one batch start, one batch completion


def test_unconnected_destination_is_a_routing_error() -> None:
    g = star(2)
    fabric_node(g, "island", kind="accelerator")
    net = Network(g)
    net.submit("h0", "island", 1.0)
    with pytest.raises(RoutingError):
        net.run()
    assert math.isnan(net.flow_records()["end_s"].iloc[0])
