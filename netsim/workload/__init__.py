"""Workloads: model + parallelism -> per-rank op graphs of training steps.

* :mod:`~netsim.workload.layout`: ranks and their (dp, pp, tp, ep) coordinates, process
  groups, rank -> device placement;
* :mod:`~netsim.workload.expert_layout`: how a framework (Megatron, DeepSpeed, MindSpore) lays
  experts out: EP, expert-TP and expert-DP groups;
* :mod:`~netsim.workload.batch`: the global batch, fixed or growing with the cluster;
* :mod:`~netsim.workload.schedules`: pipeline schedules (GPipe, 1F1B, interleaved 1F1B,
  DualPipe, ZB-H1) as a registry of small classes;
* :mod:`~netsim.workload.costs`: the kernels (and their shapes) of every layer part and the
  parameters a rank holds;
* :mod:`~netsim.workload.moe_traffic`: router + placement -> expert-parallel token matrices
  (through :mod:`netsim.moe`);
* :mod:`~netsim.workload.graph`: :func:`build_plan`, the op graph (compute ops, collectives,
  pipeline transfers, storage reads, checkpoint writes, dependencies and streams), built by
  small parts: :mod:`~netsim.workload.plan` (the data), :mod:`~netsim.workload.emit` (op
  emission), :mod:`~netsim.workload.lanes` (every rank or lockstep),
  :mod:`~netsim.workload.pipeline` (a rank's step), :mod:`~netsim.workload.layers`,
  :mod:`~netsim.workload.experts`, :mod:`~netsim.workload.gradients`,
  :mod:`~netsim.workload.storage`.

The plan is pure data; :mod:`netsim.replay` executes it on a network and :mod:`netsim.run`
turns a scenario into a run directory.
"""

from netsim.workload.graph import Collective, Op, StepPlan, build_plan
from netsim.workload.layout import ParallelLayout, build_layout
from netsim.workload.schedules import SCHEDULES, Action, Schedule, get_schedule, register_schedule

__all__ = [
    "SCHEDULES",
    "Action",
    "Collective",
    "Op",
    "ParallelLayout",
    "Schedule",
    "StepPlan",
    "build_layout",
    "build_plan",
    "get_schedule",
    "register_schedule",
]
