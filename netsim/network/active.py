"""The moving flows and their max-min fair rates: the engine's wrapper of the sharing kernel.

:class:`ActiveFlows` holds the flows that are moving, one *row* each (rows in order of start,
flow ids ascending within a batch), with the links every row crosses as a CSR store: the
entries of row ``i`` are ``ptr[i]:ptr[i+1]`` of ``nz_link`` / ``nz_w`` (link id, fraction of the
flow's bytes on it).  Finished rows stay as dead entries (``alive`` false, rate 0) until they
are at least half of the rows, then the store is compacted.

Bytes are tracked lazily: a row's remaining bytes at time t are ``rem_at - rate * (t - t_at)``
and ``t_fin`` is when it drains at its rate, so an event touches only the rows whose rate
changed.  A flow counts as drained within a relative 1e-9 of its own duration (``t_done``):
that batches completions that float rounding would split, without ending short flows early.

Rates come from :func:`netsim.network.sharing.refill` (progressive filling).  A recompute after
flows started or left refills only what can change:

* when flows only left, the rows at or above the lowest rate among the leavers (nothing below
  that level can change);
* only inside the connected component of the flow-link graph around the links of the flows
  that started or left, unless that component is most of the rows (then searching costs more
  than it saves, and the next searches back off exponentially);
* the per-link loads of the rows not refilled are kept incrementally (summed afresh once the
  entries updated since the last sum are as many as the store holds, which bounds the
  floating-point drift at O(1) per update; a link that no live row crosses carries 0).

Nothing in an event passes over every moving flow: the rows that drained by now and the rows
at or above a rate come from two ordered indexes (:mod:`netsim.network.keyindex`), so an event
costs what it changes (plus O(links)), and the exact model costs O(flows log flows) in all.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from netsim.network.keyindex import KeyIndex
from netsim.network.sharing import distinct, gather, refill

_TIME_REL_TOL = 1e-9


class ActiveFlows:
    """The moving flows of one network, their links, rates and projected drain times.

    Args:
        capacity_Bps: effective capacity of every link.
    """

    #: a refill is restricted to the flows coupled (through shared links, transitively) to the
    #: flows that started or left, unless that component holds more than this share of the
    #: active flows (then finding it costs more than it saves); 0 disables the search
    COMPONENT_MAX_SHARE = 0.5

    def __init__(self, capacity_Bps: np.ndarray) -> None:
        self.capacity_Bps = capacity_Bps
        self.num_links = int(capacity_Bps.shape[0])
        self.fid = np.zeros(0, dtype=np.int64)  # flow id of each row
        self.alive = np.zeros(0, dtype=bool)
        self.rem_at = np.zeros(0)
        self.t_at = np.zeros(0)
        self.t_fin = np.zeros(0)
        self.t_done = np.zeros(0)  # drain time minus the completion tolerance
        self.rate = np.zeros(0)
        self.cap = np.zeros(0)  # rate cap of each row
        self.start = np.zeros(0)  # start time of each row's flow
        self.counts = np.zeros(0, dtype=np.int64)
        self.ptr = np.zeros(1, dtype=np.int64)
        self.nz_link = np.zeros(0, dtype=np.int64)
        self.nz_w = np.zeros(0)
        self.owner = np.zeros(0, dtype=np.int32)  # row of every entry
        self.num_alive = 0
        #: weighted sum of the rates on every link, and the peak of load / capacity seen
        self.link_load = np.zeros(self.num_links)
        self.link_peak = np.zeros(self.num_links)
        # links whose flows started or left since the last refill, and how many rows started
        self._dirty = np.zeros(0, dtype=bool)
        self._new_rows = 0
        self._comp_fails = 0  # consecutive component searches that found most of the flows
        self._comp_skip = 0  # events to skip the search for
        self._fail_alive = 0  # moving rows at the last failed search, and whether rows came since
        self._added_since_fail = False
        self._csc: tuple[np.ndarray, np.ndarray] | None = None  # rows of every link, see _rows_of_links
        self._seen = np.zeros(0, dtype=bool)  # scratch of the component search (all false between calls)
        self._stamp_rows = np.zeros(0, dtype=np.int64)
        self._need_full = False  # new flows arrived: solve from level 0
        self._refill_from = np.inf  # flows left: refill from the lowest rate among them
        # entries whose rate was added to or taken from the link loads since they were last
        # summed afresh; at as many as the store holds they are summed again (bounds the
        # floating-point drift of the incremental loads at O(1) per entry)
        self._touched = 0
        self._link_rows = np.zeros(self.num_links, dtype=np.int64)  # live rows crossing each link
        # drained-by and rate orders of the rows (see keyindex): events cost what they change
        self._by_done = KeyIndex()
        self._by_rate = KeyIndex(negate=True)
        self.num_rate_updates = 0

    @property
    def stale(self) -> bool:
        """Flows started or left since the last :meth:`recompute`."""
        return self._need_full or bool(np.isfinite(self._refill_from))

    def next_drain(self) -> float:
        """The earliest projected drain time (``inf`` when nothing moves).

        Found from the drain order: a row's drain time ``t_fin`` is at least its ``t_done``, so
        the earliest ``t_fin`` is among the rows whose ``t_done`` is at most the ``t_fin`` of
        the row with the earliest ``t_done``."""
        if not self.num_alive:
            return np.inf
        _, row = self._by_done.first(self.t_done, self.alive)
        if row < 0:
            return np.inf
        cand = self._by_done.at_most(float(self.t_fin[row]), self.t_done, self.alive)
        return float(self.t_fin[cand].min())

    # ------------------------------------------------------------------ rows in and out
    def add(
        self,
        fids: np.ndarray,
        work: np.ndarray,
        cap: np.ndarray,
        start: np.ndarray,
        now: float,
        counts: np.ndarray,
        nz_link: np.ndarray,
        nz_w: np.ndarray,
    ) -> None:
        """Start flows ``fids`` (ascending): ``work`` bytes to drain each, rate caps, start
        times, and their links (``counts`` entries per flow, grouped by flow in ``fids`` order)."""
        self.compact()
        n = fids.size
        self.fid = np.concatenate([self.fid, fids])
        self.alive = np.concatenate([self.alive, np.ones(n, dtype=bool)])
        self.rem_at = np.concatenate([self.rem_at, work])
        self.t_at = np.concatenate([self.t_at, np.full(n, now)])
        self.t_fin = np.concatenate([self.t_fin, np.full(n, np.inf)])
        self.t_done = np.concatenate([self.t_done, np.full(n, np.inf)])
        self.rate = np.concatenate([self.rate, np.zeros(n)])
        self.cap = np.concatenate([self.cap, cap])
        self.start = np.concatenate([self.start, start])
        first_row = self.counts.size
        self.counts = np.concatenate([self.counts, counts])
        self.ptr = np.concatenate([self.ptr, self.ptr[-1] + np.cumsum(counts)])
        owner = np.repeat(np.arange(first_row, first_row + n, dtype=np.int32), counts)
        self._mark_dirty(nz_link)
        self._link_rows += np.bincount(nz_link, minlength=self.num_links)
        self._new_rows += n
        if self.nz_link.size:
            self.nz_link = np.concatenate([self.nz_link, nz_link])
            self.nz_w = np.concatenate([self.nz_w, nz_w])
            self.owner = np.concatenate([self.owner, owner])
        else:  # the first batch (or after everything left): no copy
            self.nz_link, self.nz_w, self.owner = nz_link, nz_w, owner
        self.num_alive += n
        self._need_full = True
        self._csc = None
        self._added_since_fail = True

    def drained(self, now: float) -> np.ndarray:
        """Remove the rows drained by ``now``; their flow ids."""
        if not self.num_alive:
            return np.zeros(0, dtype=np.int64)
        rows = self._by_done.at_most(now, self.t_done, self.alive, drop=True)
        if not rows.size:
            return np.zeros(0, dtype=np.int64)
        self._refill_from = min(self._refill_from, float(self.rate[rows].min()))
        ent = gather(self.ptr, rows)
        links = self.nz_link[ent]
        self._mark_dirty(links)
        used, k = np.unique(links, return_inverse=True)  # the links they crossed (a few of all)
        self.link_load[used] -= np.bincount(k, weights=self.nz_w[ent] * np.repeat(self.rate[rows], self.counts[rows]))
        self._touched += ent.size
        self._link_rows[used] -= np.bincount(k)
        self.link_load[used[self._link_rows[used] == 0]] = 0.0  # no rounding residue on a link nobody crosses
        self.alive[rows] = False
        self.rate[rows] = 0.0
        self.rem_at[rows] = 0.0
        self.t_fin[rows] = np.inf
        self.t_done[rows] = np.inf
        self.num_alive -= rows.size
        return self.fid[rows]

    def _mark_dirty(self, links: np.ndarray) -> None:
        if self._dirty.size == 0:
            self._dirty = np.zeros(self.num_links, dtype=bool)
        self._dirty[links] = True

    def compact(self) -> None:
        """Drop finished rows (when they are at least half of the rows)."""
        dead = self.fid.size - self.num_alive
        if dead == 0 or dead < self.num_alive:
            return
        rows = np.flatnonzero(self.alive)
        ent = gather(self.ptr, rows)
        self.nz_link = self.nz_link[ent]
        self.nz_w = self.nz_w[ent]
        self.counts = self.counts[rows]
        self.ptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.ptr[1:])
        self.owner = np.repeat(np.arange(rows.size, dtype=np.int32), self.counts)
        self._csc = None
        for name in ("fid", "alive", "rem_at", "t_at", "t_fin", "t_done", "rate", "cap", "start"):
            setattr(self, name, getattr(self, name)[rows])
        new_of_old = np.full(dead + rows.size, -1, dtype=np.int64)
        new_of_old[rows] = np.arange(rows.size)
        self._by_done.renumber(new_of_old)
        self._by_rate.renumber(new_of_old)

    def _reindex(self) -> None:
        """Order every row afresh (rows were renumbered, or all of them refilled)."""
        every = np.flatnonzero(self.alive)
        self._by_done.clear()
        self._by_done.push(every, self.t_done[every], self.t_done, self.alive)
        self._by_rate.clear()
        self._by_rate.push(every, self.rate[every], self.rate, self.alive)

    # ------------------------------------------------------------------ rates
    def _rows_of_links(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows crossing each link (CSC: ``rows[ptr[l]:ptr[l+1]]``), built when the store
        changed since the last call (finished rows stay in it until compaction)."""
        if self._csc is None:  # scipy's CSR -> CSC transpose: linear time, rows ascending per link
            m = csr_matrix(
                (np.ones(self.nz_link.size, dtype=np.int8), self.nz_link, self.ptr),
                shape=(self.counts.size, self.num_links),
            ).tocsc()
            self._csc = (m.indptr.astype(np.int64), m.indices)  # row ids as scipy gives them (int32)
        return self._csc

    def _stamp(self) -> np.ndarray:
        """A scratch array of at least one slot per row (for :func:`distinct`)."""
        if self._stamp_rows.size < self.alive.size:
            self._stamp_rows = np.zeros(self.alive.size, dtype=np.int64)
        return self._stamp_rows

    def _component(self, seed_links: np.ndarray) -> np.ndarray | None:
        """Rows (ascending) of the connected component of the flow-link graph around
        ``seed_links``, or ``None`` when it is most of the active flows (then the next searches
        back off exponentially, and wait until flows arrive or half of the moving flows have
        left: one giant component, as in a large all-to-all, stays one).

        Max-min fair rates decompose over these components: flows that share no link,
        directly or through other flows, with a flow that started or left keep their rates.
        Found by a breadth-first search over the rows of each link and the links of each row,
        one vectorised pass per level, in time proportional to the component.
        """
        if seed_links.size == 0 or self.num_alive < 64 or self.COMPONENT_MAX_SHARE <= 0:
            return None
        if self._comp_skip > 0:  # recent searches found one giant component: back off
            self._comp_skip -= 1
            return None
        if self._comp_fails and not self._added_since_fail and 2 * self.num_alive > self._fail_alive:
            return None  # no flow arrived and most of the giant component is still there
        limit = self.COMPONENT_MAX_SHARE * self.num_alive
        self.compact()  # finished rows would be visited too: drop them once they are half
        link_ptr, link_rows = self._rows_of_links()
        mark = np.zeros(self.num_links, dtype=bool)
        mark[seed_links] = True
        frontier = seed_links
        found: list[np.ndarray] = []
        if self._seen.size < self.alive.size:  # scratch: all false between searches
            self._seen = np.zeros(self.alive.size, dtype=bool)
        seen = self._seen
        size = 0
        try:
            while frontier.size:
                cand = link_rows[gather(link_ptr, frontier)]
                cand = cand[self.alive[cand] & ~seen[cand]]
                seen[cand] = True
                if cand.size > self.alive.size >> 3:  # a large level: a pass over every row is cheaper
                    fresh_rows = np.zeros(self.alive.size, dtype=bool)
                    fresh_rows[cand] = True
                    cand = np.flatnonzero(fresh_rows)
                else:
                    cand = distinct(cand, self._stamp())
                if cand.size == 0:
                    break
                found.append(cand)
                size += cand.size
                if size > limit:
                    # a failed search costs what it visited: after a failure skip 1, 3, 7, ... events
                    self._comp_fails = min(self._comp_fails + 1, 30)
                    self._comp_skip = (1 << self._comp_fails) - 1
                    self._fail_alive, self._added_since_fail = self.num_alive, False
                    return None
                fresh = np.zeros(self.num_links, dtype=bool)
                fresh[self.nz_link[gather(self.ptr, cand)]] = True
                fresh &= ~mark
                mark |= fresh
                frontier = np.flatnonzero(fresh)
        finally:
            for rows in found:
                seen[rows] = False
        self._comp_fails = 0
        return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def recompute(self, now: float) -> None:
        """New rates after flows started or left (see the module doc for what is refilled)."""
        self.num_rate_updates += 1
        nl = self.num_links
        full = self._need_full
        self._need_full = False
        level0 = self._refill_from
        self._refill_from = np.inf
        if not self.num_alive:
            self.link_load = np.zeros(nl)
            return
        dirty = np.flatnonzero(self._dirty) if self._dirty.size else np.zeros(0, dtype=np.int64)
        self._dirty = np.zeros(0, dtype=bool)
        new_rows, self._new_rows = self._new_rows, 0
        if full:
            self.compact()
            level0 = 0.0
        # a component holds every flow that just started: skip the search when that is most
        comp = None if new_rows > self.COMPONENT_MAX_SHARE * self.num_alive else self._component(dirty)
        if full and comp is None:
            self._touched = 0
            rows = np.flatnonzero(self.alive)
            # after compaction the rows are usually all alive: use the store without a copy
            ent = slice(None) if rows.size == self.counts.size else gather(self.ptr, rows)
            base = self.capacity_Bps
            fixed = np.zeros(nl)
        else:
            if self._touched >= self.nz_link.size:
                every = np.repeat(self.rate, self.counts)  # dead rows have rate 0
                self.link_load = np.bincount(self.nz_link, weights=self.nz_w * every, minlength=nl).astype(np.float64)
                self._touched = 0
            if full:  # a component around new flows: all of its rows, from level 0
                assert comp is not None
                rows = comp
            else:  # flows left: the rows at or above the lowest leaving rate (of the component)
                rows = self._by_rate.at_most(-(level0 * (1 - 1e-9)), self.rate, self.alive)
                if comp is not None:
                    rows = np.intersect1d(rows, comp, assume_unique=True)
            if rows.size == 0:
                return  # every leaver was faster than everyone left: nobody's rate changes
            ent = gather(self.ptr, rows)
            self._touched += ent.size
            sub_load = np.bincount(
                self.nz_link[ent], weights=self.nz_w[ent] * np.repeat(self.rate[rows], self.counts[rows]), minlength=nl
            )
            fixed = np.maximum(self.link_load - sub_load, 0.0)
            if full:  # the component's links carry none of the other flows (closure)
                fixed[self.nz_link[ent]] = 0.0
            base = np.maximum(self.capacity_Bps - fixed, 0.0)
        if isinstance(ent, slice):
            counts, lk, w = self.counts, self.nz_link, self.nz_w
        else:
            counts, lk, w = self.counts[rows], self.nz_link[ent], self.nz_w[ent]
        self._refill_rows(rows, counts, lk, w, base, level0, now)
        if rows.size == self.num_alive:
            self._reindex()
        else:
            self._by_done.push(rows, self.t_done[rows], self.t_done, self.alive)
            self._by_rate.push(rows, self.rate[rows], self.rate, self.alive)
        self.link_load = fixed + np.bincount(lk, weights=w * np.repeat(self.rate[rows], counts), minlength=nl)
        np.maximum(self.link_peak, self.link_load / self.capacity_Bps, out=self.link_peak)

    def _refill_rows(
        self,
        rows: np.ndarray,
        counts: np.ndarray,
        lk: np.ndarray,
        w: np.ndarray,
        base: np.ndarray,
        level0: float,
        now: float,
    ) -> None:
        """New max-min rates for the rows ``rows`` (links ``lk`` with weights ``w``, ``counts``
        entries per row; ``base``: capacity left per link id of ``lk``), their bytes settled at
        the old rates and their drain times projected at the new ones."""
        ptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        rate = refill(ptr, lk, w, base, self.cap[rows], level0)
        # settle the bytes sent at the old rates, then project the drain at the new ones
        rem = np.maximum(self.rem_at[rows] - self.rate[rows] * (now - self.t_at[rows]), 0.0)
        self.rem_at[rows] = rem
        self.t_at[rows] = now
        self.rate[rows] = rate
        with np.errstate(divide="ignore", invalid="ignore"):
            t_fin = np.where(rate > 0, now + rem / rate, np.inf)
            self.t_fin[rows] = t_fin
            self.t_done[rows] = t_fin - np.maximum(_TIME_REL_TOL * (t_fin - self.start[rows]), 1e-15)
