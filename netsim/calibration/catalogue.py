"""The kernel catalogue: the compute kernels of a training step, their shapes and costs.

Every kernel has a fixed set of shape parameters, the passes it is measured for, and analytic
FLOP and byte counts (:data:`KERNELS`); kernel tables (:mod:`netsim.calibration.kernels`), the
roofline (:mod:`netsim.calibration.roofline`) and the profiler all use these counts.

==============  =================================  =========  ==========================================
kernel          shape parameters                   passes     what is timed
==============  =================================  =========  ==========================================
gemm            m, n, k                            fwd, bwd   ``Y[m,n] = X[m,k] @ W[k,n]``; bwd = dX and dW
grouped_gemm    tokens, experts, n, k              fwd, bwd   per-expert GEMMs, ``tokens/experts`` rows each
attention       batch, heads, seq, head_dim        fwd, bwd   causal ``scaled_dot_product_attention``
router_linear   tokens, hidden, experts, topk      fwd, bwd   linear gate, softmax, top-k, renormalise
router_grap     tokens, hidden, experts, topk      fwd, bwd   GrAP gate (mean of hidden slices), ReLU,
                                                              softmax, top-k (LocMoE)
permute         tokens, hidden, topk               fwd, bwd   gather tokens into expert order
                                                              (``tokens*topk`` rows)
unpermute       tokens, hidden, topk               fwd, bwd   weighted scatter-add back to token order
layernorm       tokens, hidden                     fwd, bwd   ``layer_norm`` with weight and bias
rmsnorm         tokens, hidden                     fwd, bwd   ``rms_norm`` with weight
rmsnorm_eager   tokens, hidden                     fwd, bwd   the same as eager PyTorch ops in fp32 (IBM
                                                              fms's / Hugging Face's Llama RMSNorm)
rope_eager      tokens, hidden                     fwd, bwd   rotary embedding of Q and K as eager fp32
                                                              ops (IBM fms); ``hidden``: rotated width
swiglu          tokens, hidden                     fwd, bwd   ``silu(a) * b`` on a ``[tokens, 2*hidden]``
                                                              input
swiglu_eager    tokens, hidden                     fwd, bwd   the same unfused: ``torch.chunk``, ``silu``,
                                                              the product (Megatron without
                                                              ``bias_activation_fusion``)
gelu_eager      tokens, hidden                     fwd, bwd   PyTorch's own GELU kernel (no bias; Megatron
                                                              without ``bias_activation_fusion``)
prob_weight     tokens, hidden                     fwd, bwd   ``(act * probs).to(act.dtype)``: the experts'
                                                              activation times fp32 router
                                                              probabilities, unfused (Megatron-Core)
gelu            tokens, hidden                     fwd, bwd   bias + GELU on ``[tokens, hidden]``
residual        tokens, hidden                     fwd, bwd   bias + residual add after a sub-block
softmax         tokens, hidden                     fwd, bwd   scale-mask-softmax over ``tokens`` rows of
                                                              ``hidden`` (unfused attention scores)
dropout         tokens, hidden                     fwd, bwd   dropout with a one-byte keep mask
cross_entropy   tokens, vocab                      fwd, bwd   Megatron's unfused vocab-parallel cross-
                                                              entropy loss over ``[tokens, vocab]`` logits
                                                              (and ``cross_entropy_fused``,
                                                              ``cross_entropy_online``: see below)
adamw           params                             step       ``torch.optim.AdamW.step`` on fp32 params
==============  =================================  =========  ==========================================

Each kernel has a *sweep* parameter (the one a grid varies: m, tokens, seq, params) and
*secondary* parameters (all the others).  Its *cost axis* is FLOPs for compute-bound kernels
and bytes for memory-bound ones (permute, unpermute, norms, the activations, prob_weight, residual,
softmax, dropout, the cross-entropy losses, adamw, GrAP router).

The three cross-entropy kernels are one loss in three implementations (Megatron-Core's
``cross_entropy_loss_fusion`` / ``cross_entropy_fusion_impl``; the workload picks one with
``training.cross_entropy``): ``cross_entropy`` (unfused), ``cross_entropy_fused`` (TorchScript
fusion, ``native``) and ``cross_entropy_online`` (one-pass kernels that write the gradient in
the forward: Transformer Engine's ``te`` implementation, Liger-Kernel's).  ``vocab`` is the
vocabulary columns one rank holds (``V / tp``).  Their byte counts follow each implementation's
passes over the logits, with the fp32 tensors at 4 bytes whatever the logits' dtype (``extra``
bytes): *unfused*
(``megatron/core/tensor_parallel/cross_entropy.py``): the forward reads the 16-bit logits, writes
them as fp32, then max, subtract, exp, sum and the softmax division (36 fp32 bytes per logit),
the backward scales the saved softmax in place and casts it back (12 fp32 bytes, one 16-bit
write); *fused* (``megatron/core/fusions/fused_cross_entropy.py``): two reads of the 16-bit
logits (max; subtract and exp), the fp32 exp written, then read and rewritten as the softmax
(12 fp32 bytes), the backward as the unfused one; *online*: two reads of the logits and one
16-bit write of their gradient in the forward, one read and one write (the scaling by the
loss gradient) in the backward.  Measured times replace these counts where a table has them
(``netsim import liger``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import numpy as np

from netsim.calibration.eager_counts import RMSNORM_EAGER, ROPE_EAGER
from netsim.errors import SpecError

# --------------------------------------------------------------------------- dtypes

#: Bytes per element of the canonical dtype names.
DTYPE_BYTES: Final[dict[str, float]] = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "float8": 1.0}

_DTYPE_ALIASES: Final[dict[str, str]] = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "tf32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "float8": "float8",
    "fp8": "float8",
    "float8_e4m3fn": "float8",
    "float8_e5m2": "float8",
    "e4m3": "float8",
    "e5m2": "float8",
}


def canonical_dtype(name: str, *, field: str = "dtype") -> str:
    """Map a dtype name or alias (``bf16``, ``fp32``, ``half`` ...) to its canonical name."""
    key = str(name).strip().lower().removeprefix("torch.")
    try:
        return _DTYPE_ALIASES[key]
    except KeyError:
        raise SpecError(
            f"unknown dtype {name!r}; allowed: {', '.join(DTYPE_BYTES)} (aliases fp32, bf16, fp16, fp8)", field=field
        ) from None


# --------------------------------------------------------------------------- catalogue

SHAPE_COLUMNS: Final = (
    "m",
    "n",
    "k",
    "batch",
    "tokens",
    "experts",
    "topk",
    "heads",
    "seq",
    "head_dim",
    "hidden",
    "params",
    "vocab",
)
PASSES: Final = ("fwd", "bwd", "step")
Shape = Mapping[str, float]
_CountFn = Callable[[Shape, str], float]


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of the catalogue.

    Attributes:
        name: the kernel name used in tables and in :meth:`ComputeModel.time` calls.
        params: its shape parameters (a subset of :data:`SHAPE_COLUMNS`).
        sweep: the parameter a measurement grid varies (interpolation runs along it).
        passes: the passes it is measured for.
        cost: ``"flops"`` or ``"bytes"``: the axis interpolated over.
        description: one line for docs and ``--help``.
        fixed_dtype: a dtype the kernel always runs in (AdamW keeps fp32 master weights), or
            None when it runs in the requested dtype.
    """

    name: str
    params: tuple[str, ...]
    sweep: str
    passes: tuple[str, ...]
    cost: str
    description: str
    flops_fn: _CountFn = field(repr=False)
    elems_fn: _CountFn = field(repr=False)  # bytes = elems * dtype bytes + extra_bytes
    extra_bytes_fn: _CountFn | None = field(default=None, repr=False)
    fixed_dtype: str | None = None

    @property
    def secondary(self) -> tuple[str, ...]:
        """The shape parameters other than the sweep parameter."""
        return tuple(p for p in self.params if p != self.sweep)

    def check_pass(self, pass_: str) -> str:
        if pass_ not in self.passes:
            raise SpecError(f"kernel {self.name!r} has no pass {pass_!r}; allowed: {', '.join(self.passes)}")
        return pass_

    def check_shape(self, shape: Mapping[str, Any]) -> dict[str, float]:
        """Validate ``shape`` (every parameter present, finite, > 0; no unknown keys)."""
        unknown = sorted(set(shape) - set(self.params))
        if unknown:
            raise SpecError(
                f"kernel {self.name!r} takes shape parameters {', '.join(self.params)}; unknown: {', '.join(unknown)}"
            )
        out: dict[str, float] = {}
        for p in self.params:
            if p not in shape:
                raise SpecError(f"kernel {self.name!r} needs shape parameter {p!r} ({', '.join(self.params)})")
            try:
                v = float(shape[p])
            except (TypeError, ValueError):
                raise SpecError(f"kernel {self.name!r}: {p} must be a number (got {shape[p]!r})") from None
            if not math.isfinite(v) or v <= 0:
                raise SpecError(f"kernel {self.name!r}: {p} must be finite and > 0 (got {shape[p]!r})")
            out[p] = v
        return out

    def dtype_for(self, dtype: str) -> str:
        """The dtype the kernel actually runs in for a requested ``dtype``."""
        return self.fixed_dtype or canonical_dtype(dtype)

    def flops(self, shape: Shape, pass_: str) -> float:
        """Floating-point operations of one call (multiply-add = 2)."""
        return float(self.flops_fn(shape, pass_))

    def nbytes(self, shape: Shape, pass_: str, dtype: str) -> float:
        """Bytes read + written by one call (ideal, each tensor once) in ``dtype``."""
        elt = DTYPE_BYTES[self.dtype_for(dtype)]
        extra = self.extra_bytes_fn(shape, pass_) if self.extra_bytes_fn else 0.0
        return float(self.elems_fn(shape, pass_) * elt + extra)

    def cost_value(self, shape: Shape, pass_: str, dtype: str) -> float:
        """The value on this kernel's cost axis (FLOPs or bytes)."""
        return self.flops(shape, pass_) if self.cost == "flops" else self.nbytes(shape, pass_, dtype)

    def counts(self, columns: Mapping[str, np.ndarray], pass_: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        """(FLOPs, bytes) of many shapes at once: ``columns`` maps each parameter to an array."""
        n = len(next(iter(columns.values()))) if columns else 1
        elt = DTYPE_BYTES[self.dtype_for(dtype)]
        shape = cast(Shape, columns)  # the count functions are elementwise: arrays work as well as floats
        extra = self.extra_bytes_fn(shape, pass_) if self.extra_bytes_fn else 0.0
        flops: np.ndarray = np.broadcast_to(np.asarray(self.flops_fn(shape, pass_), dtype=np.float64), (n,))
        elems = np.asarray(self.elems_fn(shape, pass_), dtype=np.float64)
        nbytes: np.ndarray = np.broadcast_to(elems * elt + extra, (n,))
        return flops, nbytes


def _fb(pass_: str, fwd: float, bwd: float) -> float:
    return fwd if pass_ == "fwd" else bwd


def _gemm_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 4.0) * s["m"] * s["n"] * s["k"]


def _gemm_elems(s: Shape, p: str) -> float:
    m, n, k = s["m"], s["n"], s["k"]
    return _fb(p, m * k + k * n + m * n, 2.0 * (m * n + m * k + k * n))


def _ggemm_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 4.0) * s["tokens"] * s["n"] * s["k"]


def _ggemm_elems(s: Shape, p: str) -> float:
    t, e, n, k = s["tokens"], s["experts"], s["n"], s["k"]
    return _fb(p, t * k + e * k * n + t * n, 2.0 * (t * n + t * k + e * k * n))


def _attn_flops(s: Shape, p: str) -> float:
    # causal: half of the 2 (fwd) / 5 (bwd incl. recompute) s x s x d matmuls
    return _fb(p, 2.0, 5.0) * s["batch"] * s["heads"] * s["seq"] ** 2 * s["head_dim"]


def _attn_elems(s: Shape, p: str) -> float:
    return _fb(p, 4.0, 8.0) * s["batch"] * s["heads"] * s["seq"] * s["head_dim"]


def _rlin_flops(s: Shape, p: str) -> float:
    t, h, e = s["tokens"], s["hidden"], s["experts"]
    return _fb(p, 2.0 * t * h * e + 4.0 * t * e, 4.0 * t * h * e + 4.0 * t * e)


def _rlin_elems(s: Shape, p: str) -> float:
    t, h, e, k = s["tokens"], s["hidden"], s["experts"], s["topk"]
    return _fb(p, t * h + h * e + 2.0 * t * e + t * k, 2.0 * (t * h + h * e + t * e))


def _topk_idx_bytes(s: Shape, p: str) -> float:
    return _fb(p, 8.0 * s["tokens"] * s["topk"], 0.0)


def _grap_flops(s: Shape, p: str) -> float:
    return s["tokens"] * s["hidden"] + 4.0 * s["tokens"] * s["experts"]


def _grap_elems(s: Shape, p: str) -> float:
    t, h, e, k = s["tokens"], s["hidden"], s["experts"], s["topk"]
    return _fb(p, t * h + 2.0 * t * e + t * k, 2.0 * t * h + 2.0 * t * e)


def _perm_flops(s: Shape, p: str) -> float:
    return _fb(p, 0.0, s["tokens"] * s["topk"] * s["hidden"])


def _perm_elems(s: Shape, p: str) -> float:
    t, h, k = s["tokens"], s["hidden"], s["topk"]
    return _fb(p, 2.0 * t * k * h, t * k * h + 2.0 * t * h)


def _idx_bytes(s: Shape, p: str) -> float:
    return 8.0 * s["tokens"] * s["topk"]


def _unperm_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 3.0) * s["tokens"] * s["topk"] * s["hidden"]


def _unperm_elems(s: Shape, p: str) -> float:
    t, h, k = s["tokens"], s["hidden"], s["topk"]
    return _fb(p, t * k * h + 2.0 * t * h, 2.0 * t * k * h + t * h)


def _ln_flops(s: Shape, p: str) -> float:
    return _fb(p, 7.0, 12.0) * s["tokens"] * s["hidden"]


def _rms_flops(s: Shape, p: str) -> float:
    return _fb(p, 4.0, 8.0) * s["tokens"] * s["hidden"]


def _norm_elems(s: Shape, p: str) -> float:
    t, h = s["tokens"], s["hidden"]
    return _fb(p, 2.0 * t * h + 2.0 * h, 3.0 * t * h + 4.0 * h)


def _swiglu_flops(s: Shape, p: str) -> float:
    return _fb(p, 5.0, 10.0) * s["tokens"] * s["hidden"]


def _swiglu_elems(s: Shape, p: str) -> float:
    return _fb(p, 3.0, 5.0) * s["tokens"] * s["hidden"]


def _per_element(fwd: float, bwd: float) -> _CountFn:
    """A count of ``fwd`` / ``bwd`` per element of a ``[tokens, hidden]`` tensor."""

    def count(s: Shape, p: str) -> float:
        return _fb(p, fwd, bwd) * s["tokens"] * s["hidden"]

    return count


# Megatron's unfused GLU (``silu(a) * b`` on the two halves of ``torch.chunk``): fwd silu reads a
# and writes it, the product reads two and writes one (5); bwd the product's two gradients (read
# two, write one each), silu's (read two, write one), then the halves' gradients concatenated
# back into one tensor (read two, write two): 13
_swiglu_eager_elems = _per_element(5.0, 13.0)
# eager PyTorch op sequences (netsim.calibration.eager_counts)
_EAGER: dict[str, tuple[_CountFn, _CountFn, _CountFn]] = {
    name: (_per_element(*c.flops), _per_element(*c.elems), _per_element(*c.fp32_bytes))
    for name, c in (("rmsnorm_eager", RMSNORM_EAGER), ("rope_eager", ROPE_EAGER))
}
_prob_weight_flops = _per_element(1.0, 3.0)
# the experts' activation times fp32 router probabilities, cast back: the 16-bit tensors (fwd
# reads the activation and writes the weighted one after the cast; bwd reads the gradient and the
# activation, writes the activation's gradient after its cast) ...
_prob_weight_elems = _per_element(2.0, 3.0)
# ... and the fp32 product: fwd writes it and the cast reads it (8); bwd the gradient cast to fp32
# (write 4), times the probabilities (read 4, write 4, read 4 by the cast back), times the
# activation for the probabilities' gradient (read 4, write 4) and its sum over the row (read 4)
_prob_weight_fp32_bytes = _per_element(8.0, 28.0)


def _softmax_flops(s: Shape, p: str) -> float:
    return _fb(p, 5.0, 4.0) * s["tokens"] * s["hidden"]


def _softmax_elems(s: Shape, p: str) -> float:
    # fwd: read the scores, write the probabilities; bwd: read probabilities and gradient, write
    return _fb(p, 2.0, 3.0) * s["tokens"] * s["hidden"]


def _dropout_flops(s: Shape, p: str) -> float:
    return _fb(p, 2.0, 1.0) * s["tokens"] * s["hidden"]


def _dropout_elems(s: Shape, p: str) -> float:
    return 2.0 * s["tokens"] * s["hidden"]


def _mask_bytes(s: Shape, p: str) -> float:
    # the keep mask, one byte per element (torch.bool): written forward, read backward
    return s["tokens"] * s["hidden"]


def _residual_flops(s: Shape, p: str) -> float:
    return 2.0 * s["tokens"] * s["hidden"]


def _residual_elems(s: Shape, p: str) -> float:
    # fwd: out = x + bias + residual (read two, write one); bwd: the residual stream's gradient
    # is the sum of the block's and the skip path's (read two, write one)
    return 3.0 * s["tokens"] * s["hidden"]


def _gelu_flops(s: Shape, p: str) -> float:
    return _fb(p, 8.0, 13.0) * s["tokens"] * s["hidden"]


def _gelu_elems(s: Shape, p: str) -> float:
    # fused bias + GELU: fwd reads x and writes y; bwd reads x and the gradient, writes dx
    return _fb(p, 2.0, 3.0) * s["tokens"] * s["hidden"]


def _per_logit(fwd: float, bwd: float) -> _CountFn:
    """A count of ``fwd`` / ``bwd`` per logit of a ``[tokens, vocab]`` loss (the losses' FLOPs,
    16-bit elements and fp32 bytes: the module docstring gives each implementation's passes)."""

    def count(s: Shape, p: str) -> float:
        return _fb(p, fwd, bwd) * s["tokens"] * s["vocab"]

    return count


#: max, subtract, exp, sum, divide (forward); subtract the one-hot and scale (backward)
_xent_flops = _per_logit(5.0, 2.0)


def _adamw_flops(s: Shape, p: str) -> float:
    return 16.0 * s["params"]


def _adamw_elems(s: Shape, p: str) -> float:
    # fp32: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq
    return 7.0 * s["params"]


_FB = ("fwd", "bwd")

#: The kernel catalogue, keyed by kernel name.
KERNELS: Final[dict[str, KernelSpec]] = {
    k.name: k
    for k in (
        KernelSpec(
            "gemm", ("m", "n", "k"), "m", _FB, "flops", "dense GEMM Y[m,n] = X[m,k] @ W[k,n]", _gemm_flops, _gemm_elems
        ),
        KernelSpec(
            "grouped_gemm",
            ("tokens", "experts", "n", "k"),
            "tokens",
            _FB,
            "flops",
            "expert GEMMs: tokens/experts rows per expert, W_e[k,n]",
            _ggemm_flops,
            _ggemm_elems,
        ),
        KernelSpec(
            "attention",
            ("batch", "heads", "seq", "head_dim"),
            "seq",
            _FB,
            "flops",
            "causal scaled_dot_product_attention",
            _attn_flops,
            _attn_elems,
        ),
        KernelSpec(
            "router_linear",
            ("tokens", "hidden", "experts", "topk"),
            "tokens",
            _FB,
            "flops",
            "linear gate + softmax + top-k (renormalised)",
            _rlin_flops,
            _rlin_elems,
            _topk_idx_bytes,
        ),
        KernelSpec(
            "router_grap",
            ("tokens", "hidden", "experts", "topk"),
            "tokens",
            _FB,
            "bytes",
            "GrAP gate (LocMoE): mean of hidden slices, ReLU, softmax, top-k",
            _grap_flops,
            _grap_elems,
            _topk_idx_bytes,
        ),
        KernelSpec(
            "permute",
            ("tokens", "hidden", "topk"),
            "tokens",
            _FB,
            "bytes",
            "gather tokens into expert order (tokens*topk rows)",
            _perm_flops,
            _perm_elems,
            _idx_bytes,
        ),
        KernelSpec(
            "unpermute",
            ("tokens", "hidden", "topk"),
            "tokens",
            _FB,
            "bytes",
            "weighted scatter-add of expert outputs back to token order",
            _unperm_flops,
            _unperm_elems,
            _idx_bytes,
        ),
        KernelSpec(
            "layernorm",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "LayerNorm with weight and bias",
            _ln_flops,
            _norm_elems,
        ),
        KernelSpec(
            "rmsnorm", ("tokens", "hidden"), "tokens", _FB, "bytes", "RMSNorm with weight", _rms_flops, _norm_elems
        ),
        KernelSpec(
            "rmsnorm_eager",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "RMSNorm with weight as eager PyTorch ops with an fp32 upcast (about 8 kernels forward, 13 backward)",
            *_EAGER["rmsnorm_eager"],
        ),
        KernelSpec(
            "rope_eager",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "rotary embedding of queries and keys as eager fp32 PyTorch ops; hidden: the rotated width",
            *_EAGER["rope_eager"],
        ),
        KernelSpec(
            "swiglu",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "SwiGLU activation silu(a) * b, output [tokens, hidden]",
            _swiglu_flops,
            _swiglu_elems,
        ),
        KernelSpec(
            "swiglu_eager",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "SwiGLU in eager PyTorch (chunk, silu(a) * b: two kernels), output [tokens, hidden]",
            _swiglu_flops,
            _swiglu_eager_elems,
        ),
        KernelSpec(
            "prob_weight",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "router probabilities times the experts' activation, in fp32, cast back (Megatron-Core unfused)",
            _prob_weight_flops,
            _prob_weight_elems,
            _prob_weight_fp32_bytes,
        ),
        KernelSpec(
            "gelu",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "bias + GELU activation on [tokens, hidden] (GPT MLP)",
            _gelu_flops,
            _gelu_elems,
        ),
        KernelSpec(
            "gelu_eager",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "GELU in eager PyTorch (torch.nn.functional.gelu, no bias) on [tokens, hidden]",
            _gelu_flops,
            _gelu_elems,
        ),
        KernelSpec(
            "residual",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "bias + residual add closing a transformer sub-block",
            _residual_flops,
            _residual_elems,
        ),
        KernelSpec(
            "softmax",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "scale + mask + softmax over rows of length hidden (unfused attention's scores)",
            _softmax_flops,
            _softmax_elems,
        ),
        KernelSpec(
            "dropout",
            ("tokens", "hidden"),
            "tokens",
            _FB,
            "bytes",
            "dropout on [tokens, hidden] with a one-byte keep mask",
            _dropout_flops,
            _dropout_elems,
            _mask_bytes,
        ),
        KernelSpec(
            "cross_entropy",
            ("tokens", "vocab"),
            "vocab",
            _FB,
            "bytes",
            "Megatron's unfused vocab-parallel cross-entropy over [tokens, vocab] logits (fp32 math)",
            _xent_flops,
            _per_logit(1.0, 1.0),  # the 16-bit logits read, their gradient written
            _per_logit(36.0, 12.0),
        ),
        KernelSpec(
            "cross_entropy_fused",
            ("tokens", "vocab"),
            "vocab",
            _FB,
            "bytes",
            "Megatron's TorchScript-fused vocab-parallel cross-entropy (cross_entropy_loss_fusion)",
            _xent_flops,
            _per_logit(2.0, 1.0),
            _per_logit(12.0, 12.0),
        ),
        KernelSpec(
            "cross_entropy_online",
            ("tokens", "vocab"),
            "vocab",
            _FB,
            "bytes",
            "one-pass cross-entropy kernels that write the logits' gradient in the forward (TE, Liger)",
            _xent_flops,
            _per_logit(3.0, 2.0),
        ),
        KernelSpec(
            "adamw",
            ("params",),
            "params",
            ("step",),
            "bytes",
            "AdamW optimizer step on fp32 parameters",
            _adamw_flops,
            _adamw_elems,
            fixed_dtype="float32",
        ),
    )
}


#: the loss in its three implementations (module docstring)
CROSS_ENTROPY_KERNELS: Final = ("cross_entropy", "cross_entropy_fused", "cross_entropy_online")


def get_kernel(name: str) -> KernelSpec:
    """The catalogue entry of ``name``; SpecError listing the known kernels otherwise."""
    try:
        return KERNELS[name]
    except KeyError:
        raise SpecError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}", field="kernel") from None
