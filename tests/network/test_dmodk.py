"""InfiniBand static d-mod-k routing (``dmodk``): shift permutations are contention-free.

Zahavi et al. ("Optimized InfiniBand fat-tree routing for shift all-to-all communication
patterns", 2010) show that destination-mod-k routing on a full fat tree routes every shift
permutation (host ``i`` sends to host ``i + s mod N``) without two flows on one link.  The
tests route every shift on a two-level and a three-level fat tree of one-NIC servers and
measure each back-end link's load in NIC line rates (flows x NIC bandwidth / link capacity).
Per-flow ECMP hashing on the same fabrics loads some link with several flows, so the check can
fail.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from netsim.network import PATH_POLICIES
from netsim.network.links import LinkTable
from netsim.network.routing import Router
from netsim.topology import load_topology
from tests.topology.helpers import make

NIC_BPS = 12.5e9  # the helpers' 100 Gb/s NICs


def _two_level() -> nx.DiGraph:
    """16 servers, 4 per leaf, 4 spines: every leaf has one cable to every spine."""
    return make({"node": {"accelerators": 1}, "backend": {"fabric": "leaf-spine", "nodes_per_leaf": 4}}, num_nodes=16)


def _three_level() -> nx.DiGraph:
    """24 servers, 4 per leaf, 2 leaves per pod (3 pods), 4 spines per pod, 8 cores: spine ``s``
    of each pod has one cable to each of the 2 cores of group ``s``."""
    backend = {"fabric": "fat-tree", "nodes_per_leaf": 4, "leaves_per_pod": 2, "spines_per_pod": 4, "cores": 8}
    return make({"node": {"accelerators": 1}, "backend": backend}, num_nodes=24)


def _worst_shift_load(g: nx.DiGraph, policy: str, seed: int = 0) -> float:
    """The most loaded back-end link, in NIC line rates, over every shift permutation."""
    links = LinkTable.from_graph(g)
    hosts = np.array([links.index[n] for n in sorted(g) if g.nodes[n].get("kind") == "accelerator"])
    hosts = hosts[np.argsort([g.nodes[links.names[h]]["node"] for h in hosts])]  # server order
    names = links.names
    backend = np.array(
        [g.edges[names[u], names[v]]["network"] == "backend" for u, v in zip(links.src, links.dst, strict=True)]
    )
    router = Router(g, links, policy, seed=seed)
    n = hosts.size
    worst = 0.0
    for s in range(1, n):
        routes = router.route(hosts, hosts[(np.arange(n) + s) % n], np.arange(n))
        flows = np.bincount(routes.link, weights=routes.weight, minlength=links.num_links)
        worst = max(worst, float((flows * NIC_BPS / links.nominal_Bps)[backend].max()))
    return worst


@pytest.mark.parametrize("fabric", [_two_level, _three_level], ids=["two-level", "three-level"])
def test_every_shift_permutation_is_contention_free_under_dmodk(fabric) -> None:  # type: ignore[no-untyped-def]
    g = fabric()
    assert _worst_shift_load(g, "dmodk") == pytest.approx(1.0)
    # the same shifts under per-flow ECMP hashing put several flows on some link
    assert _worst_shift_load(g, "ecmp") >= 2.0


def test_dmodk_is_deterministic_and_ignores_the_seed() -> None:
    g = _three_level()
    links = LinkTable.from_graph(g)
    hosts = np.array([links.index[f"n{k}.g0"] for k in range(24)])
    rng = np.random.default_rng(0)
    src, dst = rng.choice(hosts, 200), rng.choice(hosts, 200)
    a = Router(g, links, "dmodk", seed=0).route(src, dst, np.arange(200))
    b = Router(g, links, "dmodk", seed=7).route(src, dst, np.arange(200) + 1000)
    assert np.array_equal(a.link, b.link) and np.array_equal(a.flow, b.flow)
    e0 = Router(g, links, "ecmp", seed=0).route(src, dst, np.arange(200))
    e7 = Router(g, links, "ecmp", seed=7).route(src, dst, np.arange(200))
    assert not np.array_equal(e0.link, e7.link)  # the hash policies do depend on it


def test_flows_to_one_destination_share_one_path_down() -> None:
    g = _three_level()
    links = LinkTable.from_graph(g)
    srcs = np.array([links.index[f"n{k}.g0"] for k in range(8, 24)])  # the other two pods
    dst = np.full(srcs.size, links.index["n0.g0"])
    routes = Router(g, links, "dmodk").route(srcs, dst, np.arange(srcs.size))
    names = links.names
    into_pod0 = {
        (names[links.src[k]], names[links.dst[k]])
        for k in routes.link.tolist()
        if g.nodes[names[links.src[k]]].get("role") == "core"
    }
    assert len(into_pod0) == 1  # one core, one spine: the destination's static route


def test_dmodk_pxn_keeps_inter_node_traffic_on_the_destinations_rail() -> None:
    g = load_topology("dgx-h100", nodes=40, overrides=("backend.nodes_per_leaf=20",))
    links = LinkTable.from_graph(g)
    src = np.array([links.index["n0.g0"], links.index["n0.g1"]])
    dst = np.array([links.index["n25.g3"], links.index["n25.g5"]])
    for policy in ("dmodk-pxn", "pxn"):
        routes = Router(g, links, policy).route(src, dst, np.arange(2))
        rails = {
            g.nodes[links.names[links.dst[k]]].get("rail")
            for k in routes.link.tolist()
            if g.nodes[links.names[links.dst[k]]].get("role") == "leaf"
        }
        assert rails == {3, 5}, policy
    assert PATH_POLICIES.get("dmodk-pxn").rail_gateway and not PATH_POLICIES.get("dmodk").rail_gateway


def test_pipeline_stage_boundaries_on_a_rail_optimised_fabric() -> None:
    """Narayanan 1T's placement (stages of 6 DGX A100 servers, TP inside a server) on two full
    scalable units: every stage sends to the next and the previous at once, GPU ``t`` to GPU ``t``.
    Each rail's traffic is two shifts by 6 servers, so d-mod-k loads no leaf-spine link twice (a server's NICs
    receive from both neighbours whatever the routing);
    per-flow ECMP (``pxn``) puts two flows on some leaf-spine link.  The front-end network's
    wider leaves must not enter the back-end's destination indices."""
    g = load_topology("dgx-a100", nodes=40)
    links = LinkTable.from_graph(g)
    pairs = [(a, a + 6) for a in range(34)] + [(a + 6, a) for a in range(34)]
    src = np.array([links.index[f"n{a}.g{t}"] for a, _ in pairs for t in range(8)])
    dst = np.array([links.index[f"n{b}.g{t}"] for _, b in pairs for t in range(8)])
    kinds = [g.nodes[name]["kind"] for name in links.names]
    # the leaf-spine links (switch to switch)
    fabric = np.array([kinds[u] == kinds[v] == "switch" for u, v in zip(links.src, links.dst, strict=True)])

    def worst(policy: str) -> float:
        routes = Router(g, links, policy).route(src, dst, np.arange(src.size))
        return float(np.bincount(routes.link, weights=routes.weight, minlength=links.num_links)[fabric].max())

    assert worst("dmodk-pxn") == 1.0
    assert worst("pxn") >= 2.0
