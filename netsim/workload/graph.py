"""Per-rank op graphs of training steps: compute ops, collectives, dependencies and streams.

:func:`build_plan` expands a :class:`~netsim.config.workload.WorkloadSpec` on a topology into a
:class:`StepPlan`: a flat list of :class:`Op` (pure data, no simulation) that
:mod:`netsim.replay` executes.

An op belongs to one rank and one *stream*.  Ops of an *ordered* stream start in issue order
(like a CUDA stream): ``compute``, ``tp``, ``ep.dispatch``, ``ep.combine``, ``dp.<block>``.
Point-to-point pipeline transfers (``pp``), storage reads and checkpoint writes are
*unordered* (asynchronous ``isend``/``irecv``): only their dependencies hold them.  ``deps``
are op ids (any rank: a stage's first forward waits for the storage read its node's host did).

Comm ops carry a :class:`Collective` shared by all its members; the replay starts it when
every member has reached it (a per-collective barrier, which is how NCCL behaves).

What one step contains (REFERENCE.md section 1):

* per micro-batch and layer, following the pipeline schedule's order of F / B / W actions:
  compute (kernel calls, see :mod:`netsim.workload.costs`); with ``tp > 1`` the Megatron
  sequence-parallel all-gather before and reduce-scatter after attention and the dense MLP;
  for MoE layers the four expert all-to-all(v)s (``fwd-dispatch``, ``fwd-combine``,
  ``bwd-dispatch`` = gradient of the combine, ``bwd-combine`` = gradient of the dispatch)
  with the byte matrices of the router + placement, split into ``ep_overlap_slices`` slices
  (slice *i+1*'s dispatch runs while slice *i*'s experts compute);
* pipeline send/recv of activations (forward) and gradients (backward) between neighbouring
  virtual stages, ``micro_batch_size * seq_len * hidden`` elements (``/ tp`` with sequence
  parallelism);
* DP gradient reduction per bucket of ``grad_bucket_bytes``, issued as the last micro-batch's
  weight gradients of a block complete (or after the backward when not overlapped): all-reduce
  (ZeRO 0) or reduce-scatter (ZeRO 1-3) over the DP group for dense parameters and over the
  expert-DP group for expert parameters; then the optimizer; with ZeRO 1/2 the all-gather of
  the updated parameters; with ZeRO 3 a parameter all-gather before every layer's forward and
  backward;
* a step barrier (the global gradient-norm reduction that clipping needs; negligible bytes);
* storage: every step the hosts read the next step's batch from front-end storage
  (prefetched: step s+1's first forward waits for the read issued at the start of step s);
* checkpoint (every K steps): each rank's share of the model (and optimizer) state, from the
  hosts to front-end storage or from the accelerators to back-end storage, written in the
  background during the next step (or synchronously at the end of the step).

**Lockstep plans** (``lockstep=True``; the scenario's ``options.lockstep``), an opt-in
approximation for large clusters.  The ranks of a pipeline stage run the same op sequence apart
from their expert loads, and the ranks of a *unit* (``lcm(ep, tp)`` consecutive ranks: an EP
group, or the whole stage of a dense model) meet at every layer's all-to-alls and TP
collectives anyway.  A lockstep plan builds the ops of one rank per unit (its first) and lets
it stand for the unit: its expert compute is the unit's slowest (every rank's duration is kept
for the accounting); every layer collective and transfer it joins is the merge of the unit's
collectives (:attr:`Collective.instances`: the EP all-to-alls, every rank's pipeline transfers
and checkpoint write, the TP groups), which start together when the members have arrived;
gradient reductions stay per rank, each on a stream of its own (:meth:`_Builder._lane_colls`).
Every byte of the exact plan is still sent; what is lost is the drift of a unit's ranks apart
(a rank with a light expert load running ahead into its next op).  A DeepSeek-V3 step on 2048
GPUs: 3.3M ops -> 81k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx
import numpy as np

from netsim.config.workload import WorkloadSpec
from netsim.errors import WorkloadError
from netsim.workload.costs import KernelCall, ModelCosts, Part, TimeModel, kernels_time_s
from netsim.workload.layout import ParallelLayout, build_layout
from netsim.workload.moe_traffic import EPRouting
from netsim.workload.schedules import Action, Schedule, get_schedule

__all__ = ["TRAFFIC_CLASSES", "Collective", "Op", "StepPlan", "build_plan", "split_layers"]

#: Traffic classes of a training step, in report order.
TRAFFIC_CLASSES: tuple[str, ...] = ("dp", "pp", "ep", "tp", "storage", "checkpoint")

COMPUTE = "compute"


@dataclass(eq=False, slots=True)
class Collective:
    """One communication shared by its member ops.

    Attributes:
        key: unique identity (every member computes the same key).
        op: a ``run_collective`` op (``all_reduce``, ``reduce_scatter``, ``all_gather``,
            ``all_to_allv``), ``transfer`` (one point-to-point flow ``src -> dst``) or
            ``barrier`` (synchronisation only, no bytes).
        ranks: the members that must all arrive before it starts.
        nbytes: size in the nccl-tests convention of ``op`` (bytes).
        matrix: ``all_to_allv`` bytes ``[i][j]`` from ``ranks[i]`` to ``ranks[j]`` (zero
            diagonal: bytes that stay on a rank never touch the network).
        src, dst: device names of a ``transfer``.
        local_bytes: EP bytes that stay on their rank (the matrix diagonal), for accounting.
        instances: lockstep plans (:func:`build_plan` with ``lockstep``): the collectives of
            every rank a member stands for, which run at once when the members have arrived
            (``ranks`` are then the members, ``nbytes`` and ``local_bytes`` the instances' sums).
    """

    key: tuple[Any, ...]
    op: str
    ranks: tuple[int, ...]
    nbytes: float
    traffic_class: str
    label: str
    matrix: np.ndarray | None = None
    src: str | None = None
    dst: str | None = None
    phase: str = ""
    layer: int = -1
    microbatch: int = -1
    step: int = 0
    slice: int = 0
    local_bytes: float = 0.0
    network: str = "backend"
    instances: tuple[Collective, ...] = ()


@dataclass(eq=False, slots=True)
class Op:
    """One op of one rank's step (see the module docstring)."""

    id: int
    rank: int
    step: int
    kind: str  # compute | comm | barrier
    stream: str
    name: str
    traffic_class: str = ""
    layer: int = -1
    microbatch: int = -1
    deps: list[int] = field(default_factory=list)
    duration_s: float = 0.0
    #: lockstep plans: the op's duration on each rank of the stage, where they differ (expert
    #: compute); ``duration_s`` is their maximum
    lane_durations_s: np.ndarray | None = None
    #: lockstep plans: the rank of the unit (index from the representative) this op belongs to
    #: alone (its gradient reductions), or -1: every rank the representative stands for
    lane: int = -1
    ordered: bool = True
    coll: Collective | None = None
    issue: int = 0
    background: bool = False  # asynchronous checkpoint write: not part of its step's barrier


@dataclass
class StepPlan:
    """The op graph of all simulated steps plus what the summary needs from planning."""

    spec: WorkloadSpec
    layout: ParallelLayout
    schedule: Schedule
    steps: int
    ops: list[Op]
    collectives: dict[tuple[Any, ...], Collective]
    layers_of_block: list[list[int]]
    expert_load: list[tuple[int, int, int, int, int]]  # step, layer, expert, tokens, dropped
    ep_bytes: dict[str, float]  # local_rank / intra_node / inter_node, all 4 phases, all steps
    checkpoint_steps: list[int]
    params_per_rank: list[float]  # parameters (elements) each rank holds
    expert_params_per_rank: list[float]  # of which expert parameters
    compute_cache_size: int = 0
    #: lockstep plans: the rank whose ops stand for each rank (``None``: every rank has its ops)
    rep_of: list[int] | None = None

    def ops_of_rank(self, rank: int) -> list[Op]:
        return [o for o in self.ops if o.rank == rank]


def split_layers(num_layers: int, blocks: int) -> list[list[int]]:
    """Cut ``num_layers`` into ``blocks`` contiguous blocks; the remainder goes to the blocks
    after the first (the first block also holds the embedding, the last the LM head)."""
    base, extra = divmod(num_layers, blocks)
    sizes = [base] * blocks
    for i in range(extra):
        sizes[1 + i if blocks > 1 else 0] += 1
    out: list[list[int]] = []
    start = 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


Deps = list[int]
#: ``instance(rank) -> (key, make)``: a collective as seen by ``rank`` (``make`` a Collective or
#: a function building it)
Instance = Callable[[int], tuple[tuple[Any, ...], Callable[[], Collective] | Collective]]


class _Builder:
    """Builds the ops of every rank for every step (see :func:`build_plan`).

    Chain helpers take the ids an op must wait for and return the ids the next op must wait
    for (the new op's id, or the input unchanged when nothing was emitted, e.g. a collective
    over a group of one).
    """

    def __init__(
        self,
        spec: WorkloadSpec,
        graph: nx.DiGraph,
        layout: ParallelLayout,
        schedule: Schedule,
        compute: TimeModel,
        routing: EPRouting | None,
        lockstep: bool = False,
    ) -> None:
        self.spec = spec
        self.lockstep = lockstep
        #: the ranks whose ops are built: all, or in a lockstep plan the first of every stage
        #: lockstep unit: the consecutive ranks of a stage tied together by every layer's
        #: all-to-alls and TP collectives (lcm(ep, tp) ranks), or the whole stage for a dense
        #: model, whose ranks all have the same op times
        moe_layers = spec.model.moe is not None and bool(spec.model.moe_layers())
        self.unit = math.lcm(layout.ep, layout.tp) if moe_layers else layout.stage_size
        #: the ranks whose ops are built: all, or in a lockstep plan the first of every unit
        self.reps = (list(range(0, layout.world, self.unit)) if lockstep else list(range(layout.world)))
        self.graph = graph
        self.L = layout
        self.S = schedule
        self.compute = compute
        self.routing = routing
        m = spec.model
        self.dtype = m.dtype
        self.bpe = m.bpe
        self.h = m.hidden
        self.costs = ModelCosts(
            m,
            spec.micro_batch_size,
            layout.tp,
            sequence_parallel=spec.parallelism.sequence_parallel,
            expert_slots_per_rank=routing.slots_per_rank if routing is not None else 0,
        )
        moe = m.moe
        router_name = routing.router_name if routing is not None else spec.router.name
        self.router_kernel = "router_grap" if router_name == "locmoe" else "router_linear"
        self.dispatch_bpe = (moe.dispatch_bytes_per_element or self.bpe) if moe is not None else self.bpe
        self.V = schedule.num_virtual_stages
        self.blocks = split_layers(m.layers, self.V)
        self.slices = spec.overlap.ep_overlap_slices
        self.zero = spec.parallelism.zero_stage
        self.sp = spec.parallelism.sequence_parallel and layout.tp > 1
        self.act_bytes = float(self.costs.sp_tokens * self.h * self.bpe)
        self.bucket_elems = spec.grad_bucket_bytes / spec.grad_bytes_per_element
        self.ops: list[Op] = []
        self.colls: dict[tuple[Any, ...], Collective] = {}
        self.issue = [0] * layout.world
        self.seg = 0
        self.time_cache: dict[Any, float] = {}
        self.dur_cache: dict[int, tuple[list[KernelCall], float]] = {}
        self.orders = [schedule.order(p) for p in range(layout.pp)]
        self.final_w = [self._final_weight_actions(o) for o in self.orders]
        self.data_ready: dict[tuple[int, int], Deps] = {}
        self.load_acc: dict[tuple[int, int, int], list[int]] = {}
        self.tok_cache: dict[tuple[int, int, int, int], list[np.ndarray]] = {}
        self.dp_groups: dict[tuple[int, bool], tuple[int, ...]] = {}
        self.lane_front: dict[tuple[int, str], dict[int, int]] = {}
        self.holds_cache: dict[tuple[int, ...], bool] = {}
        self.ep_bytes = {"local_rank": 0.0, "intra_node": 0.0, "inter_node": 0.0}
        self.moe_index = {ly: i for i, ly in enumerate(m.moe_layers())}
        self.n_ep_groups = layout.pp * (layout.stage_size // layout.ep)
        self.param_split: list[tuple[float, float]] = [(0.0, 0.0)] * layout.world  # (dense, expert)
        self.seg_of: dict[int, int] = {}
        # per (rank, step) state, reset by build_rank_step
        self.fwd_end: dict[tuple[int, int], Deps] = {}
        self.bwd_end: dict[tuple[int, int], Deps] = {}
        self.buckets: dict[tuple[int, str], float] = {}
        self.rank_buckets: list[tuple[int, str, float, int]] = []
        self.rank_params = [0.0, 0.0]
        self.dp_ops: Deps = []
        self.last_grad: Deps = []

    # ------------------------------------------------------------------ primitives

    def _op(self, rank: int, step: int, kind: str, stream: str, name: str, deps: Deps, **kw: Any) -> Op:
        op = Op(len(self.ops), rank, step, kind, stream, name, deps=sorted(set(deps)), **kw)
        op.issue = self.issue[rank]
        self.issue[rank] += 1
        self.seg_of[op.id] = self.seg
        self.ops.append(op)
        return op

    def _compute(
        self,
        rank: int,
        step: int,
        name: str,
        calls: list[KernelCall] | tuple[list[KernelCall], ...],
        deps: Deps,
        layer: int,
        mb: int,
    ) -> Deps:
        """One compute op running ``calls`` (or the concatenation of a tuple of call lists)."""
        parts = calls if isinstance(calls, tuple) else (calls,)
        if not any(parts):
            return deps
        dur = sum(self._duration(p) for p in parts)
        return [self._op(rank, step, "compute", COMPUTE, name, deps, duration_s=dur, layer=layer, microbatch=mb).id]

    def _expert_compute(
        self,
        rank: int,
        step: int,
        name: str,
        fixed: tuple[list[KernelCall], ...],
        part: Part,
        tokens: list[int],
        deps: Deps,
        layer: int,
        mb: int,
    ) -> Deps:
        """A compute op running ``fixed`` and the experts' calls for ``tokens`` received tokens
        (one entry per lane: a lockstep op lasts as long as its slowest lane and keeps every
        lane's duration for the accounting)."""
        c = self.costs
        if not self.lockstep:
            return self._compute(rank, step, name, (*fixed, c.experts(part, tokens[0])), deps, layer, mb)
        base = sum(self._duration(p) for p in fixed)
        by_tokens = {v: base + self._duration(c.experts(part, v)) for v in set(tokens)}
        lane = np.array([by_tokens[v] for v in tokens])
        slowest = max(by_tokens, key=lambda v: (by_tokens[v], v))
        if not any(fixed) and not c.experts(part, slowest):
            return deps
        op = self._op(rank, step, "compute", COMPUTE, name, deps, duration_s=float(lane.max()), layer=layer,
                      microbatch=mb, lane_durations_s=lane if lane.min() < lane.max() else None)
        return [op.id]

    def _duration(self, calls: list[KernelCall]) -> float:
        """Seconds of ``calls``.  The cost lists are memoised (``ModelCosts``), so most ops ask
        about the same list object: cached by identity (the entry keeps its list alive, so the
        id cannot be reused by another list)."""
        hit = self.dur_cache.get(id(calls))
        if hit is not None and hit[0] is calls:
            return hit[1]
        dur = kernels_time_s(calls, self.compute, self.dtype, self.time_cache)
        self.dur_cache[id(calls)] = (calls, dur)
        return dur

    def _comm(
        self,
        rank: int,
        step: int,
        stream: str,
        deps: Deps,
        key: tuple[Any, ...],
        make: Callable[[], Collective] | Collective,
        *,
        name: str | None = None,
        ordered: bool = True,
        background: bool = False,
        lanes: tuple[str, Instance] | None = None,
    ) -> Deps:
        """One comm op of ``rank`` on the collective ``key`` (made by ``make`` the first time).

        ``lanes`` = ``(kind, instance)`` with ``instance(r) -> (key, make)`` the same collective
        as seen by rank ``r``: in a lockstep plan the collective becomes the merge of the
        instances of every rank of the unit (one per distinct group of ``kind``, see
        :meth:`_lanes`)."""
        coll = self.colls.get(key)
        if coll is None:
            if self.lockstep and lanes is not None:
                coll = self._merge(key, [lanes[1](r) for r in self._lanes(rank, lanes[0])])
            else:
                coll = make if isinstance(make, Collective) else make()
            self.colls[key] = coll
        op = self._op(
            rank,
            step,
            "comm",
            stream,
            name or coll.label,
            deps,
            traffic_class=coll.traffic_class,
            layer=coll.layer,
            microbatch=coll.microbatch,
            ordered=ordered,
            coll=coll,
            background=background,
        )
        return [op.id]

    # ------------------------------------------------------------------ lockstep

    def rep_of(self, rank: int) -> int:
        """The rank that stands for ``rank`` (itself unless lockstep: its unit's first rank)."""
        return rank - rank % self.unit if self.lockstep else rank

    def _lanes(self, rank: int, kind: str) -> list[int]:
        """Ranks of ``rank``'s lockstep unit, one per distinct group of ``kind``: ``ep`` (EP
        groups), ``tp`` (TP groups); any other kind: every rank of the unit.  (A unit holds
        whole EP and TP groups: its size is a multiple of both.)"""
        L = self.L
        base = rank - rank % self.unit
        if kind == "ep":
            return list(range(base, base + self.unit, L.ep))
        if kind == "tp":
            return list(range(base, base + self.unit, L.tp))
        return list(range(base, base + self.unit))

    def _merge(self, key: tuple[Any, ...], parts: list[tuple[tuple[Any, ...], Callable[[], Collective] | Collective]]
               ) -> Collective:
        """The lockstep collective ``key``: the distinct instances of ``parts``, members = the
        ranks standing for their ranks (``rep_of``)."""
        inst: dict[tuple[Any, ...], Collective] = {}
        for k, make in parts:
            if k not in inst:
                inst[k] = make if isinstance(make, Collective) else make()
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

    def _group_coll(
        self,
        rank: int,
        step: int,
        stream: str,
        cls: str,
        op: str,
        nbytes: float,
        deps: Deps,
        kind: str,
        group_key: Callable[[int], tuple[tuple[int, ...], tuple[Any, ...]]],
        *,
        layer: int = -1,
        mb: int = -1,
        phase: str = "",
    ) -> Deps:
        """A collective of ``op`` over the group of kind ``kind`` of ``rank``;
        ``group_key(r) -> (group, key)`` (nothing for a group of one)."""
        group, key = group_key(rank)
        if len(group) <= 1 or nbytes <= 0:
            return deps
        label = f"{cls}.{phase or op}"

        def instance(r: int) -> tuple[tuple[Any, ...], Collective]:
            g, k = group_key(r)
            return k, Collective(k, op, g, nbytes, cls, label, phase=phase, layer=layer, microbatch=mb, step=step)

        if self.lockstep and kind in self.PER_LANE:
            return self._lane_colls(rank, step, stream, deps, instance)
        return self._comm(rank, step, stream, deps, key, lambda: instance(rank)[1], lanes=(kind, instance))

    #: lockstep: group kinds whose collectives stay per rank (an op and a stream per rank of the
    #: unit): gradient reductions run on asynchronous streams, bucket after bucket, and their
    #: groups (one per TP rank, one per EP position) progress independently of each other; merged
    #: into one op they would all wait for the slowest group at every bucket (LocMoE, 8 nodes:
    #: +31% step time)
    PER_LANE = frozenset({"dp", "edp"})

    def _lane_colls(self, rank: int, step: int, stream: str, deps: Deps,
                    instance: Callable[[int], tuple[tuple[Any, ...], Collective]]) -> Deps:
        """The collectives ``instance(r)`` of the ranks ``r`` of ``rank``'s unit on the stream
        ``stream`` that every rank has of its own in the full plan.

        A group that holds whole units (the dense DP group without TP) gets one op, shared by
        the unit's ranks; otherwise each rank gets an op on a stream of its own
        (``stream.<lane>``).  Explicit dependencies keep each rank's order: a shared op waits
        for the ranks' own ops issued since the last shared op, and a rank's first own op after
        a shared op waits for it."""
        front = self.lane_front.setdefault((rank, stream), {})  # -1: last shared op; lane: its last own op
        lanes = self._lanes(rank, "rank")
        k0, c0 = instance(lanes[0])
        if len(c0.ranks) > 1 and self._holds_units(c0.ranks):
            own = [v for lane, v in front.items() if lane >= 0]
            ids = self._comm(rank, step, stream, deps + own, k0, lambda: self._merge(k0, [(k0, c0)]))
            front.clear()
            front[-1] = ids[0]
            return ids
        out: Deps = []
        for i, r in enumerate(lanes):
            k, coll = (k0, c0) if i == 0 else instance(r)
            if len(coll.ranks) <= 1:
                continue
            after = [front[-1]] if i not in front and -1 in front else []
            ids = self._comm(rank, step, f"{stream}.{i}", deps + after, k,
                             lambda coll=coll: self._per_lane(coll))  # type: ignore[misc]
            self.ops[ids[0]].lane = i
            front[i] = ids[0]
            out += ids
        return out or deps

    def _holds_units(self, group: tuple[int, ...]) -> bool:
        """Does ``group`` hold every rank of each lockstep unit it touches?"""
        hit = self.holds_cache.get(group)
        if hit is None:
            members = set(group)
            hit = all(r in members for rep in {self.rep_of(x) for x in group} for r in range(rep, rep + self.unit))
            self.holds_cache[group] = hit
        return hit

    def _per_lane(self, coll: Collective) -> Collective:
        """``coll`` joined by one op per rank: its members are the ranks' representatives, one
        entry per rank."""
        return replace(coll, ranks=tuple(sorted(self.rep_of(r) for r in coll.ranks)), instances=(coll,))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _final_weight_actions(order: list[Action]) -> dict[int, int]:
        """For every chunk, the index of the action that computes its last weight gradients."""
        out: dict[int, int] = {}
        for i, a in enumerate(order):
            if a.kind == "W" or (a.kind == "B" and not a.split_w):
                out[a.chunk] = i
        return out

    def _tp(self, rank: int, step: int, deps: Deps, phase: str, layer: int, mb: int, op: str) -> Deps:
        """Megatron TP communication around a block: sequence-parallel all-gather before and
        reduce-scatter after; without sequence parallelism one all-reduce after."""
        if self.L.tp == 1:
            return deps
        if not self.sp:
            if op == "all_gather":
                return deps
            op = "all_reduce"
            phase = phase.replace("-rs", "-ar")
        nbytes = float(self.costs.tokens * self.h * self.bpe)

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            return self.L.tp_group(r), ("tp", step, phase, mb, layer, self.L.group_index("tp", r))

        return self._group_coll(
            rank, step, "tp", "tp", op, nbytes, deps, "tp", group_key, layer=layer, mb=mb, phase=phase
        )

    def _dp_group(self, rank: int, expert: bool) -> tuple[int, ...]:
        """Ranks that reduce the gradients ``rank`` holds (DualPipe: with the mirrored stage)."""
        hit = self.dp_groups.get((rank, expert))
        if hit is None:
            hit = self.dp_groups[(rank, expert)] = self._make_dp_group(rank, expert)
        return hit

    def _make_dp_group(self, rank: int, expert: bool) -> tuple[int, ...]:
        base = self.L.expert_dp_group(rank) if expert else self.L.dp_group(rank)
        if self.S.name != "dualpipe":
            return base
        p, d, t = self.L.coords(rank)
        mirror = self.L.rank_of(self.L.pp - 1 - p, d, t)
        other = self.L.expert_dp_group(mirror) if expert else self.L.dp_group(mirror)
        return tuple(sorted(set(base) | set(other)))

    def _dp_key(self, what: str, step: int, chunk: int, kind: str, idx: int
                ) -> Callable[[int], tuple[tuple[int, ...], tuple[Any, ...]]]:
        """``r -> (group, key)`` of gradient bucket ``idx`` of ``chunk`` (``kind`` dense/expert)."""

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            group = self._dp_group(r, kind == "expert")
            return group, (what, step, self._block(r, chunk), kind, idx, group)

        return group_key

    def _block(self, rank: int, chunk: int) -> int:
        return self.S.virtual_stage(self.L.coords(rank)[0], chunk)

    # ------------------------------------------------------------------ layers

    def _zero3(self, rank: int, step: int, layer: int, mb: int, pass_: str, deps: Deps, chunk: int) -> Deps:
        if self.zero != 3:
            return deps
        # the all-gather's output buffer: the layer's (dense) parameters of this rank's TP shard
        nbytes = self.costs.layer_params(layer).dense * self.bpe

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            group = self._dp_group(r, False)
            return group, ("zero3", step, pass_, mb, layer, group)

        return self._group_coll(
            rank,
            step,
            f"dp.gather.{chunk}",
            "dp",
            "all_gather",
            nbytes,
            deps,
            "dp",
            group_key,
            layer=layer,
            mb=mb,
            phase=f"{pass_}-param-gather",
        )

    def _forward_layer(self, rank: int, step: int, mb: int, layer: int, deps: Deps, chunk: int) -> Deps:
        c = self.costs
        deps = self._zero3(rank, step, layer, mb, "fwd", deps, chunk)
        self.seg += 1
        deps = self._tp(rank, step, deps, "fwd-attn-ag", layer, mb, "all_gather")
        deps = self._compute(rank, step, "F.attn", c.attention("F"), deps, layer, mb)
        deps = self._tp(rank, step, deps, "fwd-attn-rs", layer, mb, "reduce_scatter")
        self.seg += 1
        if self.spec.model.is_moe_layer(layer):
            return self._moe(rank, step, mb, layer, deps, "F")
        deps = self._tp(rank, step, deps, "fwd-mlp-ag", layer, mb, "all_gather")
        deps = self._compute(rank, step, "F.mlp", c.mlp("F"), deps, layer, mb)
        return self._tp(rank, step, deps, "fwd-mlp-rs", layer, mb, "reduce_scatter")

    def _backward_layer(self, rank: int, step: int, mb: int, layer: int, deps: Deps, part: Part, chunk: int) -> Deps:
        c = self.costs
        deps = self._zero3(rank, step, layer, mb, "bwd", deps, chunk)
        self.seg += 1
        if self.spec.model.is_moe_layer(layer):
            deps = self._moe(rank, step, mb, layer, deps, part)
        else:
            deps = self._tp(rank, step, deps, "bwd-mlp-ag", layer, mb, "all_gather")
            deps = self._compute(rank, step, f"{part}.mlp", c.mlp(part), deps, layer, mb)
            deps = self._tp(rank, step, deps, "bwd-mlp-rs", layer, mb, "reduce_scatter")
        self.seg += 1
        deps = self._tp(rank, step, deps, "bwd-attn-ag", layer, mb, "all_gather")
        deps = self._compute(rank, step, f"{part}.attn", c.attention(part), deps, layer, mb)
        return self._tp(rank, step, deps, "bwd-attn-rs", layer, mb, "reduce_scatter")

    def _moe(self, rank: int, step: int, mb: int, layer: int, deps: Deps, part: Part) -> Deps:
        """Router, then per slice dispatch -> experts -> combine, then unpermute (+ shared)."""
        c = self.costs
        recv = self._expert_tokens(step, layer, mb, rank)
        if part == "F":
            deps = self._compute(rank, step, "F.router", c.moe_pre("F", self.router_kernel), deps, layer, mb)
            first, second = "fwd-dispatch", "fwd-combine"
        else:
            deps = self._compute(rank, step, f"{part}.unpermute", c.moe_post(part), deps, layer, mb)
            first, second = "bwd-dispatch", "bwd-combine"
        ends: Deps = []
        for k in range(self.slices):
            d1 = self._a2a(rank, step, mb, layer, k, first, deps)
            name = f"{part}.experts" if self.slices == 1 else f"{part}.experts.{k}"
            d2 = self._expert_compute(rank, step, name, (), part, recv[k], d1, layer, mb)
            ends += self._a2a(rank, step, mb, layer, k, second, d2)
        if part == "F":
            return self._compute(rank, step, "F.unpermute", c.moe_post("F"), ends, layer, mb)
        return self._compute(rank, step, f"{part}.router", c.moe_pre(part, self.router_kernel), ends, layer, mb)

    def _expert_tokens(self, step: int, layer: int, mb: int, rank: int) -> list[list[int]]:
        """Tokens the experts of ``rank`` receive, ``[slice][lane]``: one lane (``rank``), or in
        a lockstep plan every rank of the unit (whose slowest sets the expert time)."""
        if not self.lockstep:
            _, e_rank = self.L.ep_coords(rank)
            return [[int(tk[:, e_rank].sum())] for tk in self.ep_tokens(step, layer, mb, rank)]
        per_group = [self.ep_tokens(step, layer, mb, g) for g in self._lanes(rank, "ep")]
        return [np.concatenate([tks[k].sum(axis=0) for tks in per_group]).tolist() for k in range(self.slices)]

    def _a2a(self, rank: int, step: int, mb: int, layer: int, k: int, phase: str, deps: Deps) -> Deps:
        """Slice ``k`` of an EP all-to-all(v) of ``phase`` (the combines send the dispatch's
        token matrix back, transposed)."""
        if self.L.ep <= 1:
            return deps
        bpe = self.dispatch_bpe if phase == "fwd-dispatch" else self.bpe
        back = phase.endswith("combine")

        def instance(r: int) -> tuple[tuple[Any, ...], Callable[[], Collective]]:
            key = ("ep", step, phase, mb, layer, k, self.L.group_index("ep", r))

            def make() -> Collective:
                group = self.L.ep_group(r)
                tk = self.ep_tokens(step, layer, mb, r)[k]
                mat = (tk.T if back else tk).astype(np.float64) * float(self.h * bpe)
                self._account_ep(mat, group)
                local = float(np.trace(mat))
                np.fill_diagonal(mat, 0.0)
                return Collective(
                    key,
                    "all_to_allv",
                    group,
                    float(mat.sum()),
                    "ep",
                    f"ep.{phase}",
                    matrix=mat,
                    phase=phase,
                    layer=layer,
                    microbatch=mb,
                    step=step,
                    slice=k,
                    local_bytes=local,
                )

            return key, make

        stream = "ep.dispatch" if phase.endswith("dispatch") else "ep.combine"
        key, make = instance(rank)
        return self._comm(rank, step, stream, deps, key, make, lanes=("ep", instance))

    def _account_ep(self, mat: np.ndarray, group: tuple[int, ...]) -> None:
        node = np.array([self.L.nodes[r] for r in group])
        same = node[:, None] == node[None, :]
        local = float(np.trace(mat))
        intra = float(mat[same].sum()) - local
        self.ep_bytes["local_rank"] += local
        self.ep_bytes["intra_node"] += intra
        self.ep_bytes["inter_node"] += float(mat.sum()) - local - intra

    def ep_tokens(self, step: int, layer: int, mb: int, rank: int) -> list[np.ndarray]:
        """Token matrices ``[ep, ep]`` of the EP group of ``rank``, one per slice (cached)."""
        gid = self.L.group_index("ep", rank)
        key = (step, layer, mb, gid)
        hit = self.tok_cache.get(key)
        if hit is not None:
            return hit
        assert self.routing is not None
        group = self.L.ep_group(rank)
        tok, kept, dropped = self.routing.tokens(
            step, self.moe_index[layer], mb * self.n_ep_groups + gid, [self.L.nodes[r] for r in group]
        )
        for e in range(kept.size):
            acc = self.load_acc.setdefault((step, layer, e), [0, 0])
            acc[0] += int(kept[e])
            acc[1] += int(dropped[e])
        n = self.slices
        parts = [tok // n + (tok % n > k).astype(tok.dtype) for k in range(n)]
        self.tok_cache[key] = parts
        return parts

    # ------------------------------------------------------------------ actions

    def _p2p(self, rank: int, step: int, direction: str, mb: int, src_vs: int, src: int, dst: int, deps: Deps) -> Deps:
        label = "pp.act" if direction == "F" else "pp.grad"
        L = self.L
        ps, pd = L.coords(src)[0], L.coords(dst)[0]

        def instance(r: int) -> tuple[tuple[Any, ...], Callable[[], Collective]]:
            _, d, t = L.coords(r)
            s_, d_ = L.rank_of(ps, d, t), L.rank_of(pd, d, t)
            key = ("pp", step, direction, mb, src_vs, s_, d_)

            def make() -> Collective:
                return Collective(
                    key,
                    "transfer",
                    (s_, d_),
                    self.act_bytes,
                    "pp",
                    label,
                    src=L.devices[s_],
                    dst=L.devices[d_],
                    phase=direction,
                    microbatch=mb,
                    step=step,
                )

            return key, make

        name = ("pp.send" if rank == src else "pp.recv") + (".act" if direction == "F" else ".grad")
        key, make = instance(rank)
        return self._comm(rank, step, "pp", deps, key, make, name=name, ordered=False, lanes=("rank", instance))

    def _forward(self, rank: int, step: int, a: Action) -> None:
        p, d, t = self.L.coords(rank)
        vs = self.S.virtual_stage(p, a.chunk)
        mb = a.microbatch
        if vs > 0:
            ps, _ = self.S.locate(mb, vs - 1)
            deps = self._p2p(rank, step, "F", mb, vs - 1, self.L.rank_of(ps, d, t), rank, [])
        else:
            deps = list(self.data_ready.get((step, rank), []))
        for layer in self.blocks[vs]:
            deps = self._forward_layer(rank, step, mb, layer, deps, a.chunk)
        if vs == self.V - 1:
            deps = self._compute(rank, step, "F.head", self.costs.head("F"), deps, -1, mb)
        self.fwd_end[(mb, vs)] = deps
        if vs < self.V - 1:
            ns, _ = self.S.locate(mb, vs + 1)
            self._p2p(rank, step, "F", mb, vs, rank, self.L.rank_of(ns, d, t), deps)

    def _backward(self, rank: int, step: int, a: Action, final: bool) -> None:
        p, d, t = self.L.coords(rank)
        vs = self.S.virtual_stage(p, a.chunk)
        mb = a.microbatch
        part: Part = "B" if a.split_w else "BW"
        grads = final and part == "BW"
        if vs < self.V - 1:
            ns, _ = self.S.locate(mb, vs + 1)
            deps = self._p2p(rank, step, "B", mb, vs + 1, self.L.rank_of(ns, d, t), rank, [])
        else:
            deps = self._compute(rank, step, f"{part}.head", self.costs.head(part), self.fwd_end[(mb, vs)], -1, mb)
            if grads:
                self._grad_ready(rank, step, a.chunk, self.costs.head_params(), 0.0, deps)
        self.bwd_end[(mb, -1)] = deps
        for layer in reversed(self.blocks[vs]):
            deps = self._backward_layer(rank, step, mb, layer, deps, part, a.chunk)
            self.bwd_end[(mb, layer)] = deps
            if grads:
                lp = self.costs.layer_params(layer)
                self._grad_ready(rank, step, a.chunk, lp.dense, lp.expert, deps)
        if vs == 0 and grads:
            self._grad_ready(rank, step, a.chunk, self.costs.embedding_params(), 0.0, deps)
        if vs > 0:
            ps, _ = self.S.locate(mb, vs - 1)
            self._p2p(rank, step, "B", mb, vs, rank, self.L.rank_of(ps, d, t), deps)

    def _weight(self, rank: int, step: int, a: Action, final: bool) -> None:
        vs = self._block(rank, a.chunk)
        mb = a.microbatch
        c = self.costs
        deps: Deps = []
        if vs == self.V - 1:
            deps = self._compute(rank, step, "W.head", c.head("W"), self.bwd_end[(mb, -1)], -1, mb)
            if final:
                self._grad_ready(rank, step, a.chunk, c.head_params(), 0.0, deps)
        for layer in reversed(self.blocks[vs]):
            wait = deps + self.bwd_end[(mb, layer)]
            if self.spec.model.is_moe_layer(layer):
                recv = [sum(t) for t in zip(*self._expert_tokens(step, layer, mb, rank), strict=True)]
                fixed = (c.attention("W"), c.moe_post("W"))
                deps = self._expert_compute(rank, step, "W.layer", fixed, "W", recv, wait, layer, mb)
            else:
                deps = self._compute(rank, step, "W.layer", (c.attention("W"), c.mlp("W")), wait, layer, mb)
            if final:
                lp = c.layer_params(layer)
                self._grad_ready(rank, step, a.chunk, lp.dense, lp.expert, deps)
        if vs == 0 and final:
            self._grad_ready(rank, step, a.chunk, c.embedding_params(), 0.0, deps)

    # ------------------------------------------------------------------ gradients

    def _grad_ready(self, rank: int, step: int, chunk: int, dense: float, expert: float, deps: Deps) -> None:
        """Weight gradients of ``dense`` + ``expert`` elements are final once ``deps`` ran."""
        self.rank_params[0] += dense
        self.rank_params[1] += expert
        self.last_grad = deps
        for kind, elems in (("dense", dense), ("expert", expert)):
            if elems <= 0:
                continue
            fill = self.buckets.setdefault((chunk, kind), 0.0) + elems
            self.buckets[(chunk, kind)] = fill
            if fill >= self.bucket_elems:
                self._emit_bucket(rank, step, chunk, kind, fill, deps)
                self.buckets[(chunk, kind)] = 0.0

    def _emit_bucket(self, rank: int, step: int, chunk: int, kind: str, elems: float, deps: Deps) -> None:
        idx = sum(1 for b in self.rank_buckets if b[0] == chunk and b[1] == kind)
        self.rank_buckets.append((chunk, kind, elems, idx))
        if self.spec.overlap.dp_overlap_backward:
            self._reduce_bucket(rank, step, chunk, kind, elems, idx, deps)

    def _reduce_bucket(self, rank: int, step: int, chunk: int, kind: str, elems: float, idx: int, deps: Deps) -> None:
        op = "all_reduce" if self.zero == 0 else "reduce_scatter"
        out = self._group_coll(
            rank,
            step,
            f"dp.{chunk}",
            "dp",
            op,
            elems * self.spec.grad_bytes_per_element,
            deps,
            "edp" if kind == "expert" else "dp",
            self._dp_key("dp", step, chunk, kind, idx),
            phase=f"grad-{op.replace('_', '-')}",
        )
        if out is not deps:
            self.dp_ops += out

    # ------------------------------------------------------------------ per rank step

    def build_rank_step(self, rank: int, step: int) -> list[int]:
        """Emit every op of ``rank`` in ``step``; return the ids the step barrier waits for
        besides the rank's sinks (the optimizer and the ZeRO parameter all-gathers)."""
        p, _, _ = self.L.coords(rank)
        order = self.orders[p]
        final = self.final_w[p]
        self.fwd_end, self.bwd_end, self.buckets = {}, {}, {}
        self.rank_buckets, self.rank_params, self.dp_ops, self.last_grad = [], [0.0, 0.0], [], []
        first = len(self.ops)
        i = 0
        while i < len(order):
            a = order[i]
            if a.kind == "F" and a.overlap and i + 1 < len(order) and order[i + 1].kind == "B":
                lo = len(self.ops)
                self._forward(rank, step, a)
                mid = len(self.ops)
                self._backward(rank, step, order[i + 1], final.get(order[i + 1].chunk) == i + 1)
                self._interleave(lo, mid)
                i += 2
                continue
            if a.kind == "F":
                self._forward(rank, step, a)
            elif a.kind == "B":
                self._backward(rank, step, a, final.get(a.chunk) == i)
            else:
                self._weight(rank, step, a, final.get(a.chunk) == i)
            i += 1
        last_compute = [self._last_compute(rank, first)]
        for (chunk, kind), fill in sorted(self.buckets.items()):
            if fill > 0:
                self._emit_bucket(rank, step, chunk, kind, fill, self.last_grad or last_compute)
        if not self.spec.overlap.dp_overlap_backward:
            for chunk, kind, elems, idx in self.rank_buckets:
                self._reduce_bucket(rank, step, chunk, kind, elems, idx, last_compute)
        dense, expert = self.rank_params
        for r in self._lanes(rank, "rank") if self.lockstep else (rank,):
            self.param_split[r] = (dense, expert)
        if self.zero >= 1:
            shard = dense / len(self._dp_group(rank, False)) + expert / len(self._dp_group(rank, True))
        else:
            shard = dense + expert
        tail = self._compute(rank, step, "optimizer", self.costs.optimizer(shard), last_compute + self.dp_ops, -1, -1)
        out = list(tail)
        if self.zero in (1, 2):
            for chunk, kind, elems, idx in self.rank_buckets:
                out += self._group_coll(
                    rank,
                    step,
                    f"dp.{chunk}",
                    "dp",
                    "all_gather",
                    elems * self.bpe,
                    tail,
                    "edp" if kind == "expert" else "dp",
                    self._dp_key("zero-gather", step, chunk, kind, idx),
                    phase="param-all-gather",
                )
        return out

    def _last_compute(self, rank: int, first: int) -> int:
        """The compute op of ``rank`` issued last among the ops from ``first`` on."""
        best = None
        for op in self.ops[first:]:
            if op.kind == "compute" and (best is None or op.issue > best.issue):
                best = op
        return best.id if best is not None else -1

    def _interleave(self, lo: int, mid: int) -> None:
        """Re-issue the ops of a DualPipe F&B pair alternately by layer segment, so that one
        micro-batch's communication can hide under the other's compute."""
        ops = self.ops[lo:]
        if not ops:
            return
        base = min(o.issue for o in ops)
        f0 = min((self.seg_of[o.id] for o in self.ops[lo:mid]), default=0)
        b0 = min((self.seg_of[o.id] for o in self.ops[mid:]), default=0)
        keyed = [((self.seg_of[o.id] - (f0 if o.id < mid else b0)), int(o.id >= mid), o.id, o) for o in ops]
        keyed.sort(key=lambda x: (x[0], x[1], x[2]))
        for j, item in enumerate(keyed):
            item[3].issue = base + j

    # ------------------------------------------------------------------ steps

    def storage_reads(self, step: int, start: dict[int, Deps]) -> None:
        """The hosts read the batch of step ``step + 1`` from front-end storage (issued now)."""
        st = self.spec.storage
        if not st.enabled:
            return
        targets = _storage_targets(self.graph, "frontend")
        if not targets:
            raise WorkloadError(
                "the topology has no front-end storage to read the batch from; set storage.enabled: false "
                "or give the topology frontend.storage",
                source=self.spec.source,
                field="storage.enabled",
            )
        per_mb = self.spec.micro_batch_size * self.spec.model.seq_len * st.bytes_per_token
        readers: dict[int, dict[int, int]] = {}  # node -> reader rank -> micro-batches
        for d in range(self.L.dp):
            for mb in range(self.S.m):
                stage, _ = self.S.locate(mb, 0)
                r = self.L.rank_of(stage, d, 0)
                node_readers = readers.setdefault(self.L.nodes[r], {})
                node_readers[r] = node_readers.get(r, 0) + 1
        reads: dict[int, list[tuple[Collective, list[int]]]] = {}  # issuing rank -> (read, its readers)
        for node in sorted(readers):
            ranks = readers[node]
            owner = min(ranks)
            nbytes = per_mb * sum(ranks.values())
            src = targets[node % len(targets)]
            dst = _host_of(self.graph, self.L.devices[owner])
            coll = Collective(
                ("storage", step, node),
                "transfer",
                (owner,),
                nbytes,
                "storage",
                "storage.read",
                src=src,
                dst=dst,
                step=step,
                network="frontend",
            )
            reads.setdefault(self.rep_of(owner), []).append((coll, list(ranks)))
        for issuer, items in sorted(reads.items()):
            # a lockstep plan issues its stage's reads as one op
            for coll_list in ([items] if self.lockstep else [[it] for it in items]):
                first = coll_list[0][0]
                made = first if not self.lockstep else self._merge(first.key, [(c.key, c) for c, _ in coll_list])
                ids = self._comm(
                    issuer, step, "storage", list(start.get(issuer, [])), first.key, made, ordered=False,
                    background=True,
                )
                ready = {self.rep_of(t) for _, rs in coll_list for r in rs for t in self.L.tp_group(r)}
                for t in sorted(ready):
                    self.data_ready.setdefault((step + 1, t), []).extend(ids)

    def checkpoint(self, step: int, deps_of: dict[int, Deps], background: bool) -> dict[int, Deps]:
        """Every rank writes its share of the model (+ optimizer) state."""
        ck = self.spec.checkpoint
        target = ck.target
        targets = _storage_targets(self.graph, target)
        if not targets:
            hint = (
                "frontend.storage"
                if target == "frontend"
                else "backend.storage (e.g. --set topology.backend.storage.bandwidth=400Gbps)"
            )
            raise WorkloadError(
                f"the topology has no {target} storage to write the checkpoint to; give it {hint}",
                source=self.spec.source,
                field="checkpoint.target",
            )
        per_elem = self.bpe + (ck.optimizer_bytes_per_param if ck.include_optimizer else 0.0)
        out: dict[int, Deps] = {}

        def instance(rank: int) -> tuple[tuple[Any, ...], Collective]:
            dense, expert = self.param_split[rank]
            elems = dense / len(self._dp_group(rank, False)) + expert / len(self._dp_group(rank, True))
            dev = self.L.devices[rank]
            key = ("checkpoint", step, rank)
            return key, Collective(
                key,
                "transfer",
                (rank,),
                elems * per_elem,
                "checkpoint",
                "checkpoint.write",
                src=_host_of(self.graph, dev) if target == "frontend" else dev,
                dst=targets[rank % len(targets)],
                step=step,
                network=target,
            )

        for rank in self.reps:
            key, coll = instance(rank)
            out[rank] = self._comm(
                rank,
                step,
                "checkpoint",
                deps_of.get(rank, []),
                key,
                coll,
                ordered=False,
                background=background,
                lanes=("rank", instance),
            )
        return out

    def step_sinks(self, first: int) -> dict[int, Deps]:
        """Per rank, its ops from op ``first`` on (background ones aside) that no other op of the
        rank depends on: one pass over the ops."""
        ops = self.ops[first:]
        used = {(o.rank, d) for o in ops if not o.background for d in o.deps}
        sinks: dict[int, Deps] = {}
        for o in ops:
            if not o.background and (o.rank, o.id) not in used:
                sinks.setdefault(o.rank, []).append(o.id)
        return sinks

    def barrier(self, rank: int, step: int, sinks: Deps, extra: Deps) -> int:
        """The step barrier of ``rank``: waits for ``sinks`` (:meth:`step_sinks`) and ``extra``."""
        key = ("barrier", step)
        world = tuple(self.reps)

        def make() -> Collective:
            return Collective(key, "barrier", world, 0.0, "", "step.barrier", step=step)

        coll = self.colls.setdefault(key, make())
        op = self._op(rank, step, "barrier", "sync", "step.barrier", sinks + extra, coll=coll)
        return op.id


def _storage_targets(graph: nx.DiGraph, network: str) -> list[str]:
    found = [
        (int(a.get("index", 0)), str(n))
        for n, a in graph.nodes(data=True)
        if a.get("kind") == "storage" and a.get("network") == network
    ]
    return [n for _, n in sorted(found)]


def _host_of(graph: nx.DiGraph, device: str) -> str:
    from netsim.topology.model import host_name

    node = int(graph.nodes[device].get("node", -1))
    host = host_name(node)
    if host not in graph:
        raise WorkloadError(f"server {node} has no host device {host!r} in the topology", field="storage")
    return host


def effective_microbatches(spec: WorkloadSpec, dp: int) -> int:
    """``num_microbatches``, or ``global_batch_size / (micro_batch_size * dp)`` when given."""
    gbs = spec.global_batch_size
    if gbs is None:
        return spec.num_microbatches
    per = spec.micro_batch_size * dp
    if gbs % per:
        raise WorkloadError(
            f"global_batch_size {gbs} must be a multiple of micro_batch_size * dp = {spec.micro_batch_size} * {dp}",
            source=spec.source,
            field="global_batch_size",
        )
    return gbs // per


def build_plan(
    spec: WorkloadSpec,
    graph: nx.DiGraph,
    compute: TimeModel,
    *,
    seed: int = 0,
    steps: int | None = None,
    router: str | None = None,
    routing_trace: str | None = None,
    routing_samples: int | None = None,
    lockstep: bool = False,
) -> StepPlan:
    """Expand ``spec`` on ``graph`` into the op graph of ``steps`` training steps.

    Args:
        spec: the workload.
        graph: the topology (accelerators in (server, index) order become ranks).
        compute: seconds per kernel call (``netsim.calibration.compute.ComputeModel``).
        seed: the scenario seed (routing samples).
        steps: steps to plan (default ``spec.steps``).
        router: router / statistical routing model name overriding ``spec.router.name``.
        routing_trace: a routing-trace file replacing the router.
        routing_samples: route at most this many token samples per (step, MoE layer) and
            reuse them (``None``: every (micro-batch, EP group) routes its own tokens).
        lockstep: build one rank per lockstep unit (an EP group) that stands for the unit's
            ranks (module docstring): an opt-in approximation for large clusters.

    Raises:
        WorkloadError: the workload does not fit the topology (one line naming the field).
    """
    n_steps = steps if steps is not None else spec.steps
    layout = build_layout(spec, graph)
    m = effective_microbatches(spec, layout.dp)
    sched = get_schedule(spec.schedule.name, layout.pp, m, spec.schedule.virtual_chunks, source=spec.source)
    routing = None
    if spec.model.moe is not None and spec.model.moe_layers():
        tokens = ModelCosts(
            spec.model, spec.micro_batch_size, layout.tp, sequence_parallel=spec.parallelism.sequence_parallel
        ).route_tokens
        routing = EPRouting(
            spec,
            ep=layout.ep,
            tokens_per_rank=tokens,
            rank_node=[layout.nodes[r] for r in layout.ep_group(0)],
            seed=seed,
            router=router,
            routing_trace=routing_trace,
            samples=routing_samples,
        )
    b = _Builder(spec, graph, layout, sched, compute, routing, lockstep)
    ck = spec.checkpoint
    ckpt_steps = [s for s in range(n_steps) if ck.every_steps and (s + 1) % ck.every_steps == 0]
    prev: dict[int, Deps] = {}
    for step in range(n_steps):
        first = len(b.ops)
        b.storage_reads(step, prev)
        tails: dict[int, Deps] = {}
        for rank in b.reps:
            tails[rank] = b.build_rank_step(rank, step)
        if prev:
            for op in b.ops[first:]:
                if not op.deps:
                    op.deps = list(prev[op.rank])
        write = step in ckpt_steps
        extra: dict[int, Deps] = dict(tails)
        if write and not ck.asynchronous:
            ck_ids = b.checkpoint(step, tails, background=False)
            extra = {r: extra[r] + ck_ids[r] for r in extra}
        sinks = b.step_sinks(first)
        bar = {r: b.barrier(r, step, sinks.get(r, []), extra[r]) for r in b.reps}
        if write and ck.asynchronous:
            b.checkpoint(step, {r: [bar[r]] for r in bar}, background=True)
        prev = {r: [bar[r]] for r in bar}
    load = [(s, ly, e, v[0], v[1]) for (s, ly, e), v in sorted(b.load_acc.items())]
    return StepPlan(
        spec=spec,
        layout=layout,
        schedule=sched,
        steps=n_steps,
        ops=b.ops,
        collectives=b.colls,
        layers_of_block=b.blocks,
        expert_load=load,
        ep_bytes=dict(b.ep_bytes),
        checkpoint_steps=ckpt_steps,
        params_per_rank=[d + e for d, e in b.param_split],
        expert_params_per_rank=[e for _, e in b.param_split],
        compute_cache_size=len(b.time_cache),
        rep_of=[b.rep_of(r) for r in range(layout.world)] if lockstep else None,
    )
