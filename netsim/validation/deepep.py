"""DeepEP's published normal-kernel bandwidths on H800, predicted with netsim's ``deepep`` dispatcher.

DeepEP (github.com/deepseek-ai/DeepEP, ``docs/legacy.md`` "Performance" at dd758caf45, the V1
kernels DeepSeek-V3 was trained with) publishes the dispatch and combine bandwidths of its
normal kernels on H800 (~160 GB/s NVLink, one CX7 400 Gb/s InfiniBand NIC per GPU, ~50 GB/s) in
DeepSeek-V3's pre-training setting: 4,096 tokens per rank, hidden 7,168, 256 experts, top-8
experts within the top-4 node groups, FP8 dispatch (with its per-128 scales) and BF16 combine:

=========  ====  ==================  =================
type       EP    dispatch GB/s       combine GB/s
=========  ====  ==================  =================
intranode  8     153 (NVLink)        158 (NVLink)
internode  16    43 (RDMA)           43 (RDMA)
internode  32    58 (RDMA)           57 (RDMA)
internode  64    51 (RDMA)           50 (RDMA)
=========  ====  ==================  =================

What the numbers divide (DeepEP ``tests/legacy/test_intranode.py`` and ``test_internode.py``):
intranode, the bytes a rank *receives* (one row per (token, rank), its own tokens included) over
the kernel time; internode, the bytes a rank sends "by RDMA": one row per (token, destination
node), *its own node included*, over the kernel time (logical bytes: DeepEP's V2 README says so).
FP8 rows are ``hidden * (1 + 4/128)`` bytes (the scales), BF16 rows ``2 * hidden``.  The routing
is the tests': scores ``|N(0, 1)| + 1`` per (token, expert); internode, the ``min(nodes, 4)``
nodes with the highest maximum score, then the top 8 experts among them; experts contiguous over
ranks.

netsim replays the same routing through :class:`~netsim.moe.dispatchers.DeepEPDispatcher`
(one InfiniBand copy per destination node to the same-index GPU, NVLink fan-out there), times the
all-to-all(v) on the ``h800`` preset (``coflow`` model, the topology's NCCL cost model and link
efficiencies, PXN routing: what the training replay uses) and divides the same bytes by that
time, plus the ``deepep`` kernel's fixed time per call
(:attr:`~netsim.moe.dispatchers.Dispatcher.call_latency_s`, fitted to these rows:
:mod:`netsim.validation.ep_latency`).  :func:`compare` gives the rows; ``netsim validate-deepep``
prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "PUBLISHED",
    "DeepEPRow",
    "busiest_sends",
    "compare",
    "dispatch_on",
    "distinct_per_group",
    "route",
    "simulate_row",
    "time_copies",
]


def _published() -> dict[int, tuple[float, float]]:
    """EP -> (dispatch, combine) GB/s from the validation source ``deepep-normal-h800`` (the one
    copy of DeepEP's table: ``netsim validate --kind ep-kernel`` reads it too)."""
    from netsim.validation.sources import DATA_DIR, load_source

    src = load_source(DATA_DIR / "ep_kernels" / "deepep-normal-h800.yaml")
    got: dict[int, dict[str, float]] = {}
    for c in src.cases:
        if c.kind == "ep-kernel":
            got.setdefault(c.ranks, {})[c.phase] = c.measured_GBps
    return {ep: (v["dispatch"], v["combine"]) for ep, v in sorted(got.items())}


#: DeepEP docs/legacy.md, "Normal kernels with NVLink and RDMA forwarding": EP -> (dispatch, combine) GB/s
PUBLISHED: dict[int, tuple[float, float]] = _published()
TOKENS = 4096
HIDDEN = 7168
EXPERTS = 256
TOP_K = 8
GPUS_PER_NODE = 8
#: bytes per element: FP8 with one fp32 scale per 128 elements (DeepEP's ``fp8_factor`` x 2), BF16
DISPATCH_BPE = 1.0 + 4.0 / 128.0
COMBINE_BPE = 2.0


@dataclass(frozen=True)
class DeepEPRow:
    """One row: published and predicted bandwidths (GB/s), the predicted times (s) and what
    netsim's per-GPU busiest links carry (GB/s over the dispatch time, for the diagnosis)."""

    ep: int
    kind: str
    published_dispatch_GBps: float
    published_combine_GBps: float
    dispatch_GBps: float
    combine_GBps: float
    dispatch_s: float
    combine_s: float
    nvlink_send_GBps: float
    ib_send_GBps: float

    @property
    def errors(self) -> tuple[float, float]:
        """predicted / published - 1, dispatch and combine."""
        return (
            self.dispatch_GBps / self.published_dispatch_GBps - 1.0,
            self.combine_GBps / self.published_combine_GBps - 1.0,
        )


def route(
    rng: np.random.Generator,
    nodes: int,
    *,
    tokens: int = TOKENS,
    experts: int = EXPERTS,
    top_k: int = TOP_K,
    per_node: int = GPUS_PER_NODE,
) -> NDArray[np.int64]:
    """``[ep, tokens, top_k]`` destination ranks, DeepEP's test routing (module doc): the experts
    of the ``min(nodes, 4)`` nodes with the highest maximum score, then the top ``top_k``."""
    ep = nodes * per_node
    out = np.empty((ep, tokens, top_k), dtype=np.int64)
    for r in range(ep):
        scores = np.abs(rng.standard_normal((tokens, experts))) + 1.0
        if nodes > 1:
            groups = min(nodes, 4)
            best = scores.reshape(tokens, nodes, -1).max(axis=-1)
            keep = np.argsort(-best, axis=1, kind="stable")[:, :groups]
            mask = np.zeros((tokens, nodes), dtype=bool)
            np.put_along_axis(mask, keep, True, axis=1)
            scores = np.where(np.repeat(mask, experts // nodes, axis=1), scores, -np.inf)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        out[r] = top // (experts // ep)
    return out


def distinct_per_group(dest: NDArray[np.int64], per: int) -> NDArray[np.int64]:
    """``[ep, ep // per]`` distinct tokens of each source per destination group of ``per`` ranks
    (``dest``: ``[ep, tokens, top_k]`` destination ranks)."""
    ep, tokens = dest.shape[0], dest.shape[1]
    groups = ep // per
    hit = np.zeros((ep, tokens, groups), dtype=bool)
    rows = np.arange(tokens)[:, None]
    for i in range(ep):
        hit[i, rows, dest[i] // per] = True
    return hit.sum(axis=1).astype(np.int64)


def dispatch_on(
    preset: str, dest: NDArray[np.int64], dispatcher: str, *, per_node: int = GPUS_PER_NODE
) -> tuple[Any, list[str], NDArray[np.int64], NDArray[np.float64]]:
    """The ``preset`` cluster for ``dest``'s ranks (``per_node`` GPUs per server) and what
    ``dispatcher`` sends for them: (graph, devices, rank -> node, ``[ep, ep]`` token copies)."""
    from netsim.collectives.executor import accelerators
    from netsim.moe.dispatchers import dispatcher_copies
    from netsim.topology import load_topology

    ep = dest.shape[0]
    graph = load_topology(preset, nodes=max(1, -(-ep // per_node)))
    devices = accelerators(graph)[:ep]
    rank_node = np.arange(ep, dtype=np.int64) // per_node
    tokens = np.stack([np.bincount(dest[i].ravel(), minlength=ep) for i in range(ep)]).astype(np.int64)
    copies = dispatcher_copies(dispatcher, tokens, rank_node, dest_rank=dest).copies.astype(np.float64)
    return graph, devices, rank_node, copies


#: (bytes per element, transposed) of the dispatch and the combine
_PHASES = ((DISPATCH_BPE, False), (COMBINE_BPE, True))


def time_copies(
    graph: Any, devices: list[str], copies: NDArray[np.float64], row_bytes: float, *, transpose: bool
) -> float:
    """Seconds the all-to-all(v) of ``copies`` token rows of ``row_bytes`` each takes on
    ``graph`` (the combine sends the dispatch's matrix back: ``transpose``): the ``coflow``
    model with the topology's NCCL cost model, link efficiencies and routing, as in training."""
    from netsim.collectives.executor import simulate_collective
    from netsim.collectives.setup import collective_setup, default_routing

    setup = collective_setup(graph)
    engine: dict[str, Any] = {"efficiency": dict(setup.efficiency), "routing": default_routing(graph)}
    mat = (copies.T if transpose else copies) * row_bytes
    np.fill_diagonal(mat, 0.0)
    return float(
        simulate_collective(
            graph, "all_to_allv", devices, float(mat.sum()), matrix=mat, model="coflow", cost=setup.cost, **engine
        )
    )


def busiest_sends(wire: NDArray[np.float64], rank_node: NDArray[np.int64]) -> tuple[float, float]:
    """The most bytes one rank sends over NVLink (inside its node) and over the network."""
    wire = wire.copy()
    np.fill_diagonal(wire, 0.0)
    same = rank_node[:, None] == rank_node[None, :]
    return float(np.where(same, wire, 0.0).sum(axis=1).max()), float(np.where(same, 0.0, wire).sum(axis=1).max())


def simulate_row(ep: int, seed: int = 0, latency_s: float | None = None) -> DeepEPRow:
    """Route, dispatch with ``deepep`` and time one row of :data:`PUBLISHED` on ``h800``: the
    transfers plus ``latency_s`` per call (``None``: the dispatcher's,
    :attr:`~netsim.moe.dispatchers.Dispatcher.call_latency_s`)."""
    from netsim.moe.dispatchers import DeepEPDispatcher

    lat = DeepEPDispatcher.call_latency_s if latency_s is None else latency_s
    nodes = ep // GPUS_PER_NODE
    dest = route(np.random.default_rng(seed), nodes)
    graph, devices, rank_node, copies = dispatch_on("h800", dest, "deepep")
    if nodes == 1:  # bytes a rank receives, its own tokens included
        logical = distinct_per_group(dest, 1).sum(axis=0).astype(np.float64)
    else:  # (token, node) rows a rank sends, its own node included
        logical = distinct_per_group(dest, GPUS_PER_NODE).sum(axis=1).astype(np.float64)
    times = [lat + time_copies(graph, devices, copies, HIDDEN * bpe, transpose=t) for bpe, t in _PHASES]
    nvl, ib = busiest_sends(copies * HIDDEN * DISPATCH_BPE, rank_node)
    pub = PUBLISHED[ep]
    mean = float(logical.mean())
    return DeepEPRow(
        ep=ep,
        kind="intranode" if nodes == 1 else "internode",
        published_dispatch_GBps=pub[0],
        published_combine_GBps=pub[1],
        dispatch_GBps=mean * HIDDEN * DISPATCH_BPE / times[0] / 1e9,
        combine_GBps=mean * HIDDEN * COMBINE_BPE / times[1] / 1e9,
        dispatch_s=times[0],
        combine_s=times[1],
        nvlink_send_GBps=nvl / times[0] / 1e9,
        ib_send_GBps=ib / times[0] / 1e9,
    )


def compare(eps: tuple[int, ...] = tuple(PUBLISHED), seed: int = 0, latency_s: float | None = None) -> list[DeepEPRow]:
    """Every row of :data:`PUBLISHED` (or those of ``eps``)."""
    return [simulate_row(ep, seed, latency_s) for ep in eps]


def table(rows: list[DeepEPRow]) -> str:
    """A markdown table of ``rows``."""
    out = [
        "| type | EP | dispatch published | netsim | error | combine published | netsim | error "
        "| netsim busiest GPU: NVLink / IB send |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        d, c = r.errors
        out.append(
            f"| {r.kind} | {r.ep} | {r.published_dispatch_GBps:.0f} | {r.dispatch_GBps:.1f} | {d:+.1%} "
            f"| {r.published_combine_GBps:.0f} | {r.combine_GBps:.1f} | {c:+.1%} "
            f"| {r.nvlink_send_GBps:.0f} / {r.ib_send_GBps:.0f} |"
        )
    return "\n".join(out)
