"""Collective cost models: what a collective library does on top of the wires.

The flow engine moves bytes at what the links allow (exact max-min sharing).  A real
collective library adds software on top: a launch and synchronisation cost per call, a latency
per step that depends on the protocol and the hop (NVLink, PCIe, network), protocols whose
flags cost bandwidth (LL sends 8 bytes of flag per 8 of data), thread blocks ("channels") that
each move a bounded number of bytes per second, and an algorithm chosen per call.  A *cost
model* decides, per collective call, how it runs: a :class:`CollectiveCall`, which the executor
(:mod:`netsim.collectives.executor`) applies to the algorithm's plan.

Two models ship, selected by name (``--collective-cost``, ``options.collective_cost``):

* ``nccl`` (the default of every preset): NCCL's own tuner (:mod:`netsim.collectives.nccl`)
  picks the algorithm, protocol and channels per size, with its base and per-hop latencies and
  per-protocol bandwidth limits; links run at the achieved efficiency of their class
  (``efficiency:`` in the topology preset).
* ``ideal``: the wire bound: no software latency (unless a per-step latency is given), no
  protocol overhead, links at line rate; kept exact on the hand-computable alpha-beta cases.

How the executor applies a call (module doc of :mod:`netsim.collectives.executor`):

* ``base_latency_s`` once before the first transfer;
* ``hop_latency_s[hop]`` before every transfer of a step plan (``intra``: inside a server,
  ``inter``: across servers), less the path latency the engine adds itself for such a hop;
* *fluid* plans (pipelined algorithms: NCCL's tree, NVLS, chains) start every transfer at once
  and complete no earlier than ``pipeline_latency_s`` plus the slowest drain;
* transfer sizes times ``wire_factor`` (protocol flags);
* every transfer's rate at most what finishes the plan in ``nbytes / alg_bw_Bps`` (the
  library's bandwidth limit for this call: channels, protocol), so the engine adds only
  contention on top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import networkx as nx

from netsim.collectives.nccl.constants import NcclConstants, load_constants
from netsim.collectives.nccl.p2p import P2pChannels, p2p_channels
from netsim.collectives.nccl.system import group_shape, nccl_system, ring_total_bw
from netsim.collectives.nccl.tuner import COLLS, Choice, NcclSystem, TunerTable, choose, tune
from netsim.collectives.plan import CollectiveError
from netsim.collectives.registry import default_algorithm, get_algorithm
from netsim.registry import Registry

__all__ = ["COST_MODELS", "CollectiveCall", "CostModel", "IdealCost", "NcclCost", "make_cost_model"]


@dataclass(frozen=True)
class CollectiveCall:
    """How one collective call runs (the cost model's decision).

    Attributes:
        algo: the plan algorithm (a name of :mod:`netsim.collectives.registry`).
        fluid: the plan is a pipeline whose transfers all run at once (module doc).
        base_latency_s: once per call, before the first transfer.
        hop_latency_s: software latency per transfer of a step plan, by hop
            (``intra``/``inter``), including the wire (the executor subtracts the path latency
            the engine adds).
        pipeline_latency_s: fluid plans: the latency of the pipeline's longest chain.
        wire_factor: wire bytes per data byte (protocol flags).
        alg_bw_Bps: the call's algorithm bandwidth limit (bytes/s), ``None`` for none.
        library_algo, proto, channels: what the library chose (for reports).
        predicted_s: the library's own time estimate, if it has one.
        p2p: point-to-point ops: NCCL's channel rule; each transfer's flow is capped at its
            channels' rate (:mod:`netsim.collectives.nccl.p2p`).
    """

    algo: str
    fluid: bool = False
    base_latency_s: float = 0.0
    hop_latency_s: Mapping[str, float] = field(default_factory=lambda: {"intra": 0.0, "inter": 0.0})
    pipeline_latency_s: float = 0.0
    wire_factor: float = 1.0
    alg_bw_Bps: float | None = None
    library_algo: str | None = None
    proto: str | None = None
    channels: int | None = None
    predicted_s: float | None = None
    subtract_path_latency: bool = True
    p2p: P2pChannels | None = None


class CostModel:
    """A collective cost model bound to one topology (subclasses register in :data:`COST_MODELS`)."""

    name: ClassVar[str] = ""

    def __init__(self, graph: nx.DiGraph | None = None, **_: Any) -> None:
        self.graph = graph

    def call(
        self, op: str, devices: Sequence[str], nbytes: float, *, algo: str | None = None, proto: str | None = None
    ) -> CollectiveCall:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the model is, for run summaries."""
        return {"collective_cost": self.name}


COST_MODELS: Registry[type[CostModel]] = Registry("collective cost model", field="collective_cost")


@COST_MODELS.register("ideal")
class IdealCost(CostModel):
    """The wire bound: the algorithm asked for (or the op's default), ``step_latency_s`` before
    every transfer, nothing else."""

    name = "ideal"

    def __init__(self, graph: nx.DiGraph | None = None, *, step_latency_s: float = 0.0, **_: Any) -> None:
        super().__init__(graph)
        self.step_latency_s = float(step_latency_s)

    def call(
        self, op: str, devices: Sequence[str], nbytes: float, *, algo: str | None = None, proto: str | None = None
    ) -> CollectiveCall:
        if proto is not None:
            raise CollectiveError(
                f"protocol {proto!r} needs --collective-cost nccl (the ideal model has none)", field="proto"
            )
        name = get_algorithm(op, algo).name
        lat = self.step_latency_s
        return CollectiveCall(algo=name, hop_latency_s={"intra": lat, "inter": lat}, subtract_path_latency=False)

    def describe(self) -> dict[str, Any]:
        return {"collective_cost": self.name, "step_latency_s": self.step_latency_s}


#: NCCL algorithm -> (plan algorithm, fluid) per op family; ``None`` keeps the op's own name.
_PLAN_OF: dict[tuple[str, str], tuple[str, bool]] = {
    ("all_reduce", "ring"): ("ring", False),
    ("all_reduce", "tree"): ("tree", True),
    ("all_reduce", "nvls"): ("nvls", True),
    ("all_reduce", "nvls_tree"): ("nvls_tree", True),
    ("all_reduce", "collnet_direct"): ("sharp", False),
    ("all_reduce", "collnet_chain"): ("sharp", False),
    ("all_gather", "ring"): ("ring", False),
    ("reduce_scatter", "ring"): ("ring", False),
    ("all_gather", "nvls"): ("nvls", True),
    ("reduce_scatter", "nvls"): ("nvls", True),
    ("all_gather", "pat"): ("pat", False),
    ("reduce_scatter", "pat"): ("pat", False),
    ("broadcast", "ring"): ("ring", True),
    ("reduce", "ring"): ("ring", True),
}
#: netsim algorithm names that are NCCL algorithms (the ``--algo`` a user gives).
_NCCL_NAME = {
    "ring": "ring",
    "tree": "tree",
    "nvls": "nvls",
    "nvls_tree": "nvls_tree",
    "collnet_direct": "collnet_direct",
    "collnet_chain": "collnet_chain",
    "sharp": "collnet_direct",
    "pat": "pat",
}
_P2P_OPS = ("all_to_all", "all_to_allv", "sendrecv")


@COST_MODELS.register("nccl")
class NcclCost(CostModel):
    """NCCL's tuner and latencies on top of the flow engine (module doc).

    Args:
        graph: the topology.
        settings: the topology's ``collectives`` section (``arch``, ``host_cpu``, ``nvls``,
            ``collnet``, ``constants`` overrides, ``latency_scale``).
        efficiency: achieved fraction of line rate per link class (the same the network uses).
    """

    name = "nccl"

    def __init__(
        self,
        graph: nx.DiGraph,
        *,
        settings: Mapping[str, Any] | None = None,
        efficiency: Mapping[str, float] | None = None,
        reference_efficiency: Mapping[str, float] | None = None,
        **_: Any,
    ) -> None:
        super().__init__(graph)
        self.graph: nx.DiGraph = graph
        self.settings = dict(settings or {})
        self.efficiency = dict(efficiency or {})
        self.reference_efficiency = dict(reference_efficiency if reference_efficiency is not None else self.efficiency)
        self.constants: NcclConstants = load_constants(self.settings.get("constants") or None)
        self.latency_scale = float(self.settings.get("latency_scale", 1.0))
        self._tables: dict[tuple[str, ...], TunerTable] = {}
        self._ratios: dict[tuple[str, ...], float] = {}
        self._calls: dict[tuple[Any, ...], CollectiveCall] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "collective_cost": self.name,
            "nccl_version": self.constants.version,
            "arch": self.settings.get("arch", "hopper"),
            "host_cpu": self.settings.get("host_cpu", "intel"),
            "nvls": bool(self.settings.get("nvls", False)),
            "collnet": bool(self.settings.get("collnet", False)),
            "latency_scale": self.latency_scale,
        }

    def table(self, devices: Sequence[str]) -> TunerTable:
        """The tuner table of a group (cached per group)."""
        key = tuple(devices)
        t = self._tables.get(key)
        if t is None:
            # NCCL's tuner sees its own link speeds (the preset's efficiencies), not a calibration's
            sys = nccl_system(self.graph, key, self.settings, self.constants, self.reference_efficiency)
            t = self._tables[key] = tune(sys, self.constants)
        return t

    def efficiency_ratio(self, devices: Sequence[str]) -> float:
        """How much more (or less) a group's links carry at the run's efficiencies than at the
        preset's (what NCCL's tables assume): the ratio of a ring's total bandwidth, 1 when
        the run uses the preset's efficiencies (a calibration moves it smoothly)."""
        key = tuple(devices)
        r = self._ratios.get(key)
        if r is None:
            now = ring_total_bw(group_shape(self.graph, key, self.efficiency))
            ref = ring_total_bw(group_shape(self.graph, key, self.reference_efficiency))
            r = self._ratios[key] = now / ref if ref > 0 and math.isfinite(ref) and math.isfinite(now) else 1.0
        return r

    def choice(
        self, op: str, devices: Sequence[str], nbytes: float, *, algo: str | None = None, proto: str | None = None
    ) -> Choice | None:
        """The tuner's choice for a collective NCCL models (``None`` for point-to-point ops)."""
        if op not in COLLS or len(devices) < 2:
            return None
        algos = None
        if algo is not None:  # a netsim-only algorithm runs with NCCL's ring protocols and latencies
            algos = [_NCCL_NAME.get(algo, "ring")]
        protos = [proto] if proto is not None else None
        table = self.table(devices)
        ch = choose(table, op, nbytes, algos=algos, protos=protos)
        if ch is None:
            wanted = f"no algorithm {algo!r}" if algo else "no algorithm"
            why = _why_unavailable(algos[0] if algos else "", table.system)
            raise CollectiveError(
                f"NCCL has {wanted}{' with protocol ' + proto if proto else ''} for {op} on "
                f"this group ({len(devices)} ranks){': ' + why if why else ''}",
                field="algo" if algo or proto is None else "proto",
            )
        return ch

    def call(
        self, op: str, devices: Sequence[str], nbytes: float, *, algo: str | None = None, proto: str | None = None
    ) -> CollectiveCall:
        if proto is not None and proto not in ("LL", "LL128", "Simple"):
            raise CollectiveError(f"unknown protocol {proto!r}; allowed: LL, LL128, Simple", field="proto")
        key = (op, tuple(devices), float(nbytes), algo, proto)
        hit = self._calls.get(key)
        if hit is None:
            hit = self._calls[key] = self._make_call(op, devices, nbytes, algo, proto)
        return hit

    def _hops(self, sys: NcclSystem, algo: str, proto: str, plateau: bool) -> dict[str, float]:
        c, scale = self.constants, self.latency_scale
        intra = c.hw_latency_us(sys.intra_hw, algo, proto)
        inter = c.hw_latency_us("net", "tree" if sys.ppn == 1 else algo, proto)
        g = sys.graphs.get(algo)
        if g is not None:
            inter += g.latency_inter_us * (2 if proto == "Simple" else 1)
        if algo == "ring" and sys.n_nodes > 1:
            overhead = float(c.get("net_overhead_us", sys.cpu if sys.cpu in ("intel", "amd") else "other"))
            intra = max(intra, overhead * (3 if proto == "Simple" else 1))
        f = scale * (
            float(
                c.refinement("ring_plateau_latency_factor")["ampere_and_later" if sys.arch != "volta" else "pre_ampere"]
            )
            if plateau
            else 1.0
        )
        return {"intra": intra * f * 1e-6, "inter": inter * f * 1e-6}

    def _make_call(
        self, op: str, devices: Sequence[str], nbytes: float, algo: str | None, proto: str | None
    ) -> CollectiveCall:
        c = self.constants
        if op in _P2P_OPS or len(devices) < 2:
            return self._p2p_call(op, devices, nbytes, algo, proto)
        if algo is None and self.settings.get("library") == "hccl":
            return self._hccl_call(op, devices, nbytes, proto)
        ch = self.choice(op, devices, nbytes, algo=algo, proto=proto)
        assert ch is not None
        sys = self.table(devices).system
        nccl_algo = ch.algo
        if algo is not None and algo not in _NCCL_NAME:
            plan_algo, fluid = get_algorithm(op, algo).name, False
        else:
            plan_algo, fluid = _PLAN_OF.get((op, nccl_algo), (default_algorithm(op), False))
        base = c.base_latency_us(nccl_algo, ch.proto) * self.latency_scale
        plateau = (
            nccl_algo == "ring"
            and ch.proto == "Simple"
            and sys.n_nodes > 1
            and op == "all_reduce"
            and nbytes / (sys.n_channels * sys.n_ranks) >= 64
        )
        hops = self._hops(sys, nccl_algo, ch.proto, plateau)
        if fluid:  # a pipeline pays its whole latency at the end (pipeline_latency_s), not per hop
            hops = {"intra": 0.0, "inter": 0.0}
        pipeline = max(ch.latency_us * self.latency_scale - base, 0.0) * 1e-6 if fluid else 0.0
        if nccl_algo == "nvls":  # NVLS's latency replaces the base (tuning.cc)
            base, pipeline = 0.0, ch.latency_us * self.latency_scale * 1e-6
        alg_bw = self._reached_bw(op, devices, ch)
        channels = None
        return CollectiveCall(
            algo=plan_algo,
            fluid=fluid,
            base_latency_s=base * 1e-6,
            hop_latency_s=hops,
            pipeline_latency_s=pipeline,
            wire_factor=float(c.get("wire_factor", ch.proto)),
            alg_bw_Bps=alg_bw,
            library_algo=nccl_algo,
            proto=ch.proto,
            channels=channels,
            predicted_s=ch.time_us * 1e-6,
        )

    def _reached_bw(self, op: str, devices: Sequence[str], ch: Choice) -> float | None:
        """The algorithm bandwidth (bytes/s) the chosen (algorithm, protocol) reaches: NCCL's own
        model for it (with its medium-size tree correction and the channels this size uses),
        scaled by how far the links' efficiency moved from the preset's.

        NVLS inside one server is the exception: its traffic is port-bound (every GPU port
        carries ``S (1 + 1/n)`` each way for an all-reduce, ``S`` one way for an all-gather or
        reduce-scatter; :mod:`netsim.collectives.pipelined`) at NCCL's NVLS efficiency of the
        port's bandwidth (``nvlsEfficiency``, tuning.cc), which reproduces the measured growth
        of NVLS bus bandwidth with the GPU count (nccl-issue-1455 in ``netsim validate``) where
        NCCL's channel formula does not."""
        if ch.algo == "nvls" and self.table(devices).system.n_nodes == 1:
            shape = group_shape(self.graph, tuple(devices), self.efficiency)
            n = shape.ranks_per_node
            k = float(self.constants.get("nvls_efficiency", self.table(devices).system.arch))
            per_byte = (1 + 1 / n) if op == "all_reduce" else 1.0
            return k * shape.intra_bw_GBps * 1e9 / per_byte
        if ch.alg_bw_GBps <= 0:
            return None
        return ch.alg_bw_GBps * 1e9 * self.efficiency_ratio(devices)

    def _hccl_call(self, op: str, devices: Sequence[str], nbytes: float, proto: str | None) -> CollectiveCall:
        """HCCL's algorithm selection (CANN HCCL user guide, "Collective Communication
        Algorithms"): inside a fully connected server Mesh, else Ring; across servers the
        all-reduce is hierarchical (intra-server reduce-scatter, inter-server all-reduce of the
        slices, intra-server all-gather) where every server holds as many of the group's devices
        (else ring), the gathers and scatters ring.  HCCL publishes no
        tuning model: the protocol, latencies and per-step costs are NCCL's ring ones
        (*approx.*), and the links alone bound the bandwidth."""
        ch = self.choice(op, devices, nbytes, algo="ring", proto=proto)
        assert ch is not None
        shape = group_shape(self.graph, tuple(devices), self.efficiency)
        if shape.n_nodes == 1 and shape.full_mesh and op in ("all_reduce", "reduce_scatter", "all_gather"):
            plan_algo = "mesh"
        elif shape.n_nodes > 1 and shape.ranks_per_node > 1 and shape.uniform and op == "all_reduce":
            plan_algo = "hierarchical"
        else:
            plan_algo = "ring"
        sys = self.table(devices).system
        c = self.constants
        return CollectiveCall(
            algo=plan_algo,
            fluid=plan_algo == "ring" and op in ("broadcast", "reduce"),
            base_latency_s=c.base_latency_us("ring", ch.proto) * self.latency_scale * 1e-6,
            hop_latency_s=self._hops(sys, "ring", ch.proto, False),
            wire_factor=float(c.get("wire_factor", ch.proto)),
            alg_bw_Bps=None,
            library_algo=f"hccl-{plan_algo}",
            proto=ch.proto,
        )

    def _p2p_call(
        self, op: str, devices: Sequence[str], nbytes: float, algo: str | None, proto: str | None
    ) -> CollectiveCall:
        """Send/recv and all-to-all: NCCL's grouped point-to-point.  Each transfer runs on the
        channels NCCL's rule gives its size (:mod:`netsim.collectives.nccl.p2p`), at most their
        rate; LL up to ``p2p_ll_threshold_bytes`` per channel, Simple above; a ring step's
        latency per transfer."""
        c = self.constants
        n = max(len(devices), 1)
        per_peer = nbytes / n if op in ("all_to_all", "all_to_allv") else nbytes
        name = get_algorithm(op, algo).name
        if len(devices) < 2:
            p = proto or ("LL" if per_peer <= float(c.get("p2p_ll_threshold_bytes")) else "Simple")
            return CollectiveCall(algo=name, proto=p, library_algo="p2p")
        sys = self.table(devices).system
        rule = self._p2p_rule(devices, sys)
        p = proto or rule.protocol(per_peer)
        hops = self._hops(sys, "ring", p, False)
        base = c.base_latency_us("ring", p) * self.latency_scale * 1e-6
        return CollectiveCall(
            algo=name,
            fluid=False,
            base_latency_s=base,
            hop_latency_s=hops,
            wire_factor=float(c.get("wire_factor", p)),
            alg_bw_Bps=None,
            library_algo="p2p",
            proto=p,
            p2p=rule,
        )

    def p2p_rule(self, devices: Sequence[str]) -> P2pChannels:
        """NCCL's p2p channel rule for the communicator ``devices`` (its send/recv and
        all-to-all channels, and the thread blocks a grouped call's kernel runs on)."""
        return self._p2p_rule(devices, self.table(devices).system)

    def _p2p_rule(self, devices: Sequence[str], sys: NcclSystem) -> P2pChannels:
        """NCCL's p2p channel rule for the communicator ``devices`` (the links as NCCL sees them:
        the preset's efficiencies; a channel's rate is a thread block's, not a link's)."""
        return p2p_channels(self.constants, sys, group_shape(self.graph, tuple(devices), self.reference_efficiency))


def _why_unavailable(nccl_algo: str, sys: NcclSystem) -> str:
    """Why NCCL's tuner has no candidate of ``nccl_algo`` on ``sys`` (for error messages)."""
    if nccl_algo in ("collnet_direct", "collnet_chain"):
        if sys.n_nodes < 2:
            return "InfiniBand SHARP reduces in the back-end fabric and needs devices on at least two servers"
        return "InfiniBand SHARP needs collectives.collnet: true in the topology (SHARP switches and NCCL's plugin)"
    if nccl_algo in ("nvls", "nvls_tree"):
        if not sys.nvls:
            return "NVLink SHARP needs collectives.nvls: true (Hopper or later GPUs on NVSwitches)"
        if nccl_algo == "nvls_tree" and sys.n_nodes < 2:
            return "nvls_tree runs across servers (use nvls inside one)"
        if nccl_algo == "nvls" and sys.n_nodes > 1:
            return "nvls across servers needs InfiniBand SHARP (collectives.collnet); NCCL uses nvls_tree there"
    if nccl_algo == "pat":
        return "PAT runs with one GPU per server"
    if nccl_algo == "tree":
        return "NCCL's tree implements all_reduce only"
    return ""


def make_cost_model(
    name: str,
    graph: nx.DiGraph,
    *,
    settings: Mapping[str, Any] | None = None,
    efficiency: Mapping[str, float] | None = None,
    reference_efficiency: Mapping[str, float] | None = None,
    step_latency_s: float = 0.0,
    source: str | None = None,
) -> CostModel:
    """Instantiate the cost model ``name`` for ``graph`` (a one-line SpecError for an unknown name).
    ``reference_efficiency``: the preset's link efficiencies (what NCCL's tables assume), when
    ``efficiency`` is a calibration's."""
    cls = COST_MODELS.get(name, source=source)
    return cls(
        graph,
        settings=settings,
        efficiency=efficiency,
        reference_efficiency=reference_efficiency,
        step_latency_s=step_latency_s,
    )
