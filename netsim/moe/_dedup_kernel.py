"""Distinct tokens per (source, destination rank) and per (source, destination node), compiled.

Same counts as the numpy path of :func:`netsim.moe.dispatchers.dedup_counts` (which documents
them): a token whose ``k`` slots name the same rank (or node) twice is counted once there.  The
numpy path sorts every source's ``[T, k]`` destinations (two sorts per source and all-to-all:
about 7 ms for 4096 tokens x top-8, the largest single cost of planning DeepSeek-V3 with the
``deepep`` dispatcher); this loop compares each slot with the earlier slots of its token
(``k`` is small: 8 for DeepSeek-V3) and touches every entry once.  ``HAVE_NUMBA`` is false when
numba cannot be imported; the caller then uses numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim.cache import use_user_numba_cache

try:  # pragma: no cover - exercised by whichever path the installation has
    use_user_numba_cache()  # compiled kernels go to a user cache directory, never into the package
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False


def _distinct_counts(
    dest: np.ndarray, node_of: np.ndarray, rank_tokens: np.ndarray, node_tokens: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Add every token's distinct destination ranks and nodes into the two count matrices."""
    ep, t, k = dest.shape
    for i in range(ep):
        for tok in range(t):
            for s in range(k):
                d = dest[i, tok, s]
                if d < 0:
                    continue
                n = node_of[d]
                new_rank = True
                new_node = True
                for p in range(s):
                    e = dest[i, tok, p]
                    if e < 0:
                        continue
                    if e == d:
                        new_rank = False
                    if node_of[e] == n:
                        new_node = False
                if new_rank:
                    rank_tokens[i, d] += 1
                if new_node:
                    node_tokens[i, n] += 1


if HAVE_NUMBA:
    _distinct_counts = numba.njit(cache=True, nogil=True)(_distinct_counts)


def distinct_counts(dest: np.ndarray, node_idx: np.ndarray, n_nodes: int) -> tuple[Any, Any]:
    """``(rank_tokens [ep, ep], node_tokens [ep, n_nodes])`` of ``dest`` (``[ep, T, k]`` int64
    ranks, ``-1`` where none), ``node_idx[r]`` the node number of rank ``r``."""
    ep = dest.shape[0]
    rank_tokens = np.zeros((ep, ep), dtype=np.int64)
    node_tokens = np.zeros((ep, n_nodes), dtype=np.int64)
    _distinct_counts(
        np.ascontiguousarray(dest, dtype=np.int64),
        np.ascontiguousarray(node_idx, dtype=np.int64),
        rank_tokens,
        node_tokens,
    )
    return rank_tokens, node_tokens
