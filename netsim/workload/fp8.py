"""FP8 quantisation: the memory-bound kernels FP8 training runs around every FP8 GEMM.

An FP8 GEMM takes FP8 operands, so training in FP8 casts the BF16 tensors it multiplies: the
input activation ``X`` in the forward, the output gradient ``dY`` in the backward and the weight
``W``.  On Hopper the FP8 tensor-core GEMM takes only the "TN" layout, so every tensor is cast to
two FP8 copies, row-wise and column-wise (transposed): ``X`` row-wise for the forward, column-
wise for the weight gradient; ``dY`` row-wise for the input gradient, column-wise for the weight
gradient; ``W`` for the forward and, transposed, for the input gradient.  How the scales are
found is the recipe (``model.fp8_recipe``, used when ``model.dtype`` is fp8):

* ``current`` (TransformerEngine's ``Float8CurrentScaling``, Megatron's ``--fp8-recipe
  tensorwise``, NeMo's "FP8-CS"): one scale per tensor from the tensor's own amax, so a
  separate amax pass reads the tensor before the cast (``Float8CurrentScalingQuantizer::
  quantize_impl``: ``nvte_compute_amax``, ``nvte_compute_scale_from_amax``, then
  ``nvte_quantize_v2`` writing the row-wise and column-wise data; TransformerEngine
  transformer_engine/pytorch/csrc/quantizer.cpp, commit 0064fbd6).  A norm feeding a GEMM
  (``LayerNormLinear``) computes the amax in the norm kernel (``Impl::FUSED_NORM_AMAX_FP8``,
  transformer_engine/pytorch/csrc/extensions/normalization.cpp, commit c38e4ba1): the cast
  remains, the amax pass does not.
* ``delayed`` (``DelayedScaling``, Megatron-LM's default ``--fp8-recipe delayed``,
  megatron/training/arguments.py): the scale comes from an amax history, the cast records the
  new amax as it goes: no amax pass.  A norm feeding a GEMM writes FP8 itself (``Impl::
  FULLY_FUSED`` for ``Float8Quantizer``, same file); what is left is the column-wise copy, a
  transpose of the FP8 output (1 byte read, 1 written; approx.: the byte the norm saves by
  writing FP8 instead of BF16 is not subtracted).
* ``blockwise`` (DeepSeek-V3, arXiv 2412.19437 section 3.3.2: activations in 1x128 tiles,
  weights in 128x128 blocks, one fp32 scale each; TE's ``Float8BlockScaling``): the tile's amax
  is found inside the cast kernel (``Float8BlockQuantizer::quantize`` is one
  ``nvte_quantize_v2``, quantizer.cpp), which also writes the scales: 4 bytes per 128 elements
  per copy for activations and gradients, 4 per 128 x 128 for weights.  Norms are not fused with
  the cast (normalization.cpp: ``Impl::UNFUSED`` for block quantizers).  These quantisers are
  slower than their bytes say (``BLOCKWISE_QUANT_SLOWDOWN``, below).

The activation functions Megatron runs (``bias_swiglu``, ``bias_gelu``) are its own BF16
kernels, so the down projection's input is cast like any other (no fusion); so are the
attention output (the output projection's input), the permuted tokens (the expert GEMMs' input)
and every output gradient.  Weights are cast once per step, not per micro-batch: TransformerEngine
caches the FP8 weights over the micro-batches of a step (``is_first_microbatch``; Megatron-LM's
``MegatronModule.set_is_first_microbatch``, megatron/core/transformer/module.py, commit
d81a0c35: "TE modules will update their fp8 parameter cache").

Bytes per element of the BF16 tensor (a 2-byte read per pass over it; 1 byte per FP8 copy):

=========  ======================  ===================  ================  ==================
recipe     input, after a norm     other input, dY      weight (/step)    scales
=========  ======================  ===================  ================  ==================
current    cast 2 + 1 + 1 = 4      amax 2 + cast 4 = 6  6                 one per tensor
delayed    transpose 1 + 1 = 2     cast 4               4                 one per tensor
blockwise  (4 + 2 x 4/128) x 2      (4 + 2 x 4/128) x 2  (4 + 2 x 4/128^2)  fp32 per tile/block
                                                         x 2
=========  ======================  ===================  ================  ==================

A GEMM whose weight is frozen (LoRA's base weights, :mod:`netsim.workload.lora`) makes only
the row-wise copies: nothing computes its weight gradient, so nothing reads the column-wise
input or output gradient.  Transformer Engine casts the input row-wise only when the weight does
not require a gradient (TE 1.8 transformer_engine/pytorch/module/linear.py: the fused
cast-transpose only under ``weight.requires_grad``, else ``cast_to_fp8``; TE at d0067d0da6:
``columnwise=backward_needs_input``) and, in TE 2.x, the output gradient too (the
``grad_output_quantizer`` drops its column-wise usage when ``requires_wgrad`` is false, same
file).  The column-wise copy is 1 byte per element of the cast (delayed scaling's norm-fed input:
its whole 2-byte transpose; blockwise: 1 byte and its scales, times the slowdown).

The blockwise entries count the bytes twice (``BLOCKWISE_QUANT_SLOWDOWN = 2``, approx.): a
blockwise quantiser finds an amax per 128-element tile along rows for one copy and along
columns for the other (a transpose through shared memory), and the published measurements of
two implementations put it at about half the speed of a streaming cast of the same bytes:

* Transformer Engine's GEMM benchmark on an H200 NVL (docs/examples/gemm_profiling/
  gemm_profiling.rst at NVIDIA/TransformerEngine d0067d0da6, "Worked Example: 5B Model on H200",
  the te.Linear autocast mode that quantises the input and the weight of every call): FP8 block
  scaling 22.882 ms per layer against 20.285 ms for current scaling and 16.785 ms for the
  pre-quantised current-scaling GEMMs.  With the GEMMs alone as fast as current scaling's, the
  block quantisers take 6.10 ms where netsim's bytes (one count) take 2.61 ms at the H200's
  bandwidth (2.3x); with the GEMMs at cuBLAS's "1.75x BF16 for large matmuls" for block-scaled
  FP8 on Hopper (NVIDIA, cuBLAS 12.9 blog), 4.61 ms (1.8x).  Current scaling's quantisers take
  3.50 ms against netsim's 3.88 ms: the tensor-wise bytes need no such factor.
* DeepSeek's profile of a DeepSeek-V3 training step on H800 (deepseek-ai/profile-data at
  4496024, train.json): its FP8 cast kernels take 3.71 ms per MoE layer (forward + backward)
  where netsim's blockwise bytes (one count) take 1.77 ms (2.1x; netsim's validation case
  ``deepseek-profile-data/dsv3-moe-layer-ep64`` compares the layer by kernel class).

The compute model has no measured cast kernel; the casts are timed as the ``residual`` kernel
(a streaming read-read-write elementwise kernel of the catalogue, 3 BF16 elements = 6 bytes per
element, measured in kernel tables or priced by the roofline's memory term) on the same tensor
shape, scaled to the cast's bytes (as the optimizer step scales ``adamw``).  DeepEP and DeepGEMM
fuse part of DeepSeek's quantisation into the dispatch; that saving is not modelled.  Every
entry of the table can be overridden (``model.fp8_quant_bytes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, get_args

from netsim.config.model import Fp8Recipe

__all__ = ["BLOCKWISE_QUANT_SLOWDOWN", "FP8_RECIPES", "QuantBytes", "quant_bytes", "recipe_note"]

#: the recipes ``model.fp8_recipe`` accepts (the config's type is the one list)
FP8_RECIPES: Final[tuple[str, ...]] = get_args(Fp8Recipe)

_READ = 2.0  # one pass over the BF16 tensor
_COPIES = 2.0  # row-wise and column-wise FP8 copies (Hopper FP8 GEMMs take TN layouts only)
_FP32_SCALE = 4.0
_TILE = 128.0  # DeepSeek-V3: 1x128 activation tiles, 128x128 weight blocks
#: blockwise quantisers run at about half the speed of a streaming cast of their bytes (module
#: doc: Transformer Engine's H200 benchmark, 1.8-2.3x; DeepSeek's H800 profile, 2.1x); approx.
BLOCKWISE_QUANT_SLOWDOWN: Final = 2.0


@dataclass(frozen=True)
class QuantBytes:
    """Bytes per element of the BF16 tensor one recipe moves to quantise it (module table):
    a GEMM input produced by a norm, any other GEMM input, an output gradient, a weight; and
    what the column-wise copy alone costs of them (``column``; ``column_after_norm`` for a
    norm-fed input), which a frozen GEMM does not make (module docstring)."""

    after_norm: float
    other: float
    grad: float
    weight: float
    column: float = 1.0
    column_after_norm: float = 1.0

    def frozen(self) -> QuantBytes:
        """The casts of a GEMM whose weight is not trained: row-wise copies only (no weight
        gradient reads the column-wise input or output gradient); never below zero."""
        return replace(
            self,
            after_norm=max(0.0, self.after_norm - self.column_after_norm),
            other=max(0.0, self.other - self.column),
            grad=max(0.0, self.grad - self.column),
        )


def _recipe_bytes(recipe: str) -> QuantBytes:
    cast = _READ + _COPIES * 1.0
    if recipe == "current":
        return QuantBytes(after_norm=cast, other=_READ + cast, grad=_READ + cast, weight=_READ + cast)
    if recipe == "delayed":
        # a norm-fed input's whole cost is the column-wise transpose (read 1, write 1)
        return QuantBytes(after_norm=2.0, other=cast, grad=cast, weight=cast, column_after_norm=2.0)
    if recipe == "blockwise":
        tiles = (cast + _COPIES * _FP32_SCALE / _TILE) * BLOCKWISE_QUANT_SLOWDOWN
        weight = (cast + _COPIES * _FP32_SCALE / _TILE**2) * BLOCKWISE_QUANT_SLOWDOWN
        column = (1.0 + _FP32_SCALE / _TILE) * BLOCKWISE_QUANT_SLOWDOWN
        return QuantBytes(tiles, tiles, tiles, weight, column=column, column_after_norm=column)
    raise ValueError(f"unknown FP8 recipe {recipe!r}; allowed: {', '.join(FP8_RECIPES)}")


def quant_bytes(recipe: str, overrides: Mapping[str, float | None] | None = None) -> QuantBytes:
    """The :class:`QuantBytes` of ``recipe`` (one of :data:`FP8_RECIPES`), with the non-None
    ``overrides`` (``model.fp8_quant_bytes``: after_norm, other, grad, weight) in place."""
    q = _recipe_bytes(recipe)
    given = {k: float(v) for k, v in (overrides or {}).items() if v is not None}
    return replace(q, **given) if given else q


def recipe_note(recipe: str, overrides: Mapping[str, float | None] | None = None) -> str:
    """One line for the run's compute notes: what the quantisation kernels of ``recipe`` cost."""
    q = quant_bytes(recipe, overrides)
    slow = (
        f" (the bytes counted x{BLOCKWISE_QUANT_SLOWDOWN:g}: blockwise quantisers run slower)"
        if recipe == "blockwise"
        else ""
    )
    return (
        f"float8 quantisation ({recipe} scaling): around every FP8 GEMM, memory-bound casts of "
        f"{q.after_norm:g} B per activation element after a norm, {q.other:g} B per other input "
        f"element, {q.grad:g} B per output-gradient element, {q.weight:g} B per weight element "
        f"once per step{slow}; timed as the residual kernel scaled to those bytes (netsim.workload.fp8)"
    )
