"""Routing a batch of flows at once gives each flow the route it gets alone.

The router looks up the next hops of all the flows of a fabric hop together
(:meth:`~netsim.network.fabric.FabricPaths.pair_hops`, one table of the (switch, target) pairs
met so far) and picks the intra-server paths of all legs of a server wiring together
(:meth:`~netsim.network.server_paths.ServerPaths.legs`).  A flow's path depends only on its
endpoints, its id (the hash) and the seed, so routing it in any batch, in any order, must give
the same links, weights and latency; and the pair table must hold what the next hops computed
for each switch directly give.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from netsim.network.links import LinkTable
from netsim.network.routing import Router, Routes
from tests.topology.helpers import make


def _fat_tree() -> nx.DiGraph:
    """12 servers of 4 GPUs behind an NVSwitch, one NIC each, on a three-level fat tree."""
    backend = {"fabric": "fat-tree", "nodes_per_leaf": 2, "leaves_per_pod": 2, "spines_per_pod": 4, "cores": 8}
    return make({"node": {"kind": "nvswitch", "accelerators": 4}, "backend": backend}, num_nodes=12)


def _flow(routes: Routes, f: int) -> list[tuple[int, float]]:
    sel = routes.flow == f
    return sorted(zip(routes.link[sel].tolist(), routes.weight[sel].tolist(), strict=True))


@pytest.mark.parametrize("policy", ["ecmp", "pxn", "ecmp-pair", "dmodk", "spray"])
@pytest.mark.parametrize("queue_pairs", [1, 4])
def test_a_flow_routes_the_same_alone_and_in_any_batch(policy: str, queue_pairs: int) -> None:
    g = _fat_tree()
    links = LinkTable.from_graph(g)
    gpus = np.array([links.index[n] for n in sorted(g) if g.nodes[n].get("kind") == "accelerator"])
    rng = np.random.default_rng(3)
    src = rng.choice(gpus, 300)
    dst = rng.choice(gpus, 300)
    ids = np.arange(300) + 1000
    batch = Router(g, links, policy, seed=5, queue_pairs=queue_pairs).route(src, dst, ids)
    perm = rng.permutation(300)
    shuffled = Router(g, links, policy, seed=5, queue_pairs=queue_pairs).route(src[perm], dst[perm], ids[perm])
    alone = Router(g, links, policy, seed=5, queue_pairs=queue_pairs)
    crossed = 0
    for f in range(300):
        one = alone.route(src[f : f + 1], dst[f : f + 1], ids[f : f + 1])
        assert _flow(batch, f) == _flow(one, 0)
        assert _flow(shuffled, int(np.flatnonzero(perm == f)[0])) == _flow(one, 0)
        assert batch.latency_s[f] == pytest.approx(one.latency_s[0], rel=1e-12)
        crossed += int(g.nodes[links.names[src[f]]]["node"] != g.nodes[links.names[dst[f]]]["node"])
    assert crossed > 200  # most flows cross the fabric, so the walk is exercised


def test_the_pair_table_holds_each_switchs_next_hops() -> None:
    g = _fat_tree()
    links = LinkTable.from_graph(g)
    router = Router(g, links, "ecmp", seed=0)
    fabric = router.fabric
    targets = np.flatnonzero(router.is_gateway & (router.gw_network == router.backend_code))
    switches = np.flatnonzero(router.is_fabric & np.array([k == "switch" for k in router.kind]))
    nodes = np.repeat(switches, targets.size)
    tgt = np.tile(targets, switches.size)
    _, tinv, tsw, tcost = router._targets(tgt)
    order = np.random.default_rng(0).permutation(nodes.size)  # any order, repeated lookups
    for rows in (order[: nodes.size // 2], order, order[::-1]):
        cnt, table, best = fabric.pair_hops(nodes[rows], tgt[rows], tsw[tinv[rows]], tcost[tinv[rows]])
        for i, r in enumerate(rows.tolist()):
            c, t = int(nodes[r]), int(tgt[r])
            adj, kcnt, ktab, kbest = fabric._next_hops(c, np.array([t]), tsw[tinv[r : r + 1]], tcost[tinv[r : r + 1]])
            assert cnt[i] == kcnt[0] and best[i] == kbest[0]
            assert table[i, : cnt[i]].tolist() == adj[ktab[0, : kcnt[0]]].tolist()
            assert (table[i, cnt[i] :] == -1).all()
    assert (cnt >= 1).all() and (cnt > 1).any()  # every switch reaches every NIC, some by several paths


def test_prefetched_path_latencies_are_those_asked_one_by_one() -> None:
    from netsim.network.engine import Network
    from netsim.topology import load_topology

    g = load_topology("dgx-h100", nodes=40)  # two scalable units of 32 servers: leaves and spines
    gpus = sorted(n for n in g if g.nodes[n].get("kind") == "accelerator")
    rng = np.random.default_rng(11)
    pairs = [(gpus[i], gpus[j]) for i, j in rng.integers(0, len(gpus), (80, 2)) if i != j]
    one_by_one = Network(g, routing="pxn", seed=2)
    batched = Network(g, routing="pxn", seed=2)
    batched.prefetch_path_latency(pairs + pairs[:5])  # repeats and known pairs are routed once
    for a, b in pairs:
        assert batched.path_latency_s(a, b) == one_by_one.path_latency_s(a, b)
    assert len({one_by_one.path_latency_s(a, b) for a, b in pairs}) > 1  # servers and fabric differ
