"""The built-in collective algorithms (registered in :mod:`netsim.collectives.registry`).

The all-to-all(v) and send/recv plans are in :mod:`netsim.collectives.exchanges`; the phases
they are built from (rings, trees, stars, switch trees) in :mod:`netsim.collectives.phases`.

Cost of each on ``n`` ranks, size ``S``, per-hop latency ``a`` (path latency plus the per-step
software latency), link bandwidth ``B``, when nothing else shares the links (alpha-beta model;
the simulator reproduces these on ideal topologies, see the tests):

================================  ================================================================
algorithm                          time
================================  ================================================================
all_reduce ring                    ``2(n-1) a + 2(n-1)/n S/B``  (``k`` chunks: ``(2(n-1)+k-1) a``)
all_reduce tree (double binary)    ``(2h + k - 1)(a + S/(2kB))``, ``h`` the tree height
all_reduce halving_doubling        ``2 log2(p) a + 2(p-1)/p S/B`` (+ ``2(a + S/B)`` if ``n != p``)
all_reduce hierarchical            ring reduce-scatter in servers, ring all-reduce of ``S/G``
                                   among same-index GPUs across servers, ring all-gather
all_reduce nvls (one server)       ``(k + 1)(a + S/(kB))``: up to the reducing switch and back
all_reduce sharp / nvls (servers)  as hierarchical, the inter-server (sharp) or intra-server
                                   (nvls) phase in the switches; phases pipelined per chunk
reduce_scatter / all_gather ring   ``(n-1) a + (n-1)/n S/B``
broadcast / reduce ring (chain)    ``(n - 1 + k - 1)(a + S/(kB))``
all_to_all direct                  ``a + (n-1)/n S/B`` (every pair at once)
all_to_all pairwise                ``(n-1)(a + S/(nB))``
================================  ================================================================

Conventions shared by all algorithms:

* **Ranks** are the devices in the order given; a *server* (graph attribute ``node``) holds the
  devices with the same ``node``.  Algorithms that need servers (hierarchical, sharp, nvls,
  hierarchical/deepep all-to-all) take servers in order of first appearance and the devices
  inside a server by local index, and need the same number of devices on every server.
* **Channels** (rings): a ring collective that spans several servers runs one ring per GPU of
  a server (as NCCL runs one channel per NIC), each on ``S / channels`` bytes.  Ring ``c``
  visits the GPUs of even servers in the order ``c, c+1, ...`` and of odd servers in the
  reverse order, so every server-to-server hop links two GPUs with the same local index
  (the same rail; with an odd number of servers the closing hop changes rail).
* **Chunks and pipelining**: the data of one step is split into ``k`` chunks.  Chunk ``j`` of
  a step waits for chunk ``j`` of the previous step (the data it forwards) and for chunk
  ``j-1`` of its own step on the same link (chunks leave in order), so chunks stream through
  trees and chains; in multi-phase plans (hierarchical, sharp, nvls) chunk ``j`` enters the
  next phase when it is through the previous one.  Trees, chains and in-network reductions
  are pipelined by default
  (chunks of :data:`~netsim.collectives.registry.DEFAULT_PIPELINE_CHUNK_BYTES`); rings are
  not (in a flow model every link of a ring is busy at every step, so chunking a ring only
  adds ``k - 1`` latencies), unless ``chunk_bytes`` is given.
* **In-network reduction** is modelled as transfers to and from the switch that reduces:
  each GPU sends its data up a tree of switches (the NVSwitch ``n<k>.nvsw`` for NVLS; the
  back-end switches for SHARP, reduced at every switch) and receives the result back down.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim.collectives.phases import (
    btree_parents,
    double_binary_trees,
    grid_of,
    nvswitch_of,
    ring_orders,
    ring_phase,
    ring_stream_piped,
    sharp_phase,
    star_phase,
    tree_pipeline,
)
from netsim.collectives.plan import CollectiveError, PlanBuilder
from netsim.collectives.registry import PlanRequest, register_algorithm


# ---------------------------------------------------------------------------------------------
# all-reduce, reduce-scatter, all-gather
# ---------------------------------------------------------------------------------------------
@register_algorithm(
    "all_reduce", "ring", default=True, description="ring reduce-scatter + all-gather, one ring per channel"
)
def ring_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    rings = ring_orders(req)
    count, n = rings.shape
    block = req.nbytes / (count * n)
    k = req.chunks(block, pipelined=False)
    ring_phase(b, rings, 2 * (n - 1), block, k, 0)
    return {"channels": count, "chunks": k}


@register_algorithm("reduce_scatter", "ring", default=True, description="ring reduce-scatter")
def ring_reduce_scatter(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    rings = ring_orders(req)
    count, n = rings.shape
    block = req.nbytes / (count * n)
    k = req.chunks(block, pipelined=False)
    ring_phase(b, rings, n - 1, block, k, 0)
    return {"channels": count, "chunks": k}


@register_algorithm("all_gather", "ring", default=True, description="ring all-gather")
def ring_all_gather(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    return ring_reduce_scatter(req, b) or {}  # same traffic: n-1 steps of nbytes/n per rank


@register_algorithm(
    "all_reduce", "flat_tree", description="one double binary tree over all ranks, pipelined in chunks (not NCCL's)"
)
def flat_tree_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    half = req.nbytes / 2
    k = req.chunks(half, pipelined=True)
    for parents in double_binary_trees(n):
        tree_pipeline(b, list(range(n)), parents, half, k, reduce=True, bcast=True)
    return {"chunks": k}


@register_algorithm(
    "all_reduce",
    "halving_doubling",
    description="recursive halving reduce-scatter + doubling all-gather (Rabenseifner)",
)
def halving_doubling_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n, size = req.n, req.nbytes
    p = 1 << (n.bit_length() - 1)
    extra = n - p
    last: dict[int, list[int]] = {r: [] for r in range(n)}
    step = 0
    if extra:  # fold: the first 2*extra ranks pair up, even ranks hand their data to odd ones
        for i in range(extra):
            last[2 * i + 1] = [b.add(2 * i, 2 * i + 1, size, (), 0)]
        step = 1
    part = [2 * i + 1 for i in range(extra)] + list(range(2 * extra, n))
    m = p.bit_length() - 1
    dists = [p >> (q + 1) for q in range(m)]
    sizes = [size / (2 << q) for q in range(m)]
    for dist, chunk in [*zip(dists, sizes, strict=True), *reversed(list(zip(dists, sizes, strict=True)))]:
        new: dict[int, list[int]] = {}
        for v in range(p):
            s, d = part[v], part[v ^ dist]
            # an exchange (sendrecv): it starts when both partners finished their previous step
            t = b.add(s, d, chunk, list(dict.fromkeys([*last[s], *last[d]])), step)
            new.setdefault(s, []).append(t)
            new.setdefault(d, []).append(t)
        last.update(new)
        step += 1
    for i in range(extra):
        b.add(2 * i + 1, 2 * i, size, last[2 * i + 1], step)
    return {"power_of_two": p}


def _hier_all_reduce(req: PlanRequest, b: PlanBuilder, inter: str) -> dict[str, Any]:
    """Reduce-scatter inside servers, all-reduce of ``S/G`` among same-index GPUs across servers
    (``inter``: ``ring`` or ``sharp``), all-gather inside servers; with ``k`` chunks (the same
    in every phase) chunk ``j`` moves to the next phase as soon as it is through the previous."""
    grid = grid_of(req, f"hierarchical/{inter}")
    nodes, per = grid.shape
    s = req.nbytes
    # the phases pipeline chunk by chunk (as NCCL's loop over slices of the buffer does)
    k = req.chunks(s / per, pipelined=True)
    one = k == 1  # phases that are not chunk-pipelined with each other may be collapsed
    if b.stream and not one and inter == "ring":  # three pipelined ring phases: their stream form
        piped = ring_stream_piped(b, grid, per - 1, s / per, k, 0, None)
        piped = ring_stream_piped(b, grid.T, 2 * (nodes - 1), s / (per * nodes), k, b.next_step, piped)
        ring_stream_piped(b, grid, per - 1, s / per, k, b.next_step, piped)
        return {"servers": nodes, "per_server": per, "chunks": k}
    _, fr = ring_phase(b, grid, per - 1, s / per, k, 0, collapse=one)
    if inter == "ring":
        _, fr = ring_phase(b, grid.T, 2 * (nodes - 1), s / (per * nodes), k, b.next_step, fr, collapse=one)
    else:
        fr = sharp_phase(b, req, [list(col) for col in grid.T.tolist()], s / per, k, b.next_step, fr)
    ring_phase(b, grid, per - 1, s / per, k, b.next_step, fr, collapse=one)
    return {"servers": nodes, "per_server": per, "chunks": k}


@register_algorithm(
    "all_reduce",
    "hierarchical",
    description="intra-server reduce-scatter, inter-server ring all-reduce, intra all-gather",
)
def hierarchical_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    return _hier_all_reduce(req, b, "ring")


@register_algorithm(
    "all_reduce", "sharp", description="in-network reduction in the back-end switches (InfiniBand SHARP)"
)
def sharp_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    grid = grid_of(req, "sharp")
    if grid.shape[0] < 2:
        raise CollectiveError(
            "sharp reduces in the back-end fabric and needs devices on at least two servers "
            "(use nvls inside one server)",
            field="algo",
        )
    return _hier_all_reduce(req, b, "sharp")


def _nvls(req: PlanRequest, b: PlanBuilder, inter: str) -> dict[str, Any]:
    grid = grid_of(req, "nvls")
    nodes, per = grid.shape
    s = req.nbytes
    sw = [b.node(nvswitch_of(req.view, req.view.node_of[req.devices[int(row[0])]])) for row in grid]
    if nodes == 1:
        k = req.chunks(s, pipelined=True)
        star_phase(b, [(grid[0].tolist(), sw[0])], s, s, k, 0, None)
        return {"chunks": k}
    k = req.chunks(s / per, pipelined=True)
    groups = [(row.tolist(), sw[i]) for i, row in enumerate(grid)]
    fr = star_phase(b, groups, s, s / per, k, 0, None)  # NVLS reduce-scatter
    if inter == "ring":
        _, fr2 = ring_phase(b, grid.T, 2 * (nodes - 1), s / (per * nodes), k, b.next_step, fr, collapse=k == 1)
    else:
        fr2 = sharp_phase(b, req, [list(col) for col in grid.T.tolist()], s / per, k, b.next_step, fr)
    star_phase(b, groups, s / per, s, k, b.next_step, fr2)  # NVLS all-gather
    return {"chunks": k, "servers": nodes}


@register_algorithm("all_reduce", "nvls_sharp", description="NVLS inside servers, SHARP between servers")
def nvls_sharp_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    return _nvls(req, b, "sharp")


# ---------------------------------------------------------------------------------------------
# broadcast and reduce (root = first device)
# ---------------------------------------------------------------------------------------------
@register_algorithm(
    ("broadcast", "reduce"),
    "ring",
    default=True,
    description="pipelined chain through the ranks in order (NCCL ring broadcast/reduce)",
)
def chain_rooted(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    parent = [r - 1 for r in range(n)]
    if req.fluid:  # every link of the chain carries the buffer at once
        edges = np.array([(r, r - 1) for r in range(1, n)], dtype=np.int64)
        src, dst = (edges[:, 1], edges[:, 0]) if req.op == "broadcast" else (edges[:, 0], edges[:, 1])
        b.add_batch(src, dst, req.nbytes, 0)
        return {"fluid": True}
    k = req.chunks(req.nbytes, pipelined=True)
    tree_pipeline(b, list(range(n)), parent, req.nbytes, k, reduce=req.op == "reduce", bcast=req.op == "broadcast")
    return {"chunks": k}


@register_algorithm(("broadcast", "reduce"), "tree", description="pipelined binary tree rooted at the first rank")
def tree_rooted(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    k = req.chunks(req.nbytes, pipelined=True)
    tree_pipeline(
        b,
        list(range(req.n)),
        btree_parents(req.n),
        req.nbytes,
        k,
        reduce=req.op == "reduce",
        bcast=req.op == "broadcast",
    )
    return {"chunks": k}
