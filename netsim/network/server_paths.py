"""Paths inside servers: the links a flow crosses between two devices of one server.

A server's devices (accelerators, NICs, NVSwitches or PCIe switches, the host) and its internal
links are its *wiring*.  Servers whose devices have the same name suffixes (``g3``, ``nic3``,
``nvsw``...) and the same internal links share one wiring, numbered locally, and with it one
cache of equal-cost paths per (local source, local destination): a cluster of a thousand DGX
servers computes the paths of one.  A path is a least-cost path of the local graph (hop count
first, then the serialisation time of its links); only switches, NICs and hosts forward inside
a server, and with ``relay`` an accelerator may forward too (NCCL's PXN and DeepEP: NVLink to the
GPU next to the NIC, which sends from there).

:meth:`ServerPaths.legs` routes a batch of intra-server legs the way the path policy
(:mod:`netsim.network.path_policy`) says: a hashing policy picks one of a pair's paths per leg
(all legs of a wiring at once), spraying splits a leg over all of them.  The router
(:mod:`netsim.network.routing`) asks it for the legs inside the source and destination servers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from netsim.network.links import LinkTable
from netsim.network.path_policy import PathPolicy

__all__ = ["MAX_PATHS", "ServerPaths", "key_groups"]

#: equal-cost paths kept per local device pair
MAX_PATHS = 64


def key_groups(keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Positions of each distinct key, in key order: one sort instead of a scan per key."""
    if keys.size == 0:
        return []
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    cut = np.flatnonzero(sk[1:] != sk[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [sk.size]))
    return [(int(sk[a]), order[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


@dataclass
class _Wiring:
    """Paths inside servers of one wiring signature, shared by all servers with that wiring."""

    members: list[str]  # local device suffixes, in local order
    edges: list[tuple[int, int]]  # local edges (u, v)
    links: np.ndarray  # [servers_in_group, n_local_edges] global link ids
    graph: nx.DiGraph  # local graph over local indices
    paths: dict[tuple[int, int, bool], np.ndarray] = field(default_factory=dict)  # [npaths, maxlen], -1 pad


class ServerPaths:
    """The wirings of a topology's servers and their equal-cost paths (module doc).

    Args:
        links: the link table.
        server: per device, its server (-1: a fabric node).
        kind: per device, its kind (``accelerator``, ``nic``, ``switch``...).
        policy: how a leg chooses among equal-cost paths.

    ``_intra[g].links[row]`` maps a local edge number of wiring ``g`` to the global link id of
    that wiring's server ``row``.
    """

    def __init__(self, links: LinkTable, server: np.ndarray, kind: list[str], policy: PathPolicy) -> None:
        self.links = links
        self.server = server
        self.kind = kind
        self.policy = policy
        self.is_fabric = server < 0
        names = self.links.names
        n = self.links.num_devices
        self.local_idx = np.full(n, -1, dtype=np.int64)
        top = int(self.server.max()) + 1 if n and self.server.max() >= 0 else 0
        self._sig_arr = np.full(top, -1, dtype=np.int64)
        self._row_arr = np.full(top, -1, dtype=np.int64)
        servers: dict[int, list[int]] = {}
        for i in np.flatnonzero(~self.is_fabric).tolist():
            servers.setdefault(int(self.server[i]), []).append(i)
        src, dst = self.links.src, self.links.dst
        intra = (~self.is_fabric[src]) & (~self.is_fabric[dst]) & (self.server[src] == self.server[dst])
        by_server: dict[int, list[int]] = {}
        for k in np.flatnonzero(intra).tolist():
            by_server.setdefault(int(self.server[src[k]]), []).append(k)
        cap_max = float(self.links.nominal_Bps.max()) if self.links.num_links else 1.0
        sig_index: dict[tuple[object, ...], int] = {}
        self._intra: list[_Wiring] = []
        rows: list[list[np.ndarray]] = []
        for s in sorted(servers):
            devs = servers[s]
            sfx = [names[i].split(".", 1)[1] if "." in names[i] else "" for i in devs]
            if len(set(sfx)) != len(sfx):  # arbitrary naming: no sharing between servers
                sfx = [names[i] for i in devs]
            order = sorted(range(len(devs)), key=lambda j: sfx[j])
            local = {devs[j]: r for r, j in enumerate(order)}
            members = [sfx[j] for j in order]
            for d, r in local.items():
                self.local_idx[d] = r
            ekeys = sorted((local[int(src[k])], local[int(dst[k])], k) for k in by_server.get(s, []))
            sig = (
                tuple(members),
                tuple((u, v, int(self.links.link_class[k]), float(self.links.nominal_Bps[k])) for u, v, k in ekeys),
            )
            gid = sig_index.get(sig)
            if gid is None:
                gid = len(self._intra)
                sig_index[sig] = gid
                g = nx.DiGraph()
                for r, j in enumerate(order):
                    g.add_node(r, relay=self.kind[devs[j]] != "accelerator")
                for u, v, k in ekeys:
                    # hop count first; among equal hop counts the path with less serialisation
                    # time (1/capacity summed) wins, e.g. NVLink over a PCIe detour via the host
                    g.add_edge(u, v, w=1_000_000 + round(1000 * cap_max / float(self.links.nominal_Bps[k])))
                self._intra.append(
                    _Wiring(
                        members=members,
                        edges=[(u, v) for u, v, _ in ekeys],
                        links=np.empty((0, 0), dtype=np.int64),
                        graph=g,
                    )
                )
                rows.append([])
            self._sig_arr[s] = gid
            self._row_arr[s] = len(rows[gid])
            rows[gid].append(np.array([k for _, _, k in ekeys], dtype=np.int64))
        for gid, group_rows in enumerate(rows):
            self._intra[gid].links = (
                np.vstack(group_rows)
                if group_rows and group_rows[0].size
                else np.zeros((len(group_rows), 0), dtype=np.int64)
            )
        self._edge_local = [{e: j for j, e in enumerate(c.edges)} for c in self._intra]
        #: the radix of a leg's key (wiring * m + local source) * m + local destination
        self._m = max((len(c.members) for c in self._intra), default=0) + 1

    def paths(self, gid: int, a: int, b: int, relay: bool) -> np.ndarray:
        """Equal-cost local paths a -> b in wiring group ``gid`` as [npaths, maxlen] local edge ids.

        Only switches, NICs and hosts forward inside a server; with ``relay`` an accelerator may
        forward too (PXN / DeepEP: NVLink to the GPU next to the NIC, which sends from there).
        """
        cache = self._intra[gid]
        key = (a, b, relay)
        hit = cache.paths.get(key)
        if hit is not None:
            return hit
        g = cache.graph
        if not relay:
            g = nx.subgraph_view(g, filter_node=lambda v: v in (a, b) or cache.graph.nodes[v]["relay"])
        paths: list[list[int]] = []
        try:
            for p in nx.all_shortest_paths(g, a, b, weight="w"):
                paths.append([self._edge_local[gid][(p[i], p[i + 1])] for i in range(len(p) - 1)])
                if len(paths) >= MAX_PATHS:
                    break
        except nx.NetworkXNoPath:
            paths = []
        if not paths:
            arr = np.zeros((0, 0), dtype=np.int64)
        else:
            width = max(len(p) for p in paths)
            arr = np.full((len(paths), width), -1, dtype=np.int64)
            for i, p in enumerate(sorted(paths)):
                arr[i, : len(p)] = p
        cache.paths[key] = arr
        return arr

    def legs(
        self,
        fidx: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        h: np.ndarray,
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        relay: bool = False,
    ) -> np.ndarray:
        """Route intra-server legs a -> b (same server); returns a mask of legs with no path."""
        failed = np.zeros(a.size, dtype=bool)
        need = a != b
        if not need.any():
            return failed
        idx = np.flatnonzero(need)
        srv = self.server[a[idx]]
        gid = self._sig_arr[srv]
        la, lb = self.local_idx[a[idx]], self.local_idx[b[idx]]
        m = self._m
        key = (gid * m + la) * m + lb
        if not self.policy.splits:
            self._pick(fidx, a, idx, key, m, h, out, relay, failed)
            return failed
        for k, pos in key_groups(key):
            sel = idx[pos]
            g, rest = divmod(k, m * m)
            la_k, lb_k = divmod(rest, m)
            paths = self.paths(g, la_k, lb_k, relay)
            if paths.shape[0] == 0:
                failed[sel] = True
                continue
            # spraying: the bytes split evenly over the equal-cost paths
            rows = self._row_arr[self.server[a[sel]]]
            w = 1.0 / paths.shape[0]
            for p in range(paths.shape[0]):
                loc = paths[p][paths[p] >= 0]
                gl = self._intra[g].links[rows][:, loc]
                out.append((np.repeat(fidx[sel], loc.size), gl.ravel(), np.full(gl.size, w)))
        return failed

    def _pick(
        self,
        fidx: np.ndarray,
        a: np.ndarray,
        idx: np.ndarray,
        key: np.ndarray,
        m: int,
        h: np.ndarray,
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        relay: bool,
        failed: np.ndarray,
    ) -> None:
        """The hashing policies' intra-server legs ``idx`` (wiring-group pair ``key``): each
        leg takes one of its pair's equal-cost paths, all legs of a wiring group at once, in
        the order of a walk by pair (legs sorted by key, stably) so the links come out in the
        same order as one pick per pair would give."""
        order = np.argsort(key, kind="stable")
        idx, key = idx[order], key[order]
        rows_srv = self._row_arr[self.server[a[idx]]]
        groups = key // (m * m)
        for g in np.unique(groups).tolist():
            mine = np.flatnonzero(groups == g)
            pairs, inv = np.unique(key[mine] % (m * m), return_inverse=True)
            npaths, table = self._table(g, pairs, m, relay)
            npaths, table = npaths[inv], table[inv]
            ok = npaths > 0
            failed[idx[mine[~ok]]] = True
            mine, npaths, table = mine[ok], npaths[ok], table[ok]
            if not mine.size:
                continue
            leg = idx[mine]
            loc = table[np.arange(mine.size), self.policy.pick(h[leg], npaths)]  # [legs, width], -1 pad
            valid = loc >= 0
            gl = self._intra[g].links[rows_srv[mine][:, None], np.where(valid, loc, 0)]
            rr = np.broadcast_to(fidx[leg][:, None], loc.shape)
            out.append((rr[valid], gl[valid], np.ones(int(valid.sum()))))

    def _table(self, g: int, pair: np.ndarray, m: int, relay: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per local pair ``la * m + lb`` of wiring group ``g``: its number of equal-cost paths
        and a table [pairs, paths, width] of them (local edge ids, -1 pad)."""
        tabs = [self.paths(g, p // m, p % m, relay) for p in pair.tolist()]
        npaths = np.array([t.shape[0] for t in tabs], dtype=np.int64)
        most = int(npaths.max()) if npaths.size else 0
        width = max((t.shape[1] for t in tabs), default=0)
        table = np.full((pair.size, max(most, 1), max(width, 1)), -1, dtype=np.int64)
        for i, t in enumerate(tabs):
            table[i, : t.shape[0], : t.shape[1]] = t
        return npaths, table
