"""The plan of a training step as pure data: ops, collectives, and the plan that holds them.

A :class:`StepPlan` is what :func:`netsim.workload.graph.build_plan` produces (and what
:mod:`netsim.traces.chakra_plan` compiles a measured Chakra trace into) and :mod:`netsim.replay`
executes: a flat list of :class:`Op` (one rank's compute op, host op, comm op or barrier, with
dependencies, a stream and an issue order) and the :class:`Collective` each comm op joins, with
the device of every rank.  A plan compiled from a trace has no workload spec, parallel layout or
schedule.  Nothing here simulates; the modules that build plans are listed in
:mod:`netsim.workload.graph`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from netsim.config.workload import WorkloadSpec
from netsim.workload.layout import ParallelLayout
from netsim.workload.schedules import Schedule

if TYPE_CHECKING:
    from netsim.workload.batch import BatchPlan
    from netsim.workload.memory import MemoryReport

__all__ = ["COMPUTE", "TRAFFIC_CLASSES", "Collective", "Deps", "Instance", "Make", "Op", "StepPlan", "split_layers"]

#: Traffic classes of a training step, in report order.
TRAFFIC_CLASSES: tuple[str, ...] = ("dp", "pp", "ep", "tp", "cp", "storage", "checkpoint")

COMPUTE = "compute"


@dataclass(eq=False, slots=True)
class Collective:
    """One communication shared by its member ops.

    Attributes:
        key: unique identity (every member computes the same key).
        op: a ``run_collective`` op (``all_reduce``, ``reduce_scatter``, ``all_gather``,
            ``all_to_allv``), ``transfer`` (one point-to-point flow ``src -> dst``) or
            ``barrier`` (synchronisation only, no bytes; it lasts ``duration_s`` once all
            members have arrived: a measured collective whose bytes a trace does not give).
        ranks: the members that must all arrive before it starts.
        nbytes: size in the nccl-tests convention of ``op`` (bytes).
        matrix: ``all_to_allv`` bytes ``[i][j]`` from ``ranks[i]`` to ``ranks[j]`` (zero
            diagonal: bytes that stay on a rank never touch the network).
        src, dst: device names of a ``transfer``.
        local_bytes: EP bytes that stay on their rank (the matrix diagonal), for accounting.
        instances: lockstep plans (:func:`build_plan` with ``lockstep``): the collectives of
            every rank a member stands for, which run at once when the members have arrived
            (``ranks`` are then the members, ``nbytes`` and ``local_bytes`` the instances' sums).
        algo: the collective algorithm the workload asks for (e.g. ``groupwise``), overriding
            the scenario's per-op choice; ``None``: the scenario's.
        latency_s: software time between the last member's arrival and the first byte (an EP
            dispatch kernel's fixed cost per call, :attr:`netsim.moe.dispatchers.Dispatcher.
            call_latency_s`), on top of what the collective cost model adds.
        comm: a ``transfer`` that is a library send/recv: the devices of its communicator (a
            pipeline's stages), whose size and servers set NCCL's channels and latencies for it
            (:func:`netsim.collectives.transfer_costs.p2p_transfer`); empty: a plain flow.
        sm_share: the share of the accelerator's SMs its kernels hold on each member from the
            member's arrival until it completes (``overlap.ep_comm_sms / sms`` for the expert
            all-to-alls): the SM-bound compute running beside it on that rank slows (netsim.replay).
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
    duration_s: float = 0.0
    algo: str | None = None
    comm: tuple[str, ...] = ()
    latency_s: float = 0.0
    sm_share: float = 0.0


@dataclass(eq=False, slots=True)
class Op:
    """One op of one rank's step (see the module docstring)."""

    id: int
    rank: int
    step: int
    kind: str  # compute | host (a CPU-side op: takes time, neither compute nor comm) | comm | barrier
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
    #: the share of ``duration_s`` its SM-bound kernels (GEMMs, attention) take: what the SMs an
    #: in-flight collective holds on the rank (``Collective.sm_share``) slow (netsim.replay)
    sm_share: float = 0.0


@dataclass
class StepPlan:
    """The op graph of all simulated steps, the device of every rank, and what the summary
    needs from planning (the workload fields are empty in a plan compiled from a trace)."""

    steps: int
    ops: list[Op]
    collectives: dict[tuple[Any, ...], Collective]
    #: accelerator name and server index of every rank (default: the layout's)
    devices: tuple[str, ...] = ()
    nodes: tuple[int, ...] = ()
    spec: WorkloadSpec | None = None
    layout: ParallelLayout | None = None
    schedule: Schedule | None = None
    layers_of_block: list[list[int]] = field(default_factory=list)
    #: step, layer, expert, tokens, dropped
    expert_load: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    ep_bytes: dict[str, float] = field(default_factory=dict)  # local_rank / intra_node / inter_node, all steps
    checkpoint_steps: list[int] = field(default_factory=list)
    #: parameters (elements) each rank trains: reduces over data parallelism and steps (all it
    #: holds, or LoRA's adapters, netsim.workload.lora)
    params_per_rank: list[float] = field(default_factory=list)
    expert_params_per_rank: list[float] = field(default_factory=list)  # of which expert parameters
    compute_cache_size: int = 0
    #: lockstep plans: the rank whose ops stand for each rank (``None``: every rank has its ops)
    rep_of: list[int] | None = None
    #: peak memory of every rank against the accelerator's HBM (netsim.workload.memory)
    memory: MemoryReport | None = None
    #: the step's global batch and how it scales with the cluster (netsim.workload.batch)
    batch: BatchPlan | None = None
    #: MoE workloads: the expert layout and how the all-to-alls send tokens (summary field
    #: ``moe_dispatch``, netsim.workload.graph)
    moe_dispatch: dict[str, Any] | None = None
    #: where the compute time goes: the busiest rank of each pipeline stage, one row per (op,
    #: kernel, pass, shape) (netsim.workload.kernel_tally; the ``kernels`` table of a run)
    kernel_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def layers_per_block(self) -> list[int]:
        """Transformer layers in each pipeline block, in model order (the MTP blocks count with
        the last)."""
        return [len(b) for b in self.layers_of_block]

    def summary_fields(self) -> dict[str, Any]:
        """What the plan tells the run summary about the workload as simulated: the batch
        (``batch``) and, for MoE workloads, how tokens are dispatched (``moe_dispatch``)."""
        out: dict[str, Any] = {}
        if self.batch is not None:
            out["batch"] = self.batch.summary()
        if self.moe_dispatch is not None:
            out["moe_dispatch"] = dict(self.moe_dispatch)
        return out

    def __post_init__(self) -> None:
        if not self.devices and self.layout is not None:
            self.devices, self.nodes = self.layout.devices, self.layout.nodes

    @property
    def world(self) -> int:
        return len(self.devices)

    def ops_of_rank(self, rank: int) -> list[Op]:
        return [o for o in self.ops if o.rank == rank]


def split_layers(num_layers: int, blocks: int, sizes: Sequence[int] | None = None) -> list[list[int]]:
    """Cut ``num_layers`` into ``blocks`` contiguous blocks of ``sizes`` layers (checked by the
    caller), by default evenly with the remainder to the blocks after the first (the first block
    also holds the embedding, the last the LM head)."""
    if sizes is None:
        base, extra = divmod(num_layers, blocks)
        even = [base] * blocks
        for i in range(extra):
            even[1 + i if blocks > 1 else 0] += 1
        sizes = even
    out: list[list[int]] = []
    start = 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


#: op ids an op waits for (chain helpers take and return them)
Deps = list[int]
#: a collective, or a function that builds it the first time it is needed
Make = Callable[[], Collective] | Collective
#: ``instance(rank) -> (key, make)``: a collective as seen by ``rank``
Instance = Callable[[int], tuple[tuple[Any, ...], Make]]
