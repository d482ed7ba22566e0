"""Token dispatchers: how many copies of a token the expert all-to-all sends, and where.

A token routed to ``k`` experts needs its hidden state on every rank that holds one of them.
What crosses the wires depends on the dispatch kernel (registry :data:`DISPATCHERS`, named by
the workload's ``model.moe.dispatcher``):

``alltoall`` (default)
    One copy per (token, expert): Megatron-Core's ``MoEAlltoAllTokenDispatcher`` permutes the
    tokens by expert before ``all_to_all_single``, so a token for two experts on one rank goes
    there twice (and the combine sends both outputs back).  ``all_to_all_single`` takes its
    split sizes as host lists, so before every forward dispatch the EP group first all-gathers
    every rank's token count per expert, one ``int64`` per expert, with NCCL
    (``MoEAlltoAllTokenDispatcher.preprocess``: ``gather_from_sequence_parallel_region`` of
    ``num_local_tokens_per_expert`` over ``tp_ep_group``, megatron/core/transformer/moe/
    token_dispatcher.py at NVIDIA/Megatron-LM d98e8a64dd); the backward reuses the splits.  Not
    with ``padding: capacity`` (Megatron's drop-and-pad path knows every split from the capacity).
    The host then waits for the counts (the dispatcher's device-to-host copy and
    ``cuda_sync_point``): see "Host synchronisation" (no published time, not modelled).
``dedup-rank``
    One copy per (token, destination rank): the destination expands it to its local experts
    (any dispatcher that permutes by rank; DeepEP's intranode kernels send the same copies, and
    ``deepep`` inside one server is these paths with DeepEP's time per call).
``deepep``
    DeepEP's internode kernels (github.com/deepseek-ai/DeepEP, DeepSeek-V3 report, arXiv
    2412.19437, section 3.2.2): a token crosses the network *once per destination node*, by RDMA
    to the GPU with the same local index on that node, which forwards it over NVLink to each
    other GPU of its node that needs it (once per rank); inside the source's own node it goes
    over NVLink once per destination rank.  With node-limited routing (at most ``M`` nodes per
    token, ``topk_groups``) a token crosses at most ``M`` times whatever its ``top_k``.  The
    combine runs the same paths backwards (the forwarding GPU sums its node's outputs).
``hybridep``
    NVIDIA's HybridEP (the ``hybrid-ep`` kernels of DeepEP, Megatron-Core's ``flex`` dispatcher
    with ``moe_flex_dispatcher_backend: hybridep``): the same paths as ``deepep`` (one RDMA copy
    per destination node, TMA copies over NVLink inside it), and before every dispatch without a
    cached handle (each forward, and its repetition under full recomputation) the EP group
    all-gathers every rank's routing map, one byte (``torch.bool``) per (token, expert), with
    NCCL (``torch.distributed.all_gather_into_tensor`` in ``HybridEpBuffer.dispatch``,
    deep_ep/hybrid_ep_buffer.py of deepseek-ai/DeepEP at 017a520224), for the metadata kernel that
    plans the transfers.  The backward's dispatch (the combine's gradient) reuses the handle.

Time per call
    The DeepEP and HybridEP kernels take longer than their bytes need at the links' achieved
    rates, by an amount that hardly depends on the bytes: launching, the ranks' handshake before
    the copies (DeepEP's ``notify_dispatch``; HybridEP's metadata preprocessing and flag updates),
    filling and draining the kernel's chunked RDMA-to-NVLink pipeline, and the slowest rank's
    start.  netsim charges it as a fixed latency per dispatch or combine call
    (:attr:`Dispatcher.call_latency_s`, overridable with ``model.moe.dispatch_latency_us``),
    before the transfers, on the all-to-all's stream.  It is the least-squares fit of
    ``published time = netsim's transfer time + latency`` over each library's published
    benchmark table, every row of which has 4,096 tokens of hidden 7,168 per rank (so the bytes
    vary through the ranks, the data type and the phase): DeepEP's normal kernels on H800 at
    EP 8, 16, 32 and 64, dispatch and combine (8 timings; ``docs/legacy.md`` of
    deepseek-ai/DeepEP), 0.25 ms, which takes the rms error of those timings from 15% to 7%;
    HybridEP's kernel-only timings on H100 at 16 SMs, EP 16, 32 and 64, FP8 and BF16 dispatch
    and combine (9 timings; ``docs/README_Hybrid-EP.md``), 0.32 ms, rms 18% to 7%.  The
    largest misses left are both libraries' 2-server (EP 16) combines, 15-16% slower than
    predicted, a cost of the 2-server case that a per-call constant does not model.  An
    independent check: Megatron-Bridge's Nsight profile of Qwen3-30B-A3B training on 16 H100s
    with HybridEP measures 0.655 ms per dispatch or combine kernel, against netsim's 0.37 ms
    transfer plus 0.32 ms (``validation/data/training/megatron-bridge-h100-ep-overlap.yaml``).
    ``netsim validate-deepep`` and ``validate-hybridep`` print the rows and the fit.

Host synchronisation
    A dropless dispatcher needs the received token counts on the host before it can size its
    buffers, so once per forward dispatch the host blocks until the GPU has produced them
    (Megatron-Core at NVIDIA/Megatron-LM d98e8a64dd, megatron/core/transformer/moe/
    token_dispatcher.py: ``alltoall``'s ``d2h_event.synchronize()``, HybridEP's "CPU sync" when
    dropless without ``moe_expert_rank_capacity_factor``, DeepEP's wait for the received counts;
    the backward reuses them).  The GPU then has nothing queued past that point until the host
    has run the dispatcher's Python and launched its next kernels: the GPU idles for that host
    time.  netsim emits it as a host op after the dispatch's metadata all-gather (or the router),
    and everything the rank issues after it waits for it (:meth:`netsim.workload.emit.OpEmitter.
    host_wait`), so under an overlapped schedule the other micro-batch's work issued after the
    wait waits too, as it does behind a blocked host.  The host time per call
    (:attr:`Dispatcher.host_sync_s`, overridable with ``model.moe.host_sync_us``) is known for
    one library from one measurement, *approx.*: HybridEP 0.616 ms, the GPU idle time of
    Megatron-Bridge's matched Nsight profile of Qwen3-30B-A3B training on 16 H100s (1.893 s of a
    24.714 s step) over its 3,072 forward dispatches per step, all of it charged to the waits.
    No source gives it for Megatron's ``alltoall`` or DeepEP: 0 there (not modelled) until one
    does; ``model.moe.host_sync_us`` sets it for a run.

Local permutations
    Around the all-to-alls each rank reorders tokens in its own memory, as Megatron-Core does
    (megatron/core/transformer/moe/token_dispatcher.py at NVIDIA/Megatron-LM cf39a4ddcf):
    ``alltoall`` permutes its tokens into (token, expert) rows before the dispatch, sorts the
    received rows by local expert when it holds several (``sort_chunks_by_idxs``), sorts them
    back before the combine and unpermutes after it (:attr:`Dispatcher.sorts_by_local_expert`);
    DeepEP's kernels send the tokens unpermuted and the receiver permutes them into expert rows
    and back (netsim times these as the sender's permute and unpermute, which move about the
    same bytes); HybridEP's kernels permute as they dispatch and combine ("in single step",
    ``_HybridEPManager``), so no permutation kernel runs (:attr:`Dispatcher.permutes`; its
    fitted time per call, "Time per call", covers them).  The kernels are timed in
    :class:`netsim.workload.moe_costs.MoEKernels` (``moe_pre``, ``experts``, ``moe_post``).

The ``copies [ep, ep]`` matrix a dispatcher gives is in the rank space of the all-to-all:
``copies[i][j]`` token copies rank ``i`` sends rank ``j`` (for ``deepep`` the forwarding legs are
entries of the forwarding GPU's row), so any all-to-all algorithm can replay it and the
accounting (on-rank, intra-node, inter-node bytes) follows.

De-duplication needs the token-to-rank and token-to-node sets: the experts of every token
(:func:`token_destinations` maps them to ranks, replicas included, consistently with the
replica split of :mod:`netsim.moe.traffic`).  Routers and statistical sources give them
(:meth:`netsim.moe.sources.RoutingSource.token_experts`); with ``top_k = 1`` the counts suffice
(one destination per token); a routing trace records counts only, so its tokens cannot be
de-duplicated (the plan says so, :attr:`DispatchCopies.exact`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from netsim.moe._dedup_kernel import HAVE_NUMBA, distinct_counts
from netsim.moe.placement import Placement
from netsim.registry import Registry

IntArray = NDArray[np.int64]

#: DeepEP's and HybridEP's fixed time per dispatch or combine call (module docstring, "Time per
#: call"): least-squares fits of ``published time = netsim transfer time + latency`` over each
#: library's published benchmark table; :func:`netsim.validation.ep_latency.fit` re-derives them
DEEPEP_CALL_LATENCY_S = 0.25e-3
HYBRIDEP_CALL_LATENCY_S = 0.32e-3
#: HybridEP's host time per forward dispatch (module docstring, "Host synchronisation"; *approx.*):
#: the GPU idle time of Megatron-Bridge's matched Nsight profile of Qwen3-30B-A3B on 16 H100s
#: (24.714 s step, 22.821 s GPU-active: 1.893 s idle) over its 3,072 forward dispatches per step
#: (64 micro-batches x 48 MoE layers; validation/data/training/megatron-bridge-h100-ep-overlap.yaml)
HYBRIDEP_HOST_SYNC_S = 1.893 / 3072

__all__ = [
    "DISPATCHERS",
    "DeepEPDispatcher",
    "DispatchCopies",
    "Dispatcher",
    "HybridEPDispatcher",
    "dedup_counts",
    "dispatcher_copies",
    "token_destinations",
]


def token_destinations(token_experts: NDArray[np.integer[Any]], placement: Placement, shares: IntArray) -> IntArray:
    """The destination rank of every (source rank, token, slot).

    Args:
        token_experts: ``[ep, T, k]`` logical expert of every kept (token, slot), ``-1`` where none.
        placement: the expert placement.
        shares: ``[ep, n, R]`` tokens of source ``i`` for expert ``e`` served by its replica ``r``
            (:func:`netsim.moe.traffic.replica_shares`): a source's tokens of an expert go to the
            replicas in token order, the first ``shares[i, e, 0]`` to replica 0, and so on.

    Returns:
        ``[ep, T, k]`` ranks (``-1`` where no expert).
    """
    ex = np.asarray(token_experts, dtype=np.int64)
    ep, t, k = ex.shape
    slot_rank = placement.slot_rank
    if np.all(placement.replica_counts == 1):
        # one lookup per entry: the rank of every expert, and -1 last, which index -1 reads
        rank_of = np.append(slot_rank[placement.log2phy[:, 0]], -1).astype(np.int64)
        return np.asarray(np.take(rank_of, np.maximum(ex, -1)), dtype=np.int64)
    out = np.full(ex.shape, -1, dtype=np.int64)
    cum = np.cumsum(shares, axis=2)  # [ep, n, R]
    for i in range(ep):
        flat = ex[i].reshape(-1)
        idx = np.flatnonzero(flat >= 0)
        e = flat[idx]
        order = np.argsort(e, kind="stable")  # token order inside each expert
        se = e[order]
        starts = np.searchsorted(se, se, side="left")
        nth = np.arange(se.size) - starts  # the token's place among the source's tokens of e
        rep = (nth[:, None] >= cum[i, se, :]).sum(axis=1)
        rep = np.minimum(rep, placement.log2phy.shape[1] - 1)
        dest = slot_rank[placement.log2phy[se, rep]]
        row = np.full(flat.size, -1, dtype=np.int64)
        row[idx[order]] = dest
        out[i] = row.reshape(t, k)
    return out


def dedup_counts(dest_rank: NDArray[np.integer[Any]], rank_node: IntArray) -> tuple[IntArray, IntArray]:
    """Distinct tokens per (source, destination rank) and per (source, destination node).

    Args:
        dest_rank: ``[ep, T, k]`` destination rank of every (token, slot), ``-1`` where none.
        rank_node: ``[ep]`` node of every rank.

    Returns:
        ``rank_tokens [ep, ep]`` (tokens of ``i`` that need rank ``j``) and ``node_tokens
        [ep, nodes]`` (tokens of ``i`` that need node ``n``; nodes numbered by first appearance).
    """
    d = np.asarray(dest_rank, dtype=np.int64)
    ep = d.shape[0]
    _, node_idx = np.unique(rank_node, return_inverse=True)
    n_nodes = int(node_idx.max()) + 1 if node_idx.size else 0
    if HAVE_NUMBA and d.ndim == 3 and d.size:
        return distinct_counts(d, node_idx, n_nodes)
    rank_tokens = np.zeros((ep, ep), dtype=np.int64)
    node_tokens = np.zeros((ep, n_nodes), dtype=np.int64)
    for i in range(ep):
        for values, width, out in (
            (d[i], ep, rank_tokens),
            (np.where(d[i] >= 0, node_idx[d[i]], -1), n_nodes, node_tokens),
        ):
            s = np.sort(values, axis=1)
            first = np.ones(s.shape, dtype=bool)
            first[:, 1:] = s[:, 1:] != s[:, :-1]
            keep = first & (s >= 0)
            out[i] = np.bincount(s[keep], minlength=width)
    return rank_tokens, node_tokens


def _single_expert_dedup(tokens: IntArray, rank_node: IntArray) -> tuple[IntArray, IntArray]:
    """:func:`dedup_counts` when every token has one expert (``top_k = 1``): the counts are the
    distinct tokens already."""
    _, node_idx = np.unique(rank_node, return_inverse=True)
    n_nodes = int(node_idx.max()) + 1 if node_idx.size else 0
    node_tokens = np.zeros((tokens.shape[0], n_nodes), dtype=np.int64)
    np.add.at(node_tokens.T, node_idx, tokens.T)
    return tokens.copy(), node_tokens


@dataclass(frozen=True)
class DispatchCopies:
    """What a dispatcher sends for one all-to-all.

    Attributes:
        copies: ``[ep, ep]`` token copies rank ``i`` sends rank ``j`` (the diagonal stays on the rank).
        exact: the de-duplication the dispatcher does was computed from the token sets (False
            when only counts were known and the copies are one per (token, expert), an upper bound).
    """

    copies: IntArray
    exact: bool = True


class Dispatcher(ABC):
    """A token dispatcher (subclass, set ``name``, register in :data:`DISPATCHERS`)."""

    name: ClassVar[str]
    #: needs the token-to-rank / token-to-node sets (beyond the per (source, rank) counts)
    dedups: ClassVar[bool] = True
    #: the dispatch or combine kernel's fixed time per call, seconds, on top of moving its bytes
    #: (module docstring, "Time per call"); 0 where the all-to-all is NCCL's, whose latencies
    #: the collective cost model has
    call_latency_s: ClassVar[float] = 0.0
    #: the host's time from the forward dispatch's synchronisation to the GPU's next work,
    #: seconds (module docstring, "Host synchronisation"); 0: not modelled for this dispatcher
    host_sync_s: ClassVar[float] = 0.0
    #: the dispatch and combine are NCCL all-to-all(v)s (their kernels' thread blocks, one SM
    #: each, come from NCCL's channel rule: ``overlap.ep_comm_sms`` unset); False: the library's
    #: own kernels, whose SMs the workload gives (``overlap.ep_comm_sms``)
    nccl: ClassVar[bool] = True
    #: the SMs the library's dispatch and combine kernels take when the workload gives none
    #: (``overlap.ep_comm_sms`` unset and no whole-step ``overlap.comm_sms``); None: no default
    default_sms: ClassVar[int | None] = None
    #: the dispatch and combine kernels permute the tokens into and out of expert order as they
    #: move them: no permute / unpermute kernels run around them (module docstring, "Local
    #: permutations")
    permutes: ClassVar[bool] = False
    #: the received rows arrive in source-rank order and are sorted by local expert after the
    #: dispatch, and back before the combine, when a rank holds several experts
    sorts_by_local_expert: ClassVar[bool] = False

    def metadata_bytes(self, tokens: int, experts: int, *, padded: bool = False) -> float:
        """Bytes one rank contributes to the metadata all-gather over the EP group before a
        forward dispatch of ``tokens`` tokens (0: the dispatcher exchanges none with NCCL);
        ``padded``: capacity-padded buffers (``model.moe.padding: capacity``)."""
        return 0.0

    @abstractmethod
    def copies(self, tokens: IntArray, rank_tokens: IntArray, node_tokens: IntArray, rank_node: IntArray) -> IntArray:
        """``[ep, ep]`` copies from the (token, slot) counts ``tokens``, the distinct tokens per
        destination rank ``rank_tokens`` and per destination node ``node_tokens``."""


#: Registry of token dispatchers by YAML name (``model.moe.dispatcher``).
DISPATCHERS: Registry[type[Dispatcher]] = Registry("token dispatcher", field="model.moe.dispatcher")


@DISPATCHERS.register("alltoall")
class AllToAllDispatcher(Dispatcher):
    """One copy per (token, expert) (Megatron-Core ``MoEAlltoAllTokenDispatcher``)."""

    name = "alltoall"
    dedups = False
    sorts_by_local_expert = True

    def metadata_bytes(self, tokens: int, experts: int, *, padded: bool = False) -> float:
        # num_local_tokens_per_expert, one int64 per expert; drop-and-pad knows every split
        return 0.0 if padded else 8.0 * experts

    def copies(self, tokens: IntArray, rank_tokens: IntArray, node_tokens: IntArray, rank_node: IntArray) -> IntArray:
        return tokens.copy()


@DISPATCHERS.register("dedup-rank")
class RankDedupDispatcher(Dispatcher):
    """One copy per (token, destination rank)."""

    name = "dedup-rank"

    def copies(self, tokens: IntArray, rank_tokens: IntArray, node_tokens: IntArray, rank_node: IntArray) -> IntArray:
        return rank_tokens.copy()


@DISPATCHERS.register("deepep")
class DeepEPDispatcher(Dispatcher):
    """One network copy per (token, destination node) to the same-index GPU there, forwarded over
    NVLink once per (token, rank); once per rank inside the source's node."""

    name = "deepep"
    nccl = False
    #: DeepEP's own default, ``Buffer.num_sms = 20`` (deepseek-ai/DeepEP ``deep_ep/buffer.py``),
    #: which Megatron-Core keeps unless ``moe_deepep_num_sms`` / ``moe_flex_dispatcher_num_sms``
    #: says otherwise ("historical default 20", ``transformer_config.py`` at d98e8a64dd)
    default_sms = 20
    #: fitted to DeepEP's 8 published normal-kernel timings on H800 (module docstring)
    call_latency_s = DEEPEP_CALL_LATENCY_S

    def copies(self, tokens: IntArray, rank_tokens: IntArray, node_tokens: IntArray, rank_node: IntArray) -> IntArray:
        ep = tokens.shape[0]
        _, node_idx = np.unique(rank_node, return_inverse=True)
        members: dict[int, list[int]] = {}
        for r in range(ep):
            members.setdefault(int(node_idx[r]), []).append(r)
        local = np.array([members[int(node_idx[r])].index(r) for r in range(ep)])
        out = np.zeros((ep, ep), dtype=np.int64)
        for i in range(ep):
            ni = int(node_idx[i])
            for n, ranks in members.items():
                if n == ni:
                    out[i, ranks] += rank_tokens[i, ranks]
                    continue
                relay = ranks[int(local[i]) % len(ranks)]
                out[i, relay] += node_tokens[i, n]
                others = [j for j in ranks if j != relay]
                out[relay, others] += rank_tokens[i, others]
        return out


@DISPATCHERS.register("hybridep")
class HybridEPDispatcher(DeepEPDispatcher):
    """DeepEP's paths, after an NCCL all-gather of the routing maps (module docstring)."""

    name = "hybridep"
    permutes = True
    #: fitted to HybridEP's 9 published kernel-only timings on H100 at 16 SMs (module docstring)
    call_latency_s = HYBRIDEP_CALL_LATENCY_S
    #: from Megatron-Bridge's profile of a HybridEP training step (module docstring; approx.)
    host_sync_s = HYBRIDEP_HOST_SYNC_S

    def metadata_bytes(self, tokens: int, experts: int, *, padded: bool = False) -> float:
        return float(tokens * experts)  # the [tokens, experts] torch.bool routing map


def dispatcher_copies(
    name: str, tokens: IntArray, rank_node: IntArray, *, dest_rank: IntArray | None = None, single_expert: bool = False
) -> DispatchCopies:
    """The copies dispatcher ``name`` sends for ``tokens [ep, ep]`` ((token, slot) pairs).

    ``dest_rank`` (``[ep, T, k]``, :func:`token_destinations`) gives the token sets; without it
    ``single_expert`` (``top_k = 1``) says the counts are the distinct tokens; otherwise a
    de-duplicating dispatcher falls back to one copy per (token, expert) (``exact`` False).
    """
    disp = DISPATCHERS.get(name)()
    if not disp.dedups:
        return DispatchCopies(disp.copies(tokens, tokens, np.zeros((0, 0), dtype=np.int64), rank_node))
    if dest_rank is not None:
        rank_tokens, node_tokens = dedup_counts(dest_rank, rank_node)
    elif single_expert:
        rank_tokens, node_tokens = _single_expert_dedup(tokens, rank_node)
    else:
        return DispatchCopies(tokens.copy(), exact=False)
    return DispatchCopies(disp.copies(tokens, rank_tokens, node_tokens, rank_node))
