"""Which ranks a plan builds ops for, and how a built rank stands for others (lockstep).

A plan either builds the ops of every rank (:class:`EveryRank`, the exact plan) or, with
``options.lockstep``, of one rank per *unit* (:class:`Lockstep`): the fewest consecutive ranks
of a pipeline stage that hold whole all-to-all, TP and expert-TP groups, tied together by every
layer's all-to-alls and TP collectives (``lcm(ep, tp)`` ranks with Megatron's layout: an EP
group), or the whole stage of a dense model, whose ranks all have the same op times. The built
rank (the unit's first, its *representative*) stands for the unit:

* its expert compute lasts as long as the unit's slowest rank's (every rank's duration is kept
  for the accounting, :attr:`~netsim.workload.plan.Op.lane_durations_s`);
* every layer collective and transfer it joins is the merge of the unit's instances of it
  (:attr:`~netsim.workload.plan.Collective.instances`: the EP all-to-alls, every rank's
  pipeline transfers and checkpoint write, the TP groups), which start together when the
  members have arrived;
* gradient reductions stay per rank, each on a stream of its own
  (:meth:`Lockstep.lane_collectives`): their groups (one per TP rank, one per EP position)
  progress independently, bucket after bucket; merged into one op they would all wait for the
  slowest group at every bucket (LocMoE, 8 nodes: +31% step time).

Every byte of the exact plan is still sent; what is lost is the drift of a unit's ranks apart (a
rank with a light expert load running ahead into its next op).  A DeepSeek-V3 step on 2048
GPUs: 3.3M ops -> 81k.  The policy is an object the builder is given and asks; only the expert
token counts and expert compute look at :attr:`Lanes.lockstep` (one lane or the unit's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from netsim.workload.plan import Collective, Deps, Instance, Make

if TYPE_CHECKING:
    from netsim.workload.emit import OpEmitter

__all__ = ["EveryRank", "Lanes", "Lockstep", "make_lanes"]

T = TypeVar("T")


def _made(make: Make) -> Collective:
    return make if isinstance(make, Collective) else make()


class Lanes:
    """The exact plan: every rank has its own ops (base class of the lockstep policy).

    Args:
        world: the number of ranks.
        unit: ranks one built rank stands for (1 here).
    """

    lockstep = False

    def __init__(self, world: int, unit: int = 1) -> None:
        self.world = world
        self.unit = unit
        #: the ranks whose ops are built
        self.reps = list(range(0, world, unit))

    def rep_of(self, rank: int) -> int:
        """The rank whose ops stand for ``rank``."""
        return rank - rank % self.unit

    def lanes(self, rank: int, kind: str) -> list[int]:
        """The ranks ``rank`` stands for, one per distinct group of ``kind`` (itself here)."""
        return [rank]

    def collective(self, key: tuple[Any, ...], make: Make, rank: int, lanes: tuple[str, Instance] | None) -> Collective:
        """The collective ``key`` as ``rank`` joins it (``make`` the first time)."""
        return _made(make)

    def merge(self, key: tuple[Any, ...], parts: list[tuple[tuple[Any, ...], Make]]) -> Collective:
        """One op's collective made of ``parts`` (here: the one part there is)."""
        if len(parts) != 1:
            raise ValueError(f"{key}: an exact plan merges no collectives")
        return _made(parts[0][1])

    def batches(self, items: list[T]) -> list[list[T]]:
        """``items`` (one per op of an exact plan) grouped by the op that issues them."""
        return [[it] for it in items]

    def per_lane(self, kind: str) -> bool:
        """Do collectives over groups of ``kind`` stay per rank (own op and stream)?"""
        return False

    def lane_collectives(
        self, emit: OpEmitter, rank: int, step: int, stream: str, deps: Deps, instance: Instance
    ) -> Deps:
        raise NotImplementedError("only lockstep plans have per-lane collectives")


class EveryRank(Lanes):
    """The exact plan (every rank builds its own ops)."""


class Lockstep(Lanes):
    """One rank per unit of ``unit`` consecutive ranks stands for the unit (module docstring)."""

    lockstep = True

    #: group kinds whose collectives stay per rank (an op and a stream per rank of the unit)
    PER_LANE = frozenset({"dp", "edp"})
    #: group kinds a unit holds whole groups of (one lane per distinct group)
    GROUPED = frozenset({"ep", "a2a", "tp", "cp", "cp-a2a", "cp-p2p", "etp"})

    def __init__(self, world: int, unit: int, group_of: Callable[[str, int], int]) -> None:
        super().__init__(world, unit)
        self.group_of = group_of
        #: per (representative, stream): -1 -> the last shared op, lane -> its last own op
        self.front: dict[tuple[int, str], dict[int, int]] = {}
        self.holds_cache: dict[tuple[int, ...], bool] = {}
        self._lanes: dict[tuple[int, str], list[int]] = {}

    def lanes(self, rank: int, kind: str) -> list[int]:
        """Ranks of ``rank``'s unit, one per distinct group of ``kind`` (``ep``, ``a2a``, ``tp``,
        ``cp`` and its levels ``cp-a2a``, ``cp-p2p``, ``etp``: the unit holds whole groups of
        these); any other kind: every rank of the unit."""
        base = self.rep_of(rank)
        got = self._lanes.get((base, kind))
        if got is None:
            ranks = range(base, base + self.unit)
            if kind not in self.GROUPED:
                got = list(ranks)
            else:
                first: dict[int, int] = {}
                for r in ranks:
                    first.setdefault(self.group_of(kind, r), r)
                got = list(first.values())
            self._lanes[(base, kind)] = got
        return got

    def collective(self, key: tuple[Any, ...], make: Make, rank: int, lanes: tuple[str, Instance] | None) -> Collective:
        """With ``lanes = (kind, instance)`` the merge of the instances of every rank of the unit
        (one per distinct group of ``kind``); else ``make``."""
        if lanes is None:
            return _made(make)
        return self.merge(key, [lanes[1](r) for r in self.lanes(rank, lanes[0])])

    def merge(self, key: tuple[Any, ...], parts: list[tuple[tuple[Any, ...], Make]]) -> Collective:
        """The lockstep collective ``key``: the distinct instances of ``parts``, members = the
        ranks standing for their ranks (``rep_of``)."""
        inst: dict[tuple[Any, ...], Collective] = {}
        for k, make in parts:
            if k not in inst:
                inst[k] = _made(make)
        colls = list(inst.values())
        own = inst.get(key, colls[0])
        members = tuple(sorted({self.rep_of(r) for c in colls for r in c.ranks}))
        return replace(
            own,
            key=key,
            ranks=members,
            nbytes=float(sum(c.nbytes for c in colls)),
            local_bytes=float(sum(c.local_bytes for c in colls)),
            matrix=None,
            src=None,
            dst=None,
            instances=tuple(colls),
        )

    def batches(self, items: list[T]) -> list[list[T]]:
        """All of ``items`` in one op (the unit's representative issues them)."""
        return [items] if items else []

    def per_lane(self, kind: str) -> bool:
        return kind in self.PER_LANE

    def lane_collectives(
        self, emit: OpEmitter, rank: int, step: int, stream: str, deps: Deps, instance: Instance
    ) -> Deps:
        """The collectives ``instance(r)`` of the ranks ``r`` of ``rank``'s unit on the stream
        ``stream`` that every rank has of its own in the full plan.

        A group that holds whole units (the dense DP group without TP) gets one op, shared by
        the unit's ranks; otherwise each rank gets an op on a stream of its own
        (``stream.<lane>``).  Explicit dependencies keep each rank's order: a shared op waits
        for the ranks' own ops issued since the last shared op, and a rank's first own op after
        a shared op waits for it."""
        front = self.front.setdefault((rank, stream), {})
        lanes = self.lanes(rank, "rank")
        k0, m0 = instance(lanes[0])
        c0 = _made(m0)
        if len(c0.ranks) > 1 and self._holds_units(c0.ranks):
            own = [v for lane, v in front.items() if lane >= 0]
            ids = emit.comm(rank, step, stream, deps + own, k0, lambda: self.merge(k0, [(k0, c0)]))
            front.clear()
            front[-1] = ids[0]
            return ids
        out: Deps = []
        for i, r in enumerate(lanes):
            k, m = (k0, c0) if i == 0 else instance(r)
            coll = _made(m)
            if len(coll.ranks) <= 1:
                continue
            after = [front[-1]] if i not in front and -1 in front else []
            ids = emit.comm(rank, step, f"{stream}.{i}", deps + after, k, lambda coll=coll: self._one_lane(coll))  # type: ignore[misc]
            emit.ops[ids[0]].lane = i
            front[i] = ids[0]
            out += ids
        return out or deps

    def _holds_units(self, group: tuple[int, ...]) -> bool:
        """Does ``group`` hold every rank of each unit it touches?"""
        hit = self.holds_cache.get(group)
        if hit is None:
            members = set(group)
            hit = all(r in members for rep in {self.rep_of(x) for x in group} for r in range(rep, rep + self.unit))
            self.holds_cache[group] = hit
        return hit

    def _one_lane(self, coll: Collective) -> Collective:
        """``coll`` joined by one op per rank: its members are the ranks' representatives, one
        entry per rank."""
        return replace(coll, ranks=tuple(sorted(self.rep_of(r) for r in coll.ranks)), instances=(coll,))


def make_lanes(lockstep: bool, world: int, unit: int, group_of: Callable[[str, int], int]) -> Lanes:
    """The lane policy of a plan: :class:`Lockstep` with units of ``unit`` ranks (``group_of(kind,
    rank)``: the id of ``rank``'s group of ``kind``), or every rank."""
    return Lockstep(world, unit, group_of) if lockstep else EveryRank(world)
