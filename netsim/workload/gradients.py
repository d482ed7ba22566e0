"""Gradient buckets, data-parallel reductions, the optimizer step and ZeRO's parameter gathers.

Weight gradients become final when the last micro-batch's backward (or deferred ``W``) of a
block has computed them: gradient accumulation over the micro-batches happens in place, and
only the last micro-batch's gradients start a reduction.  They fill buckets of
``grad_bucket_bytes`` (dense and expert parameters apart, per model chunk); a full bucket is
reduced over its data-parallel group:

* all-reduce (ZeRO 0) or reduce-scatter (ZeRO 1-3: Megatron's distributed optimizer is ZeRO 1)
  over the DP group for dense parameters and over the expert-DP group for expert parameters,
  in ``optimizer.grad_dtype``;
* issued as the bucket fills, during the rest of the backward, when
  ``overlap.dp_overlap_backward`` (Megatron ``overlap_grad_reduce``), else all after the
  step's last compute op;
* then the optimizer step on the compute stream (the rank's parameters, or its ``1/dp`` shard
  with ZeRO >= 1), timed by the bytes Adam moves (:mod:`netsim.workload.optimizer`);
* with ``parallelism.dp_replicas`` (Megatron-Core's partial distributed optimizer,
  ``num_distributed_optimizer_instances``; PyTorch's hybrid sharding) the group is split into
  slices of consecutive ranks (:func:`split_group`): the reduce-scatter runs inside the rank's
  slice and the shard it leaves is then all-reduced with the ranks at the same place in the
  other slices; the gathers below run inside the slice, and the optimizer steps its shard of it;
* ZeRO 1/2: the updated parameters all-gathered, bucket by bucket, in ``optimizer.param_dtype``,
  after the optimizer; or, with ``overlap.param_gather_overlap`` (Megatron's
  ``overlap_param_gather``), during the next step's forward (below);
  ZeRO 3: each layer's parameters all-gathered before its forward and its backward.

The gathers beside the forward (Megatron-Core at d98e8a64dd: ``_make_forward_pre_hook`` and
``finish_param_sync`` in megatron/core/distributed/, ``forward_step_helper_preprocess`` in
pipeline_parallel/schedules.py): a bucket holds the parameters the backward put in it (the
buckets are the gradient buckets, :meth:`GradientReducer.gather_buckets`), and the first forward
of the step of each layer waits for the gather of its bucket.  With virtual pipeline chunks
(``align_param_gather``, which Megatron-Bridge sets with PP > 1 and virtual chunks) every bucket
of the first two chunks is issued at the step's start and every bucket of chunk ``k`` when the
first forward of chunk ``k - 1`` starts; without, a chunk's first bucket (in forward order) is
issued by its first forward and each next bucket when the one before it has been gathered.  A
simulated step stands for a steady-state one: its start gathers what the previous step's
optimizer updated.  The embedding counts with the first layer of its block, the output head
with the last (*approx.*: Megatron waits per module).

The group that reduces a rank's gradients holds every rank with the same parameters: the DP (or
expert-DP, :mod:`netsim.workload.expert_layout`) group, joined by the ranks of the other stages
the schedule puts the same blocks on (:meth:`~netsim.workload.schedules.Schedule.replica_stages`:
DualPipe's mirrored stage).

Redundant experts (EPLB replicas) are parameters held by several ranks of an EP group, and
their copies' gradients must be summed: in two stages, as a hierarchical all-reduce.  First every
copy is reduced with the others at its EP position (the expert-DP buckets above), then, per
layer and replicated expert, the ranks of an EP group holding a copy all-reduce their result
(their ZeRO shard of it: all these ranks have the same expert-DP index) when the layer's
gradients are final (phase ``replica-grad-all-reduce``); a rank holding two replicas of one
expert sums them locally first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netsim.workload.context import BuildContext
from netsim.workload.emit import GroupKey, OpEmitter
from netsim.workload.layout import ParallelLayout, hierarchical_groups
from netsim.workload.optimizer import optimizer_precision
from netsim.workload.plan import Deps
from netsim.workload.schedules import Schedule

if TYPE_CHECKING:
    from netsim.workload.moe_traffic import EPRouting

__all__ = ["GradientReducer", "reduction_group"]


def reduction_group(layout: ParallelLayout, schedule: Schedule, rank: int, expert: bool) -> tuple[int, ...]:
    """Ranks that reduce (and ZeRO-shard) the dense or expert parameters ``rank`` holds: its DP
    or expert-DP group, with the ranks of the stages holding the same blocks
    (:meth:`~netsim.workload.schedules.Schedule.replica_stages`)."""
    p, d, t = layout.coords(rank)
    stages = schedule.replica_stages(p)
    if len(stages) == 1:
        return layout.expert_dp_group(rank) if expert else layout.dp_group(rank)
    members: set[int] = set()
    for q in stages:
        r = layout.rank_of(q, d, t)
        members |= set(layout.expert_dp_group(r) if expert else layout.dp_group(r))
    return tuple(sorted(members))


def split_group(group: tuple[int, ...], rank: int, replicas: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``rank``'s shard group and the shard's peers when its reduction ``group`` is split into
    ``replicas`` slices of consecutive members (Megatron-Core's intra- and inter-instance groups of
    the partial distributed optimizer; PyTorch's hybrid sharding): :func:`hierarchical_groups`."""
    return hierarchical_groups(group, rank, len(group) // replicas)


def sharding_group(
    layout: ParallelLayout, schedule: Schedule, rank: int, expert: bool, replicas: int
) -> tuple[int, ...]:
    """The ranks that shard the (dense or expert) model state ``rank`` holds: its reduction group
    (:func:`reduction_group`), or its slice of it with ``parallelism.dp_replicas`` > 1."""
    group = reduction_group(layout, schedule, rank, expert)
    return group if replicas == 1 else split_group(group, rank, replicas)[0]


def _fill(fills: dict[Any, float], key: Any, elems: float, limit: float) -> float | None:
    """Add ``elems`` (> 0) to bucket ``key`` of ``fills``; return its elements when that fills it
    (``>= limit``: the bucket closes and ``key`` starts empty), else None."""
    if elems <= 0:
        return None
    fill = fills.get(key, 0.0) + elems
    fills[key] = 0.0 if fill >= limit else fill
    return fill if fill >= limit else None


class GradientReducer:
    """Gradient buckets and the data-parallel side of every rank's step."""

    def __init__(self, ctx: BuildContext, emit: OpEmitter, routing: EPRouting | None = None) -> None:
        self.ctx = ctx
        self.emit = emit
        self.routing = routing
        self.moe_index = {ly: i for i, ly in enumerate(ctx.spec.model.moe_layers())}
        spec = ctx.spec
        self.overlap = spec.overlap.dp_overlap_backward
        self.precision = optimizer_precision(spec)
        self.grad_bpe = spec.grad_bytes_per_element
        self.bucket_elems = spec.grad_bucket_bytes / spec.grad_bytes_per_element
        self.groups: dict[tuple[int, bool], tuple[int, ...]] = {}
        #: groups the sharded state is split into (parallelism.dp_replicas; 1: the whole group)
        self.replicas = ctx.layout.dp_replicas if ctx.zero >= 1 else 1
        self.split: dict[tuple[int, bool], tuple[tuple[int, ...], tuple[int, ...]]] = {}
        #: (dense, expert) parameters (elements) every rank holds, known once its step is built
        self.param_split: list[tuple[float, float]] = [(0.0, 0.0)] * ctx.layout.world
        self._start_rank()

    def _start_rank(self) -> None:
        """Reset the per (rank, step) state."""
        self.buckets: dict[tuple[int, str], float] = {}
        self.rank_buckets: list[tuple[int, str, float, int]] = []
        self.rank_params = [0.0, 0.0]
        #: weights of the rank's FP8 GEMMs (cast to FP8 once per step; 0 without FP8)
        self.fp8_weights = 0.0
        self.dp_ops: Deps = []
        self.last_grad: Deps = []
        #: replica all-reduces waiting for the end of the step (no overlap): (chunk, layer)
        self.replica_pending: list[tuple[int, int]] = []
        #: ZeRO 3 prefetch: what the rank's last gathered layer waited for (the next gather is
        #: issued then); None before the step's first gather
        self.gather_ahead: Deps | None = None
        #: ZeRO 1/2 gathers beside the forward: the gather ops each layer's first forward waits
        #: for, and the chunks whose gathers are issued / whose first forward has started
        self.layer_gathers: dict[int, Deps] = {}
        self.gathers_issued: set[int] = set()
        self.forward_started: set[int] = set()

    # ------------------------------------------------------------------ groups

    def dp_group(self, rank: int, expert: bool) -> tuple[int, ...]:
        """Ranks that reduce the (dense or expert) gradients ``rank`` holds."""
        hit = self.groups.get((rank, expert))
        if hit is None:
            hit = self.groups[(rank, expert)] = self._make_group(rank, expert)
        return hit

    def _make_group(self, rank: int, expert: bool) -> tuple[int, ...]:
        return reduction_group(self.ctx.layout, self.ctx.schedule, rank, expert)

    def shard_group(self, rank: int, expert: bool) -> tuple[int, ...]:
        """Ranks that shard ``rank``'s (dense or expert) model state: its reduction group, or its
        slice of it with ``parallelism.dp_replicas`` > 1 (:func:`split_group`)."""
        return self._split(rank, expert)[0]

    def shard_peers(self, rank: int, expert: bool) -> tuple[int, ...]:
        """Ranks holding the same shard as ``rank`` in the other slices (``rank`` alone without
        ``parallelism.dp_replicas``): they all-reduce it after the reduce-scatter."""
        return self._split(rank, expert)[1]

    def _split(self, rank: int, expert: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        hit = self.split.get((rank, expert))
        if hit is None:
            group = self.dp_group(rank, expert)
            hit = (group, (rank,)) if self.replicas == 1 else split_group(group, rank, self.replicas)
            self.split[(rank, expert)] = hit
        return hit

    def shard(self, rank: int) -> float:
        """Parameters (elements) of ``rank``'s share (dense over its shard of the DP group, expert
        over its shard of the expert-DP group)."""
        dense, expert = self.param_split[rank]
        return dense / len(self.shard_group(rank, False)) + expert / len(self.shard_group(rank, True))

    def _key(self, what: str, step: int, chunk: int, kind: str, idx: int, level: str = "dp") -> GroupKey:
        """``r -> (group, key)`` of gradient bucket ``idx`` of ``chunk`` (``kind`` dense/expert)
        over the whole reduction group (``level`` dp), the shard group or the shard's peers."""
        of = {"dp": self.dp_group, "shard": self.shard_group, "peers": self.shard_peers}[level]

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            group = of(r, kind == "expert")
            return group, (what, step, self.ctx.block(r, chunk), kind, idx, group)

        return group_key

    # ------------------------------------------------------------------ buckets

    def ready(self, rank: int, step: int, chunk: int, dense: float, expert: float, deps: Deps) -> None:
        """Weight gradients of ``dense`` + ``expert`` elements are final once ``deps`` ran."""
        self.rank_params[0] += dense
        self.rank_params[1] += expert
        self.last_grad = deps
        for kind, elems in (("dense", dense), ("expert", expert)):
            full = _fill(self.buckets, (chunk, kind), elems, self.bucket_elems)
            if full is not None:
                self._close_bucket(rank, step, chunk, kind, full, deps)

    def layer_ready(self, rank: int, step: int, chunk: int, layer: int, deps: Deps) -> None:
        """``layer``'s weight gradients are final once ``deps`` ran: into the buckets, and the
        replicated experts' all-reduces across their copies (module docstring)."""
        lp = self.ctx.costs.trainable_params(layer)
        self.fp8_weights += self.ctx.costs.fp8_weight_elems(layer)
        self.ready(rank, step, chunk, lp.dense, lp.expert, deps)
        if self.ctx.costs.frozen or not self.replicated_experts(rank, layer):  # LoRA: the experts are frozen
            return
        if self.overlap:
            self._replica_sync(rank, step, chunk, layer, deps)
        else:
            self.replica_pending.append((chunk, layer))

    def replicated_experts(self, rank: int, layer: int) -> list[tuple[int, int]]:
        """``(logical expert, slots of it on rank)`` for the experts with replicas ``rank`` holds
        in ``layer`` (none without redundant experts)."""
        if self.routing is None or layer not in self.moe_index:
            return []
        pl = self.routing.placements[self.moe_index[layer] % len(self.routing.placements)]
        if (pl.replica_counts <= 1).all():
            return []
        _, pos = self.ctx.layout.ep_coords(rank)
        held = pl.experts_on_rank(pos)
        return [(int(e), int((held == e).sum())) for e in sorted(set(held.tolist())) if pl.replica_counts[e] > 1]

    def replica_group(self, rank: int, layer: int, expert: int) -> tuple[int, ...]:
        """The ranks of ``rank``'s EP group holding a copy of ``expert`` of ``layer``."""
        assert self.routing is not None
        pl = self.routing.placements[self.moe_index[layer] % len(self.routing.placements)]
        group = self.ctx.layout.ep_group(rank)
        return tuple(sorted({group[q] for q in pl.replica_ranks(expert).tolist()}))

    def _replica_sync(self, rank: int, step: int, chunk: int, layer: int, deps: Deps) -> None:
        """The all-reduces of ``layer``'s replicated experts, one per expert over its holders (in
        a lockstep plan, each expert of any rank of the unit: the lanes holding it join)."""
        per_slot = self.ctx.costs.layer_params(layer).expert / self.ctx.costs.slots
        if self.ctx.zero >= 1:  # the bucket reduce-scatter left each rank its shard
            per_slot /= len(self.shard_group(rank, True))
        held: dict[int, set[int]] = {}

        def holds(r: int) -> set[int]:
            if r not in held:
                held[r] = {e for e, _ in self.replicated_experts(r, layer)}
            return held[r]

        for e in sorted(set().union(*(holds(r) for r in self.emit.lanes.lanes(rank, "rank")))):

            def group_key(r: int, e: int = e) -> tuple[tuple[int, ...], tuple[Any, ...]]:
                if e not in holds(r):
                    return (r,), ("none", r)
                group = self.replica_group(r, layer, e)
                return group, ("dp-replica", step, layer, e, group)

            out = self._collective(
                rank, step, chunk, "all_reduce", per_slot * self.grad_bpe, deps, "edp", group_key,
                "replica-grad-all-reduce", layer,
            )  # fmt: skip
            if out is not deps:
                self.dp_ops += out

    def _sms(self, op: str) -> Callable[[float, tuple[int, ...]], float]:
        """The share of a member's SMs NCCL's kernel of a DP ``op`` holds, by size and group
        (:mod:`netsim.workload.nccl_sms`)."""
        return functools.partial(self.ctx.nccl_sms.collective_share, "dp", op)

    def _collective(
        self,
        rank: int,
        step: int,
        chunk: int,
        op: str,
        nbytes: float,
        deps: Deps,
        group: str,
        key: GroupKey,
        phase: str,
        layer: int = -1,
    ) -> Deps:
        """One DP-class ``op`` of chunk ``chunk`` on the DP stream (``group``: dp or edp)."""
        return self.emit.group_collective(
            rank, step, f"dp.{chunk}", "dp", op, nbytes, deps, group, key,
            layer=layer, phase=phase, sm_share=self._sms(op),
        )  # fmt: skip

    def _close_bucket(self, rank: int, step: int, chunk: int, kind: str, elems: float, deps: Deps) -> None:
        idx = sum(1 for b in self.rank_buckets if b[0] == chunk and b[1] == kind)
        self.rank_buckets.append((chunk, kind, elems, idx))
        if self.overlap:
            self._reduce(rank, step, chunk, kind, elems, idx, deps)

    def _reduce(self, rank: int, step: int, chunk: int, kind: str, elems: float, idx: int, deps: Deps) -> None:
        """Reduce gradient bucket ``idx``: all-reduced (ZeRO 0) or reduce-scattered over the shard
        group, and with ``dp_replicas`` the shard then all-reduced over the replica group (both on
        the same stream, as Megatron-Core's ``start_grad_sync`` issues them)."""
        op = "all_reduce" if self.ctx.zero == 0 else "reduce_scatter"
        group = "edp" if kind == "expert" else "dp"
        key = self._key("dp", step, chunk, kind, idx, "shard")
        out = self._collective(
            rank, step, chunk, op, elems * self.grad_bpe, deps, group, key, f"grad-{op.replace('_', '-')}"
        )
        if self.replicas > 1 and out is not deps:
            shard = elems / len(self.shard_group(rank, kind == "expert"))
            key = self._key("dp-replicas", step, chunk, kind, idx, "peers")
            out = self._collective(
                rank, step, chunk, "all_reduce", shard * self.grad_bpe, out, group, key, "grad-replica-all-reduce"
            )
        if out is not deps:
            self.dp_ops += out

    # ------------------------------------------------------------------ end of a rank's step

    def finish(self, rank: int, step: int, last_compute: Deps) -> Deps:
        """Close the last buckets, reduce them (all of them, without overlap), run the optimizer
        and the ZeRO 1/2 parameter all-gathers; return the ids the step barrier waits for."""
        for (chunk, kind), fill in sorted(self.buckets.items()):
            if fill > 0:
                self._close_bucket(rank, step, chunk, kind, fill, self.last_grad or last_compute)
        if not self.overlap:
            for chunk, kind, elems, idx in self.rank_buckets:
                self._reduce(rank, step, chunk, kind, elems, idx, last_compute)
            for chunk, layer in self.replica_pending:
                self._replica_sync(rank, step, chunk, layer, last_compute)
        dense, expert = self.rank_params
        for r in self.emit.lanes.lanes(rank, "rank"):
            self.param_split[r] = (dense, expert)
        shard = self.shard(rank) if self.ctx.zero >= 1 else dense + expert
        # the optimizer step, then the FP8 copies of the updated weights (netsim.workload.fp8)
        calls = self.precision.step_calls(shard) + self.ctx.costs.weight_quant(self.fp8_weights)
        tail = self.emit.compute(rank, step, "optimizer", calls, last_compute + self.dp_ops, -1, -1)
        out = list(tail)
        if self.ctx.zero in (1, 2) and not self.ctx.spec.overlap.param_gather_overlap:
            for chunk, kind, elems, idx in self.rank_buckets:
                out += self._param_gather(rank, step, chunk, kind, elems, idx, tail)
        self._start_rank()
        return out

    def _param_gather(self, rank: int, step: int, chunk: int, kind: str, elems: float, idx: int, deps: Deps) -> Deps:
        """The ZeRO 1/2 all-gather of parameter bucket ``idx`` of ``chunk`` (``kind``) after ``deps``."""
        key = self._key("zero-gather", step, chunk, kind, idx, "shard")
        group = "edp" if kind == "expert" else "dp"
        return self._collective(
            rank, step, chunk, "all_gather", elems * self.precision.param, deps, group, key, "param-all-gather"
        )

    # ------------------------------------------------------------------ ZeRO 1/2 gathers beside the forward

    @property
    def _aligned(self) -> bool:
        """Megatron's align_param_gather: every chunk's gathers issued together (virtual chunks, PP > 1)."""
        return self.ctx.schedule.chunks_per_stage > 1 and self.ctx.layout.pp > 1

    @functools.cache  # noqa: B019 - one reducer per plan, a few blocks
    def gather_buckets(self, block: int) -> tuple[tuple[str, float, int, frozenset[int]], ...]:
        """The parameter buckets of ``block`` as the backward fills them (:meth:`ready`, then
        :meth:`finish` closing what is left): ``(kind, elements, index, layers)``, the output head
        counted with the block's last layer and the embedding with its first."""
        c, layers = self.ctx.costs, self.ctx.blocks[block]
        last, first = (layers[-1], layers[0]) if layers else (-1, -1)
        order: list[tuple[int, float, float]] = []
        if block == self.ctx.num_blocks - 1:
            order.append((last, c.trainable_head_params(), 0.0))
        for layer in reversed(layers):
            lp = c.trainable_params(layer)
            order.append((layer, lp.dense, lp.expert))
        if block == 0:
            order.append((first, c.trainable_embedding_params(), 0.0))
        fills: dict[str, float] = {}
        members: dict[str, set[int]] = {}
        out: list[tuple[str, float, int, frozenset[int]]] = []

        def close(kind: str, elems: float) -> None:
            idx = sum(1 for b in out if b[0] == kind)
            out.append((kind, elems, idx, frozenset(members.pop(kind))))

        for layer, dense, expert in order:
            for kind, elems in (("dense", dense), ("expert", expert)):
                if elems > 0:
                    members.setdefault(kind, set()).add(layer)
                full = _fill(fills, kind, elems, self.bucket_elems)
                if full is not None:
                    close(kind, full)
        for kind in sorted(fills):  # finish() closes what is left, in the same order
            if fills[kind] > 0:
                close(kind, fills[kind])
        return tuple(out)

    def _issue_gathers(self, rank: int, step: int, chunk: int, deps: Deps) -> None:
        """Issue ``chunk``'s parameter gathers, its first bucket (in forward order) after ``deps``
        and, aligned, every other one too; unaligned each next one after the one before it."""
        if chunk >= self.ctx.schedule.chunks_per_stage or chunk in self.gathers_issued:
            return
        self.gathers_issued.add(chunk)
        after = deps
        for kind, elems, idx, layers in reversed(self.gather_buckets(self.ctx.block(rank, chunk))):
            done = self._param_gather(rank, step, chunk, kind, elems, idx, after)
            for layer in layers:
                self.layer_gathers[layer] = self.layer_gathers.get(layer, []) + done
            after = deps if self._aligned else done

    def forward_gathers(self, rank: int, step: int, chunk: int, deps: Deps) -> dict[int, Deps] | None:
        """With ``overlap.param_gather_overlap``: at the first forward of ``chunk`` in the step
        (``deps``: what it waits for), issue the gathers due then and return what each of its
        layers waits for; else None."""
        if self.ctx.zero not in (1, 2) or not self.ctx.spec.overlap.param_gather_overlap:
            return None
        if chunk in self.forward_started:
            return None
        if not self.forward_started and self._aligned:
            self._issue_gathers(rank, step, 0, [])
            self._issue_gathers(rank, step, 1, [])
        self.forward_started.add(chunk)
        self._issue_gathers(rank, step, chunk, deps)
        if self._aligned:
            self._issue_gathers(rank, step, chunk + 1, deps)
        return {layer: self.layer_gathers.pop(layer, []) for layer in self.ctx.blocks[self.ctx.block(rank, chunk)]}

    def zero3_gather(self, rank: int, step: int, layer: int, mb: int, pass_: str, deps: Deps, chunk: int) -> Deps:
        """ZeRO 3: all-gather ``layer``'s (dense) parameters of this rank's TP shard before its
        ``pass_`` (fwd / bwd); nothing below ZeRO 3.  With ``overlap.zero3_prefetch`` the gather is
        issued when the previously gathered layer could start computing (one layer of lookahead,
        the gathers in program order on their stream), and the layer waits for its inputs and its
        gather; without it the gather waits for ``deps``."""
        if self.ctx.zero != 3:
            return deps
        issue = deps
        if self.ctx.spec.overlap.zero3_prefetch:
            issue = deps if self.gather_ahead is None else self.gather_ahead
            self.gather_ahead = deps
        gathered = self._zero3_collective(rank, step, layer, mb, pass_, issue, chunk)
        return deps if gathered is issue else list(dict.fromkeys([*deps, *gathered]))

    def _zero3_collective(self, rank: int, step: int, layer: int, mb: int, pass_: str, deps: Deps, chunk: int) -> Deps:
        nbytes = self.ctx.costs.layer_params(layer).dense * self.precision.param

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            group = self.shard_group(r, False)
            return group, ("zero3", step, pass_, mb, layer, group)

        return self.emit.group_collective(
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
            sm_share=self._sms("all_gather"),
        )
