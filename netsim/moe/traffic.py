"""From routing counts and a placement to the all-to-all byte matrices of expert parallelism.

A MoE layer with expert parallelism moves every routed token twice per direction of the pass:
*dispatch* sends a token's hidden state from its source rank to the rank holding its expert,
*combine* sends the expert output back.  Given ``counts[src_rank, expert]`` (tokens of each EP
rank routed to each logical expert, one per (token, slot), so ``top_k`` is already included)
and a :class:`~netsim.moe.placement.Placement`::

    tokens[src, dst]   = tokens from rank src served by an expert replica on rank dst
    dispatch[src, dst] = tokens[src, dst] * hidden * bytes_per_element        (bytes)
    combine            = dispatch.T                                            (bytes)

(docs/modelling.md, Traffic of a training step: bytes per all-to-all = tokens * top_k * hidden * bytes_per_element.)
The diagonal is traffic that stays on the rank; entries between ranks of one node use the
intra-node fabric, the rest cross the network.  That is one copy per (token, expert), what
Megatron's all-to-all dispatcher sends; dispatchers that send a token once per destination
rank or node (DeepEP) send fewer copies (:mod:`netsim.moe.dispatchers`, ``dispatcher`` of
:func:`dispatch_plan`).  Frameworks with a fixed expert capacity send capacity-sized buffers
whatever the routing (:func:`padded_tokens`).

Replicated experts (EPLB redundant experts) split their tokens by ``replica_policy``:

* ``even``: evenly over all replicas (integer split; the remainder goes to consecutive
  replicas starting at an offset that rotates with the source rank);
* ``nearest``: evenly over the nearest replicas only: the source's own rank if it holds one,
  else replicas on its node, else all replicas.

:func:`routing_metrics` summarises the load (max/mean and coefficient of variation of the
tokens per expert, unused experts, drop rate, max/mean of the tokens received per rank) and the
locality (shares of the dispatch bytes that stay on the rank, stay on the node, cross nodes;
the three shares sum to 1).

A de-duplicating dispatcher's plan costs a pass over every routed (token, slot); when the same
routing is replayed for many micro-batches (``routing_samples``, the routing source returns the
same arrays), :func:`dispatch_plan` gives the plan it computed for those arrays (the last
:data:`PLAN_MEMO_SIZE` of them, held by weak references, with read-only arrays).
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.moe.dispatchers import DISPATCHERS, dispatcher_copies, token_destinations
from netsim.moe.placement import Placement, rank_nodes

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

REPLICA_POLICIES = ("even", "nearest")

__all__ = [
    "REPLICA_POLICIES",
    "DispatchPlan",
    "RoutingMetrics",
    "dispatch_plan",
    "load_stats",
    "padded_tokens",
    "rank_token_matrix",
    "replica_shares",
    "routing_metrics",
]


def _split(c: IntArray, m: IntArray | int, rot: IntArray, pos: IntArray) -> IntArray:
    """Share of ``c`` tokens for the replica at position ``pos`` among ``m`` (rotation ``rot``)."""
    m_arr = np.maximum(np.asarray(m, dtype=np.int64), 1)
    base = c // m_arr
    rem = c % m_arr
    return np.asarray(base + (((pos - rot) % m_arr) < rem), dtype=np.int64)


def _check_counts(counts: NDArray[np.integer[Any]], placement: Placement, replica_policy: str) -> IntArray:
    c = np.asarray(counts)
    ep, n = placement.ep, placement.n_logical
    if c.shape != (ep, n):
        raise SpecError(f"routing counts have shape {c.shape}, the placement needs [{ep}, {n}]")
    if (c < 0).any():
        raise SpecError("routing counts must be >= 0")
    if replica_policy not in REPLICA_POLICIES:
        raise SpecError(
            f"unknown replica policy {replica_policy!r}; allowed: {', '.join(REPLICA_POLICIES)}", field="replica_policy"
        )
    return c.astype(np.int64)


def replica_shares(
    counts: NDArray[np.integer[Any]],
    placement: Placement,
    *,
    replica_policy: str = "even",
    rank_node: IntArray | None = None,
) -> IntArray:
    """Tokens of every source rank for every expert served by each of its replicas.

    Args:
        counts: ``[ep, n]`` tokens from each EP rank to each logical expert.
        placement: where the experts (and their replicas) live.
        replica_policy: ``even`` or ``nearest`` (see module docstring).
        rank_node: ``[ep]`` node of every rank (needed by ``nearest``).

    Returns:
        ``[ep, n, R]`` (``R`` = the most replicas of any expert): the share of replica ``r``
        (slot ``placement.log2phy[e, r]``), 0 where the expert has fewer replicas.
    """
    c = _check_counts(counts, placement, replica_policy)
    ep, n = placement.ep, placement.n_logical
    width = placement.log2phy.shape[1]
    shares = np.zeros((ep, n, width), dtype=np.int64)
    if width == 1:
        shares[:, :, 0] = c
        return shares
    if replica_policy == "nearest":
        if rank_node is None:
            raise SpecError("the 'nearest' replica policy needs the rank -> node map")
        node = np.asarray(rank_node, dtype=np.int64)
    src = np.arange(ep, dtype=np.int64)
    slot_rank = placement.slot_rank
    for e in range(n):
        slots = placement.log2phy[e][placement.log2phy[e] >= 0]
        m = slots.size
        dst = slot_rank[slots]  # [m]
        if replica_policy == "even":
            share = _split(c[:, e][:, None], m, src[:, None], np.arange(m)[None, :])  # [ep, m]
        else:
            tier = np.where(dst[None, :] == src[:, None], 0, np.where(node[dst][None, :] == node[:, None], 1, 2))
            cand = tier == tier.min(axis=1, keepdims=True)
            k = cand.sum(axis=1, keepdims=True)
            pos = np.cumsum(cand, axis=1) - 1
            share = np.where(cand, _split(c[:, e][:, None], k, src[:, None], pos), 0)
        shares[:, e, :m] = share
    return shares


def rank_token_matrix(
    counts: NDArray[np.integer[Any]],
    placement: Placement,
    *,
    replica_policy: str = "even",
    rank_node: IntArray | None = None,
) -> tuple[IntArray, IntArray]:
    """Tokens per (source rank, destination rank) and per physical slot.

    Args:
        counts: ``[ep, n]`` tokens from each EP rank to each logical expert.
        placement: where the experts (and their replicas) live.
        replica_policy: ``even`` or ``nearest`` (see module docstring).
        rank_node: ``[ep]`` node of every rank (needed by ``nearest``).

    Returns:
        ``tokens [ep, ep]`` and ``slot_tokens [n_phys]`` (int64).
    """
    shares = replica_shares(counts, placement, replica_policy=replica_policy, rank_node=rank_node)
    return _tokens_from_shares(shares, placement)


def _tokens_from_shares(shares: IntArray, placement: Placement) -> tuple[IntArray, IntArray]:
    ep = placement.ep
    valid = placement.log2phy >= 0  # [n, R]
    slots = placement.log2phy[valid]  # the slot of every (expert, replica)
    per = shares[:, valid]  # [ep, slots]
    slot_tokens = np.zeros(placement.n_phys, dtype=np.int64)
    slot_tokens[slots] = per.sum(axis=0)
    tokens = np.zeros((ep, ep), dtype=np.int64)
    np.add.at(tokens.T, placement.slot_rank[slots], per.T)
    return tokens, slot_tokens


@dataclass(frozen=True)
class DispatchPlan:
    """The EP all-to-all of one (micro-batch, layer): tokens and bytes between ranks.

    Attributes:
        tokens: ``[ep, ep]`` (token, expert) pairs from source rank to the rank serving them
            (what the experts compute).
        dispatch_bytes: ``[ep, ep]`` bytes of the dispatch all-to-all: the dispatcher's token
            copies (:mod:`netsim.moe.dispatchers`) x hidden x bytes per element.
        combine_bytes: ``[ep, ep]`` bytes of the combine all-to-all (= ``dispatch_bytes.T``).
        slot_tokens: ``[n_phys]`` tokens served by every physical expert slot.
        rank_node: ``[ep]`` node of every rank.
        copies: ``[ep, ep]`` token copies the dispatcher sends (``tokens`` for ``alltoall``).
        dedup_exact: the dispatcher's de-duplication was computed from the token sets.
    """

    tokens: IntArray
    dispatch_bytes: FloatArray
    combine_bytes: FloatArray
    slot_tokens: IntArray
    rank_node: IntArray
    copies: IntArray | None = None
    dedup_exact: bool = True

    @property
    def rank_tokens(self) -> IntArray:
        """Tokens each rank's experts process (column sums)."""
        return np.asarray(self.tokens.sum(axis=0), dtype=np.int64)

    def bytes_by_locality(self) -> dict[str, float]:
        """Dispatch bytes that stay on the rank, stay on the node (other rank), cross nodes."""
        return _locality(self.dispatch_bytes, self.rank_node)


def _locality(matrix: NDArray[np.floating[Any]] | IntArray, node: IntArray) -> dict[str, float]:
    m = np.asarray(matrix, dtype=np.float64)
    same_rank = float(np.trace(m))
    same_node = float(m[node[:, None] == node[None, :]].sum()) - same_rank
    total = float(m.sum())
    return {"same_rank": same_rank, "same_node": same_node, "cross_node": total - same_rank - same_node}


def dispatch_plan(
    counts: NDArray[np.integer[Any]],
    placement: Placement,
    *,
    hidden: int,
    bytes_per_element: float = 2.0,
    replica_policy: str = "even",
    ranks_per_node: int | None = None,
    rank_node: NDArray[np.integer[Any]] | None = None,
    dispatcher: str = "alltoall",
    token_experts: NDArray[np.integer[Any]] | None = None,
    top_k: int | None = None,
) -> DispatchPlan:
    """Dispatch and combine byte matrices for routing ``counts [ep, n]`` on ``placement``.

    Bytes = token copies * ``hidden`` * ``bytes_per_element`` (2 for bf16); the copies are what
    ``dispatcher`` sends (:mod:`netsim.moe.dispatchers`: one per (token, expert) for
    ``alltoall``; de-duplicated per destination rank or node from ``token_experts`` ``[ep, T,
    k]``, the experts of every kept (token, slot), or from the counts when ``top_k`` is 1).  The
    node of a rank is ``rank_node[rank]`` if given, else ``rank // ranks_per_node`` (one node if
    neither).
    """
    if hidden < 1 or bytes_per_element <= 0:
        raise SpecError(f"hidden ({hidden}) and bytes_per_element ({bytes_per_element}) must be > 0")
    node = rank_nodes(placement.ep, ranks_per_node if ranks_per_node else placement.ep, rank_node)
    if token_experts is None or not DISPATCHERS.get(dispatcher).dedups:
        return _dispatch_plan(
            counts, placement, node, hidden, bytes_per_element, replica_policy, dispatcher, None, top_k
        )
    key: tuple[Any, ...] = (id(counts), id(token_experts), id(placement), node.tobytes())
    key += (hidden, bytes_per_element, replica_policy, dispatcher, top_k)
    hit = _PLAN_MEMO.get(key)
    if hit is not None and hit[0]() is counts and hit[1]() is token_experts and hit[2]() is placement:
        return hit[3]
    plan = _dispatch_plan(
        counts, placement, node, hidden, bytes_per_element, replica_policy, dispatcher, token_experts, top_k
    )
    for arr in (plan.tokens, plan.dispatch_bytes, plan.combine_bytes, plan.slot_tokens, plan.copies):
        if arr is not None:
            arr.flags.writeable = False
    try:
        refs = (weakref.ref(counts), weakref.ref(token_experts), weakref.ref(placement))
    except TypeError:  # e.g. a list: no identity to remember
        return plan
    _PLAN_MEMO[key] = (*refs, plan)
    while len(_PLAN_MEMO) > PLAN_MEMO_SIZE:
        del _PLAN_MEMO[next(iter(_PLAN_MEMO))]
    return plan


#: plans of de-duplicating dispatchers remembered by :func:`dispatch_plan` (the routings of the
#: MoE layers of a pipeline stage and more; a plan is a few ``[ep, ep]`` matrices)
PLAN_MEMO_SIZE = 256
_PLAN_MEMO: dict[tuple[Any, ...], tuple[Any, Any, Any, DispatchPlan]] = {}


def _dispatch_plan(
    counts: NDArray[np.integer[Any]],
    placement: Placement,
    node: IntArray,
    hidden: int,
    bytes_per_element: float,
    replica_policy: str,
    dispatcher: str,
    token_experts: NDArray[np.integer[Any]] | None,
    top_k: int | None,
) -> DispatchPlan:
    shares = replica_shares(counts, placement, replica_policy=replica_policy, rank_node=node)
    tokens, slot_tokens = _tokens_from_shares(shares, placement)
    dest = None
    if token_experts is not None and DISPATCHERS.get(dispatcher).dedups:
        dest = token_destinations(token_experts, placement, shares)
    sent = dispatcher_copies(dispatcher, tokens, node, dest_rank=dest, single_expert=top_k == 1)
    dispatch = sent.copies.astype(np.float64) * float(hidden) * float(bytes_per_element)
    return DispatchPlan(tokens, dispatch, dispatch.T.copy(), slot_tokens, node, sent.copies, sent.exact)


def padded_tokens(placement: Placement, capacity: int) -> IntArray:
    """``[ep, ep]`` token rows of capacity-padded buffers: every source sends every physical
    expert slot a buffer of ``capacity`` rows, full or not (fixed-shape all-to-all)."""
    per_rank = np.bincount(placement.slot_rank, minlength=placement.ep).astype(np.int64)
    return np.tile(per_rank * int(capacity), (placement.ep, 1))


def load_stats(load: NDArray[np.integer[Any]] | NDArray[np.floating[Any]]) -> dict[str, float]:
    """``max/mean`` and coefficient of variation (population std / mean) of a load vector."""
    x = np.asarray(load, dtype=np.float64)
    mean = float(x.mean()) if x.size else 0.0
    if mean == 0.0:
        return {"max_mean": float("nan"), "cv": float("nan")}
    return {"max_mean": float(x.max() / mean), "cv": float(x.std() / mean)}


@dataclass(frozen=True)
class RoutingMetrics:
    """Load and locality summary of one routing (see :func:`routing_metrics`)."""

    tokens: int
    dropped: int
    drop_rate: float
    expert_load_max_mean: float
    expert_load_cv: float
    unused_experts: int
    rank_load_max_mean: float
    rank_load_cv: float
    share_same_rank: float
    share_same_node: float
    share_cross_node: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def routing_metrics(
    counts: NDArray[np.integer[Any]],
    placement: Placement,
    *,
    dropped: NDArray[np.integer[Any]] | int | None = None,
    replica_policy: str = "even",
    ranks_per_node: int | None = None,
    rank_node: NDArray[np.integer[Any]] | None = None,
) -> RoutingMetrics:
    """Load balance, drops and locality of routing ``counts [ep, n]`` on ``placement``.

    ``dropped`` is the number (or ``[ep, n]`` matrix) of dropped assignments; the drop rate is
    ``dropped / (kept + dropped)``.  Load statistics are over logical experts (``expert_*``)
    and over the tokens every rank serves (``rank_*``, after replica splitting).
    """
    plan = dispatch_plan(
        counts,
        placement,
        hidden=1,
        bytes_per_element=1.0,
        replica_policy=replica_policy,
        ranks_per_node=ranks_per_node,
        rank_node=rank_node,
    )
    c = np.asarray(counts, dtype=np.int64)
    kept = int(c.sum())
    lost = 0 if dropped is None else int(np.asarray(dropped, dtype=np.int64).sum())
    expert = load_stats(c.sum(axis=0))
    rank = load_stats(plan.rank_tokens)
    loc = plan.bytes_by_locality()
    total = sum(loc.values())
    shares = {k: (v / total if total else float("nan")) for k, v in loc.items()}
    return RoutingMetrics(
        tokens=kept,
        dropped=lost,
        drop_rate=lost / (kept + lost) if kept + lost else 0.0,
        expert_load_max_mean=expert["max_mean"],
        expert_load_cv=expert["cv"],
        unused_experts=int(np.count_nonzero(c.sum(axis=0) == 0)),
        rank_load_max_mean=rank["max_mean"],
        rank_load_cv=rank["cv"],
        share_same_rank=shares["same_rank"],
        share_same_node=shares["same_node"],
        share_cross_node=shares["cross_node"],
    )
