"""Queue pairs per connection (``collectives.qps_per_connection``, NCCL's
``NCCL_IB_QPS_PER_CONNECTION``; Meta's 16 flows per GPU pair with Enhanced-ECMP): under a hashing
path policy each queue pair takes its own path with an equal share of the flow's bytes."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.network.engine import Network
from netsim.network.links import LinkTable
from netsim.network.routing import Router
from netsim.topology import load_topology
from tests.network.graphs import leaf_spine

SPINES = 16


def _uplinks(routes: object, links: LinkTable, flow: int) -> dict[str, float]:
    """The leaf -> spine links one flow crosses, with the share of its bytes on each."""
    sel = routes.flow == flow  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for lk, w in zip(routes.link[sel], routes.weight[sel], strict=True):  # type: ignore[attr-defined]
        a, b = links.src[lk], links.dst[lk]
        if links.names[a].startswith("leaf") and links.names[b].startswith("spine"):
            out[links.names[b]] = out.get(links.names[b], 0.0) + float(w)
    return out


def test_each_queue_pair_is_hashed_onto_its_own_path() -> None:
    g = leaf_spine(2, SPINES, 4)
    links = LinkTable.from_graph(g)
    src = np.array([links.index[f"h0_{i}"] for i in range(4)])
    dst = np.array([links.index[f"h1_{i}"] for i in range(4)])
    ids = np.arange(4)
    one = Router(g, links, "ecmp", seed=3).route(src, dst, ids)
    many = Router(g, links, "ecmp", seed=3, queue_pairs=16).route(src, dst, ids)
    for f in range(4):
        assert len(_uplinks(one, links, f)) == 1
        up = _uplinks(many, links, f)
        assert sum(up.values()) == pytest.approx(1.0)
        assert len(up) > 4  # 16 hashes over 16 spines land on many of them
        assert all(np.isclose(w * 16, round(w * 16)) for w in up.values())  # whole queue pairs
    # every flow still crosses its own host links whole, and the path latency is a weighted mean
    assert np.allclose(many.hops, one.hops)
    # deterministic: the same seed gives the same split
    again = Router(g, links, "ecmp", seed=3, queue_pairs=16).route(src, dst, ids)
    assert np.array_equal(again.link, many.link) and np.array_equal(again.weight, many.weight)


def test_policies_that_do_not_hash_ignore_queue_pairs() -> None:
    g = leaf_spine(2, SPINES, 2)
    links = LinkTable.from_graph(g)
    src = np.array([links.index["h0_0"], links.index["h0_1"]])
    dst = np.array([links.index["h1_0"], links.index["h1_1"]])
    for policy in ("spray", "shortest"):
        a = Router(g, links, policy).route(src, dst, np.arange(2))
        b = Router(g, links, policy, queue_pairs=16).route(src, dst, np.arange(2))
        assert np.array_equal(a.link, b.link) and np.allclose(a.weight, b.weight)


def test_queue_pairs_relieve_hash_collisions_towards_spraying() -> None:
    """Eight flows from one leaf to another over eight spines: one hash per flow collides on some
    spine (the slowest flow shares it), sixteen queue pairs per flow spread the load, spraying
    spreads it evenly; the all-to-leaf transfer finishes in that order."""
    g = leaf_spine(2, 8, 8, bw=50e9)
    done = {}
    for label, policy, qps in (("ecmp", "ecmp", 1), ("qps16", "ecmp", 16), ("spray", "spray", 1)):
        net = Network(g, routing=policy, seed=1)
        net.router = Router(g, net.links, policy, seed=1, queue_pairs=qps)
        src = np.array([net.links.index[f"h0_{i}"] for i in range(8)])
        dst = np.array([net.links.index[f"h1_{i}"] for i in range(8)])
        events = net.transfer_ids(src, dst, np.full(8, 1e9))
        net.env.run(net.env.all_of(events))
        done[label] = net.env.now
    assert done["spray"] == pytest.approx(1e9 / 50e9, rel=1e-6)
    assert done["spray"] <= done["qps16"] < done["ecmp"]


def test_the_topology_sets_queue_pairs_and_bad_values_name_the_field() -> None:
    g = load_topology("dgx-h100", nodes=2, overrides=["collectives.qps_per_connection=16"])
    links = LinkTable.from_graph(g)
    assert Router(g, links, "pxn").queue_pairs == 16
    assert Router(g, links, "dmodk").queue_pairs == 1  # static routing: one path per destination
    assert Router(load_topology("dgx-h100", nodes=2), links, "ecmp").queue_pairs == 1
    with pytest.raises(SpecError, match=r"collectives\.qps_per_connection"):
        load_topology("dgx-h100", nodes=2, overrides=["collectives.qps_per_connection=0"])
