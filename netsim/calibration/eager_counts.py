"""Byte and FLOP counts of model pieces that eager PyTorch runs op by op.

A fused kernel (Transformer Engine's RMSNorm, a ``torch.compile``-generated kernel) reads its
inputs and writes its outputs once.  The same piece written as plain PyTorch ops runs one kernel
per op, each reading and writing a whole tensor, and autograd runs one or more kernels per op
in the backward.  Model code that upcasts to fp32 for accuracy moves 4-byte tensors between those
kernels.  These counts follow the op sequences of IBM's Foundation Model Stack Llama
(foundation-model-stack/foundation-model-stack at 006bd7ed2d, 2024-03: the code the
``ibm-fms-fsdp`` validation source ran), per element of the ``[tokens, hidden]`` tensor, with the
16-bit traffic as *elements* (times the model dtype's bytes) and the fp32 traffic as *bytes*.

``rmsnorm_eager`` (``fms/modules/layernorm.py`` ``LayerNormParameterized`` with
``use_high_precision_pow``; Hugging Face's ``LlamaRMSNorm`` runs the same sequence):
``xf = x.float()``; ``xf * rsqrt(xf.pow(2).mean(-1) + eps)``; ``.type_as(x)``; ``weight * x``.

* forward, 16-bit: read ``x`` (the cast), write the cast back, read it and write the weighted
  output: 4 elements; fp32: write ``xf``, ``pow`` reads and writes, ``mean`` reads, the product
  reads and writes, the cast back reads: 28 bytes.
* backward, 16-bit: the weight product's input gradient (read the gradient, write) and weight
  gradient (read the gradient and the saved input, write the product, read it in the sum), the
  cast to fp32 reads the gradient, the final cast writes it: 8 elements; fp32: the cast writes
  (4), the product's two gradients (read 4 + 4 + 4, write 4 + 4) and the row sum (read 4), the
  mean's gradient expanded (write 4), ``pow``'s gradient ``g * 2 * x`` (``self.pow(1)`` copied,
  doubled, multiplied: read 16, write 12), the two gradients of ``xf`` added (read 8, write 4),
  the cast back reads (4): 76 bytes.

So 36 bytes a BF16 element forward and 92 backward, against 4 and 6 for a fused RMSNorm (the
catalogue's ``rmsnorm``): about 8 and 13 kernels instead of one each.

``rope_eager`` (``fms/modules/positions.py`` ``RotaryEmbedding.adjusted_qk``): queries and keys
cast to fp32 and viewed as pairs; the rotation as a broadcast product with a ``[seq, d/2, 2, 2]``
table, summed over the last axis, cast back.  ``hidden`` is the rotated width per token (query
and key heads times the head dimension).

* forward, 16-bit: read the input (cast), write the output (cast back): 2 elements; fp32: write
  the cast (4), the product reads it and writes twice its size (4 + 8), the sum reads that and
  writes (8 + 4), the cast back reads (4): 32 bytes.
* backward, 16-bit: read the gradient (cast), write the input's gradient (cast back): 2
  elements; fp32: write the cast gradient (4), the product's gradient reads it (broadcast, 4)
  and writes twice its size (8), the sum over the broadcast axis reads that and writes (8 + 4),
  the cast back reads (4): 32 bytes.

The table itself (per position, not per head) and its gather are small and not counted.
"""

from __future__ import annotations

from typing import NamedTuple


class EagerCounts(NamedTuple):
    """Per element of the ``[tokens, hidden]`` tensor, forward and backward: 16-bit elements read
    and written, fp32 bytes read and written, FLOPs."""

    elems: tuple[float, float]
    fp32_bytes: tuple[float, float]
    flops: tuple[float, float]


#: eager RMSNorm (module docstring)
RMSNORM_EAGER = EagerCounts(elems=(4.0, 8.0), fp32_bytes=(28.0, 76.0), flops=(4.0, 10.0))

#: eager rotary embedding of queries and keys, per rotated element (module docstring)
ROPE_EAGER = EagerCounts(elems=(2.0, 2.0), fp32_bytes=(32.0, 32.0), flops=(3.0, 3.0))

#: bytes per parameter that PyTorch's ``foreach`` AdamW moves beyond a fused one-pass AdamW: the
#: multi-tensor ops of ``torch.optim.adamw._multi_tensor_adamw`` (PyTorch 2.2-2.3, the default on
#: CUDA when neither ``fused`` nor ``foreach`` is given) on fp32 state: weight decay (read, write
#: the weights: 8), ``lerp`` of the first moment (read it and the gradient, write: 12), the second
#: moment scaled (8) and ``addcmul`` (read it and the gradient, its two operands, write: 12), its ``sqrt``,
#: the bias-correction division and ``+ eps`` (8 each), ``addcdiv`` into the weights (read the
#: weights, the first moment and the denominator, write: 16): 80 bytes against the 28 of one fused
#: pass (read weights, gradient and both moments, write weights and moments).
FOREACH_ADAMW_EXTRA_BYTES = 80.0 - 28.0
