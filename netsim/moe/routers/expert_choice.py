"""Expert-choice routing: experts pick tokens instead of tokens picking experts.

Zhou et al., "Mixture-of-Experts with Expert Choice Routing" (NeurIPS 2022): with the token/expert
affinities ``S = softmax(x W)``, every expert takes its ``ceil(T c / n)`` highest-scoring tokens
(``c`` the capacity factor).  Load is perfectly balanced by construction and no balance loss is
needed, but a token may receive zero experts (it is dropped, here attributed to its
highest-scoring expert) or several (it uses several slots).
"""

from __future__ import annotations

import numpy as np

from netsim.errors import SpecError
from netsim.moe.capacity import ceil_tokens
from netsim.moe.routers.base import RoutingResult, TokenBatch, _LinearRouter, register_router
from netsim.moe.routers.gating import _groups, _top_k

__all__ = ["ExpertChoiceRouter"]


@register_router("expert_choice")
class ExpertChoiceRouter(_LinearRouter):
    """Expert choice: ``S = softmax(x W)`` per token; every expert takes its top-k tokens.

    ``k = min(T_g, ceil(T_g * c / n))`` per capacity group (``c`` = ``capacity_factor``,
    default 2); ties go to the lower token index.  Gates are ``S[t, i]``.  A token taken by
    several experts uses several slots; ``experts`` has as many columns as the most experts
    any token received.  Tokens no expert took are dropped (attributed to their argmax).
    ``top_k`` (the nominal experts per token, e.g. in trace metadata) is ``c`` rounded.
    """

    def __init__(
        self, n_experts: int, hidden: int, *, capacity_factor: float = 2.0, seed: int | np.random.Generator = 0
    ) -> None:
        nominal = min(n_experts, max(1, round(capacity_factor))) if capacity_factor > 0 else 1
        super().__init__(n_experts, hidden, top_k=nominal, seed=seed)
        if capacity_factor <= 0:
            raise SpecError(f"capacity_factor must be > 0 (got {capacity_factor})", field="router.capacity_factor")
        self.capacity_factor = float(capacity_factor)

    def assign(self, batch: TokenBatch) -> RoutingResult:
        scores = batch.scores
        t, n = scores.shape
        group, sizes = _groups(batch.src_rank, t)
        picked = np.zeros((t, n), dtype=bool)
        for g, size in enumerate(sizes.tolist()):
            members = np.flatnonzero(group == g)
            k = min(size, ceil_tokens(size * self.capacity_factor / n))
            best = _top_k(np.ascontiguousarray(scores[members].T), k)  # [n, k] token positions
            picked[members[best], np.arange(n)[:, None]] = True
        per_token = picked.sum(axis=1)
        width = max(1, int(per_token.max()) if t else 1)
        experts = np.full((t, width), -1, dtype=np.int64)
        rows, cols = np.nonzero(picked)  # row-major: experts of a token in index order
        slot = np.arange(rows.size) - np.repeat(np.r_[0, np.cumsum(per_token)[:-1]], per_token)
        experts[rows, slot] = cols
        gates = np.where(experts >= 0, np.take_along_axis(scores, np.maximum(experts, 0), axis=-1), 0.0)
        requested = experts.copy()
        none = per_token == 0
        requested[none, 0] = np.argmax(scores[none], axis=-1) if none.any() else requested[none, 0]
        return RoutingResult(experts, gates, requested, n, {}, scores)
