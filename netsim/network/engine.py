"""The flow-level network engine: max-min fair sharing, event-driven inside simpy.

A *flow* moves ``nbytes`` from one device to another along a routed path.  Active flows share
link capacity max-min fairly (:mod:`netsim.network.sharing`).  Rates change only when a flow
starts or drains, so between two such instants every rate is constant and the next event is the
earliest drain; the engine jumps from event to event.  A flow is delivered ``path latency``
after its last byte left (completion time = latency + drain time at its piecewise-constant
rate), so one flow alone on a path takes exactly ``latency + nbytes / bottleneck``.

Flows that start at the same instant are routed and added as one batch, and flows that drain
at the same instant (within a relative 1e-9) are removed as one batch, so an all-to-all of N
ranks costs a few vectorised recomputations, not N^2 separate ones.

Use from a simpy process::

    net = Network(graph, routing="ecmp", seed=1)
    def proc(env):
        yield net.transfer("n0.g0", "n1.g0", 64 * 2**20, traffic_class="ep")
    net.env.process(proc(net.env))
    net.run()

or in bulk, without processes: ``net.submit_many(src, dst, nbytes, start_s)`` then ``net.run()``.
Results are flat tables: :meth:`Network.flow_records`, :meth:`Network.link_records`,
:meth:`Network.tier_timeseries`.

:class:`Network` wires small parts, each with one job: the flow store
(:mod:`~netsim.network.flows`), the coflow ledger and its route cache
(:mod:`~netsim.network.coflows`), the simpy driver (:mod:`~netsim.network.clock`), the moving
flows and their max-min rates (:mod:`~netsim.network.active`, over the kernel of
:mod:`~netsim.network.sharing`), and the result records (:mod:`~netsim.network.records`).
What stays here is submission and the batch of arrivals: routing them and handing them to the
moving set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import simpy

from netsim.errors import RoutingError, SpecError
from netsim.network import records
from netsim.network.active import ActiveFlows
from netsim.network.clock import Clock
from netsim.network.coflows import ROUTE_CHUNK, CoflowLedger
from netsim.network.flows import ACTIVE, DONE, FlowStore, check_sizes
from netsim.network.links import LinkTable
from netsim.network.routing import Router, Routes


class Network:
    """A topology as a shared, max-min fair network of links, driven by a simpy environment.

    Args:
        graph: a topology graph (see :mod:`netsim.topology.model`).
        env: the simpy environment to run in (a new one if ``None``).
        routing: path policy name (one of :data:`netsim.network.ROUTING_POLICIES`).
        seed: seed of the ECMP hash.
        efficiency: per link class, the fraction of nominal capacity payload gets.
        flow_rate_cap_Bps: a cap on every flow's rate (e.g. a NIC's injection limit).
    """

    def __init__(
        self,
        graph: nx.DiGraph,
        env: simpy.Environment | None = None,
        *,
        routing: str = "ecmp",
        seed: int = 0,
        efficiency: Mapping[str, float] | None = None,
        flow_rate_cap_Bps: float | None = None,
    ) -> None:
        self.graph = graph
        self.env = env if env is not None else simpy.Environment()
        self.links = LinkTable.from_graph(graph, efficiency)
        self.router = Router(graph, self.links, routing, seed)
        #: (src, dst) -> the latency of the pair's path (:meth:`path_latency_s`)
        self._pair_latency: dict[tuple[str, str], float] = {}
        if flow_rate_cap_Bps is not None and not flow_rate_cap_Bps > 0:
            raise SpecError(f"flow_rate_cap_Bps must be > 0, got {flow_rate_cap_Bps!r}", field="flow_rate_cap_Bps")
        self.flow_rate_cap_Bps = float(flow_rate_cap_Bps) if flow_rate_cap_Bps else np.inf
        self._t0 = float(self.env.now)
        self._t_end = self._t0
        self.flows = FlowStore(self.links.index, self.flow_rate_cap_Bps)
        self.coflows = CoflowLedger()
        self.active = ActiveFlows(self.links.capacity_Bps)
        self.stats = records.LinkStats(self.links, self._t0)
        self.clock = Clock(self.env, self._update)
        # pinned routes: flow id -> (links, weight per link, latency in s or None: the links' sum)
        self._pinned: dict[int, tuple[np.ndarray, np.ndarray, float | None]] = {}
        # flows waiting to start, by start time
        self._arrivals: dict[float, list[np.ndarray]] = {}
        self.num_events = 0

    # ------------------------------------------------------------------ submission
    def submit_many(
        self,
        src: Sequence[str] | np.ndarray,
        dst: Sequence[str] | np.ndarray,
        nbytes: Sequence[float] | np.ndarray | float,
        start_s: Sequence[float] | np.ndarray | float = 0.0,
        *,
        traffic_class: str = "other",
        label: str = "",
        rate_cap_Bps: float | np.ndarray | None = None,
    ) -> np.ndarray:
        """Submit many flows at once (device names or ids); returns their flow ids.  ``rate_cap_Bps``:
        one cap for all, or one per flow (bytes/s)."""
        ids, st = self.flows.append(src, dst, nbytes, start_s, self.now, traffic_class, label, rate_cap_Bps)
        for t in np.unique(st).tolist():
            sel = ids[st == t] if ids.size > 1 else ids
            self._add_arrival(float(t), sel)
        return ids

    def reserve_flows(self, n: int) -> None:
        """Make room for ``n`` more flows at once (a replay that knows roughly how many flows it
        will start saves the flow columns from growing, and being copied, step by step)."""
        self.flows.reserve(n)

    def submit(
        self,
        src: str,
        dst: str,
        nbytes: float,
        start_s: float = 0.0,
        *,
        traffic_class: str = "other",
        label: str = "",
        path: Sequence[str] | None = None,
        rate_cap_Bps: float | None = None,
    ) -> int:
        """Submit one flow starting at absolute time ``start_s``; returns its flow id."""
        fid = int(
            self.submit_many(
                [src], [dst], nbytes, start_s, traffic_class=traffic_class, label=label, rate_cap_Bps=rate_cap_Bps
            )[0]
        )
        if path is not None:
            path = list(path)
            if not path or path[0] != src or path[-1] != dst:
                raise RoutingError(f"pinned path {'>'.join(path)} must start at {src} and end at {dst}", field="path")
            links = self.router.pinned(path)
            self._pinned[fid] = (links, np.ones(links.size), None)
        return fid

    def transfer(
        self,
        src: str,
        dst: str,
        nbytes: float,
        *,
        traffic_class: str = "other",
        label: str = "",
        path: Sequence[str] | None = None,
        rate_cap_Bps: float | None = None,
    ) -> simpy.Event:
        """Start a flow now; the returned event fires (value: flow id) when its last byte arrives."""
        fid = self.submit(
            src, dst, nbytes, self.now, traffic_class=traffic_class, label=label, path=path, rate_cap_Bps=rate_cap_Bps
        )
        return self.clock.new_event(fid)

    def transfer_ids(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        nbytes: np.ndarray | float,
        *,
        traffic_class: str = "other",
        label: str = "",
        rate_cap_Bps: float | np.ndarray | None = None,
    ) -> list[simpy.Event]:
        """Vectorised :meth:`transfer` for device-id arrays; one event per flow (``rate_cap_Bps``:
        one cap or one per flow, bytes/s)."""
        ids = self.submit_many(
            src, dst, nbytes, self.now, traffic_class=traffic_class, label=label, rate_cap_Bps=rate_cap_Bps
        )
        return [self.clock.new_event(fid) for fid in ids.tolist()]

    def transfer_notify(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        nbytes: np.ndarray | float,
        on_arrival: Callable[[list[int]], None],
        *,
        traffic_class: str = "other",
        label: str = "",
        rate_cap_Bps: float | np.ndarray | None = None,
    ) -> np.ndarray:
        """:meth:`transfer_ids` without an event per flow: ``on_arrival`` is called with the ids
        of the flows delivered together (:meth:`Clock.notify`); returns the flow ids."""
        ids = self.submit_many(
            src, dst, nbytes, self.now, traffic_class=traffic_class, label=label, rate_cap_Bps=rate_cap_Bps
        )
        self.clock.notify(ids.tolist(), on_arrival)
        return ids

    def transfer_coflow(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        nbytes: np.ndarray | float,
        *,
        traffic_class: str = "other",
        label: str = "",
        rate_cap_Bps: np.ndarray | None = None,
    ) -> simpy.Event:
        """Start many transfers now as one *coflow*; the event fires (value: the carrier's flow
        id) when the last of them has arrived.  ``rate_cap_Bps``: a cap per transfer (a library's
        channels); the carrier, which moves its transfers uniformly, then runs no faster than
        its most constrained transfer allows.

        The transfers are routed as ordinary flows (hashed by the flow ids they would have) and
        listed as flows by :meth:`flow_records`, but the engine moves them as one aggregate: a
        carrier flow whose load on every link is the transfers' bytes there, progressing
        uniformly.  Alone it drains in
        ``max over links of (bytes on the link / capacity)``, the bound an all-to-all reaches
        when its flows finish together.  Against other traffic it competes, on its bottleneck
        link, as the number of its transfers that cross that link (each one of them a
        max-min fair flow there).  Transfers are delivered at the drain plus their own path
        latency.  One engine event instead of one per transfer: what makes an all-to-all of
        thousands of GPUs cheap (the ``coflow`` collective model; error in the README).

        The transfers are kept in a ledger (:mod:`netsim.network.coflows`), not as rows of the
        flow store, and small coflows reuse the routes of the first coflow over the same pairs
        (see :class:`~netsim.network.coflows.CoflowLedger` for the route cache and its bounds).
        """
        now = self.now
        src = np.array(src, dtype=np.int64)  # copies: the ledger keeps them
        dst = np.array(dst, dtype=np.int64)
        n = src.shape[0]
        nb = np.array(check_sizes(dst.shape[0], n, nbytes))  # a copy: the ledger keeps it
        num_dev = self.links.num_devices
        if n and (min(int(src.min()), int(dst.min())) < 0 or max(int(src.max()), int(dst.max())) >= num_dev):
            raise SpecError(f"device ids must be in [0, {num_dev})", field="src")
        load = self.coflows.route(self.router, src, dst, nb, self.flows.size, self.links.num_links)
        lat = self.coflows.pair_sets[load.pair_set].latency_s
        max_lat = float(lat.max()) if n else 0.0
        links = np.flatnonzero(load.load_B > 0)
        # the carrier: the total bytes (its record); the network's flow rate cap applies per fair share
        carrier = int(
            self.flows.append(
                np.zeros(1, dtype=np.int64),
                np.zeros(1, dtype=np.int64),
                float(nb.sum()),
                now,
                now,
                traffic_class,
                label,
                None,
                carrier=True,
            )[0][0]
        )
        self.coflows.open_coflow(carrier, load.pair_set, nb, now)
        ev = self.clock.new_event(carrier)
        self.flows.latency.data[carrier] = max_lat
        if links.size == 0:  # nothing crosses a link: every member arrives after its latency
            self.flows.work.data[carrier] = 0.0
        else:
            cap = self.links.capacity_Bps[links]
            b = int(np.argmax(load.load_B[links] / cap))
            size_B = float(load.load_B[links[b]])
            share = max(float(load.flows_on[links[b]]), 1e-12)  # fair shares on the bottleneck link
            work = size_B / share
            self.flows.work.data[carrier] = work
            self._pinned[carrier] = (links, share * load.load_B[links] / size_B, max_lat)
            if rate_cap_Bps is not None:  # transfer i moves nb_i x rate / work
                caps = np.broadcast_to(np.asarray(rate_cap_Bps, dtype=np.float64), (n,))
                moving = nb > 0
                if moving.any():
                    limit = work * float(np.min(caps[moving] / nb[moving]))
                    self.flows.cap.data[carrier] = min(float(self.flows.cap.data[carrier]), limit)
        self._add_arrival(now, np.array([carrier], dtype=np.int64))
        return ev

    # ------------------------------------------------------------------ events
    def _add_arrival(self, t: float, ids: np.ndarray) -> None:
        lst = self._arrivals.get(t)
        if lst is None:
            self._arrivals[t] = [ids]
            self.clock.wake_at(t)
        else:
            lst.append(ids)

    def _update(self) -> None:
        """One engine event: account the interval, deliver drained flows, start due arrivals,
        recompute rates, and ask for the next wake-up."""
        now = self.now
        self.num_events += 1
        self._advance(now)
        self._deliver(self.active.drained(now), now)
        self._start_arrivals(now)
        if self.active.stale:
            self.active.recompute(now)
        t_next = self.active.next_drain()
        future = [t for t in self._arrivals if t > now]
        if future:
            t_next = min(t_next, min(future))
        if np.isfinite(t_next):
            self.clock.wake_at(t_next)

    def _advance(self, now: float) -> None:
        self.stats.advance(now, self.active.link_load if self.active.num_alive else None)

    def _deliver(self, fids: np.ndarray, now: float) -> None:
        if not fids.size:
            return
        store = self.flows
        lat = store.latency.data[fids]
        store.end.data[fids] = now + lat
        store.state.data[fids] = DONE
        if self.coflows.open:
            self.coflows.drained(fids[store.carrier.data[fids]].tolist(), now)
        self._t_end = max(self._t_end, float((now + lat).max()))
        if self.clock.waiting:
            self.clock.deliver(fids.tolist(), lat.tolist())

    def _route_batch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Route the flows ``ids`` (sorted; pinned ones take their pinned links), recording their
        latency and hops; the (position in ``ids``, link, weight) entries, grouped by flow in
        ``ids`` order."""
        store = self.flows
        pinned_mask = (
            np.array([fid in self._pinned for fid in ids.tolist()], dtype=bool)
            if self._pinned
            else np.zeros(ids.size, dtype=bool)
        )
        pos = np.flatnonzero(~pinned_mask)
        routed = ids[pos]
        r_src, r_dst = store.src.data[routed], store.dst.data[routed]
        parts_p, parts_l, parts_w = [], [], []
        for a in range(0, max(routed.size, 1), ROUTE_CHUNK):  # bounds routing's temporaries
            b = min(a + ROUTE_CHUNK, routed.size)
            r = self.router.route(r_src[a:b], r_dst[a:b], routed[a:b])
            parts_p.append(pos[a:b][r.flow])
            parts_l.append(r.link)
            parts_w.append(r.weight)
            store.latency.data[routed[a:b]] = r.latency_s
            store.hops.data[routed[a:b]] = r.hops
        for p in np.flatnonzero(pinned_mask).tolist():
            fid = int(ids[p])
            lk, wt, lat = self._pinned.pop(fid)
            parts_p.append(np.full(lk.size, p, dtype=np.int64))
            parts_l.append(lk)
            parts_w.append(wt)
            if lat is None:
                store.latency.data[fid] = float(self.links.latency_s[lk].sum())
                store.hops.data[fid] = float(lk.size)
        nz_pos = parts_p[0] if len(parts_p) == 1 else np.concatenate(parts_p)
        nz_link = parts_l[0] if len(parts_l) == 1 else np.concatenate(parts_l)
        nz_w = parts_w[0] if len(parts_w) == 1 else np.concatenate(parts_w)
        if pinned_mask.any():  # routed entries come grouped by flow; pinned ones were appended
            order = np.argsort(nz_pos, kind="stable")
            nz_pos, nz_link, nz_w = nz_pos[order], nz_link[order], nz_w[order]
        return nz_pos, nz_link, nz_w

    def _start_arrivals(self, now: float) -> None:
        due = sorted(t for t in self._arrivals if t <= now + 1e-18)
        if not due:
            return
        ids = np.concatenate([a for t in due for a in self._arrivals.pop(t)])
        ids.sort()
        nz_pos, nz_link, nz_w = self._route_batch(ids)
        store = self.flows
        work = store.work.data[ids]
        counts = np.bincount(nz_pos, minlength=ids.size)
        trivial = (work <= 0) | (counts == 0)
        if trivial.any():
            self._deliver(ids[trivial], now)
            keep = ~trivial[nz_pos]
            nz_link, nz_w = nz_link[keep], nz_w[keep]
        del nz_pos
        act = ids[~trivial]
        if not act.size:
            return
        store.state.data[act] = ACTIVE
        self.active.add(
            act, work[~trivial], store.cap.data[act], store.start.data[act], now, counts[~trivial], nz_link, nz_w
        )

    def run(self, until: float | None = None) -> None:
        """Run the simulation (until no event is left, or until simulated time ``until``)."""
        if until is None:
            self.env.run()
        else:
            self.env.run(until=until)
            self._advance(self.now)

    # ------------------------------------------------------------------ results
    @property
    def now(self) -> float:
        return float(self.env.now)

    @property
    def num_flows(self) -> int:
        """Flows submitted (coflow transfers count, their carriers do not)."""
        return self.flows.size - self.flows.num_carriers + self.coflows.num_members

    @property
    def num_rate_updates(self) -> int:
        """Max-min recomputations so far."""
        return self.active.num_rate_updates

    def flow_start_s(self, fids: np.ndarray) -> np.ndarray:
        """Start time (s) of the given flows."""
        return self.flows.start.data[np.asarray(fids, dtype=np.int64)]

    def flow_latency_s(self, fids: np.ndarray) -> np.ndarray:
        """Path latency (s) of the given flows (known once they have been routed)."""
        return self.flows.latency.data[np.asarray(fids, dtype=np.int64)]

    def flow_end_s(self, fids: np.ndarray | None = None) -> np.ndarray:
        """Delivery time of every flow id, or of ``fids`` (NaN while in flight; coflow carriers
        included, the transfers of coflows not: see :meth:`flow_records`)."""
        if fids is not None:
            return self.flows.end.data[np.asarray(fids, dtype=np.int64)]
        return self.flows.end.view.copy()

    def flow_columns(self) -> dict[str, Any]:
        """The flows as numpy columns, for aggregates over millions of flows without a table:
        ``src``/``dst`` (device ids of :attr:`links.index`), ``bytes``, ``traffic_class`` (codes
        into ``class_names``), ``count`` (flows a row stands for) and ``keep`` (false for coflow
        carriers, which are not flows; the arrays may be views, so apply ``keep`` before
        summing).  The network's own flows come one per row; the transfers of coflows one per
        (source, destination) pair, summed over the coflows with the same pairs and class."""
        return records.flow_columns(self.flows, self.coflows)

    def flow_records(self) -> pd.DataFrame:
        """One row per flow: ids, ends, size, times (s), class, label, weighted hop count, latency.

        The network's own flows come first (ids as :meth:`submit` returned them), then the
        transfers of every coflow in coflow order, numbered on from the last id the network
        handed out (a coflow's carrier is not a flow and is not listed)."""
        return records.flow_table(self.links, self.flows, self.coflows)

    @property
    def makespan_s(self) -> float:
        """Time of the last delivery relative to the network's creation."""
        return self._t_end - self._t0

    def link_records(self) -> pd.DataFrame:
        """One row per directed link: capacity (nominal and effective), bytes carried, seconds
        busy, peak and mean utilisation (load / effective capacity; mean over the makespan)."""
        return records.link_table(self.links, self.stats, self.active.link_peak, self.makespan_s)

    def tier_timeseries(self) -> pd.DataFrame:
        """Bytes carried per link tier in each interval between engine events.

        Columns: t0_s, t1_s, tier, network, bytes, capacity_Bps (total effective capacity of the
        tier's links).  Only intervals and tiers that carried bytes are listed.
        """
        return records.tier_table(self.links, self.stats)

    def path_latency_s(self, src: str, dst: str) -> float:
        """Latency of the path ``src -> dst``: the route :meth:`routes_of` gives the pair's first
        asker, kept per device pair.  The collective cost models subtract it from NCCL's hop
        latency once per transfer (every pipeline send), and routing it afresh each time, as 16
        queue pairs on Llama 3 405B's fabric, was two thirds of that run's CPU.  The equal-cost
        paths of a preset's fabric share one latency (one per link tier); a fabric whose parallel
        links differ in latency gets the first route's."""
        key = (src, dst)
        if key not in self._pair_latency:
            self.prefetch_path_latency([key])
        return self._pair_latency[key]

    def prefetch_path_latency(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Learn the :meth:`path_latency_s` of the device pairs among ``pairs`` not known yet, all
        in one batch, each routed with the next flow id as :meth:`routes_of` would route it alone
        now (a flow's route depends only on its endpoints, its id and the seed), so the
        latencies are the same; a pipeline's transfers ask about hundreds of new pairs at once."""
        todo = list(dict.fromkeys(p for p in pairs if p not in self._pair_latency))
        if not todo:
            return
        ids = self.flows.device_ids([d for p in todo for d in p], "device")
        routes = self.router.route(ids[0::2], ids[1::2], np.full(len(todo), self.flows.size))
        self._pair_latency.update(zip(todo, routes.latency_s.tolist(), strict=True))

    def routes_of(self, src: str, dst: str) -> Routes:
        """The route a flow ``src -> dst`` with the next flow id would get (for inspection)."""
        ids = self.flows.device_ids([src, dst], "device")
        return self.router.route(ids[:1], ids[1:], np.array([self.flows.size]))
