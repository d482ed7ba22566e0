"""NCCL's tuner: the bandwidth and latency it predicts for every (collective, algorithm,
protocol), and the choice it makes for a message size.

This is NCCL's own performance model (``ncclTopoTuneModel`` and ``ncclTopoGetAlgoTime`` in
``src/graph/tuning.cc``, ``topoGetAlgoInfo`` in ``src/enqueue.cc``, NCCL 2.30.7), re-expressed
over an :class:`NcclSystem` (what NCCL's topology detection would find: ranks, nodes, the
architecture, and per algorithm a :class:`ChannelGraph` of channels and per-channel bandwidth).
The constants come from :mod:`netsim.collectives.nccl.constants` (data, with sources).

For a collective of ``nbytes`` NCCL predicts ``latency + nbytes / algorithm bandwidth`` for
each candidate, takes the fastest, then lowers the number of channels for small messages
(each channel is one thread block that needs enough bytes per thread).  :func:`choose` returns
that decision as a :class:`Choice`; :class:`TunerTable` holds the per-candidate numbers
(``NCCL_DEBUG_SUBSYS=TUNING`` prints the same table).

Units: latencies in microseconds and bandwidths in GB/s (1e9 B/s), as NCCL; sizes in bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netsim.collectives.nccl.constants import ALGORITHMS, PROTOCOLS, NcclConstants

__all__ = ["COLLS", "ChannelGraph", "Choice", "NcclSystem", "TunerTable", "choose", "tune"]

#: The collectives NCCL's tuner models (netsim op names).
COLLS: tuple[str, ...] = ("broadcast", "reduce", "all_gather", "reduce_scatter", "all_reduce")


@dataclass(frozen=True)
class ChannelGraph:
    """What NCCL's topology search found for one algorithm's pattern (``ncclTopoGraph``).

    Attributes:
        n_channels: channels of the graph (before NCCL duplicates them for the communicator).
        bw_intra_GBps, bw_inter_GBps: bandwidth of one channel inside a node / between nodes.
        latency_inter_us: the network's extra latency NCCL adds per inter-node step.
        same_channels: every channel uses the same path inside the node.
        simple_tree: the tree pattern is NCCL_TOPO_PATTERN_TREE (not BALANCED_TREE).
    """

    n_channels: int
    bw_intra_GBps: float
    bw_inter_GBps: float
    latency_inter_us: float = 0.0
    same_channels: bool = True
    simple_tree: bool = False


@dataclass(frozen=True)
class NcclSystem:
    """A communicator as NCCL's tuner sees it.

    Attributes:
        n_ranks, n_nodes: group size and servers it spans.
        arch: ``volta``, ``ampere``, ``hopper`` or ``blackwell``.
        cpu: host CPU vendor (``intel``, ``amd``, ``other``): LL limits and the network
            post overhead depend on it.
        intra_hw: ``nvlink`` or ``pcie`` (how GPUs of a node reach each other).
        graphs: per algorithm (``ring``, ``tree``, ``nvls``, ``nvls_tree``, ``collnet_direct``,
            ``collnet_chain``, ``pat``) its channel graph.
        n_channels: the communicator's channels (``comm->nChannels``).
        nvls_channels: channels NVLS uses (``comm->nvlsChannels``).
        nvls: NVLink SHARP available (Hopper or later GPUs on NVSwitches).
        collnet: CollNet / InfiniBand SHARP enabled.
        collnet_heads: NICs per node CollNet uses.
        ll128: LL128 enabled by default (NVLink inside nodes, NICs close to the GPUs).
        nvswitch: the node has NVSwitches (CollNet Direct needs them).
    """

    n_ranks: int
    n_nodes: int
    arch: str
    cpu: str
    intra_hw: str
    graphs: Mapping[str, ChannelGraph]
    n_channels: int
    nvls_channels: int = 0
    nvls: bool = False
    collnet: bool = False
    collnet_heads: int = 0
    ll128: bool = True
    nvswitch: bool = False

    @property
    def ppn(self) -> float:
        return self.n_ranks / self.n_nodes

    @property
    def node_index(self) -> int:
        """NCCL's ``index2``: 0 for one node, 1 for two, 2 for more."""
        return 0 if self.n_nodes <= 1 else (1 if self.n_nodes == 2 else 2)


@dataclass(frozen=True)
class Choice:
    """NCCL's decision for one collective call.

    Attributes:
        coll, algo, proto: what runs.
        nbytes: the size the tuner saw (bytes).
        time_us: the tuner's predicted time.
        latency_us: its latency term (once per call).
        alg_bw_GBps: its algorithm bandwidth (``nbytes / (time - latency)``), with the channels
            actually used for this size.
        n_channels: channels used for this size (fewer than the communicator's for small
            messages).
        max_channels: the communicator's channels for this algorithm.
    """

    coll: str
    algo: str
    proto: str
    nbytes: float
    time_us: float
    latency_us: float
    alg_bw_GBps: float
    n_channels: int
    max_channels: int


@dataclass
class TunerTable:
    """``comm->bandwidths`` and ``comm->latencies``: per (coll, algo, proto) the algorithm
    bandwidth (GB/s, 0: not available) and latency (us)."""

    system: NcclSystem
    constants: NcclConstants
    bandwidth: dict[tuple[str, str, str], float] = field(default_factory=dict)
    latency: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def time_us(self, coll: str, algo: str, proto: str, nbytes: float, num_pipe_ops: int = 1) -> float | None:
        """``ncclTopoGetAlgoTime``: predicted time in us, ``None`` if the candidate is unavailable."""
        bw = self.bandwidth.get((coll, algo, proto), 0.0)
        if bw <= 0:
            return None
        lat = self.latency[(coll, algo, proto)]
        sys = self.system
        log_size = _log2i(int(nbytes) >> 6)
        if algo == "tree" and coll == "all_reduce" and 0 <= log_size < 23:
            bw *= float(self.constants.get("tree_correction", proto)[log_size])
        if (
            algo == "nvls_tree"
            and coll == "all_reduce"
            and 0 <= log_size < 24
            and sys.arch == "blackwell"
            and sys.cpu == "intel"
        ):
            bw *= float(self.constants.get("tree_correction", proto)[log_size])
        if (
            algo == "ring"
            and proto == "Simple"
            and sys.n_nodes > 1
            and coll == "all_reduce"
            and nbytes / (sys.n_channels * sys.n_ranks) >= 64
        ):
            plateau = self.constants.refinement("ring_plateau_latency_factor")
            lat *= float(plateau["pre_ampere"] if sys.arch == "volta" else plateau["ampere_and_later"])
        lat_count = num_pipe_ops if algo == "ring" else 1
        return lat * lat_count + nbytes / (1000.0 * bw)

    def rows(self) -> list[dict[str, float | str]]:
        """The table as records (coll, algo, proto, latency_us, bandwidth_GBps)."""
        return [
            {"coll": c, "algo": a, "proto": p, "latency_us": self.latency[(c, a, p)], "bandwidth_GBps": bw}
            for (c, a, p), bw in sorted(self.bandwidth.items())
        ]


def _log2i(x: int) -> int:
    return -1 if x <= 0 else x.bit_length() - 1


def _nsteps(coll: str, n: int) -> int:
    if coll == "all_reduce":
        return 2 * (n - 1)
    if coll in ("reduce_scatter", "all_gather"):
        return n - 1
    return n


def _skip(coll: str, algo: str, proto: str, pat_enabled: bool) -> bool:
    if coll in ("broadcast", "reduce") and algo != "ring":
        return True
    if coll in ("reduce_scatter", "all_gather") and algo not in ("pat", "ring", "nvls", "collnet_direct"):
        return True
    if coll == "all_reduce" and algo == "pat":
        return True
    if algo in ("nvls", "nvls_tree") and proto != "Simple":
        return True
    return coll in ("reduce_scatter", "all_gather") and algo == "pat" and (proto != "Simple" or not pat_enabled)


def _ll_max_bw(sys: NcclSystem, c: NcclConstants) -> float:
    table = c.get("ll_max_bw_GBps")
    if sys.n_nodes == 1:
        return float(table["single_node"][sys.arch])
    row = table["multi_node"]["amd" if sys.cpu == "amd" else "intel"]
    return float(row["two_nodes" if sys.n_nodes == 2 else "more"])


def _bus_bw(sys: NcclSystem, c: NcclConstants, coll: str, algo: str, proto: str) -> float:
    """Bus bandwidth of one candidate (``ncclTopoTuneModel``), before the bus -> algorithm
    conversion."""
    g = sys.graphs.get(algo)
    if g is None or g.n_channels <= 0:
        return 0.0
    collnet = algo in ("collnet_direct", "collnet_chain")
    bw = g.bw_intra_GBps if (sys.n_nodes <= 2 or collnet) else g.bw_inter_GBps
    if algo in ("nvls", "nvls_tree"):
        if g.n_channels < 2:
            return 0.0
        bw = _nvls_channel_bw(sys, c, coll, algo, g)
    bus = _ring_tree_refined(sys, c, coll, algo, proto, g, g.n_channels * bw)
    if collnet and proto != "Simple":
        bus = 0.0
    if algo == "collnet_direct" and proto == "Simple":
        bus = _collnet_direct_bus(sys, c, coll, g, bus)
    if (
        algo in ("nvls", "collnet_direct")
        and proto == "Simple"
        and coll in ("all_gather", "reduce_scatter")
        and sys.n_nodes > 1
        and (not sys.collnet or sys.ppn > sys.collnet_heads)
    ):
        bus = 0.0
    return bus


def _nvls_channel_bw(sys: NcclSystem, c: NcclConstants, coll: str, algo: str, g: ChannelGraph) -> float:
    """Per-channel bandwidth of NVLS / NVLS tree: the smaller of the switch-reduction side (one
    channel fewer, NVLS efficiency), the inter-node side and the NVLS-tree channel cap."""
    arch, ppn = sys.arch, sys.ppn
    intra = g.bw_intra_GBps * float(c.get("nvls_efficiency", arch)) * (g.n_channels - 1) / g.n_channels
    intra *= 2.0 if coll == "all_reduce" else (ppn - 1) / ppn
    inter = g.bw_inter_GBps * (2.0 if (sys.n_nodes <= 2 and algo == "nvls_tree") else 1.0)
    cap = c.per_channel_max_bw("nvls_tree", arch, sys.node_index) if algo == "nvls_tree" else math.inf
    return min(intra, inter, cap)


def _ring_tree_refined(
    sys: NcclSystem, c: NcclConstants, coll: str, algo: str, proto: str, g: ChannelGraph, bus: float
) -> float:
    """NCCL's protocol factors and per-channel caps of ring, tree and PAT applied to ``bus``."""
    arch, idx = sys.arch, sys.node_index
    r = c.refinement
    if algo == "ring" and proto == "LL":
        bus = min(_ll_max_bw(sys, c), bus * float(r("ring_ll_factor")))
    if algo == "ring" and proto == "LL128":
        bus = min(bus * float(r("ring_ll128_factor")), g.n_channels * c.per_channel_max_bw("ring_ll128", arch, idx))
    if algo == "tree" and coll == "all_reduce":
        bus = min(bus * float(r("tree_allreduce_factor")), g.n_channels * c.per_channel_max_bw("tree", arch, idx))
    if algo == "tree" and proto == "LL":
        bus = min(bus * float(r("tree_ll_factor")), _ll_max_bw(sys, c))
    if algo == "tree" and proto == "LL128":
        f = r("tree_ll128_factor_single_node") if sys.n_nodes == 1 else r("tree_ll128_factor_multi_node")
        bus = min(bus * float(f), g.n_channels * c.per_channel_max_bw("tree_ll128", arch, idx))
    if algo == "tree" and g.simple_tree:
        bus *= float(r("tree_pattern_factor"))
    if algo == "pat":
        bus *= float(r("pat_factor"))
    return bus


def _collnet_direct_bus(sys: NcclSystem, c: NcclConstants, coll: str, g: ChannelGraph, bus: float) -> float:
    """CollNet direct (Simple): gather/scatter at the network's pace, or the all-reduce bus
    scaled by ranks per channel (and NCCL's sm90 factor on Hopper and Blackwell)."""
    ppn = sys.ppn
    if coll in ("all_gather", "reduce_scatter"):
        return ppn * min(g.bw_intra_GBps, g.bw_inter_GBps * 0.9)
    factor = ppn / g.n_channels
    factor -= (factor - 1) / 2
    bus /= factor
    if sys.arch in ("hopper", "blackwell"):
        bus *= float(c.refinement("collnet_direct_sm90_factor"))
    return bus


def _latency(sys: NcclSystem, c: NcclConstants, coll: str, algo: str, proto: str) -> float:
    """Latency of one candidate, us (``ncclTopoTuneModel``)."""
    g = sys.graphs[algo]
    n, nodes, ppn = sys.n_ranks, sys.n_nodes, sys.ppn
    nsteps = _nsteps(coll, n)
    intra_hw = sys.intra_hw
    lat = c.base_latency_us(algo, proto)
    intra = c.hw_latency_us(intra_hw, algo, proto)
    inter = c.hw_latency_us("net", "tree" if ppn == 1 else algo, proto)
    inter += g.latency_inter_us
    if proto == "Simple":
        inter += g.latency_inter_us  # the flush of received data
    local = n // nodes
    if algo == "ring":
        hw_lat = c.hw_latency_us(intra_hw if nodes == 1 else "net", algo, proto)
        if coll in ("broadcast", "reduce"):
            if g.same_channels:
                return lat + hw_lat
            if proto == "Simple":
                hw_lat = c.hw_latency_us(intra_hw if nodes == 1 else "net", "tree", proto)
            return lat + nsteps * hw_lat
        overhead = 0.0
        if nodes > 1:
            overhead = float(c.get("net_overhead_us", sys.cpu if sys.cpu in ("intel", "amd") else "other"))
            if proto == "Simple":
                overhead *= 3
        intra = max(intra, overhead)
        n_inter = 0 if nodes == 1 else (2 * (nodes - 1) if coll == "all_reduce" else nodes - 1)
        return lat + (nsteps - n_inter) * intra + n_inter * inter
    if algo == "tree":
        if coll == "all_reduce":
            lat += 2 * ((local - 1) * intra + _log2i(nodes) * inter)
        return lat
    if algo == "collnet_direct":
        return lat + 2 * (min(1, local - 1) * intra + (local - 1) * 0.4) + inter
    if algo == "collnet_chain":
        return lat + 2 * (local - 1) * intra + inter
    if algo == "nvls":
        return intra + (inter if nodes > 1 else 0.0)
    if algo == "nvls_tree":
        return lat + intra + 2 * _log2i(nodes) * inter
    if algo == "pat" and coll in ("all_gather", "reduce_scatter"):
        return lat + _log2i(nodes) * (inter / 3.5) + n * 2.8
    return lat


def _enabled(sys: NcclSystem, coll: str, algo: str, proto: str) -> bool:
    """NCCL's default enable matrix (no NCCL_ALGO / NCCL_PROTO) and per-call support."""
    if proto == "LL128" and not sys.ll128:
        return False
    if algo == "nvls_tree" and sys.n_nodes == 1:
        return False
    if algo in ("collnet_direct", "collnet_chain") and not sys.collnet:
        return False
    if algo == "nvls" and not sys.collnet and sys.n_nodes > 1:
        return False
    if algo == "collnet_direct" and not sys.nvswitch:
        return False
    if algo in ("nvls", "nvls_tree") and not sys.nvls:
        return False
    max_local = math.ceil(sys.ppn)
    if algo in ("collnet_direct", "collnet_chain") and max_local > 8:
        return False
    return not (algo in ("nvls", "nvls_tree") and coll != "all_reduce" and max_local > 32)


def tune(system: NcclSystem, constants: NcclConstants) -> TunerTable:
    """Bandwidth and latency of every (collective, algorithm, protocol) candidate."""
    table = TunerTable(system, constants)
    if system.n_ranks <= 1:
        return table
    pat_enabled = system.n_nodes == system.n_ranks and system.arch != "volta"
    for coll in COLLS:
        nsteps = _nsteps(coll, system.n_ranks)
        for algo in ALGORITHMS:
            for proto in PROTOCOLS:
                if _skip(coll, algo, proto, pat_enabled) or algo not in system.graphs:
                    continue
                bus = _bus_bw(system, constants, coll, algo, proto)
                if not (algo != "ring" and coll in ("all_gather", "reduce_scatter")):
                    ratio = system.n_ranks / nsteps if algo in ("ring", "nvls", "nvls_tree") else 0.5
                    bus *= ratio
                if not _enabled(system, coll, algo, proto):
                    bus = 0.0
                table.bandwidth[(coll, algo, proto)] = bus
                table.latency[(coll, algo, proto)] = _latency(system, constants, coll, algo, proto)
    return table


def _max_threads(table: TunerTable, algo: str, proto: str) -> int:
    c = table.constants
    if algo in ("collnet_direct", "collnet_chain", "nvls", "nvls_tree", "pat") or (
        algo == "tree" and proto == "Simple"
    ):
        return 640 if algo != "tree" else int(c.get("max_threads", "Simple"))
    if algo == "ring" and proto == "Simple":
        g = table.system.graphs["ring"]
        return 256 if g.bw_intra_GBps * g.n_channels <= 12.0 else int(c.get("max_threads", "Simple"))
    return int(c.get("max_threads", proto))


def _thread_threshold(table: TunerTable, algo: str, proto: str) -> int:
    th = int(table.constants.get("thread_threshold", proto))
    if algo == "ring" and proto == "LL":
        th *= table.system.n_ranks
    if algo in ("collnet_direct", "collnet_chain") and proto == "Simple":
        th = 512
    return th


def choose(
    table: TunerTable,
    coll: str,
    nbytes: float,
    *,
    algos: Iterable[str] | None = None,
    protos: Iterable[str] | None = None,
) -> Choice | None:
    """NCCL's choice for ``coll`` of ``nbytes`` (``topoGetAlgoInfo``); ``algos`` / ``protos``
    restrict the candidates as ``NCCL_ALGO`` / ``NCCL_PROTO`` do.  ``None`` if no candidate is
    available (e.g. every allowed algorithm is disabled on this system)."""
    allowed_a = set(algos) if algos is not None else set(ALGORITHMS)
    allowed_p = set(protos) if protos is not None else set(PROTOCOLS)
    best: tuple[float, str, str] | None = None
    for algo in ALGORITHMS:
        for proto in PROTOCOLS:
            if algo not in allowed_a or proto not in allowed_p:
                continue
            t = table.time_us(coll, algo, proto, nbytes)
            if t is not None and t >= 0 and (best is None or t < best[0]):
                best = (t, algo, proto)
    if best is None:
        return None
    t, algo, proto = best
    sys = table.system
    nc = sys.n_channels
    if algo in ("nvls", "nvls_tree"):
        nc = min(sys.nvls_channels, sys.n_channels) if (sys.n_nodes > 1 and algo == "nvls") else sys.nvls_channels
    elif algo != "collnet_direct":
        nt = _max_threads(table, algo, proto)
        th = _thread_threshold(table, algo, proto)
        while nbytes < nc * nt * th and nc >= 2:
            nc -= 1
    lat = table.latency[(coll, algo, proto)]
    bw_time = max(t - lat, 1e-12)
    alg_bw = nbytes / (1000.0 * bw_time) if nbytes > 0 else table.bandwidth[(coll, algo, proto)]
    full = sys.graphs[algo].n_channels
    if algo in ("ring", "tree", "pat") and full > 0:
        # each channel is one thread block moving bytes at up to its channel's share
        alg_bw *= min(1.0, nc / full)
    return Choice(
        coll=coll,
        algo=algo,
        proto=proto,
        nbytes=float(nbytes),
        time_us=t,
        latency_us=lat,
        alg_bw_GBps=alg_bw,
        n_channels=nc,
        max_channels=sys.n_channels,
    )
