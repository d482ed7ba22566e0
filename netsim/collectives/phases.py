"""The building blocks of the collective algorithms: ring, tree, star and in-network-reduction
phases, chained by frontiers.

A *phase* adds one stage of a collective to a :class:`~netsim.collectives.plan.PlanBuilder`
(a ring reduce-scatter among the GPUs of each server, a pipelined tree, the switches' SHARP
reduction) and returns its *frontier*, the transfers each node's chunks must wait for before
the next phase may move them; the registered algorithms (:mod:`netsim.collectives.algorithms`,
:mod:`netsim.collectives.pipelined`, :mod:`netsim.collectives.exchanges`) are sequences of
phases.  Every phase has an exact form (a transfer per step, chunk and link); the ring phases
also have the compact forms of stream plans (:mod:`netsim.collectives.plan`).  The conventions
(ranks, channels, chunks, in-network reduction) are in :mod:`netsim.collectives.algorithms`.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np

from netsim.collectives.plan import CollectiveError, PlanBuilder, TopologyView
from netsim.collectives.registry import PlanRequest

Frontier = dict[tuple[int, int], list[int]]
"""(node index, chunk) -> transfer ids that must arrive before chunk ``j`` of that node's next
phase may start.  Phases of one algorithm use the same number of chunks, so chunk ``j`` of a
phase follows chunk ``j`` of the previous one: the phases pipeline, as NCCL's loop over slices
of the buffer does."""


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
def entry_ids(frontier: Frontier | None, node: int, j: int) -> list[int]:
    """Deps of chunk ``j`` of ``node``'s first transfer in a phase."""
    if not frontier:
        return []
    return frontier.get((node, j), [])


def _frontier_array(frontier: Frontier | None, size: int, k: int) -> np.ndarray | None:
    """A frontier as a ``(size, k, w)`` id array, ``-1`` padded (for vectorised phases)."""
    if not frontier:
        return None
    w = max(len(v) for v in frontier.values())
    out = np.full((size, k, max(w, 1)), -1, dtype=np.int64)
    for (node, j), ids in frontier.items():
        if j < k:
            out[node, j, : len(ids)] = ids
    return out


def ring_phase(
    b: PlanBuilder,
    rings: np.ndarray,
    nsteps: int,
    block_bytes: float,
    chunks: int,
    step0: int,
    entry: Frontier | None = None,
    *,
    collapse: bool = True,
) -> tuple[np.ndarray, Frontier | None]:
    """Ring steps on ``R`` rings of ``L`` nodes at once (vectorised).

    At step ``s`` the node at ring position ``p`` sends ``block_bytes`` (in ``chunks`` chunks) to
    position ``p+1``.  Chunk ``j`` of step ``s`` waits for chunk ``j`` of step ``s-1`` from position
    ``p-1`` and for chunk ``j-1`` of step ``s`` at ``p``; the first step waits for ``entry``.

    In a stream plan (``b.stream``) the phase collapses to one transfer per ring link
    (:func:`ring_stream`) when ``collapse`` is true: the caller passes false when the phase is
    chunk-pipelined with the phases around it, whose frontiers need every chunk.

    Returns the ids ``(nsteps, R, L, chunks)`` and the exit frontier (per node, the last chunk
    of the last step it received on each ring), or the entry unchanged when there are no steps.
    """
    rings = np.asarray(rings, dtype=np.int64)
    r_count, length = rings.shape
    k = int(chunks)
    if nsteps <= 0 or length < 2 or r_count == 0:
        return np.zeros((0, r_count, length, k), dtype=np.int64), entry
    if b.stream and collapse:
        return ring_stream(b, rings, nsteps, block_bytes, k, step0, entry)
    shape = (nsteps, r_count, length, k)
    m = int(np.prod(shape))
    ids = b.next_id + np.arange(m, dtype=np.int64).reshape(shape)
    src = np.broadcast_to(rings[None, :, :, None], shape)
    dst = np.broadcast_to(np.roll(rings, -1, axis=1)[None, :, :, None], shape)
    ent = _frontier_array(entry, len(b.names), k)
    ncols = 2 + (ent.shape[2] if ent is not None else 0)
    deps = np.full((*shape, ncols), -1, dtype=np.int64)
    deps[1:, :, :, :, 0] = np.roll(ids[:-1], 1, axis=2)
    deps[:, :, :, 1:, 1] = ids[:, :, :, :-1]
    if ent is not None:
        deps[0, :, :, :, 2:] = ent[rings]
    steps = np.broadcast_to((step0 + np.arange(nsteps, dtype=np.int64))[:, None, None, None], shape)
    b.add_batch(src.ravel(), dst.ravel(), block_bytes / k, steps.ravel(), deps.reshape(m, ncols))
    into = np.roll(ids[-1], 1, axis=1)  # (R, L, k): the last step's chunks arriving at rings[r, p]
    exit_: Frontier = {}
    for (r, p), node in np.ndenumerate(rings):
        for j, t in enumerate(into[r, p].tolist()):
            exit_.setdefault((int(node), j), []).append(t)
    return ids, exit_


def ring_stream(
    b: PlanBuilder, rings: np.ndarray, nsteps: int, block_bytes: float, chunks: int, step0: int, entry: Frontier | None
) -> tuple[np.ndarray, Frontier]:
    """Stream form of :func:`ring_phase`: every ring link carries its ``nsteps`` blocks as one
    transfer standing for the chain of ``nsteps + chunks - 1`` transfers of the exact plan (a
    ring link is busy at every step, so there is no pipeline fill)."""
    r_count, length = rings.shape
    shape = (1, r_count, length, 1)
    ids = b.next_id + np.arange(r_count * length, dtype=np.int64).reshape(shape)
    ent = _frontier_array(entry, len(b.names), 1)
    deps = ent[rings].reshape(r_count * length, -1) if ent is not None else None
    b.add_batch(
        rings.ravel(), np.roll(rings, -1, axis=1).ravel(), nsteps * block_bytes, step0, deps, rounds=nsteps + chunks - 1
    )
    exit_: Frontier = {}
    _add_exits(exit_, rings, ids[0, :, :, 0], 0)
    return ids, exit_


def _add_exits(exit_: Frontier, rings: np.ndarray, ids: np.ndarray, j: int) -> None:
    """Add to ``exit_`` as chunk ``j`` the transfers ``ids`` (one per ring link, ``rings``' shape)
    into each node: the link from the node before it on its ring."""
    into = np.roll(ids.reshape(rings.shape), 1, axis=1)
    for (r, p), node in np.ndenumerate(rings):
        exit_.setdefault((int(node), j), []).append(int(into[r, p]))


def ring_stream_piped(
    b: PlanBuilder, rings: np.ndarray, nsteps: int, block_bytes: float, chunks: int, step0: int, entry: Frontier | None
) -> Frontier:
    """Stream form of a ring phase chunk-pipelined with ring phases before and after it
    (hierarchical all-reduce), where the exact plan has a transfer per step, chunk and link.

    In the exact plan chunk ``j`` of the phase enters a node when chunk ``j`` of the previous
    phase has arrived there, and a link sends its chunks in order.  Here each ring link carries
    transfers that each stand for a chain of the exact plan's (``rounds``):

    * the *head* (chunk 0, a chain of ``nsteps``) and the *body* (chunks ``1 .. k-2``, a chain of
      ``nsteps + k - 2`` from the head's start) start when the previous phase's head has reached
      the sending node: the pipeline fills, then the bodies of all phases run side by side,
      sharing links as the exact plan's chunks do in the steady state;
    * the *tail* (chunk ``k - 1``, one round) follows the body on its link: a bandwidth-bound
      phase ends a chunk after its body;
    * a *drain* marker (no bytes, a chain of ``nsteps``) follows the previous phase's tail into
      the sending node: the last chunk still has to go round the ring after the phase before
      has delivered it.

    So the phase ends no earlier than its own chunks allow nor than the last chunk's chain
    through the phases before it, and a latency-bound run of phases costs the exact chain,
    ``sum(nsteps) + k - 1`` rounds.  Returns the exit frontier: per node, the heads into it
    (chunk 0) and the tails and drain markers (chunk 1).
    """
    rings = np.asarray(rings, dtype=np.int64)
    r_count, length = rings.shape
    if nsteps <= 0 or length < 2 or r_count == 0:
        return entry or {}
    m = r_count * length
    src, dst = rings.ravel(), np.roll(rings, -1, axis=1).ravel()
    k = int(chunks)
    chunk = nsteps * block_bytes / k
    ent = _frontier_array(entry, len(b.names), 2)

    def entered(j: int) -> np.ndarray | None:  # the previous phase's chunk j into each sender
        return None if ent is None else ent[rings][:, :, j, :].reshape(m, -1)

    # four steps: the executor releases a stream phase once all its chained transfers have
    # drained, grouping them by step, and the tail waits for the body
    head = b.add_batch(src, dst, chunk, step0, entered(0), rounds=nsteps)
    last = b.add_batch(src, dst, chunk * (k - 2), step0 + 1, entered(0), rounds=nsteps + k - 2) if k > 2 else head
    ends = [b.add_batch(src, dst, chunk, step0 + 2, last[:, None], rounds=1)]
    if ent is not None:
        ends.append(b.add_batch(src, dst, 0.0, step0 + 3, entered(1), rounds=nsteps))
    exit_: Frontier = {}
    for j, group in enumerate(([head], ends)):
        for ids in group:
            _add_exits(exit_, rings, ids, j)
    return exit_


def _tree_shape(parent: list[int]) -> tuple[list[list[int]], int, list[int], list[int]]:
    """Children of every tree position, the root, every position's depth and the BFS order."""
    n = len(parent)
    children: list[list[int]] = [[] for _ in range(n)]
    root = -1
    for x, p in enumerate(parent):
        if p < 0:
            root = x
        else:
            children[p].append(x)
    depth = [0] * n
    order = [root]
    for x in order:  # BFS from the root
        for ch in children[x]:
            depth[ch] = depth[x] + 1
            order.append(ch)
    if len(order) != n:
        raise AssertionError("tree parents do not form a tree")
    return children, root, depth, order


def tree_pipeline(
    b: PlanBuilder,
    members: list[int],
    parent: list[int],
    piece_bytes: float,
    chunks: int,
    *,
    reduce: bool,
    bcast: bool,
    step0: int = 0,
    entry: Frontier | None = None,
) -> Frontier:
    """Pipelined reduce-to-root and/or broadcast-from-root on a tree.

    ``members[x]`` is the node index of tree position ``x``; ``parent[x]`` its parent position
    (``-1`` for the root).  Every edge carries ``piece_bytes`` in ``chunks`` chunks.  Returns the
    exit frontier: per member and chunk, the transfer that delivered it (the root after a
    reduce-only: the chunks from its children).
    """
    n = len(parent)
    k = int(chunks)
    c = piece_bytes / k
    children, root, depth, order = _tree_shape(parent)
    height = max(depth)
    up_order = sorted((x for x in range(n) if x != root), key=lambda x: -depth[x])
    down_order = [x for x in order if children[x]]
    up: list[list[int]] = [[-1] * k for _ in range(n)]
    down: list[list[int]] = [[-1] * k for _ in range(n)]
    for j in range(k):
        if reduce:
            for x in up_order:
                deps = [up[ch][j] for ch in children[x]] + entry_ids(entry, members[x], j)
                if j:
                    deps.append(up[x][j - 1])
                up[x][j] = b.add(members[x], members[parent[x]], c, deps, step0 + height - depth[x])
        if bcast:
            base = step0 + (height if reduce else 0)
            for x in down_order:
                for ch in children[x]:
                    if x == root:
                        deps = [up[cc][j] for cc in children[root]] if reduce else entry_ids(entry, members[root], j)
                    else:
                        deps = [down[x][j]]
                    if j:
                        deps.append(down[ch][j - 1])
                    down[ch][j] = b.add(members[x], members[ch], c, deps, base + depth[x])
    return tree_exit(members, children, root, up, down, reduce=reduce, bcast=bcast)


def tree_exit(
    members: list[int],
    children: list[list[int]],
    root: int,
    up: list[list[int]],
    down: list[list[int]],
    *,
    reduce: bool,
    bcast: bool,
) -> Frontier:
    """Per member and chunk, the transfers that delivered it: the broadcast's, or at the root of a
    reduce-only the chunks from its children."""
    exit_: Frontier = {}
    for x in range(len(up)):
        for j in range(len(up[x])):
            if bcast and x != root:
                exit_[(members[x], j)] = [down[x][j]]
            elif x == root and reduce:
                exit_[(members[x], j)] = [up[ch][j] for ch in children[root]]
    return exit_


def star_phase(
    b: PlanBuilder,
    groups: list[tuple[list[int], int]],
    up_bytes: float,
    down_bytes: float,
    chunks: int,
    step0: int,
    entry: Frontier | None,
) -> Frontier:
    """Members send ``up_bytes`` to their switch, which sends ``down_bytes`` back to each member
    once it has every member's chunk (a reduction in the switch); pipelined in ``chunks``."""
    k = int(chunks)
    exit_: Frontier = {}
    for members, sw in groups:
        up_prev: dict[int, int] = {}
        down_prev: dict[int, int] = {}
        for j in range(k):
            ups = []
            for x in members:
                deps = entry_ids(entry, x, j) + ([up_prev[x]] if j else [])
                up_prev[x] = b.add(x, sw, up_bytes / k, deps, step0)
                ups.append(up_prev[x])
            for x in members:
                deps = ups + ([down_prev[x]] if j else [])
                down_prev[x] = b.add(sw, x, down_bytes / k, deps, step0 + 1)
                exit_[(x, j)] = [down_prev[x]]
    return exit_


def grid_of(req: PlanRequest, algo: str) -> np.ndarray:
    return req.view.require_grid(req.devices, algo)


def ring_orders(req: PlanRequest) -> np.ndarray:
    """``(channels, n)`` ring orders (rank indices), rail-aligned across servers (module doc)."""
    n = req.n
    grid = req.view.grid(req.devices, "ring")
    if grid is None or grid.shape[0] == 1 or grid.shape[1] == 1:
        base = grid.ravel() if grid is not None and grid.shape[0] > 1 else np.arange(n, dtype=np.int64)
        return np.tile(base, (req.channels or 1, 1))
    nodes, per = grid.shape
    count = req.channels or per
    rings = np.empty((count, n), dtype=np.int64)
    for c in range(count):
        up = (c + np.arange(per)) % per
        downw = (c - 1 - np.arange(per)) % per
        rings[c] = np.concatenate([grid[k, up if k % 2 == 0 else downw] for k in range(nodes)])
    return rings


def btree_parents(n: int) -> list[int]:
    """NCCL's binary tree over ranks 0..n-1 (``ncclGetBtree``), root 0."""
    parent = [-1] * n
    for r in range(1, n):
        bit = 1
        while bit < n and not (bit & r):
            bit <<= 1
        up = (r ^ bit) | (bit << 1)
        if up >= n:
            up = r ^ bit
        parent[r] = up
    return parent


def double_binary_trees(n: int) -> tuple[list[int], list[int]]:
    """NCCL's double binary tree: the btree and its mirror (even ``n``) or shift (odd ``n``),
    so that a rank that is a leaf in one tree is an interior node in the other."""
    t0 = btree_parents(n)
    if n % 2 == 0:
        t1 = [-1 if t0[n - 1 - r] < 0 else n - 1 - t0[n - 1 - r] for r in range(n)]
    else:
        t1 = [-1 if t0[(r - 1) % n] < 0 else (t0[(r - 1) % n] + 1) % n for r in range(n)]
    return t0, t1


def nvswitch_of(view: TopologyView, node: int) -> str:
    name = f"n{node}.nvsw"
    g = view.graph
    if g is None or name in g:
        return name
    for v, a in g.nodes(data=True):
        if a.get("kind") == "switch" and a.get("node") == node and a.get("role", "nvswitch") == "nvswitch":
            return str(v)
    raise CollectiveError(f"nvls needs an NVSwitch in server {node} (no device {name!r} in the topology)", field="algo")


def switch_tree(graph: nx.DiGraph | None, devices: list[str]) -> tuple[str, dict[str, str], dict[str, str]]:
    """The aggregation tree SHARP would use for ``devices``: ``(root, parent, attach)``.

    The root is the back-end fabric switch closest to all devices (smallest maximum hop count,
    then smallest total, then name); ``attach[d]`` is the first fabric switch on ``d``'s shortest
    path to the root and ``parent[s]`` the next switch on the way up.
    """
    if graph is None:
        raise CollectiveError("sharp needs the topology graph to find the switch tree", field="algo")
    switches = sorted(
        str(v)
        for v, a in graph.nodes(data=True)
        if a.get("kind") == "switch"
        and int(a.get("node", -1) if a.get("node") is not None else -1) < 0
        and a.get("network", "backend") == "backend"
    )
    if not switches:
        raise CollectiveError("sharp needs back-end fabric switches; the topology has none", field="algo")
    ug = graph.to_undirected(as_view=True)
    best: tuple[tuple[int, int, str], str] | None = None
    for s in switches:
        dist = nx.single_source_shortest_path_length(ug, s)
        ds = [dist.get(d) for d in devices]
        if any(x is None for x in ds):
            continue
        dd = [int(x) for x in ds if x is not None]
        key = (max(dd), sum(dd), s)
        if best is None or key < best[0]:
            best = (key, s)
    if best is None:
        raise CollectiveError("sharp: no back-end switch reaches every device of the group", field="algo")
    root = best[1]
    pred = nx.predecessor(ug, root)
    swset = set(switches)
    parent: dict[str, str] = {}
    attach: dict[str, str] = {}
    for d in devices:
        path = [d]
        while path[-1] != root:
            path.append(pred[path[-1]][0])
        sws = [v for v in path if v in swset]
        attach[d] = sws[0]
        for a, bb in itertools.pairwise(sws):
            parent.setdefault(a, bb)
    return root, parent, attach


def sharp_phase(
    b: PlanBuilder,
    req: PlanRequest,
    groups: list[list[int]],
    piece_bytes: float,
    chunks: int,
    step0: int,
    entry: Frontier | None,
) -> Frontier:
    """In-network all-reduce of ``piece_bytes`` inside each group through its switch tree."""
    exit_: Frontier = {}
    for grp in groups:
        names = [req.devices[r] for r in grp]
        root, parent, attach = switch_tree(req.view.graph, names)
        members: list[int] = list(grp)
        switches = sorted({*attach.values(), *parent.keys(), *parent.values(), root})
        members += [b.node(s) for s in switches]
        pos = {m: i for i, m in enumerate(members)}
        par = [-1] * len(members)
        for r, d in zip(grp, names, strict=True):
            par[pos[r]] = pos[b.node(attach[d])]
        for s, p in parent.items():
            par[pos[b.node(s)]] = pos[b.node(p)]
        ex = tree_pipeline(b, members, par, piece_bytes, chunks, reduce=True, bcast=True, step0=step0, entry=entry)
        exit_.update({key: ids for key, ids in ex.items() if key[0] < req.n})
    return exit_
