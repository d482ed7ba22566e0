"""Token-choice softmax routers: every token picks its top-k experts from ``softmax(x W)``.

Three published variants of the same idea, differing in k, gate normalisation and capacity:

* Switch Transformer (Fedus et al., "Switch Transformers", JMLR 2022): top-1, capacity
  ``ceil(T/n * cf)`` per capacity group, overflow dropped in token order, balance loss
  ``L_aux = alpha * n * sum_i f_i P_i``;
* GShard (Lepikhin et al., ICLR 2021): top-2, the two gates renormalised, the second expert used
  with probability ``min(1, 2 g2)``, capacity ``ceil(cf * 2T/n)`` with all first choices served
  before any second choice;
* Mixtral (Jiang et al., "Mixtral of Experts", arXiv 2401.04088): top-2 of the softmax,
  renormalised, no capacity and no drops; the Hugging Face load-balancing loss.

The gating matrix ``W [d, n]`` is drawn N(0, 1/d) from the router's seed
(:class:`~netsim.moe.routers.base._LinearRouter`).
"""

from __future__ import annotations

import numpy as np

from netsim.errors import SpecError
from netsim.moe.routers.base import RoutingResult, TokenBatch, _LinearRouter, register_router
from netsim.moe.routers.gating import (
    IntArray,
    _ceil,
    _groups,
    _top_k,
    grouped_switch_aux,
    keep_within_capacity,
    switch_aux_loss,
)

__all__ = ["GShardRouter", "MixtralRouter", "SwitchRouter"]


@register_router("switch")
class SwitchRouter(_LinearRouter):
    """Switch Transformer: top-1 of ``softmax(x W)``; capacity ``ceil(T_g/n * cf)`` per group.

    ``L_aux = alpha * n * sum_i f_i P_i`` with ``f_i`` the fraction of tokens whose argmax is
    ``i`` (before drops) and ``P_i`` the mean router probability of ``i``.
    """

    def __init__(
        self,
        n_experts: int,
        hidden: int,
        *,
        capacity_factor: float | None = 1.25,
        alpha: float = 0.01,
        seed: int | np.random.Generator = 0,
    ) -> None:
        super().__init__(n_experts, hidden, top_k=1, seed=seed)
        if capacity_factor is not None and capacity_factor <= 0:
            raise SpecError(f"capacity_factor must be > 0 (got {capacity_factor})", field="router.capacity_factor")
        self.capacity_factor = capacity_factor
        self.alpha = float(alpha)

    def capacity(self, group_sizes: IntArray) -> IntArray:
        """Per-expert capacity of each group (tokens); huge when there is no limit."""
        if self.capacity_factor is None:
            return np.asarray(group_sizes * self.top_k, dtype=np.int64)
        return _ceil(group_sizes / self.n_experts * self.capacity_factor)

    def assign(self, batch: TokenBatch) -> RoutingResult:
        scores = batch.scores
        t, n = scores.shape
        requested = np.argmax(scores, axis=-1).astype(np.int64)[:, None]
        group, sizes = _groups(batch.src_rank, t)
        keep = keep_within_capacity(requested, n, group, self.capacity(sizes))
        experts = np.where(keep, requested, -1)
        gates = np.where(keep, np.take_along_axis(scores, requested, axis=-1), 0.0)
        aux = grouped_switch_aux(requested, scores, group, self.alpha)
        return RoutingResult(experts, gates, requested, n, {"aux": aux}, scores)


@register_router("gshard")
class GShardRouter(_LinearRouter):
    """GShard top-2: ``g1, g2`` renormalised; expert 2 used with probability ``min(1, 2 g2)``.

    Capacity per group ``ceil(cf * 2 T_g / n)``; all first choices are served before any
    second choice.  ``L_aux`` as Switch with ``f_i`` from the first choices.
    """

    def __init__(
        self,
        n_experts: int,
        hidden: int,
        *,
        capacity_factor: float | None = 1.0,
        alpha: float = 0.01,
        seed: int | np.random.Generator = 0,
    ) -> None:
        super().__init__(n_experts, hidden, top_k=2, seed=seed)
        self.capacity_factor = capacity_factor
        self.alpha = float(alpha)

    def assign(self, batch: TokenBatch) -> RoutingResult:
        scores = batch.scores
        t, n = scores.shape
        top = _top_k(scores, 2)
        g = np.take_along_axis(scores, top, axis=-1)
        g = g / np.maximum(g.sum(axis=-1, keepdims=True), 1e-300)
        use2 = self.rng.random(t) < np.minimum(1.0, 2.0 * g[:, 1])
        requested = top.copy()
        requested[~use2, 1] = -1
        group, sizes = _groups(batch.src_rank, t)
        cf = self.capacity_factor
        cap = sizes * 2 if cf is None else _ceil(cf * 2.0 * sizes / n)
        keep = keep_within_capacity(requested, n, group, cap)
        experts = np.where(keep, requested, -1)
        gates = np.where(keep, g, 0.0)
        aux = grouped_switch_aux(requested, scores, group, self.alpha)
        return RoutingResult(experts, gates, requested, n, {"aux": aux}, scores)


@register_router("mixtral")
class MixtralRouter(_LinearRouter):
    """Mixtral top-k (default 2): softmax over the k largest logits; no capacity, no drops.

    ``L_aux = alpha * n * sum_i (c_i / T) P_i`` (``c_i`` = assignments to ``i`` over all k
    slots), the load-balancing loss of the Hugging Face implementation; ``alpha`` defaults
    to 0.001, its ``router_aux_loss_coef``.
    """

    def __init__(
        self, n_experts: int, hidden: int, *, top_k: int = 2, alpha: float = 0.001, seed: int | np.random.Generator = 0
    ) -> None:
        super().__init__(n_experts, hidden, top_k=top_k, seed=seed)
        self.alpha = float(alpha)

    def assign(self, batch: TokenBatch) -> RoutingResult:
        scores = batch.scores
        t, n = scores.shape
        top = _top_k(scores, self.top_k)
        g = np.take_along_axis(scores, top, axis=-1)
        g = g / np.maximum(g.sum(axis=-1, keepdims=True), 1e-300)
        c = np.bincount(top.reshape(-1), minlength=n) / max(t, 1)
        aux = switch_aux_loss(c, scores.mean(axis=0) if t else np.zeros(n), self.alpha)
        return RoutingResult(top, g, top.copy(), n, {"aux": aux}, scores)
