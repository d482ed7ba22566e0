"""Checks that a built graph is usable: every accelerator reaches every other one over the
back-end, and every host on the front-end reaches every front-end storage target.

Reachability follows the forwarding rule of :mod:`netsim.topology.model`:

* back-end: strongly connected components of the graph restricted to the node and back-end
  networks without hosts and storage targets.  Accelerators stay in, because a routing strategy
  may relay through one (PXN; the only way between planes of a multi-plane fabric).  Every
  accelerator must be in one component, and every back-end storage target must have a link
  into and a link out of that component.
* front-end: components of the front-end devices (host NICs, Ethernet switches); every host
  with a front-end NIC and every front-end storage target must link into and out of one common
  component.

Components are computed with :func:`scipy.sparse.csgraph.connected_components`, so checking a
16k-accelerator cluster takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from netsim.errors import TopologyError


def _components(g: nx.DiGraph, keep: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, int], np.ndarray]:
    """Strong components of the subgraph induced by nodes whose attributes satisfy ``keep``."""
    index = {n: i for i, n in enumerate(n for n, d in g.nodes(data=True) if keep(d))}
    pairs = [(index[u], index[v]) for u, v in g.edges() if u in index and v in index]
    n = len(index)
    if pairs:
        arr = np.asarray(pairs, dtype=np.int64)
        mat = csr_array((np.ones(len(arr), dtype=np.int8), (arr[:, 0], arr[:, 1])), shape=(n, n))
    else:
        mat = csr_array((n, n), dtype=np.int8)
    _, labels = connected_components(mat, directed=True, connection="strong")
    return index, labels


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _attached(g: nx.DiGraph, name: str, index: dict[str, int], labels: np.ndarray) -> tuple[set[int], set[int]]:
    """Components that ``name`` has a link into, and a link out of."""
    into = {int(labels[index[v]]) for v in g.successors(name) if v in index}
    out_of = {int(labels[index[u]]) for u in g.predecessors(name) if u in index}
    return into, out_of


def check_connected(g: nx.DiGraph, *, source: str | None = None) -> None:
    """Raise :class:`TopologyError` naming what is disconnected (see the module docstring)."""
    accs = [n for n, d in g.nodes(data=True) if d["kind"] == "accelerator"]
    if not accs:
        raise TopologyError("the topology has no accelerators", source=source)

    index, labels = _components(g, lambda d: d["network"] != "frontend" and d["kind"] not in ("host", "storage"))
    acc_labels = [int(labels[index[a]]) for a in accs]
    counts: dict[int, int] = {}
    for lab in acc_labels:
        counts[lab] = counts.get(lab, 0) + 1
    main = max(counts, key=lambda lab: (counts[lab], -acc_labels.index(lab)))
    if len(counts) > 1:
        ref = accs[acc_labels.index(main)]
        cut = [a for a, lab in zip(accs, acc_labels, strict=True) if lab != main]
        raise TopologyError(
            f"the back-end is disconnected: {len(cut)} of {len(accs)} accelerators ({_few(cut)}) "
            f"cannot reach {ref} over node and back-end links (in both directions); add the missing links",
            source=source,
        )
    for s, d in g.nodes(data=True):
        if d["kind"] == "storage" and d["network"] != "frontend":
            into, out_of = _attached(g, s, index, labels)
            if main not in into or main not in out_of:
                raise TopologyError(
                    f"back-end storage {s} is not linked (both ways) to the fabric of the accelerators", source=source
                )

    fe_index, fe_labels = _components(g, lambda d: d["network"] == "frontend" and d["kind"] != "storage")
    if not fe_index:
        return
    endpoints = [
        n
        for n, d in g.nodes(data=True)
        if (d["kind"] == "storage" and d["network"] == "frontend")
        or (d["kind"] == "host" and any(v in fe_index for v in g.successors(n)))
    ]
    if not endpoints:
        return
    common: set[int] | None = None
    for e in endpoints:
        into, out_of = _attached(g, e, fe_index, fe_labels)
        both = into & out_of
        if not both:
            raise TopologyError(
                f"the front-end is disconnected: {e} is not linked both ways to a front-end switch", source=source
            )
        common = both if common is None else common & both
        if not common:
            raise TopologyError(
                f"the front-end is disconnected: {e} cannot reach {endpoints[0]}; every host and front-end "
                "storage target must share one Ethernet network",
                source=source,
            )
