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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import simpy

from netsim.errors import NetsimError, RoutingError, SpecError
from netsim.network import _fill_kernel, sharing
from netsim.network.links import LinkTable
from netsim.network.routing import Router, Routes

#: simpy priority of the engine's own update events: after every ordinary event at the same
#: instant, so all flows started at one instant are added in one batch.
_ENGINE_PRIORITY = 2
_TIME_REL_TOL = 1e-9

_PENDING, _ACTIVE, _DONE = 0, 1, 2


@dataclass(slots=True)
class _Coflow:
    """One coflow of the ledger: its carrier flow, pair set (index), bytes per transfer, start
    and drain time (its transfers arrive at the drain plus their own path latency)."""

    carrier: int
    pair_set: int
    nbytes: np.ndarray
    start_s: float
    drained_s: float = math.nan


def _ranges(ptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Entry indices ptr[r]:ptr[r+1] of every row r in ``rows``, concatenated."""
    from netsim.network.sharing import _gather

    return _gather(ptr, rows)


class _Column:
    """A growable 1-D numpy array (amortised O(1) append of batches)."""

    def __init__(self, dtype: Any, fill: Any = 0) -> None:
        self.data = np.full(1024, fill, dtype=dtype)
        self.size = 0
        self.fill = fill

    def extend(self, values: np.ndarray) -> None:
        n = values.shape[0]
        need = self.size + n
        if need > self.data.shape[0]:
            self.reserve(n, factor=2)
        self.data[self.size : need] = values
        self.size = need

    def extend_const(self, n: int, value: Any) -> None:
        """Append ``n`` copies of ``value`` (no temporary array)."""
        need = self.size + n
        if need > self.data.shape[0]:
            self.reserve(n, factor=2)
        self.data[self.size : need] = value
        self.size = need

    def reserve(self, n: int, factor: int = 1) -> None:
        """Make room for ``n`` more values (``factor`` 2: at least double, for amortised appends).
        The room is left uninitialised (appends write it; untouched memory costs nothing)."""
        need = self.size + n
        if need > self.data.shape[0]:
            new = np.empty(max(need, factor * self.data.shape[0]), dtype=self.data.dtype)
            new[: self.size] = self.data[: self.size]
            self.data = new

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


class Network:
    """A topology as a shared, max-min fair network of links, driven by a simpy environment.

    Args:
        graph: a topology graph (see :mod:`netsim.topology.model`).
        env: the simpy environment to run in (a new one if ``None``).
        routing: routing policy name (``shortest``, ``ecmp``, ``spray``, ``pxn``).
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
        self._tier_of_link = np.ascontiguousarray(self.links.tier, dtype=np.int64)
        self.router = Router(graph, self.links, routing, seed)
        if flow_rate_cap_Bps is not None and not flow_rate_cap_Bps > 0:
            raise SpecError(f"flow_rate_cap_Bps must be > 0, got {flow_rate_cap_Bps!r}", field="flow_rate_cap_Bps")
        self.flow_rate_cap_Bps = float(flow_rate_cap_Bps) if flow_rate_cap_Bps else np.inf
        self._t0 = float(self.env.now)
        # per-flow columns
        self._src = _Column(np.int64)
        self._dst = _Column(np.int64)
        self._nbytes = _Column(np.float64)
        self._start = _Column(np.float64)
        self._end = _Column(np.float64, np.nan)
        self._lat = _Column(np.float64)
        self._hops = _Column(np.float64)
        self._cls = _Column(np.int32)
        self._label = _Column(np.int32)
        self._cap = _Column(np.float64, np.inf)
        self._state = _Column(np.int8)
        # bytes a flow must drain, in units of its rate (its size, except for coflow carriers)
        self._work = _Column(np.float64)
        self._class_names: dict[str, int] = {}
        self._label_names: dict[str, int] = {}
        self._events: dict[int, simpy.Event] = {}
        # pinned routes: flow id -> (links, weight per link, latency in s or None: the links' sum)
        self._pinned: dict[int, tuple[np.ndarray, np.ndarray, float | None]] = {}
        # coflows: their transfers are not rows of the flow columns but a ledger (see
        # transfer_coflow): pair sets (src, dst, latency, hops of each transfer), shared by the
        # coflows over the same routed pairs, and per coflow its carrier, pair set and bytes
        self._pair_sets: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._coflows: list[_Coflow] = []
        self._coflow_of: dict[int, _Coflow] = {}  # carrier flow id -> its coflow, until delivered
        self._num_members = 0
        self._carrier = _Column(np.bool_, False)
        self._num_carriers = 0
        # arrivals waiting to be started, by start time
        self._arrivals: dict[float, list[np.ndarray]] = {}
        # active flows and their incidence (global flow ids)
        # Active flows (global ids, ascending) with aligned state; finished flows stay in these
        # arrays as dead entries (``_alive`` False, rate 0) until compaction.  Their links are a
        # CSR store: the entries of active flow i are ``_ptr[i]:_ptr[i+1]`` of ``_nz_link``/``_nz_w``.
        # Bytes are tracked lazily: a row's remaining bytes at time t are
        # ``_rem_at - _rate * (t - _t_at)``, and ``_t_fin`` is when it drains at its rate, so an
        # event touches only the rows whose rate changed.
        self._active = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._rem_at = np.zeros(0)
        self._t_at = np.zeros(0)
        self._t_fin = np.zeros(0)
        self._t_done = np.zeros(0)  # drain time minus the completion tolerance
        self._rate = np.zeros(0)
        self._counts = np.zeros(0, dtype=np.int64)
        self._ptr = np.zeros(1, dtype=np.int64)
        self._nz_link = np.zeros(0, dtype=np.int64)
        self._owner = np.zeros(0, dtype=np.int32)  # row of every entry
        # links whose flows started or left since the last refill, and how many flows started
        self._dirty = np.zeros(0, dtype=bool)
        self._new_rows = 0
        self._comp_fails = 0  # consecutive component searches that found most of the flows
        self._comp_skip = 0  # events to skip the search for
        self._nz_w = np.zeros(0)
        self._num_alive = 0
        self._need_full = False  # new flows arrived: solve from level 0
        self._refill_from = np.inf  # flows left: refill from the lowest rate among them
        self._incremental_runs = 0
        self._t_last = float(self.env.now)
        self._wake_version = 0
        self._wake_time = np.inf
        self._wake_pending = False
        # link statistics
        nl = self.links.num_links
        self._link_load: np.ndarray = np.zeros(nl)
        self._link_bytes = np.zeros(nl)
        self._link_busy = np.zeros(nl)
        self._link_peak = np.zeros(nl)
        self._tier_rows: list[tuple[float, float, np.ndarray]] = []
        self._t_end = float(self.env.now)
        self.num_events = 0
        self.num_rate_updates = 0
        #: collective plans by request, filled by :func:`netsim.collectives.run_collective`
        self.plan_cache: dict[tuple[Any, ...], Any] = {}
        # routes of coflows by their (sources, destinations), see transfer_coflow
        self._coflow_routes: dict[tuple[bytes, bytes], tuple[Routes, int]] = {}  # -> (routes, pair set)
        self._coflow_cached = 0  # (transfer, link) entries held by _coflow_routes

    # ------------------------------------------------------------------ submission
    def _code(self, table: dict[str, int], name: str) -> int:
        code = table.get(name)
        if code is None:
            code = table[name] = len(table)
        return code

    def _device_ids(self, names: Sequence[str] | np.ndarray, field: str) -> np.ndarray:
        index = self.links.index
        try:
            return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as exc:
            raise NetsimError(f"unknown device {exc.args[0]!r}", field=field) from None

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
        ids, st = self._append(src, dst, nbytes, start_s, traffic_class, label, rate_cap_Bps)
        for t in np.unique(st).tolist():
            sel = ids[st == t] if ids.size > 1 else ids
            self._add_arrival(float(t), sel)
        return ids

    def _columns(self) -> tuple[_Column, ...]:
        return (self._src, self._dst, self._nbytes, self._start, self._end, self._lat, self._hops, self._cls,
                self._label, self._cap, self._state, self._work, self._carrier)

    def reserve_flows(self, n: int) -> None:
        """Make room for ``n`` more flows at once (a replay that knows roughly how many flows it
        will start saves the flow columns from growing, and being copied, step by step)."""
        for col in self._columns():
            col.reserve(max(int(n), 0))

    @staticmethod
    def _sizes(n_dst: int, n: int, nbytes: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """The sizes of ``n`` flows (``nbytes`` broadcast), checked: as many destinations as
        sources, sizes finite and >= 0."""
        if n_dst != n:
            raise SpecError("src and dst must have the same length", field="dst")
        nb = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (n,))
        if (~np.isfinite(nb)).any() or (nb < 0).any():
            raise SpecError("flow sizes must be finite and >= 0 bytes", field="bytes")
        return nb

    def _append(
        self,
        src: Sequence[str] | np.ndarray,
        dst: Sequence[str] | np.ndarray,
        nbytes: Sequence[float] | np.ndarray | float,
        start_s: Sequence[float] | np.ndarray | float,
        traffic_class: str,
        label: str,
        rate_cap_Bps: float | np.ndarray | None,
        carrier: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate flows and append them to the flow columns (not scheduled); ids, start times."""
        s = np.asarray(src) if isinstance(src, np.ndarray) and src.dtype.kind in "iu" else \
            self._device_ids(list(src), "src")
        d = np.asarray(dst) if isinstance(dst, np.ndarray) and dst.dtype.kind in "iu" else \
            self._device_ids(list(dst), "dst")
        n = s.shape[0]
        nb = self._sizes(d.shape[0], n, nbytes)
        st = np.broadcast_to(np.asarray(start_s, dtype=np.float64), (n,))
        if (~np.isfinite(st)).any() or (st < self.env.now - 1e-15).any():
            raise SpecError(f"flow start times must be finite and >= now ({self.env.now} s)", field="start_s")
        first = self._src.size
        ids = np.arange(first, first + n, dtype=np.int64)
        self._src.extend(s.astype(np.int64, copy=False))
        self._dst.extend(d.astype(np.int64, copy=False))
        self._nbytes.extend(nb)
        self._start.extend(st)
        self._end.extend_const(n, np.nan)
        self._lat.extend_const(n, 0.0)
        self._hops.extend_const(n, 0.0)
        self._cls.extend_const(n, self._code(self._class_names, traffic_class))
        self._label.extend_const(n, self._code(self._label_names, label))
        if rate_cap_Bps is None:
            self._cap.extend_const(n, self.flow_rate_cap_Bps)
        elif np.ndim(rate_cap_Bps) == 0:
            self._cap.extend_const(n, min(self.flow_rate_cap_Bps, float(rate_cap_Bps)))
        else:
            caps = np.broadcast_to(np.asarray(rate_cap_Bps, dtype=np.float64), (n,))
            if (np.isnan(caps) | (caps <= 0)).any():
                raise SpecError("flow rate caps must be > 0 bytes/s", field="rate_cap_Bps")
            self._cap.extend(np.minimum(caps, self.flow_rate_cap_Bps))
        self._state.extend_const(n, _PENDING)
        self._work.extend(nb)
        self._carrier.extend_const(n, carrier)
        self._num_carriers += n if carrier else 0
        return ids, st

    def submit(self, src: str, dst: str, nbytes: float, start_s: float = 0.0, *, traffic_class: str = "other",
               label: str = "", path: Sequence[str] | None = None, rate_cap_Bps: float | None = None) -> int:
        """Submit one flow starting at absolute time ``start_s``; returns its flow id."""
        fid = int(self.submit_many([src], [dst], nbytes, start_s, traffic_class=traffic_class, label=label,
                                   rate_cap_Bps=rate_cap_Bps)[0])
        if path is not None:
            self._pin(fid, src, dst, path)
        return fid

    def _pin(self, fid: int, src: str, dst: str, path: Sequence[str]) -> None:
        path = list(path)
        if not path or path[0] != src or path[-1] != dst:
            raise RoutingError(f"pinned path {'>'.join(path)} must start at {src} and end at {dst}", field="path")
        links = self.router.pinned(path)
        self._pinned[fid] = (links, np.ones(links.size), None)

    def transfer(self, src: str, dst: str, nbytes: float, *, traffic_class: str = "other", label: str = "",
                 path: Sequence[str] | None = None, rate_cap_Bps: float | None = None) -> simpy.Event:
        """Start a flow now; the returned event fires (value: flow id) when its last byte arrives."""
        fid = self.submit(src, dst, nbytes, float(self.env.now), traffic_class=traffic_class, label=label,
                          path=path, rate_cap_Bps=rate_cap_Bps)
        ev = self.env.event()
        self._events[fid] = ev
        return ev

    def transfer_coflow(self, src: np.ndarray, dst: np.ndarray, nbytes: np.ndarray | float, *,
                        traffic_class: str = "other", label: str = "") -> simpy.Event:
        """Start many transfers now as one *coflow*; the event fires (value: the carrier's flow
        id) when the last of them has arrived.

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

        Coflows of up to :attr:`COFLOW_CACHE_MAX` transfers keep the routes (ECMP choices
        included) of the first coflow over the same (source, destination) pairs, as the
        persistent connections of a collective library keep their paths from call to call; a
        training step's thousands of expert all-to-alls over one EP group are routed once.  The
        cache holds at most :attr:`COFLOW_CACHE_ENTRIES` (transfer, link) entries (about 200 MB);
        beyond that the oldest pair sets are routed (hashed) afresh when they come back.

        The transfers are kept in a ledger, not as rows of the flow columns: per coflow its bytes,
        per distinct routed pair set the sources, destinations, latencies and hop counts (shared
        by the coflows that reuse its routes).  A 2048-GPU training step starts 60M such
        transfers; a row each (80 bytes) cost more than moving them.
        """
        now = float(self.env.now)
        src = np.array(src, dtype=np.int64)  # copies: the ledger keeps them
        dst = np.array(dst, dtype=np.int64)
        n = src.shape[0]
        nb = np.array(self._sizes(dst.shape[0], n, nbytes))  # a copy: the ledger keeps it
        num_dev = len(self.links.names)
        if n and (min(int(src.min()), int(dst.min())) < 0 or max(int(src.max()), int(dst.max())) >= num_dev):
            raise SpecError(f"device ids must be in [0, {num_dev})", field="src")
        nl = self.links.num_links
        load_B = np.zeros(nl)
        flows_on = np.zeros(nl)
        key = (src.tobytes(), dst.tobytes()) if n <= self.COFLOW_CACHE_MAX else None
        hit = self._coflow_routes.get(key) if key is not None else None
        pair_set = hit[1] if hit is not None else len(self._pair_sets)
        lat_parts, hop_parts = [], []
        for a in range(0, n, self.ROUTE_CHUNK):  # one chunk's routes at a time (bounds memory)
            b = min(a + self.ROUTE_CHUNK, n)
            if hit is not None:
                r = hit[0]
            else:  # transfers are hashed (ECMP) by the flow ids they would have as ordinary flows
                base = self._src.size
                r = self.router.route(src[a:b], dst[a:b], np.arange(base + a, base + b, dtype=np.int64))
                lat_parts.append(r.latency_s)
                hop_parts.append(r.hops)
                if key is not None:
                    self._cache_coflow_routes(key, r, pair_set)
            part = nb[a:b][r.flow]
            moving = part > 0
            load_B += np.bincount(r.link, weights=part * r.weight, minlength=nl)
            flows_on += np.bincount(r.link[moving], weights=r.weight[moving], minlength=nl)
        if hit is None:
            self._pair_sets.append((src, dst, np.concatenate(lat_parts) if n else np.zeros(0),
                                    np.concatenate(hop_parts) if n else np.zeros(0)))
        lat = self._pair_sets[pair_set][2]
        max_lat = float(lat.max()) if n else 0.0
        links = np.flatnonzero(load_B > 0)
        # the carrier: the total bytes (its record); the network's flow rate cap applies per fair share
        carrier = int(self._append(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), float(nb.sum()), now,
                                   traffic_class, label, None, carrier=True)[0][0])
        cof = _Coflow(carrier, pair_set, nb, now)
        self._coflows.append(cof)
        self._coflow_of[carrier] = cof
        self._num_members += n
        ev = self.env.event()
        self._events[carrier] = ev
        self._lat.data[carrier] = max_lat
        if links.size == 0:  # nothing crosses a link: every member arrives after its latency
            self._work.data[carrier] = 0.0
        else:
            cap = self.links.capacity_Bps[links]
            b = int(np.argmax(load_B[links] / cap))
            size_B = float(load_B[links[b]])
            share = max(float(flows_on[links[b]]), 1e-12)  # fair shares on the bottleneck link
            self._work.data[carrier] = size_B / share
            self._pinned[carrier] = (links, share * load_B[links] / size_B, max_lat)
        self._add_arrival(float(self.env.now), np.array([carrier], dtype=np.int64))
        return ev

    #: coflows of at most this many transfers keep the routes of the first coflow over the same
    #: (source, destination) pairs (see :meth:`transfer_coflow`)
    COFLOW_CACHE_MAX = 1 << 16
    #: at most this many (transfer, link) entries are cached; the oldest routes are dropped first
    COFLOW_CACHE_ENTRIES = 1 << 23

    def _cache_coflow_routes(self, key: tuple[bytes, bytes], routes: Routes, pair_set: int) -> None:
        self._coflow_routes[key] = (routes, pair_set)
        self._coflow_cached += routes.link.size
        while self._coflow_cached > self.COFLOW_CACHE_ENTRIES and len(self._coflow_routes) > 1:
            oldest = next(iter(self._coflow_routes))
            self._coflow_cached -= self._coflow_routes.pop(oldest)[0].link.size

    def transfer_ids(self, src: np.ndarray, dst: np.ndarray, nbytes: np.ndarray | float, *,
                     traffic_class: str = "other", label: str = "",
                     rate_cap_Bps: float | np.ndarray | None = None) -> list[simpy.Event]:
        """Vectorised :meth:`transfer` for device-id arrays; one event per flow (``rate_cap_Bps``: one
        cap or one per flow, bytes/s)."""
        ids = self.submit_many(src, dst, nbytes, float(self.env.now), traffic_class=traffic_class, label=label,
                               rate_cap_Bps=rate_cap_Bps)
        evs = []
        for fid in ids.tolist():
            ev = self.env.event()
            self._events[fid] = ev
            evs.append(ev)
        return evs

    # ------------------------------------------------------------------ event loop
    def _add_arrival(self, t: float, ids: np.ndarray) -> None:
        lst = self._arrivals.get(t)
        if lst is None:
            self._arrivals[t] = [ids]
            self._schedule_update(t)
        else:
            lst.append(ids)

    def _schedule_update(self, t: float) -> None:
        """Make sure an engine update runs at time ``t`` (after ordinary events of that instant).

        Exactly one wake-up is pending at any time: the earliest needed.  An earlier request
        supersedes a later pending one (which is then ignored when it fires).
        """
        now = float(self.env.now)
        t = max(t, now)
        if self._wake_pending and self._wake_time <= t:
            return
        self._wake_version += 1
        version = self._wake_version
        ev = simpy.Event(self.env)
        ev._ok = True
        ev._value = None
        ev.callbacks.append(partial(self._on_wake, version))
        self.env.schedule(ev, priority=_ENGINE_PRIORITY, delay=t - now)  # type: ignore[arg-type]
        self._wake_time = t
        self._wake_pending = True

    def _on_wake(self, version: int, _event: simpy.Event | None = None) -> None:
        if version != self._wake_version:
            return  # superseded by an earlier wake-up that already rescheduled
        self._wake_pending = False
        self._update()

    def _update(self) -> None:
        now = float(self.env.now)
        self.num_events += 1
        self._advance(now)
        self._complete(now)
        self._start_arrivals(now)
        if self._need_full or np.isfinite(self._refill_from):
            self._recompute()
        # next wake: earliest drain or earliest future arrival
        t_next = float(self._t_fin.min()) if self._num_alive and self._t_fin.size else np.inf
        future = [t for t in self._arrivals if t > now]
        if future:
            t_next = min(t_next, min(future))
        if np.isfinite(t_next):
            self._schedule_update(t_next)

    def _advance(self, now: float) -> None:
        dt = now - self._t_last
        if dt > 0 and self._num_alive:
            load = self._link_load
            if _fill_kernel.HAVE_NUMBA and sharing.USE_COMPILED:  # one compiled pass over the links
                tier_bytes: np.ndarray = np.zeros(len(self.links.tier_names))
                _fill_kernel.advance(load, float(dt), self._link_bytes, self._link_busy, self._tier_of_link,
                                     tier_bytes)
            else:
                self._link_bytes += load * dt
                busy = load > 0
                self._link_busy[busy] += dt
                tier_bytes = np.bincount(self.links.tier, weights=load * dt, minlength=len(self.links.tier_names))
            self._tier_rows.append((self._t_last, now, tier_bytes))
        self._t_last = now

    def _complete(self, now: float) -> None:
        if not self._num_alive:
            return
        done = self._t_done <= now
        if not done.any():
            return
        rows = np.flatnonzero(done)
        self._refill_from = min(self._refill_from, float(self._rate[rows].min()))
        ent = _ranges(self._ptr, rows)
        links = self._nz_link[ent]
        self._mark_dirty(links)
        self._link_load -= np.bincount(links, weights=self._nz_w[ent] *
                                       np.repeat(self._rate[rows], self._counts[rows]),
                                       minlength=self.links.num_links)
        self._alive[rows] = False
        self._rate[rows] = 0.0
        self._rem_at[rows] = 0.0
        self._t_fin[rows] = np.inf
        self._t_done[rows] = np.inf
        self._num_alive -= rows.size
        self._deliver(self._active[rows], now)

    def _deliver(self, fids: np.ndarray, now: float) -> None:
        lat = self._lat.data[fids]
        self._end.data[fids] = now + lat
        self._state.data[fids] = _DONE
        if self._coflow_of:
            for fid in fids[self._carrier.data[fids]].tolist():
                self._coflow_of.pop(fid).drained_s = now
        self._t_end = max(self._t_end, float((now + lat).max()) if fids.size else now)
        if self._events:
            for fid, la in zip(fids.tolist(), lat.tolist(), strict=True):
                ev = self._events.pop(fid, None)
                if ev is not None:
                    ev._ok = True
                    ev._value = fid
                    self.env.schedule(ev, delay=la)

    def _start_arrivals(self, now: float) -> bool:
        due = sorted(t for t in self._arrivals if t <= now + 1e-18)
        if not due:
            return False
        ids = np.concatenate([a for t in due for a in self._arrivals.pop(t)])
        ids.sort()
        src = self._src.data[ids]
        dst = self._dst.data[ids]
        pinned_mask = np.array([fid in self._pinned for fid in ids.tolist()], dtype=bool) if self._pinned \
            else np.zeros(ids.size, dtype=bool)
        routed = ids[~pinned_mask]
        r_src, r_dst = src[~pinned_mask], dst[~pinned_mask]
        parts_f, parts_l, parts_w = [], [], []
        for a in range(0, max(routed.size, 1), self.ROUTE_CHUNK):  # bounds routing's temporaries
            b = min(a + self.ROUTE_CHUNK, routed.size)
            r = self.router.route(r_src[a:b], r_dst[a:b], routed[a:b])
            parts_f.append(routed[a:b][r.flow])
            parts_l.append(r.link)
            parts_w.append(r.weight)
            self._lat.data[routed[a:b]] = r.latency_s
            self._hops.data[routed[a:b]] = r.hops
        nz_flow = parts_f[0] if len(parts_f) == 1 else np.concatenate(parts_f)
        nz_link = parts_l[0] if len(parts_l) == 1 else np.concatenate(parts_l)
        nz_w = parts_w[0] if len(parts_w) == 1 else np.concatenate(parts_w)
        del parts_f, parts_l, parts_w
        if pinned_mask.any():
            extra_f, extra_l = [], []
            extra_w = []
            for fid in ids[pinned_mask].tolist():
                lk, wt, lat = self._pinned.pop(fid)
                extra_f.append(np.full(lk.size, fid, dtype=np.int64))
                extra_l.append(lk)
                extra_w.append(wt)
                if lat is None:
                    self._lat.data[fid] = float(self.links.latency_s[lk].sum())
                    self._hops.data[fid] = float(lk.size)
            nz_flow = np.concatenate([nz_flow, *extra_f])
            nz_link = np.concatenate([nz_link, *extra_l])
            nz_w = np.concatenate([nz_w, *extra_w])
        nbytes = self._work.data[ids]
        has_links = np.zeros(ids.size, dtype=bool)  # ids are sorted; nz_flow holds some of them
        has_links[np.searchsorted(ids, nz_flow)] = True
        trivial = (nbytes <= 0) | ~has_links
        if trivial.any():
            self._deliver(ids[trivial], now)
        act = ids[~trivial]
        if act.size:
            self._compact()
            self._state.data[act] = _ACTIVE
            keep = ~np.isin(nz_flow, ids[trivial]) if trivial.any() else slice(None)
            nz_flow, nz_link, nz_w = nz_flow[keep], nz_link[keep], nz_w[keep]
            if pinned_mask.any():  # routed entries come grouped by flow; pinned ones were appended
                order = np.argsort(nz_flow, kind="stable")
                nz_link, nz_w = nz_link[order], nz_w[order]
            counts = np.bincount(np.searchsorted(act, nz_flow), minlength=act.size)
            del nz_flow
            self._active = np.concatenate([self._active, act])
            self._alive = np.concatenate([self._alive, np.ones(act.size, dtype=bool)])
            self._rem_at = np.concatenate([self._rem_at, nbytes[~trivial]])
            self._t_at = np.concatenate([self._t_at, np.full(act.size, now)])
            self._t_fin = np.concatenate([self._t_fin, np.full(act.size, np.inf)])
            self._t_done = np.concatenate([self._t_done, np.full(act.size, np.inf)])
            self._rate = np.concatenate([self._rate, np.zeros(act.size)])
            first_row = self._counts.size
            self._counts = np.concatenate([self._counts, counts])
            self._ptr = np.concatenate([self._ptr, self._ptr[-1] + np.cumsum(counts)])
            owner = np.repeat(np.arange(first_row, first_row + act.size, dtype=np.int32), counts)
            self._mark_dirty(nz_link)
            self._new_rows += act.size
            if self._nz_link.size:
                self._nz_link = np.concatenate([self._nz_link, nz_link])
                self._nz_w = np.concatenate([self._nz_w, nz_w])
                self._owner = np.concatenate([self._owner, owner])
            else:  # the first batch (or after everything left): no copy
                self._nz_link, self._nz_w, self._owner = nz_link, nz_w, owner
            self._num_alive += act.size
            self._need_full = True
        return True

    def _mark_dirty(self, links: np.ndarray) -> None:
        if self._dirty.size == 0:
            self._dirty = np.zeros(self.links.num_links, dtype=bool)
        self._dirty[links] = True

    def _compact(self) -> None:
        """Drop finished flows from the active arrays (when they are at least half of them)."""
        dead = self._active.size - self._num_alive
        if dead == 0 or dead < self._num_alive:
            return
        rows = np.flatnonzero(self._alive)
        ent = _ranges(self._ptr, rows)
        self._nz_link = self._nz_link[ent]
        self._nz_w = self._nz_w[ent]
        self._counts = self._counts[rows]
        self._ptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(self._counts, out=self._ptr[1:])
        self._owner = np.repeat(np.arange(rows.size, dtype=np.int32), self._counts)
        for name in ("_active", "_alive", "_rem_at", "_t_at", "_t_fin", "_t_done", "_rate"):
            setattr(self, name, getattr(self, name)[rows])

    #: a refill is restricted to the flows coupled (through shared links, transitively) to the
    #: flows that started or left, unless that component holds more than this share of the
    #: active flows (then finding it costs more than it saves); 0 disables the search
    COMPONENT_MAX_SHARE = 0.5

    def _component(self, seed_links: np.ndarray) -> np.ndarray | None:
        """Rows of the connected component of the flow-link graph around ``seed_links`` (a mask),
        or ``None`` when it is most of the active flows (then the next searches back off
        exponentially: one giant component, as in a large all-to-all, stays one).

        Max-min fair rates decompose over these components: flows that share no link,
        directly or through other flows, with a flow that started or left keep their rates.
        Found by a breadth-first search over the CSR store, one vectorised pass per level.
        """
        nrows = self._alive.size
        if seed_links.size == 0 or self._num_alive < 64 or self.COMPONENT_MAX_SHARE <= 0:
            return None
        if self._comp_skip > 0:  # recent searches found one giant component: back off
            self._comp_skip -= 1
            return None
        limit = self.COMPONENT_MAX_SHARE * self._num_alive
        nl = self.links.num_links
        mark = np.zeros(nl, dtype=bool)
        mark[seed_links] = True
        frontier = mark.copy()
        in_comp = np.zeros(nrows, dtype=bool)
        size = 0
        while True:
            cand = self._owner[frontier[self._nz_link]]
            cand = cand[self._alive[cand] & ~in_comp[cand]]
            if cand.size == 0:
                self._comp_fails = 0
                return in_comp
            fresh = np.zeros(nrows, dtype=bool)
            fresh[cand] = True
            in_comp |= fresh
            new_rows = np.flatnonzero(fresh)
            size += new_rows.size
            if size > limit:
                # a search costs a pass over every entry: after a failure skip 1, 3, 7, ... events
                self._comp_fails = min(self._comp_fails + 1, 10)
                self._comp_skip = (1 << self._comp_fails) - 1
                return None
            frontier = np.zeros(nl, dtype=bool)
            frontier[self._nz_link[_ranges(self._ptr, new_rows)]] = True
            frontier &= ~mark
            if not frontier.any():
                self._comp_fails = 0
                return in_comp
            mark |= frontier

    #: flows routed per call of the router when a batch starts (bounds its temporary arrays)
    ROUTE_CHUNK = 1 << 20

    #: after this many incremental refills, the link loads are summed afresh from the flow
    #: rates (bounds floating-point drift of the incrementally maintained loads)
    RESUM_LOADS_EVERY = 64

    def _recompute(self) -> None:
        self.num_rate_updates += 1
        nl = self.links.num_links
        now = float(self.env.now)
        full = self._need_full
        self._need_full = False
        level0 = self._refill_from
        self._refill_from = np.inf
        if not self._num_alive:
            self._link_load = np.zeros(nl)
            return
        dirty = np.flatnonzero(self._dirty) if self._dirty.size else np.zeros(0, dtype=np.int64)
        self._dirty = np.zeros(0, dtype=bool)
        new_rows, self._new_rows = self._new_rows, 0
        if full:
            self._compact()
            level0 = 0.0
        # a component holds every flow that just started: skip the search when that is most
        comp = None if new_rows > self.COMPONENT_MAX_SHARE * self._num_alive else self._component(dirty)
        if full and comp is None:
            self._incremental_runs = 0
            rows = np.flatnonzero(self._alive)
            # after compaction the rows are usually all alive: use the store without a copy
            ent = slice(None) if rows.size == self._counts.size else _ranges(self._ptr, rows)
            base = self.links.capacity_Bps
            fixed = np.zeros(nl)
        else:
            self._incremental_runs += 1
            if self._incremental_runs % self.RESUM_LOADS_EVERY == 0:
                every = np.repeat(self._rate, self._counts)  # dead rows have rate 0
                self._link_load = np.bincount(self._nz_link, weights=self._nz_w * every,
                                              minlength=nl).astype(np.float64)
            sel = self._alive & (self._rate >= level0 * (1 - 1e-9))
            if comp is not None:
                sel &= comp
            rows = np.flatnonzero(sel)
            if rows.size == 0:
                return  # every leaver was faster than everyone left: nobody's rate changes
            ent = _ranges(self._ptr, rows)
            sub_load = np.bincount(self._nz_link[ent], weights=self._nz_w[ent] *
                                   np.repeat(self._rate[rows], self._counts[rows]), minlength=nl)
            fixed = np.maximum(self._link_load - sub_load, 0.0)
            if full:  # the component's links carry none of the other flows (closure)
                fixed[self._nz_link[ent]] = 0.0
            base = np.maximum(self.links.capacity_Bps - fixed, 0.0)
        if isinstance(ent, slice):
            counts, lk, w = self._counts, self._nz_link, self._nz_w
        else:
            counts, lk, w = self._counts[rows], self._nz_link[ent], self._nz_w[ent]
        self._refill_rows(rows, counts, lk, w, base, level0, now)
        self._link_load = fixed + np.bincount(lk, weights=w * np.repeat(self._rate[rows], counts), minlength=nl)
        np.maximum(self._link_peak, self._link_load / self.links.capacity_Bps, out=self._link_peak)

    def _refill_rows(self, rows: np.ndarray, counts: np.ndarray, lk: np.ndarray, w: np.ndarray, base: np.ndarray,
                     level0: float, now: float) -> None:
        """New max-min rates for the active rows ``rows`` (links ``lk`` with weights ``w``,
        ``counts`` entries per row; ``base``: capacity left per link id of ``lk``), their bytes
        settled at the old rates and their drain times projected at the new ones."""
        from netsim.network.sharing import refill

        ptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        rate = refill(ptr, lk, w, base, self._cap.data[self._active[rows]], level0)
        # settle the bytes sent at the old rates, then project the drain at the new ones
        rem = np.maximum(self._rem_at[rows] - self._rate[rows] * (now - self._t_at[rows]), 0.0)
        self._rem_at[rows] = rem
        self._t_at[rows] = now
        self._rate[rows] = rate
        with np.errstate(divide="ignore", invalid="ignore"):
            t_fin = np.where(rate > 0, now + rem / rate, np.inf)
            # a flow counts as drained within a relative 1e-9 of its own duration: batches
            # completions that float rounding would split, without ending short flows early
            start = self._start.data[self._active[rows]]
            self._t_fin[rows] = t_fin
            self._t_done[rows] = t_fin - np.maximum(_TIME_REL_TOL * (t_fin - start), 1e-15)

    def run(self, until: float | None = None) -> None:
        """Run the simulation (until no event is left, or until simulated time ``until``)."""
        if until is None:
            self.env.run()
        else:
            self.env.run(until=until)
            self._advance(float(self.env.now))

    # ------------------------------------------------------------------ results
    @property
    def now(self) -> float:
        return float(self.env.now)

    @property
    def num_flows(self) -> int:
        """Flows submitted (coflow transfers count, their carriers do not)."""
        return self._src.size - self._num_carriers + self._num_members

    def flow_start_s(self, fids: np.ndarray) -> np.ndarray:
        """Start time (s) of the given flows."""
        return self._start.data[np.asarray(fids, dtype=np.int64)]

    def flow_latency_s(self, fids: np.ndarray) -> np.ndarray:
        """Path latency (s) of the given flows (known once they have been routed)."""
        return self._lat.data[np.asarray(fids, dtype=np.int64)]

    def flow_end_s(self) -> np.ndarray:
        """Delivery time of every flow id (NaN while in flight; coflow carriers included, the
        transfers of coflows not: see :meth:`flow_records`)."""
        return self._end.view.copy()

    def flow_columns(self) -> dict[str, Any]:
        """The flows as numpy columns, for aggregates over millions of flows without a table:
        ``src``/``dst`` (device ids of :attr:`links.index`), ``bytes``, ``traffic_class`` (codes
        into ``class_names``), ``count`` (flows a row stands for) and ``keep`` (false for coflow
        carriers, which are not flows; the arrays may be views, so apply ``keep`` before
        summing).  The network's own flows come one per row; the transfers of coflows one per
        (source, destination) pair, summed over the coflows with the same pairs and class."""
        n = self._src.size
        keep = ~self._carrier.view if self._num_carriers else np.ones(n, dtype=bool)
        cols: dict[str, list[np.ndarray]] = {"src": [self._src.view], "dst": [self._dst.view],
                                             "bytes": [self._nbytes.view], "traffic_class": [self._cls.view],
                                             "count": [np.ones(n, dtype=np.int64)], "keep": [keep]}
        groups: dict[tuple[int, int], list[Any]] = {}  # (pair set, class) -> [bytes summed, coflows]
        for cof in self._coflows:
            g = groups.get((cof.pair_set, int(self._cls.data[cof.carrier])))
            if g is None:
                groups[(cof.pair_set, int(self._cls.data[cof.carrier]))] = [cof.nbytes.copy(), 1]
            else:
                g[0] += cof.nbytes
                g[1] += 1
        for (ps, cls), (nb, count) in groups.items():
            src, dst = self._pair_sets[ps][:2]
            cols["src"].append(src)
            cols["dst"].append(dst)
            cols["bytes"].append(nb)
            cols["traffic_class"].append(np.full(src.size, cls, dtype=np.int32))
            cols["count"].append(np.full(src.size, count, dtype=np.int64))
            cols["keep"].append(np.ones(src.size, dtype=bool))
        out: dict[str, Any] = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in cols.items()}
        out["class_names"] = list(self._class_names)
        return out

    def flow_records(self) -> pd.DataFrame:
        """One row per flow: ids, ends, size, times (s), class, label, weighted hop count, latency.

        The network's own flows come first (ids as :meth:`submit` returned them), then the
        transfers of every coflow in coflow order, numbered on from the last id the network
        handed out (a coflow's carrier is not a flow and is not listed)."""
        names = np.array(self.links.names, dtype=object)
        cls = np.array(list(self._class_names), dtype=object)
        lab = np.array(list(self._label_names), dtype=object)
        keep = ~self._carrier.view
        ids = np.flatnonzero(keep) if not keep.all() else np.arange(self._src.size, dtype=np.int64)
        parts = {
            "flow_id": [ids],
            "src": [self._src.view[ids]],
            "dst": [self._dst.view[ids]],
            "bytes": [self._nbytes.view[ids]],
            "start_s": [self._start.view[ids]],
            "end_s": [self._end.view[ids]],
            "traffic_class": [self._cls.view[ids]],
            "label": [self._label.view[ids]],
            "hops": [self._hops.view[ids]],
            "latency_s": [self._lat.view[ids]],
        }
        next_id = self._src.size
        for cof in self._coflows:
            src, dst, lat, hops = self._pair_sets[cof.pair_set]
            m = src.size
            parts["flow_id"].append(np.arange(next_id, next_id + m, dtype=np.int64))
            next_id += m
            parts["src"].append(src)
            parts["dst"].append(dst)
            parts["bytes"].append(cof.nbytes)
            parts["start_s"].append(np.full(m, cof.start_s))
            parts["end_s"].append(cof.drained_s + lat)
            parts["traffic_class"].append(np.full(m, self._cls.data[cof.carrier], dtype=np.int32))
            parts["label"].append(np.full(m, self._label.data[cof.carrier], dtype=np.int32))
            parts["hops"].append(hops)
            parts["latency_s"].append(lat)
        col = {k: np.concatenate(v) for k, v in parts.items()}
        n = col["flow_id"].size
        return pd.DataFrame({
            "flow_id": col["flow_id"],
            "src": names[col["src"]] if n else np.array([], dtype=object),
            "dst": names[col["dst"]] if n else np.array([], dtype=object),
            "bytes": col["bytes"],
            "start_s": col["start_s"],
            "end_s": col["end_s"],
            "fct_s": col["end_s"] - col["start_s"],
            "traffic_class": cls[col["traffic_class"]] if n else np.array([], dtype=object),
            "label": lab[col["label"]] if n else np.array([], dtype=object),
            "hops": col["hops"],
            "latency_s": col["latency_s"],
        })

    @property
    def makespan_s(self) -> float:
        """Time of the last delivery relative to the network's creation."""
        return self._t_end - self._t0

    def link_records(self) -> pd.DataFrame:
        """One row per directed link: capacity (nominal and effective), bytes carried, seconds
        busy, peak and mean utilisation (load / effective capacity; mean over the makespan)."""
        lt = self.links
        names = np.array(lt.names, dtype=object)
        span = max(self.makespan_s, 1e-300)
        return pd.DataFrame({
            "link": lt.link_names(),
            "src": names[lt.src],
            "dst": names[lt.dst],
            "class": np.array(lt.class_names, dtype=object)[lt.link_class] if lt.num_links else [],
            "tier": np.array(lt.tier_names, dtype=object)[lt.tier] if lt.num_links else [],
            "network": np.array(lt.network_names, dtype=object)[lt.network] if lt.num_links else [],
            "capacity_Bps": lt.nominal_Bps.copy(),
            "effective_capacity_Bps": lt.capacity_Bps.copy(),
            "bytes": self._link_bytes.copy(),
            "busy_s": self._link_busy.copy(),
            "peak_utilization": self._link_peak.copy(),
            "mean_utilization": self._link_bytes / (lt.capacity_Bps * span),
        })

    def tier_timeseries(self) -> pd.DataFrame:
        """Bytes carried per link tier in each interval between engine events.

        Columns: t0_s, t1_s, tier, network, bytes, capacity_Bps (total effective capacity of the
        tier's links).  Only intervals and tiers that carried bytes are listed.
        """
        lt = self.links
        ntier = len(lt.tier_names)
        cap = np.bincount(lt.tier, weights=lt.capacity_Bps, minlength=ntier)
        net_of_tier = np.zeros(ntier, dtype=np.int64)
        net_of_tier[lt.tier[::-1]] = lt.network[::-1]
        rows: dict[str, list[Any]] = {"t0_s": [], "t1_s": [], "tier": [], "network": [], "bytes": [],
                                      "capacity_Bps": []}
        for t0, t1, tb in self._tier_rows:
            for k in np.flatnonzero(tb > 0).tolist():
                rows["t0_s"].append(t0)
                rows["t1_s"].append(t1)
                rows["tier"].append(lt.tier_names[k])
                rows["network"].append(lt.network_names[net_of_tier[k]])
                rows["bytes"].append(float(tb[k]))
                rows["capacity_Bps"].append(float(cap[k]))
        return pd.DataFrame(rows)

    def routes_of(self, src: str, dst: str) -> Routes:
        """The route a flow ``src -> dst`` with the next flow id would get (for inspection)."""
        ids = self._device_ids([src, dst], "device")
        return self.router.route(ids[:1], ids[1:], np.array([self._src.size]))
