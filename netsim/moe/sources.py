"""Routing sources: what the training-step replay asks for the routing of one (micro-batch, layer).

A replay of a training step needs, for every MoE layer and micro-batch, the token counts per
(source EP rank, logical expert).  Three kinds of source give them behind one interface
(:class:`RoutingSource`: ``counts(step, layer, microbatch) -> (tokens, dropped)``, two
``[ep, experts]`` int64 matrices):

* :class:`TraceSource` reads a routing trace (recorded by the router lab or converted from a
  measurement).  Steps, layers and micro-batches beyond those in the trace wrap around
  (modulo), and ``tokens_per_rank`` rescales each source rank's row to the replayed batch
  while keeping its distribution (largest-remainder rounding): by the ratio of the batch
  sizes when the trace records its ``tokens_per_rank``, else to ``tokens_per_rank * top_k``.
* :class:`StatisticalSource` draws counts from a statistical model
  (:mod:`netsim.moe.statistical`); the expert popularity of a layer is fixed by
  ``(seed, layer)`` and the sampling noise by ``(seed, layer, step, microbatch)``, so any
  (step, layer, micro-batch) can be asked for in any order with the same answer.
* :class:`RouterSource` runs a router's real gating math (untrained, seeded weights) on a
  synthetic token stream: token ids drawn from a Zipf law over a vocabulary, hidden states =
  a fixed random embedding of the token id plus noise, in a small feature space (``hidden``,
  default 64; rounded up to a multiple of the experts for LocMoE's GrAP).  Each source rank's
  tokens are routed as one batch (capacity groups are per rank).  The same token thus tends to reach
  the same expert, and hash routers inherit the token-frequency skew.  For trained routing use
  a lab trace.

:func:`routing_source` builds the right one from a name (router or statistical model), a
trace path or an object, and :func:`step_dispatch` turns one (step, layer, micro-batch) into
the :class:`~netsim.moe.traffic.DispatchPlan` (dispatch/combine byte matrices) the all-to-all
replays.

Dispatchers that send a token once per destination rank or node (:mod:`netsim.moe.dispatchers`)
need the experts of every token, not only the counts: :func:`route_batch` asks a source for
them (``routed(step, layer, microbatch, token_sets=True)``: routers and statistical models with
``top_k > 1`` give them, from the same draws as the counts; a trace has counts only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from netsim.errors import SpecError
from netsim.moe.dispatchers import DISPATCHERS
from netsim.moe.placement import Placement
from netsim.moe.routers import ROUTERS, Router, make_router
from netsim.moe.statistical import STAT_MODELS, StatModel, make_stat_model, sample_assignments, sample_counts
from netsim.moe.trace import RoutingTrace, read_routing_trace
from netsim.moe.traffic import DispatchPlan, dispatch_plan

IntArray = NDArray[np.int64]

__all__ = [
    "RouterSource",
    "RoutingSource",
    "StatisticalSource",
    "TraceSource",
    "rescale_rows",
    "route_batch",
    "routing_source",
    "step_dispatch",
]


@runtime_checkable
class RoutingSource(Protocol):
    """Gives the routing counts of any (step, layer, micro-batch)."""

    experts: int
    ep: int
    top_k: int

    def counts(self, step: int, layer: int, microbatch: int = 0) -> tuple[IntArray, IntArray]:
        """``(tokens, dropped)``: ``[ep, experts]`` kept and dropped (token, slot) assignments."""
        ...


#: ``(tokens, dropped, experts)``: ``[ep, experts]`` kept and dropped (token, slot) counts, and the
#: experts of every kept (token, slot) ``[ep, T, k]`` (``-1``: none) when asked for and known
Routed = tuple[IntArray, IntArray, "IntArray | None"]


def route_batch(
    source: RoutingSource, step: int, layer: int, microbatch: int = 0, *, token_sets: bool = False
) -> Routed:
    """The routing of one (step, layer, micro-batch), with the token sets when ``token_sets``
    and the source knows them (``source.routed``); else the counts alone."""
    routed = getattr(source, "routed", None)
    if routed is not None:
        out: Routed = routed(step, layer, microbatch, token_sets=token_sets)
        return out
    tok, drp = source.counts(step, layer, microbatch)
    return tok, drp, None


def rescale_rows(matrix: NDArray[np.integer[Any]], totals: NDArray[np.integer[Any]]) -> IntArray:
    """Scale each row of a non-negative integer matrix to sum to ``totals[row]``.

    Proportional, rounded by largest remainder (ties: lowest column), so the result is an
    integer matrix with exactly the requested row sums; an all-zero row stays zero.
    """
    m = np.asarray(matrix, dtype=np.float64)
    out = np.zeros(m.shape, dtype=np.int64)
    for r in range(m.shape[0]):
        s = m[r].sum()
        if s <= 0:
            continue
        exact = m[r] * (float(totals[r]) / s)
        base = np.floor(exact).astype(np.int64)
        left = int(totals[r]) - int(base.sum())
        if left > 0:
            base[np.argsort(-(exact - base), kind="stable")[:left]] += 1
        out[r] = base
    return out


class TraceSource:
    """Routing counts read from a :class:`~netsim.moe.trace.RoutingTrace`."""

    def __init__(self, trace: RoutingTrace, *, tokens_per_rank: int | None = None) -> None:
        if not trace.batch_keys():
            raise SpecError("routing trace is empty", field=trace.source)
        self.trace = trace
        self.experts = trace.meta.experts
        self.ep = trace.meta.ep
        self.top_k = trace.meta.top_k
        self.tokens_per_rank = tokens_per_rank
        self._mbs: dict[tuple[int, int], list[int]] = {}
        for s, ly, mb in trace.batch_keys():
            self._mbs.setdefault((s, ly), []).append(mb)
        self._steps = trace.steps
        self._layers = trace.layers
        self._cache: dict[tuple[int, int, int], tuple[IntArray, IntArray]] = {}
        for s, ly, mb, tok, drp in trace.iter_counts():
            self._cache[(s, ly, mb)] = (tok, drp)

    def _targets(self, row_sums: IntArray) -> IntArray:
        """Assignments per source rank after rescaling to ``tokens_per_rank``."""
        assert self.tokens_per_rank is not None
        recorded = self.trace.meta.tokens_per_rank
        if recorded is None:  # unknown batch: top_k assignments per token
            return np.full(self.ep, self.tokens_per_rank * self.top_k, dtype=np.int64)
        return np.rint(row_sums * (self.tokens_per_rank / recorded)).astype(np.int64)

    def routed(self, step: int, layer: int, microbatch: int = 0, *, token_sets: bool = False) -> Routed:
        """The counts; a trace records no token sets (``None``)."""
        tok, drp = self.counts(step, layer, microbatch)
        return tok, drp, None

    def counts(self, step: int, layer: int, microbatch: int = 0) -> tuple[IntArray, IntArray]:
        s = self._steps[step % len(self._steps)]
        ly = self._layers[layer % len(self._layers)]
        mbs = self._mbs.get((s, ly), [])
        if not mbs:
            raise SpecError(f"routing trace has no rows for step {s}, layer {ly}", field=self.trace.source)
        tok, drp = self._cache[(s, ly, mbs[microbatch % len(mbs)])]
        if self.tokens_per_rank is None:
            return tok.copy(), drp.copy()
        both = np.concatenate([tok, drp], axis=1)
        scaled = rescale_rows(both, self._targets(both.sum(axis=1)))
        return scaled[:, : self.experts], scaled[:, self.experts :]


class StatisticalSource:
    """Routing counts drawn from a statistical model (seeded per (layer) and (step, layer, mb))."""

    def __init__(
        self,
        model: StatModel,
        *,
        experts: int,
        ep: int,
        tokens_per_rank: int,
        top_k: int = 1,
        seed: int = 0,
        placement: Placement | None = None,
        rank_node: NDArray[np.integer[Any]] | None = None,
        capacity_factor: float | None = None,
    ) -> None:
        if model.needs_placement and (placement is None or rank_node is None):
            raise SpecError(f"routing model {model.name!r} needs a placement and the rank -> node map")
        self.model = model
        self.experts, self.ep, self.top_k = int(experts), int(ep), int(top_k)
        self.tokens_per_rank = int(tokens_per_rank)
        self.seed = int(seed)
        self.placement = placement
        self.rank_node = None if rank_node is None else np.asarray(rank_node, dtype=np.int64)
        self.capacity_factor = capacity_factor
        self._probs: dict[int, NDArray[np.float64]] = {}

    def probabilities(self, layer: int) -> NDArray[np.float64]:
        if layer not in self._probs:
            rng = np.random.default_rng([self.seed, 1, layer])
            self._probs[layer] = self.model.probabilities(
                self.ep, self.experts, rng, placement=self.placement, rank_node=self.rank_node
            )
        return self._probs[layer]

    def counts(self, step: int, layer: int, microbatch: int = 0) -> tuple[IntArray, IntArray]:
        tok, drp, _ = self.routed(step, layer, microbatch)
        return tok, drp

    def routed(self, step: int, layer: int, microbatch: int = 0, *, token_sets: bool = False) -> Routed:
        """Counts (and with ``token_sets`` the experts of every token, ``top_k > 1``)."""
        rng = np.random.default_rng([self.seed, 2, layer, step, microbatch])
        tok, experts = (
            sample_assignments(self.probabilities(layer), self.tokens_per_rank, self.top_k, rng)
            if token_sets
            else (sample_counts(self.probabilities(layer), self.tokens_per_rank, self.top_k, rng), None)
        )
        if self.capacity_factor is None:
            return tok, np.zeros_like(tok), experts
        # per-source capacity (GShard/Switch groups): each rank sends at most C per expert
        cap = int(np.ceil(self.capacity_factor * self.top_k * self.tokens_per_rank / self.experts - 1e-9))
        kept = np.minimum(tok, cap)
        if experts is not None:
            experts = _drop_beyond(experts, cap)
        return kept, tok - kept, experts


def _drop_beyond(experts: IntArray, cap: int) -> IntArray:
    """``experts [ep, T, k]`` with every (token, slot) past the first ``cap`` of its expert (in
    token order) of its source rank set to ``-1`` (the capacity drop of the counts)."""
    out = experts.copy()
    for r in range(out.shape[0]):
        flat = out[r].reshape(-1)
        idx = np.flatnonzero(flat >= 0)
        order = np.argsort(flat[idx], kind="stable")
        se = flat[idx][order]
        nth = np.arange(se.size) - np.searchsorted(se, se, side="left")
        flat[idx[order][nth >= cap]] = -1
    return out


def alias_table(p: NDArray[np.float64]) -> tuple[NDArray[np.float64], IntArray]:
    """Walker's alias table of a discrete distribution ``p`` (Vose's construction).

    Column ``j`` keeps ``j`` with probability ``prob[j]`` and gives ``alias[j]`` otherwise;
    picking a column uniformly then samples ``p`` exactly with one uniform per draw and no
    search (see :func:`alias_sample`).
    """
    n = len(p)
    prob = np.asarray(p, dtype=np.float64) * (n / float(np.sum(p)))
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if prob[i] < 1.0]
    large = [i for i in range(n) if prob[i] >= 1.0]
    while small and large:
        s, big = small.pop(), large.pop()
        alias[s] = big
        prob[big] -= 1.0 - prob[s]
        (small if prob[big] < 1.0 else large).append(big)
    prob[small + large] = 1.0  # what rounding leaves over keeps its own column
    return prob, alias


def alias_sample(table: tuple[NDArray[np.float64], IntArray], rng: np.random.Generator, size: int) -> IntArray:
    """``size`` draws from the distribution of an :func:`alias_table`: ``u * n`` picks the column
    (integer part) and decides between it and its alias (fractional part)."""
    prob, alias = table
    u = rng.random(size) * len(prob)
    col = np.minimum(u.astype(np.int64), len(prob) - 1)
    return np.where(u - col < prob[col], col, alias[col])


def standard_normal_f32(rng: np.random.Generator, n: int, scale: float = 1.0) -> NDArray[np.float32]:
    """``n`` independent normal float32 samples of mean 0 and deviation ``scale`` (Box-Muller).

    ``Generator.standard_normal`` runs its ziggurat one sample at a time (about 10 ns each, the
    largest cost of a synthetic token stream); here the raw 64-bit draws become pairs of
    24-bit uniforms ``u, v`` in ``[0, 1)`` and ``sqrt(-2 ln(1 - u)) * (cos, sin)(2 pi v)`` gives two
    normals, a few vectorised passes in all.  The tails end at ``sqrt(48 ln 2) = 5.77`` (the
    24-bit grid), which a sample of this size (probability ~8e-9 beyond) does not notice.
    Deterministic for a given generator state on one machine (numpy's SIMD ``log``/``sin``/``cos``
    may round differently on another CPU, as BLAS does).
    """
    m = (n + 1) // 2
    bits = rng.bit_generator.random_raw(m).view(np.uint32) >> np.uint32(8)  # 2m 24-bit integers
    u = bits.view(np.int32).astype(np.float32)
    u *= np.float32(2.0**-24)
    r = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - u[:m]))
    r *= np.float32(scale)
    theta = u[m:] * np.float32(2.0 * np.pi)
    out = np.empty(2 * m, dtype=np.float32)
    np.multiply(r, np.cos(theta), out=out[:m])
    np.multiply(r, np.sin(theta), out=out[m:])
    return out[:n]


class RouterSource:
    """A router's gating math on a synthetic Zipf token stream (one seeded router per layer).

    Per source rank: token ids from the Zipf law (:func:`alias_sample`), float32 hidden states =
    the layer's fixed random embedding of the id + ``noise`` x standard normal
    (:func:`standard_normal_f32`), routed as one batch.  The same ``(seed, step, layer,
    micro-batch)`` gives the same counts.  A router with a load-balancing bias (DeepSeek's
    auxiliary-loss-free balancing) starts from the bias its balancing settles at on
    :attr:`SETTLE_TOKENS` tokens of the layer's stream (``settle_bias``): the state of a long
    training run, not of step 0 (with a zero bias the synthetic stream's popular tokens give an
    expert-load CV of about 0.6 and a busiest expert at 4.4x the mean).
    """

    def __init__(
        self,
        router: str,
        *,
        experts: int,
        ep: int,
        tokens_per_rank: int,
        seed: int = 0,
        hidden: int = 64,
        vocab_size: int = 4096,
        zipf_s: float = 1.0,
        noise: float = 0.5,
        seq_len: int | None = None,
        params: Mapping[str, Any] | None = None,
        placement: Placement | None = None,
        rank_node: NDArray[np.integer[Any]] | None = None,
    ) -> None:
        ROUTERS.get(router)  # a one-line SpecError naming the allowed routers
        self.router_name = router
        self.experts, self.ep = int(experts), int(ep)
        self.tokens_per_rank = int(tokens_per_rank)
        self.seed = int(seed)
        # GrAP needs hidden divisible by the experts: round the synthetic feature size up
        self.hidden = int(hidden) if router != "locmoe" else int(experts) * -(-int(hidden) // int(experts))
        self.vocab_size = int(vocab_size)
        self.zipf_s = float(zipf_s)
        self.noise = float(noise)
        self.seq_len = int(seq_len) if seq_len else self.tokens_per_rank
        self.params = dict(params or {})
        if router in ("hash", "rre"):
            self.params.setdefault("vocab_size", self.vocab_size)
        if router == "locmoe" and "local_experts" not in self.params and placement is not None:
            node = np.zeros(self.ep, dtype=np.int64) if rank_node is None else np.asarray(rank_node)
            self.params["local_experts"] = placement.local_experts(node)
        self._routers: dict[int, tuple[Router, NDArray[np.float32]]] = {}
        w = 1.0 / np.arange(1, self.vocab_size + 1, dtype=np.float64) ** self.zipf_s
        self._token_p = w / w.sum()
        self._token_alias = alias_table(self._token_p)
        self.top_k = self._layer(0)[0].top_k

    def _layer(self, layer: int) -> tuple[Router, NDArray[np.float32]]:
        if layer not in self._routers:
            rng = np.random.default_rng([self.seed, 3, layer])
            emb = rng.normal(size=(self.vocab_size, self.hidden))
            r = make_router(self.router_name, n_experts=self.experts, hidden=self.hidden, seed=rng, **self.params)
            emb32 = emb.astype(np.float32)
            settle = getattr(r, "settle_bias", None)
            if settle is not None:  # a balancing bias (DeepSeek): where a long run's bias sits
                settle(self._stream(emb32, np.random.default_rng([self.seed, 5, layer]), self.SETTLE_TOKENS)[1])
            self._routers[layer] = (r, emb32)
        return self._routers[layer]

    #: synthetic tokens a balancing router's bias settles on (:meth:`_layer`)
    SETTLE_TOKENS = 8192

    def _stream(
        self, emb: NDArray[np.float32], rng: np.random.Generator, t: int
    ) -> tuple[IntArray, NDArray[np.float32]]:
        """``t`` token ids from the Zipf law and their hidden states (embedding + noise)."""
        ids = alias_sample(self._token_alias, rng, t)
        x = standard_normal_f32(rng, t * self.hidden, scale=self.noise).reshape(t, self.hidden)
        x += emb[ids]
        return ids, x

    def counts(self, step: int, layer: int, microbatch: int = 0) -> tuple[IntArray, IntArray]:
        tok, drp, _ = self.routed(step, layer, microbatch)
        return tok, drp

    def routed(self, step: int, layer: int, microbatch: int = 0, *, token_sets: bool = False) -> Routed:
        """Counts (and with ``token_sets`` the router's kept experts of every token)."""
        # Each rank's tokens are routed on their own: capacity groups are per source rank
        # anyway, and memory stays at one rank's [tokens, experts] scores.  The hidden states are
        # float32 (as a model's activations; half the memory traffic and a float32 GEMM where
        # the router computes in float32).
        router, emb = self._layer(layer)
        rng = np.random.default_rng([self.seed, 4, layer, step, microbatch])
        t = self.tokens_per_rank
        tokens = np.zeros((self.ep, self.experts), dtype=np.int64)
        dropped = np.zeros((self.ep, self.experts), dtype=np.int64)
        per_rank: list[IntArray] = []
        seq = np.arange(t) // self.seq_len
        for r in range(self.ep):
            ids, x = self._stream(emb, rng, t)
            src = np.full(t, r, dtype=np.int64)
            if token_sets:
                tokens[r], dropped[r], kept = router.selected(x, token_ids=ids, src_rank=src, seq_ids=seq)
                per_rank.append(kept)
            else:
                tokens[r], dropped[r] = router.counts(x, token_ids=ids, src_rank=src, seq_ids=seq)
        if not token_sets:
            return tokens, dropped, None
        k = max((e.shape[1] for e in per_rank), default=1)
        experts = np.full((self.ep, t, k), -1, dtype=np.int64)
        for r, e in enumerate(per_rank):
            experts[r, :, : e.shape[1]] = e
        return tokens, dropped, experts


def routing_source(
    spec: str | os.PathLike[str] | RoutingTrace | StatModel,
    *,
    experts: int,
    ep: int,
    tokens_per_rank: int,
    top_k: int = 1,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    placement: Placement | None = None,
    rank_node: NDArray[np.integer[Any]] | None = None,
    rescale_trace: bool = True,
) -> RoutingSource:
    """Build a routing source from a statistical-model name, a router name or a trace.

    Args:
        spec: ``"uniform"``/``"zipf"``/``"dirichlet"``/``"locality"`` (with ``params`` such
            as ``{"s": 1.2}``), a router name (``"switch"``, ... with router ``params``), a
            routing-trace path (``.parquet``) or a :class:`RoutingTrace` / :class:`StatModel`.
        experts, ep: logical experts and EP ranks of the replayed layer.
        tokens_per_rank: tokens per EP rank per micro-batch (before top-k).
        top_k: experts per token (statistical models; routers and traces carry their own).
        seed: the scenario seed.
        params: model / router parameters (statistical models also take ``capacity_factor``).
        placement, rank_node: needed by ``locality`` and ``locmoe``.
        rescale_trace: rescale trace rows to ``tokens_per_rank * top_k`` assignments per rank.
    """
    p = dict(params or {})
    if isinstance(spec, RoutingTrace):
        return _check_trace(TraceSource(spec, tokens_per_rank=tokens_per_rank if rescale_trace else None), experts, ep)
    if isinstance(spec, StatModel):
        cf = p.pop("capacity_factor", None)
        return StatisticalSource(
            spec,
            experts=experts,
            ep=ep,
            tokens_per_rank=tokens_per_rank,
            top_k=top_k,
            seed=seed,
            placement=placement,
            rank_node=rank_node,
            capacity_factor=cf,
        )
    name = os.fspath(spec)
    if name in STAT_MODELS:
        cf = p.pop("capacity_factor", None)
        return StatisticalSource(
            make_stat_model(name, **p),
            experts=experts,
            ep=ep,
            tokens_per_rank=tokens_per_rank,
            top_k=top_k,
            seed=seed,
            placement=placement,
            rank_node=rank_node,
            capacity_factor=cf,
        )
    if name in ROUTERS:
        return RouterSource(
            name,
            experts=experts,
            ep=ep,
            tokens_per_rank=tokens_per_rank,
            seed=seed,
            params=p,
            placement=placement,
            rank_node=rank_node,
        )
    if name.endswith(".parquet") or Path(name).exists():
        trace = read_routing_trace(name)
        return _check_trace(TraceSource(trace, tokens_per_rank=tokens_per_rank if rescale_trace else None), experts, ep)
    raise SpecError(
        f"unknown routing {name!r}; allowed: a routing-trace .parquet path, a statistical model "
        f"({', '.join(STAT_MODELS.names())}) or a router ({', '.join(ROUTERS.names())})",
        field="routing",
    )


def _check_trace(src: TraceSource, experts: int, ep: int) -> TraceSource:
    if src.experts != experts or src.ep != ep:
        raise SpecError(
            f"routing trace has {src.experts} experts on ep={src.ep}; the workload needs {experts} on ep={ep}",
            field=src.trace.source,
        )
    return src


def step_dispatch(
    source: RoutingSource,
    placement: Placement | Sequence[Placement],
    *,
    step: int,
    layer: int,
    microbatch: int = 0,
    hidden: int,
    bytes_per_element: float = 2.0,
    replica_policy: str = "even",
    ranks_per_node: int | None = None,
    rank_node: NDArray[np.integer[Any]] | None = None,
    dispatcher: str = "alltoall",
) -> tuple[DispatchPlan, IntArray, IntArray]:
    """The EP all-to-all of one (step, layer, micro-batch).

    ``placement`` is one placement for all layers or one per layer (EPLB).  ``dispatcher``
    names the token dispatcher (:mod:`netsim.moe.dispatchers`; the de-duplicating ones ask the
    source for the token sets).  Returns the :class:`DispatchPlan` (``dispatch_bytes``/
    ``combine_bytes`` ``[ep, ep]``) and the ``(tokens, dropped)`` counts it was built from.
    """
    pl = placement if isinstance(placement, Placement) else placement[layer % len(placement)]
    tokens, dropped, experts = route_batch(
        source, step, layer, microbatch, token_sets=DISPATCHERS.get(dispatcher).dedups
    )
    plan = dispatch_plan(
        tokens,
        pl,
        hidden=hidden,
        bytes_per_element=bytes_per_element,
        replica_policy=replica_policy,
        ranks_per_node=ranks_per_node,
        rank_node=rank_node,
        dispatcher=dispatcher,
        token_experts=experts,
        top_k=getattr(source, "top_k", None),
    )
    return plan, tokens, dropped
