"""DeepSeek's node-limited top-k selection as one compiled loop (numba), for routing at scale.

Same result as the numpy path of :meth:`netsim.moe.routers.DeepSeekRouter.select` (which
documents the rule): per token, a group's score is the sum of its two largest biased scores,
the ``topk_groups`` best groups stay eligible, and the ``top_k`` largest biased scores among
their experts are chosen, largest first, ties towards the lowest index (groups and experts
alike).  The numpy path materialises a ``[tokens, experts]`` masked copy, a full sort of every
group and a partition; this loop touches every score once or twice, which makes routing a
DeepSeek-V3 all-to-all (64 ranks x 4096 tokens x 256 experts) several times cheaper.
``HAVE_NUMBA`` is false when numba cannot be imported; the router then uses numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # pragma: no cover - exercised by whichever path the installation has
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False


def _select(scores: np.ndarray, bias: np.ndarray, n_groups: int, topk_groups: int,
            top_k: int) -> np.ndarray:  # pragma: no cover - compiled
    t, n = scores.shape
    gs = n // n_groups
    out = np.empty((t, top_k), dtype=np.int64)
    gscore = np.empty(n_groups)
    kept = np.zeros(n_groups, dtype=np.bool_)
    vals = np.empty(top_k)
    for i in range(t):
        for g in range(n_groups):
            m1 = -np.inf
            m2 = -np.inf
            for j in range(g * gs, (g + 1) * gs):
                v = scores[i, j] + bias[j]
                if v > m1:
                    m2 = m1
                    m1 = v
                elif v > m2:
                    m2 = v
            gscore[g] = m1 + m2 if gs >= 2 else m1
            kept[g] = False
        for _ in range(topk_groups):
            best = -1
            for g in range(n_groups):
                if not kept[g] and (best < 0 or gscore[g] > gscore[best]):
                    best = g
            kept[best] = True
        # one pass over the eligible experts in index order, keeping the best top_k sorted
        # (largest first); a value enters only if strictly larger than the k-th, and after every
        # value >= it, so among ties the lower index stays ahead
        filled = 0
        for g in range(n_groups):
            if not kept[g]:
                continue
            for j in range(g * gs, (g + 1) * gs):
                v = scores[i, j] + bias[j]
                if filled == top_k and not v > vals[top_k - 1]:
                    continue
                pos = filled if filled < top_k else top_k - 1
                while pos > 0 and vals[pos - 1] < v:
                    if pos < top_k:
                        vals[pos] = vals[pos - 1]
                        out[i, pos] = out[i, pos - 1]
                    pos -= 1
                vals[pos] = v
                out[i, pos] = j
                if filled < top_k:
                    filled += 1
    return out


select: Any = numba.njit(cache=True, nogil=True)(_select) if HAVE_NUMBA else None
"""The compiled :func:`_select` (``None`` without numba)."""
