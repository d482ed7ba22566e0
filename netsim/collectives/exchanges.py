"""The built-in all-to-all(v) and send/recv algorithms: plans that exchange data between pairs
of ranks (registered in :mod:`netsim.collectives.registry`, next to the reductions and
broadcasts of :mod:`netsim.collectives.algorithms`, whose docstring gives their alpha-beta
costs and the conventions all algorithms share).

* all-to-all(v) ``direct`` (every pair at once), ``pairwise`` (``n - 1`` shifted rounds),
  ``hierarchical`` (gather per destination server, one transfer per server pair on one rail,
  scatter) and ``deepep`` (RDMA to the same-index GPU of the target server, then NVLink to the
  owner, pipelined in chunks); :func:`a2a_matrix` gives the bytes every pair moves;
* send/recv ``shift`` (every rank to the next, as nccl-tests) and ``pairs`` (rank ``2i`` to
  ``2i + 1``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim.collectives.phases import grid_of
from netsim.collectives.plan import CollectiveError, PlanBuilder
from netsim.collectives.registry import PlanRequest, register_algorithm

_A2A = ("all_to_all", "all_to_allv")


def a2a_matrix(n: int, nbytes: float, matrix: np.ndarray | None) -> np.ndarray:
    """Bytes ``[i][j]`` an all-to-all(v) of ``n`` ranks moves over the network: ``matrix``, or
    ``nbytes / n`` per pair; zero on the diagonal (what stays on a rank)."""
    m = matrix.copy() if matrix is not None else np.full((n, n), nbytes / n)
    np.fill_diagonal(m, 0.0)
    return m


def _a2a_matrix(req: PlanRequest) -> np.ndarray:
    return a2a_matrix(req.n, req.nbytes, req.matrix)


@register_algorithm(_A2A, "direct", default=True, description="every pair at once (NCCL grouped send/recv)")
def direct_all_to_all(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    m = _a2a_matrix(req)
    i, j = np.nonzero(m > 0)
    b.add_batch(i, j, m[i, j], 0)
    return {}


@register_algorithm(_A2A, "pairwise", description="n-1 rounds; in round s rank i sends to rank i+s")
def pairwise_all_to_all(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    m = _a2a_matrix(req)
    ids = b.next_id + np.arange((n - 1) * n, dtype=np.int64).reshape(n - 1, n)
    src = np.tile(np.arange(n, dtype=np.int64), (n - 1, 1))
    shift = np.arange(1, n, dtype=np.int64)[:, None]
    dst = (src + shift) % n
    deps = np.full((n - 1, n, 2), -1, dtype=np.int64)
    deps[1:, :, 0] = ids[:-1]  # my previous send
    prev_from = (np.arange(n)[None, :] - shift[:-1]) % n  # who sent to me in the previous round
    deps[1:, :, 1] = np.take_along_axis(ids[:-1], prev_from, axis=1)
    steps = np.broadcast_to(np.arange(n - 1)[:, None], (n - 1, n))
    b.add_batch(src.ravel(), dst.ravel(), m[src, dst].ravel(), steps.ravel(), deps.reshape(-1, 2))
    return {}


def _a2a_grid(req: PlanRequest, algo: str) -> tuple[np.ndarray, np.ndarray]:
    grid = grid_of(req, algo)
    nodes, per = grid.shape
    m = _a2a_matrix(req)
    flat = grid.ravel()
    return grid, m[np.ix_(flat, flat)].reshape(nodes, per, nodes, per)


def _intra_direct(b: PlanBuilder, grid: np.ndarray, m4: np.ndarray) -> None:
    a = np.arange(grid.shape[0])
    intra = m4[a, :, a, :]  # (nodes, per, per)
    aa, ii, jj = np.nonzero(intra > 0)
    b.add_batch(grid[aa, ii], grid[aa, jj], intra[aa, ii, jj], 0)


@register_algorithm(
    _A2A, "hierarchical", description="gather per destination server, one NIC per destination server, scatter"
)
def hierarchical_all_to_all(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    grid, m4 = _a2a_grid(req, "hierarchical")
    nodes, per = grid.shape
    _intra_direct(b, grid, m4)
    proxy = np.arange(nodes) % per  # local index that carries traffic to server b (same on both ends)
    other = ~np.eye(nodes, dtype=bool)
    # 1) gather: GPU (a, i) hands what it has for server b to the proxy (a, proxy[b])
    g_bytes = m4.sum(axis=3)  # (a, i, b)
    sel = (g_bytes > 0) & other[:, None, :] & (np.arange(per)[None, :, None] != proxy[None, None, :])
    aa, ii, bb = np.nonzero(sel)
    gid = np.full((nodes, per, nodes), -1, dtype=np.int64)
    gid[aa, ii, bb] = b.add_batch(grid[aa, ii], grid[aa, proxy[bb]], g_bytes[aa, ii, bb], 0)
    # 2) one transfer per server pair, proxy to proxy (same local index: same rail)
    x_bytes = m4.sum(axis=(1, 3))  # (a, b)
    aa, bb = np.nonzero((x_bytes > 0) & other)
    xid = np.full((nodes, nodes), -1, dtype=np.int64)
    xid[aa, bb] = b.add_batch(grid[aa, proxy[bb]], grid[bb, proxy[bb]], x_bytes[aa, bb], 1, gid[aa, :, bb])
    # 3) scatter inside the destination server
    s_bytes = m4.sum(axis=1)  # (a, b, j)
    sel = (s_bytes > 0) & other[:, :, None] & (np.arange(per)[None, None, :] != proxy[None, :, None])
    aa, bb, jj = np.nonzero(sel)
    b.add_batch(grid[bb, proxy[bb]], grid[bb, jj], s_bytes[aa, bb, jj], 2, xid[aa, bb][:, None])
    return {"servers": nodes}


@register_algorithm(
    _A2A, "deepep", description="RDMA to the same-index GPU of the target server, NVLink to the owner; pipelined"
)
def deepep_all_to_all(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    """DeepEP's dispatch: every GPU sends what it has for server ``b`` over its own rail to the
    GPU with its local index there, which forwards each token to its owner over NVLink.  The
    forwarding is pipelined in chunks (DeepEP streams tokens through the forwarding GPU's
    buffers): chunk ``c`` of an RDMA transfer is forwarded once it has arrived, while chunk
    ``c + 1`` is still on the wire (default chunks of 4 MiB, at most 64; ``chunk_bytes``)."""
    grid, m4 = _a2a_grid(req, "deepep")
    nodes, per = grid.shape
    _intra_direct(b, grid, m4)
    other = ~np.eye(nodes, dtype=bool)
    r_bytes = m4.sum(axis=3)  # (a, i, b)
    aa, ii, bb = np.nonzero((r_bytes > 0) & other[:, None, :])
    if not aa.size:
        return {"servers": nodes, "chunks": 0}
    k = req.chunks(float(r_bytes[aa, ii, bb].max()), pipelined=True)
    # RDMA chunks: transfer t, chunk c waits for chunk c - 1 of the same transfer (in order)
    n_r = aa.size
    rid = b.next_id + np.arange(n_r * k, dtype=np.int64).reshape(n_r, k)
    deps = np.full((n_r, k, 1), -1, dtype=np.int64)
    deps[:, 1:, 0] = rid[:, :-1]
    b.add_batch(
        np.repeat(grid[aa, ii], k),
        np.repeat(grid[bb, ii], k),
        np.repeat(r_bytes[aa, ii, bb] / k, k),
        0,
        deps.reshape(-1, 1),
    )
    where = np.full((nodes, per, nodes), -1, dtype=np.int64)
    where[aa, ii, bb] = np.arange(n_r)
    # NVLink forwards: chunk c of (a, i) -> (b, j) waits for RDMA chunk c and its own chunk c - 1
    sel = (m4 > 0) & other[:, None, :, None] & ~np.eye(per, dtype=bool)[None, :, None, :]
    fa, fi, fb, fj = np.nonzero(sel)
    n_f = fa.size
    fid = b.next_id + np.arange(n_f * k, dtype=np.int64).reshape(n_f, k)
    fdeps = np.full((n_f, k, 2), -1, dtype=np.int64)
    fdeps[:, :, 0] = rid[where[fa, fi, fb]]
    fdeps[:, 1:, 1] = fid[:, :-1]
    b.add_batch(
        np.repeat(grid[fb, fi], k),
        np.repeat(grid[fb, fj], k),
        np.repeat(m4[fa, fi, fb, fj] / k, k),
        1,
        fdeps.reshape(-1, 2),
    )
    return {"servers": nodes, "chunks": k}


# ---------------------------------------------------------------------------------------------
# send/recv
# ---------------------------------------------------------------------------------------------
@register_algorithm(
    "sendrecv",
    "shift",
    default=True,
    description="every rank sends to the next and receives from the previous (nccl-tests)",
)
def shift_sendrecv(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    src = np.arange(n, dtype=np.int64)
    b.add_batch(src, (src + 1) % n, req.nbytes, 0)
    return {}


@register_algorithm("sendrecv", "pairs", description="rank 2i sends to rank 2i+1 (one direction)")
def pairs_sendrecv(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    if n % 2:
        raise CollectiveError(f"sendrecv 'pairs' needs an even number of devices, got {n}", field="devices")
    src = np.arange(0, n, 2, dtype=np.int64)
    b.add_batch(src, src + 1, req.nbytes, 0)
    return {}
