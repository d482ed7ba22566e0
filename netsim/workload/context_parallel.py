"""Context parallelism: a sequence split over ``cp`` ranks; attention by a K/V ring, an all-gather or all-to-alls.

Megatron-Core trains long sequences with Transformer Engine's context parallelism
(``--context-parallel-size``, ``cp_comm_type`` ``p2p``, the default; TE's
``AttnFuncWithCPAndKVP2P`` in transformer_engine/pytorch/attention/dot_product_attention/
context_parallel.py at d0067d0da6).  What netsim models of it:

* **Tokens.**  Every sequence is cut into ``2 * cp`` chunks; CP rank ``i`` holds chunks ``i`` and
  ``2 * cp - 1 - i`` (so that every rank does the same causal work).  Every kernel outside the
  attention core, every TP collective, pipeline message, expert dispatch and stored activation
  runs on the rank's ``micro_batch_size * seq_len / cp`` tokens
  (:attr:`netsim.workload.costs.ModelCosts.tokens`, :class:`netsim.workload.memory.ActivationModel`).
* **The attention core** runs in ``cp`` steps: the rank's own chunks against its own keys (causal),
  then against each other rank's keys, half of the block each time (the causal mask removes the
  other half).  Each step costs the FLOPs of a causal attention call of ``seq_len / cp`` queries,
  so the core is one ``attention`` call of ``cp * micro_batch_size`` sequences of ``seq_len / cp``
  tokens: ``1 / cp`` of the whole sequence's FLOPs, at the flash-attention throughput of that
  length (:meth:`~netsim.workload.costs.ModelCosts.attention_core`).
* **The ring.**  While step ``i`` computes, each rank sends the keys and values it holds to the
  next rank of its CP group and receives the previous rank's (``flash_attn_p2p_communicate``):
  ``cp - 1`` exchanges of :attr:`~netsim.workload.costs.ModelCosts.cp_kv_bytes` in the forward.
  The backward passes the keys and values round again together with the gradients of the keys
  and values, which travel back to their owner: step 0 sends K/V, the middle steps K/V and
  dK/dV, the last step dK/dV alone (``cp`` exchanges, ``2 (cp - 1)`` K/V sizes in all).  Each
  exchange is a ``sendrecv`` shift over the CP group (every rank sends to the next), on NCCL's
  point-to-point channels; the exchanges run one after another beside the core's compute, which
  waits for them at its end (the block's output projection starts when both are done).
  Selective recomputation of the core (``core_attn``) repeats the forward exchanges.
* **All-gather** (``parallelism.cp_comm_type: all_gather``: TE's ``AttnFuncWithCPAndKVAllGather``;
  the method of the Llama 3 paper, arXiv 2407.21783 section 3.3.2): the core waits for an
  all-gather of every rank's keys and values over the CP group (``cp x`` the rank's K/V bytes
  gathered); its backward all-gathers them again first and reduce-scatters their gradients
  after (phases ``fwd-cp``, ``bwd-cp``, ``bwd-cp-rs``; the block's input projections' backward
  waits for the reduce-scatter).
* **Gradients** of the ``dp * cp`` ranks that hold the same parameters are reduced together
  (Megatron's data-parallel group with context parallelism; :meth:`~netsim.workload.layout.
  ParallelLayout.dp_group`), and the distributed optimizer shards over them.

* **All-to-all** (``cp_comm_type: a2a``, Ulysses: TE's ``AttnFuncWithCPAndQKVOA2A``): Q, K and
  V go from the sequence split to a head split, one ``all_to_all`` each over the CP group
  (``flash_attn_a2a_communicate``, phase ``fwd-cp-a2a``); the core then runs ``1 / cp`` of the TP
  rank's heads over the whole sequence (:attr:`~netsim.workload.costs.ModelCosts.cp_a2a`), and its
  output goes back in one more (``fwd-cp-a2a-out``).  The backward mirrors it: the output's
  gradient before the core (``bwd-cp-a2a``), the gradients of Q, K and V after it
  (``bwd-cp-a2a-out``).  Each call carries the rank's share of one tensor
  (:attr:`~netsim.workload.costs.ModelCosts.cp_a2a_bytes`).  TE asserts that the CP size divides
  the query and the key/value heads of a TP rank; so does :func:`netsim.workload.layout.build_layout`.
* **Hierarchical** (``a2a+p2p``, ``parallelism.hierarchical_cp: [a, p]``, Megatron-Core's
  ``--hierarchical-context-parallel-sizes``; TE's ``AttnFuncWithCPAndKVP2P`` with an a2a group):
  the all-to-alls over the ``a`` consecutive CP ranks of a group
  (:meth:`~netsim.workload.layout.ParallelLayout.cp_subgroup`), then the K/V ring over the ``p``
  ranks at the same position of every group: ``p`` blocks of ``seq_len / p`` queries on ``1 / a``
  of the heads.  A rank then holds ``a`` times its tokens of ``1 / a`` of the heads, so each
  ring step passes the same K/V bytes as the plain ring's.

What is not modelled: the per-step softmax corrections (elementwise, small next to the core),
the extra buffers of the ring (two K/V sizes, transient) and the a2a types' reordering copies
of the sequence chunks (elementwise).  The exchanges' NCCL kernels hold SMs while in flight, so the core
beside them runs on the others (:mod:`netsim.workload.nccl_sms`, ``overlap.nccl_sms.cp``).  The fork and
join of compute and exchanges is exact when the exchanges are the faster (grouped-query
attention: K/V are ``2 * kv_heads / heads`` of the activations); when they are slower the step
waits for them at the join rather than step by step, which hides up to one step's compute more
than the real ring does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from netsim.workload.context import BuildContext
from netsim.workload.emit import OpEmitter
from netsim.workload.kernel_calls import KernelCall
from netsim.workload.nccl_sms import NcclSms
from netsim.workload.plan import Deps

__all__ = ["ContextParallelRing"]


class ContextParallelRing:
    """Emits one attention core with its K/V exchanges over a rank's CP group (module docstring)."""

    def __init__(self, ctx: BuildContext, emit: OpEmitter) -> None:
        self.ctx = ctx
        self.emit = emit
        self.cp = ctx.layout.cp
        self.all_gather = ctx.spec.parallelism.cp_comm_type == "all_gather"
        #: ranks of the Q/K/V all-to-all (the a2a types; 1: none) and of the K/V ring after it
        self.a2a = ctx.costs.cp_a2a
        self.ring = self.cp // self.a2a
        #: bytes of each all-to-all: the rank's Q, K, V and O (their gradients alike)
        self.a2a_bytes = ctx.costs.cp_a2a_bytes
        kv = ctx.costs.cp_kv_bytes
        #: the rank's K/V bytes (what one ring step sends; cp x this is the all-gather's output; after
        #: the a2a of a2a+p2p a rank holds a2a x the tokens of 1/a2a of the heads: the same bytes)
        self.kv_bytes = kv
        #: bytes each ring step sends: forward ``ring - 1`` x K/V; backward K/V, (K/V + dK/dV) x
        #: (ring - 2), dK/dV
        r = self.ring
        self.forward_steps: tuple[float, ...] = (kv,) * (r - 1)
        self.backward_steps: tuple[float, ...] = (kv, *((2 * kv,) * (r - 2)), kv) if r > 1 else ()

    def core(
        self,
        rank: int,
        step: int,
        mb: int,
        layer: int,
        deps: Deps,
        phase: str,
        name: str,
        calls: list[KernelCall],
        *,
        backward: bool = False,
    ) -> Deps:
        """The core's compute op ``name`` (``calls``) with its K/V exchanges after ``deps``; what
        the rest of the block waits for."""
        if self.all_gather:
            total = self.kv_bytes * self.cp
            deps = self._collective(rank, step, deps, "all_gather", total, phase, layer, mb, 0)
            deps = self.emit.compute(rank, step, name, calls, deps, layer, mb)
            if backward:
                deps = self._collective(rank, step, deps, "reduce_scatter", total, phase + "-rs", layer, mb, 0)
            return deps
        if self.a2a > 1:  # Q, K, V (the output's gradient) from sequence to head split
            for k, t in enumerate(("o",) if backward else ("q", "k", "v")):
                deps = self._collective(rank, step, deps, "all_to_all", self.a2a_bytes[t], phase + "-a2a", layer, mb, k)
        ring = deps
        for k, nbytes in enumerate(self.backward_steps if backward else self.forward_steps):
            ring = self._collective(rank, step, ring, "sendrecv", nbytes, phase, layer, mb, k)
        done = [*self.emit.compute(rank, step, name, calls, deps, layer, mb), *ring]
        if self.a2a > 1:  # the output (the gradients of Q, K, V) back to the sequence split
            out = phase + "-a2a-out"
            for k, t in enumerate(("q", "k", "v") if backward else ("o",)):
                done = self._collective(rank, step, done, "all_to_all", self.a2a_bytes[t], out, layer, mb, k)
        return done

    def _collective(
        self, rank: int, step: int, deps: Deps, op: str, nbytes: float, phase: str, layer: int, mb: int, k: int
    ) -> Deps:
        """One ``op`` over ``rank``'s CP group (the all-to-alls of an a2a type over its a2a group, the
        ring steps over its ring), keyed by (step, phase, micro-batch, layer, step of the phase)."""
        L = self.ctx.layout
        kind, group_of = "cp", L.cp_group
        if self.a2a > 1 and op in ("all_to_all", "sendrecv"):  # a level of the a2a types
            level = "a2a" if op == "all_to_all" else "p2p"
            kind, group_of = f"cp-{level}", functools.partial(L.cp_subgroup, level=level)

        def group_key(r: int) -> tuple[tuple[int, ...], tuple[Any, ...]]:
            g = group_of(r)
            return g, ("cp", step, phase, mb, layer, k, g[0])

        sms = self.ctx.nccl_sms
        held: Callable[[float, tuple[int, ...]], float]
        if op == "sendrecv":  # a ring step: one send to the next rank, one receive from the last
            held = functools.partial(_ring_share, sms)
        elif op == "all_to_all":  # grouped send/recv: every other member a peer
            held = functools.partial(_a2a_share, sms)
        else:
            held = functools.partial(sms.collective_share, "cp", op)
        return self.emit.group_collective(
            rank, step, "cp", "cp", op, nbytes, deps, kind, group_key, layer=layer, mb=mb, phase=phase, sm_share=held
        )


def _ring_share(sms: NcclSms, nbytes: float, group: tuple[int, ...]) -> float:
    """The share of a member's SMs NCCL's kernel of one ring step holds (one peer each way)."""
    return sms.p2p_share("cp", group, nbytes, 1)


def _a2a_share(sms: NcclSms, nbytes: float, group: tuple[int, ...]) -> float:
    """The share of a member's SMs NCCL's all-to-all kernel holds (``nbytes`` split over the group)."""
    return sms.p2p_share("cp", group, nbytes / len(group), len(group) - 1)
