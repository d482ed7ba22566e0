"""Per-rank op graphs of training steps: compute ops, collectives, dependencies and streams.

:func:`build_plan` expands a :class:`~netsim.config.workload.WorkloadSpec` on a topology into a
:class:`~netsim.workload.plan.StepPlan`: a flat list of ops (pure data, no simulation) that
:mod:`netsim.replay` executes.

An op belongs to one rank and one *stream*.  Ops of an *ordered* stream start in issue order
(like a CUDA stream): ``compute``, ``tp``, ``ep.dispatch``, ``ep.combine``, ``dp.<block>``.
Point-to-point pipeline transfers (``pp``), storage reads and checkpoint writes are
*unordered* (asynchronous ``isend``/``irecv``): only their dependencies hold them.  ``deps``
are op ids (any rank: a stage's first forward waits for the storage read its node's host did).
Comm ops carry a collective shared by all its members; the replay starts it when every member
has reached it (a per-collective barrier, which is how NCCL behaves).

The builder is a few small parts, each with one job:

=============================================  ==============================================
:mod:`~netsim.workload.plan`                   the plan's data: ``Op``, ``Collective``,
                                               ``StepPlan``, ``TRAFFIC_CLASSES``
:mod:`~netsim.workload.emit`                   the plan being built: op emission, compute
                                               timing, collectives joined by their members
:mod:`~netsim.workload.lanes`                  which ranks get ops: every rank, or lockstep
                                               (one rank per EP group stands for it)
:mod:`~netsim.workload.schedules`              pipeline schedules (DualPipe included) as
                                               objects: action order, block placement, F&B
                                               pairs, stages that share parameters
:mod:`~netsim.workload.pipeline`               one rank's step: the schedule's actions, the
                                               pipeline transfers between stages
:mod:`~netsim.workload.layers`                 one layer's forward / backward / weight ops,
                                               TP collectives
:mod:`~netsim.workload.experts`                MoE token matrices, expert all-to-alls and
                                               the expert layout's expert-TP collectives
:mod:`~netsim.workload.gradients`              gradient buckets, DP reductions, optimizer,
                                               ZeRO gathers
:mod:`~netsim.workload.storage`                batch reads and checkpoint writes
:mod:`~netsim.workload.recompute`              activation recomputation modes
:mod:`~netsim.workload.optimizer`              the optimizer's precision: bytes kept, moved
:mod:`~netsim.workload.memory`                 memory per rank against the HBM
=============================================  ==============================================

What one step contains (docs, "What a step contains"): per micro-batch and layer, following
the schedule's order of F / B / W actions, compute, TP collectives and the four expert
all-to-alls of MoE layers; pipeline send/recv between neighbouring blocks; per gradient bucket
of the last micro-batch a DP reduction, then the optimizer (and ZeRO gathers); a step barrier
(the global gradient-norm reduction that clipping needs; negligible bytes); storage reads of
the next step's batch; checkpoint writes every K steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import networkx as nx

from netsim.config.workload import WorkloadSpec
from netsim.errors import WorkloadError
from netsim.moe.dispatchers import DISPATCHERS
from netsim.topology.faults import device_speeds
from netsim.workload.balance import balanced_layers
from netsim.workload.batch import BatchPlan, batch_plan
from netsim.workload.context import BuildContext
from netsim.workload.costs import ModelCosts
from netsim.workload.emit import OpEmitter
from netsim.workload.experts import ExpertTraffic
from netsim.workload.gradients import GradientReducer
from netsim.workload.kernel_calls import TimeModel
from netsim.workload.lanes import make_lanes
from netsim.workload.layers import LayerEmitter
from netsim.workload.layout import ParallelLayout, build_layout
from netsim.workload.memory import MemoryReport, check_memory, memory_report
from netsim.workload.moe_traffic import EPRouting
from netsim.workload.optimizer import grad_accumulation_bytes
from netsim.workload.pipeline import PipelineStep
from netsim.workload.plan import TRAFFIC_CLASSES, Collective, Deps, Op, StepPlan, split_layers
from netsim.workload.recompute import RecomputeMode, workload_recompute
from netsim.workload.schedules import Schedule, get_schedule
from netsim.workload.storage import StorageTraffic
from netsim.workload.tp_overlap import tp_gemm_slowdowns

__all__ = [
    "TRAFFIC_CLASSES",
    "Collective",
    "Op",
    "StepPlan",
    "build_plan",
    "effective_microbatches",
    "model_costs",
    "plan_memory",
    "split_layers",
    "workload_schedule",
]


def effective_microbatches(spec: WorkloadSpec, dp: int) -> int:
    """Micro-batches per DP replica: ``num_microbatches``, or the global batch (fixed, or scaled
    to the cluster) over ``micro_batch_size * dp`` (:mod:`netsim.workload.batch`)."""
    return batch_plan(spec, dp).microbatches


def workload_schedule(spec: WorkloadSpec, pp: int, microbatches: int) -> Schedule:
    """The pipeline schedule ``spec`` names, at ``pp`` stages and ``microbatches`` per replica,
    with its virtual chunks and the combined 1F1B where ``overlap.ep_a2a_overlap`` asks for it."""
    return get_schedule(
        spec.schedule.name,
        pp,
        microbatches,
        spec.schedule.virtual_chunks,
        a2a_overlap=spec.overlap.ep_a2a_overlap,
        source=spec.source,
    )


def _check_a2a_overlap(spec: WorkloadSpec, layout: ParallelLayout, mode: RecomputeMode) -> None:
    """Megatron-Core's combined 1F1B needs expert parallelism and no whole-layer recomputation;
    delayed weight gradients need the combined 1F1B (transformer_config.py asserts all three)."""
    if not spec.overlap.ep_a2a_overlap:
        if spec.overlap.delay_wgrad_compute:
            raise WorkloadError(
                "needs overlap.ep_a2a_overlap: true (Megatron-Core delays the weight gradients only in its "
                "combined 1F1B)",
                source=spec.source,
                field="overlap.delay_wgrad_compute",
            )
        return
    if layout.ep <= 1 or not spec.model.moe_layers():
        raise WorkloadError(
            "overlaps the expert all-to-alls: needs MoE layers and parallelism.ep > 1",
            source=spec.source,
            field="overlap.ep_a2a_overlap",
        )
    if mode.whole_layer:
        raise WorkloadError(
            f"cannot run with training.recompute {spec.training.recompute} (Megatron-Core forbids full "
            "recomputation under the combined 1F1B)",
            source=spec.source,
            field="overlap.ep_a2a_overlap",
        )


def _routing(
    spec: WorkloadSpec,
    layout: ParallelLayout,
    seed: int,
    router: str | None,
    routing_trace: str | None,
    routing_samples: int | None,
) -> EPRouting | None:
    """The expert routing of an MoE workload (None for a dense one)."""
    if spec.model.moe is None or not spec.model.moe_layers():
        return None
    tokens = ModelCosts(
        spec.model, spec.micro_batch_size, layout.tp, sequence_parallel=spec.parallelism.sequence_parallel, cp=layout.cp
    ).route_tokens
    return EPRouting(
        spec,
        ep=layout.ep,
        tokens_per_rank=tokens,
        rank_node=[layout.nodes[r] for r in layout.ep_group(0)],
        seed=seed,
        router=router,
        routing_trace=routing_trace,
        samples=routing_samples,
    )


class _Prelude(NamedTuple):
    """What :func:`build_plan` settles before it emits an op (:func:`_prelude`)."""

    mode: RecomputeMode
    layout: ParallelLayout
    batch: BatchPlan
    schedule: Schedule
    routing: EPRouting | None
    ctx: BuildContext
    memory: MemoryReport


def _prelude(
    spec: WorkloadSpec,
    graph: nx.DiGraph,
    compute: TimeModel,
    seed: int,
    router: str | None,
    routing_trace: str | None,
    routing_samples: int | None,
) -> _Prelude:
    """The checks and choices before any op: recompute mode, rank layout, batch, schedule, the
    overlap modes' prerequisites, routing, layer split and the memory tally (not yet held
    against the accelerator)."""
    mode = workload_recompute(spec)
    if spec.training.recompute_num_layers is not None and not mode.whole_layer:
        raise WorkloadError(
            f"needs training.recompute full (got {spec.training.recompute})",
            source=spec.source,
            field="training.recompute_num_layers",
        )
    layout = build_layout(spec, graph)
    batch = batch_plan(spec, layout.dp)
    sched = workload_schedule(spec, layout.pp, batch.microbatches)
    _check_a2a_overlap(spec, layout, mode)
    if spec.overlap.param_gather_overlap and spec.parallelism.zero_stage not in (1, 2):
        raise WorkloadError(
            f"overlaps ZeRO 1/2's parameter all-gathers with the next forward: needs parallelism.zero_stage 1 or 2 "
            f"(got {spec.parallelism.zero_stage})",
            source=spec.source,
            field="overlap.param_gather_overlap",
        )
    routing = _routing(spec, layout, seed, router, routing_trace, routing_samples)
    ctx = _context(spec, graph, layout, sched, routing, compute, mode)
    memory = memory_report(spec, layout, sched, ctx.costs, ctx.blocks, mode, dict(graph.graph.get("accelerator") or {}))
    return _Prelude(mode, layout, batch, sched, routing, ctx, memory)


def plan_memory(
    spec: WorkloadSpec,
    graph: nx.DiGraph,
    compute: TimeModel,
    *,
    seed: int = 0,
    router: str | None = None,
    routing_trace: str | None = None,
    routing_samples: int | None = 1,
) -> MemoryReport:
    """The memory tally of ``spec`` on ``graph`` after every check :func:`build_plan` makes
    before it emits an op (layout, batch, schedule, modes), without emitting any: a cheap test
    of whether a layout is valid (raises as build_plan would) and fits (``.fits``, not raised)."""
    return _prelude(spec, graph, compute, seed, router, routing_trace, routing_samples).memory


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
    allow_oom: bool = False,
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
            ranks (:mod:`netsim.workload.lanes`): an opt-in approximation for large clusters.
        allow_oom: plan a workload whose ranks need more memory than the accelerator has
            (``plan.memory.fits`` says so) instead of raising.

    Raises:
        WorkloadError: the workload does not fit the topology or its memory (one line naming
            the field or the shortfall).
        SpecError: an unknown recompute mode.
    """
    n_steps = steps if steps is not None else spec.steps
    mode, layout, batch, sched, routing, ctx, memory = _prelude(
        spec, graph, compute, seed, router, routing_trace, routing_samples
    )
    check_memory(memory, spec, allow_oom)
    emit, experts, grads, io, walk = _parts(ctx, compute, routing, lockstep, mode)
    ckpt_steps = _steps(spec, n_steps, walk, emit, io)
    emit.gate_host_waits()
    return StepPlan(
        spec=spec,
        layout=layout,
        schedule=sched,
        steps=n_steps,
        ops=emit.ops,
        collectives=emit.colls,
        layers_of_block=ctx.blocks,
        expert_load=experts.expert_load(),
        ep_bytes=dict(experts.ep_bytes),
        checkpoint_steps=ckpt_steps,
        params_per_rank=[d + e for d, e in grads.param_split],
        expert_params_per_rank=[e for _, e in grads.param_split],
        compute_cache_size=len(emit.time_cache),
        rep_of=[emit.lanes.rep_of(r) for r in range(layout.world)] if lockstep else None,
        memory=memory,
        batch=batch,
        moe_dispatch=_moe_dispatch(spec, layout, routing, experts, n_steps),
        kernel_rows=emit.tally.rows(
            emit.tally.busiest(lambda r: layout.coords(r)[0], emit.duration), compute, spec.model.dtype
        ),
    )


def model_costs(
    spec: WorkloadSpec, layout: ParallelLayout, expert_slots_per_rank: int, accelerator: Mapping[str, Any] | None = None
) -> ModelCosts:
    """The kernel calls and parameters of one rank of ``layout`` (:class:`ModelCosts`), holding
    ``expert_slots_per_rank`` physical expert slots, on ``accelerator`` (the topology's: its SM
    count prices the SMs Transformer Engine's TP overlaps take from the GEMMs)."""
    slowdown: dict[str, float] = {}
    if spec.overlap.tp_comm_overlap and spec.parallelism.sequence_parallel and layout.tp > 1:
        acc = accelerator or {}
        slowdown = tp_gemm_slowdowns(spec.overlap, acc.get("sms"), str(acc.get("name", "")))
    return ModelCosts(
        spec.model,
        spec.micro_batch_size,
        layout.tp,
        sequence_parallel=spec.parallelism.sequence_parallel,
        expert_slots_per_rank=expert_slots_per_rank,
        expert_tp=layout.etp,
        flash_attention=spec.training.flash_attention,
        dropout=spec.training.dropout,
        cp=layout.cp,
        cp_a2a=layout.cp_a2a,
        cross_entropy=spec.training.cross_entropy,
        tp_slowdown=slowdown,
        lora=spec.training.lora,
        document_tokens=spec.training.document_tokens,
        grad_accumulation_bytes=grad_accumulation_bytes(spec),
        deterministic=spec.training.deterministic,
        activation_fusion=spec.training.activation_fusion,
        eager_modules=spec.training.eager_modules,
    )


def _context(
    spec: WorkloadSpec,
    graph: nx.DiGraph,
    layout: ParallelLayout,
    sched: Schedule,
    routing: EPRouting | None,
    compute: TimeModel,
    mode: RecomputeMode,
) -> BuildContext:
    slots = routing.slots_per_rank if routing is not None else 0
    costs = model_costs(spec, layout, slots, graph.graph.get("accelerator"))
    sizes = spec.parallelism.pipeline_layers
    if sizes == "balanced":
        sizes = balanced_layers(spec, costs, compute, mode, sched, layout.etp)
    blocks = split_layers(spec.model.layers, sched.num_virtual_stages, sizes)
    blocks[-1] += spec.model.mtp_layers()  # the MTP modules follow the last layer, with the output head
    return BuildContext(spec, graph, layout, sched, costs, blocks)


def _slowdown(ctx: BuildContext, lockstep: bool) -> list[float] | None:
    """Per rank, what its compute takes over the compute model's time: ``1 / speed`` of a slow
    accelerator (:mod:`netsim.topology.faults`); None when every accelerator runs at speed."""
    speeds = device_speeds(ctx.graph)
    if not speeds:
        return None
    if lockstep:
        raise WorkloadError(
            "slow_devices make one rank unlike the others of its lockstep unit: simulate every rank "
            "(drop --lockstep / options.lockstep)",
            source=ctx.spec.source,
            field="options.lockstep",
        )
    return [1.0 / speeds.get(d, 1.0) for d in ctx.layout.devices]


def _parts(
    ctx: BuildContext, compute: TimeModel, routing: EPRouting | None, lockstep: bool, mode: RecomputeMode
) -> tuple[OpEmitter, ExpertTraffic, GradientReducer, StorageTraffic, PipelineStep]:
    """The builder's parts, wired together."""
    spec, layout = ctx.spec, ctx.layout
    # a lockstep unit: the consecutive ranks of a stage tied together by every layer's
    # all-to-alls and TP collectives, or the whole stage of a dense model
    unit = _lockstep_unit(layout) if routing is not None else layout.stage_size
    lanes = make_lanes(lockstep, layout.world, unit, layout.group_index)
    emit = OpEmitter(compute, spec.model.dtype, layout.world, lanes, _slowdown(ctx, lockstep))
    experts = ExpertTraffic(ctx, emit, routing)
    grads = GradientReducer(ctx, emit, routing)
    io = StorageTraffic(ctx, emit, grads)
    router_name = routing.router_name if routing is not None else spec.router.name
    router_kernel = "router_grap" if router_name == "locmoe" else "router_linear"
    layers = LayerEmitter(ctx, emit, experts, grads, router_kernel, mode)
    # before any op is emitted: whether any collective may hold SMs while in flight
    emit.track_sm = experts.holds_sms or layers.blocks.holds_sms or ctx.nccl_sms.any
    return emit, experts, grads, io, PipelineStep(ctx, emit, layers, grads, io.data_ready)


def _moe_dispatch(
    spec: WorkloadSpec, layout: ParallelLayout, routing: EPRouting | None, experts: ExpertTraffic, steps: int
) -> dict[str, Any] | None:
    """What the summary says about the expert layout and the token dispatch (``moe_dispatch``)."""
    if routing is None:
        return None
    moe = spec.model.moe
    assert moe is not None
    rows = experts.dispatch_rows
    dedup = (
        "none"
        if not DISPATCHERS.get(routing.dispatcher).dedups
        else (
            "not available: the routing source gives counts only (a routing trace with top_k > 1); one copy per "
            "(token, expert) sent"
            if experts.inexact
            else "exact (token-to-rank and token-to-node sets)"
        )
    )
    return {
        "expert_layout": layout.experts.name,
        "expert_tp": layout.etp,
        "expert_alltoall": spec.parallelism.expert_alltoall if experts.replicated else None,
        "dispatcher": routing.dispatcher,
        #: the dispatcher kernel's fixed time per all-to-all call (netsim.moe.dispatchers)
        "call_latency_us": experts.call_latency_s * 1e6,
        #: the host's time per forward dispatch after its wait for the token counts (GPU idle)
        "host_sync_us": experts.host_sync_s * 1e6,
        "dedup": dedup,
        "padding": moe.padding,
        "capacity_tokens": routing.capacity_rows,
        "dispatch_token_pairs": rows["pairs"] / steps,
        "dispatch_token_copies": rows["copies"] / steps,
    }


def _lockstep_unit(layout: ParallelLayout) -> int:
    """The fewest consecutive ranks (a divisor of the stage) that hold whole all-to-all, TP, CP and
    expert-TP groups: ``lcm(ep, tp * cp)`` with Megatron's layout and whole experts."""
    s = layout.stage_size
    for u in range(1, s + 1):
        if s % u == 0 and all(
            len({r // u for r in group(x)}) == 1
            for x in range(s)
            for group in (layout.a2a_group, layout.tp_group, layout.cp_group, layout.expert_tp_group)
        ):
            return u
    return s


def _steps(spec: WorkloadSpec, n_steps: int, walk: PipelineStep, emit: OpEmitter, io: StorageTraffic) -> list[int]:
    """Emit ``n_steps`` steps: storage reads, every rank's step, checkpoint writes and the step
    barriers (step s+1's first ops wait for step s's barrier); return the checkpoint steps."""
    ck = spec.checkpoint
    ckpt_steps = [s for s in range(n_steps) if ck.every_steps and (s + 1) % ck.every_steps == 0]
    reps = emit.lanes.reps
    prev: dict[int, Deps] = {}
    for step in range(n_steps):
        first = len(emit.ops)
        io.reads(step, prev)
        tails = {rank: walk.build(rank, step) for rank in reps}
        if prev:
            for op in emit.ops[first:]:
                if not op.deps:
                    op.deps = list(prev[op.rank])
        write = step in ckpt_steps
        extra: dict[int, Deps] = dict(tails)
        if write and not ck.asynchronous:
            ck_ids = io.checkpoint(step, tails, background=False)
            extra = {r: extra[r] + ck_ids[r] for r in extra}
        sinks = emit.step_sinks(first)
        bar = {r: emit.barrier(r, step, sinks.get(r, []), extra[r]) for r in reps}
        if write and ck.asynchronous:
            io.checkpoint(step, {r: [bar[r]] for r in bar}, background=True)
        prev = {r: [bar[r]] for r in bar}
    return ckpt_steps
