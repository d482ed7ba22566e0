"""The kernels of an MoE block: the router, the token permutations, the routed and shared experts.

:class:`MoEKernels` is the part of :class:`netsim.workload.costs.ModelCosts` that lists the
kernels of an MoE layer's block (the table "MoE pre", "experts", "MoE post" of
:mod:`netsim.workload.costs`): what runs depends on the framework, not only on the model's
shape, so the choices live here with their sources.

* The activation of the routed experts (the model's, fused or in eager PyTorch:
  ``training.activation_fusion``) and the weighting of its output by the router probabilities:
  inside Megatron's fused SwiGLU, or, unfused, a ``prob_weight`` kernel of its own after the
  activation (Megatron-Core ``TEGroupedMLP.forward``: with fp32 router probabilities the product
  is fp32 and is cast back).
* The token dispatcher's own permutations (:mod:`netsim.moe.dispatchers`, "Local
  permutations"): the tokens permuted into (token, expert) rows before the dispatch and back after
  the combine, except under HybridEP, whose kernels permute as they move them; under Megatron's
  ``alltoall`` with several experts per rank, the received rows sorted by local expert and back.
* The shared experts, in the block or split around the all-to-alls
  (``overlap.shared_expert_overlap``).
* The router's precision (``model.moe.router_dtype``).  Megatron-Core's gating linear
  (``RouterGatingLinearFunction`` in ``megatron/core/transformer/moe/moe_utils.py``, at
  cf39a4ddcf and d98e8a64dd) runs through Transformer Engine's ``general_gemm``.  With
  ``moe_router_dtype: fp32`` the forward GEMM reads the 16-bit input and weight and writes fp32
  logits (no cast, and t x E logits are few).  The backward is where fp32 costs: the input
  gradient GEMM writes an fp32 ``[t, h]`` tensor that is cast back to 16 bits
  (``.to(input_dtype)``), and the weight gradient GEMM reads the saved input cast to fp32
  (``inp.to(router_dtype)``); the weight is cast to fp32 too.  Against a 16-bit router that is
  2 + 6 bytes per ``[t, h]`` element for the input gradient (the wider write, the cast),
  6 + 2 for the weight gradient (the cast, the wider read), and 6 per weight element: timed as
  the ``residual`` kernel scaled to those bytes, as the FP8 casts are (:mod:`netsim.workload.fp8`).
  Both GEMMs run in TF32 (TE's ``cublaslt_gemm.cu`` uses ``CUBLAS_COMPUTE_32F_FAST_TF32`` for pure
  fp32 GEMMs) and are timed at ``router_linear``'s 16-bit rate, *approx.*: at 4,096 tokens,
  hidden 7,168 and 256 experts their 30 GFLOP at TF32's half rate (H100 datasheet: 494 against
  989 TFLOP/s dense) would add about 40 us to the 140 us the casts take on the H100 model.

The lists are memoised per arguments (:func:`netsim.workload.kernel_calls.memo_kernels`) and
shared: callers must not mutate them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from netsim.config.model import ModelSpec
from netsim.moe.dispatchers import DISPATCHERS
from netsim.workload.kernel_calls import KernelCall, Part, byte_call, memo_kernels
from netsim.workload.kernel_calls import call as _call

__all__ = ["MoEKernels"]


class MoEKernels:
    """The MoE block's kernel lists; :class:`netsim.workload.costs.ModelCosts` mixes it in and
    gives it the model, the rank's tokens and the kernel-list helpers declared below."""

    m: ModelSpec
    sp_tokens: int
    gated: bool
    act_kernel: str
    norm: str
    _memo: dict[tuple[Any, ...], Any]

    if TYPE_CHECKING:

        def _finish(
            self, calls: list[KernelCall], part: Part, kernel: str = "gemm", norm_fed: int = 0
        ) -> list[KernelCall]: ...

        def _back(self, calls: list[KernelCall], part: Part, weights: bool = True) -> list[KernelCall]: ...

        def _close(self) -> list[KernelCall]: ...

    def _init_moe(self, model: ModelSpec, expert_slots_per_rank: int, expert_tp: int, activation_fusion: bool) -> None:
        """The MoE block's settings (called by the costs' constructor)."""
        self.slots = expert_slots_per_rank
        #: the routed experts weight their activation by the router probabilities in a kernel of
        #: its own (``training.activation_fusion: false``: Megatron-Core's unfused path); else the
        #: fused activation (Megatron's weighted SwiGLU) or the unpermute does it
        self.prob_weight = not activation_fusion
        moe = model.moe
        # an unknown name is the plan's error to report (netsim.workload.experts), not the costs'
        disp = DISPATCHERS.get(moe.dispatcher) if moe is not None and moe.dispatcher in DISPATCHERS else None
        #: the dispatch and combine kernels move the tokens into and out of expert order
        #: themselves (HybridEP): no permute / unpermute kernels around them
        self.permute_in_dispatch = disp is not None and disp.permutes
        #: the received rows are sorted by local expert after the dispatch and back before the
        #: combine when a rank holds more than one expert slot (Megatron's ``alltoall``)
        self.sort_by_local_expert = disp is not None and disp.sorts_by_local_expert
        #: the gating linear's backward in fp32 (``model.moe.router_dtype``): its casts, module doc
        self.router_fp32 = moe is not None and moe.router_dtype == "fp32"
        self.expert_ffn = (moe.expert_ffn_hidden or model.ffn_hidden) if moe is not None else 0
        #: the routed experts' FFN width one rank holds
        self.expert_shard_ffn = max(1, self.expert_ffn // expert_tp) if moe is not None else 0

    @property
    def route_tokens(self) -> int:
        """Tokens one rank routes per micro-batch (its sequence-parallel share)."""
        return self.sp_tokens

    @memo_kernels
    def moe_pre(self, part: Part, router_kernel: str = "router_linear") -> list[KernelCall]:
        m = self.m
        assert m.moe is not None
        ts = self.sp_tokens
        calls = [
            _call(self.norm, "fwd", tokens=ts, hidden=m.hidden),
            _call(router_kernel, "fwd", tokens=ts, hidden=m.hidden, experts=m.moe.experts, topk=m.moe.top_k),
        ]
        if not self.permute_in_dispatch:
            calls.append(_call("permute", "fwd", tokens=ts, hidden=m.hidden, topk=m.moe.top_k))
        if part == "F":
            return calls
        back = self._back(calls, part)
        if self.router_fp32 and router_kernel == "router_linear" and part in ("B", "BW"):
            back = [*back, *self.router_fp32_casts()]
        return back

    def router_fp32_casts(self) -> list[KernelCall]:
        """What an fp32 router adds to its backward (module doc, "The router's precision"): 16
        bytes per element of the ``[tokens, hidden]`` input (the input gradient written in fp32
        and cast back, the input cast to fp32 and read for the weight gradient) and 6 per
        element of the ``[experts, hidden]`` weight (its cast), each as the ``residual`` kernel
        on that shape scaled to the bytes; the router's whole backward is in the ``B`` part, as
        ``router_linear``'s is."""
        m = self.m
        assert m.moe is not None
        label = "fp32 router cast"
        return [
            byte_call(self.sp_tokens, m.hidden, 16.0, label=label),
            byte_call(m.moe.experts, m.hidden, 6.0, label=label),
        ]

    @memo_kernels
    def experts(self, part: Part, received_tokens: int) -> list[KernelCall]:
        """The rank's expert FFNs on ``received_tokens`` (token, slot) rows; [] if none.  With
        more than one slot under Megatron's ``alltoall`` dispatcher, the received rows (in
        source-rank order) are sorted by local expert before the first GEMM and back after the
        second (``sort_chunks_by_idxs``; with capacity padding a transpose copy): each a
        permutation of ``[R, h]``, timed as ``permute`` with one row per token (its backward
        counts one read more than a permutation's)."""
        if received_tokens <= 0 or self.slots <= 0:
            return []
        m, R, e = self.m, received_tokens, self.slots
        f = self.expert_shard_ffn
        sorts = self.sort_by_local_expert and e > 1
        sort = [_call("permute", "fwd", tokens=R, hidden=m.hidden, topk=1)] if sorts else []
        calls = [
            *sort,
            _call("grouped_gemm", "fwd", tokens=R, experts=e, n=(2 if self.gated else 1) * f, k=m.hidden),
            *self.expert_act(R),
            _call("grouped_gemm", "fwd", tokens=R, experts=e, n=m.hidden, k=f),
            *sort,
        ]
        return self._finish(calls, part, "grouped_gemm")

    @memo_kernels
    def moe_post(self, part: Part, shared: bool = True) -> list[KernelCall]:
        """The unpermute, the shared experts (``shared``: in this op; False when they run
        overlapped with the all-to-alls, :meth:`shared_experts`) and the residual add."""
        m = self.m
        assert m.moe is not None
        ts = self.sp_tokens
        unpermute = _call("unpermute", "fwd", tokens=ts, hidden=m.hidden, topk=m.moe.top_k)
        calls = [] if self.permute_in_dispatch else [unpermute]
        if shared:
            calls += self._shared_calls("fc1") + self._shared_calls("fc2")
        calls += self._close()
        return self._finish(calls, part)

    def _shared_calls(self, half: Literal["fc1", "fc2"]) -> list[KernelCall]:
        """The shared experts' forward: the first GEMM and the activation (``fc1``) or the second
        GEMM (``fc2``); [] without shared experts."""
        m = self.m
        assert m.moe is not None
        if not m.moe.shared_experts:
            return []
        ts, f = self.sp_tokens, self.expert_ffn * m.moe.shared_experts
        if half == "fc1":
            return [
                _call("gemm", "fwd", m=ts, n=(2 if self.gated else 1) * f, k=m.hidden),
                _call(self.act_kernel, "fwd", tokens=ts, hidden=f),
            ]
        return [_call("gemm", "fwd", m=ts, n=m.hidden, k=f)]

    @memo_kernels
    def shared_experts(self, part: Part, half: Literal["fc1", "fc2"]) -> list[KernelCall]:
        """Half of the shared experts as ``part``, for Megatron-Core's
        ``moe_shared_expert_overlap`` (``overlap.shared_expert_overlap``): ``fc1`` runs while
        the dispatch all-to-all flies, ``fc2`` while the combine does."""
        return self._finish(self._shared_calls(half), part)

    @memo_kernels
    def expert_act(self, received_tokens: int) -> list[KernelCall]:
        """The routed experts' activation forward on ``received_tokens`` rows (and the weighting
        by the router probabilities where it is a kernel of its own): what the ``moe_act``
        recomputation re-runs before their backward; [] if none."""
        if received_tokens <= 0 or self.slots <= 0:
            return []
        f = self.expert_shard_ffn
        act = [_call(self.act_kernel, "fwd", tokens=received_tokens, hidden=f)]
        if self.prob_weight:  # 16-bit whatever the GEMMs' precision, as the activation's output is
            act.append(_call("prob_weight", "fwd", tokens=received_tokens, hidden=f, no_fp8=True))
        return act

    @memo_kernels
    def experts_after_act(self, part: Part, received_tokens: int) -> list[KernelCall]:
        """:meth:`expert_act` then the experts' ``part`` (``moe_act`` recomputation)."""
        return [*self.expert_act(received_tokens), *self.experts(part, received_tokens)]
