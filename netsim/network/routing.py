"""Routing: which links a flow crosses, computed for whole batches of flows at once.

A path is found in up to three legs, which is how traffic really moves in a cluster:

1. **inside the source server** (NVLink/NVSwitch, HCCS, PCIe) from the source device to the
   *gateway* it leaves through (its own rail NIC, the NIC on the destination's rail for PXN,
   a host NIC for front-end traffic);
2. **across the fabric** (leaf/spine/core switches, storage) from that gateway to the gateway
   of the destination server, hop by hop: at each switch the candidates are the next hops on a
   least-cost path (link cost: inverse bandwidth unless the graph says otherwise; only
   switches and NICs relay, see :mod:`netsim.network.fabric`), and the strategy picks one
   (ECMP hash) or splits the flow over all of them (adaptive routing / packet spraying, as
   InfiniBand does);
3. **inside the destination server** from its gateway to the destination device.

Two devices in the same server use the server's own links only.  Devices that belong to no
server (storage targets, the devices of an explicit graph) are fabric nodes and are routed on
the fabric directly.

Everything is vectorised over flows: servers with identical internal wiring share one cache
of intra-server paths (:mod:`netsim.network.server_paths`), and each hop of the fabric walk
looks up the next hops of all its flows at once, from a table of the (switch, target) pairs met
so far (:meth:`netsim.network.fabric.FabricPaths.pair_hops`), so routing a million flows costs
a few numpy passes per hop rather than a million graph searches.

Which of several equal-cost candidates a flow takes is its *path policy*
(:mod:`netsim.network.path_policy`: ``shortest``, ``ecmp``, ``ecmp-pair``, ``spray``, ``dmodk``, and
the ``pxn`` forms), an object the router asks and never compares by name.  ``dmodk`` picks by the
destination's index (:func:`netsim.network.fabric.destination_index`) instead of a hash.

A connection of several queue pairs (the topology's ``collectives.qps_per_connection``, NCCL's
``NCCL_IB_QPS_PER_CONNECTION``) is, under a hashing policy, that many sub-flows through the
fabric, each with its own hash and an equal share of the bytes: the flow's weight on a link is the
share of its queue pairs that cross it.

The output is a sparse flow x link incidence with weights (1 on a single path, fractions for
spraying or several queue pairs) and the path latency of each flow.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from netsim.errors import RoutingError
from netsim.network.fabric import FORWARDING_KINDS, FabricPaths, destination_index
from netsim.network.links import LinkTable
from netsim.network.path_policy import PATH_POLICIES, ROUTING_POLICIES, PathPolicy, mix64
from netsim.network.server_paths import ServerPaths

__all__ = ["PATH_POLICIES", "ROUTING_POLICIES", "PathPolicy", "Router", "Routes", "mix64"]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class Routes:
    """Sparse flow x link incidence of a batch of routed flows.

    ``flow[i]`` (index into the batch), ``link[i]`` and ``weight[i]``: the fraction of the flow's
    bytes that crosses ``link[i]``.  ``latency_s[f]``: weighted path latency of flow ``f``;
    ``hops[f]``: weighted number of links.
    """

    flow: np.ndarray
    link: np.ndarray
    weight: np.ndarray
    latency_s: np.ndarray
    hops: np.ndarray


def topology_queue_pairs(graph: nx.DiGraph) -> int:
    """The topology's ``collectives.qps_per_connection`` (1 when it does not say)."""
    spec = graph.graph.get("spec") or {}
    return int((spec.get("collectives") or {}).get("qps_per_connection") or 1)


class Router:
    """Routes batches of flows on one topology with one path policy and seed.

    ``policy``: a :class:`PathPolicy` or the name it is registered under in :data:`PATH_POLICIES`.
    ``queue_pairs``: sub-flows per flow through the fabric under a hashing policy (module doc);
    ``None``: the topology's ``collectives.qps_per_connection`` (1 when it does not say).
    """

    def __init__(
        self,
        graph: nx.DiGraph,
        links: LinkTable,
        policy: str | PathPolicy = "ecmp",
        seed: int = 0,
        queue_pairs: int | None = None,
    ) -> None:
        self.policy = PATH_POLICIES.get(policy) if isinstance(policy, str) else policy
        self.seed = int(seed)
        qps = queue_pairs if queue_pairs is not None else topology_queue_pairs(graph)
        #: sub-flows each flow is hashed as in the fabric (1: one path per flow)
        self.queue_pairs = int(qps) if self.policy.hashed else 1
        self.links = links
        n = links.num_devices
        names = links.names
        attrs = [graph.nodes[name] for name in names]
        self.server = np.array(
            [int(a.get("node", -1) if a.get("node") is not None else -1) for a in attrs], dtype=np.int64
        )
        self.kind = [str(a.get("kind", "")) for a in attrs]
        self.rail = np.array(
            [int(a.get("rail", -1) if a.get("rail") is not None else -1) for a in attrs], dtype=np.int64
        )
        nic = np.full(n, -1, dtype=np.int64)
        for i, a in enumerate(attrs):
            name = a.get("nic")
            if name is not None and name in links.index:
                nic[i] = links.index[name]
        self.own_nic = nic
        fabric = self.server < 0
        self.is_fabric = fabric

        # Out-adjacency (CSR, neighbours sorted by id for deterministic candidate order).
        order = np.lexsort((links.dst, links.src))
        self._adj_nbr = links.dst[order]
        self._adj_link = order.astype(np.int64)
        self._adj_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(links.src, minlength=n), out=self._adj_ptr[1:])

        # Least-cost distances between fabric nodes; only switches and NICs relay.
        forwards = np.array([k in FORWARDING_KINDS for k in self.kind], dtype=bool)
        self.fabric = FabricPaths(links, fabric, forwards, self._adj_ptr, self._adj_nbr, self._adj_link)
        self.fab_ids, self.fab_pos, self.fab_dist = self.fabric.ids, self.fabric.pos, self.fabric.start_dist
        self._graph = graph

        # Gateways: server devices with a link into the fabric.  Per gateway: the fabric nodes
        # it is reached from (for distance-to-target) and the network it serves.
        up_mask = (~fabric[links.src]) & fabric[links.dst]
        down_mask = fabric[links.src] & (~fabric[links.dst])
        self.is_gateway = np.zeros(n, dtype=bool)
        self.is_gateway[links.src[up_mask]] = True
        self.gw_in = self._padded(n, links.dst[down_mask], self.fab_pos[links.src[down_mask]])
        # the cost of the last link into each gateway from each of its fabric nodes (as gw_in)
        self.gw_in_cost = np.zeros(self.gw_in.shape)
        for k in np.flatnonzero(down_mask).tolist():
            g, f = int(links.dst[k]), int(self.fab_pos[links.src[k]])
            self.gw_in_cost[g, int(np.flatnonzero(self.gw_in[g] == f)[0])] = links.cost[k]
        self.gw_out = self._padded(n, links.src[up_mask], self.fab_pos[links.dst[up_mask]])
        net_names = links.network_names
        gw_net = np.full(n, -1, dtype=np.int64)
        gw_net[links.src[up_mask]] = links.network[up_mask]
        self.gw_network = gw_net
        self.device_network = np.full(n, -1, dtype=np.int64)  # network a fabric node belongs to
        for i, a in enumerate(attrs):
            if fabric[i] and str(a.get("network", "")) in net_names:
                self.device_network[i] = net_names.index(str(a.get("network")))
        self.backend_code = net_names.index("backend") if "backend" in net_names else -1
        # Gateways of each (server, network), sorted by id.
        gw_lists: dict[tuple[int, int], list[int]] = {}
        for g in np.flatnonzero(self.is_gateway & (self.gw_network >= 0)).tolist():
            gw_lists.setdefault((int(self.server[g]), int(self.gw_network[g])), []).append(g)
        self._server_gateways = {k: np.array(sorted(v), dtype=np.int64) for k, v in gw_lists.items()}
        # rail -> NIC id per server, for PXN.
        self._rail_nic: dict[tuple[int, int], int] = {}
        for i in np.flatnonzero(self.is_gateway & (self.rail >= 0)).tolist():
            self._rail_nic.setdefault((int(self.server[i]), int(self.rail[i])), i)

        self.inside = ServerPaths(links, self.server, self.kind, self.policy)
        self.dest_index = (
            destination_index(links, fabric, forwards, self.device_network) if self.policy.by_destination else None
        )

    @staticmethod
    def _padded(n: int, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """[n, width] table of the sorted distinct values of each key, padded with -1."""
        table: dict[int, set[int]] = {}
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            table.setdefault(k, set()).add(v)
        width = max((len(v) for v in table.values()), default=1)
        out = np.full((n, width), -1, dtype=np.int64)
        for k, vals in table.items():
            lst = sorted(vals)
            out[k, : len(lst)] = lst
        return out

    def _fabric_ends(self, dev: np.ndarray, outgoing: bool) -> np.ndarray:
        """Fabric positions where a path from (``outgoing``) or to ``dev`` enters the fabric."""
        tab = self.gw_out if outgoing else self.gw_in
        ends = tab[dev].copy()
        fab = self.is_fabric[dev]
        ends[fab] = -1
        ends[fab, 0] = self.fab_pos[dev[fab]]
        return ends

    def reachable(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether the fabric joins gateway/fabric node ``a`` to ``b`` (vectorised)."""
        ea, eb = self._fabric_ends(a, True), self._fabric_ends(b, False)
        ok = np.zeros(a.size, dtype=bool)
        if not self.fab_dist.size:
            return ok
        for i in range(ea.shape[1]):
            for j in range(eb.shape[1]):
                va, vb = ea[:, i], eb[:, j]
                m = (va >= 0) & (vb >= 0)
                d = np.full(a.size, np.inf)
                d[m] = self.fab_dist[va[m], vb[m]]
                ok |= np.isfinite(d)
        return ok

    # ------------------------------------------------------------------ gateways
    def _target_network(self, dst: np.ndarray) -> np.ndarray:
        """The network (code) a flow to ``dst`` travels on: the fabric node's own, backend for
        devices with a rail NIC, else the network of the destination server's gateways."""
        net = np.full(dst.size, -1, dtype=np.int64)
        fab = self.is_fabric[dst]
        net[fab] = self.device_network[dst[fab]]
        has_nic = (~fab) & (self.own_nic[dst] >= 0)
        net[has_nic] = self.gw_network[self.own_nic[dst[has_nic]]]
        gw = (~fab) & self.is_gateway[dst]
        net[gw] = self.gw_network[dst[gw]]
        rest = np.flatnonzero(net < 0)
        for i in rest.tolist():
            s = int(self.server[dst[i]])
            nets = sorted(k[1] for k in self._server_gateways if k[0] == s)
            if nets:
                fe = [x for x in nets if self.links.network_names[x] == "frontend"]
                net[i] = fe[0] if fe else nets[0]
        return net

    def _gateway(self, dev: np.ndarray, net: np.ndarray, h: np.ndarray, peer: np.ndarray | None) -> np.ndarray:
        """Gateway each server device uses on network ``net`` (its own NIC, PXN's rail NIC, or a
        hashed choice among the server's gateways on that network); -1 if none."""
        out = np.full(dev.size, -1, dtype=np.int64)
        own = self.own_nic[dev]
        ok = (own >= 0) & (self.gw_network[np.maximum(own, 0)] == net)
        out[ok] = own[ok]
        isgw = self.is_gateway[dev] & (self.gw_network[dev] == net)
        out[isgw] = dev[isgw]
        if self.policy.rail_gateway and peer is not None:
            peer_nic = self.own_nic[peer]
            sel = np.flatnonzero(ok & (peer_nic >= 0) & (self.kind_is_acc(dev)))
            for i in sel.tolist():
                r = int(self.rail[peer_nic[i]])
                alt = self._rail_nic.get((int(self.server[dev[i]]), r))
                if alt is not None and self.gw_network[alt] == net[i]:
                    out[i] = alt
        rest = np.flatnonzero(out < 0)
        for i in rest.tolist():
            cands = self._server_gateways.get((int(self.server[dev[i]]), int(net[i])))
            if cands is not None and cands.size:
                out[i] = cands[self.policy.pick_one(h[i], cands.size)]
        return out

    def _reachable_gateway(self, dev: int, target: int, net: int) -> int:
        """A gateway of ``dev``'s server from which the fabric reaches ``target``: the one on the
        target's rail first (a rail-only fabric: cross-rail traffic crosses NVLink first), then
        the lowest-numbered one that works.  Keeps the current one if none works (the fabric walk
        then reports the missing route)."""
        cands = self._server_gateways.get((int(self.server[dev]), net), np.zeros(0, dtype=np.int64))
        rail = int(self.rail[target])
        order = sorted(cands.tolist(), key=lambda g: (int(self.rail[g]) != rail, g))
        for g in order:
            if self.reachable(np.array([g]), np.array([target]))[0]:
                return g
        return int(self.own_nic[dev]) if self.own_nic[dev] >= 0 else dev

    def kind_is_acc(self, dev: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_acc"):
            self._acc = np.array([k == "accelerator" for k in self.kind], dtype=bool)
        return self._acc[dev]

    # ------------------------------------------------------------------ fabric walk
    def _targets(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The distinct targets, each flow's one among them, and per distinct target the fabric
        nodes it is entered from and the cost of the hop into it (0 for a fabric node)."""
        ut, tinv = np.unique(target, return_inverse=True)
        t_fab = self.is_fabric[ut]
        tsw = np.where(t_fab[:, None], -1, self.gw_in[ut])
        tsw[t_fab, 0] = self.fab_pos[ut[t_fab]]
        tcost = np.where(t_fab[:, None], 0.0, self.gw_in_cost[ut])
        if (tsw[tinv, 0] < 0).any():
            bad = int(np.flatnonzero(tsw[tinv, 0] < 0)[0])
            raise RoutingError(f"device {self.links.names[target[bad]]} is not connected to any fabric")
        return ut, tinv, tsw, tcost

    def _fabric_walk(
        self,
        fidx: np.ndarray,
        start: np.ndarray,
        target: np.ndarray,
        h: np.ndarray,
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        """Walk from ``start`` to ``target`` (gateways or fabric nodes) over fabric switches."""
        if fidx.size == 0:
            return
        ut, tinv, tsw, tcost = self._targets(target)
        base = len(out)
        # rows: one per (flow, current node) with a weight (ECMP: one row per flow; with queue
        # pairs one per pair, each with its own hash)
        q = self.queue_pairs
        r_flow: np.ndarray = np.repeat(np.arange(fidx.size), q)
        r_node: np.ndarray = np.repeat(start, q)
        r_w: np.ndarray = np.full(r_flow.size, 1.0 / q)
        r_h: np.ndarray = h[r_flow]
        if q > 1:
            with np.errstate(over="ignore"):
                r_h = mix64(r_h + np.tile(np.arange(q, dtype=np.uint64), fidx.size) * np.uint64(0xA24BAED4963EE407))
        # destination routing: each flow's destination index and the product of the candidate
        # counts of its choices so far (the divisor of the next d-mod-k choice)
        dest = None if self.dest_index is None else self.dest_index[target]
        r_stride = np.ones(r_flow.size, dtype=np.int64)
        hop = 0
        names = self.links.names
        while r_flow.size:
            done = r_node == target[r_flow]
            if done.any():
                keep = ~done
                r_flow, r_node, r_w, r_stride, r_h = r_flow[keep], r_node[keep], r_w[keep], r_stride[keep], r_h[keep]
                if not r_flow.size:
                    break
            hop += 1
            if hop > 64:
                raise RoutingError("routing loop: a path exceeded 64 fabric hops")
            # every row's next hops at once, in the order of a walk by switch (rows sorted by
            # node, stably), so the links come out switch by switch
            order = np.argsort(r_node, kind="stable")
            r_flow, r_node, r_w, r_stride, r_h = r_flow[order], r_node[order], r_w[order], r_stride[order], r_h[order]
            t = tinv[r_flow]
            cnt, table, best = self.fabric.pair_hops(r_node, ut[t], tsw[t], tcost[t])
            if not np.isfinite(best).all():
                bad = int(r_flow[np.flatnonzero(~np.isfinite(best))[0]])
                a, z = names[start[bad]], names[target[bad]]
                raise RoutingError(
                    f"no route from {a} to {z} through the fabric" + self.fabric.relay_hint(self._graph, a, z)
                )
            if not self.policy.splits:  # one pick per row
                hk = self.policy.hop_key(r_h, hop, None if dest is None else dest[r_flow], r_stride)
                pick = table[np.arange(r_flow.size), self.policy.pick(hk, cnt)]
                out.append((fidx[r_flow], self._adj_link[pick], r_w))
                r_node = self._adj_nbr[pick]
                if dest is not None:
                    r_stride = r_stride * cnt
                continue
            # spraying: every least-cost next hop, each with an equal share of the row's bytes,
            # neighbour-major within a switch (adjacency positions ascend with the switch), as
            # the weights are summed below
            jj = np.repeat(np.arange(r_flow.size), cnt)
            ii = table[jj, np.arange(jj.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)]
            o = np.lexsort((jj, ii))
            ii, jj = ii[o], jj[o]
            w = r_w[jj] / cnt[jj]
            out.append((fidx[r_flow[jj]], self._adj_link[ii], w))
            r_flow, r_node, r_w, r_stride, r_h = r_flow[jj], self._adj_nbr[ii], w, r_stride[jj], r_h[jj]
            if r_flow.size:
                key = r_flow.astype(np.int64) * (self.links.num_devices + 1) + r_node
                uk, kinv = np.unique(key, return_inverse=True)
                r_w = np.bincount(kinv, weights=r_w)
                r_stride = np.ones(uk.size, dtype=np.int64)
                r_h = np.zeros(uk.size, dtype=np.uint64)  # spraying hashes nothing
                r_flow = (uk // (self.links.num_devices + 1)).astype(np.int64)
                r_node = (uk % (self.links.num_devices + 1)).astype(np.int64)

        if self.queue_pairs > 1:
            self._merge_queue_pairs(out, base)

    @staticmethod
    def _merge_queue_pairs(out: list[tuple[np.ndarray, np.ndarray, np.ndarray]], base: int) -> None:
        """Sum the entries a walk of queue pairs appended to ``out`` from ``base`` on into one
        weight per (flow, link)."""
        if len(out) <= base:
            return
        fl = np.concatenate([o[0] for o in out[base:]]).astype(np.int64)
        lk = np.concatenate([o[1] for o in out[base:]]).astype(np.int64)
        w = np.concatenate([o[2] for o in out[base:]])
        span = int(lk.max()) + 1
        uniq, inv = np.unique(fl * span + lk, return_inverse=True)
        del out[base:]
        out.append((uniq // span, uniq % span, np.bincount(inv, weights=w)))

    # ------------------------------------------------------------------ public
    def route(self, src: np.ndarray, dst: np.ndarray, flow_ids: np.ndarray) -> Routes:
        """Route a batch of flows given as device-id arrays; ``flow_ids`` seed the ECMP hash."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        nflow = src.size
        key = self.policy.flow_key(flow_ids)
        with np.errstate(over="ignore"):
            h = mix64(
                key * np.uint64(0x9E3779B97F4A7C15)
                + mix64(src.astype(np.uint64) * np.uint64(1_000_003) + dst.astype(np.uint64))
                + np.uint64((self.seed if self.policy.seeded else 0) & 0xFFFFFFFF) * np.uint64(0xD1B54A32D192ED03)
            )
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        allf = np.arange(nflow)
        same_server = (~self.is_fabric[src]) & (~self.is_fabric[dst]) & (self.server[src] == self.server[dst])
        same_server &= src != dst
        inter = (src != dst) & ~same_server
        if same_server.any():
            idx = np.flatnonzero(same_server)
            failed = self.inside.legs(allf[idx], src[idx], dst[idx], h[idx], out)
            inter[idx[failed]] = True  # no path inside the server: leave through the fabric
        if inter.any():
            idx = np.flatnonzero(inter)
            s, d, hh = src[idx], dst[idx], h[idx]
            net = self._target_network(d)
            s_srv = ~self.is_fabric[s]
            d_srv = ~self.is_fabric[d]
            g_s = s.copy()
            g_d = d.copy()
            if s_srv.any():
                g_s[s_srv] = self._gateway(s[s_srv], net[s_srv], hh[s_srv], d[s_srv])
            if d_srv.any():
                g_d[d_srv] = self._gateway(d[d_srv], net[d_srv], mix64(hh[d_srv]), None)
            bad = np.flatnonzero((g_s < 0) | (g_d < 0))
            if bad.size:
                i = int(bad[0])
                raise RoutingError(
                    f"no route from {self.links.names[s[i]]} to {self.links.names[d[i]]}: "
                    "no gateway on the needed network"
                )
            unreach = np.flatnonzero(~self.reachable(g_s, g_d) & s_srv)
            for i in unreach.tolist():
                g_s[i] = self._reachable_gateway(int(s[i]), int(g_d[i]), int(net[i]))
            leg = s_srv & (s != g_s)
            if leg.any():
                f = self.inside.legs(idx[leg], s[leg], g_s[leg], hh[leg], out, relay=True)
                if f.any():
                    i = int(np.flatnonzero(leg)[np.flatnonzero(f)[0]])
                    raise RoutingError(
                        f"no route inside the server from {self.links.names[s[i]]} to {self.links.names[g_s[i]]}"
                    )
            self._fabric_walk(idx, g_s, g_d, hh, out)
            leg = d_srv & (d != g_d)
            if leg.any():
                with np.errstate(over="ignore"):
                    h_in = mix64(hh[leg] + np.uint64(7))
                f = self.inside.legs(idx[leg], g_d[leg], d[leg], h_in, out, relay=True)
                if f.any():
                    i = int(np.flatnonzero(leg)[np.flatnonzero(f)[0]])
                    raise RoutingError(
                        f"no route inside the server from {self.links.names[g_d[i]]} to {self.links.names[d[i]]}"
                    )
        if out:
            fl = np.concatenate([o[0] for o in out]).astype(np.int64)
            lk = np.concatenate([o[1] for o in out]).astype(np.int64)
            w = np.concatenate([o[2] for o in out]).astype(np.float64)
            order = np.argsort(fl, kind="stable")
            fl, lk, w = fl[order], lk[order], w[order]
        else:
            fl = np.zeros(0, dtype=np.int64)
            lk = np.zeros(0, dtype=np.int64)
            w = np.zeros(0)
        lat = np.bincount(fl, weights=w * self.links.latency_s[lk], minlength=nflow)
        hops = np.bincount(fl, weights=w, minlength=nflow)
        return Routes(flow=fl, link=lk, weight=w, latency_s=lat, hops=hops)

    def pinned(self, path: Sequence[str]) -> np.ndarray:
        """Link ids of a path given as device names; RoutingError if two are not linked."""
        ids = []
        for name in path:
            if name not in self.links.index:
                raise RoutingError(f"unknown device {name!r} in pinned path", field="path")
            ids.append(self.links.index[name])
        out = []
        for u, v in itertools.pairwise(ids):
            k = self.links.edge_id.get((u, v))
            if k is None:
                raise RoutingError(
                    f"pinned path {'>'.join(path)}: no link {self.links.names[u]}->{self.links.names[v]}", field="path"
                )
            out.append(k)
        return np.array(out, dtype=np.int64)
