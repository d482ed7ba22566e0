"""Hash routers: the expert is a fixed function of the token id, with no learned parameters.

Hash layers (Roller et al., "Hash Layers For Large Sparse Models", NeurIPS 2021) route a token
to ``table[token_id]``, a fixed random table or a frequency-balanced one; the load then follows
the token frequencies, never the hidden states, so it cannot collapse during training and cannot
adapt to it either.  PanGu-Sigma's random routed experts (Ren et al., arXiv 2303.10845) first pick
an expert group by the token's data domain and then hash the token id inside the group, so every
domain keeps its own experts.  Both take the gate 1 and may apply a Switch-style capacity per
source rank (:func:`netsim.moe.routers.gating.keep_within_capacity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.moe.routers.base import Router, RoutingResult, TokenBatch, register_router
from netsim.moe.routers.gating import FloatArray, HiddenArray, IntArray, _ceil, _groups, keep_within_capacity

__all__ = ["HashRouter", "RRERouter"]


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

    def _expert_of(self, batch: TokenBatch) -> IntArray:
        """The expert of every token (before capacity)."""
        ids = batch.token_ids
        if ids is None:
            raise SpecError(f"router {self.name!r} needs token ids")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise SpecError(f"token ids must be in [0, {self.vocab_size}) (vocab_size)", field="token_ids")
        return np.asarray(self.table[ids], dtype=np.int64)

    def _check_x(self, x: NDArray[np.floating[Any]]) -> HiddenArray:
        """Any ``[T, d]``: a hash router reads only the token count, not the hidden states."""
        a = np.asarray(x)
        if a.ndim != 2:
            raise SpecError(f"{self.name}: hidden states must be [T, d], got shape {a.shape}")
        return a

    def scores(self, x: HiddenArray) -> FloatArray:
        return np.zeros((x.shape[0], 0))

    def assign(self, batch: TokenBatch) -> RoutingResult:
        t = batch.num_tokens
        requested = self._expert_of(batch)[:, None]
        experts = requested.copy()
        if self.capacity_factor is not None:
            group, sizes = _groups(batch.src_rank, t)
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
                f"rre: domains must divide experts (domains={domains}, experts={n_experts})", field="router.domains"
            )
        super().__init__(n_experts, hidden, vocab_size=vocab_size, capacity_factor=capacity_factor, seed=seed)
        self.domains = int(domains)
        self.group_size = n_experts // domains
        self.table = self.rng.integers(0, self.group_size, size=vocab_size).astype(np.int64)

    def _expert_of(self, batch: TokenBatch) -> IntArray:
        inner = super()._expert_of(batch)
        t = batch.num_tokens
        d = np.zeros(t, dtype=np.int64) if batch.domain_ids is None else batch.domain_ids
        if d.size and (d.min() < 0 or d.max() >= self.domains):
            raise SpecError(f"domain_ids must be {t} ints in [0, {self.domains})", field="domain_ids")
        return np.asarray(d * self.group_size + inner, dtype=np.int64)
