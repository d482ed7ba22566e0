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

import numpy as np
from numpy.typing import NDArray

from netsim.validation.ep_kernels import busiest_sends, replay, route_node_limited, row_bytes

__all__ = ["PUBLISHED", "DeepEPRow", "compare", "route", "simulate_row", "table"]


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


def route(rng: np.random.Generator, nodes: int) -> NDArray[np.int64]:
    """``[ep, TOKENS, TOP_K]`` destination ranks, DeepEP's test routing (module doc;
    :func:`~netsim.validation.ep_kernels.route_node_limited`)."""
    return route_node_limited(rng, nodes, tokens=TOKENS, experts=EXPERTS, top_k=TOP_K, per_node=GPUS_PER_NODE)


def simulate_row(ep: int, seed: int = 0, latency_s: float | None = None) -> DeepEPRow:
    """Replay one row of :data:`PUBLISHED` with ``deepep`` on ``h800``
    (:func:`~netsim.validation.ep_kernels.replay`): the transfers plus ``latency_s`` per call
    (``None``: the dispatcher's, :attr:`~netsim.moe.dispatchers.Dispatcher.call_latency_s`)."""
    from netsim.moe.dispatchers import DeepEPDispatcher

    lat = DeepEPDispatcher.call_latency_s if latency_s is None else latency_s
    per_node = min(ep, GPUS_PER_NODE)
    rep = replay("h800", "deepep", "node-limited", ep, per_node, TOKENS, EXPERTS, TOP_K, seed)
    intranode = ep <= GPUS_PER_NODE
    # intranode: rows a rank receives, its own included; internode: (token, node) rows it sends
    rows = rep.received if intranode else rep.node_rows
    dispatch_b, combine_b = row_bytes(HIDDEN, "fp8"), row_bytes(HIDDEN, "bf16")
    t_dispatch = lat + rep.transfer_s(dispatch_b, combine=False)
    t_combine = lat + rep.transfer_s(combine_b, combine=True)
    nvl, ib = busiest_sends(rep.copies * dispatch_b, rep.rank_node)
    pub = PUBLISHED[ep]
    return DeepEPRow(
        ep=ep,
        kind="intranode" if intranode else "internode",
        published_dispatch_GBps=pub[0],
        published_combine_GBps=pub[1],
        dispatch_GBps=rows * dispatch_b / t_dispatch / 1e9,
        combine_GBps=rows * combine_b / t_combine / 1e9,
        dispatch_s=t_dispatch,
        combine_s=t_combine,
        nvlink_send_GBps=nvl / t_dispatch / 1e9,
        ib_send_GBps=ib / t_dispatch / 1e9,
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
