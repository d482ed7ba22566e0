"""Pipelined collectives as NCCL runs them: fluid plans and the algorithms only NCCL has.

A pipelined algorithm (a tree, a chain, an NVLink SHARP reduction) cuts the buffer into many
small chunks that stream through every stage at once, so in steady state every edge of the
pipeline carries its bytes concurrently.  A *fluid* plan says exactly that to the flow engine:
one transfer per edge and direction carrying the edge's total bytes, all starting together
(``Plan.meta["fluid"] = True``).  The engine then shares links between them as it would the
chunks, and the executor completes the collective no earlier than the pipeline's latency (the
cost model's, e.g. NCCL's tree latency) plus the slowest drain.  Compared with a chunk-by-chunk
plan this leaves out the pipeline fill (a few chunks' time, which NCCL's own model leaves out
too) and lets a lightly loaded stage finish its bytes early.

Algorithms (registered in :mod:`netsim.collectives.registry`):

===================  ====================================================================
``nccl_tree``        all-reduce on NCCL's tree: a chain through the GPUs of each server and
                     a double binary tree between servers (``src/graph/trees.cc``), one tree
                     per half of the data, spread over the servers' NICs (one rail per channel
                     head); fluid
``nvls``             NVLink SHARP in one server (fluid).  All-reduce: every GPU reduces its
                     ``1/n`` slice in the NVSwitch (the switch reads the slice from every GPU)
                     and stores the result to all with a multicast write, so every GPU port
                     carries ``S (1 + 1/n)`` each way, not ``S``; all-gather: ``S/n`` out and
                     ``S`` in; reduce-scatter: ``S`` out and ``S/n`` in
``nvls_tree``        all-reduce across servers: NVLS reduce-scatter inside each server, a
                     double binary tree between the same-index GPUs of the servers (their own
                     NIC) on each GPU's slice, NVLS all-gather (fluid)
``pat``              all-gather / reduce-scatter with one GPU per server (NCCL's PAT):
                     ``ceil(log2 n)`` steps of doubling (Bruck) exchanges
===================  ====================================================================

The NVSwitch is modelled as one switch ``n<k>.nvsw`` (:mod:`netsim.topology.model`); its
reduction throughput is that of its ports (the GPU-switch links), at NCCL's NVLS efficiency
(the cost model's bandwidth limit for the call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim.collectives.phases import double_binary_trees, grid_of, nvswitch_of
from netsim.collectives.plan import CollectiveError, PlanBuilder
from netsim.collectives.registry import PlanRequest, register_algorithm

__all__ = ["tree_edges"]


def tree_edges(parents: list[int]) -> list[tuple[int, int]]:
    """``(child, parent)`` position pairs of a tree given by parent positions."""
    return [(x, p) for x, p in enumerate(parents) if p >= 0]


def _up_down(b: PlanBuilder, pairs: list[tuple[int, int]], nbytes: float) -> None:
    """Fluid reduce (child -> parent) and broadcast (parent -> child) of ``nbytes`` on every edge."""
    if not pairs:
        return
    a = np.array(pairs, dtype=np.int64)
    b.add_batch(a[:, 0], a[:, 1], nbytes, 0)
    b.add_batch(a[:, 1], a[:, 0], nbytes, 1)


def _chain(order: list[int]) -> list[tuple[int, int]]:
    return [(order[i + 1], order[i]) for i in range(len(order) - 1)]


@register_algorithm(
    "all_reduce", "tree", description="NCCL's tree: chains inside servers, double binary tree between them (fluid)"
)
def nccl_tree_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    grid = req.view.grid(req.devices, "nccl_tree")
    if grid is None:
        grid = np.arange(req.n, dtype=np.int64)[None, :]
    nodes, per = grid.shape
    rails = per  # one channel head (and NIC) per local GPU
    piece = req.nbytes / (2 * rails)
    pairs: list[tuple[int, int]] = []
    for c in range(rails):
        local = [(c + i) % per for i in range(per)]  # the chain of rail c starts at its head, GPU c
        for k in range(nodes):
            pairs += [(int(grid[k, x]), int(grid[k, y])) for x, y in _chain(local)]
    for _tree in range(2):
        _up_down(b, pairs, piece)
    if nodes > 1:
        for t, parents in enumerate(double_binary_trees(nodes)):
            for c in range(rails):
                edges = [(int(grid[x, c]), int(grid[p, c])) for x, p in tree_edges(parents)]
                _up_down(b, edges, piece)
            del t
    return {"fluid": True, "servers": nodes, "rails": rails}


def _nvls_ports(b: PlanBuilder, members: list[int], sw: int, up: float, down: float) -> None:
    m = np.array(members, dtype=np.int64)
    if up > 0:
        b.add_batch(m, np.full(m.size, sw), up, 0)
    if down > 0:
        b.add_batch(np.full(m.size, sw), m, down, 1)


def _nvls_traffic(op: str, s: float, n: int) -> tuple[float, float]:
    """Bytes every GPU sends to / receives from the NVSwitch for an NVLS ``op`` of ``s`` bytes."""
    if op == "all_reduce":
        return s * (1 + 1 / n), s * (1 + 1 / n)
    if op == "all_gather":
        return s / n, s
    if op == "reduce_scatter":
        return s, s / n
    raise CollectiveError(f"nvls does not implement {op}", field="algo")


@register_algorithm(
    ("all_reduce", "all_gather", "reduce_scatter"),
    "nvls",
    description="NVLink SHARP in one server: reduction and multicast in the NVSwitch (fluid)",
)
def nvls_fluid(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    grid = grid_of(req, "nvls")
    nodes, per = grid.shape
    if nodes > 1:
        if req.op != "all_reduce":
            raise CollectiveError("nvls all-gather / reduce-scatter run inside one server", field="algo")
        return nvls_tree_all_reduce(req, b) or {}
    sw = b.node(nvswitch_of(req.view, req.view.node_of[req.devices[int(grid[0, 0])]]))
    up, down = _nvls_traffic(req.op, req.nbytes, per)
    _nvls_ports(b, grid[0].tolist(), sw, up, down)
    return {"fluid": True}


@register_algorithm(
    "all_reduce", "nvls_tree", description="NVLS inside servers, double binary tree between same-index GPUs (fluid)"
)
def nvls_tree_all_reduce(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    grid = grid_of(req, "nvls_tree")
    nodes, per = grid.shape
    s = req.nbytes
    up, down = _nvls_traffic("all_reduce", s, per)
    for k in range(nodes):
        sw = b.node(nvswitch_of(req.view, req.view.node_of[req.devices[int(grid[k, 0])]]))
        _nvls_ports(b, grid[k].tolist(), sw, up, down)
    if nodes > 1:
        piece = s / per / 2  # each GPU's slice, half on each tree
        for parents in double_binary_trees(nodes):
            for c in range(per):
                _up_down(b, [(int(grid[x, c]), int(grid[p, c])) for x, p in tree_edges(parents)], piece)
    return {"fluid": True, "servers": nodes}


@register_algorithm(
    ("all_gather", "reduce_scatter"),
    "pat",
    description="NCCL PAT (one GPU per server): log2(n) doubling exchanges (Bruck)",
)
def pat(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    block = req.nbytes / n
    dists: list[int] = []
    d = 1
    while d < n:
        dists.append(d)
        d *= 2
    if req.op == "reduce_scatter":
        dists = dists[::-1]
    ranks = np.arange(n, dtype=np.int64)
    prev: np.ndarray | None = None
    prev_dist = 0
    for step, dist in enumerate(dists):
        count = min(dist, n - dist)
        # rank r sends to r - dist once its previous send left and it received from r + prev_dist
        deps = None if prev is None else np.stack([prev, prev[(ranks + prev_dist) % n]], axis=1)
        prev = b.add_batch(ranks, (ranks - dist) % n, count * block, step, deps)
        prev_dist = dist
    return {"steps": len(dists)}
