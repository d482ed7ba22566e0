"""Group-wise all-to-all (LocMoE): each member of a group exchanges its share across servers,
then the group all-gathers the shares over the fast intra-server links.

LocMoE (Li et al., arXiv 2401.13920, IJCAI-24) trains PanGu-Sigma with MindSpore, whose
tensor-parallel (model-parallel) group sits on one 8-NPU server and holds the same tokens: in a
plain all-to-all every member of the group sends its own copy across the network.  The
group-wise all-to-all splits the work: member ``k`` of a group sends only the ``k``-th
``1/g`` share of what it has for each destination, and the destination group rebuilds the whole
with an all-gather inside its server (DeepSpeed-MoE does the same for tensor-parallel MoE,
"drop -> all-to-all -> all-gather", microsoft/DeepSpeed PR 5626).  The network carries ``1/g``
of the bytes; the intra-server links carry the all-gather.

Semantics of ``matrix`` (all_to_allv; all_to_all: ``nbytes / n`` to every rank): the devices of
one server form a group of ``g`` (every server holds the same number of the collective's
devices; servers in order of first appearance, members by local index).  ``matrix[i][j]`` is
what rank ``i`` would send rank ``j`` in the plain all-to-all where every member sends its own
copy (what ``direct`` moves); every member of ``j``'s group must end with what its group is
sent.  The plan:

1. for ``i``, ``j`` on different servers, ``i`` sends ``matrix[i][j] / g`` to ``j`` (step 0;
   pairs on the same server send ``matrix[i][j]`` directly);
2. every ``j`` forwards what it received from other servers to each of the ``g - 1`` other
   members of its server, once its receives are in (step 1).

Cost with ``S`` bytes per rank across servers, per-rank network bandwidth ``B_net`` and
intra-server ``B_in``: ``2a + S / (g B_net) + (g - 1) S / (g B_in)`` against ``a + S / B_net``
for ``direct``: the group-wise all-to-all wins whenever a rank's intra-server links are faster
than its network port (LocMoE's HCCS against 100 GbE).  Counted as all-to-all time (one
collective).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim.collectives.exchanges import a2a_matrix
from netsim.collectives.plan import PlanBuilder
from netsim.collectives.registry import PlanRequest, register_algorithm

__all__ = ["groupwise_all_to_all"]


@register_algorithm(
    ("all_to_all", "all_to_allv"),
    "groupwise",
    description="LocMoE group-wise: each server member sends its 1/g share, then an all-gather inside the server",
)
def groupwise_all_to_all(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    grid = req.view.require_grid(req.devices, "groupwise")
    servers, g = grid.shape
    server = np.empty(req.n, dtype=np.int64)
    server[grid.ravel()] = np.repeat(np.arange(servers), g)
    m = a2a_matrix(req.n, req.nbytes, req.matrix)
    cross = server[:, None] != server[None, :]
    i, j = np.nonzero((m > 0) & ~cross)
    b.add_batch(i, j, m[i, j], 0)
    i, j = np.nonzero((m > 0) & cross)
    ids = b.add_batch(i, j, m[i, j] / g, 0)
    if g == 1 or ids.size == 0:
        return {"servers": servers, "group": g}
    received = np.bincount(j, weights=m[i, j] / g, minlength=req.n)
    # the all-gather: each receiver forwards its share to its server's other members, after its
    # receives (deps: the ids of the transfers into it)
    order = np.argsort(j, kind="stable")
    starts = np.searchsorted(j[order], np.arange(req.n), side="left")
    ends = np.searchsorted(j[order], np.arange(req.n), side="right")
    width = int((ends - starts).max())
    for dst in np.flatnonzero(received > 0):
        into = ids[order[starts[dst] : ends[dst]]]
        peers = grid[server[dst]]
        peers = peers[peers != dst]
        deps = np.full((peers.size, width), -1, dtype=np.int64)
        deps[:, : into.size] = into
        b.add_batch(np.full(peers.size, dst, dtype=np.int64), peers, float(received[dst]), 1, deps)
    return {"servers": servers, "group": g}
