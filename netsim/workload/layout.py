"""Parallel layout: ranks, their (dp, pp, tp, ep) coordinates, process groups, rank -> device.

Ranks are numbered Megatron-style with TP fastest, then CP, then DP, then PP (Megatron-Core's
default order ``tp-cp-ep-dp-pp``)::

    rank = pp_rank * (dp * cp * tp) + (dp_rank * cp + cp_rank) * tp + tp_rank

The layout's second axis runs over the ``dp * cp`` data- and context-parallel ranks (``dpc``):
the ``cp`` consecutive ones of a data-parallel replica hold one sequence between them
(:mod:`netsim.workload.context_parallel`), and all ``dp * cp`` hold the same parameters, so the
gradient-reduction group (:meth:`ParallelLayout.dp_group`) is Megatron's data-parallel group
with context parallelism.  Without CP (``cp = 1``) the two axes are the same.

The ``dp * cp * tp`` ranks of a pipeline stage are also carved into expert-parallel (EP) groups
by the workload's *expert layout* (:mod:`netsim.workload.expert_layout`: Megatron's parallel
folding by default, ``ep`` consecutive ranks of a stage, so with sequence parallelism an EP
group may span TP and DP ranks alike; or DeepSpeed's and MindSpore's EP groups across data
parallelism).  Ranks holding the same expert shards form the *expert-data-parallel* group that
reduces the expert gradients; dense gradients are reduced over the ordinary DP group (same
stage, same TP rank).

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

import math
from dataclasses import dataclass, field, replace

import networkx as nx

from netsim.config.workload import WorkloadSpec
from netsim.errors import WorkloadError
from netsim.workload.expert_layout import ExpertLayout, MegatronLayout, make_expert_layout

__all__ = ["ParallelLayout", "build_layout", "expert_slots", "list_accelerators", "place_ranks"]


@dataclass(frozen=True)
class ParallelLayout:
    """The parallel decomposition of a workload on ``world`` ranks.

    Attributes:
        dp, pp, tp, ep: the parallel sizes (``world = dp * cp * pp * tp``).
        devices: accelerator name of every rank (index = rank).
        nodes: server index of every rank.
        experts: the expert layout of every stage (default: Megatron's, whole experts).
        cp: the context-parallel size.
    """

    dp: int
    pp: int
    tp: int
    ep: int
    devices: tuple[str, ...]
    nodes: tuple[int, ...]
    experts: ExpertLayout = field(default=None, compare=False)  # type: ignore[assignment]
    cp: int = 1
    #: CP ranks of the Q/K/V all-to-all of the a2a context-parallel types (1: none)
    cp_a2a: int = 1
    #: groups the DP group is split into, each sharding the model state (``parallelism.dp_replicas``,
    #: ``per-node`` resolved to the servers the group spans; 1: the whole group)
    dp_replicas: int = 1
    _ep_ordinal: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    _a2a_ordinal: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    _a2a_per_stage: int = field(default=0, init=False, repr=False, compare=False)
    _tp_groups: dict[int, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _cp_groups: dict[int, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.experts is None:
            object.__setattr__(self, "experts", MegatronLayout(self.dpc, self.tp, self.ep, 1))
        # the ordinal of every EP group and all-to-all group in a stage (by first local rank)
        ex = self.experts
        for kind, members in (("ep", ex.ep_members), ("a2a", ex.a2a_members)):
            firsts = sorted({members(x)[0] for x in range(self.stage_size)})
            index = {f: i for i, f in enumerate(firsts)}
            object.__setattr__(self, f"_{kind}_ordinal", tuple(index[members(x)[0]] for x in range(self.stage_size)))
            if kind == "a2a":
                object.__setattr__(self, "_a2a_per_stage", len(firsts))

    @property
    def etp(self) -> int:
        """Expert tensor-parallel size (ranks one expert is split over)."""
        return self.experts.etp

    @property
    def world(self) -> int:
        return self.dpc * self.pp * self.tp

    @property
    def dpc(self) -> int:
        """Data- and context-parallel ranks per TP rank of a stage (``dp * cp``)."""
        return self.dp * self.cp

    @property
    def stage_size(self) -> int:
        """Ranks per pipeline stage (``dp * cp * tp``)."""
        return self.dpc * self.tp

    def coords(self, rank: int) -> tuple[int, int, int]:
        """``(pp_rank, dpc_rank, tp_rank)`` of ``rank`` (``dpc_rank = dp_rank * cp + cp_rank``)."""
        s = self.stage_size
        return rank // s, (rank % s) // self.tp, rank % self.tp

    def rank_of(self, pp_rank: int, dp_rank: int, tp_rank: int) -> int:
        return pp_rank * self.stage_size + dp_rank * self.tp + tp_rank

    def _stage(self, rank: int) -> tuple[int, int]:
        """``(first rank of rank's stage, local index)``."""
        local = rank % self.stage_size
        return rank - local, local

    def ep_coords(self, rank: int) -> tuple[int, int]:
        """``(ep_group_index_in_stage, ep_rank)`` of ``rank``."""
        _, local = self._stage(rank)
        return self._ep_ordinal[local], self.experts.ep_position(local)

    def a2a_index(self, rank: int) -> int:
        """A dense index (0, 1, ...) of ``rank``'s all-to-all group over all stages."""
        p, local = rank // self.stage_size, rank % self.stage_size
        return p * self._a2a_per_stage + self._a2a_ordinal[local]

    @property
    def a2a_groups_per_stage(self) -> int:
        return self._a2a_per_stage

    # ------------------------------------------------------------------ groups

    def tp_group(self, rank: int) -> tuple[int, ...]:
        base = rank - rank % self.tp
        got = self._tp_groups.get(base)
        if got is None:
            got = self._tp_groups[base] = tuple(range(base, base + self.tp))
        return got

    def dp_group(self, rank: int) -> tuple[int, ...]:
        """The ranks that reduce ``rank``'s dense gradients: same stage and TP rank, every data- and
        context-parallel rank (Megatron's data-parallel group with context parallelism)."""
        p, _, t = self.coords(rank)
        return tuple(self.rank_of(p, d, t) for d in range(self.dpc))

    def cp_group(self, rank: int) -> tuple[int, ...]:
        """The ``cp`` ranks that share ``rank``'s sequences, in ring order."""
        got = self._cp_groups.get(rank)
        if got is None:
            p, d, t = self.coords(rank)
            first = d - d % self.cp
            got = tuple(self.rank_of(p, first + c, t) for c in range(self.cp))
            for r in got:
                self._cp_groups[r] = got
        return got

    def cp_subgroup(self, rank: int, level: str) -> tuple[int, ...]:
        """``rank``'s group of one level of hierarchical context parallelism, whose first level
        has :attr:`cp_a2a` ranks (Megatron-Core's ``create_hierarchical_groups``): ``a2a``, the
        ``cp_a2a`` consecutive ranks of the CP group that hold ``rank`` (its all-to-all); ``p2p``,
        the CP ranks at ``rank``'s position in the other ``a2a`` groups (its ring), in ring order."""
        inner, outer = hierarchical_groups(self.cp_group(rank), rank, self.cp_a2a)
        return inner if level == "a2a" else outer

    def ep_group(self, rank: int) -> tuple[int, ...]:
        """The ranks that exchange tokens with ``rank`` and hold the other experts, in EP-position
        order."""
        base, local = self._stage(rank)
        return tuple(base + x for x in self.experts.ep_members(local))

    def expert_dp_group(self, rank: int) -> tuple[int, ...]:
        """Ranks of the same stage that hold the same expert shards (reduce expert gradients)."""
        base, local = self._stage(rank)
        return tuple(base + x for x in self.experts.edp_members(local))

    def expert_tp_group(self, rank: int) -> tuple[int, ...]:
        """Ranks holding the other shards of ``rank``'s experts (``rank`` alone when whole)."""
        base, local = self._stage(rank)
        return tuple(base + x for x in self.experts.etp_members(local))

    def a2a_group(self, rank: int) -> tuple[int, ...]:
        """The ranks of ``rank``'s expert all-to-all collective: its EP group, or in replicated
        layouts the EP groups of its TP group's ranks (ordered EP position, TP rank)."""
        base, local = self._stage(rank)
        return tuple(base + x for x in self.experts.a2a_members(local))

    def pp_group(self, rank: int) -> tuple[int, ...]:
        local = rank % self.stage_size
        return tuple(p * self.stage_size + local for p in range(self.pp))

    def ep_groups_of_stage(self, pp_rank: int) -> list[tuple[int, ...]]:
        base = pp_rank * self.stage_size
        return sorted({self.ep_group(base + x) for x in range(self.stage_size)})

    def stage_ranks(self, pp_rank: int) -> list[int]:
        base = pp_rank * self.stage_size
        return list(range(base, base + self.stage_size))

    def group_index(self, kind: str, rank: int) -> int:
        """A stable index of ``rank``'s group of ``kind`` (``tp``, ``cp``, ``cp-a2a``, ``cp-p2p``,
        ``dp``, ``ep``, ``edp``, ``etp``, ``a2a``, ``pp``): the group's first rank (groups of a kind
        are disjoint)."""
        if kind == "tp":
            return rank - rank % self.tp
        if kind == "cp":
            return self.cp_group(rank)[0]
        if kind in ("cp-a2a", "cp-p2p"):
            return self.cp_subgroup(rank, kind[3:])[0]
        if kind == "dp":
            return self.dp_group(rank)[0]
        if kind == "ep":
            return self.ep_group(rank)[0]
        if kind == "edp":
            return self.expert_dp_group(rank)[0]
        if kind == "etp":
            return self.expert_tp_group(rank)[0]
        if kind == "a2a":
            return self.a2a_group(rank)[0]
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


def hierarchical_groups(group: tuple[int, ...], rank: int, size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``rank``'s two groups when ``group`` is cut into slices of ``size`` consecutive members
    (Megatron-Core's ``create_hierarchical_groups`` at d98e8a64dd, which also lays out the partial
    distributed optimizer's intra- and inter-instance groups): its slice, and the members at its
    position in every slice."""
    i = group.index(rank)
    lo = i - i % size
    return group[lo : lo + size], group[i % size :: size]


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


def _check_expert_layout(spec: WorkloadSpec, experts: ExpertLayout) -> None:
    """What the expert layout needs from the rest of the workload."""
    par, src = spec.parallelism, spec.source
    if experts.replicated and par.tp > 1 and par.sequence_parallel:
        raise WorkloadError(
            f"expert_layout {experts.name} has the TP ranks route the same tokens (no sequence parallelism in the "
            "MoE block): set parallelism.sequence_parallel false",
            source=src,
            field="parallelism.sequence_parallel",
        )
    if par.expert_alltoall == "groupwise" and not (experts.replicated and par.tp > 1):
        raise WorkloadError(
            f"groupwise needs TP ranks that hold the same tokens: expert_layout deepspeed or mindspore with tp > 1 "
            f"(got {experts.name}, tp {par.tp})",
            source=src,
            field="parallelism.expert_alltoall",
        )


def _check_groupwise(spec: WorkloadSpec, experts: ExpertLayout, nodes: tuple[int, ...]) -> None:
    """The group-wise all-to-all all-gathers inside a server: the ranks of an all-to-all group on
    one server must be one TP group (netsim.collectives.groupwise)."""
    for local in range(experts.size):
        members = experts.a2a_members(local)
        per_node: dict[int, int] = {}
        for x in members:
            per_node[nodes[x]] = per_node.get(nodes[x], 0) + 1
        if any(v != experts.tp for v in per_node.values()):
            raise WorkloadError(
                f"groupwise all-gathers inside a server: every server must hold one TP group (tp = {experts.tp}) "
                f"of an all-to-all group, got {sorted(set(per_node.values()))} of its ranks per server",
                source=spec.source,
                field="parallelism.expert_alltoall",
            )


def _check_pipeline_layers(spec: WorkloadSpec, chunks: int) -> None:
    """An explicit ``parallelism.pipeline_layers``: one count per pipeline block, the model's layers
    in all, no empty block but the first and the last."""
    sizes = spec.parallelism.pipeline_layers
    assert isinstance(sizes, list)
    problem = ""
    if len(sizes) != chunks:
        problem = f"needs one count per pipeline block ({chunks}: pp x virtual chunks), got {len(sizes)}"
    elif sum(sizes) != spec.model.layers:
        problem = f"counts must add up to model.layers = {spec.model.layers}, got {sum(sizes)}"
    elif any(n == 0 for n in sizes[1:-1]):
        problem = "only the first and the last block may hold no layer"
    if problem:
        raise WorkloadError(problem, source=spec.source, field="parallelism.pipeline_layers")


def expert_slots(spec: WorkloadSpec) -> int:
    """Physical expert slots of an MoE layer: the routed experts and their extra replicas
    (``placement.redundant_experts``); 0 for a dense model.  ``build_layout`` checks that the EP
    size divides them."""
    moe = spec.model.moe
    return moe.experts + spec.placement.redundant_experts if moe is not None else 0


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
    _check_context_parallel(spec)
    if spec.overlap.tp_comm_overlap and par.tp > 1 and not par.sequence_parallel:
        raise WorkloadError(
            "needs parallelism.sequence_parallel: true (Transformer Engine's userbuffers overlap the sequence-"
            "parallel all-gathers and reduce-scatters)",
            source=src,
            field="overlap.tp_comm_overlap",
        )
    model_par = par.pp * par.tp * par.cp
    names = "pp * tp * cp" if par.cp > 1 else "pp * tp"
    if par.dp == "auto":
        if n_dev % model_par:
            raise WorkloadError(
                f"{names} = {model_par} must divide the {n_dev} accelerators when dp is auto; "
                f"allowed {names}: {_divisors(n_dev)}",
                source=src,
                field="parallelism",
            )
        dp = n_dev // model_par
    else:
        dp = par.dp
    world = dp * model_par
    if world > n_dev:
        sizes = f"{dp} * {par.pp} * {par.tp}" + (f" * {par.cp}" if par.cp > 1 else "")
        raise WorkloadError(
            f"dp * {names} = {sizes} = {world} ranks but the topology has only {n_dev} accelerators",
            source=src,
            field="parallelism.dp",
        )
    stage = dp * par.cp * par.tp
    if stage % par.ep:
        what = "dp * cp * tp" if par.cp > 1 else "dp * tp"
        raise WorkloadError(
            f"must divide the ranks of a pipeline stage {what} = {stage} (got {par.ep}); allowed: {_divisors(stage)}",
            source=src,
            field="parallelism.ep",
        )
    experts = make_expert_layout(par.expert_layout, dp * par.cp, par.tp, par.ep, par.expert_tp, source=src)
    _check_expert_layout(spec, experts)
    moe = spec.model.moe
    if par.ep > 1 and moe is None:
        raise WorkloadError("ep > 1 needs model.moe", source=src, field="parallelism.ep")
    if moe is not None:
        slots = expert_slots(spec)
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
    if isinstance(par.pipeline_layers, list):
        _check_pipeline_layers(spec, chunks)
    elif spec.model.layers < chunks - (2 if chunks > 2 else 0):
        raise WorkloadError(
            f"{spec.model.layers} layers cannot fill {chunks} pipeline chunks (every chunk but the first and the "
            "last needs one)",
            source=src,
            field="model.layers",
        )
    devices = place_ranks(spec, graph, world)
    nodes = tuple(int(graph.nodes[d].get("node", -1)) for d in devices)
    if par.expert_alltoall == "groupwise":
        _check_groupwise(spec, experts, nodes)
    layout = ParallelLayout(
        dp=dp,
        pp=par.pp,
        tp=par.tp,
        ep=par.ep,
        devices=tuple(devices),
        nodes=nodes,
        experts=experts,
        cp=par.cp,
        cp_a2a=par.cp_a2a if par.cp > 1 else 1,
        dp_replicas=par.dp_replicas if isinstance(par.dp_replicas, int) else 1,
    )
    if par.dp_replicas == "per-node":  # the servers the placed DP group spans
        layout = replace(layout, dp_replicas=_per_node_replicas(spec, layout))
    _check_dp_replicas(spec, dp, experts, layout.dp_replicas)
    return layout


def _per_node_replicas(spec: WorkloadSpec, layout: ParallelLayout) -> int:
    """``parallelism.dp_replicas: per-node`` as a number: the servers rank 0's DP group spans, each
    of which must hold one slice of consecutive members (HSDP's groups); WorkloadError if the
    placement puts a slice across servers."""
    group = layout.dp_group(0)
    servers = len({layout.nodes[r] for r in group})
    size = len(group) // servers if len(group) % servers == 0 else 0
    slices = [group[i : i + size] for i in range(0, len(group), size)] if size else []
    if not slices or any(len({layout.nodes[r] for r in s}) != 1 for s in slices):
        raise WorkloadError(
            f"per-node needs every server to hold an equal run of consecutive data-parallel ranks; the group of "
            f"rank 0 ({len(group)} ranks) spans {servers} servers unevenly; allowed: a number that divides "
            f"{len(group)}",
            source=spec.source,
            field="parallelism.dp_replicas",
        )
    return servers


def _check_dp_replicas(spec: WorkloadSpec, dp: int, experts: ExpertLayout, replicas: int) -> None:
    """``parallelism.dp_replicas`` must divide the DP group and the expert-DP group (each is cut
    into that many slices that shard the model state, netsim.workload.gradients)."""
    par = spec.parallelism
    if replicas == 1:
        return
    groups = {"dp * cp" if par.cp > 1 else "dp": dp * par.cp}
    if spec.model.moe is not None:
        groups["the expert data-parallel group"] = len(experts.edp_members(0))
    if any(n % replicas for n in groups.values()):
        sizes = ", ".join(f"{k} = {n}" for k, n in groups.items())
        what = f"dp_replicas = {replicas}" + (" (per-node)" if par.dp_replicas == "per-node" else "")
        raise WorkloadError(
            f"{what} must divide every group that shards the model state ({sizes}); "
            f"allowed dp_replicas: {_divisors(math.gcd(*groups.values()))}",
            source=spec.source,
            field="parallelism.dp_replicas",
        )


def _check_context_parallel(spec: WorkloadSpec) -> None:
    """What context parallelism needs (Megatron-Core with Transformer Engine): sequences in ``2 *
    cp`` equal chunks, fused (flash) attention, Megatron's expert layout."""
    cp, src = spec.parallelism.cp, spec.source
    if cp == 1:
        return
    if spec.model.seq_len % (2 * cp):
        raise WorkloadError(
            f"model.seq_len = {spec.model.seq_len} must be a multiple of 2 * cp = {2 * cp} (each CP rank holds two "
            f"of 2 * cp load-balanced chunks); allowed cp: {_divisors(spec.model.seq_len // 2)}",
            source=src,
            field="parallelism.cp",
        )
    if not spec.training.flash_attention:
        raise WorkloadError(
            "cp > 1 needs training.flash_attention: true (Transformer Engine's context parallelism runs the fused "
            "attention kernels)",
            source=src,
            field="parallelism.cp",
        )
    if spec.parallelism.expert_layout != "megatron":
        raise WorkloadError(
            f"cp > 1 needs parallelism.expert_layout megatron (got {spec.parallelism.expert_layout!r}: that "
            "framework has no context parallelism)",
            source=src,
            field="parallelism.cp",
        )
    a2a, tp, m = spec.parallelism.cp_a2a, spec.parallelism.tp, spec.model
    if a2a > 1:
        # Transformer Engine's a2a types split the heads of every TP rank over the a2a group
        # (AttnFuncWithCPAndQKVOA2A asserts num_heads % cp_size == 0 for Q and for K, V)
        heads = {"heads": m.heads // tp, "kv_heads": (m.heads if m.mla is not None else m.num_kv_heads) // tp}
        bad = {k: v for k, v in heads.items() if v % a2a}
        if bad:
            what = ", ".join(f"{k} / tp = {v}" for k, v in heads.items())
            allowed = _divisors(math.gcd(*heads.values()))
            raise WorkloadError(
                f"cp_comm_type {spec.parallelism.cp_comm_type} splits each TP rank's attention heads over "
                f"{a2a} ranks, which must divide them ({what}); allowed a2a sizes: {allowed}",
                source=src,
                field="parallelism.cp_comm_type",
            )
