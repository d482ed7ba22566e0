"""Activation recomputation: which forward work the backward repeats instead of storing activations.

Modes (``training.recompute``), registered in :data:`RECOMPUTE`:

``none``
    Every activation the backward needs is stored (Korthikanti et al. 2022, arXiv 2205.05198,
    section 4.1: ``sbh(34 + 5as/h)`` bytes per layer without parallelism).
``selective``
    Korthikanti et al. section 5 ("selective activation recomputation"), Megatron-LM
    ``--recompute-granularity selective``: the attention core (``QK^T``, softmax, dropout,
    attention over ``V``) is recomputed in the backward; its ``5as^2b`` bytes of scores are not
    stored (``34sbh`` per layer).  Cost: one more forward of the attention kernel per layer in
    the backward.
``full``
    Megatron-LM ``--recompute-granularity full`` (every layer, ``--recompute-method uniform
    --recompute-num-layers 1``): only each layer's input is stored (``2sbh``, Korthikanti
    Table 2); the backward of a layer first re-runs its whole forward, TP collectives and MoE
    all-to-alls included (the recomputed forward is the same code).  With
    ``training.recompute_num_layers: N`` only the first ``N`` layers of every pipeline block
    (Megatron's ``--recompute-method block``); the others store everything.
``norms-mla-up``
    DeepSeek-V3 (arXiv 2412.19437, section 3.2.3, "Recomputation of RMSNorm and MLA
    Up-Projection"): every RMSNorm and, in MLA layers, the q and kv up-projections are re-run in
    the backward; their outputs are not stored (per layer and micro-batch ``2sbh`` of norm outputs
    per block and MLA's per-head queries, keys and values ``2sb a (2 d_qk + d_v) / t``; the
    latents they are computed from stay).  Cost: one more forward of two norms and two GEMMs per
    layer, no communication.

``selective`` with ``training.recompute_modules``: Megatron-Core's ``--recompute-modules`` under
``--recompute-granularity selective`` (``recompute_modules`` in transformer_config.py at
NVIDIA/Megatron-LM d98e8a64dd; default ``[core_attn]``), any of:

* ``core_attn``: the attention core (as ``selective`` above);
* ``layernorm``: the two norms of every layer (their outputs are not stored; one more forward
  of each before its block's backward);
* ``mla_up_proj``: MLA's q and kv up-projections (their per-head outputs are not stored; one
  more forward of the two GEMMs before the attention's backward; Megatron refuses it without
  MLA, and so does netsim);
* ``moe_act``: the routed experts' activation function (its output, the second grouped GEMM's
  input, is not stored; one more forward of the activation before the experts' backward);
* ``mlp``: a dense layer's whole MLP block (only its input is stored; its forward, the
  tensor-parallel collectives of its linears included, runs again before its backward);
* ``moe``: an MoE layer's whole MoE block (router, dispatch, experts, combine, unpermute and
  shared experts: only its input, the norm's output, is stored; its forward, all-to-alls
  included, runs again before its backward);
* ``shared_experts``: the shared experts (their interior is not stored; their forward runs
  again before their backward).

``layernorm`` + ``mla_up_proj`` is ``norms-mla-up``; ``moe`` covers ``moe_act`` and
``shared_experts`` (the block it re-runs holds both), so they add nothing beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.errors import SpecError
from netsim.registry import Registry

if TYPE_CHECKING:
    from netsim.config.workload import WorkloadSpec

__all__ = ["MODULES", "RECOMPUTE", "RecomputeMode", "full_layers", "get_recompute", "workload_recompute"]


@dataclass(frozen=True)
class RecomputeMode:
    """What the backward recomputes.

    Attributes:
        name: the YAML name.
        attention_core: the attention core's forward is re-run before its backward (its scores
            are not stored).
        whole_layer: every layer's forward is re-run before its backward (only its input is
            stored).
        norms: the norms are re-run before the backward of their block (their outputs are
            not stored).
        mla_up: MLA's q and kv up-projections are re-run before the attention's backward.
        moe_act: the routed experts' activation is re-run before their backward.
        mlp: a dense layer's MLP block (norm, linears, activation, its TP collectives) is
            re-run before its backward; only its input is stored.
        moe: an MoE layer's MoE block (all-to-alls included) is re-run before its backward.
        shared_experts: the shared experts are re-run before their backward.
    """

    name: str
    attention_core: bool
    whole_layer: bool
    norms: bool = False
    mla_up: bool = False
    moe_act: bool = False
    mlp: bool = False
    moe: bool = False
    shared_experts: bool = False


#: Recompute modes by ``training.recompute`` name.
RECOMPUTE: Registry[RecomputeMode] = Registry("recompute mode", field="training.recompute")
for _mode in (
    RecomputeMode("none", attention_core=False, whole_layer=False),
    RecomputeMode("selective", attention_core=True, whole_layer=False),
    RecomputeMode("full", attention_core=False, whole_layer=True),
    RecomputeMode("norms-mla-up", attention_core=False, whole_layer=False, norms=True, mla_up=True),
):
    RECOMPUTE.add(_mode.name, _mode)


#: Megatron-Core's recompute modules netsim models (``training.recompute_modules``)
MODULES = ("core_attn", "layernorm", "mla_up_proj", "moe_act", "mlp", "moe", "shared_experts")


def workload_recompute(spec: WorkloadSpec) -> RecomputeMode:
    """The recompute mode of a workload (``training.recompute`` with its ``recompute_modules``)."""
    t = spec.training
    return get_recompute(t.recompute, t.recompute_modules, mla=spec.model.mla is not None, source=spec.source)


def get_recompute(
    name: str, modules: list[str] | None = None, *, mla: bool = True, source: str | None = None
) -> RecomputeMode:
    """The mode ``name``, with Megatron's ``modules`` under ``selective`` (module docstring;
    ``mla``: the model has MLA); a one-line SpecError naming the field otherwise."""
    mode = RECOMPUTE.get(name, source=source)
    if modules is None:
        return mode
    if mode.name != "selective":
        raise SpecError(
            f"needs training.recompute selective (got {name})", source=source, field="training.recompute_modules"
        )
    for mod in modules:
        if mod not in MODULES:
            raise SpecError(
                f"unknown module {mod!r}; allowed: {', '.join(MODULES)}",
                source=source,
                field="training.recompute_modules",
            )
    if "mla_up_proj" in modules and not mla:
        raise SpecError(
            "mla_up_proj needs multi-latent attention (model.mla), as Megatron-Core asserts",
            source=source,
            field="training.recompute_modules",
        )
    moe = "moe" in modules  # the whole block: its activation and shared experts come with it
    flags = {
        "attention_core": "core_attn" in modules,
        "whole_layer": False,
        "norms": "layernorm" in modules,
        "mla_up": "mla_up_proj" in modules,
        "moe_act": "moe_act" in modules and not moe,
        "mlp": "mlp" in modules,
        "moe": moe,
        "shared_experts": "shared_experts" in modules and not moe,
    }
    for named in RECOMPUTE.names():  # a set of modules that is a named mode is that mode
        known = RECOMPUTE.get(named)
        if all(getattr(known, k) == v for k, v in flags.items()):
            return known
    return RecomputeMode(f"selective ({', '.join(sorted(set(modules)))})", **flags)


def full_layers(mode: RecomputeMode, blocks: list[list[int]], num_layers: int | None) -> frozenset[int] | None:
    """The layers whose whole forward the backward re-runs: ``None`` for every layer (``full``,
    Megatron's uniform method), the first ``num_layers`` of every pipeline block (its block
    method), no layer for the other modes."""
    if not mode.whole_layer:
        return frozenset()
    if num_layers is None:
        return None
    return frozenset(x for block in blocks for x in block[:num_layers])
