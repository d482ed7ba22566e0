"""Replaying an EP dispatch/combine kernel benchmark, and the validation case kind ``ep-kernel``.

DeepEP and HybridEP publish how fast their dispatch and combine kernels move a benchmark's
tokens (:mod:`netsim.validation.deepep`, :mod:`netsim.validation.hybridep`; the tables are
validation sources, ``data/ep_kernels/``, one :class:`~netsim.validation.sources.EPKernelCase`
per published number).  This module replays such a benchmark once for all of them:

* :func:`route_node_limited` / :func:`route_uniform`: the tokens' experts as each library's test
  chooses them (DeepEP's node-limited random scores; HybridEP's uniform ``randperm``), experts
  contiguous over the ranks;
* :func:`replay` (cached per routing): the cluster of the source's topology, the token copies the
  library's dispatcher sends (one InfiniBand copy per destination node, NVLink fan-out there),
  and the rows a rank counts (``received``: one per (token, rank) it receives, its own included;
  ``node_rows``: one per (token, node) it sends, its own node included);
* :meth:`Replay.transfer_s` (cached per row size and phase): the all-to-all(v) as a training step
  times it (the ``coflow`` model, the topology's NCCL cost model, link efficiencies and routing;
  the combine sends the dispatch's matrix back).

A case's prediction adds the dispatcher kernel's fixed time per call
(:attr:`netsim.moe.dispatchers.Dispatcher.call_latency_s`) and divides the counted bytes by the
time; the error is ``predicted / measured - 1`` of the bandwidth (positive: netsim is faster).
Torch API timings add a copy and a synchronisation netsim does not model (their rows are known
gaps: ``known_gaps.yaml``).  ``netsim validate --kind ep-kernel`` runs the cases; ``netsim
validate-deepep`` and ``validate-hybridep`` print the same replays as one table per library.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.validation.cases import PREDICTORS, Prediction
from netsim.validation.sources import EPKernelCase, Source

__all__ = [
    "Replay",
    "busiest_sends",
    "distinct_per_group",
    "predict_ep_kernel",
    "replay",
    "route_node_limited",
    "route_uniform",
    "row_bytes",
]

#: fp32 scale bytes per FP8 element (one scale per 128 elements: DeepEP's and HybridEP's ``fp8_factor``)
FP8_SCALE_BYTES = 4.0 / 128.0


def row_bytes(hidden: int, dtype: str) -> float:
    """Bytes of one token row: BF16, or FP8 with its per-128 fp32 scales."""
    return hidden * (1.0 + FP8_SCALE_BYTES) if dtype == "fp8" else 2.0 * hidden


def route_node_limited(
    rng: np.random.Generator, nodes: int, *, tokens: int, experts: int, top_k: int, per_node: int
) -> NDArray[np.int64]:
    """``[ep, tokens, top_k]`` destination ranks, DeepEP's test routing: scores ``|N(0, 1)| + 1``
    per (token, expert); across nodes, the experts of the ``min(nodes, 4)`` nodes with the highest
    maximum score; then the top ``top_k``."""
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


def route_uniform(
    rng: np.random.Generator, ep: int, *, tokens: int, top_k: int, local_experts: int
) -> NDArray[np.int64]:
    """``[ep, tokens, top_k]`` destination ranks, HybridEP's test routing: every token's ``top_k``
    distinct experts uniformly at random among ``local_experts x ep`` (``torch.randperm``)."""
    experts = local_experts * ep
    out = np.empty((ep, tokens, top_k), dtype=np.int64)
    for r in range(ep):
        out[r] = np.argsort(rng.random((tokens, experts)), axis=1)[:, :top_k] // local_experts
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


def busiest_sends(wire: NDArray[np.float64], rank_node: NDArray[np.int64]) -> tuple[float, float]:
    """The most bytes one rank sends over NVLink (inside its node) and over the network."""
    wire = wire.copy()
    np.fill_diagonal(wire, 0.0)
    same = rank_node[:, None] == rank_node[None, :]
    return float(np.where(same, wire, 0.0).sum(axis=1).max()), float(np.where(same, 0.0, wire).sum(axis=1).max())


@dataclass
class Replay:
    """One routed benchmark on its cluster (module doc); :meth:`transfer_s` times its phases."""

    graph: Any
    devices: list[str]
    rank_node: NDArray[np.int64]
    #: ``[ep, ep]`` token copies the dispatcher sends
    copies: NDArray[np.float64]
    #: mean rows a rank receives (one per (token, rank), its own included)
    received: float
    #: mean (token, node) rows a rank sends, its own node included
    node_rows: float
    _times: dict[tuple[float, bool], float] = field(default_factory=dict, repr=False)

    def transfer_s(self, row_bytes: float, *, combine: bool) -> float:
        """Seconds the all-to-all(v) of the copies, ``row_bytes`` each, takes (the combine sends
        the dispatch's matrix back), without the kernel's fixed time per call."""
        key = (float(row_bytes), bool(combine))
        if key not in self._times:
            from netsim.collectives.executor import simulate_collective
            from netsim.collectives.setup import collective_setup, default_routing

            setup = collective_setup(self.graph)
            engine: dict[str, Any] = {"efficiency": dict(setup.efficiency), "routing": default_routing(self.graph)}
            mat = (self.copies.T if combine else self.copies) * row_bytes
            np.fill_diagonal(mat, 0.0)
            self._times[key] = float(
                simulate_collective(
                    self.graph,
                    "all_to_allv",
                    self.devices,
                    float(mat.sum()),
                    matrix=mat,
                    model="coflow",
                    cost=setup.cost,
                    **engine,
                )
            )
        return self._times[key]


@lru_cache(maxsize=32)
def replay(
    topology: str,
    library: str,
    routing: str,
    ranks: int,
    per_node: int,
    tokens: int,
    experts: int,
    top_k: int,
    seed: int = 0,
) -> Replay:
    """Route ``ranks x tokens`` tokens as the library's test does (``routing``: ``node-limited`` or
    ``uniform``), dispatch them with dispatcher ``library`` on ``topology`` (``per_node`` GPUs per
    server); cached, so that every case and table of one routing shares it."""
    from netsim.collectives.executor import accelerators
    from netsim.moe.dispatchers import dispatcher_copies
    from netsim.topology import load_topology

    rng = np.random.default_rng(seed)
    if routing == "node-limited":
        dest = route_node_limited(
            rng, ranks // per_node, tokens=tokens, experts=experts, top_k=top_k, per_node=per_node
        )
    else:
        dest = route_uniform(rng, ranks, tokens=tokens, top_k=top_k, local_experts=experts // ranks)
    graph = load_topology(topology, nodes=max(1, -(-ranks // per_node)))
    devices = accelerators(graph)[:ranks]
    rank_node = np.arange(ranks, dtype=np.int64) // per_node
    counts = np.stack([np.bincount(dest[i].ravel(), minlength=ranks) for i in range(ranks)]).astype(np.int64)
    copies = dispatcher_copies(library, counts, rank_node, dest_rank=dest).copies.astype(np.float64)
    return Replay(
        graph=graph,
        devices=devices,
        rank_node=rank_node,
        copies=copies,
        received=float(distinct_per_group(dest, 1).sum(axis=0).mean()),
        node_rows=float(distinct_per_group(dest, per_node).sum(axis=1).mean()),
    )


@PREDICTORS.register("ep-kernel")
def predict_ep_kernel(src: Source, case: EPKernelCase, cost_model: str | None = None) -> Iterator[Prediction]:
    """The case's bandwidth as netsim predicts it (module doc); ``cost_model`` is not used (the
    all-to-all runs with the topology's own, as in a training step)."""
    from netsim.moe.dispatchers import DISPATCHERS

    gpn = src.system.gpus_per_node
    if case.ranks > gpn and case.ranks % gpn:
        raise SpecError(
            f"ranks {case.ranks} must fill whole servers of {gpn} GPUs (or fit in one)",
            source=src.source.id,
            field=f"cases.{case.id}.ranks",
        )
    rep = replay(
        src.system.topology,
        case.library,
        case.routing,
        case.ranks,
        min(case.ranks, gpn),
        case.tokens,
        case.experts,
        case.top_k,
    )
    rb = row_bytes(case.hidden, case.dtype)
    latency = DISPATCHERS.get(case.library).call_latency_s
    transfer = rep.transfer_s(rb, combine=case.phase == "combine")
    t = latency + transfer
    rows = rep.received if case.counted == "received" else rep.node_rows
    yield Prediction(
        metric=f"ep_GBps.{case.phase}.{case.dtype}.{case.timing}",
        size_bytes=None,
        measured=case.measured_GBps,
        predicted=rows * rb / t / 1e9,
        lower_is_better=False,
        detail={"ep_time_s": t, "ep_transfer_s": transfer, "ep_latency_s": latency, "ep_rows": rows},
    )
