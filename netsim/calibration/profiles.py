"""Compute profiles: the measured kernel table and the cited assumptions of one GPU model.

A topology's accelerator names its compute model in YAML::

    accelerator:
      name: H100-SXM5-80GB
      ...
      compute:
        profile: h100-sxm          # one of COMPUTE_PROFILES
        kernels: null              # another kernel table (path or shipped name) instead
        fp8_gemm_speedup: null     # override the profile's FP8 assumption

A profile bundles what :class:`~netsim.calibration.compute.TableComputeModel` needs for that
GPU: the shipped kernel table (``netsim/data/kernels/<kernels>``, measured: GEMMs through their
fitted surface, norms, SwiGLU), the flash-attention throughput curves for the attention core
(which the table lacks) and the FP8 GEMM speed-up over BF16.  Every constant below names its
source.  ``roofline`` is the datasheet roofline with the scenario's efficiencies (what presets
without a measured table, e.g. the Ascend ones, use).

Attention curves (achieved TFLOP/s, causal, head dim 128, BF16/FP16, FLOPs counted as the
flash-attention benchmarks and the catalogue do: causal = half of ``4 b h s^2 d``, backward =
2.5x forward):

* H100 SXM5, forward: FlashAttention-3 (Shah et al. 2024, arXiv:2407.08608), Fig. 5, "with
  causal mask, head dim 128", FlashAttention-3 bars: 292, 423, 521, 579, 602, 616 TFLOP/s at
  sequence 512, 1k, 2k, 4k, 8k, 16k.  Backward: Fig. 6, head dim 128, FlashAttention-3 bars
  316, 424, 501, 542, 559, 561 (measured without the causal mask); scaled here by the
  forward's causal / non-causal ratio at each length (Fig. 5 non-causal head dim 128: 497, 565,
  625, 638, 646, 648), *approx.*  The same figures' head-dim-64 panels: forward causal 197, 265,
  371, 420, 460, 473, non-causal 333, 392, 460, 476, 496, 497; backward 272, 363, 422, 453, 472,
  474 (scaled the same way).  A call's head dimension picks its curves, interpolated in
  ``log(head_dim)`` between 64 and 128 (head dim 96: about the geometric mean), 128's above.
* H100 SXM5, FlashAttention-2 (``accelerator.compute.attention: flash-attention-2``: the kernel
  PyTorch's ``scaled_dot_product_attention`` and xFormers ran on Hopper before FlashAttention-3,
  July 2024): the FlashAttention-2 bars of the same figures, head dim 128: forward causal 191,
  260, 298, 319, 333, 335, non-causal 309, 350, 362, 368, 370, 370; backward (non-causal) 214,
  260, 291, 310, 318, 322, scaled by FlashAttention-2's own causal / non-causal forward ratio,
  *approx.*  One set of curves for every head dimension (the head-dim-64 panels' FlashAttention-2
  bars are not used).
* H100 SXM5, cuDNN fused attention (``accelerator.compute.attention: cudnn``: what Transformer
  Engine's ``FusedAttention`` runs on Hopper, hence NeMo, Megatron-Core and Megatron-Bridge): the
  cuDNN bars of the same figures, head dim 128, forward non-causal 497, 574, 617, 609, 600, 595,
  backward (non-causal) 305, 408, 465, 499, 518, 516, both scaled by FlashAttention-3's causal /
  non-causal forward ratio (the figures' causal panels are not used), *approx.*; at head dim
  64 those curves times FlashAttention-3's own head-dim-64 / head-dim-128 ratio at each length
  and pass (the figures' cuDNN bars at head dim 64 are not used), *approx.*, interpolated as
  FlashAttention-3's are (until 2026-12-07 the head-dim-128 curves served every head dimension,
  which timed GPT-OSS's head dim 64 about 25% faster than FlashAttention-3's).  Checks: at
  sequence 8,192, causal, head dim 128 these give
  559 TFLOP/s forward and 483 backward, against cuDNN's 565.7 and 469.8 on H100 in
  Dao-AILab/flash-attention pull request #1893 (-1.2%, +2.8%), and 502 TFLOP/s forward and
  backward together, against the 514 that Transformer Engine's attention benchmark
  (docs/examples/attention/attention.ipynb at d0067d0da6) measures for cuDNN there (-2.2%).
  Both, and NVIDIA's cudnn-frontend benchmark of cuDNN 9.1 from 4K to 64K tokens (May 2024: within
  4%, flat above 16K as the curves are extrapolated), are rows of ``published-attention.csv``,
  which ``netsim validate-kernels TABLE --published`` predicts (:mod:`netsim.calibration.published`).
* A100 SXM4 80GB: FlashAttention-2 (Dao 2023, arXiv:2307.08691) reaches up to 73 % of the
  312 TFLOP/s peak in the forward pass and up to 63 % in the backward pass on A100 (Sec. 4.1).
  Those maxima times the sequence-length and causal shape of the same FlashAttention-2 kernel
  measured on H100 in FlashAttention-3's Fig. 5 (causal head dim 128: 191, 260, 298, 319, 333,
  335, divided by its non-causal 16k value 370), *approx.*

FP8 GEMM speed-up on Hopper (H100 = H800 compute): 1.75x the BF16 compute term, from NVIDIA's
"Boosting Matrix Multiplication Speed and Flexibility with NVIDIA cuBLAS 12.9" (2025): block-
scaled FP8 matmuls on Hopper run up to 1.75x faster than BF16 for large matmuls (at least 1.25x
in most other cases).  Cross-check: the Maximum Achievable Matmul FLOPS of an H100 SXM in Stas
Bekman's "Machine Learning Engineering" (compute/accelerator/README.md) are 1402.6 TFLOP/s FP8
and 794.5 TFLOP/s BF16, ratio 1.77.  Small GEMMs, which are limited by memory, gain from the
halved operand bytes instead (the surface's memory term).

Megatron's bias-GELU (``analogs``): the shipped tables do not time it (Vidur skipped its GELU, and
Liger-Kernel's benchmarks have Megatron's SwiGLU but not its GELU).  Both are Megatron-Core
elementwise functions compiled by the same ``jit_fuser`` (megatron/core/fusions/fused_bias_gelu.py
and fused_bias_swiglu.py: ``bias_gelu`` / ``bias_gelu_back`` and ``swiglu`` / ``swiglu_back``,
``torch.compile`` on PyTorch 2.2+), and Liger measured the SwiGLU pair on H100 at about 1.8 TB/s
forward and 0.6 TB/s backward per catalogue byte, far below the 3.35 TB/s a roofline assumes.
So ``gelu`` (which also times Nemotron's jit-fused squared ReLU) is timed as the measured
``swiglu`` moving the same bytes: *approx.*, an analogy between kernels of one compiler, not a
measurement of the GELU pair; a table with ``gelu`` rows replaces it.

SM clock (``measured_clock_mhz``, ``rated_clock_mhz``; :class:`~netsim.calibration.shared_sms.SMClock`):
the shipped tables and attention curves are short, isolated benchmarks, which run a cool GPU at
its maximum boost clock; a training step holds the tensor cores near the power limit, where the
SM clock falls.  The profile's SM-bound kernels (GEMMs, the attention core) are priced at
``accelerator.compute.clock_mhz`` (default: the rated clock) instead of the measured one.

* H100 SXM5 (H800 the same die and power): measured at 1,980 MHz, its maximum boost clock (the
  maximum SM clock nvidia-smi reports).  NVIDIA rates its dense BF16 peak at 1,830 MHz: 132 SMs
  x 4 tensor cores x 1,024 FLOP per clock x 1,830 MHz = 989.4 TFLOP/s (Bekman, "Machine Learning
  Engineering", compute/accelerator/README.md: 1,830 MHz is NVIDIA's official figure).  The
  measured tables ran above it: Vidur's largest H100 GEMMs reach 894 TFLOP/s, 90% of the rated
  peak and more than the 794.5 TFLOP/s Maximum Achievable Matmul FLOPS measured on an H100
  SXM after 50 warm-up iterations (same source), while its A100 GEMMs reach no more than the A100's
  (272 at most, against 271.2 TFLOP/s).  Under sustained load the clock goes lower still: 700 W
  Hopper parts do not hold 1,830 MHz under full load (tile-ai/TileOPs pull request #1588, H200
  runners), GEMMs overlapped with communication ran at 1,575 MHz (deepseek-ai/DeepGEMM issue
  #120), back-to-back kernels on a B200 lost 15% of their throughput as its clock fell from
  1,965 to ~1,580 MHz (flashinfer-ai/flashinfer pull request #2899), and Llama 3 saw its
  16k-H100 throughput move 1-2% with the time of day through dynamic voltage and frequency
  scaling (arXiv 2407.21783, section 3.3.4).  So the training clock defaults to the rated
  1,830 MHz (*approx.*: the least the evidence allows; kernels 8.2% longer than measured).
* A100 SXM4: rated at its maximum boost clock, 1,410 MHz (108 x 4 x 512 x 1,410 MHz = 312
  TFLOP/s): measured and training clock the same, no scaling.

A table given in place of the profile's (``accelerator.compute.kernels``, ``options.kernels``)
is taken as measured at the training clock: no scaling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netsim.calibration.attention import FlashAttentionModel
from netsim.calibration.compute import TableComputeModel
from netsim.calibration.kernels import KernelTable
from netsim.calibration.roofline import RooflineComputeModel
from netsim.calibration.shared_sms import SMClock
from netsim.errors import SpecError
from netsim.registry import Registry
from netsim.units import parse_bandwidth

__all__ = [
    "COMPUTE_PROFILES",
    "KERNEL_DATA_DIR",
    "AttentionKernel",
    "ComputeProfile",
    "profile_compute_model",
    "resolve_table_path",
]

#: Where shipped kernel tables live.
KERNEL_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "kernels"

_SEQ = (512, 1024, 2048, 4096, 8192, 16384)
_T = 1e12


Curves = Mapping[str, tuple[tuple[float, float], ...]]


@dataclass(frozen=True)
class AttentionKernel:
    """One attention implementation's measured throughput on one GPU model.

    Attributes:
        label: the implementation's name in reports (``FlashAttention-3``).
        curves: ``{"fwd": ((seq, FLOP/s), ...), "bwd": ...}``, for every head dimension without
            its own curves.
        by_head_dim: the same curves measured at several head dimensions (a call's head dimension
            picks between them), or None (``curves`` for every head dimension).
    """

    label: str
    curves: Curves
    by_head_dim: Mapping[int, Curves] | None = None

    def model(self, memory_Bps: float) -> FlashAttentionModel:
        """The attention model of these curves (at the clock they were measured at), with
        ``memory_Bps`` for its memory-bound floor."""
        return FlashAttentionModel(
            self.curves, memory_Bps, name=f"flash-attention:{self.label}", by_head_dim=self.by_head_dim
        )


@dataclass(frozen=True)
class ComputeProfile:
    """The compute model of one GPU model (see the module docstring for the sources).

    Attributes:
        name: the name used in ``accelerator.compute.profile``.
        description: one line for ``--help`` and docs.
        kernels: file name of the shipped kernel table (None: datasheet roofline).
        attention_kernels: the attention implementations measured on this GPU, by the name
            ``accelerator.compute.attention`` gives them; the first is the default.
        fp8_gemm_speedup: FP8 / BF16 GEMM compute-term speed-up, or None (no FP8 support).
        overlays: shipped tables laid over ``kernels`` (:meth:`KernelTable.overlay`): measured
            training kernels that replace the table's own of the same name (not applied to a
            table the scenario or the accelerator names instead).
        measured_clock_mhz: the SM clock the table's and the attention curves' SM-bound kernels
            ran at (None: unknown, no clock scaling).
        rated_clock_mhz: the clock of the vendor's rated dense peak: the default SM clock of a
            training step (``accelerator.compute.clock_mhz`` overrides it).
        analogs: ``(kernel, analog)`` pairs: a kernel the profile's own table lacks timed as its
            analog at equal bytes (:class:`~netsim.calibration.compute.TableComputeModel`).
    """

    name: str
    description: str
    kernels: str | None = None
    attention_kernels: Mapping[str, AttentionKernel] = field(default_factory=dict)
    fp8_gemm_speedup: float | None = None
    overlays: tuple[str, ...] = ()
    measured_clock_mhz: float | None = None
    rated_clock_mhz: float | None = None
    analogs: tuple[tuple[str, str], ...] = ()

    def attention_kernel(self, name: str | None) -> AttentionKernel | None:
        """The attention implementation ``name`` (None: the profile's default; None when the
        profile measures none)."""
        if name is None:
            return next(iter(self.attention_kernels.values()), None)
        if name not in self.attention_kernels:
            allowed = ", ".join(self.attention_kernels) or "none (this profile times attention by the roofline)"
            raise SpecError(
                f"unknown attention kernel {name!r} for compute profile {self.name!r}; allowed: {allowed}",
                field="accelerator.compute.attention",
            )
        return self.attention_kernels[name]


COMPUTE_PROFILES: Registry[ComputeProfile] = Registry("compute profile", field="accelerator.compute.profile")


def _curve(tflops: tuple[float, ...], scale: tuple[float, ...] | None = None) -> tuple[tuple[float, float], ...]:
    s = scale or (1.0,) * len(tflops)
    return tuple((float(q), r * f * _T) for q, r, f in zip(_SEQ, tflops, s, strict=True))


_FA3_FWD_CAUSAL = (292, 423, 521, 579, 602, 616)
_FA3_FWD_FULL = (497, 565, 625, 638, 646, 648)
_FA3_BWD_FULL = (316, 424, 501, 542, 559, 561)
_FA3_FWD_CAUSAL_HD64 = (197, 265, 371, 420, 460, 473)
_FA3_FWD_FULL_HD64 = (333, 392, 460, 476, 496, 497)
_FA3_BWD_FULL_HD64 = (272, 363, 422, 453, 472, 474)
_FA2_H100_FWD_CAUSAL = (191, 260, 298, 319, 333, 335)
_FA2_H100_FWD_FULL = (309, 350, 362, 368, 370, 370)
_FA2_H100_FWD_FULL_16K = _FA2_H100_FWD_FULL[-1]
_FA2_H100_BWD_FULL = (214, 260, 291, 310, 318, 322)
_A100_PEAK_T = 312.0

_causal_ratio = tuple(c / f for c, f in zip(_FA3_FWD_CAUSAL, _FA3_FWD_FULL, strict=True))
_causal_ratio_hd64 = tuple(c / f for c, f in zip(_FA3_FWD_CAUSAL_HD64, _FA3_FWD_FULL_HD64, strict=True))
_FA3_H100 = {"fwd": _curve(_FA3_FWD_CAUSAL), "bwd": _curve(_FA3_BWD_FULL, _causal_ratio)}
_FA3_H100_HD64 = {"fwd": _curve(_FA3_FWD_CAUSAL_HD64), "bwd": _curve(_FA3_BWD_FULL_HD64, _causal_ratio_hd64)}
_fa2_shape = tuple(v / _FA2_H100_FWD_FULL_16K for v in _FA2_H100_FWD_CAUSAL)
_fa2_causal_ratio = tuple(c / f for c, f in zip(_FA2_H100_FWD_CAUSAL, _FA2_H100_FWD_FULL, strict=True))
_FA2_H100 = {"fwd": _curve(_FA2_H100_FWD_CAUSAL), "bwd": _curve(_FA2_H100_BWD_FULL, _fa2_causal_ratio)}
_CUDNN_FWD_FULL = (497, 574, 617, 609, 600, 595)
_CUDNN_BWD_FULL = (305, 408, 465, 499, 518, 516)
_CUDNN_H100 = {"fwd": _curve(_CUDNN_FWD_FULL, _causal_ratio), "bwd": _curve(_CUDNN_BWD_FULL, _causal_ratio)}
#: head dim 64: cuDNN's head-dim-128 curves x FlashAttention-3's own head-dim-64 / 128 ratio
_CUDNN_H100_HD64 = {
    p: tuple(
        (s, v * a / b) for (s, v), (_, a), (_, b) in zip(_CUDNN_H100[p], _FA3_H100_HD64[p], _FA3_H100[p], strict=True)
    )
    for p in ("fwd", "bwd")
}

for _p in (
    ComputeProfile("roofline", "datasheet roofline with the scenario's flops/memory efficiencies"),
    ComputeProfile(
        "h100-sxm",
        "H100/H800 SXM5: Vidur-measured GEMMs (fitted surface) and norms; Megatron's SwiGLU and cross-entropy "
        "measured by Liger-Kernel, its bias-GELU timed as that SwiGLU at equal bytes; FlashAttention-3 "
        "attention (or cuDNN, FlashAttention-2); FP8 GEMMs 1.75x BF16",
        kernels="vidur-h100.csv",
        overlays=("liger-megatron-h100.csv",),
        attention_kernels={
            "flash-attention-3": AttentionKernel("FlashAttention-3", _FA3_H100, {64: _FA3_H100_HD64, 128: _FA3_H100}),
            "flash-attention-2": AttentionKernel("FlashAttention-2", _FA2_H100),
            "cudnn": AttentionKernel("cuDNN", _CUDNN_H100, {64: _CUDNN_H100_HD64, 128: _CUDNN_H100}),
        },
        fp8_gemm_speedup=1.75,
        measured_clock_mhz=1980.0,
        rated_clock_mhz=1830.0,
        analogs=(("gelu", "swiglu"),),
    ),
    ComputeProfile(
        "a100-sxm",
        "A100 SXM4 80GB: Vidur-measured GEMMs (fitted surface), norms, SwiGLU; Liger-measured eager RMSNorm; "
        "FlashAttention-2 attention",
        kernels="vidur-a100.csv",
        overlays=("liger-eager-a100.csv",),
        attention_kernels={
            "flash-attention-2": AttentionKernel(
                "FlashAttention-2",
                {
                    "fwd": _curve(tuple(0.73 * _A100_PEAK_T for _ in _SEQ), _fa2_shape),
                    "bwd": _curve(tuple(0.63 * _A100_PEAK_T for _ in _SEQ), _fa2_shape),
                },
            )
        },
        measured_clock_mhz=1410.0,
        rated_clock_mhz=1410.0,
    ),
):
    COMPUTE_PROFILES.add(_p.name, _p)


@functools.lru_cache(maxsize=8)
def _profile_table(kernels: str, overlays: tuple[str, ...]) -> KernelTable:
    """A profile's shipped table with its overlays laid on, read and merged once per process
    (every run of a preset asks for it; tables are not mutated)."""
    table = KernelTable.load(resolve_table_path(kernels))
    for name in overlays:
        table = table.overlay(KernelTable.load(resolve_table_path(name)))
    return table


def resolve_table_path(ref: str | Path, *, field: str = "accelerator.compute.kernels") -> Path:
    """A kernel-table reference: an existing path, or the name of a shipped table."""
    p = Path(ref)
    if p.is_file():
        return p
    for cand in (KERNEL_DATA_DIR / str(ref), KERNEL_DATA_DIR / f"{ref}.csv"):
        if cand.is_file():
            return cand
    shipped = sorted(x.name for x in KERNEL_DATA_DIR.glob("*.csv") if not x.name.startswith("published"))
    raise SpecError(
        f"kernel table {str(ref)!r} not found (a path, or a shipped table: {', '.join(shipped)})", field=field
    )


def profile_compute_model(
    accelerator: Mapping[str, Any],
    compute: Mapping[str, Any],
    *,
    table: Any = None,
    efficiency: float = 1.0,
    memory_efficiency: float = 1.0,
    default_dtype: str | None = None,
) -> Any:
    """The compute model an accelerator's ``compute`` section asks for.

    ``table`` (a path or a :class:`KernelTable`, e.g. a scenario's ``options.kernels``) replaces
    the profile's table; the profile's attention curves and FP8 assumption still fill what that
    table lacks.
    """

    prof = COMPUTE_PROFILES.get(str(compute.get("profile") or "roofline"))
    ref = table if table is not None else compute.get("kernels") or prof.kernels
    if ref is None:
        return RooflineComputeModel.from_accelerator(
            accelerator, efficiency, memory_efficiency, default_dtype=default_dtype
        )
    speedup = compute.get("fp8_gemm_speedup")
    speedup = prof.fp8_gemm_speedup if speedup is None else float(speedup)
    if speedup is not None and not (math.isfinite(speedup) and speedup > 0):
        raise SpecError(f"must be finite and > 0 (got {speedup!r})", field="accelerator.compute.fp8_gemm_speedup")
    attention = None
    kernel = prof.attention_kernel(compute.get("attention"))
    if kernel is not None:
        attention = kernel.model(parse_bandwidth(accelerator.get("memory_Bps", 0), "accelerator.memory_bandwidth"))
    own = table is None and compute.get("kernels") is None
    if own:  # the profile's own: shipped, overlays laid on
        assert prof.kernels is not None
        loaded = _profile_table(prof.kernels, prof.overlays)
        label = "+".join(Path(n).stem for n in (prof.kernels, *prof.overlays))
    else:
        loaded = ref if isinstance(ref, KernelTable) else KernelTable.load(resolve_table_path(ref))
        label = Path(loaded.source).stem
    parts = [f"kernel-table:{label}", f"profile {prof.name}"]
    if kernel is not None:
        parts.append(f"attention {kernel.label}")
    if speedup is not None:
        parts.append(f"fp8 GEMM x{speedup:g}")
    # what no table measures (routers, token permutation, AdamW, dtypes like fp32): the datasheet
    # roofline at the scenario's efficiencies, which knows every dtype the accelerator lists
    fallback = RooflineComputeModel.from_accelerator(
        accelerator, efficiency, memory_efficiency, default_dtype=default_dtype
    )
    model = TableComputeModel(
        loaded,
        fallback,
        default_dtype=default_dtype,
        name=" | ".join(parts),
        attention=attention,
        fp8_gemm_speedup=speedup,
        analogs=dict(prof.analogs) if own else None,
    )
    clock = _training_clock_mhz(prof, compute)
    if not own or prof.measured_clock_mhz is None or clock is None or clock == prof.measured_clock_mhz:
        return model
    return SMClock(model, prof.measured_clock_mhz, clock)


def _training_clock_mhz(prof: ComputeProfile, compute: Mapping[str, Any]) -> float | None:
    """The SM clock of a training step: ``accelerator.compute.clock_mhz``, else the profile's
    rated clock (None: neither known)."""
    given = compute.get("clock_mhz")
    if given is None:
        return prof.rated_clock_mhz
    clock = float(given)
    if not (math.isfinite(clock) and clock > 0):
        raise SpecError(f"must be finite and > 0 (got {given!r})", field="accelerator.compute.clock_mhz")
    return clock
