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
* the per-link loads of the rows not refilled are kept incrementally (summed afresh every
  :attr:`ActiveFlows.RESUM_LOADS_EVERY` refills, which bounds floating-point drift).
"""

from __future__ import annotations

import numpy as np

from netsim.network.sharing import gather, refill

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
    #: after this many incremental refills, the link loads are summed afresh from the flow
    #: rates (bounds floating-point drift of the incrementally maintained loads)
    RESUM_LOADS_EVERY = 64

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
        self._need_full = False  # new flows arrived: solve from level 0
        self._refill_from = np.inf  # flows left: refill from the lowest rate among them
        self._incremental_runs = 0
        self.num_rate_updates = 0

    @property
    def stale(self) -> bool:
        """Flows started or left since the last :meth:`recompute`."""
        return self._need_full or bool(np.isfinite(self._refill_from))

    def next_drain(self) -> float:
        """The earliest projected drain time (``inf`` when nothing moves)."""
        return float(self.t_fin.min()) if self.num_alive and self.t_fin.size else np.inf

    # ------------------------------------------------------------------ rows in and out
    def add(self, fids: np.ndarray, work: np.ndarray, cap: np.ndarray, start: np.ndarray, now: float,
            counts: np.ndarray, nz_link: np.ndarray, nz_w: np.ndarray) -> None:
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
        self._new_rows += n
        if self.nz_link.size:
            self.nz_link = np.concatenate([self.nz_link, nz_link])
            self.nz_w = np.concatenate([self.nz_w, nz_w])
            self.owner = np.concatenate([self.owner, owner])
        else:  # the first batch (or after everything left): no copy
            self.nz_link, self.nz_w, self.owner = nz_link, nz_w, owner
        self.num_alive += n
        self._need_full = True

    def drained(self, now: float) -> np.ndarray:
        """Remove the rows drained by ``now``; their flow ids."""
        if not self.num_alive:
            return np.zeros(0, dtype=np.int64)
        done = self.t_done <= now
        if not done.any():
            return np.zeros(0, dtype=np.int64)
        rows = np.flatnonzero(done)
        self._refill_from = min(self._refill_from, float(self.rate[rows].min()))
        ent = gather(self.ptr, rows)
        links = self.nz_link[ent]
        self._mark_dirty(links)
        self.link_load -= np.bincount(links, weights=self.nz_w[ent] * np.repeat(self.rate[rows], self.counts[rows]),
                                      minlength=self.num_links)
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
        for name in ("fid", "alive", "rem_at", "t_at", "t_fin", "t_done", "rate", "cap", "start"):
            setattr(self, name, getattr(self, name)[rows])

    # ------------------------------------------------------------------ rates
    def _component(self, seed_links: np.ndarray) -> np.ndarray | None:
        """Rows of the connected component of the flow-link graph around ``seed_links`` (a mask),
        or ``None`` when it is most of the active flows (then the next searches back off
        exponentially: one giant component, as in a large all-to-all, stays one).

        Max-min fair rates decompose over these components: flows that share no link,
        directly or through other flows, with a flow that started or left keep their rates.
        Found by a breadth-first search over the CSR store, one vectorised pass per level.
        """
        nrows = self.alive.size
        if seed_links.size == 0 or self.num_alive < 64 or self.COMPONENT_MAX_SHARE <= 0:
            return None
        if self._comp_skip > 0:  # recent searches found one giant component: back off
            self._comp_skip -= 1
            return None
        limit = self.COMPONENT_MAX_SHARE * self.num_alive
        mark = np.zeros(self.num_links, dtype=bool)
        mark[seed_links] = True
        frontier = mark.copy()
        in_comp = np.zeros(nrows, dtype=bool)
        size = 0
        while True:
            cand = self.owner[frontier[self.nz_link]]
            cand = cand[self.alive[cand] & ~in_comp[cand]]
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
            frontier = np.zeros(self.num_links, dtype=bool)
            frontier[self.nz_link[gather(self.ptr, new_rows)]] = True
            frontier &= ~mark
            if not frontier.any():
                self._comp_fails = 0
                return in_comp
            mark |= frontier

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
            self._incremental_runs = 0
            rows = np.flatnonzero(self.alive)
            # after compaction the rows are usually all alive: use the store without a copy
            ent = slice(None) if rows.size == self.counts.size else gather(self.ptr, rows)
            base = self.capacity_Bps
            fixed = np.zeros(nl)
        else:
            self._incremental_runs += 1
            if self._incremental_runs % self.RESUM_LOADS_EVERY == 0:
                every = np.repeat(self.rate, self.counts)  # dead rows have rate 0
                self.link_load = np.bincount(self.nz_link, weights=self.nz_w * every, minlength=nl).astype(np.float64)
            sel = self.alive & (self.rate >= level0 * (1 - 1e-9))
            if comp is not None:
                sel &= comp
            rows = np.flatnonzero(sel)
            if rows.size == 0:
                return  # every leaver was faster than everyone left: nobody's rate changes
            ent = gather(self.ptr, rows)
            sub_load = np.bincount(self.nz_link[ent], weights=self.nz_w[ent] *
                                   np.repeat(self.rate[rows], self.counts[rows]), minlength=nl)
            fixed = np.maximum(self.link_load - sub_load, 0.0)
            if full:  # the component's links carry none of the other flows (closure)
                fixed[self.nz_link[ent]] = 0.0
            base = np.maximum(self.capacity_Bps - fixed, 0.0)
        if isinstance(ent, slice):
            counts, lk, w = self.counts, self.nz_link, self.nz_w
        else:
            counts, lk, w = self.counts[rows], self.nz_link[ent], self.nz_w[ent]
        self._refill_rows(rows, counts, lk, w, base, level0, now)
        self.link_load = fixed + np.bincount(lk, weights=w * np.repeat(self.rate[rows], counts), minlength=nl)
        np.maximum(self.link_peak, self.link_load / self.capacity_Bps, out=self.link_peak)

    def _refill_rows(self, rows: np.ndarray, counts: np.ndarray, lk: np.ndarray, w: np.ndarray, base: np.ndarray,
                     level0: float, now: float) -> None:
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
