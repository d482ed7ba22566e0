"""Routers: the gating math that maps a batch of tokens to experts (numpy, no torch needed).

A *router* takes the hidden states ``x`` of ``T`` tokens (``[T, d]``, plus token ids where the
router hashes them) and chooses up to ``k`` experts out of ``n`` for every token.  All routers
share one API::

    router = make_router("switch", n_experts=16, hidden=64, seed=0, capacity_factor=1.25)
    result = router.route(x, src_rank=ranks)        # -> RoutingResult

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
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from netsim.errors import SpecError
from netsim.moe import _select_kernel
from netsim.moe.capacity import ceil_tokens, locmoe_capacity_tokens

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "ROUTERS",
    "DeepSeekRouter",
    "ExpertChoiceRouter",
    "GShardRouter",
    "HashRouter",
    "LocMoERouter",
    "MixtralRouter",
    "RRERouter",
    "Router",
    "RoutingResult",
    "SwitchRouter",
    "grap_weights",
    "kl_divergence",
    "localised_distribution",
    "make_router",
    "register_router",
    "router_names",
    "softmax",
]


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass
class RoutingResult:
    """The routing of one batch of ``T`` tokens to ``n`` experts.

    Attributes:
        experts: ``[T, k]`` int64 expert index per (token, slot); ``-1`` = no expert.
        gates: ``[T, k]`` float64 gate weight per (token, slot); ``0`` where ``experts == -1``.
        requested: ``[T, k]`` int64 the experts chosen before capacity limits (``-1`` = none).
        n_experts: number of (logical) experts ``n``.
        aux_losses: auxiliary loss values by name (e.g. ``{"aux": 0.0102}``), already scaled
            by their coefficients.
        scores: ``[T, n]`` the router's probabilities / affinities, if it has any.
        counts: ``[n]`` int64 (token, slot) assignments kept per expert (computed).
        drops: ``[n]`` int64 assignments requested but dropped, per expert (computed).
    """

    experts: IntArray
    gates: FloatArray
    requested: IntArray
    n_experts: int
    aux_losses: dict[str, float] = field(default_factory=dict)
    scores: FloatArray | None = None
    counts: IntArray = field(init=False)
    drops: IntArray = field(init=False)

    def __post_init__(self) -> None:
        kept = self.experts[self.experts >= 0]
        self.counts = np.bincount(kept, minlength=self.n_experts).astype(np.int64)
        lost = self.requested[(self.requested >= 0) & (self.experts < 0)]
        self.drops = np.bincount(lost, minlength=self.n_experts).astype(np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def top_k(self) -> int:
        """Slots per token (for expert choice: the most experts any token received)."""
        return int(self.experts.shape[1])

    @property
    def dropped(self) -> int:
        """(token, slot) assignments removed by capacity limits."""
        return int(self.drops.sum())

    def by_source(self, src_rank: NDArray[np.integer[Any]], n_ranks: int) -> tuple[IntArray, IntArray]:
        """Kept and dropped assignments per (source rank, expert): two ``[n_ranks, n]`` arrays."""
        src = np.asarray(src_rank, dtype=np.int64)
        if src.shape != (self.num_tokens,):
            raise SpecError(f"src_rank must have shape ({self.num_tokens},), got {src.shape}")
        n = self.n_experts
        src2 = np.broadcast_to(src[:, None], self.experts.shape)
        ok = self.experts >= 0
        tokens = np.bincount(src2[ok] * n + self.experts[ok], minlength=n_ranks * n)
        lost = (self.requested >= 0) & ~ok
        dropped = np.bincount(src2[lost] * n + self.requested[lost], minlength=n_ranks * n)
        return (
            tokens.reshape(n_ranks, n).astype(np.int64),
            dropped.reshape(n_ranks, n).astype(np.int64),
        )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def softmax(z: FloatArray, axis: int = -1) -> FloatArray:
    """Numerically stable softmax along ``axis``."""
    m = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - m)
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float64)


def _sigmoid(z: NDArray[np.floating[Any]]) -> FloatArray:
    """``1 / (1 + e^-z)`` in float64 (also for float32 ``z``)."""
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def kl_divergence(p: FloatArray, q: FloatArray) -> FloatArray:
    """``KL(p || q) = sum_i p_i log(p_i / q_i)`` along the last axis, with ``0 log 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)
    return np.asarray(np.sum(np.where(p > 0, p * np.log(safe / q), 0.0), axis=-1), dtype=np.float64)


def _ceil(x: NDArray[np.floating[Any]] | FloatArray) -> IntArray:
    """Elementwise ``ceil`` ignoring floating-point fuzz, as int64."""
    return np.ceil(np.asarray(x, dtype=np.float64) - 1e-9).astype(np.int64)


def _as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(0 if seed is None else seed)


def _groups(src_rank: NDArray[np.integer[Any]] | None, t: int) -> tuple[IntArray, IntArray]:
    """Capacity groups: (group index per token, token count per group)."""
    if src_rank is None:
        return np.zeros(t, dtype=np.int64), np.array([t], dtype=np.int64)
    src = np.asarray(src_rank)
    if src.shape != (t,):
        raise SpecError(f"src_rank must have shape ({t},), got {src.shape}")
    _, inv = np.unique(src, return_inverse=True)
    inv = inv.astype(np.int64).reshape(t)
    return inv, np.bincount(inv).astype(np.int64)


def keep_within_capacity(requested: IntArray, n_experts: int, group: IntArray, capacity: IntArray) -> BoolArray:
    """Which requested (token, slot) assignments fit into the experts' capacity.

    Priority is slot-major: every token's first choice (in token order), then every token's
    second choice, and so on (GShard, Switch).  ``group[t]`` is the capacity group of token
    ``t`` and ``capacity[g]`` the capacity of every expert within group ``g``; exactly the
    assignments beyond the first ``capacity[g]`` to an expert in a group are dropped.
    """
    t, k = requested.shape
    flat = requested.T.reshape(-1)
    g = np.tile(group, k)
    idx = np.flatnonzero(flat >= 0)
    keep = np.zeros(t * k, dtype=bool)
    if idx.size:
        key = g[idx] * n_experts + flat[idx]
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
        lengths = np.diff(np.r_[starts, sk.size])
        pos = np.arange(sk.size) - np.repeat(starts, lengths)
        keep[idx[order]] = pos < capacity[g[idx[order]]]
    return keep.reshape(k, t).T.copy()


def _top_k(scores: FloatArray, k: int) -> IntArray:
    """Indices of the ``k`` largest scores per row of a 2-d array, largest first.

    Ties are broken towards the lowest index.  Wide rows avoid a full sort: the k-th largest
    value comes from a partition, the selection is every larger entry plus the first tied
    ones, and only the k selected entries are sorted.
    """
    rows, n = scores.shape
    if n <= 64 or k >= n:
        order = np.argsort(-scores, axis=-1, kind="stable")
        return np.asarray(order[:, :k], dtype=np.int64)
    kth = -np.partition(-scores, k - 1, axis=-1)[:, k - 1 : k]
    gt = scores > kth
    eq = scores == kth
    need = k - gt.sum(axis=-1, keepdims=True)
    sel = gt | (eq & (np.cumsum(eq, axis=-1) <= need))
    idx = np.nonzero(sel)[1].reshape(rows, k)  # index order within each row
    vals = np.take_along_axis(scores, idx, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.asarray(np.take_along_axis(idx, order, axis=-1), dtype=np.int64)


def grouped_balance(requested: IntArray, scores: FloatArray, group: IntArray, n: int) -> tuple[FloatArray, FloatArray]:
    """Per capacity group: ``f[g, i]`` (share of the group's tokens whose first choice is ``i``)
    and ``P[g, i]`` (mean router probability of ``i`` over the group's tokens)."""
    n_groups = int(group.max()) + 1 if group.size else 1
    size = np.maximum(np.bincount(group, minlength=n_groups), 1).astype(np.float64)
    first = requested[:, 0]
    ok = first >= 0
    f = np.zeros((n_groups, n))
    np.add.at(f, (group[ok], first[ok]), 1.0)
    p = np.zeros((n_groups, n))
    np.add.at(p, group, scores)
    return f / size[:, None], p / size[:, None]


def grouped_switch_aux(requested: IntArray, scores: FloatArray, group: IntArray, alpha: float) -> float:
    """Switch's balancing loss per capacity group, averaged over the groups:
    ``alpha * n * mean_g sum_i f[g, i] P[g, i]``.

    Switch Transformer (Mesh TensorFlow ``_switch_gating``) and GShard compute the loss on each
    group of tokens that shares a capacity (a device's batch), so it balances what the capacity
    limits; with one group it is the batch-wide loss.
    """
    n = scores.shape[1]
    if scores.shape[0] == 0:
        return 0.0
    f, p = grouped_balance(requested, scores, group, n)
    return float(alpha * n * np.mean(np.sum(f * p, axis=-1)))


def switch_aux_loss(f: FloatArray, p_mean: FloatArray, alpha: float) -> float:
    """Switch load-balancing loss ``alpha * n * sum_i f_i P_i`` (1 * alpha when balanced)."""
    n = f.shape[-1]
    return float(alpha * n * np.sum(f * p_mean))


def grap_weights(n_experts: int, hidden: int) -> FloatArray:
    """LocMoE GrAP gating matrix ``[n, d]``: ``w_i[j] = n/d`` on the i-th slice of ``d/n`` dims.

    ``w_i . x`` is the mean of slice ``i`` of ``x``; the rows are mutually orthogonal.
    """
    if hidden % n_experts:
        raise SpecError(
            f"GrAP gating needs hidden divisible by experts (hidden={hidden}, experts={n_experts})",
            field="hidden",
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


# --------------------------------------------------------------------------------------------
# base class and registry
# --------------------------------------------------------------------------------------------


class Router:
    """Base class: ``route(x, ...)`` = ``assign(scores(x), ...)``.

    Subclasses set ``name`` (registry key) and ``learned`` (has trainable weights); they
    implement :meth:`scores` (``[T, n]`` probabilities or affinities from hidden states) and
    :meth:`assign` (the discrete choice, capacity, gates, losses).
    """

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = True

    def __init__(self, n_experts: int, hidden: int, *, top_k: int, seed: int | np.random.Generator = 0):
        if n_experts < 1:
            raise SpecError(f"experts must be >= 1 (got {n_experts})", field="experts")
        if hidden < 1:
            raise SpecError(f"hidden must be >= 1 (got {hidden})", field="hidden")
        if not 1 <= top_k <= n_experts:
            raise SpecError(f"top_k must be in [1, experts={n_experts}] (got {top_k})", field="top_k")
        self.n_experts = int(n_experts)
        self.hidden = int(hidden)
        self.top_k = int(top_k)
        self.rng = _as_generator(seed)

    # -- API ----------------------------------------------------------------------------------
    def route(
        self,
        x: NDArray[np.floating[Any]],
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        """Route ``T`` tokens.

        Args:
            x: hidden states ``[T, d]``.
            token_ids: ``[T]`` vocabulary ids (hash routers).
            src_rank: ``[T]`` source rank of each token (capacity groups, locality loss).
            seq_ids: ``[T]`` sequence of each token (DeepSeek's sequence-wise loss).
            domain_ids: ``[T]`` data domain of each token (RRE).
        """
        x = self._check_x(x)
        return self.assign(
            self.scores(x), token_ids=token_ids, src_rank=src_rank, seq_ids=seq_ids, domain_ids=domain_ids
        )

    def counts(self, x: NDArray[np.floating[Any]], **kwargs: Any) -> tuple[IntArray, IntArray]:
        """``(counts, drops)`` of ``route(x, **kwargs)`` (``[n]`` each), for callers that need
        only the load (the simulator's all-to-all matrices); routers may skip gates and losses."""
        res = self.route(x, **kwargs)
        return res.counts, res.drops

    def scores(self, x: FloatArray) -> FloatArray:
        raise NotImplementedError

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        raise NotImplementedError

    def params(self) -> dict[str, FloatArray]:
        """The numeric parameters (weights, biases) by name; torch wrappers mirror these."""
        return {}

    # -- helpers ------------------------------------------------------------------------------
    def _check_x(self, x: NDArray[np.floating[Any]]) -> FloatArray:
        a = np.asarray(x, dtype=np.float64)
        self._check_shape(a)
        return a

    def _check_shape(self, a: NDArray[Any]) -> None:
        if a.ndim != 2 or a.shape[1] != self.hidden:
            raise SpecError(f"{self.name}: hidden states must have shape [T, {self.hidden}], got {a.shape}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_experts={self.n_experts}, hidden={self.hidden}, top_k={self.top_k})"


ROUTERS: dict[str, type[Router]] = {}


def register_router(name: str) -> Callable[[type[Router]], type[Router]]:
    """Class decorator: make a router available to :func:`make_router` under ``name``."""

    def deco(cls: type[Router]) -> type[Router]:
        cls.name = name
        ROUTERS[name] = cls
        return cls

    return deco


def router_names() -> list[str]:
    """Registered router names, sorted."""
    return sorted(ROUTERS)


def router_param_names(name: str) -> list[str]:
    """Keyword parameters a router accepts beyond ``n_experts``, ``hidden`` and ``seed``."""
    cls = _router_class(name)
    sig = inspect.signature(cls.__init__)
    return [p for p in sig.parameters if p not in ("self", "n_experts", "hidden", "seed")]


def _router_class(name: str) -> type[Router]:
    try:
        return ROUTERS[name]
    except KeyError:
        raise SpecError(f"unknown router {name!r}; allowed: {', '.join(router_names())}", field="router") from None


def make_router(
    name: str, *, n_experts: int, hidden: int, seed: int | np.random.Generator = 0, **params: Any
) -> Router:
    """Build the router registered as ``name``; unknown names or parameters raise SpecError."""
    cls = _router_class(name)
    allowed = router_param_names(name)
    for key in params:
        if key not in allowed:
            raise SpecError(
                f"router {name!r} has no parameter {key!r}; allowed: {', '.join(allowed)}",
                field=f"router.{key}",
            )
    return cls(n_experts, hidden, seed=seed, **params)


# --------------------------------------------------------------------------------------------
# hash routers
# --------------------------------------------------------------------------------------------


@register_router("hash")
class HashRouter(Router):
    """Hash layer: ``expert = table[token_id]``; gate 1; load follows token frequency.

    Args:
        vocab_size: size of the vocabulary (table length).
        token_freq: optional ``[vocab_size]`` token frequencies; when given the table is
            *balanced*: tokens by decreasing frequency each go to the currently lightest
            expert (ties: lowest expert index).  Otherwise a fixed uniform random table.
        capacity_factor: optional per-expert capacity ``ceil(T/n * cf)`` (default: none).
    """

    learned = False

    def __init__(
        self,
        n_experts: int,
        hidden: int,
        *,
        vocab_size: int = 256,
        token_freq: Sequence[float] | None = None,
        capacity_factor: float | None = None,
        seed: int | np.random.Generator = 0,
    ) -> None:
        super().__init__(n_experts, hidden, top_k=1, seed=seed)
        if vocab_size < 1:
            raise SpecError(f"vocab_size must be >= 1 (got {vocab_size})", field="router.vocab_size")
        self.vocab_size = int(vocab_size)
        self.capacity_factor = capacity_factor
        if token_freq is None:
            self.table = self.rng.integers(0, n_experts, size=vocab_size).astype(np.int64)
        else:
            freq = np.asarray(token_freq, dtype=np.float64)
            if freq.shape != (vocab_size,):
                raise SpecError("token_freq must have one entry per token id", field="router.token_freq")
            self.table = np.empty(vocab_size, dtype=np.int64)
            load = np.zeros(n_experts)
            for tok in np.argsort(-freq, kind="stable"):
                e = int(np.argmin(load))
                self.table[tok] = e
                load[e] += freq[tok]

    def _expert_of(self, token_ids: NDArray[np.integer[Any]] | None, t: int, **_: Any) -> IntArray:
        if token_ids is None:
            raise SpecError(f"router {self.name!r} needs token ids")
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.shape != (t,):
            raise SpecError(f"token_ids must have shape ({t},), got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise SpecError(f"token ids must be in [0, {self.vocab_size}) (vocab_size)", field="token_ids")
        return np.asarray(self.table[ids], dtype=np.int64)

    def route(
        self,
        x: NDArray[np.floating[Any]],
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        x = np.asarray(x)
        if x.ndim != 2:
            raise SpecError(f"{self.name}: hidden states must be [T, d], got shape {x.shape}")
        return self.assign(np.zeros((x.shape[0], 0)), token_ids=token_ids, src_rank=src_rank, domain_ids=domain_ids)

    def scores(self, x: FloatArray) -> FloatArray:
        return np.zeros((x.shape[0], 0))

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        t = scores.shape[0]
        requested = self._expert_of(token_ids, t, domain_ids=domain_ids)[:, None]
        experts = requested.copy()
        if self.capacity_factor is not None:
            group, sizes = _groups(src_rank, t)
            cap = _ceil(sizes / self.n_experts * self.capacity_factor)
            keep = keep_within_capacity(requested, self.n_experts, group, cap)
            experts = np.where(keep, requested, -1)
        gates = (experts >= 0).astype(np.float64)
        return RoutingResult(experts, gates, requested, self.n_experts, {})


@register_router("rre")
class RRERouter(HashRouter):
    """PanGu-Sigma random routed experts: domain -> expert group -> hashed expert in the group.

    The ``n`` experts form ``domains`` contiguous groups of ``n / domains``; a token of domain
    ``g`` goes to expert ``g * n/domains + table[token_id]`` where ``table`` is a fixed random
    map of token ids to ``[0, n/domains)``.  ``domain_ids`` default to 0.
    """

    def __init__(
        self,
        n_experts: int,
        hidden: int,
        *,
        domains: int = 1,
        vocab_size: int = 256,
        capacity_factor: float | None = None,
        seed: int | np.random.Generator = 0,
    ) -> None:
        if domains < 1 or n_experts % domains:
            raise SpecError(
                f"rre: domains must divide experts (domains={domains}, experts={n_experts})",
                field="router.domains",
            )
        super().__init__(n_experts, hidden, vocab_size=vocab_size, capacity_factor=capacity_factor, seed=seed)
        self.domains = int(domains)
        self.group_size = n_experts // domains
        self.table = self.rng.integers(0, self.group_size, size=vocab_size).astype(np.int64)

    def _expert_of(self, token_ids: NDArray[np.integer[Any]] | None, t: int, **kw: Any) -> IntArray:
        inner = super()._expert_of(token_ids, t)
        dom = kw.get("domain_ids")
        d = np.zeros(t, dtype=np.int64) if dom is None else np.asarray(dom, dtype=np.int64)
        if d.shape != (t,) or (d.size and (d.min() < 0 or d.max() >= self.domains)):
            raise SpecError(f"domain_ids must be {t} ints in [0, {self.domains})", field="domain_ids")
        return np.asarray(d * self.group_size + inner, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# softmax token-choice routers
# --------------------------------------------------------------------------------------------


class _LinearRouter(Router):
    """A router with a gating matrix ``W [d, n]`` (drawn N(0, 1/d)); logits = ``x @ W``."""

    def __init__(self, n_experts: int, hidden: int, *, top_k: int, seed: int | np.random.Generator = 0):
        super().__init__(n_experts, hidden, top_k=top_k, seed=seed)
        self.weight = self.rng.normal(0.0, hidden**-0.5, size=(hidden, n_experts))

    def params(self) -> dict[str, FloatArray]:
        return {"weight": self.weight}

    def scores(self, x: FloatArray) -> FloatArray:
        return softmax(x @ self.weight)


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

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        t, n = scores.shape
        requested = np.argmax(scores, axis=-1).astype(np.int64)[:, None]
        group, sizes = _groups(src_rank, t)
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

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        t, n = scores.shape
        top = _top_k(scores, 2)
        g = np.take_along_axis(scores, top, axis=-1)
        g = g / np.maximum(g.sum(axis=-1, keepdims=True), 1e-300)
        use2 = self.rng.random(t) < np.minimum(1.0, 2.0 * g[:, 1])
        requested = top.copy()
        requested[~use2, 1] = -1
        group, sizes = _groups(src_rank, t)
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
        self,
        n_experts: int,
        hidden: int,
        *,
        top_k: int = 2,
        alpha: float = 0.001,
        seed: int | np.random.Generator = 0,
    ) -> None:
        super().__init__(n_experts, hidden, top_k=top_k, seed=seed)
        self.alpha = float(alpha)

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        t, n = scores.shape
        top = _top_k(scores, self.top_k)
        g = np.take_along_axis(scores, top, axis=-1)
        g = g / np.maximum(g.sum(axis=-1, keepdims=True), 1e-300)
        c = np.bincount(top.reshape(-1), minlength=n) / max(t, 1)
        aux = switch_aux_loss(c, scores.mean(axis=0) if t else np.zeros(n), self.alpha)
        return RoutingResult(top, g, top.copy(), n, {"aux": aux}, scores)


# --------------------------------------------------------------------------------------------
# DeepSeek-V3
# --------------------------------------------------------------------------------------------


@register_router("deepseek")
class DeepSeekRouter(_LinearRouter):
    """DeepSeek-V3 routing (auxiliary-loss-free balancing + node-limited routing).

    ``s = sigmoid(x W)``, the logits ``x W`` in float32 (as DeepSeek-V3's gate computes them).
    Selection uses ``s + b``: the experts form ``n_groups`` contiguous groups; a group's score is
    the sum of its two largest biased scores; only the ``topk_groups`` (M) best groups stay
    eligible and the ``top_k`` experts are chosen among them.  When the groups are the nodes
    (contiguous placement, ``n_groups`` = nodes), a token reaches at most M nodes.  Gates:
    ``route_scale * s_e / sum_selected s``.  :meth:`update_bias` applies ``b_i -= gamma`` to
    overloaded and ``+= gamma`` to underloaded experts.  Sequence-wise balance loss (per sequence
    of length L): ``alpha * sum_i f_i P_i`` with ``f_i = n/(k L) * #{t: i selected}`` and ``P_i``
    the mean of ``s_i / sum_j s_j``, averaged over sequences.  No tokens are dropped.
    """

    def __init__(
        self,
        n_experts: int,
        hidden: int,
        *,
        top_k: int = 8,
        n_groups: int = 8,
        topk_groups: int = 4,
        route_scale: float = 2.5,
        gamma: float = 0.001,
        alpha: float = 1e-4,
        seed: int | np.random.Generator = 0,
    ) -> None:
        if n_groups < 1 or n_experts % n_groups:
            raise SpecError(
                f"deepseek: n_groups must divide experts (n_groups={n_groups}, experts={n_experts})",
                field="router.n_groups",
            )
        if not 1 <= topk_groups <= n_groups:
            raise SpecError(f"deepseek: topk_groups must be in [1, {n_groups}]", field="router.topk_groups")
        if top_k > topk_groups * (n_experts // n_groups):
            raise SpecError(
                f"deepseek: top_k={top_k} exceeds the experts in {topk_groups} groups "
                f"({topk_groups * (n_experts // n_groups)})",
                field="router.top_k",
            )
        super().__init__(n_experts, hidden, top_k=top_k, seed=seed)
        self.n_groups = int(n_groups)
        self.topk_groups = int(topk_groups)
        self.route_scale = float(route_scale)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.bias = np.zeros(n_experts)

    def params(self) -> dict[str, FloatArray]:
        return {"weight": self.weight, "bias": self.bias}

    def logits_t(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """The router logits transposed, ``(x W)^T`` (``[n, T]``), in float32 as DeepSeek-V3's
        gate computes them; one BLAS call on the transposed operands (no copies) that leaves the
        tokens contiguous, the layout :func:`netsim.moe._select_kernel.counts` works in."""
        a = np.asarray(x, dtype=np.float32)
        self._check_shape(a)
        w = np.asarray(self.weight, dtype=np.float32)
        return np.asarray(w.T @ a.T, dtype=np.float32)

    def scores(self, x: FloatArray) -> FloatArray:
        """``sigmoid(x W)`` (``[T, n]``, float64 from the float32 logits of :meth:`logits_t`)."""
        return _sigmoid(self.logits_t(x).T)

    #: use the compiled kernels (:mod:`netsim.moe._select_kernel`) when numba is installed
    USE_COMPILED = True

    def counts(self, x: NDArray[np.floating[Any]], **_: Any) -> tuple[IntArray, IntArray]:
        """Selection only (no gates, no balance loss; token ids, ranks and sequences do not
        change it); DeepSeek-V3 drops no tokens.

        The compiled path selects on the logits when the bias is zero: the sigmoid is increasing,
        so the ``top_k`` largest scores are the ``top_k`` largest logits, and only the group
        scores (sums of two sigmoids) need the sigmoid.  With a bias it selects on ``s + b``.
        Tokens with a (near-)tie at a boundary are routed by :meth:`select` on their scores, so
        the counts equal those of :meth:`route`.
        """
        n = self.n_experts
        zt = self.logits_t(x)
        none = np.zeros(n, dtype=np.int64)
        if not (self.USE_COMPILED and _select_kernel.HAVE_NUMBA):
            top = self.select(_sigmoid(zt.T))
            return np.bincount(top.reshape(-1), minlength=n).astype(np.int64), none
        biased = bool(np.any(self.bias))
        vals = _sigmoid(zt) + np.asarray(self.bias, dtype=np.float64)[:, None] if biased else zt
        counts, flagged = _select_kernel.counts(vals, self.n_groups, self.topk_groups, self.top_k, sigmoid=not biased)
        if flagged.any():
            rest = _sigmoid(np.ascontiguousarray(zt[:, flagged].T))
            counts = counts + np.bincount(self.select(rest).reshape(-1), minlength=n)
        return np.asarray(counts, dtype=np.int64), none

    def select(self, scores: FloatArray) -> IntArray:
        """The ``[T, top_k]`` selected experts (node-limited, bias-adjusted)."""
        t, n = scores.shape
        if self.USE_COMPILED and _select_kernel.HAVE_NUMBA and t:
            return np.asarray(_select_kernel.select(np.ascontiguousarray(scores, dtype=np.float64),
                                                    np.asarray(self.bias, dtype=np.float64), self.n_groups,
                                                    self.topk_groups, self.top_k))
        biased = scores + self.bias
        gs = n // self.n_groups
        grouped = biased.reshape(t, self.n_groups, gs)
        top2 = -np.sort(-grouped, axis=-1)[..., : min(2, gs)]
        group_score = top2.sum(axis=-1)
        keep_groups = _top_k(group_score, self.topk_groups)
        mask = np.zeros((t, self.n_groups), dtype=bool)
        np.put_along_axis(mask, keep_groups, True, axis=-1)
        masked = np.where(np.repeat(mask, gs, axis=-1), biased, -np.inf)
        return _top_k(masked, self.top_k)

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        n = scores.shape[1]
        top = self.select(scores)
        s = np.take_along_axis(scores, top, axis=-1)
        gates = self.route_scale * s / np.maximum(s.sum(axis=-1, keepdims=True), 1e-300)
        loss = self.seq_balance_loss(scores, top, seq_ids)
        return RoutingResult(top, gates, top.copy(), n, {"seq_balance": loss}, scores)

    def seq_balance_loss(self, scores: FloatArray, top: IntArray, seq_ids: NDArray[np.integer[Any]] | None) -> float:
        t, n = scores.shape
        if t == 0:
            return 0.0
        seq = np.zeros(t, dtype=np.int64) if seq_ids is None else np.asarray(seq_ids, dtype=np.int64)
        _, inv = np.unique(seq, return_inverse=True)
        inv = inv.reshape(t)
        n_seq = int(inv.max()) + 1
        length = np.bincount(inv, minlength=n_seq).astype(np.float64)
        sel = np.bincount(np.repeat(inv, self.top_k) * n + top.reshape(-1), minlength=n_seq * n)
        f = sel.reshape(n_seq, n) * n / (self.top_k * length[:, None])
        norm = scores / np.maximum(scores.sum(axis=-1, keepdims=True), 1e-300)
        member = sparse.csr_matrix((np.ones(t), (inv, np.arange(t))), shape=(n_seq, t))
        p = np.asarray(member @ norm) / length[:, None]
        return float(self.alpha * np.mean(np.sum(f * p, axis=-1)))

    def update_bias(self, counts: NDArray[np.integer[Any]] | NDArray[np.floating[Any]]) -> None:
        """Auxiliary-loss-free balancing step: ``b_i += gamma * sign(mean load - load_i)``."""
        c = np.asarray(counts, dtype=np.float64)
        if c.shape != (self.n_experts,):
            raise SpecError(f"counts must have shape ({self.n_experts},), got {c.shape}")
        self.bias = self.bias + self.gamma * np.sign(c.mean() - c)


# --------------------------------------------------------------------------------------------
# expert choice
# --------------------------------------------------------------------------------------------


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
        self,
        n_experts: int,
        hidden: int,
        *,
        capacity_factor: float = 2.0,
        seed: int | np.random.Generator = 0,
    ) -> None:
        nominal = min(n_experts, max(1, round(capacity_factor))) if capacity_factor > 0 else 1
        super().__init__(n_experts, hidden, top_k=nominal, seed=seed)
        if capacity_factor <= 0:
            raise SpecError(f"capacity_factor must be > 0 (got {capacity_factor})", field="router.capacity_factor")
        self.capacity_factor = float(capacity_factor)

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        t, n = scores.shape
        group, sizes = _groups(src_rank, t)
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


# --------------------------------------------------------------------------------------------
# LocMoE
# --------------------------------------------------------------------------------------------


@register_router("locmoe")
class LocMoERouter(Router):
    """LocMoE: GrAP gating ``G = ReLU(W_grap x + eps)``, ``p = softmax(G)``, top-1.

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
            raise SpecError(f"locmoe: capacity must be factor or theorem1 (got {capacity!r})",
                            field="router.capacity")
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

    def scores(self, x: FloatArray) -> FloatArray:
        return softmax(np.maximum(x @ self.grap.T + self.gate_bias, 0.0))

    def target(self, n_ranks: int) -> FloatArray:
        """``[n_ranks, n]``: the smoothed localised distribution ``D_l`` of every rank."""
        if self.local_experts is None:
            raise SpecError("locmoe: the locality loss needs local_experts (rank -> node-local experts)")
        if n_ranks > len(self.local_experts):
            raise SpecError(f"locmoe: local_experts covers {len(self.local_experts)} ranks, batch has {n_ranks}")
        return np.stack([localised_distribution(le, self.n_experts, self.eps) for le in self.local_experts[:n_ranks]])

    def assign(
        self,
        scores: FloatArray,
        *,
        token_ids: NDArray[np.integer[Any]] | None = None,
        src_rank: NDArray[np.integer[Any]] | None = None,
        seq_ids: NDArray[np.integer[Any]] | None = None,
        domain_ids: NDArray[np.integer[Any]] | None = None,
    ) -> RoutingResult:
        t, n = scores.shape
        requested = np.argmax(scores, axis=-1).astype(np.int64)[:, None]
        group, sizes = _groups(src_rank, t)
        keep = keep_within_capacity(requested, n, group, self.capacity(sizes))
        experts = np.where(keep, requested, -1)
        gates = np.where(keep, np.take_along_axis(scores, requested, axis=-1), 0.0)
        losses = {"aux": grouped_switch_aux(requested, scores, group, self.alpha)}
        if src_rank is not None and self.local_experts is not None and t:
            src = np.asarray(src_rank, dtype=np.int64)
            present = np.unique(src)
            d_l = self.target(int(present.max()) + 1)[present]
            d_c = np.stack([scores[src == r].mean(axis=0) for r in present])
            losses["loc"] = float(self.mu * np.mean(kl_divergence(d_c, d_l)))
        return RoutingResult(experts, gates, requested, n, losses, scores)
