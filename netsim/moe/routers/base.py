"""The router interface: a batch of tokens in (:class:`TokenBatch`), a routing out
(:class:`RoutingResult`), the :class:`Router` base class and the router registry.

A *router* maps ``T`` tokens to up to ``k`` of ``n`` experts in two steps: :meth:`Router.scores`
turns hidden states ``[T, d]`` into per-expert probabilities or affinities ``[T, n]``, and
:meth:`Router.assign` makes the discrete choice (top-k, capacity limits, gates, auxiliary losses)
for one :class:`TokenBatch`: those scores plus the optional per-token arrays some routers need
(token ids for hash routers, the source rank that forms capacity groups, the sequence of DeepSeek-V3's
sequence-wise loss, the data domain of PanGu-Sigma's RRE).  The batch is validated once, where it
is made, so every router and the torch wrappers (:mod:`netsim.moe.torch_routers`) see the same
checked int64 arrays.

Learned gates compute their logits in float32, as real MoE routers do: Switch Transformer casts
the router input to float32 ("selective precision", Fedus et al., JMLR 2022, section 2.4) and
DeepSeek-V3's gate computes its logits in float32 (arXiv 2412.19437).  :meth:`Router._check_x`
hands the hidden states on as float32 (no copy when they already are), the gating weights stay
float64 parameters with a cached float32 copy (:meth:`Router._float32`), and the logits are one
float32 GEMM; softmax, sigmoid and top-k then run in float64 on the ``[T, n]`` logits.

Routers register under the name a spec uses (``@register_router("switch")``) in :data:`ROUTERS`, a
:class:`netsim.registry.Registry` listed alphabetically; :func:`make_router` builds one by name
and rejects unknown names or parameters with a one-line SpecError naming the allowed values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.moe._blas import one_blas_thread
from netsim.moe.routers.gating import FloatArray, HiddenArray, IntArray, _as_generator, softmax
from netsim.registry import Registry

__all__ = [
    "ROUTERS",
    "Router",
    "RoutingResult",
    "TokenBatch",
    "make_router",
    "register_router",
    "router_names",
    "router_param_names",
]

#: the optional per-token arrays of a :class:`TokenBatch`, in field order
SIDE_ARRAYS = ("token_ids", "src_rank", "seq_ids", "domain_ids")


@dataclass(frozen=True)
class TokenBatch:
    """One batch of ``T`` tokens as a router's :meth:`~Router.assign` sees it.

    Attributes:
        scores: ``[T, n]`` router probabilities / affinities (``[T, 0]`` for hash routers).
        token_ids: ``[T]`` vocabulary ids (hash routers).
        src_rank: ``[T]`` source rank of each token (capacity groups, LocMoE's locality loss).
        seq_ids: ``[T]`` sequence of each token (DeepSeek-V3's sequence-wise loss).
        domain_ids: ``[T]`` data domain of each token (RRE).

    The per-token arrays are optional; given ones are checked (shape ``(T,)``, integers) and
    stored as int64, so routers may rely on int64.  Errors are one-line SpecErrors naming the
    array.
    """

    scores: FloatArray
    token_ids: NDArray[np.integer[Any]] | None = None
    src_rank: NDArray[np.integer[Any]] | None = None
    seq_ids: NDArray[np.integer[Any]] | None = None
    domain_ids: NDArray[np.integer[Any]] | None = None

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores)
        if scores.ndim != 2:
            raise SpecError(f"router scores must be [tokens, experts], got shape {scores.shape}")
        object.__setattr__(self, "scores", scores)
        t = scores.shape[0]
        for name in SIDE_ARRAYS:
            value = getattr(self, name)
            if value is None:
                continue
            a = np.asarray(value)
            if a.shape != (t,):
                raise SpecError(f"{name} must have shape ({t},), got {a.shape}", field=name)
            if a.size and a.dtype.kind not in "iu":
                raise SpecError(f"{name} must be integers, got dtype {a.dtype}", field=name)
            object.__setattr__(self, name, a.astype(np.int64, copy=False))

    @property
    def num_tokens(self) -> int:
        return int(self.scores.shape[0])


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
        return (tokens.reshape(n_ranks, n).astype(np.int64), dropped.reshape(n_ranks, n).astype(np.int64))


class Router:
    """Base class: ``route(x, ...)`` = ``assign(TokenBatch(scores(x), ...))``.

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
        #: float32 copies of float64 parameters, by attribute name: (source array, copy)
        self._f32: dict[str, tuple[FloatArray, NDArray[np.float32]]] = {}

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
        return self.assign(TokenBatch(self.scores(x), token_ids, src_rank, seq_ids, domain_ids))

    def counts(self, x: NDArray[np.floating[Any]], **kwargs: Any) -> tuple[IntArray, IntArray]:
        """``(counts, drops)`` of ``route(x, **kwargs)`` (``[n]`` each), for callers that need
        only the load (the simulator's all-to-all matrices); routers may skip gates and losses."""
        res = self.route(x, **kwargs)
        return res.counts, res.drops

    def selected(self, x: NDArray[np.floating[Any]], **kwargs: Any) -> tuple[IntArray, IntArray, IntArray]:
        """``(counts, drops, experts)`` of ``route(x, **kwargs)``: the load and the ``[T, k]`` kept
        experts of every token (``-1``: none), for callers that need the token sets (the
        de-duplicating dispatchers) but not the gates or losses; routers may skip those."""
        res = self.route(x, **kwargs)
        return res.counts, res.drops, res.experts

    def scores(self, x: HiddenArray) -> FloatArray:
        """``[T, n]`` float64 probabilities or affinities of hidden states ``x [T, d]``."""
        raise NotImplementedError

    def assign(self, batch: TokenBatch) -> RoutingResult:
        """The discrete choice for ``batch.scores`` (top-k, capacity, gates, losses)."""
        raise NotImplementedError

    def params(self) -> dict[str, FloatArray]:
        """The numeric parameters (weights, biases) by name; torch wrappers mirror these."""
        return {}

    # -- helpers ------------------------------------------------------------------------------
    def _check_x(self, x: NDArray[np.floating[Any]]) -> HiddenArray:
        """The hidden states as float32 ``[T, d]``, the precision the gates compute in (module
        docstring); float32 input is passed through without a copy."""
        a = np.asarray(x, dtype=np.float32)
        self._check_shape(a)
        return a

    def _float32(self, name: str) -> NDArray[np.float32]:
        """The float32 copy of the float64 parameter ``self.<name>``, made once per array.

        The copy follows the array object: assigning a new array (as
        :meth:`netsim.moe.torch_routers.TorchRouter.sync_to_numpy` does) makes a new copy.  The
        source array is made read-only, so an in-place edit that the copy would miss raises
        instead.
        """
        src = getattr(self, name)
        hit = self._f32.get(name)
        if hit is None or hit[0] is not src:
            src.flags.writeable = False
            hit = (src, np.ascontiguousarray(src, dtype=np.float32))
            self._f32[name] = hit
        return hit[1]

    def _check_shape(self, a: NDArray[Any]) -> None:
        if a.ndim != 2 or a.shape[1] != self.hidden:
            raise SpecError(f"{self.name}: hidden states must have shape [T, {self.hidden}], got {a.shape}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_experts={self.n_experts}, hidden={self.hidden}, top_k={self.top_k})"


class _LinearRouter(Router):
    """A router with a gating matrix ``W [d, n]`` (drawn N(0, 1/d)); logits = ``x @ W``.

    The logits are a float32 GEMM of the float32 hidden states and the cached float32 copy of
    ``W`` (Switch Transformer's selective precision, Fedus et al., JMLR 2022, section 2.4: the
    router input is cast to float32); the softmax runs in float64 on them.
    """

    def __init__(self, n_experts: int, hidden: int, *, top_k: int, seed: int | np.random.Generator = 0):
        super().__init__(n_experts, hidden, top_k=top_k, seed=seed)
        self.weight = self.rng.normal(0.0, hidden**-0.5, size=(hidden, n_experts))

    def params(self) -> dict[str, FloatArray]:
        return {"weight": self.weight}

    def logits(self, x: HiddenArray) -> NDArray[np.float32]:
        """``x @ W`` (``[T, n]``) as one float32 GEMM; ``x`` is converted only if not float32."""
        with one_blas_thread():
            return np.asarray(x, dtype=np.float32) @ self._float32("weight")

    def scores(self, x: HiddenArray) -> FloatArray:
        return softmax(self.logits(x).astype(np.float64))


ROUTERS: Registry[type[Router]] = Registry("router", field="router", sort_names=True)


def register_router(name: str) -> Callable[[type[Router]], type[Router]]:
    """Class decorator: make a router available to :func:`make_router` under ``name``."""

    def deco(cls: type[Router]) -> type[Router]:
        cls.name = name
        ROUTERS.add(name, cls)
        return cls

    return deco


def router_names() -> list[str]:
    """Registered router names, sorted."""
    return ROUTERS.names()


def router_param_names(name: str) -> list[str]:
    """Keyword parameters a router accepts beyond ``n_experts``, ``hidden`` and ``seed``."""
    cls = _router_class(name)
    sig = inspect.signature(cls.__init__)
    return [p for p in sig.parameters if p not in ("self", "n_experts", "hidden", "seed")]


def _router_class(name: str) -> type[Router]:
    return ROUTERS.get(name)


def make_router(
    name: str, *, n_experts: int, hidden: int, seed: int | np.random.Generator = 0, **params: Any
) -> Router:
    """Build the router registered as ``name``; unknown names or parameters raise SpecError."""
    cls = _router_class(name)
    allowed = router_param_names(name)
    for key in params:
        if key not in allowed:
            raise SpecError(
                f"router {name!r} has no parameter {key!r}; allowed: {', '.join(allowed)}", field=f"router.{key}"
            )
    return cls(n_experts, hidden, seed=seed, **params)
