"""Expert placement: which expert-parallel (EP) rank holds which expert, and its replicas.

With expert parallelism the ``n`` logical experts of a MoE layer are spread over the ``ep``
ranks of an EP group; a token whose expert sits on its own rank never touches the network, one
whose expert sits on another rank of the same node crosses the intra-node fabric (NVLink,
HCCS), all others cross the inter-node fabric.  Placement therefore decides what "local" means.

A placement is a set of *physical expert slots*, ``slots_per_rank`` on every rank; slot ``s``
lives on rank ``s // slots_per_rank`` and holds logical expert ``phy2log[s]``.  With more slots
than experts some experts are *replicated* (redundant experts) and tokens for them can be split
across the replicas (:mod:`netsim.moe.traffic`).

Policies (registry :data:`PLACEMENTS`, built with :func:`make_placement`):

* ``contiguous``: expert ``e`` on rank ``e // (n / ep)`` (Megatron / DeepSpeed default).
* ``round_robin``: expert ``e`` on rank ``e % ep``.
* ``eplb``: DeepSeek's expert-parallel load balancer (docs/modelling.md, Expert placement), from per-layer
  expert loads.  *Balanced packing* puts items, heaviest first, into the lightest pack that
  still has room (every pack gets exactly ``items / packs`` items).  *Replication* adds one
  replica at a time to the expert with the largest ``load / replicas``.  The *hierarchical*
  policy (when expert groups divide evenly over nodes) packs expert groups onto nodes,
  replicates experts inside each node, then packs the replicas onto the node's GPUs; the
  *global* policy does the same with one group and one node.  ``eplb_hierarchical`` and
  ``eplb_global`` force a policy.

Ties are broken deterministically: equal loads keep their index order and equal packs or
experts prefer the lowest index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.registry import Registry

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = [
    "PLACEMENTS",
    "Placement",
    "balanced_packing",
    "contiguous_placement",
    "eplb",
    "eplb_placements",
    "make_placement",
    "placement_names",
    "rank_nodes",
    "replicate_experts",
    "round_robin_placement",
]


def rank_nodes(
    ep: int, ranks_per_node: int | None = None, rank_node: Sequence[int] | NDArray[np.integer[Any]] | None = None
) -> IntArray:
    """The node of every EP rank: ``rank_node`` if given, else ``rank // ranks_per_node``."""
    if rank_node is not None:
        arr = np.asarray(rank_node, dtype=np.int64)
        if arr.shape != (ep,):
            raise SpecError(f"rank_node must list the node of each of the {ep} ranks (got shape {arr.shape})")
        if arr.size and arr.min() < 0:
            raise SpecError("rank_node entries must be >= 0")
        return arr
    if ranks_per_node is None or ranks_per_node < 1:
        raise SpecError(f"ranks_per_node must be >= 1 (got {ranks_per_node})", field="ranks_per_node")
    return np.arange(ep, dtype=np.int64) // int(ranks_per_node)


@dataclass(frozen=True)
class Placement:
    """Experts (and replicas) of one MoE layer on the ranks of an EP group.

    Attributes:
        phy2log: ``[n_phys]`` logical expert held by each physical slot.
        ep: number of EP ranks; slot ``s`` lives on rank ``s // (n_phys / ep)``.
        n_logical: number of logical experts.
        name: the policy that produced it.
        log2phy: ``[n_logical, max_replicas]`` the slots of each expert, padded with ``-1``.
        replica_counts: ``[n_logical]`` replicas per expert (>= 1).
    """

    phy2log: IntArray
    ep: int
    n_logical: int
    name: str = "custom"
    log2phy: IntArray = field(init=False)
    replica_counts: IntArray = field(init=False)

    def __post_init__(self) -> None:
        p = np.asarray(self.phy2log, dtype=np.int64)
        object.__setattr__(self, "phy2log", p)
        if p.ndim != 1 or self.ep < 1 or p.size % self.ep:
            raise SpecError(f"placement: {p.size} slots cannot be spread evenly over ep={self.ep} ranks")
        if p.size and (p.min() < 0 or p.max() >= self.n_logical):
            raise SpecError(f"placement: slots must hold experts in [0, {self.n_logical})")
        counts = np.bincount(p, minlength=self.n_logical).astype(np.int64)
        if (counts == 0).any():
            missing = np.flatnonzero(counts == 0)[:5].tolist()
            raise SpecError(f"placement: experts {missing} have no slot")
        width = int(counts.max())
        log2phy = np.full((self.n_logical, width), -1, dtype=np.int64)
        order = np.argsort(p, kind="stable")
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        col = np.arange(p.size) - np.repeat(starts, counts)
        log2phy[p[order], col] = order
        object.__setattr__(self, "log2phy", log2phy)
        object.__setattr__(self, "replica_counts", counts)

    @property
    def n_phys(self) -> int:
        return int(self.phy2log.size)

    @property
    def slots_per_rank(self) -> int:
        return self.n_phys // self.ep

    @property
    def slot_rank(self) -> IntArray:
        """``[n_phys]`` the rank of every physical slot."""
        return np.arange(self.n_phys, dtype=np.int64) // self.slots_per_rank

    @property
    def expert_rank(self) -> IntArray:
        """``[n_logical]`` the rank of each expert's first replica."""
        return np.asarray(self.slot_rank[self.log2phy[:, 0]], dtype=np.int64)

    def replica_ranks(self, expert: int) -> IntArray:
        """Ranks holding a replica of ``expert`` (one entry per replica, slot order)."""
        slots = self.log2phy[expert]
        return np.asarray(self.slot_rank[slots[slots >= 0]], dtype=np.int64)

    def experts_on_rank(self, rank: int) -> IntArray:
        """Logical experts held by ``rank`` (slot order, duplicates possible)."""
        s = self.slots_per_rank
        return np.asarray(self.phy2log[rank * s : (rank + 1) * s], dtype=np.int64)

    def local_experts(self, rank_node: IntArray) -> list[list[int]]:
        """For every rank, the sorted logical experts with a replica on the rank's node."""
        node_of_slot = rank_node[self.slot_rank]
        out: list[list[int]] = []
        for r in range(self.ep):
            out.append(sorted(set(self.phy2log[node_of_slot == rank_node[r]].tolist())))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ep": self.ep,
            "n_logical": self.n_logical,
            "phy2log": self.phy2log.tolist(),
            "replica_counts": self.replica_counts.tolist(),
        }


def _check_divisible(n: int, ep: int, what: str) -> None:
    if ep < 1:
        raise SpecError(f"ep must be >= 1 (got {ep})", field="ep")
    if n < 1 or n % ep:
        raise SpecError(f"{what}: experts ({n}) must be a positive multiple of ep ({ep})", field="experts")


def contiguous_placement(n_experts: int, ep: int) -> Placement:
    """Expert ``e`` on rank ``e // (n / ep)``."""
    _check_divisible(n_experts, ep, "contiguous placement")
    return Placement(np.arange(n_experts, dtype=np.int64), ep, n_experts, "contiguous")


def round_robin_placement(n_experts: int, ep: int) -> Placement:
    """Expert ``e`` on rank ``e % ep`` (slot ``(e % ep) * n/ep + e // ep``)."""
    _check_divisible(n_experts, ep, "round-robin placement")
    per = n_experts // ep
    phy2log = np.arange(n_experts, dtype=np.int64).reshape(per, ep).T.reshape(-1)
    return Placement(phy2log, ep, n_experts, "round_robin")


# --------------------------------------------------------------------------------------------
# EPLB
# --------------------------------------------------------------------------------------------


def balanced_packing(weight: NDArray[np.floating[Any]], num_packs: int) -> tuple[IntArray, IntArray]:
    """Pack ``m`` weighted items into ``num_packs`` packs of exactly ``m / num_packs`` items.

    Items are taken by weight, heaviest first (stable), each into the lightest pack that
    still has room (ties: lowest pack index).

    Args:
        weight: ``[rows, m]`` item weights (one independent problem per row).
    Returns:
        ``pack_index [rows, m]`` and ``rank_in_pack [rows, m]`` (order of arrival in the pack).
    """
    w = np.asarray(weight, dtype=np.float64)
    rows, m = w.shape
    if num_packs < 1 or m % num_packs:
        raise SpecError(f"balanced packing: {m} items do not split evenly into {num_packs} packs")
    per = m // num_packs
    pack_index = np.empty((rows, m), dtype=np.int64)
    rank_in_pack = np.empty((rows, m), dtype=np.int64)
    if per == 1:
        pack_index[:] = np.arange(m)
        rank_in_pack[:] = 0
        return pack_index, rank_in_pack
    for i in range(rows):
        load = np.zeros(num_packs)
        items = np.zeros(num_packs, dtype=np.int64)
        for item in np.argsort(-w[i], kind="stable"):
            room = np.flatnonzero(items < per)
            pack = int(room[np.argmin(load[room])])
            pack_index[i, item] = pack
            rank_in_pack[i, item] = items[pack]
            load[pack] += w[i, item]
            items[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight: NDArray[np.floating[Any]], num_phys: int) -> tuple[IntArray, IntArray, IntArray]:
    """Grow ``n`` logical experts to ``num_phys`` physical ones, minimising the max load per replica.

    Each extra replica goes to the expert with the largest ``load / replicas`` (ties: lowest
    index).

    Returns:
        ``phy2log [rows, num_phys]``, ``replica_index [rows, num_phys]`` (which replica of its
        expert a slot is) and ``counts [rows, n]``.
    """
    w = np.asarray(weight, dtype=np.float64)
    rows, n = w.shape
    if num_phys < n:
        raise SpecError(f"replication: {num_phys} physical slots cannot hold {n} experts")
    phy2log = np.tile(np.arange(num_phys, dtype=np.int64), (rows, 1))
    rank = np.zeros((rows, num_phys), dtype=np.int64)
    counts = np.ones((rows, n), dtype=np.int64)
    ar = np.arange(rows)
    for i in range(n, num_phys):
        best = np.argmax(w / counts, axis=-1)
        phy2log[:, i] = best
        rank[:, i] = counts[ar, best]
        counts[ar, best] += 1
    return phy2log, rank, counts


def _inverse(perm: IntArray) -> IntArray:
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.broadcast_to(np.arange(perm.shape[1]), perm.shape), axis=1)
    return inv


def _eplb_hierarchical(
    weight: FloatArray, num_phys: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[IntArray, IntArray, IntArray]:
    layers, n = weight.shape
    if n % num_groups:
        raise SpecError(f"eplb: {num_groups} groups do not divide {n} experts", field="num_groups")
    if num_groups % num_nodes:
        raise SpecError(f"eplb: {num_nodes} nodes do not divide {num_groups} groups", field="num_groups")
    if num_gpus % num_nodes:
        raise SpecError(f"eplb: {num_nodes} nodes do not divide {num_gpus} GPUs", field="num_nodes")
    if num_phys % num_gpus:
        raise SpecError(f"eplb: {num_phys} slots do not split evenly over {num_gpus} GPUs", field="num_replicas")
    group_size = n // num_groups
    groups_per_node = num_groups // num_nodes
    phys_per_gpu = num_phys // num_gpus
    if (num_phys // num_nodes) < n // num_nodes:
        raise SpecError(f"eplb: {num_phys} slots cannot hold {n} experts", field="num_replicas")

    # 1. expert groups -> nodes (balanced packing on group loads)
    group_load = weight.reshape(layers, num_groups, group_size).sum(-1)
    g_pack, g_rank = balanced_packing(group_load, num_nodes)
    log2mlog = (((g_pack * groups_per_node + g_rank) * group_size)[:, :, None] + np.arange(group_size)).reshape(
        layers, n
    )
    mlog2log = _inverse(log2mlog)

    # 2. replicate experts inside each node ("mlog" = node-major logical order)
    mlog_load = np.take_along_axis(weight, mlog2log, axis=-1).reshape(-1, n // num_nodes)
    phy2mlog, phy_rank, mlog_cnt = replicate_experts(mlog_load, num_phys // num_nodes)

    # 3. replicas -> GPUs of the node (balanced packing on load / replicas)
    phy_load = np.take_along_axis(mlog_load / mlog_cnt, phy2mlog, axis=-1)
    p_pack, p_rank = balanced_packing(phy_load, num_gpus // num_nodes)
    phy2pphy = p_pack * phys_per_gpu + p_rank
    pphy2phy = _inverse(phy2pphy)

    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, axis=-1)
    pphy2mlog = (pphy2mlog.reshape(layers, num_nodes, -1) + np.arange(0, n, n // num_nodes)[None, :, None]).reshape(
        layers, -1
    )
    pphy2log = np.take_along_axis(mlog2log, pphy2mlog, axis=-1)
    pphy_rank = np.take_along_axis(phy_rank, pphy2phy, axis=-1).reshape(layers, -1)
    log_cnt = np.take_along_axis(mlog_cnt.reshape(layers, -1), log2mlog, axis=-1)
    return pphy2log, pphy_rank, log_cnt


def eplb(
    weight: NDArray[np.floating[Any]],
    num_replicas: int,
    num_groups: int,
    num_nodes: int,
    num_gpus: int,
    policy: str = "auto",
) -> tuple[IntArray, IntArray, IntArray]:
    """DeepSeek EPLB: balance ``[layers, n]`` expert loads over ``num_gpus`` GPUs.

    Args:
        weight: ``[layers, n]`` load (e.g. tokens) of every logical expert per layer.
        num_replicas: physical expert slots in total (>= n; multiple of ``num_gpus``).
        num_groups: expert groups (for node-limited routing); ``policy="auto"`` uses the
            hierarchical policy when ``num_groups % num_nodes == 0``, else the global one.
        num_nodes, num_gpus: nodes and GPUs (EP ranks) of the EP group.
        policy: ``auto``, ``hierarchical`` or ``global``.

    Returns:
        ``phy2log [layers, num_replicas]``, ``log2phy [layers, n, max_replicas]`` (padded with
        ``-1``) and ``replica_counts [layers, n]``.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2:
        raise SpecError(f"eplb: weight must be [layers, experts] (got shape {w.shape})")
    if (w < 0).any() or not np.isfinite(w).all():
        raise SpecError("eplb: expert loads must be finite and >= 0")
    layers, n = w.shape
    if num_replicas < n:
        raise SpecError(f"eplb: num_replicas ({num_replicas}) < experts ({n})", field="num_replicas")
    if policy not in ("auto", "hierarchical", "global"):
        raise SpecError(f"eplb: unknown policy {policy!r}; allowed: auto, hierarchical, global", field="policy")
    hierarchical = policy == "hierarchical" or (policy == "auto" and num_groups % num_nodes == 0)
    if hierarchical:
        phy2log, phy_rank, log_cnt = _eplb_hierarchical(w, num_replicas, num_groups, num_nodes, num_gpus)
    else:
        phy2log, phy_rank, log_cnt = _eplb_hierarchical(w, num_replicas, 1, 1, num_gpus)
    max_rep = num_replicas - n + 1
    log2phy = np.full((layers, n * max_rep), -1, dtype=np.int64)
    np.put_along_axis(
        log2phy, phy2log * max_rep + phy_rank, np.broadcast_to(np.arange(num_replicas), phy2log.shape), axis=1
    )
    return phy2log, log2phy.reshape(layers, n, max_rep), log_cnt


def eplb_placements(
    weight: NDArray[np.floating[Any]],
    ep: int,
    *,
    num_redundant: int = 0,
    num_groups: int = 1,
    num_nodes: int = 1,
    policy: str = "auto",
) -> list[Placement]:
    """One :class:`Placement` per layer from EPLB over ``ep`` ranks with redundant experts."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    n = w.shape[1]
    phy2log, _, _ = eplb(w, n + num_redundant, num_groups, num_nodes, ep, policy)
    name = "eplb" if policy == "auto" else f"eplb_{policy}"
    return [Placement(row, ep, n, name) for row in phy2log]


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def _eplb_factory(policy: str) -> Callable[..., Placement]:
    def build(
        n_experts: int,
        ep: int,
        *,
        load: Sequence[float] | NDArray[np.floating[Any]] | None = None,
        num_redundant: int = 0,
        num_groups: int = 1,
        num_nodes: int = 1,
    ) -> Placement:
        if load is None:
            raise SpecError("eplb placement needs the expert load (e.g. from a routing trace)", field="load")
        w = np.asarray(load, dtype=np.float64).reshape(1, -1)
        if w.shape[1] != n_experts:
            raise SpecError(f"eplb: load has {w.shape[1]} entries, expected {n_experts}", field="load")
        return eplb_placements(
            w, ep, num_redundant=num_redundant, num_groups=num_groups, num_nodes=num_nodes, policy=policy
        )[0]

    return build


def _simple(fn: Callable[[int, int], Placement]) -> Callable[..., Placement]:
    def build(
        n_experts: int,
        ep: int,
        *,
        load: Sequence[float] | NDArray[np.floating[Any]] | None = None,
        num_redundant: int = 0,
        num_groups: int = 1,
        num_nodes: int = 1,
    ) -> Placement:
        # load / groups / nodes are accepted (and unused) so callers can pass one set of options
        if num_redundant:
            raise SpecError("redundant experts need an eplb placement", field="num_redundant")
        return fn(n_experts, ep)

    return build


PLACEMENTS: Registry[Callable[..., Placement]] = Registry("placement", field="placement", sort_names=True)
PLACEMENTS.add("contiguous", _simple(contiguous_placement))
PLACEMENTS.add("round_robin", _simple(round_robin_placement))
PLACEMENTS.add("eplb", _eplb_factory("auto"))
PLACEMENTS.add("eplb_hierarchical", _eplb_factory("hierarchical"))
PLACEMENTS.add("eplb_global", _eplb_factory("global"))


def placement_names() -> list[str]:
    """Registered placement names, sorted."""
    return PLACEMENTS.names()


def make_placement(name: str, n_experts: int, ep: int, **kwargs: Any) -> Placement:
    """Build a placement by registry name.

    ``eplb*`` take ``load`` (``[n]`` expert loads), ``num_redundant``, ``num_groups`` and
    ``num_nodes``; ``contiguous`` and ``round_robin`` take nothing else.
    """
    return PLACEMENTS.get(name)(n_experts, ep, **kwargs)
