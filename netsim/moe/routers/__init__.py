"""Routers: the gating math that maps a batch of tokens to experts (numpy, no torch needed).

A *router* takes the hidden states ``x`` of ``T`` tokens (``[T, d]``, plus token ids where the
router hashes them) and chooses up to ``k`` experts out of ``n`` for every token.  All routers
share one API::

    router = make_router("switch", n_experts=16, hidden=64, seed=0, capacity_factor=1.25)
    result = router.route(x, src_rank=ranks)        # -> RoutingResult
    result = router.assign(TokenBatch(scores, src_rank=ranks))   # the discrete step alone

A :class:`RoutingResult` holds ``experts [T, k]`` (``-1`` where a slot is empty: the token was
dropped by a capacity limit or the slot was never used), ``gates [T, k]`` (0 in empty slots),
``requested [T, k]`` (what the router wanted before capacity was applied), per-expert token
counts, per-expert drops, and the auxiliary losses as plain floats.

Routers (docs/modelling.md, Routers; formulas in docs/sections/moe.md):

========================  ===================================================================
``hash``                  Hash layers (Roller et al., NeurIPS 2021): expert = table[token_id],
                          a fixed random (or frequency-balanced) table; no parameters.
``rre``                   PanGu-Sigma random routed experts (Ren et al., arXiv 2303.10845):
                          domain -> expert group, then a parameter-free random hash of the
                          token id inside the group.
``switch``                Switch Transformer (Fedus et al., JMLR 2022): softmax(W x), top-1,
                          capacity ``ceil(T/n * cf)``, overflow dropped in token order,
                          ``L_aux = alpha * n * sum_i f_i P_i``.
``gshard``                GShard (Lepikhin et al., ICLR 2021): top-2, gates renormalised over
                          the two, the second expert used with probability ``min(1, 2 g2)``,
                          capacity ``ceil(cf * 2T/n)`` with first choices served first.
``mixtral``               Mixtral (Jiang et al., arXiv 2401.04088): top-2 of softmax,
                          renormalised, no capacity and no drops.
``deepseek``              DeepSeek-V3 (arXiv 2412.19437): sigmoid affinities, a per-expert
                          selection bias updated by +-gamma (auxiliary-loss-free balancing),
                          node-limited group routing, gates = normalised unbiased affinities
                          * route_scale, sequence-wise balance loss.
``expert_choice``         Expert choice (Zhou et al., NeurIPS 2022): every expert takes its
                          top ``ceil(T c / n)`` tokens; perfectly balanced, a token may get
                          zero or several experts.
``locmoe``                LocMoE (Li et al., arXiv 2401.13920, IJCAI-24): fixed GrAP gating
                          weights, ``G = ReLU(w . x + eps)``, softmax, top-1; capacity from
                          Theorem 1 (:mod:`netsim.moe.capacity`); loss ``L_aux + mu KL(D_c||D_l)``.
========================  ===================================================================

Capacity limits apply per *capacity group*: the tokens of one source rank (``src_rank``), as
in GShard/Switch where every device computes capacity for its own local batch; with no
``src_rank`` the whole batch is one group.  ``dropped`` counts (token, slot) assignments a
router requested but a capacity limit removed; for expert choice a token that no expert took
counts as one drop attributed to its highest-scoring expert.  GShard's random skip of the
second expert is not a drop (the router never requested it).

The learned routers draw their weights from a seeded :class:`numpy.random.Generator`, so the
same seed gives the same router.  :mod:`netsim.moe.torch_routers` wraps every router in a
``torch.nn.Module`` with differentiable gates and losses that takes its discrete decisions
from the very same numpy code (so numpy and torch always route identically).

Modules: :mod:`~netsim.moe.routers.base` (:class:`TokenBatch`, :class:`RoutingResult`, the
:class:`Router` base class and the :data:`ROUTERS` registry), :mod:`~netsim.moe.routers.gating`
(top-k, capacity groups, balance losses), :mod:`~netsim.moe.routers.hashing` (hash, rre),
:mod:`~netsim.moe.routers.token_choice` (switch, gshard, mixtral),
:mod:`~netsim.moe.routers.deepseek`, :mod:`~netsim.moe.routers.expert_choice` and
:mod:`~netsim.moe.routers.locmoe`.  Importing this package registers every router.
"""

from netsim.moe.routers.base import (
    ROUTERS,
    SIDE_ARRAYS,
    Router,
    RoutingResult,
    TokenBatch,
    make_router,
    register_router,
    router_names,
    router_param_names,
)
from netsim.moe.routers.base import _LinearRouter as _LinearRouter
from netsim.moe.routers.base import _router_class as _router_class
from netsim.moe.routers.deepseek import DeepSeekRouter
from netsim.moe.routers.expert_choice import ExpertChoiceRouter
from netsim.moe.routers.gating import (
    BoolArray,
    FloatArray,
    IntArray,
    grouped_balance,
    grouped_switch_aux,
    keep_within_capacity,
    kl_divergence,
    softmax,
    switch_aux_loss,
)
from netsim.moe.routers.gating import _as_generator as _as_generator
from netsim.moe.routers.gating import _ceil as _ceil
from netsim.moe.routers.gating import _groups as _groups
from netsim.moe.routers.gating import _sigmoid as _sigmoid
from netsim.moe.routers.gating import _top_k as _top_k
from netsim.moe.routers.hashing import HashRouter, RRERouter
from netsim.moe.routers.locmoe import LocMoERouter, grap_weights, localised_distribution
from netsim.moe.routers.token_choice import GShardRouter, MixtralRouter, SwitchRouter

__all__ = [
    "ROUTERS",
    "SIDE_ARRAYS",
    "BoolArray",
    "DeepSeekRouter",
    "ExpertChoiceRouter",
    "FloatArray",
    "GShardRouter",
    "HashRouter",
    "IntArray",
    "LocMoERouter",
    "MixtralRouter",
    "RRERouter",
    "Router",
    "RoutingResult",
    "SwitchRouter",
    "TokenBatch",
    "grap_weights",
    "grouped_balance",
    "grouped_switch_aux",
    "keep_within_capacity",
    "kl_divergence",
    "localised_distribution",
    "make_router",
    "register_router",
    "router_names",
    "router_param_names",
    "softmax",
    "switch_aux_loss",
]
