"""Expert-parallel traffic of a workload: router + placement -> token matrices per EP group.

This is the glue between the workload and :mod:`netsim.moe`: it builds the routing source (a
statistical model such as ``uniform``/``zipf``, a real router's gating math on a synthetic
token stream, or a recorded routing trace; :func:`netsim.moe.sources.routing_source`) and the
expert placement (``contiguous``, ``round-robin`` or ``eplb``;
:func:`netsim.moe.placement.make_placement`), and answers, for one (step, MoE layer,
micro-batch, EP group), the ``[ep, ep]`` matrix of tokens from each EP rank to the rank whose
expert replica serves them (:func:`netsim.moe.sources.step_dispatch`).

Every EP group routes its own tokens: the group index is folded into the micro-batch index the
source is asked for, so groups see independent samples of the same per-layer expert
popularity (statistical sources fix the popularity per layer and draw the noise per
(step, layer, micro-batch)).  With ``samples`` (the scenario's ``options.routing_samples``),
only that many samples are routed per (step, layer) and (micro-batch, group) ``i`` reuses
sample ``i mod samples``: an opt-in approximation for large clusters, where routing every
micro-batch of every EP group (a real router on ``ep x tokens`` synthetic tokens each) costs
more than simulating the network.  The matrices keep their per-layer statistics; what is lost
is the sample-to-sample variation across micro-batches beyond ``samples``.

EPLB needs expert loads: it gets the expected load of each layer (statistical models: the
model's expert probabilities; traces: the trace's per-layer load; routers: the routing of step
0, micro-batch 0), standing in for the load history DeepSeek feeds it.  ``placement.options``
are checked against what the placement uses (:data:`PLACEMENT_OPTIONS`): an unknown option, or
one the placement does not use (``replica_policy`` without redundant experts), is an error.

What crosses the wires per sample (:class:`GroupDispatch`): the token copies the workload's
dispatcher sends (``model.moe.dispatcher``, :mod:`netsim.moe.dispatchers`), and with
``model.moe.padding: capacity`` capacity-sized buffers of ``ceil(capacity_factor * top_k *
tokens / experts)`` rows from every rank to every expert slot, full or not (fixed-shape
all-to-all, as GShard, DeepSpeed-MoE and MindSpore's MoE send them), which the experts then
compute in full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from netsim.config.workload import WorkloadSpec
from netsim.errors import SpecError, WorkloadError
from netsim.moe.dispatchers import DISPATCHERS
from netsim.moe.placement import Placement, make_placement
from netsim.moe.routers import ROUTERS, router_param_names
from netsim.moe.sources import Routed, StatisticalSource, TraceSource, route_batch, routing_source, step_dispatch
from netsim.moe.statistical import STAT_MODELS
from netsim.moe.traffic import padded_tokens

__all__ = ["PLACEMENT_OPTIONS", "EPRouting", "GroupDispatch"]

#: ``placement.options`` each placement uses, and what they mean
PLACEMENT_OPTIONS: dict[str, dict[str, str]] = {
    "contiguous": {},
    "round_robin": {},
    "eplb": {
        "replica_policy": "how a source splits its tokens over an expert's replicas: even or nearest "
        "(needs redundant_experts)",
        "num_groups": "expert groups of node-limited routing (default: router.options.groups, else 1)",
        "policy": "auto (hierarchical when the groups divide over the nodes), hierarchical or global",
    },
}
PLACEMENT_OPTIONS["eplb_hierarchical"] = {k: v for k, v in PLACEMENT_OPTIONS["eplb"].items() if k != "policy"}
PLACEMENT_OPTIONS["eplb_global"] = PLACEMENT_OPTIONS["eplb_hierarchical"]


@dataclass(frozen=True)
class GroupDispatch:
    """One all-to-all of one EP group: what its experts compute and what its wires carry.

    Attributes:
        tokens: ``[ep, ep]`` token rows the experts of rank ``j`` compute from rank ``i``
            ((token, expert) pairs; capacity-sized buffers when padded).
        copies: ``[ep, ep]`` token copies rank ``i`` sends rank ``j`` (the dispatcher's; the
            padded buffers when padded).
        kept, dropped: ``[experts]`` (token, slot) assignments kept and dropped per logical expert.
        exact: the dispatcher's de-duplication came from the token sets (module
            :mod:`netsim.moe.dispatchers`).
    """

    tokens: np.ndarray
    copies: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    exact: bool = True


class EPRouting:
    """Routing + placement of a workload's MoE layers on EP groups of ``ep`` ranks.

    Args:
        spec: the workload (``model.moe``, ``router``, ``placement``).
        ep: EP group size.
        tokens_per_rank: tokens one EP rank routes per micro-batch (before top-k).
        rank_node: server of each EP rank of a group (by position; the same for every group
            under the default placement, used by locality-aware routers and EPLB).
        seed: the scenario seed.
        router: overrides ``spec.router.name``.
        routing_trace: a routing-trace file that replaces the router.
        samples: route at most this many samples per (step, layer) and reuse them (module doc).
    """

    def __init__(
        self,
        spec: WorkloadSpec,
        *,
        ep: int,
        tokens_per_rank: int,
        rank_node: Sequence[int],
        seed: int,
        router: str | None = None,
        routing_trace: str | None = None,
        samples: int | None = None,
    ) -> None:
        moe = spec.model.moe
        if samples is not None and samples < 1:
            raise WorkloadError(
                f"routing_samples must be >= 1 (got {samples})", source=spec.source, field="routing_samples"
            )
        self.samples = samples
        if moe is None:
            raise WorkloadError("the model has no MoE layers", source=spec.source, field="model.moe")
        self.spec = spec
        self.ep = ep
        self.experts = moe.experts
        self.top_k = moe.top_k
        self.tokens_per_rank = tokens_per_rank
        self.rank_node = np.asarray(rank_node, dtype=np.int64)
        self.seed = seed
        self.router_name = routing_trace or router or spec.router.name
        self.num_moe_layers = len(spec.model.moe_layers())
        pl = spec.placement
        self.placement_name = pl.name.replace("-", "_")
        self._check_placement_options()
        self.replica_policy = str(pl.options.get("replica_policy", "even"))
        try:
            self.dispatcher = DISPATCHERS.canonical(moe.dispatcher, source=spec.source)
        except SpecError as exc:
            raise WorkloadError(exc.message, source=spec.source, field="model.moe.dispatcher") from None
        #: rows of a capacity-padded buffer per (source rank, expert slot), or None (dropless)
        self.capacity_rows = (
            math.ceil(moe.capacity_factor * moe.top_k * tokens_per_rank / moe.experts - 1e-9)
            if moe.padding == "capacity" and moe.capacity_factor is not None
            else None
        )
        params: dict[str, Any] = dict(spec.router.options)
        name = self.router_name
        if routing_trace is None and name in STAT_MODELS and moe.capacity_factor is not None:
            params.setdefault("capacity_factor", moe.capacity_factor)
        if routing_trace is None and name in ROUTERS:
            accepted = router_param_names(name)
            if "top_k" in accepted:
                params.setdefault("top_k", moe.top_k)
            if "capacity_factor" in accepted and moe.capacity_factor is not None:
                params.setdefault("capacity_factor", moe.capacity_factor)
            if "capacity_hidden" in accepted:  # LocMoE's Theorem-1 bound uses the model's hidden size
                params.setdefault("capacity_hidden", spec.model.hidden)
        placement0 = self._simple_placement() if not self.placement_name.startswith("eplb") else None
        try:
            self.source = routing_source(
                name,
                experts=self.experts,
                ep=ep,
                tokens_per_rank=tokens_per_rank,
                top_k=moe.top_k,
                seed=seed,
                params=params,
                placement=placement0 or make_placement("contiguous", self.experts, ep),
                rank_node=self.rank_node,
            )
        except SpecError as exc:
            field = "router" if routing_trace is None else "routing_trace"
            raise WorkloadError(exc.message, source=exc.source or spec.source, field=exc.field or field) from None
        # what the all-to-alls draw from: the source, or a cache of its first samples
        self._draw: Any = self.source if samples is None else _Reused(self.source, samples)
        self.placements: list[Placement] = (
            [placement0] * max(1, self.num_moe_layers) if placement0 is not None else self._eplb_placements()
        )

    # ------------------------------------------------------------------ placement

    def _check_placement_options(self) -> None:
        """Every ``placement.options`` key is one the placement uses (:data:`PLACEMENT_OPTIONS`)."""
        pl = self.spec.placement
        allowed = PLACEMENT_OPTIONS.get(self.placement_name)
        if allowed is None:
            return  # an unknown placement name: make_placement says so
        for key in sorted(pl.options):
            if key not in allowed:
                raise WorkloadError(
                    f"unknown option {key!r} of placement {pl.name}; allowed: {', '.join(allowed) or 'none'}",
                    source=self.spec.source,
                    field=f"placement.options.{key}",
                )
        if "replica_policy" in pl.options and not pl.redundant_experts:
            raise WorkloadError(
                "replica_policy splits tokens over an expert's replicas: it needs placement.redundant_experts > 0",
                source=self.spec.source,
                field="placement.options.replica_policy",
            )

    def _simple_placement(self) -> Placement:
        pl = self.spec.placement
        try:
            return make_placement(self.placement_name, self.experts, self.ep, num_redundant=pl.redundant_experts)
        except SpecError as exc:
            raise WorkloadError(exc.message, source=self.spec.source, field="placement") from None

    def _expected_load(self, layer: int) -> np.ndarray:
        src = self.source
        if isinstance(src, StatisticalSource):
            return np.asarray(src.probabilities(layer).sum(axis=0) * self.tokens_per_rank * self.top_k)
        if isinstance(src, TraceSource):
            load = src.trace.expert_load()
            return np.asarray(load[layer % load.shape[0]])
        tokens, dropped = src.counts(0, layer, 0)
        return np.asarray((tokens + dropped).sum(axis=0), dtype=np.float64)

    def _eplb_placements(self) -> list[Placement]:
        pl = self.spec.placement
        nodes = len(set(self.rank_node.tolist()))
        groups = int(pl.options.get("num_groups", self.spec.router.options.get("groups", 1)))
        out: list[Placement] = []
        for layer in range(max(1, self.num_moe_layers)):
            try:
                out.append(
                    make_placement(
                        self._eplb_name(),
                        self.experts,
                        self.ep,
                        load=self._expected_load(layer),
                        num_redundant=pl.redundant_experts,
                        num_groups=groups,
                        num_nodes=nodes,
                    )
                )
            except SpecError as exc:
                raise WorkloadError(exc.message, source=self.spec.source, field="placement") from None
        return out

    def _eplb_name(self) -> str:
        """The EPLB variant: the placement's name, or ``eplb_<policy>`` from ``options.policy``."""
        policy = self.spec.placement.options.get("policy")
        if policy is None or policy == "auto":
            return self.placement_name
        if policy not in ("hierarchical", "global"):
            raise WorkloadError(
                f"unknown EPLB policy {policy!r}; allowed: auto, hierarchical, global",
                source=self.spec.source,
                field="placement.options.policy",
            )
        return f"eplb_{policy}"

    @property
    def slots_per_rank(self) -> int:
        return self.placements[0].slots_per_rank

    # ------------------------------------------------------------------ routing

    def tokens(self, step: int, moe_layer: int, sample: int, group_nodes: Sequence[int] | None = None) -> GroupDispatch:
        """The all-to-all of one EP group (:class:`GroupDispatch`: token rows computed, copies
        sent, kept and dropped assignments per logical expert).

        ``sample`` distinguishes micro-batches and EP groups; ``group_nodes`` is the server of
        each rank of the group (replica policy ``nearest``, the dispatchers' nodes).
        """
        node = self.rank_node if group_nodes is None else np.asarray(group_nodes, dtype=np.int64)
        try:
            plan, kept, dropped = step_dispatch(
                self._draw,
                self.placements,
                step=step,
                layer=moe_layer,
                microbatch=sample,
                hidden=1,
                bytes_per_element=1.0,
                replica_policy=self.replica_policy,
                rank_node=node,
                dispatcher=self.dispatcher,
            )
        except SpecError as exc:
            raise WorkloadError(exc.message, source=self.spec.source, field=exc.field or "router") from None
        assert plan.copies is not None
        if self.capacity_rows is not None:
            pad = padded_tokens(self.placements[moe_layer % len(self.placements)], self.capacity_rows)
            return GroupDispatch(pad, pad, kept.sum(axis=0), dropped.sum(axis=0))
        return GroupDispatch(plan.tokens, plan.copies, kept.sum(axis=0), dropped.sum(axis=0), plan.dedup_exact)


class _Reused:
    """A routing source that routes sample ``i mod samples`` for micro-batch index ``i`` (cached)."""

    def __init__(self, source: Any, samples: int) -> None:
        self.source, self.samples = source, samples
        self.top_k = getattr(source, "top_k", None)
        self.cache: dict[tuple[int, int, int, bool], Routed] = {}

    def routed(self, step: int, layer: int, microbatch: int = 0, *, token_sets: bool = False) -> Routed:
        key = (step, layer, microbatch % self.samples, token_sets)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = route_batch(self.source, *key[:3], token_sets=token_sets)
        return hit

    def counts(self, step: int, layer: int, microbatch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        tok, drp, _ = self.routed(step, layer, microbatch)
        return tok, drp
