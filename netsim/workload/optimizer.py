"""The optimizer's precision: the bytes per parameter Adam keeps in memory and moves every step.

Mixed-precision training (Micikevicius et al. 2018, "Mixed Precision Training", arXiv
1710.03740) keeps the weights the model computes with in 16 bits (``optimizer.param_dtype``) and
an fp32 *master* copy that the optimizer updates; Adam (Kingma & Ba 2015, Algorithm 1) keeps
two moments per parameter (``moment_dtype``, fp32; DeepSeek-V3 keeps them in bf16).  Gradients
are accumulated and reduced in ``grad_dtype`` (Megatron-LM: fp32 unless
``--grad-reduce-in-bf16``); when they are 16-bit, the optimizer steps on an fp32 copy (the
*main gradients*).  Bytes per parameter, Megatron-LM's distributed-optimizer table
(docs.nvidia.com/megatron-core, "Distributed Optimizer"; ``d`` = data-parallel size):

=============================  ==================  ========================
weights, gradients             replicated          distributed optimizer
=============================  ==================  ========================
fp16, fp16                     20 = 2 + 2 + 16     4 + 16/d
bf16, fp32                     18 = 2 + 4 + 12     6 + 12/d
fp32, fp32                     16 = 4 + 4 + 8      8 + 8/d
=============================  ==================  ========================

(weights + gradients + optimizer state; the state is master weights 4 (none for fp32 weights,
which are their own master), moments 8, main gradients 4 (16-bit gradients only)).  ZeRO
(Rajbhandari et al. 2020, arXiv 1910.02054) stage 1 shards the state over the DP group (this is
Megatron's distributed optimizer), stage 2 also the gradients, stage 3 also the weights.

The table counts the fp32 main gradients as held, but they do not live beside the activations:
Megatron-Core's distributed optimizer makes them inside the optimizer step (``shard_main_param.grad
= shard_model_grad.float()`` in ``_copy_model_grads_to_main_grads``) and frees them at the next
iteration's ``optimizer.zero_grad()`` (``set_to_none``; megatron/core/optimizer/distrib_optimizer.py
at NVIDIA/Megatron-LM d98e8a64dd), before any forward runs, so the memory tally counts them
against the activations' peak, not on top of it (:mod:`netsim.workload.memory`).  With
``optimizer.precision_aware`` (Megatron-Core's ``use_precision_aware_optimizer``:
Transformer Engine's FusedAdam holds the master weights and reads the 16-bit gradient buffer
through ``decoupled_grad``, same file) there are no main gradients at all and the step reads the
16-bit gradients directly.

``optimizer.master_dtype: bf16`` is Apex's ``DistributedFusedAdam`` with ``dtype: bf16``, the
optimizer NeMo 1's fine-tuning configs use (``optim: {name: distributed_fused_adam, dtype: bf16,
grad_sync_dtype: bf16}``, NeMo-Framework-Launcher launcher_scripts/conf/peft/llama/sft.yaml at
tag 24.07): the optimizer's state (``store_params``' copy of the weights and both moments, with
``moment_dtype: bf16``) is kept in the optimizer's dtype, the step reads the bf16 gradient shard
directly (no fp32 main gradients), and FP8 weights (``fp8_params``) are gathered as FP8
(``param_sync_dtype=torch.uint8`` for Float8Tensor parameters, NeMo's
nemo/core/optim/distributed_adam.py): 1 + 2 + 6 / d bytes per parameter.

The optimizer step is memory bound: an Adam update does about 16 FLOPs per parameter
(the kernel catalogue's count) on about 30 bytes, an arithmetic intensity near 0.5 FLOP/byte,
two orders of magnitude below the ridge point of any training accelerator (H100 SXM: 989
TFLOP/s dense BF16 / 3.35 TB/s HBM3 = 295 FLOP/byte; Williams et al. 2009, "Roofline").  So its
time is the bytes it reads and writes over the HBM bandwidth: per parameter of the rank's
shard it reads the gradient (16-bit gradients: copied to fp32 main gradients first, read back),
reads and writes the fp32 master weights and both moments, and writes the 16-bit weights.
The compute model's ``adamw`` kernel times the fp32 case (7 fp32 elements = 28 bytes per
parameter); the step's calls scale it by this precision's bytes.  That is one fused pass (Apex's
and Transformer Engine's FusedAdam); ``optimizer.implementation: foreach`` (PyTorch's default
AdamW, nine multi-tensor passes) adds the bytes of its intermediate passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.calibration.eager_counts import FOREACH_ADAMW_EXTRA_BYTES
from netsim.config.model import DTYPE_BYTES
from netsim.config.workload import WorkloadSpec
from netsim.workload.kernel_calls import KernelCall

__all__ = ["ADAMW_KERNEL_BYTES_PER_PARAM", "OptimizerPrecision", "grad_accumulation_bytes", "optimizer_precision"]

#: Bytes per parameter the catalogue's ``adamw`` kernel moves (netsim.calibration.kernels:
#: read param, grad, m, v and write param, m, v in fp32 = 7 x 4); a test keeps them in step.
ADAMW_KERNEL_BYTES_PER_PARAM = 28.0


@dataclass(frozen=True)
class OptimizerPrecision:
    """Bytes per parameter of each piece of training state (module docstring).

    Attributes:
        param: the weights the model computes with.
        grad: the accumulated, reduced gradients.
        master: master weights (``master_dtype``; 0 when the weights are fp32 themselves).
        moments: Adam's two moments.
        main_grad: fp32 main gradients the optimizer steps on (16-bit gradients under an fp32
            master only).
        pass_extra: bytes per parameter the step moves beyond one fused pass
            (``optimizer.implementation: foreach``:
            :data:`~netsim.calibration.eager_counts.FOREACH_ADAMW_EXTRA_BYTES`; fused: 0).
    """

    param: float
    grad: float
    master: float
    moments: float
    main_grad: float
    pass_extra: float = 0.0

    @property
    def state(self) -> float:
        """Optimizer state per parameter (what ZeRO stage 1 shards), main gradients included."""
        return self.master + self.moments + self.main_grad

    @property
    def held_state(self) -> float:
        """Optimizer state held across iterations and saved by a checkpoint (master weights and
        moments; the main gradients live only during the step)."""
        return self.master + self.moments

    @property
    def step_bytes(self) -> float:
        """HBM bytes one Adam step reads and writes per parameter of its shard."""
        grad_in = self.grad + 2 * self.main_grad if self.main_grad else self.grad
        weights = 2 * (self.master or self.param)  # read + write the master (or fp32) weights
        copy_out = self.param if self.master else 0.0  # write the updated 16-bit / FP8 weights
        return grad_in + weights + 2 * self.moments + copy_out + self.pass_extra

    def step_calls(self, params: float) -> list[KernelCall]:
        """The optimizer step over ``params`` parameters as catalogue kernel calls (the fp32
        ``adamw`` kernel scaled to this precision's bytes); [] for no parameters."""
        if params <= 0:
            return []
        scale = self.step_bytes / ADAMW_KERNEL_BYTES_PER_PARAM
        return [KernelCall("adamw", "step", (("params", float(params)),), scale)]


def optimizer_precision(spec: WorkloadSpec) -> OptimizerPrecision:
    """The :class:`OptimizerPrecision` of ``spec.optimizer`` (and the model's dtype)."""
    param = float(spec.param_bytes_per_element)
    grad = float(spec.grad_bytes_per_element)
    master = float(DTYPE_BYTES[spec.optimizer.master_dtype]) if param < 4 else 0.0
    moments = 2.0 * DTYPE_BYTES[spec.optimizer.moment_dtype]
    # an fp32 master steps on an fp32 copy of 16-bit gradients; a bf16 one reads them directly
    fp32_master = master == 4.0
    main_grad = 4.0 if grad < 4 and fp32_master and not spec.optimizer.precision_aware else 0.0
    extra = FOREACH_ADAMW_EXTRA_BYTES if spec.optimizer.implementation == "foreach" else 0.0
    return OptimizerPrecision(param, grad, master, moments, main_grad, extra)


def grad_accumulation_bytes(spec: WorkloadSpec) -> float:
    """Bytes per trained weight of the unfused gradient accumulation in each micro-batch's backward
    (``training.gradient_accumulation_fusion: false``): read the 16-bit weight gradient the GEMM
    wrote, read and write the main gradient (``optimizer.grad_dtype``); 0 when fused."""
    if spec.training.gradient_accumulation_fusion:
        return 0.0
    return 2.0 + 2.0 * spec.grad_bytes_per_element
