"""HybridEP's published all-to-all bandwidths on H100, predicted with netsim's ``hybridep`` dispatcher.

NVIDIA's HybridEP (the ``hybrid-ep`` kernels of DeepEP: docs/README_Hybrid-EP.md, "Performance
Results", "H100 Platform", of deepseek-ai/DeepEP at 41cad94449) publishes its dispatch and
combine bandwidths on H100 (one 400 Gb/s InfiniBand NIC per GPU, 8 GPUs per NVLink domain) for
4,096 tokens per rank, hidden 7,168, top-8 of ``8 x ranks`` experts chosen uniformly at random
(``torch.randperm`` per token, ``tests/test_hybrid_ep.py``), at 16, 32 and 64 ranks and 4, 8 or
16 SMs, two ways: through the Torch API (the host's work per call included: buffer allocation, the
received-token count read back; the routing-map all-gather excluded, the benchmark passes the
cached handle) and the kernel alone (Kineto kernel times).  The rows here are the 16-SM ones
(GB/s; dispatch in BF16 unless FP8 is said):

=====  ==================  =================  ================  ==================  =================
ranks  dispatch, Torch API  combine, Torch API  dispatch, kernel  FP8 dispatch, kernel combine, kernel
=====  ==================  =================  ================  ==================  =================
16     54.47               53.35               71.71             68.48               62.95
32     47.36               52.53               57.69             55.35               57.46
64     41.24               46.57               49.97             46.52               49.77
=====  ==================  =================  ================  ==================  =================

The benchmark's Torch API time is the kernel's plus a device-to-device copy out of the
registered buffer and a device synchronisation (its own printout says so), which a training
step does not pay the same way; netsim is compared with both, and its dispatcher's fixed time per
call (:attr:`~netsim.moe.dispatchers.Dispatcher.call_latency_s`) is fitted to the kernel-only
timings (:mod:`netsim.validation.ep_latency`).  An FP8 row is ``hidden x (1 + 4/128)`` bytes (the
per-128 fp32 scales: ``fp8_factor`` in ``tests/test_hybrid_ep.py``).

What the numbers divide ("IB bandwidth", algorithm bandwidth; ``count_rdma_send_from_routing_map``
in DeepEP's ``tests/utils.py``): the (token, node) rows a rank sends, *its own node included*
(to align with DeepEP, says the code), times ``hidden x 2`` bytes, over the call's time.  With 2
nodes nearly every token reaches both, so the wire carries about half the counted bytes.

netsim replays the same routing through :class:`~netsim.moe.dispatchers.HybridEPDispatcher` (one
InfiniBand copy per destination node to the same-index GPU, NVLink fan-out there), times the
all-to-all(v) on the ``dgx-h100`` preset (:func:`netsim.validation.ep_kernels.replay`, as for
DeepEP on ``h800``) and divides the same bytes by that time.  :func:`compare` gives the rows; ``netsim
validate-hybridep`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from netsim.validation.ep_kernels import busiest_sends, replay, route_uniform, row_bytes

__all__ = ["PUBLISHED", "PUBLISHED_FP8_KERNEL", "HybridEPRow", "compare", "route", "simulate_row", "table"]


def _published() -> dict[tuple[int, str, str, str], float]:
    """(ranks, phase, dtype, timing) -> GB/s from the validation source ``hybridep-h100`` (the one
    copy of HybridEP's table: ``netsim validate --kind ep-kernel`` reads it too)."""
    from netsim.validation.sources import DATA_DIR, load_source

    src = load_source(DATA_DIR / "ep_kernels" / "hybridep-h100.yaml")
    return {(c.ranks, c.phase, c.dtype, c.timing): c.measured_GBps for c in src.cases if c.kind == "ep-kernel"}


_TABLE = _published()
_RANKS = sorted({k[0] for k in _TABLE})
#: ranks -> (dispatch Torch API, combine Torch API, dispatch kernel, combine kernel) GB/s, 16 SMs, BF16
PUBLISHED: dict[int, tuple[float, float, float, float]] = {
    r: (
        _TABLE[(r, "dispatch", "bf16", "torch-api")],
        _TABLE[(r, "combine", "bf16", "torch-api")],
        _TABLE[(r, "dispatch", "bf16", "kernel")],
        _TABLE[(r, "combine", "bf16", "kernel")],
    )
    for r in _RANKS
}
#: ranks -> FP8 dispatch, kernel only, GB/s, 16 SMs
PUBLISHED_FP8_KERNEL: dict[int, float] = {r: _TABLE[(r, "dispatch", "fp8", "kernel")] for r in _RANKS}
TOKENS = 4096
HIDDEN = 7168
TOP_K = 8
LOCAL_EXPERTS = 8
GPUS_PER_NODE = 8
ROW_BYTES = row_bytes(HIDDEN, "bf16")
FP8_ROW_BYTES = row_bytes(HIDDEN, "fp8")  # one fp32 scale per 128 elements


@dataclass(frozen=True)
class HybridEPRow:
    """One row: published and predicted bandwidths (GB/s), the predicted times (s) and what
    netsim's busiest GPU sends over NVLink and InfiniBand (GB/s over the dispatch time)."""

    ep: int
    published: tuple[float, float, float, float]
    dispatch_GBps: float
    combine_GBps: float
    dispatch_s: float
    combine_s: float
    fp8_dispatch_GBps: float
    fp8_dispatch_s: float
    published_fp8_kernel: float
    nvlink_send_GBps: float
    ib_send_GBps: float
    #: the (token, node) rows a rank counts per token, its own node included
    nodes_per_token: float

    @property
    def errors_torch(self) -> tuple[float, float]:
        """predicted / published - 1 against the Torch API numbers (dispatch, combine)."""
        return self.dispatch_GBps / self.published[0] - 1.0, self.combine_GBps / self.published[1] - 1.0

    @property
    def errors_kernel(self) -> tuple[float, float]:
        """predicted / published - 1 against the kernel-only numbers (dispatch, combine)."""
        return self.dispatch_GBps / self.published[2] - 1.0, self.combine_GBps / self.published[3] - 1.0


def route(rng: np.random.Generator, ep: int) -> NDArray[np.int64]:
    """``[ep, TOKENS, TOP_K]`` destination ranks: every token's 8 distinct experts uniformly at
    random among ``LOCAL_EXPERTS x ep`` (:func:`~netsim.validation.ep_kernels.route_uniform`)."""
    return route_uniform(rng, ep, tokens=TOKENS, top_k=TOP_K, local_experts=LOCAL_EXPERTS)


def simulate_row(ep: int, seed: int = 0, latency_s: float | None = None) -> HybridEPRow:
    """Replay one row of :data:`PUBLISHED` with ``hybridep`` on ``dgx-h100``
    (:func:`~netsim.validation.ep_kernels.replay`): the transfers plus ``latency_s`` per call
    (``None``: the dispatcher's, :attr:`~netsim.moe.dispatchers.Dispatcher.call_latency_s`)."""
    from netsim.moe.dispatchers import HybridEPDispatcher

    lat = HybridEPDispatcher.call_latency_s if latency_s is None else latency_s
    rep = replay("dgx-h100", "hybridep", "uniform", ep, GPUS_PER_NODE, TOKENS, LOCAL_EXPERTS * ep, TOP_K, seed)
    logical = rep.node_rows  # (token, node) rows per rank, its own node included
    t_dispatch = lat + rep.transfer_s(ROW_BYTES, combine=False)
    t_combine = lat + rep.transfer_s(ROW_BYTES, combine=True)
    t_fp8 = lat + rep.transfer_s(FP8_ROW_BYTES, combine=False)
    nvl, ib = busiest_sends(rep.copies * ROW_BYTES, rep.rank_node)
    return HybridEPRow(
        ep=ep,
        published=PUBLISHED[ep],
        dispatch_GBps=logical * ROW_BYTES / t_dispatch / 1e9,
        combine_GBps=logical * ROW_BYTES / t_combine / 1e9,
        dispatch_s=t_dispatch,
        combine_s=t_combine,
        fp8_dispatch_GBps=logical * FP8_ROW_BYTES / t_fp8 / 1e9,
        fp8_dispatch_s=t_fp8,
        published_fp8_kernel=PUBLISHED_FP8_KERNEL[ep],
        nvlink_send_GBps=nvl / t_dispatch / 1e9,
        ib_send_GBps=ib / t_dispatch / 1e9,
        nodes_per_token=logical / TOKENS,
    )


def compare(
    eps: tuple[int, ...] = tuple(PUBLISHED), seed: int = 0, latency_s: float | None = None
) -> list[HybridEPRow]:
    """Every row of :data:`PUBLISHED` (or those of ``eps``)."""
    return [simulate_row(ep, seed, latency_s) for ep in eps]


def table(rows: list[HybridEPRow]) -> str:
    """A markdown table of ``rows``: netsim against the Torch API and the kernel-only numbers."""
    out = [
        "| EP | netsim dispatch | published Torch API / kernel | error Torch API / kernel "
        "| netsim combine | published Torch API / kernel | error Torch API / kernel "
        "| netsim FP8 dispatch | published kernel | error "
        "| netsim busiest GPU: NVLink / IB send |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        (dt, ct), (dk, ck) = r.errors_torch, r.errors_kernel
        p = r.published
        out.append(
            f"| {r.ep} | {r.dispatch_GBps:.1f} | {p[0]:.2f} / {p[2]:.2f} | {dt:+.1%} / {dk:+.1%} "
            f"| {r.combine_GBps:.1f} | {p[1]:.2f} / {p[3]:.2f} | {ct:+.1%} / {ck:+.1%} "
            f"| {r.fp8_dispatch_GBps:.1f} | {r.published_fp8_kernel:.2f} "
            f"| {r.fp8_dispatch_GBps / r.published_fp8_kernel - 1.0:+.1%} "
            f"| {r.nvlink_send_GBps:.0f} / {r.ib_send_GBps:.0f} |"
        )
    return "\n".join(out)
