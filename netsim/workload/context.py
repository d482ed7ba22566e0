"""What every part of the plan builder reads and none of them changes: the workload, its layout
on the cluster, the pipeline schedule, the model's kernel costs and the blocks of layers."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import networkx as nx

from netsim.collectives.cost import NcclCost
from netsim.collectives.setup import nccl_cost
from netsim.config.workload import WorkloadSpec
from netsim.workload.costs import ModelCosts
from netsim.workload.layout import ParallelLayout
from netsim.workload.nccl_sms import NcclSms
from netsim.workload.schedules import Schedule

__all__ = ["BuildContext"]


@dataclass(frozen=True)
class BuildContext:
    """The fixed inputs of a plan.

    Attributes:
        spec: the workload.
        graph: the topology.
        layout: ranks, groups and devices.
        schedule: the pipeline schedule.
        costs: kernel calls and parameter counts of one rank.
        blocks: the layers of every virtual pipeline stage (block).
    """

    spec: WorkloadSpec
    graph: nx.DiGraph
    layout: ParallelLayout
    schedule: Schedule
    costs: ModelCosts
    blocks: list[list[int]]

    @functools.cached_property
    def nccl(self) -> NcclCost:
        """NCCL's cost model of the topology, whatever model times the run: for what NCCL's own
        rules decide, such as the thread blocks its kernels run on (built once per plan)."""
        return nccl_cost(self.graph)

    @functools.cached_property
    def nccl_sms(self) -> NcclSms:
        """The SMs NCCL's kernels hold while in flight, per traffic class (``overlap.nccl_sms``)."""
        acc = dict(self.graph.graph.get("accelerator") or {})
        return NcclSms(self.nccl, self.layout.devices, acc, self.spec.overlap.nccl_sms)

    @property
    def bpe(self) -> int:
        """Bytes per element of the activations devices exchange (``ModelSpec.bpe``)."""
        return self.spec.model.bpe

    @property
    def hidden(self) -> int:
        return self.spec.model.hidden

    @property
    def zero(self) -> int:
        return self.spec.parallelism.zero_stage

    @property
    def sequence_parallel(self) -> bool:
        """Megatron sequence parallelism in effect (asked for, and TP > 1)."""
        return self.spec.parallelism.sequence_parallel and self.layout.tp > 1

    @property
    def pipeline_scatter_gather(self) -> bool:
        """Megatron's scatter/gather of pipeline messages in effect: asked for (``auto``: always)
        where TP > 1 and sequence parallelism is off (with it the message is already 1/tp)."""
        asked = self.spec.parallelism.pipeline_scatter_gather
        return asked is not False and self.layout.tp > 1 and not self.sequence_parallel

    @property
    def num_blocks(self) -> int:
        """Virtual pipeline stages (blocks of layers)."""
        return len(self.blocks)

    @property
    def act_bytes(self) -> float:
        """Bytes of one pipeline message (a micro-batch's activations or their gradient) as a
        stage holds it (``/ tp`` with sequence parallelism)."""
        return float(self.costs.sp_tokens * self.hidden * self.bpe)

    @property
    def p2p_bytes(self) -> float:
        """Bytes one TP rank sends of a pipeline message: :attr:`act_bytes`, or its ``1 / tp``
        share under :attr:`pipeline_scatter_gather`."""
        return self.act_bytes / self.layout.tp if self.pipeline_scatter_gather else self.act_bytes

    def block(self, rank: int, chunk: int) -> int:
        """The block of layers ``chunk`` of ``rank``'s stage holds."""
        return self.schedule.virtual_stage(self.layout.coords(rank)[0], chunk)
