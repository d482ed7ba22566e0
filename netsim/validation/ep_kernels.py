"""Predict a published EP dispatch or combine kernel bandwidth (validation case kind ``ep-kernel``).

An :class:`~netsim.validation.sources.EPKernelCase` is one number of a library's benchmark
table (DeepEP, HybridEP).  netsim routes the benchmark's tokens as its test does (DeepEP's
node-limited random scores: :func:`netsim.validation.deepep.route`; HybridEP's uniform
``randperm``: :func:`netsim.validation.hybridep.route`), dispatches them with the case's
dispatcher on the source's topology (:func:`~netsim.validation.deepep.dispatch_on`: one
InfiniBand copy per destination node, NVLink fan-out there), times the all-to-all(v) as a
training step would (:func:`~netsim.validation.deepep.time_copies`: the ``coflow`` model, the
topology's NCCL cost model and link efficiencies; the combine sends the dispatch's matrix back),
adds the dispatcher kernel's fixed time per call
(:attr:`netsim.moe.dispatchers.Dispatcher.call_latency_s`) and divides the bytes the benchmark
counts by that time.  The error is ``predicted / measured - 1`` of the bandwidth: positive means
netsim is faster.  Torch API timings add a copy and a synchronisation netsim does not model
(their rows are known gaps: ``known_gaps.yaml``).

``netsim validate --kind ep-kernel`` runs them; ``netsim validate-deepep`` and
``validate-hybridep`` print the same comparisons as one table per library.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from netsim.errors import SpecError
from netsim.validation.cases import PREDICTORS, Prediction
from netsim.validation.sources import EPKernelCase, Source

__all__ = ["predict_ep_kernel", "row_bytes"]

#: fp32 scale bytes per FP8 element (one scale per 128 elements)
FP8_SCALE_BYTES = 4.0 / 128.0


def row_bytes(hidden: int, dtype: str) -> float:
    """Bytes of one token row: BF16, or FP8 with its per-128 fp32 scales."""
    return hidden * (1.0 + FP8_SCALE_BYTES) if dtype == "fp8" else 2.0 * hidden


@lru_cache(maxsize=32)
def _dispatched(
    topology: str, library: str, routing: str, ranks: int, per_node: int, tokens: int, experts: int, top_k: int
) -> tuple[Any, list[str], Any, float, float]:
    """(graph, devices, copies, mean rows received, mean (token, node) rows sent) of one routing."""
    from netsim.validation.deepep import dispatch_on, distinct_per_group
    from netsim.validation.deepep import route as node_limited
    from netsim.validation.hybridep import route as uniform

    rng = np.random.default_rng(0)
    nodes = ranks // per_node
    if routing == "node-limited":
        dest = node_limited(rng, nodes, tokens=tokens, experts=experts, top_k=top_k, per_node=per_node)
    else:
        dest = uniform(rng, ranks, tokens=tokens, top_k=top_k, local_experts=experts // ranks)
    graph, devices, _, copies = dispatch_on(topology, dest, library, per_node=per_node)
    received = float(distinct_per_group(dest, 1).sum(axis=0).mean())
    node_rows = float(distinct_per_group(dest, per_node).sum(axis=1).mean())
    return graph, devices, copies, received, node_rows


@PREDICTORS.register("ep-kernel")
def predict_ep_kernel(src: Source, case: EPKernelCase, cost_model: str | None = None) -> Iterator[Prediction]:
    """The case's bandwidth as netsim predicts it (module doc); ``cost_model`` is not used (the
    all-to-all runs with the topology's own, as in a training step)."""
    from netsim.moe.dispatchers import DISPATCHERS
    from netsim.validation.deepep import time_copies

    gpn = src.system.gpus_per_node
    if case.ranks > gpn and case.ranks % gpn:
        raise SpecError(
            f"ranks {case.ranks} must fill whole servers of {gpn} GPUs (or fit in one)",
            source=src.source.id,
            field=f"cases.{case.id}.ranks",
        )
    per_node = min(case.ranks, gpn)
    graph, devices, copies, received, node_rows = _dispatched(
        src.system.topology, case.library, case.routing, case.ranks, per_node, case.tokens, case.experts, case.top_k
    )
    rb = row_bytes(case.hidden, case.dtype)
    latency = DISPATCHERS.get(case.library).call_latency_s
    transfer = time_copies(graph, devices, copies, rb, transpose=case.phase == "combine")
    t = latency + transfer
    rows = received if case.counted == "received" else node_rows
    yield Prediction(
        metric=f"ep_GBps.{case.phase}.{case.dtype}.{case.timing}",
        size_bytes=None,
        measured=case.measured_GBps,
        predicted=rows * rb / t / 1e9,
        lower_is_better=False,
        detail={"ep_time_s": t, "ep_transfer_s": transfer, "ep_latency_s": latency, "ep_rows": rows},
    )
