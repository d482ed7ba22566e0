"""LocMoE: locality-aware routing that keeps tokens on their own node where it costs little.

Li et al., "LocMoE: A Low-Overhead MoE for Large Language Model Training" (arXiv 2401.13920,
IJCAI-24).  The gate is GrAP (grouped average pooling): fixed, mutually orthogonal weights that
average one slice of the hidden state per expert, ``G = ReLU(W_grap x + eps)``, then softmax and
top-1.  Two additions steer the all-to-all: a locality loss ``mu * KL(D_c || D_l)`` pulls each
rank's routing distribution ``D_c`` towards a smoothed distribution ``D_l`` concentrated on its
node-local experts, and Theorem 1 bounds the per-expert capacity from below
(:func:`netsim.moe.capacity.locmoe_capacity_tokens`), which allows a reduced capacity.

The GrAP product ``W_grap x`` is a float32 GEMM (float32 hidden states, a cached float32 copy of
the float64 GrAP matrix), as learned gates compute their logits in float32 (Switch Transformer's
selective precision, Fedus et al., JMLR 2022, section 2.4; :mod:`netsim.moe.routers.base`); the
bias, ReLU, softmax and top-1 run in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.moe._blas import one_blas_thread
from netsim.moe.capacity import locmoe_capacity_tokens
from netsim.moe.routers.base import Router, RoutingResult, TokenBatch, register_router
from netsim.moe.routers.gating import (
    FloatArray,
    HiddenArray,
    IntArray,
    _ceil,
    _groups,
    grouped_switch_aux,
    keep_within_capacity,
    kl_divergence,
    softmax,
)

__all__ = ["LocMoERouter", "grap_weights", "localised_distribution"]


def grap_weights(n_experts: int, hidden: int) -> FloatArray:
    """LocMoE GrAP gating matrix ``[n, d]``: ``w_i[j] = n/d`` on the i-th slice of ``d/n`` dims.

    ``w_i . x`` is the mean of slice ``i`` of ``x``; the rows are mutually orthogonal.
    """
    if hidden % n_experts:
        raise SpecError(
            f"GrAP gating needs hidden divisible by experts (hidden={hidden}, experts={n_experts})", field="hidden"
        )
    w = np.zeros((n_experts, hidden))
    s = hidden // n_experts
    for i in range(n_experts):
        w[i, i * s : (i + 1) * s] = n_experts / hidden
    return w


def localised_distribution(local_experts: Sequence[int], n_experts: int, eps: float) -> FloatArray:
    """LocMoE's smoothed fully-localised distribution ``D_l`` over experts.

    ``(1 - eps)`` uniform over the rank's node-local experts plus ``eps`` uniform over all
    experts; uniform over all when the node holds no expert (locality cannot help there).
    """
    d = np.full(n_experts, 1.0 / n_experts)
    local = np.asarray(sorted(set(int(e) for e in local_experts)), dtype=np.int64)
    if local.size == 0:
        return d
    d *= eps
    d[local] += (1.0 - eps) / local.size
    return d


@register_router("locmoe")
class LocMoERouter(Router):
    """LocMoE: GrAP gating ``G = ReLU(W_grap x + eps)``, ``p = softmax(G)``, top-1.

    ``W_grap x`` is computed in float32 (:meth:`logits`; module docstring).

    Args:
        local_experts: for every source rank, the experts on that rank's node (enables the
            locality loss; the lab derives it from the placement).
        mu: weight of the locality loss ``mu * KL(D_c || D_l)``.
        eps: smoothing of ``D_l`` (see :func:`localised_distribution`).
        alpha: weight of the Switch auxiliary loss.
        delta: minimum token/gate cosine for the Theorem-1 capacity bound (paper: ~0.03).
        capacity: ``"factor"``: per-expert capacity ``ceil(T_g/n * capacity_factor)`` per
            capacity group, never below the Theorem-1 count; ``"theorem1"``: the Theorem-1 count
            itself, the reduced capacity the paper derives.
        capacity_factor: the buffer of ``capacity="factor"`` (``None``: no limit).
        capacity_hidden: hidden size ``d`` of the Theorem-1 bound (default: ``hidden``; a replay
            of a lab trace uses the replayed model's).

    Theorem 1 (Li et al. 2024, appendix A.3) bounds the number of *tokens* an expert must
    accept so that at least one class-discriminative token reaches it:
    ``ec_min = 1 / (n p_delta)`` tokens (:func:`netsim.moe.capacity.locmoe_min_capacity`), a
    count independent of the batch: at d = 5120 and delta = 0.03 about 1.96, so 2 tokens per
    expert and group.  ``D_c`` of a rank is the mean router probability over its tokens (the
    differentiable form of its assignment distribution); ``L_loc`` is the mean KL over the
    source ranks present in the batch.
    """

    def __init__(
        self,
        n_experts: int,
        hidden: int,
        *,
        local_experts: Sequence[Sequence[int]] | None = None,
        mu: float = 0.01,
        eps: float = 0.1,
        alpha: float = 0.01,
        delta: float = 0.03,
        capacity: str = "factor",
        capacity_factor: float | None = 1.25,
        capacity_hidden: int | None = None,
        seed: int | np.random.Generator = 0,
    ) -> None:
        super().__init__(n_experts, hidden, top_k=1, seed=seed)
        if not 0.0 < eps <= 1.0:
            raise SpecError(f"locmoe: eps must be in (0, 1] (got {eps})", field="router.eps")
        if not 0.0 <= delta < 1.0:
            raise SpecError(f"locmoe: delta must be in [0, 1) (got {delta})", field="router.delta")
        if capacity not in ("factor", "theorem1"):
            raise SpecError(f"locmoe: capacity must be factor or theorem1 (got {capacity!r})", field="router.capacity")
        if capacity_factor is not None and capacity_factor <= 0:
            raise SpecError(f"capacity_factor must be > 0 (got {capacity_factor})", field="router.capacity_factor")
        self.grap = grap_weights(n_experts, hidden)
        self.gate_bias = np.zeros(n_experts)
        self.local_experts = None if local_experts is None else [list(map(int, le)) for le in local_experts]
        self.mu = float(mu)
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.delta = float(delta)
        self.capacity_mode = capacity
        self.capacity_factor = capacity_factor
        self.capacity_hidden = int(capacity_hidden or hidden)
        self.min_capacity_tokens = locmoe_capacity_tokens(n_experts, self.capacity_hidden, delta)

    def capacity(self, group_sizes: IntArray) -> IntArray:
        """Per-expert capacity (tokens) of each capacity group (module docstring of the class)."""
        sizes = np.asarray(group_sizes, dtype=np.int64)
        floor = np.full(sizes.shape, self.min_capacity_tokens, dtype=np.int64)
        if self.capacity_mode == "theorem1":
            return floor
        if self.capacity_factor is None:
            return sizes.copy()
        return np.maximum(_ceil(sizes / self.n_experts * self.capacity_factor), floor)

    def params(self) -> dict[str, FloatArray]:
        return {"gate_bias": self.gate_bias}

    def logits(self, x: HiddenArray) -> FloatArray:
        """``W_grap x + b`` (``[T, n]``): the product one float32 GEMM (``x`` converted only if
        not float32), the bias added in float64."""
        with one_blas_thread():  # a small product: see netsim.moe._blas
            z = (np.asarray(x, dtype=np.float32) @ self._float32("grap").T).astype(np.float64)
        z += self.gate_bias
        return z

    def scores(self, x: HiddenArray) -> FloatArray:
        return softmax(np.maximum(self.logits(x), 0.0))

    def target(self, n_ranks: int) -> FloatArray:
        """``[n_ranks, n]``: the smoothed localised distribution ``D_l`` of every rank."""
        if self.local_experts is None:
            raise SpecError("locmoe: the locality loss needs local_experts (rank -> node-local experts)")
        if n_ranks > len(self.local_experts):
            raise SpecError(f"locmoe: local_experts covers {len(self.local_experts)} ranks, batch has {n_ranks}")
        return np.stack([localised_distribution(le, self.n_experts, self.eps) for le in self.local_experts[:n_ranks]])

    def _choose(self, batch: TokenBatch) -> tuple[IntArray, IntArray, IntArray]:
        """``(requested, experts, group)``: top-1 choices, those kept by the capacity of their
        group (``-1``: dropped), and the capacity group of every token."""
        scores = batch.scores
        t, n = scores.shape
        requested = np.argmax(scores, axis=-1).astype(np.int64)[:, None]
        group, sizes = _groups(batch.src_rank, t)
        keep = keep_within_capacity(requested, n, group, self.capacity(sizes))
        return requested, np.where(keep, requested, -1), group

    def counts(self, x: NDArray[np.floating[Any]], **kwargs: Any) -> tuple[IntArray, IntArray]:
        """``(counts, drops)`` of :meth:`route` without its gates and losses (the locality and
        the Switch auxiliary loss need every token's probabilities; the load does not)."""
        a = self._check_x(x)
        requested, experts, _ = self._choose(TokenBatch(self.scores(a), **kwargs))
        res = RoutingResult(experts, np.zeros(experts.shape), requested, self.n_experts)
        return res.counts, res.drops

    def assign(self, batch: TokenBatch) -> RoutingResult:
        scores = batch.scores
        t, n = scores.shape
        requested, experts, group = self._choose(batch)
        gates = np.where(experts >= 0, np.take_along_axis(scores, requested, axis=-1), 0.0)
        losses = {"aux": grouped_switch_aux(requested, scores, group, self.alpha)}
        src = batch.src_rank
        if src is not None and self.local_experts is not None and t:
            present = np.unique(src)
            d_l = self.target(int(present.max()) + 1)[present]
            d_c = np.stack([scores[src == r].mean(axis=0) for r in present])
            losses["loc"] = float(self.mu * np.mean(kl_divergence(d_c, d_l)))
        return RoutingResult(experts, gates, requested, n, losses, scores)
