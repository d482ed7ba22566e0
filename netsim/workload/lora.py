"""LoRA fine-tuning: frozen base weights and trained low-rank adapters (``training.lora``).

Low-rank adaptation (Hu et al. 2021, arXiv 2106.09685) freezes every weight of the model and
trains, beside each target linear layer ``y = x W``, an adapter ``y += (x A) B`` of rank ``r``
(``A``: in -> r, ``B``: r -> out).  What that changes in a training step, as netsim models it:

* **No weight gradients of the base model.**  The backward of a frozen linear layer computes the
  input gradient only; Transformer Engine's ``Linear`` skips its weight-gradient GEMM when the
  weight does not require a gradient, and so do the expert GEMMs and the output head.  Every
  GEMM backward of the base model is half of a trained one's (the input-gradient half, module
  doc of :mod:`netsim.workload.costs`); the attention core, the norms, the activations and the
  loss keep their backward.
* **The adapters' GEMMs.**  Two per target and micro-batch in the forward (``x A``, then ``(x
  A) B``), with their input and weight gradients in the backward, in 16 bits (Megatron-Bridge's
  ``ParallelLinearAdapter`` is built from Megatron-Core's own ``ColumnParallelLinear`` /
  ``RowParallelLinear``, outside Transformer Engine's FP8 autocast).  Per rank, for a
  column-parallel base (``linear_qkv``, ``linear_fc1``: ``k`` -> ``n/tp``): ``A`` is ``k -> r/tp``
  and ``B`` ``r -> n/tp``; for a row-parallel base (``linear_proj``, ``linear_fc2``: ``k/tp -> n``):
  ``A`` is ``k/tp -> r`` and ``B`` ``r -> n/tp`` (Megatron-Bridge peft/utils.py,
  ``ParallelLinearAdapter`` at 067f987df0).
* **Only the adapters are trained**: the data-parallel gradient reduction, the distributed
  optimizer's parameter all-gather, the optimizer step and the memory for gradients, fp32 main
  weights and Adam's moments count the adapters' ``(k + n) r / tp`` parameters per target, not
  the base model's (which stay held in their training dtype).
* **Fewer stored activations**: a frozen GEMM keeps no input for a weight gradient (Transformer
  Engine stores a ``Linear``'s input only when its weight needs a gradient), an adapted one its
  adapter's 16-bit input (:class:`netsim.workload.memory.ActivationModel`).
* **Half the FP8 copies**: a frozen GEMM's input and output gradient are cast row-wise only
  (:meth:`netsim.workload.fp8.QuantBytes.frozen`).

Not modelled (*approx.*): the adapters' own tensor-parallel collectives (an all-gather or a
reduction of ``tokens x r`` elements per target, a few hundred KiB at ``r`` = 32); LoRA on MLA
attention and on routed experts (Megatron-Bridge can adapt expert GEMMs; netsim's experts stay frozen
without adapters).
"""

from __future__ import annotations

from typing import Final

from netsim.config.workload import LoraSpec

__all__ = ["COLUMN_PARALLEL", "TE_NAMES", "adapter_gemms", "training_note"]

#: the LoRA target (Megatron module name) -> Transformer Engine's GEMM name in netsim's costs
TE_NAMES: Final[dict[str, str]] = {"linear_qkv": "qkv", "linear_proj": "proj", "linear_fc1": "fc1", "linear_fc2": "fc2"}

#: the targets whose base layer splits its output columns over the TP ranks (the others split
#: their input rows)
COLUMN_PARALLEL: Final[frozenset[str]] = frozenset({"qkv", "fc1"})


def adapter_gemms(te_name: str, rank: int, tp: int, *, n: float, k: float) -> list[tuple[float, float]]:
    """``(n, k)`` of the adapter's two forward GEMMs on one rank (``x A``, then ``(x A) B``) beside
    the base GEMM ``te_name`` whose per-rank shape is ``[rows, n, k]`` (module doc)."""
    if te_name in COLUMN_PARALLEL:
        return [(max(1.0, rank / tp), k), (n, float(rank))]
    return [(float(rank), k), (max(1.0, n / tp), float(rank))]


def training_note(lora: LoraSpec | None, document_tokens: int | None) -> str | None:
    """One line for the run's compute notes on LoRA and packed documents (None: neither)."""
    docs = f"packed documents of {document_tokens} tokens, each attending only to itself" if document_tokens else ""
    if lora is None:
        return docs or None
    return (
        f"LoRA rank {lora.rank} on {', '.join(lora.targets)}: base weights frozen (a GEMM's backward is its "
        f"input gradient), only the adapters reduced, stepped and given optimizer state"
        + (f"; {docs}" if docs else "")
        + " (netsim.workload.lora)"
    )
