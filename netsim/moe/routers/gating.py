"""Gating primitives every router shares: normalisers, top-k, capacity groups and balance losses.

A router turns scores into a discrete choice, and that step is the same few operations in every
paper: a normaliser (softmax for Switch/GShard/Mixtral, sigmoid for DeepSeek-V3), a top-k with a
fixed tie rule (lowest expert index), *capacity groups* (the tokens of one source rank, as in
GShard, Lepikhin et al., ICLR 2021, and Switch Transformer, Fedus et al., JMLR 2022, where every
device computes capacity for its own local batch), the slot-major capacity rule that decides which
assignments are dropped, and the Switch load-balancing loss ``alpha * n * sum_i f_i P_i`` (Fedus et
al. 2022, eq. 4) computed per capacity group.  The routers in the sibling modules are compositions
of these functions; :mod:`netsim.moe.torch_routers` reuses them for the hard statistics of its
differentiable losses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
#: hidden states ``[T, d]`` as a router receives them (float32 after :meth:`Router._check_x`)
HiddenArray = NDArray[np.floating[Any]]
BoolArray = NDArray[np.bool_]

__all__ = [
    "grouped_balance",
    "grouped_switch_aux",
    "keep_within_capacity",
    "kl_divergence",
    "softmax",
    "switch_aux_loss",
]


def softmax(z: FloatArray, axis: int = -1) -> FloatArray:
    """Numerically stable softmax along ``axis``."""
    m = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - m)
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float64)


def _sigmoid(z: NDArray[np.floating[Any]]) -> FloatArray:
    """``1 / (1 + e^-z)`` in float64 (also for float32 ``z``)."""
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def kl_divergence(p: FloatArray, q: FloatArray) -> FloatArray:
    """``KL(p || q) = sum_i p_i log(p_i / q_i)`` along the last axis, with ``0 log 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)
    return np.asarray(np.sum(np.where(p > 0, p * np.log(safe / q), 0.0), axis=-1), dtype=np.float64)


def _ceil(x: NDArray[np.floating[Any]] | FloatArray) -> IntArray:
    """Elementwise ``ceil`` ignoring floating-point fuzz, as int64."""
    return np.ceil(np.asarray(x, dtype=np.float64) - 1e-9).astype(np.int64)


def _as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(0 if seed is None else seed)


def _groups(src_rank: NDArray[np.integer[Any]] | None, t: int) -> tuple[IntArray, IntArray]:
    """Capacity groups: (group index per token, token count per group)."""
    if src_rank is None:
        return np.zeros(t, dtype=np.int64), np.array([t], dtype=np.int64)
    src = np.asarray(src_rank)
    if src.shape != (t,):
        raise SpecError(f"src_rank must have shape ({t},), got {src.shape}")
    _, inv = np.unique(src, return_inverse=True)
    inv = inv.astype(np.int64).reshape(t)
    return inv, np.bincount(inv).astype(np.int64)


def keep_within_capacity(requested: IntArray, n_experts: int, group: IntArray, capacity: IntArray) -> BoolArray:
    """Which requested (token, slot) assignments fit into the experts' capacity.

    Priority is slot-major: every token's first choice (in token order), then every token's
    second choice, and so on (GShard, Switch).  ``group[t]`` is the capacity group of token
    ``t`` and ``capacity[g]`` the capacity of every expert within group ``g``; exactly the
    assignments beyond the first ``capacity[g]`` to an expert in a group are dropped.
    """
    t, k = requested.shape
    flat = requested.T.reshape(-1)
    g = np.tile(group, k)
    idx = np.flatnonzero(flat >= 0)
    keep = np.zeros(t * k, dtype=bool)
    if idx.size:
        key = g[idx] * n_experts + flat[idx]
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
        lengths = np.diff(np.r_[starts, sk.size])
        pos = np.arange(sk.size) - np.repeat(starts, lengths)
        keep[idx[order]] = pos < capacity[g[idx[order]]]
    return keep.reshape(k, t).T.copy()


def _top_k(scores: FloatArray, k: int) -> IntArray:
    """Indices of the ``k`` largest scores per row of a 2-d array, largest first.

    Ties are broken towards the lowest index.  Wide rows avoid a full sort: the k-th largest
    value comes from a partition, the selection is every larger entry plus the first tied
    ones, and only the k selected entries are sorted.
    """
    rows, n = scores.shape
    if n <= 64 or k >= n:
        order = np.argsort(-scores, axis=-1, kind="stable")
        return np.asarray(order[:, :k], dtype=np.int64)
    kth = -np.partition(-scores, k - 1, axis=-1)[:, k - 1 : k]
    gt = scores > kth
    eq = scores == kth
    need = k - gt.sum(axis=-1, keepdims=True)
    sel = gt | (eq & (np.cumsum(eq, axis=-1) <= need))
    idx = np.nonzero(sel)[1].reshape(rows, k)  # index order within each row
    vals = np.take_along_axis(scores, idx, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.asarray(np.take_along_axis(idx, order, axis=-1), dtype=np.int64)


def grouped_balance(requested: IntArray, scores: FloatArray, group: IntArray, n: int) -> tuple[FloatArray, FloatArray]:
    """Per capacity group: ``f[g, i]`` (share of the group's tokens whose first choice is ``i``)
    and ``P[g, i]`` (mean router probability of ``i`` over the group's tokens)."""
    n_groups = int(group.max()) + 1 if group.size else 1
    size = np.maximum(np.bincount(group, minlength=n_groups), 1).astype(np.float64)
    first = requested[:, 0]
    ok = first >= 0
    f = np.zeros((n_groups, n))
    np.add.at(f, (group[ok], first[ok]), 1.0)
    p = np.zeros((n_groups, n))
    np.add.at(p, group, scores)
    return f / size[:, None], p / size[:, None]


def grouped_switch_aux(requested: IntArray, scores: FloatArray, group: IntArray, alpha: float) -> float:
    """Switch's balancing loss per capacity group, averaged over the groups:
    ``alpha * n * mean_g sum_i f[g, i] P[g, i]``.

    Switch Transformer (Mesh TensorFlow ``_switch_gating``) and GShard compute the loss on each
    group of tokens that shares a capacity (a device's batch), so it balances what the capacity
    limits; with one group it is the batch-wide loss.
    """
    n = scores.shape[1]
    if scores.shape[0] == 0:
        return 0.0
    f, p = grouped_balance(requested, scores, group, n)
    return float(alpha * n * np.mean(np.sum(f * p, axis=-1)))


def switch_aux_loss(f: FloatArray, p_mean: FloatArray, alpha: float) -> float:
    """Switch load-balancing loss ``alpha * n * sum_i f_i P_i`` (1 * alpha when balanced)."""
    n = f.shape[-1]
    return float(alpha * n * np.sum(f * p_mean))
