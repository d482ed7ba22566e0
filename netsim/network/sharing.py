"""Max-min fair bandwidth sharing by progressive filling, vectorised over a sparse incidence.

Given the active flows, the links each crosses (with a weight: the fraction of the flow's
bytes on that link, 1 for an ordinary path, less for a sprayed one), the link capacities and
optional per-flow rate caps, :func:`max_min_rates` returns the max-min fair rates: no flow can
get more without taking from a flow that has less.

Progressive filling: every unfrozen flow's rate rises together from 0.  A link saturates when
the weighted sum of the rates through it reaches its capacity; the flows through it freeze at
the current level.  A flow also freezes when it reaches its cap.  The per-link weight sums of
the unfrozen flows are kept up to date incrementally (subtracting each frozen flow once), so a
round costs O(links) plus the entries of the flows it freezes, and the whole solve costs
O(entries + rounds x links), with one round per distinct bottleneck level.

:func:`refill` resumes the filling from a level: when flows leave, every flow whose rate was
below the lowest rate among the leavers keeps its rate (a leaving flow crossed no link that
saturated below its own rate, so nothing below that level changes), and only the flows at or
above it are filled again.  This is what makes a long cascade of completions cheap.

Two implementations of the same rounds: the compiled loop of
:mod:`netsim.network._fill_kernel` (used when numba is installed) and the vectorised numpy one
below (the fallback, and the reference a randomized test checks the compiled one against).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from netsim.network import _fill_kernel

_REL_TOL = 1e-9


def _csc(flow_ptr: np.ndarray, nz_link: np.ndarray, num_links: int) -> tuple[np.ndarray, np.ndarray]:
    """Flows of each link: (pointer per link, flow per entry), entries grouped by link.

    Large incidences use scipy's linear-time CSR->CSC; small ones a stable sort, which avoids
    scipy's per-call overhead (most engine events touch a handful of flows).
    """
    n = flow_ptr.shape[0] - 1
    if nz_link.size > 20_000:
        m = csr_matrix((np.ones(nz_link.size, dtype=np.int8), nz_link, flow_ptr), shape=(n, num_links)).tocsc()
        return m.indptr.astype(np.int64), m.indices.astype(np.int64)
    order = np.argsort(nz_link, kind="stable")
    ptr = np.zeros(num_links + 1, dtype=np.int64)
    np.cumsum(np.bincount(nz_link, minlength=num_links), out=ptr[1:])
    flows = np.repeat(np.arange(n, dtype=np.int64), np.diff(flow_ptr))
    return ptr, flows[order]


def gather(ptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated index ranges ptr[r]:ptr[r+1] for every r in ``rows``."""
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    if rows.size == 1:
        r = int(rows[0])
        return np.arange(ptr[r], ptr[r + 1], dtype=np.int64)
    starts = ptr[rows]
    lens = ptr[rows + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return np.arange(total, dtype=np.int64) + offs


def distinct(values: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """Distinct values of ``values`` (small ints) in O(len) with a scratch array, no sort."""
    pos = np.arange(values.size, dtype=np.int64)
    stamp[values] = pos
    return values[stamp[values] == pos]


#: Use the compiled filling (:mod:`netsim.network._fill_kernel`) when numba is installed; the
#: numpy path below is the fallback (and the reference the tests compare it with).
USE_COMPILED = True


def refill(
    flow_ptr: np.ndarray,
    nz_link: np.ndarray,
    nz_weight: np.ndarray,
    capacity_Bps: np.ndarray,
    flow_cap_Bps: np.ndarray,
    level0: float = 0.0,
) -> np.ndarray:
    """Progressive filling of a set of flows from ``level0`` on the capacity left to them.

    Args:
        flow_ptr: CSR pointer: the entries of flow ``i`` are ``flow_ptr[i]:flow_ptr[i+1]``.
        nz_link, nz_weight: per entry, the link and the fraction of the flow's bytes on it.
        capacity_Bps: capacity of every link left to these flows (others' load removed).
        flow_cap_Bps: per-flow rate cap (``inf`` for none).
        level0: the level every flow of the set already has (0 for a fresh solve).

    Returns the rate of each flow (>= ``level0`` unless capped below it).
    """
    n = flow_ptr.shape[0] - 1
    rate = np.zeros(n)
    if n == 0:
        return rate
    if USE_COMPILED and _fill_kernel.HAVE_NUMBA:
        return _fill_kernel.fill(
            flow_ptr.astype(np.int64, copy=False),
            nz_link.astype(np.int64, copy=False),
            nz_weight.astype(np.float64, copy=False),
            capacity_Bps.astype(np.float64, copy=False),
            flow_cap_Bps.astype(np.float64, copy=False),
            float(level0),
        )
    return _refill_numpy(flow_ptr, nz_link, nz_weight, capacity_Bps, flow_cap_Bps, float(level0))


def _refill_numpy(
    flow_ptr: np.ndarray,
    nz_link: np.ndarray,
    nz_weight: np.ndarray,
    capacity_Bps: np.ndarray,
    flow_cap_Bps: np.ndarray,
    level0: float,
) -> np.ndarray:
    """The vectorised rounds of :func:`refill` (same arguments; at least one flow)."""
    n = flow_ptr.shape[0] - 1
    num_links = capacity_Bps.shape[0]
    rate = np.zeros(n)
    counts = np.diff(flow_ptr)
    load_w = np.bincount(nz_link, weights=nz_weight, minlength=num_links)
    csc_ptr, csc_flow = _csc(flow_ptr, nz_link, num_links)
    stamp = np.full(n, -1, dtype=np.int64)
    frozen = np.zeros(n, dtype=bool)
    level = level0
    idx = np.flatnonzero(load_w > 0)  # links still carrying unfrozen flows
    rem = np.maximum(capacity_Bps - level * load_w, 0.0)
    # flows without links are limited by their cap only
    free = counts == 0
    rate[free] = flow_cap_Bps[free]
    frozen[free] = True
    # finite caps in increasing order, consumed with a pointer
    cap_order = _by_cap(flow_cap_Bps)
    cap_sorted = flow_cap_Bps[cap_order]
    ncap = cap_order.size
    cap_i = 0
    live = int(n - free.sum())
    while live > 0:
        d_link = np.inf
        share = None
        if idx.size:
            share = rem[idx] / load_w[idx]
            d_link = float(share.min())
        while cap_i < ncap and frozen[cap_order[cap_i]]:
            cap_i += 1
        d_cap = float(cap_sorted[cap_i]) - level if cap_i < ncap else np.inf
        delta = max(min(d_link, d_cap), 0.0)
        if not np.isfinite(delta):
            raise AssertionError("max-min filling found flows limited by nothing")
        level += delta
        newly_parts = []
        if share is not None:
            rem[idx] = np.maximum(rem[idx] - delta * load_w[idx], 0.0)
            if d_link <= delta * (1 + _REL_TOL) + 1e-300:
                sat = idx[share <= d_link * (1 + _REL_TOL) + 1e-300]
                newly_parts.append(_saturate(sat, rem, csc_ptr, csc_flow, frozen))
        if d_cap <= delta * (1 + _REL_TOL):
            j_end = int(np.searchsorted(cap_sorted, level * (1 + _REL_TOL), side="right"))
            cand = cap_order[cap_i:j_end]
            newly_parts.append(cand[~frozen[cand]])
        newly = distinct(np.concatenate(newly_parts), stamp) if newly_parts else np.zeros(0, dtype=np.int64)
        if newly.size == 0:
            # numerical corner: nothing froze; freeze the flows of the tightest link
            assert share is not None
            sat = idx[[int(np.argmin(share))]]
            newly = distinct(_saturate(sat, rem, csc_ptr, csc_flow, frozen), stamp)
        rate[newly] = np.minimum(level, flow_cap_Bps[newly])
        frozen[newly] = True
        live -= int(newly.size)
        if _release(newly, level, rate, flow_ptr, counts, nz_link, nz_weight, load_w, rem):
            idx = idx[load_w[idx] > 1e-9]
    return rate


def _by_cap(flow_cap_Bps: np.ndarray) -> np.ndarray:
    """The flows with a finite cap, by increasing cap (stable)."""
    finite = np.flatnonzero(np.isfinite(flow_cap_Bps))
    return finite[np.argsort(flow_cap_Bps[finite], kind="stable")]


def _saturate(
    sat: np.ndarray, rem: np.ndarray, csc_ptr: np.ndarray, csc_flow: np.ndarray, frozen: np.ndarray
) -> np.ndarray:
    """Mark links ``sat`` saturated (no capacity left) and return their unfrozen flows (with repeats)."""
    rem[sat] = 0.0
    cand = csc_flow[gather(csc_ptr, sat)]
    return cand[~frozen[cand]]


def _release(
    newly: np.ndarray,
    level: float,
    rate: np.ndarray,
    flow_ptr: np.ndarray,
    counts: np.ndarray,
    nz_link: np.ndarray,
    nz_weight: np.ndarray,
    load_w: np.ndarray,
    rem: np.ndarray,
) -> bool:
    """Take the just-frozen flows ``newly`` out of their links' unfrozen load; flows that froze
    below the level (capped) give back what they no longer take.  False if they cross no link."""
    ent = gather(flow_ptr, newly)
    if not ent.size:
        return False
    np.subtract.at(load_w, nz_link[ent], nz_weight[ent])
    below = rate[newly] < level
    if below.any():
        eb = gather(flow_ptr, newly[below])
        back = np.repeat(level - rate[newly[below]], counts[newly[below]])
        np.add.at(rem, nz_link[eb], nz_weight[eb] * back)
    return True


def max_min_rates(
    num_flows: int,
    nz_flow: np.ndarray,
    nz_link: np.ndarray,
    nz_weight: np.ndarray | None,
    capacity_Bps: np.ndarray,
    flow_cap_Bps: np.ndarray | None = None,
) -> np.ndarray:
    """Max-min fair rate (bytes/s) of each flow, from a (flow, link, weight) incidence.

    Args:
        num_flows: number of flows (rates are indexed 0..num_flows-1).
        nz_flow, nz_link, nz_weight: the sparse incidence, one entry per (flow, link) with the
            fraction of the flow's bytes that cross the link (``None``: all ones).
        capacity_Bps: capacity of every link.
        flow_cap_Bps: per-flow rate cap, ``inf`` for none (``None``: no caps).

    A flow that crosses no link gets its cap, or ``inf`` if it has none.
    """
    order = np.argsort(nz_flow, kind="stable")
    ptr = np.zeros(num_flows + 1, dtype=np.int64)
    np.cumsum(np.bincount(nz_flow, minlength=num_flows), out=ptr[1:])
    w = np.ones(nz_flow.size) if nz_weight is None else np.asarray(nz_weight, dtype=float)[order]
    caps = np.full(num_flows, np.inf) if flow_cap_Bps is None else np.asarray(flow_cap_Bps, dtype=float)
    return refill(ptr, np.asarray(nz_link)[order], w, np.asarray(capacity_Bps, dtype=float), caps)
