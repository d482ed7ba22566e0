"""Result records of a network: link statistics over time, and the flat result tables.

:class:`LinkStats` integrates the link loads between engine events (bytes and busy seconds per
link, bytes per link tier per interval).  The functions below turn a network's state into the
tables its methods return: one row per flow (:func:`flow_table`, coflow transfers included),
the flows as numpy columns for aggregates over millions of flows (:func:`flow_columns`), one
row per directed link (:func:`link_table`) and bytes per tier and interval
(:func:`tier_table`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from netsim.network import _fill_kernel, sharing
from netsim.network.coflows import CoflowLedger
from netsim.network.flows import FlowStore
from netsim.network.links import LinkTable


class LinkStats:
    """Bytes and busy time per link, and bytes per tier in every interval between events."""

    def __init__(self, links: LinkTable, t0: float) -> None:
        self.links = links
        self._tier_of_link = np.ascontiguousarray(links.tier, dtype=np.int64)
        self.bytes = np.zeros(links.num_links)
        self.busy_s = np.zeros(links.num_links)
        self.tier_rows: list[tuple[float, float, np.ndarray]] = []
        self.t_last = t0

    def advance(self, now: float, load_Bps: np.ndarray | None) -> None:
        """Account the interval since the last call at link loads ``load_Bps`` (``None``:
        nothing moved)."""
        dt = now - self.t_last
        if dt > 0 and load_Bps is not None:
            ntier = len(self.links.tier_names)
            if _fill_kernel.HAVE_NUMBA and sharing.USE_COMPILED:  # one compiled pass over the links
                tier_bytes: np.ndarray = np.zeros(ntier)
                _fill_kernel.advance(load_Bps, float(dt), self.bytes, self.busy_s, self._tier_of_link, tier_bytes)
            else:
                self.bytes += load_Bps * dt
                self.busy_s[load_Bps > 0] += dt
                tier_bytes = np.bincount(self.links.tier, weights=load_Bps * dt, minlength=ntier)
            self.tier_rows.append((self.t_last, now, tier_bytes))
        self.t_last = now


def flow_columns(store: FlowStore, ledger: CoflowLedger) -> dict[str, Any]:
    """The flows as numpy columns (see :meth:`netsim.network.Network.flow_columns`)."""
    n = store.size
    keep = ~store.carrier.view if store.num_carriers else np.ones(n, dtype=bool)
    cols: dict[str, list[np.ndarray]] = {
        "src": [store.src.view],
        "dst": [store.dst.view],
        "bytes": [store.nbytes.view],
        "traffic_class": [store.cls.view],
        "count": [np.ones(n, dtype=np.int64)],
        "keep": [keep],
    }
    for ps, cls, nb, count in ledger.groups(store.cls.data):
        m = ps.src.size
        cols["src"].append(ps.src)
        cols["dst"].append(ps.dst)
        cols["bytes"].append(nb)
        cols["traffic_class"].append(np.full(m, cls, dtype=np.int32))
        cols["count"].append(np.full(m, count, dtype=np.int64))
        cols["keep"].append(np.ones(m, dtype=bool))
    out: dict[str, Any] = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in cols.items()}
    out["class_names"] = list(store.class_names)
    return out


def flow_table(links: LinkTable, store: FlowStore, ledger: CoflowLedger) -> pd.DataFrame:
    """One row per flow (see :meth:`netsim.network.Network.flow_records`)."""
    ids = store.flow_rows()
    parts = {
        "flow_id": [ids],
        "src": [store.src.view[ids]],
        "dst": [store.dst.view[ids]],
        "bytes": [store.nbytes.view[ids]],
        "start_s": [store.start.view[ids]],
        "end_s": [store.end.view[ids]],
        "traffic_class": [store.cls.view[ids]],
        "label": [store.label.view[ids]],
        "hops": [store.hops.view[ids]],
        "latency_s": [store.latency.view[ids]],
    }
    next_id = store.size
    for cof in ledger.coflows:
        ps = ledger.pair_sets[cof.pair_set]
        m = ps.src.size
        parts["flow_id"].append(np.arange(next_id, next_id + m, dtype=np.int64))
        next_id += m
        parts["src"].append(ps.src)
        parts["dst"].append(ps.dst)
        parts["bytes"].append(cof.nbytes)
        parts["start_s"].append(np.full(m, cof.start_s))
        parts["end_s"].append(cof.drained_s + ps.latency_s)
        parts["traffic_class"].append(np.full(m, store.cls.data[cof.carrier], dtype=np.int32))
        parts["label"].append(np.full(m, store.label.data[cof.carrier], dtype=np.int32))
        parts["hops"].append(ps.hops)
        parts["latency_s"].append(ps.latency_s)
    col = {k: np.concatenate(v) for k, v in parts.items()}
    n = col["flow_id"].size
    names = np.array(links.names, dtype=object)
    cls = np.array(list(store.class_names), dtype=object)
    lab = np.array(list(store.label_names), dtype=object)
    empty = np.array([], dtype=object)
    return pd.DataFrame(
        {
            "flow_id": col["flow_id"],
            "src": names[col["src"]] if n else empty,
            "dst": names[col["dst"]] if n else empty,
            "bytes": col["bytes"],
            "start_s": col["start_s"],
            "end_s": col["end_s"],
            "fct_s": col["end_s"] - col["start_s"],
            "traffic_class": cls[col["traffic_class"]] if n else empty,
            "label": lab[col["label"]] if n else empty,
            "hops": col["hops"],
            "latency_s": col["latency_s"],
        }
    )


def link_table(links: LinkTable, stats: LinkStats, peak_utilization: np.ndarray, makespan_s: float) -> pd.DataFrame:
    """One row per directed link (see :meth:`netsim.network.Network.link_records`)."""
    lt = links
    names = np.array(lt.names, dtype=object)
    span = max(makespan_s, 1e-300)
    return pd.DataFrame(
        {
            "link": lt.link_names(),
            "src": names[lt.src],
            "dst": names[lt.dst],
            "class": np.array(lt.class_names, dtype=object)[lt.link_class] if lt.num_links else [],
            "tier": np.array(lt.tier_names, dtype=object)[lt.tier] if lt.num_links else [],
            "network": np.array(lt.network_names, dtype=object)[lt.network] if lt.num_links else [],
            "capacity_Bps": lt.nominal_Bps.copy(),
            "effective_capacity_Bps": lt.capacity_Bps.copy(),
            "bytes": stats.bytes.copy(),
            "busy_s": stats.busy_s.copy(),
            "peak_utilization": peak_utilization.copy(),
            "mean_utilization": stats.bytes / (lt.capacity_Bps * span),
        }
    )


def tier_table(links: LinkTable, stats: LinkStats) -> pd.DataFrame:
    """Bytes per tier and interval (see :meth:`netsim.network.Network.tier_timeseries`)."""
    lt = links
    ntier = len(lt.tier_names)
    cap = np.bincount(lt.tier, weights=lt.capacity_Bps, minlength=ntier)
    net_of_tier = np.zeros(ntier, dtype=np.int64)
    net_of_tier[lt.tier[::-1]] = lt.network[::-1]
    rows: dict[str, list[Any]] = {"t0_s": [], "t1_s": [], "tier": [], "network": [], "bytes": [], "capacity_Bps": []}
    for t0, t1, tb in stats.tier_rows:
        for k in np.flatnonzero(tb > 0).tolist():
            rows["t0_s"].append(t0)
            rows["t1_s"].append(t1)
            rows["tier"].append(lt.tier_names[k])
            rows["network"].append(lt.network_names[net_of_tier[k]])
            rows["bytes"].append(float(tb[k]))
            rows["capacity_Bps"].append(float(cap[k]))
    return pd.DataFrame(rows)
