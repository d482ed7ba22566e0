"""Statistical routing models: per (source rank, expert) token counts without any training.

For quick network studies one often does not need a real router, only a plausible shape of the
routing: how skewed the expert load is and how much of it stays on the node.  Each model here
gives every source rank ``r`` a distribution ``p_r`` over the ``n`` experts; every token of the
rank then draws ``top_k`` *distinct* experts from ``p_r`` (sampling without replacement,
implemented with the Gumbel-top-k trick; for ``top_k = 1`` a multinomial draw).  The result is
an ``[n_ranks, n]`` int64 matrix of (token, slot) counts, the same shape a routing trace gives.

Models (registry :data:`STAT_MODELS`, built with :func:`make_stat_model`):

* ``uniform``: ``p_r`` uniform (the assumption of most simulators, e.g. SimAI).
* ``zipf(s)``: ``p_i ~ 1 / rank_i^s`` over a seeded random permutation of the experts, the same
  for every source rank (a few hot experts; token frequencies in text are Zipf-like, and hash
  routers inherit them).
* ``dirichlet(alpha)``: ``p ~ Dirichlet(alpha * 1)``, shared by all ranks or drawn per rank;
  small alpha = strong skew, large alpha = near uniform.
* ``locality(fraction)``: a share ``fraction`` of each rank's tokens goes to experts on its own
  node (uniform among them), the rest uniformly to the other experts; ranks on a node with no
  expert route uniformly.  Needs the placement and the rank -> node map.  With ``top_k = 1``
  the expected local share is exactly ``fraction``.

All randomness comes from the :class:`numpy.random.Generator` passed in, so the same seed gives
the same counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.moe.placement import Placement
from netsim.registry import Registry

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = [
    "STAT_MODELS",
    "DirichletModel",
    "LocalityModel",
    "StatModel",
    "UniformModel",
    "ZipfModel",
    "make_stat_model",
    "sample_assignments",
    "sample_counts",
    "stat_model_names",
]


class StatModel:
    """Base class: :meth:`probabilities` gives ``[n_ranks, n]`` expert distributions."""

    name: ClassVar[str] = ""
    needs_placement: ClassVar[bool] = False

    def probabilities(
        self,
        n_ranks: int,
        n_experts: int,
        rng: np.random.Generator,
        *,
        placement: Placement | None = None,
        rank_node: IntArray | None = None,
    ) -> FloatArray:
        raise NotImplementedError

    def counts(
        self,
        tokens_per_rank: int | Sequence[int] | NDArray[np.integer[Any]],
        n_ranks: int,
        n_experts: int,
        rng: np.random.Generator,
        *,
        top_k: int = 1,
        placement: Placement | None = None,
        rank_node: IntArray | None = None,
    ) -> IntArray:
        """``[n_ranks, n]`` (token, slot) counts: every token picks ``top_k`` distinct experts."""
        p = self.probabilities(n_ranks, n_experts, rng, placement=placement, rank_node=rank_node)
        return sample_counts(p, tokens_per_rank, top_k, rng)


def sample_counts(
    p: NDArray[np.floating[Any]],
    tokens_per_rank: int | Sequence[int] | NDArray[np.integer[Any]],
    top_k: int,
    rng: np.random.Generator,
) -> IntArray:
    """Draw ``top_k`` distinct experts per token from each row of ``p`` and count them.

    Args:
        p: ``[n_ranks, n]`` distributions (rows need not be normalised).
        tokens_per_rank: tokens of every source rank (an int for all, or one per rank).
        top_k: experts per token (distinct).
        rng: the generator.
    """
    return _sample(p, tokens_per_rank, top_k, rng, keep_tokens=False)[0]


def sample_assignments(
    p: NDArray[np.floating[Any]], tokens_per_rank: int, top_k: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray | None]:
    """:func:`sample_counts` with the same draws, plus the experts of every token: ``[n_ranks,
    tokens_per_rank, top_k]`` (``None`` for ``top_k = 1``, drawn as one multinomial per rank)."""
    return _sample(p, tokens_per_rank, top_k, rng, keep_tokens=True)


def _sample(
    p: NDArray[np.floating[Any]],
    tokens_per_rank: int | Sequence[int] | NDArray[np.integer[Any]],
    top_k: int,
    rng: np.random.Generator,
    *,
    keep_tokens: bool,
) -> tuple[IntArray, IntArray | None]:
    prob = np.asarray(p, dtype=np.float64)
    n_ranks, n = prob.shape
    tok = np.broadcast_to(np.asarray(tokens_per_rank, dtype=np.int64), (n_ranks,))
    if (tok < 0).any():
        raise SpecError("tokens per rank must be >= 0", field="tokens_per_rank")
    if not 1 <= top_k <= n:
        raise SpecError(f"top_k must be in [1, experts={n}] (got {top_k})", field="top_k")
    out = np.zeros((n_ranks, n), dtype=np.int64)
    keep = keep_tokens and top_k > 1
    experts = np.full((n_ranks, int(tok.max(initial=0)), top_k), -1, dtype=np.int64) if keep else None
    chunk = max(1, (1 << 20) // n)
    for r in range(n_ranks):
        row = prob[r] / prob[r].sum()
        if top_k == 1:
            out[r] = rng.multinomial(int(tok[r]), row)
            continue
        if np.count_nonzero(row) < top_k:
            raise SpecError(f"rank {r}: fewer than top_k={top_k} experts have non-zero probability")
        with np.errstate(divide="ignore"):
            logp = np.log(row)
        left = int(tok[r])
        at = 0
        while left > 0:
            m = min(left, chunk)
            keys = logp - np.log(-np.log(rng.random((m, n))))
            top = np.argpartition(-keys, top_k - 1, axis=-1)[:, :top_k]
            out[r] += np.bincount(top.reshape(-1), minlength=n)
            if experts is not None:
                experts[r, at : at + m] = top
            at += m
            left -= m
    return out, experts


@dataclass(frozen=True)
class UniformModel(StatModel):
    """Every expert equally likely for every rank."""

    name: ClassVar[str] = "uniform"

    def probabilities(
        self,
        n_ranks: int,
        n_experts: int,
        rng: np.random.Generator,
        *,
        placement: Placement | None = None,
        rank_node: IntArray | None = None,
    ) -> FloatArray:
        return np.full((n_ranks, n_experts), 1.0 / n_experts)


@dataclass(frozen=True)
class ZipfModel(StatModel):
    """``p_i ~ 1 / rank_i^s``; ``permute`` shuffles which expert is hottest (seeded)."""

    name: ClassVar[str] = "zipf"
    s: float = 1.0
    permute: bool = True

    def __post_init__(self) -> None:
        if self.s < 0:
            raise SpecError(f"zipf: s must be >= 0 (got {self.s})", field="routing.s")

    def probabilities(
        self,
        n_ranks: int,
        n_experts: int,
        rng: np.random.Generator,
        *,
        placement: Placement | None = None,
        rank_node: IntArray | None = None,
    ) -> FloatArray:
        w = 1.0 / np.arange(1, n_experts + 1, dtype=np.float64) ** self.s
        if self.permute:
            w = w[rng.permutation(n_experts)]
        return np.tile(w / w.sum(), (n_ranks, 1))


@dataclass(frozen=True)
class DirichletModel(StatModel):
    """``p ~ Dirichlet(alpha, ..., alpha)``; one draw for all ranks, or one per rank."""

    name: ClassVar[str] = "dirichlet"
    alpha: float = 1.0
    per_rank: bool = False

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise SpecError(f"dirichlet: alpha must be > 0 (got {self.alpha})", field="routing.alpha")

    def probabilities(
        self,
        n_ranks: int,
        n_experts: int,
        rng: np.random.Generator,
        *,
        placement: Placement | None = None,
        rank_node: IntArray | None = None,
    ) -> FloatArray:
        a = np.full(n_experts, self.alpha)
        if self.per_rank:
            return np.asarray(rng.dirichlet(a, size=n_ranks), dtype=np.float64)
        return np.tile(rng.dirichlet(a), (n_ranks, 1))


@dataclass(frozen=True)
class LocalityModel(StatModel):
    """A share ``fraction`` of each rank's tokens to experts on its own node, the rest elsewhere."""

    name: ClassVar[str] = "locality"
    needs_placement: ClassVar[bool] = True
    fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise SpecError(f"locality: fraction must be in [0, 1] (got {self.fraction})", field="routing.fraction")

    def probabilities(
        self,
        n_ranks: int,
        n_experts: int,
        rng: np.random.Generator,
        *,
        placement: Placement | None = None,
        rank_node: IntArray | None = None,
    ) -> FloatArray:
        if placement is None or rank_node is None:
            raise SpecError("the locality model needs a placement and the rank -> node map")
        if placement.ep != n_ranks or placement.n_logical != n_experts:
            raise SpecError(
                f"locality: placement is for {placement.n_logical} experts on {placement.ep} ranks, "
                f"not {n_experts} on {n_ranks}"
            )
        p = np.empty((n_ranks, n_experts))
        for r, local in enumerate(placement.local_experts(rank_node)):
            is_local = np.zeros(n_experts, dtype=bool)
            is_local[local] = True
            n_loc = int(is_local.sum())
            if n_loc in (0, n_experts):
                p[r] = 1.0 / n_experts
                continue
            p[r] = np.where(is_local, self.fraction / n_loc, (1.0 - self.fraction) / (n_experts - n_loc))
        return p


STAT_MODELS: Registry[type[StatModel]] = Registry("routing model", field="routing", sort_names=True)
for _model in (UniformModel, ZipfModel, DirichletModel, LocalityModel):
    STAT_MODELS.add(_model.name, _model)


def stat_model_names() -> list[str]:
    """Registered statistical routing model names, sorted."""
    return STAT_MODELS.names()


def make_stat_model(name: str, **params: Any) -> StatModel:
    """Build a statistical model by name, e.g. ``make_stat_model("zipf", s=1.2)``."""
    cls = STAT_MODELS.get(name)
    try:
        return cls(**params)
    except TypeError:
        allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        bad = sorted(set(params) - set(allowed))
        raise SpecError(
            f"routing model {name!r} has no parameter(s) {bad}; allowed: {', '.join(allowed) or 'none'}",
            field="routing",
        ) from None
