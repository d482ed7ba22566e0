"""Paths across the fabric: link costs, the forwarding rule, and next-hop tables.

**Link cost.**  A route is a least-cost path, the cost of a path the sum of its links' costs.
A link's cost is its ``cost`` attribute when the topology gives one, else the inverse of its
bandwidth: ``100 Gb/s / nominal bandwidth`` (a 100 Gb/s link costs 1, a 400 Gb/s link 0.25),
the rule of OSPF's interface cost (reference bandwidth over interface bandwidth, RFC 2328
Appendix C.3; routers let the reference be raised, e.g. to 100 Gb/s) and the role of the
per-interface metric in ns-3's global routing.  On a fabric whose links all have one bandwidth
this is hop count; where a short path is slow (a shared 100G leaf against a 400G switch inside a
box) the faster one wins.  Paths whose costs agree within a relative 1e-9 are equal: ECMP
hashes over them and spraying splits over them.

**Forwarding rule** (:mod:`netsim.topology.model`): switches and NICs forward; accelerators,
hosts and storage targets are endpoints.  The distances are computed on the fabric without
the out-links of endpoints, so no route relays through one; a walk may still *start* at one.
When a destination is reachable only through an endpoint, :meth:`FabricPaths.relay_hint` names
it for the error message.

**Next hops.**  At fabric node ``c`` towards target ``t`` the candidates are the neighbours
``n`` with ``cost(c, n) + dist(n, t)`` least; :meth:`FabricPaths.pair_hops` tabulates them per
(node, target) pair the first time a walk meets it, so a flow picks its next hop in O(1)
whatever the switch's degree.

**Destination index.**  Static InfiniBand routing (``dmodk``) picks by the destination's index
as OpenSM's fat-tree engine numbers end ports (:func:`destination_index`): leaf by leaf, port by
port, so the ports of one leaf are consecutive and every leaf starts at a multiple of the most
ports a leaf has.
"""

from __future__ import annotations

from typing import Final

import networkx as nx
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from netsim.network.links import LinkTable

#: device kinds that forward traffic across the fabric
FORWARDING_KINDS: Final = ("switch", "nic")
#: relative tolerance under which two path costs are equal (ECMP among them)
COST_REL_TOL: Final = 1e-9


class FabricPaths:
    """Least-cost distances between fabric nodes and next-hop tables over them.

    Args:
        links: the link table (its ``cost`` per link).
        is_fabric: per device, whether it is a fabric node (belongs to no server).
        forwards: per device, whether it may relay traffic.
        adj_ptr, adj_nbr, adj_link: out-adjacency (CSR, neighbours by id) of every device.
    """

    def __init__(
        self,
        links: LinkTable,
        is_fabric: np.ndarray,
        forwards: np.ndarray,
        adj_ptr: np.ndarray,
        adj_nbr: np.ndarray,
        adj_link: np.ndarray,
    ) -> None:
        self.links = links
        self.adj_ptr, self.adj_nbr, self.adj_link = adj_ptr, adj_nbr, adj_link
        # the next hops of every (node, target) pair met so far (pair_hops): the row of each pair (key
        # node * devices + target) in append-only arrays of counts, next hops as adjacency
        # positions (-1 pad) and least costs, grown by doubling
        self._pair_row: dict[int, int] = {}
        self._pair_cnt = np.zeros(0, dtype=np.int64)
        self._pair_tab = np.zeros((0, 0), dtype=np.int64)
        self._pair_best = np.zeros(0)
        self.ids = np.flatnonzero(is_fabric)
        self.pos = np.full(links.num_devices, -1, dtype=np.int64)
        self.pos[self.ids] = np.arange(self.ids.size)
        s = self.ids.size
        self.dist = self.start_dist = np.zeros((0, 0))
        if not s:
            return
        both = is_fabric[links.src] & is_fabric[links.dst]
        relay = both & forwards[links.src]  # endpoints may be entered, never left, mid-path
        a = csr_matrix((links.cost[relay], (self.pos[links.src[relay]], self.pos[links.dst[relay]])), shape=(s, s))
        d = shortest_path(a, method="D", directed=True)
        self.dist = d
        # an endpoint starts paths too: from it, distances are through its own out-links (used
        # for reachability only; a next hop is never an endpoint unless it is the target)
        start = d.copy()
        for v in np.flatnonzero(is_fabric & ~forwards).tolist():
            lo, hi = adj_ptr[v], adj_ptr[v + 1]
            nb, lk = adj_nbr[lo:hi], adj_link[lo:hi]
            fab = is_fabric[nb]
            if fab.any():
                via = d[self.pos[nb[fab]]] + links.cost[lk[fab]][:, None]
                row = np.minimum(d[self.pos[v]], via.min(axis=0))
                row[self.pos[v]] = 0.0
                start[self.pos[v]] = row
        self.start_dist = start

    def pair_hops(
        self, nodes: np.ndarray, tgt: np.ndarray, tpos: np.ndarray, tcost: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next hops of one (node, target) pair per row, in one vectorised lookup: per row
        the number of least-cost next hops, a table of them as adjacency positions (-1 pad, in
        neighbour order) and the least cost.  ``tpos`` / ``tcost``: each row's target's entry
        nodes and last-hop costs, as for :meth:`_next_hops`.  A walk's rows sit at many switches
        at once; each pair is tabulated the first time it is met and looked up after."""
        key = (nodes.astype(np.int64) * self.links.num_devices + tgt).tolist()
        get = self._pair_row.get
        pos = np.fromiter((get(k, -1) for k in key), dtype=np.int64, count=len(key))
        miss = np.flatnonzero(pos < 0)
        if miss.size:
            self._add_pairs(np.asarray(key, dtype=np.int64)[miss], tpos[miss], tcost[miss])
            pos[miss] = [self._pair_row[key[i]] for i in miss.tolist()]
        return self._pair_cnt[pos], self._pair_tab[pos], self._pair_best[pos]

    def _add_pairs(self, key: np.ndarray, tpos: np.ndarray, tcost: np.ndarray) -> None:
        """Tabulate the (node, target) pairs ``key`` (node * devices + target) into the arrays
        of :meth:`pair_hops`."""
        uk, first = np.unique(key, return_index=True)
        n = self.links.num_devices
        nodes, tgts = uk // n, uk % n
        cut = np.flatnonzero(nodes[1:] != nodes[:-1]) + 1
        parts = []
        for a, b in zip(np.concatenate(([0], cut)).tolist(), np.concatenate((cut, [uk.size])).tolist(), strict=True):
            rows = first[a:b]
            adj, cnt, table, best = self._next_hops(int(nodes[a]), tgts[a:b], tpos[rows], tcost[rows])
            parts.append((cnt, np.where(table >= 0, table + (int(adj[0]) if adj.size else 0), -1), best))
        used = len(self._pair_row)
        need = used + uk.size
        width = max([self._pair_tab.shape[1], *(t.shape[1] for _, t, _ in parts)])
        if need > self._pair_cnt.size or width > self._pair_tab.shape[1]:
            cap = max(need, 2 * self._pair_cnt.size, 64)
            cnt_a = np.zeros(cap, dtype=np.int64)
            tab_a = np.full((cap, width), -1, dtype=np.int64)
            best_a = np.zeros(cap)
            cnt_a[:used] = self._pair_cnt[:used]
            tab_a[:used, : self._pair_tab.shape[1]] = self._pair_tab[:used]
            best_a[:used] = self._pair_best[:used]
            self._pair_cnt, self._pair_tab, self._pair_best = cnt_a, tab_a, best_a
        row = used
        for cnt, tab, best in parts:
            k = cnt.size
            self._pair_cnt[row : row + k] = cnt
            self._pair_tab[row : row + k, : tab.shape[1]] = tab
            self._pair_best[row : row + k] = best
            row += k
        self._pair_row.update(zip(uk.tolist(), range(used, need), strict=True))

    def _next_hops(
        self, c: int, tgt: np.ndarray, tpos: np.ndarray, tcost: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Next hops from device ``c`` towards each of the targets ``tgt`` (device ids), entered
        from fabric positions ``tpos`` [targets, m] (-1 pad) over a last link of cost ``tcost``
        (0 when the target is the fabric node itself).

        Returns the indices into the adjacency of ``c``, per target the number of least-cost
        neighbours and a table [targets, most] of them (in neighbour order, -1 pad), and the
        least cost per target (``inf`` when there is no route).
        """
        lo, hi = self.adj_ptr[c], self.adj_ptr[c + 1]
        nb = self.adj_nbr[lo:hi]
        nb_fab = self.pos[nb]
        dm = np.full((nb.size, tgt.size), np.inf)  # [degree, targets]
        fab_n = nb_fab >= 0
        if fab_n.any():
            valid_t = tpos >= 0
            d3 = self.dist[nb_fab[fab_n]][:, np.where(valid_t, tpos, 0)]  # [k, targets, m]
            d3 = np.where(valid_t[None, :, :], d3 + tcost[None, :, :], np.inf)
            dm[fab_n] = d3.min(axis=2)
        dm[nb[:, None] == tgt[None, :]] = 0.0
        dm += self.links.cost[self.adj_link[lo:hi]][:, None]
        best = dm.min(axis=0)
        valid = dm <= best[None, :] * (1.0 + COST_REL_TOL)
        cnt = valid.sum(axis=0)
        most = int(cnt.max()) if cnt.size else 0
        table = np.argsort(~valid, axis=0, kind="stable")[:most].T  # valid neighbours first, in order
        table = np.where(np.arange(most)[None, :] < cnt[:, None], table, -1)
        return np.arange(lo, hi), cnt, table, best

    def relay_hint(self, graph: nx.DiGraph, src: str, dst: str) -> str:
        """`` (only through accelerator X, ...)`` when ``src`` reaches ``dst`` only by relaying
        through a device that does not forward; else an empty string."""
        try:
            path = nx.shortest_path(graph, src, dst)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return ""
        for v in path[1:-1]:
            kind = str(graph.nodes[v].get("kind", ""))
            if kind not in FORWARDING_KINDS:
                return (
                    f" (the only paths relay through {kind} {v}, and only switches and NICs forward: "
                    f"connect the two through switches, or put {v} in a server with node:)"
                )
        return ""


def destination_index(
    links: LinkTable, is_fabric: np.ndarray, forwards: np.ndarray, device_network: np.ndarray
) -> np.ndarray:
    """Each device's index for destination routing, as OpenSM's ``ftree`` numbers the end ports
    of one subnet: ``leaf rank * most end ports on a leaf + port on the leaf``.

    An end port is a device that does not forward inside the fabric (a server's gateway, a
    storage target) entered from a switch; its leaf is the lowest-numbered such switch.  Leaves
    are ranked by device id and ports by device id, within each network (``device_network`` of
    the leaf) separately.  Other devices keep their device id.
    """
    n = links.num_devices
    out = np.arange(n, dtype=np.int64)
    sw = is_fabric[links.src] & forwards[links.src]
    end = sw & ~(is_fabric[links.dst] & forwards[links.dst])
    leaf = np.full(n, n, dtype=np.int64)
    np.minimum.at(leaf, links.dst[end], links.src[end])
    ports = np.flatnonzero(leaf < n)
    net = device_network[leaf[ports]]
    for code in np.unique(net).tolist():
        mine = ports[net == code]
        mine = mine[np.lexsort((mine, leaf[mine]))]  # by leaf, then device id
        leaves, rank = np.unique(leaf[mine], return_inverse=True)
        port = np.arange(mine.size) - np.searchsorted(leaf[mine], leaves)[rank]
        out[mine] = rank * int(np.bincount(rank).max()) + port
    return out
