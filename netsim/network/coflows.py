"""The coflow ledger: many transfers started together and moved as one aggregate flow.

A *coflow* (see :meth:`netsim.network.Network.transfer_coflow`) is routed transfer by transfer
but moved by the engine as one *carrier* flow.  Its transfers are not rows of the flow store:
a 2048-GPU training step starts 60M of them and a row each (80 bytes) would cost more than
moving them.  The ledger keeps instead

* **pair sets**: the sources, destinations, path latencies and hop counts of a routed set of
  (source, destination) pairs, shared by every coflow over the same pairs that reuses the routes;
* **coflows**: per coflow its carrier's flow id, its pair set, the bytes of each transfer, its
  start and (once its carrier drains) its drain time; a transfer arrives at the drain plus its
  own path latency;
* **the route cache**: coflows of up to :attr:`CoflowLedger.CACHE_MAX` transfers keep the
  routes (ECMP choices included) of the first coflow over the same pairs, as the persistent
  connections of a collective library keep their paths from call to call; a training step's
  thousands of expert all-to-alls over one EP group are routed once.  It holds at most
  :attr:`CoflowLedger.CACHE_ENTRIES` (transfer, link) entries (about 200 MB); beyond that the
  oldest pair sets are routed (hashed) afresh when they come back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from netsim.network.routing import Router, Routes

#: transfers routed per call of the router (bounds its temporary arrays)
ROUTE_CHUNK = 1 << 20


class PairSet(NamedTuple):
    """Routed (source, destination) pairs: device ids, path latency (s) and weighted hops."""

    src: np.ndarray
    dst: np.ndarray
    latency_s: np.ndarray
    hops: np.ndarray


@dataclass(slots=True)
class Coflow:
    """One coflow of the ledger: its carrier flow, pair set (index), bytes per transfer, start
    and drain time (its transfers arrive at the drain plus their own path latency)."""

    carrier: int
    pair_set: int
    nbytes: np.ndarray
    start_s: float
    drained_s: float = math.nan


class CoflowLoad(NamedTuple):
    """What a newly routed coflow puts on the links: its pair set, bytes per link and the
    number of its (moving) transfers per link (weighted, for sprayed paths)."""

    pair_set: int
    load_B: np.ndarray
    flows_on: np.ndarray


class CoflowLedger:
    """Pair sets, coflows and the route cache of one network."""

    #: coflows of at most this many transfers keep the routes of the first coflow over the
    #: same (source, destination) pairs
    CACHE_MAX = 1 << 16
    #: at most this many (transfer, link) entries are cached; the oldest routes are dropped first
    CACHE_ENTRIES = 1 << 23

    def __init__(self) -> None:
        self.pair_sets: list[PairSet] = []
        self.coflows: list[Coflow] = []
        self.open: dict[int, Coflow] = {}  # carrier flow id -> its coflow, until it drains
        self.num_members = 0  # transfers of every coflow
        self.routes: dict[tuple[bytes, bytes], tuple[Routes, int]] = {}  # pairs -> (routes, pair set)
        self.cached_entries = 0  # (transfer, link) entries held by ``routes``

    def route(
        self, router: Router, src: np.ndarray, dst: np.ndarray, nbytes: np.ndarray, first_id: int, num_links: int
    ) -> CoflowLoad:
        """Route the transfers ``src -> dst`` (or reuse the routes of the same pairs) and sum
        their bytes per link.  Transfers are hashed (ECMP) by the flow ids they would have as
        ordinary flows, ``first_id`` onwards."""
        n = src.shape[0]
        load_B = np.zeros(num_links)
        flows_on = np.zeros(num_links)
        key = (src.tobytes(), dst.tobytes()) if n <= self.CACHE_MAX else None
        hit = self.routes.get(key) if key is not None else None
        pair_set = hit[1] if hit is not None else len(self.pair_sets)
        lat_parts, hop_parts = [], []
        for a in range(0, n, ROUTE_CHUNK):  # one chunk's routes at a time (bounds memory)
            b = min(a + ROUTE_CHUNK, n)
            if hit is not None:
                r = hit[0]
            else:
                r = router.route(src[a:b], dst[a:b], np.arange(first_id + a, first_id + b, dtype=np.int64))
                lat_parts.append(r.latency_s)
                hop_parts.append(r.hops)
                if key is not None:
                    self._remember(key, r, pair_set)
            part = nbytes[a:b][r.flow]
            moving = part > 0
            load_B += np.bincount(r.link, weights=part * r.weight, minlength=num_links)
            flows_on += np.bincount(r.link[moving], weights=r.weight[moving], minlength=num_links)
        if hit is None:
            self.pair_sets.append(
                PairSet(
                    src,
                    dst,
                    np.concatenate(lat_parts) if n else np.zeros(0),
                    np.concatenate(hop_parts) if n else np.zeros(0),
                )
            )
        return CoflowLoad(pair_set, load_B, flows_on)

    def _remember(self, key: tuple[bytes, bytes], routes: Routes, pair_set: int) -> None:
        self.routes[key] = (routes, pair_set)
        self.cached_entries += routes.link.size
        while self.cached_entries > self.CACHE_ENTRIES and len(self.routes) > 1:
            oldest = next(iter(self.routes))
            self.cached_entries -= self.routes.pop(oldest)[0].link.size

    def open_coflow(self, carrier: int, pair_set: int, nbytes: np.ndarray, start_s: float) -> None:
        """Enter a coflow moved by flow ``carrier``."""
        cof = Coflow(carrier, pair_set, nbytes, start_s)
        self.coflows.append(cof)
        self.open[carrier] = cof
        self.num_members += nbytes.size

    def drained(self, carriers: list[int], now: float) -> None:
        """The coflows of these carriers drained at ``now``."""
        for fid in carriers:
            self.open.pop(fid).drained_s = now

    def groups(self, class_of: np.ndarray) -> Iterator[tuple[PairSet, int, np.ndarray, int]]:
        """Per (pair set, traffic class): the pairs, the class, the bytes of each pair summed
        over the coflows of that class on those pairs, and how many coflows that is
        (``class_of``: class code per flow id)."""
        sums: dict[tuple[int, int], np.ndarray] = {}
        counts: dict[tuple[int, int], int] = {}
        for cof in self.coflows:
            key = (cof.pair_set, int(class_of[cof.carrier]))
            if key in sums:
                sums[key] += cof.nbytes
                counts[key] += 1
            else:
                sums[key] = cof.nbytes.copy()
                counts[key] = 1
        for (ps, cls), nb in sums.items():
            yield self.pair_sets[ps], cls, nb, counts[(ps, cls)]
