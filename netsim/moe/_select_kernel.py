"""DeepSeek's node-limited top-k selection as compiled loops (numba), for routing at scale.

Same result as the numpy path of :meth:`netsim.moe.routers.DeepSeekRouter.select` (which
documents the rule): per token, a group's score is the sum of its two largest biased scores,
the ``topk_groups`` best groups stay eligible, and the ``top_k`` largest biased scores among
their experts are chosen, largest first, ties towards the lowest index (groups and experts
alike).  The numpy path materialises a ``[tokens, experts]`` masked copy, a full sort of every
group and a partition; :func:`select` touches every score once or twice, one token at a time.

:func:`counts` is what routing a DeepSeek-V3 all-to-all (64 ranks x 4096 tokens x 256 experts)
needs: only the number of tokens per expert, from the logits laid out ``[experts, tokens]``,
with blocks of tokens processed together in SIMD registers (about ten times faster than
sigmoid + :func:`select`).  ``HAVE_NUMBA`` is false when numba cannot be imported; the router
then uses numpy.
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


def _token_group_scores(
    scores: np.ndarray, bias: np.ndarray, i: int, gs: int, gscore: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``gscore[g]``: the sum of the two largest biased scores of group ``g`` for token ``i``."""
    for g in range(gscore.size):
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


def _select(
    scores: np.ndarray, bias: np.ndarray, n_groups: int, topk_groups: int, top_k: int
) -> np.ndarray:  # pragma: no cover - compiled
    t, n = scores.shape
    gs = n // n_groups
    out = np.empty((t, top_k), dtype=np.int64)
    gscore = np.empty(n_groups)
    kept = np.zeros(n_groups, dtype=np.bool_)
    vals = np.empty(top_k)
    for i in range(t):
        _token_group_scores(scores, bias, i, gs, gscore)
        kept[:] = False
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


if HAVE_NUMBA:
    _token_group_scores = numba.njit(cache=True, nogil=True)(_token_group_scores)
select: Any = numba.njit(cache=True, nogil=True)(_select) if HAVE_NUMBA else None
"""The compiled :func:`_select` (``None`` without numba)."""


# --------------------------------------------------------------------------------------------
# counts only: tokens as the inner (vectorised) dimension
# --------------------------------------------------------------------------------------------
#
# The per-token loop above branches on every score, and those branches are unpredictable.
# ``counts`` needs no per-token expert list, only how many tokens chose each expert, so it works
# on ``vals [experts, tokens]`` (tokens contiguous) and runs every step for a block of tokens at
# once as branch-free max/min updates that LLVM turns into SIMD instructions:
#
# 1. the ``_DEPTH`` largest values of every group per token (an insertion network: for each
#    expert of the group, ``hi = max(slot, v); v = min(slot, v); slot = hi`` down the slots);
# 2. the group scores (sum of the two largest, through the sigmoid for logits);
# 3. the ``topk_groups`` best groups per token (the same network over the group scores);
# 4. ``thr``, the ``top_k``-th largest of the known values of the kept groups;
# 5. a check over all experts: a token is resolved when exactly ``top_k`` eligible values are
#    ``>= thr`` (else a kept group has more than ``_DEPTH`` values above ``thr``, or there is a
#    tie at ``thr``) and the next eligible value is clearly below ``thr``;
# 6. per expert, the resolved tokens whose value is ``>= thr`` in a kept group.
#
# The few unresolved tokens (1.5% for DeepSeek-V3's shape on the synthetic stream) take the
# per-token insertion pass of ``_select`` (``_fixup``).  What stays open after that -- ties or
# near-ties at a boundary, where the rounding of the sigmoid could decide; about one token in
# 10^5 -- is returned as ``flagged``; the router routes those tokens with :func:`select` on the
# scores, so the counts equal the numpy path's.

_DEPTH = 4  # values kept per group in step 1: 4 resolve 98.5% of DeepSeek-V3 tokens in steps 1-6 (2: 15%)


def _sig(z: float) -> float:  # pragma: no cover - compiled
    """``1 / (1 + e^-z)`` within ~1e-14, branch-free so that loops over tokens vectorise (calls to
    libm's exp/tanh do not): ``e^-z = (e^(-z/128))^128`` with the degree-13 Taylor polynomial on
    ``[-1/2, 1/2]``; ``z`` is clamped to ``[-64, 64]`` (beyond, the sigmoid is within 2e-28 of 0 or 1)."""
    u = -z
    u = u if u > -64.0 else -64.0
    u = u if u < 64.0 else 64.0
    u = u * (1.0 / 128.0)
    p = 1.0 / 6227020800.0
    p = p * u + 1.0 / 479001600.0
    p = p * u + 1.0 / 39916800.0
    p = p * u + 1.0 / 3628800.0
    p = p * u + 1.0 / 362880.0
    p = p * u + 1.0 / 40320.0
    p = p * u + 1.0 / 5040.0
    p = p * u + 1.0 / 720.0
    p = p * u + 1.0 / 120.0
    p = p * u + 1.0 / 24.0
    p = p * u + 1.0 / 6.0
    p = p * u + 0.5
    p = p * u + 1.0
    p = p * u + 1.0
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return 1.0 / (1.0 + p)


def _group_tops(vals: np.ndarray, t0: int, gs: int, known: np.ndarray) -> None:  # pragma: no cover - compiled
    """Step 1: ``known[g, d, b]`` = the ``d``-th largest value of group ``g`` for token ``t0 + b``."""
    n_groups, _, nb = known.shape
    ninf = -np.inf
    for g in range(n_groups):
        k0 = known[g, 0]
        k1 = known[g, 1]
        k2 = known[g, 2]
        k3 = known[g, 3]
        for b in range(nb):
            k0[b] = ninf
            k1[b] = ninf
            k2[b] = ninf
            k3[b] = ninf
        for j in range(g * gs, (g + 1) * gs):
            row = vals[j, t0 : t0 + nb]
            for b in range(nb):
                v = row[b]
                h = k0[b]
                k0[b] = h if h > v else v
                v = v if h > v else h
                h = k1[b]
                k1[b] = h if h > v else v
                v = v if h > v else h
                h = k2[b]
                k2[b] = h if h > v else v
                v = v if h > v else h
                h = k3[b]
                k3[b] = h if h > v else v


def _insert(slots: np.ndarray, carry: np.ndarray) -> None:  # pragma: no cover - compiled
    """Insert ``carry[b]`` into the descending ``slots[:, b]`` (the largest ``len(slots)`` stay)."""
    depth, nb = slots.shape
    for d in range(depth):
        s = slots[d]
        for b in range(nb):
            h = s[b]
            v = carry[b]
            s[b] = h if h > v else v
            carry[b] = v if h > v else h


def _group_scores(known: np.ndarray, gs: int, sigmoid: bool, gscore: np.ndarray) -> None:  # pragma: no cover
    """Step 2: a group's score is its top value plus its second (numpy: the sum of the sorted top
    two); through the sigmoid when the values are logits."""
    n_groups, _, nb = known.shape
    for g in range(n_groups):
        k0 = known[g, 0]
        k1 = known[g, 1]
        out = gscore[g]
        if sigmoid and gs >= 2:
            for b in range(nb):
                out[b] = _sig(np.float64(k0[b])) + _sig(np.float64(k1[b]))
        elif sigmoid:
            for b in range(nb):
                out[b] = _sig(np.float64(k0[b]))
        elif gs >= 2:
            for b in range(nb):
                out[b] = np.float64(k0[b]) + np.float64(k1[b])
        else:
            for b in range(nb):
                out[b] = np.float64(k0[b])


def _keep_groups(
    gscore: np.ndarray, topk_groups: int, tol: float, keep: np.ndarray, state: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Step 3: ``keep[g, b]`` for the ``topk_groups`` best groups; ``state[b] = 1`` (unresolved)
    where the last kept group and the first dropped one are within ``tol``."""
    n_groups, nb = gscore.shape
    gtop = np.full((min(topk_groups + 1, n_groups), nb), -np.inf)
    carry = np.empty(nb)
    for g in range(n_groups):
        carry[:] = gscore[g]
        _insert(gtop, carry)
    last = gtop[topk_groups - 1]
    if topk_groups < n_groups:
        first_out = gtop[topk_groups]
        for b in range(nb):
            state[b] = 1 if last[b] - first_out[b] <= tol else 0
    for g in range(n_groups):
        kg = keep[g]
        gsc = gscore[g]
        for b in range(nb):
            kg[b] = gsc[b] >= last[b]


def _threshold(known: np.ndarray, keep: np.ndarray, top_k: int) -> np.ndarray:  # pragma: no cover - compiled
    """Step 4: per token the ``top_k``-th largest known value of the kept groups."""
    n_groups, depth, nb = known.shape
    top = np.full((top_k, nb), -np.inf, dtype=known.dtype)
    carry = np.empty(nb, dtype=known.dtype)
    ninf = -np.inf
    for g in range(n_groups):
        kg = keep[g]
        for d in range(depth):
            kd = known[g, d]
            for b in range(nb):
                carry[b] = kd[b] if kg[b] else ninf
            _insert(top, carry)
    return top[top_k - 1].copy()


def _check(
    vals: np.ndarray,
    t0: int,
    gs: int,
    keep: np.ndarray,
    thr: np.ndarray,
    top_k: int,
    sigmoid: bool,
    tol: float,
    state: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Step 5: ``state[b] = 2`` (needs ``_fixup``) unless exactly ``top_k`` eligible values are
    ``>= thr``; 1 (unresolved) where, for logits, the next value's sigmoid is within ``tol``."""
    n_groups, nb = keep.shape
    above = np.zeros(nb, dtype=np.int32)
    below = np.full(nb, -np.inf, dtype=vals.dtype)
    hi = np.empty(nb, dtype=vals.dtype)  # thr in a kept group, else +inf: nothing is above
    lo = np.empty(nb, dtype=vals.dtype)  # thr in a kept group, else -inf: nothing is below
    for g in range(n_groups):
        kg = keep[g]
        for b in range(nb):
            hi[b] = thr[b] if kg[b] else np.inf
            lo[b] = thr[b] if kg[b] else -np.inf
        for j in range(g * gs, (g + 1) * gs):
            row = vals[j, t0 : t0 + nb]
            for b in range(nb):
                v = row[b]
                above[b] += np.int32(1) if v >= hi[b] else np.int32(0)
                w = v if v < lo[b] else -np.inf
                below[b] = below[b] if below[b] > w else w
    for b in range(nb):
        if state[b] == 0:
            if above[b] != top_k:
                state[b] = 2
            elif sigmoid and _sig(np.float64(thr[b])) - _sig(np.float64(below[b])) <= tol:
                state[b] = 1


def _resolve(
    vals: np.ndarray, t0: int, nb: int, gs: int, n_groups: int, topk_groups: int, top_k: int, sigmoid: bool, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The kept groups, the top-k threshold and the state of tokens ``t0 .. t0+nb-1`` (0 resolved,
    2 needs a fix-up, 1 unresolved), shared by :func:`_counts` and :func:`_experts`."""
    known = np.empty((n_groups, _DEPTH, nb), dtype=vals.dtype)
    _group_tops(vals, t0, gs, known)
    gscore = np.empty((n_groups, nb))
    _group_scores(known, gs, sigmoid, gscore)
    keep = np.empty((n_groups, nb), dtype=np.bool_)
    state = np.zeros(nb, dtype=np.int8)
    _keep_groups(gscore, topk_groups, tol, keep, state)
    thr = _threshold(known, keep, top_k)
    _check(vals, t0, gs, keep, thr, top_k, sigmoid, tol, state)
    return keep, thr, state


def _count(
    vals: np.ndarray, t0: int, gs: int, keep: np.ndarray, thr: np.ndarray, state: np.ndarray, counts: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Step 6: add the resolved tokens whose value is ``>= thr`` in a kept group."""
    n_groups, nb = keep.shape
    hi = np.empty(nb, dtype=vals.dtype)
    for g in range(n_groups):
        kg = keep[g]
        for b in range(nb):
            hi[b] = thr[b] if kg[b] and state[b] == 0 else np.inf
        for j in range(g * gs, (g + 1) * gs):
            row = vals[j, t0 : t0 + nb]
            cnt = 0
            for b in range(nb):
                cnt += row[b] >= hi[b]
            counts[j] += cnt


def _counts(
    vals: np.ndarray, n_groups: int, topk_groups: int, top_k: int, sigmoid: bool, tol: float, chunk: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n, t = vals.shape
    gs = n // n_groups
    n_chunks = (t + chunk - 1) // chunk
    part = np.zeros((n_chunks, n), dtype=np.int64)
    flagged = np.zeros(t, dtype=np.bool_)
    for c in range(n_chunks):
        t0 = c * chunk
        nb = min(chunk, t - t0)
        keep, thr, state = _resolve(vals, t0, nb, gs, n_groups, topk_groups, top_k, sigmoid, tol)
        _count(vals, t0, gs, keep, thr, state, part[c])
        sv = np.empty(top_k + 1, dtype=vals.dtype)
        si = np.empty(top_k + 1, dtype=np.int64)
        for b in range(nb):
            if state[b] == 2 and not _fixup(vals, t0 + b, keep[:, b], gs, top_k, sigmoid, tol, sv, si, part[c]):
                state[b] = 1
            flagged[t0 + b] = state[b] == 1
    return part.sum(axis=0), flagged


def _fixup(
    vals: np.ndarray,
    t: int,
    keep: np.ndarray,
    gs: int,
    top_k: int,
    sigmoid: bool,
    tol: float,
    sv: np.ndarray,
    si: np.ndarray,
    counts: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Token ``t`` one value at a time (as ``_select``): the ``top_k + 1`` largest eligible values;
    counts the ``top_k`` and returns True when the ``top_k``-th is clearly above the next."""
    ok = _fixup_top(vals, t, keep, gs, top_k, sigmoid, tol, sv, si)
    if ok:
        for p in range(top_k):
            counts[si[p]] += 1
    return ok


def _fixup_top(
    vals: np.ndarray,
    t: int,
    keep: np.ndarray,
    gs: int,
    top_k: int,
    sigmoid: bool,
    tol: float,
    sv: np.ndarray,
    si: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """``si[:top_k]``, ``sv[:top_k]``: token ``t``'s ``top_k`` largest eligible values, largest
    first (ties: lowest index first); True when the ``top_k``-th is clearly above the next."""
    filled = 0
    for g in range(keep.shape[0]):
        if not keep[g]:
            continue
        for j in range(g * gs, (g + 1) * gs):
            v = vals[j, t]
            if filled > top_k and not v > sv[top_k]:
                continue
            pos = filled if filled <= top_k else top_k
            while pos > 0 and sv[pos - 1] < v:
                if pos <= top_k:
                    sv[pos] = sv[pos - 1]
                    si[pos] = si[pos - 1]
                pos -= 1
            sv[pos] = v
            si[pos] = j
            if filled <= top_k:
                filled += 1
    thr = sv[top_k - 1]
    nxt = sv[top_k] if filled > top_k else -np.inf
    return bool(_sig(np.float64(thr)) - _sig(np.float64(nxt)) > tol if sigmoid else thr > nxt)


# --------------------------------------------------------------------------------------------
# the experts of every token: steps 1-5 as above, then the selected experts in order
# --------------------------------------------------------------------------------------------
#
# A de-duplicating dispatcher needs every token's experts, not only the counts.  For a resolved
# token they are the ``top_k`` eligible values ``>= thr`` (step 6 collects them in index order);
# sorted largest first (an insertion sort that keeps equal values in index order, as
# ``_select``).  For logits one more check: two neighbours in that order whose sigmoids are
# within ``tol`` (distinct logits whose sigmoids may round to a tie) leave the token flagged.


def _gather(
    vals: np.ndarray, t0: int, gs: int, keep: np.ndarray, thr: np.ndarray, state: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Step 6': ``out[t0 + b]`` = the experts of resolved token ``t0 + b`` in index order."""
    n_groups, nb = keep.shape
    hi = np.empty(nb, dtype=vals.dtype)
    fill = np.zeros(nb, dtype=np.int64)
    for g in range(n_groups):
        kg = keep[g]
        for b in range(nb):
            hi[b] = thr[b] if kg[b] and state[b] == 0 else np.inf
        for j in range(g * gs, (g + 1) * gs):
            row = vals[j, t0 : t0 + nb]
            for b in range(nb):
                if row[b] >= hi[b]:
                    out[t0 + b, fill[b]] = j
                    fill[b] += 1


def _order(vals: np.ndarray, t: int, row: np.ndarray, sigmoid: bool, tol: float) -> bool:  # pragma: no cover
    """Sort ``row`` (experts in index order) by ``vals[:, t]``, largest first, equal values in
    index order; False when, for logits, two neighbours' sigmoids are within ``tol``."""
    k = row.size
    for p in range(1, k):
        j = row[p]
        v = vals[j, t]
        q = p
        while q > 0 and vals[row[q - 1], t] < v:
            row[q] = row[q - 1]
            q -= 1
        row[q] = j
    if sigmoid:
        for p in range(k - 1):
            a = vals[row[p], t]
            b = vals[row[p + 1], t]
            if a != b and _sig(np.float64(a)) - _sig(np.float64(b)) <= tol:
                return False
    return True


def _experts(
    vals: np.ndarray, n_groups: int, topk_groups: int, top_k: int, sigmoid: bool, tol: float, chunk: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n, t = vals.shape
    gs = n // n_groups
    out = np.full((t, top_k), -1, dtype=np.int64)
    flagged = np.zeros(t, dtype=np.bool_)
    sv = np.empty(top_k + 1, dtype=vals.dtype)
    si = np.empty(top_k + 1, dtype=np.int64)
    for t0 in range(0, t, chunk):
        nb = min(chunk, t - t0)
        keep, thr, state = _resolve(vals, t0, nb, gs, n_groups, topk_groups, top_k, sigmoid, tol)
        _gather(vals, t0, gs, keep, thr, state, out)
        for b in range(nb):
            row = out[t0 + b]
            if state[b] == 0 and not _order(vals, t0 + b, row, sigmoid, tol):
                state[b] = 1
            elif state[b] == 2:
                if _fixup_top(vals, t0 + b, keep[:, b], gs, top_k, sigmoid, tol, sv, si) and _order(
                    vals, t0 + b, si[:top_k], sigmoid, tol
                ):
                    row[:] = si[:top_k]
                else:
                    state[b] = 1
            if state[b] == 1:
                row[:] = -1
                flagged[t0 + b] = True
    return out, flagged


if HAVE_NUMBA:  # the kernels call the compiled helpers
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    _sig = _jit(_sig)
    _group_tops = _jit(_group_tops)
    _insert = _jit(_insert)
    _group_scores = _jit(_group_scores)
    _keep_groups = _jit(_keep_groups)
    _threshold = _jit(_threshold)
    _check = _jit(_check)
    _resolve = _jit(_resolve)
    _count = _jit(_count)
    _fixup_top = _jit(_fixup_top)
    _fixup = _jit(_fixup)
    _counts = _jit(_counts)
    _gather = _jit(_gather)
    _order = _jit(_order)
    _experts = _jit(_experts)


#: the kernel's sigmoid is within ~1e-14 of the exact one (numpy's within ~1e-16): boundaries
#: between groups or experts whose sigmoid scores differ by more are decided as numpy decides them
SIGMOID_TOL = 1e-10


def counts(
    vals: np.ndarray, n_groups: int, topk_groups: int, top_k: int, *, sigmoid: bool, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens per expert of the node-limited top-k selection, and the tokens left to the caller.

    Args:
        vals: ``[n, T]`` float32 or float64, tokens contiguous: with ``sigmoid`` the logits ``z``
            of an unbiased router (the selection on ``sigmoid(z)`` equals the selection on ``z``
            except for the group scores, which are sums of sigmoids), else the biased scores
            ``s + b``.
        n_groups, topk_groups, top_k: the router's grouping.
        sigmoid: whether ``vals`` are logits (see above).
        chunk: tokens processed together (their working set stays in the L2 cache).

    Returns:
        ``(counts, flagged)``: ``[n]`` int64 selections per expert over the tokens not flagged,
        and ``[T]`` bool, the tokens with a tie or near-tie (within :data:`SIGMOID_TOL` for
        logits) at the group or expert boundary, which the caller routes with :func:`select`
        on the exact scores.  Deterministic: the same input gives the same output.
    """
    tol = SIGMOID_TOL if sigmoid else 0.0
    return _counts(np.ascontiguousarray(vals), n_groups, topk_groups, top_k, sigmoid, tol, chunk)


def experts(
    vals: np.ndarray, n_groups: int, topk_groups: int, top_k: int, *, sigmoid: bool, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The experts of every token under the node-limited top-k selection (as :func:`counts`).

    Args and the meaning of ``vals`` as for :func:`counts`.

    Returns:
        ``(experts, flagged)``: ``[T, top_k]`` int64 the selected experts of every token, largest
        score first (ties: lowest index first), ``-1`` in the rows of flagged tokens; ``[T]``
        bool, the tokens with a tie or near-tie at a group or expert boundary or between two
        selected experts, which the caller routes with :func:`select` on the exact scores.
    """
    tol = SIGMOID_TOL if sigmoid else 0.0
    return _experts(np.ascontiguousarray(vals), n_groups, topk_groups, top_k, sigmoid, tol, chunk)
