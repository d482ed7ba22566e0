"""Mixture-of-experts routing, expert placement and the all-to-all traffic they cause.

In a MoE layer a *router* sends every token to ``top_k`` of ``n`` experts; with expert
parallelism (EP) the experts live on different ranks, so each MoE layer of each micro-batch
runs an all-to-all *dispatch* (tokens to their experts) and a *combine* (outputs back).  How
many bytes go where depends on three things this package models:

* the router (:mod:`netsim.moe.routers`: hash/RRE, Switch, GShard, Mixtral, DeepSeek-V3,
  expert choice, LocMoE; numpy, with torch wrappers in :mod:`netsim.moe.torch_routers`), or a
  statistical stand-in (:mod:`netsim.moe.statistical`), or a recorded routing trace
  (:mod:`netsim.moe.trace`), all behind one interface (:mod:`netsim.moe.sources`);
* the placement of experts on ranks (:mod:`netsim.moe.placement`: contiguous, round-robin,
  DeepSeek EPLB with redundant experts);
* the capacity limits that drop tokens (:mod:`netsim.moe.capacity`).

:mod:`netsim.moe.traffic` turns routing counts and a placement into dispatch/combine byte
matrices and load/locality metrics.  :mod:`netsim.moe.lab` (needs torch) trains a small MoE
language model on real text with any router and records its routing trace.

Nothing here needs torch: ``import netsim.moe`` works with numpy alone; torch is imported only
by ``torch_routers`` and ``lab``.
"""

from netsim.moe.capacity import locmoe_min_capacity, locmoe_min_capacity_approx, locmoe_p_delta, token_capacity
from netsim.moe.placement import (
    PLACEMENTS,
    Placement,
    balanced_packing,
    contiguous_placement,
    eplb,
    eplb_placements,
    make_placement,
    placement_names,
    rank_nodes,
    replicate_experts,
    round_robin_placement,
)
from netsim.moe.routers import (
    ROUTERS,
    DeepSeekRouter,
    ExpertChoiceRouter,
    GShardRouter,
    HashRouter,
    LocMoERouter,
    MixtralRouter,
    Router,
    RoutingResult,
    RRERouter,
    SwitchRouter,
    TokenBatch,
    grap_weights,
    make_router,
    register_router,
    router_names,
)
from netsim.moe.sources import (
    RouterSource,
    RoutingSource,
    StatisticalSource,
    TraceSource,
    routing_source,
    step_dispatch,
)
from netsim.moe.statistical import STAT_MODELS, make_stat_model, sample_counts, stat_model_names
from netsim.moe.trace import RoutingTrace, TraceMeta, convert_measured, read_routing_trace, write_routing_trace
from netsim.moe.traffic import DispatchPlan, RoutingMetrics, dispatch_plan, rank_token_matrix, routing_metrics

__all__ = [
    "PLACEMENTS",
    "ROUTERS",
    "STAT_MODELS",
    "DeepSeekRouter",
    "DispatchPlan",
    "ExpertChoiceRouter",
    "GShardRouter",
    "HashRouter",
    "LocMoERouter",
    "MixtralRouter",
    "Placement",
    "RRERouter",
    "Router",
    "RouterSource",
    "RoutingMetrics",
    "RoutingResult",
    "RoutingSource",
    "RoutingTrace",
    "StatisticalSource",
    "SwitchRouter",
    "TokenBatch",
    "TraceMeta",
    "TraceSource",
    "balanced_packing",
    "contiguous_placement",
    "convert_measured",
    "dispatch_plan",
    "eplb",
    "eplb_placements",
    "grap_weights",
    "locmoe_min_capacity",
    "locmoe_min_capacity_approx",
    "locmoe_p_delta",
    "make_placement",
    "make_router",
    "make_stat_model",
    "placement_names",
    "rank_nodes",
    "rank_token_matrix",
    "read_routing_trace",
    "register_router",
    "replicate_experts",
    "round_robin_placement",
    "router_names",
    "routing_metrics",
    "routing_source",
    "sample_counts",
    "stat_model_names",
    "step_dispatch",
    "token_capacity",
    "write_routing_trace",
]
