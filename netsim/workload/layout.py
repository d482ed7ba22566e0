"""Parallel layout: ranks, their (dp, pp, tp, ep) coordinates, process groups, rank -> device.

Ranks are numbered Megatron-style with TP fastest, then DP, then PP::

    rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank

The ``dp * tp`` ranks of a pipeline stage are also carved into expert-parallel (EP) groups of
``ep`` consecutive ranks (the LocMoE / Megatron "parallel folding" layout: with sequence
parallelism every TP rank routes its own ``1/tp`` share of the micro-batch's tokens, so an EP
group may span TP and DP ranks alike).  Ranks at the same position of the EP groups of a
stage hold the same experts and form the *expert-data-parallel* group that reduces the expert
gradients; dense gradients are reduced over the ordinary DP group (same stage, same TP rank).

Rank -> device placement (:func:`place_ranks`):

* ``topology-aware`` (default): accelerators in (server, local index) order; consecutive ranks
  fill a server before the next.  With the rank order above this keeps TP groups inside a
  server, then EP groups (as far as they fit), and puts neighbouring pipeline stages on
  neighbouring servers (same leaf switch in the fabrics netsim builds).
* ``round-robin``: consecutive ranks on consecutive servers (a deliberately poor baseline that
  pushes TP and EP traffic onto the inter-node fabric).
* an explicit ``devices`` list (one accelerator name per rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from netsim.config.workload import WorkloadSpec
from netsim.errors import WorkloadError

__all__ = ["ParallelLayout", "build_layout", "list_accelerators", "place_ranks"]


@dataclass(frozen=True)
class ParallelLayout:
    """The parallel decomposition of a workload on ``world`` ranks.

    Attributes:
        dp, pp, tp, ep: the parallel sizes (``world = dp * pp * tp``).
        devices: accelerator name of every rank (index = rank).
        nodes: server index of every rank.
    """

    dp: int
    pp: int
    tp: int
    ep: int
    devices: tuple[str, ...]
    nodes: tuple[int, ...]

    @property
    def world(self) -> int:
        return self.dp * self.pp * self.tp

    @property
    def stage_size(self) -> int:
        """Ranks per pipeline stage (``dp * tp``)."""
        return self.dp * self.tp

    def coords(self, rank: int) -> tuple[int, int, int]:
        """``(pp_rank, dp_rank, tp_rank)`` of ``rank``."""
        s = self.stage_size
        return rank // s, (rank % s) // self.tp, rank % self.tp

    def rank_of(self, pp_rank: int, dp_rank: int, tp_rank: int) -> int:
        return pp_rank * self.stage_size + dp_rank * self.tp + tp_rank

    def ep_coords(self, rank: int) -> tuple[int, int]:
        """``(ep_group_index_in_stage, ep_rank)`` of ``rank``."""
        local = rank % self.stage_size
        return local // self.ep, local % self.ep

    # ------------------------------------------------------------------ groups

    def tp_group(self, rank: int) -> tuple[int, ...]:
        base = rank - rank % self.tp
        return tuple(range(base, base + self.tp))

    def dp_group(self, rank: int) -> tuple[int, ...]:
        p, _, t = self.coords(rank)
        return tuple(self.rank_of(p, d, t) for d in range(self.dp))

    def ep_group(self, rank: int) -> tuple[int, ...]:
        base = rank - (rank % self.stage_size) % self.ep
        return tuple(range(base, base + self.ep))

    def expert_dp_group(self, rank: int) -> tuple[int, ...]:
        """Ranks of the same stage that hold the same experts (reduce expert gradients)."""
        stage0 = rank - rank % self.stage_size
        pos = (rank % self.stage_size) % self.ep
        return tuple(stage0 + g * self.ep + pos for g in range(self.stage_size // self.ep))

    def pp_group(self, rank: int) -> tuple[int, ...]:
        local = rank % self.stage_size
        return tuple(p * self.stage_size + local for p in range(self.pp))

    def ep_groups_of_stage(self, pp_rank: int) -> list[tuple[int, ...]]:
        base = pp_rank * self.stage_size
        return [tuple(range(base + g, base + g + self.ep)) for g in range(0, self.stage_size, self.ep)]

    def stage_ranks(self, pp_rank: int) -> list[int]:
        base = pp_rank * self.stage_size
        return list(range(base, base + self.stage_size))

    def group_index(self, kind: str, rank: int) -> int:
        """A stable index of ``rank``'s group of ``kind`` (``tp``, ``dp``, ``ep``, ``edp``, ``pp``)."""
        p, _, t = self.coords(rank)
        g, e = self.ep_coords(rank)
        if kind == "tp":
            return rank // self.tp
        if kind == "dp":
            return p * self.tp + t
        if kind == "ep":
            return p * (self.stage_size // self.ep) + g
        if kind == "edp":
            return p * self.ep + e
        if kind == "pp":
            return rank % self.stage_size
        raise ValueError(f"unknown group kind {kind!r}")


def list_accelerators(graph: nx.DiGraph) -> list[str]:
    """Accelerator names of ``graph`` in (server, local index) order."""
    accs = [
        (int(a.get("node", -1)), int(a.get("index", -1)), str(n))
        for n, a in graph.nodes(data=True)
        if a.get("kind") == "accelerator"
    ]
    accs.sort()
    return [n for _, _, n in accs]


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def place_ranks(spec: WorkloadSpec, graph: nx.DiGraph, world: int) -> list[str]:
    """Device name of every rank (see the module docstring for the policies)."""
    src = spec.source
    accs = list_accelerators(graph)
    explicit = spec.device_placement.devices
    if explicit is not None:
        if len(explicit) != world:
            raise WorkloadError(
                f"needs one device per rank: {world} ranks, got {len(explicit)} devices",
                source=src,
                field="device_placement.devices",
            )
        known = set(accs)
        for d in explicit:
            if d not in known:
                raise WorkloadError(
                    f"{d!r} is not an accelerator of the topology (e.g. {', '.join(accs[:3])}, ...)",
                    source=src,
                    field="device_placement.devices",
                )
        if len(set(explicit)) != len(explicit):
            raise WorkloadError("a device is listed twice", source=src, field="device_placement.devices")
        return list(explicit)
    if spec.device_placement.policy == "topology-aware":
        return accs[:world]
    # round-robin over servers: rank r -> server r % N, next free accelerator there
    by_node: dict[int, list[str]] = {}
    for name in accs:
        by_node.setdefault(int(graph.nodes[name].get("node", -1)), []).append(name)
    servers = sorted(by_node)
    out: list[str] = []
    cursor = dict.fromkeys(servers, 0)
    i = 0
    while len(out) < world:
        srv = servers[i % len(servers)]
        if cursor[srv] < len(by_node[srv]):
            out.append(by_node[srv][cursor[srv]])
            cursor[srv] += 1
        i += 1
    return out


def build_layout(spec: WorkloadSpec, graph: nx.DiGraph) -> ParallelLayout:
    """Check the parallel sizes against the topology and build the layout.

    Raises:
        WorkloadError: naming ``parallelism.<field>`` and the allowed values when the sizes do
            not fit the devices (EP not dividing the ranks of a stage, too few devices, ...).
    """
    src = spec.source
    par = spec.parallelism
    accs = list_accelerators(graph)
    n_dev = len(accs)
    if n_dev == 0:
        raise WorkloadError("the topology has no accelerators", source=src)
    model_par = par.pp * par.tp
    if par.dp == "auto":
        if n_dev % model_par:
            raise WorkloadError(
                f"pp * tp = {model_par} must divide the {n_dev} accelerators when dp is auto; "
                f"allowed pp * tp: {_divisors(n_dev)}",
                source=src,
                field="parallelism",
            )
        dp = n_dev // model_par
    else:
        dp = par.dp
    world = dp * model_par
    if world > n_dev:
        raise WorkloadError(
            f"dp * pp * tp = {dp} * {par.pp} * {par.tp} = {world} ranks but the topology has only {n_dev} accelerators",
            source=src,
            field="parallelism.dp",
        )
    stage = dp * par.tp
    if stage % par.ep:
        raise WorkloadError(
            f"must divide the ranks of a pipeline stage dp * tp = {stage} (got {par.ep}); allowed: {_divisors(stage)}",
            source=src,
            field="parallelism.ep",
        )
    moe = spec.model.moe
    if par.ep > 1 and moe is None:
        raise WorkloadError("ep > 1 needs model.moe", source=src, field="parallelism.ep")
    if moe is not None:
        slots = moe.experts + spec.placement.redundant_experts
        if slots % par.ep:
            raise WorkloadError(
                f"experts + placement.redundant_experts = {slots} must be a multiple of ep = {par.ep}; "
                f"allowed ep: {_divisors(slots)}",
                source=src,
                field="parallelism.ep",
            )
    sched = spec.schedule
    v = sched.virtual_chunks
    chunks = par.pp * (1 if sched.name == "dualpipe" else v)
    # the first and the last chunk may hold no layer (only the embedding / the LM head: the
    # layout of Llama 3's interleaved pipeline, arXiv 2407.21783 section 3.3.2)
    if spec.model.layers < chunks - (2 if chunks > 2 else 0):
        raise WorkloadError(
            f"{spec.model.layers} layers cannot fill {chunks} pipeline chunks (every chunk but the first and the "
            "last needs one)",
            source=src,
            field="model.layers",
        )
    devices = place_ranks(spec, graph, world)
    nodes = tuple(int(graph.nodes[d].get("node", -1)) for d in devices)
    return ParallelLayout(dp=dp, pp=par.pp, tp=par.tp, ep=par.ep, devices=tuple(devices), nodes=nodes)
