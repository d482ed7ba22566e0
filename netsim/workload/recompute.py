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
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.registry import Registry

__all__ = ["RECOMPUTE", "RecomputeMode", "full_layers", "get_recompute"]


@dataclass(frozen=True)
class RecomputeMode:
    """What the backward recomputes.

    Attributes:
        name: the YAML name.
        attention_core: the attention core's forward is re-run before its backward (its scores
            are not stored).
        whole_layer: every layer's forward is re-run before its backward (only its input is
            stored).
        norms_mla_up: the norms and MLA's up-projections are re-run before the backward of
            their block (their outputs are not stored).
    """

    name: str
    attention_core: bool
    whole_layer: bool
    norms_mla_up: bool = False


#: Recompute modes by ``training.recompute`` name.
RECOMPUTE: Registry[RecomputeMode] = Registry("recompute mode", field="training.recompute")
for _mode in (
    RecomputeMode("none", attention_core=False, whole_layer=False),
    RecomputeMode("selective", attention_core=True, whole_layer=False),
    RecomputeMode("full", attention_core=False, whole_layer=True),
    RecomputeMode("norms-mla-up", attention_core=False, whole_layer=False, norms_mla_up=True),
):
    RECOMPUTE.add(_mode.name, _mode)


def get_recompute(name: str, *, source: str | None = None) -> RecomputeMode:
    """The mode ``name``; a one-line SpecError naming ``training.recompute`` otherwise."""
    return RECOMPUTE.get(name, source=source)


def full_layers(mode: RecomputeMode, blocks: list[list[int]], num_layers: int | None) -> frozenset[int] | None:
    """The layers whose whole forward the backward re-runs: ``None`` for every layer (``full``,
    Megatron's uniform method), the first ``num_layers`` of every pipeline block (its block
    method), no layer for the other modes."""
    if not mode.whole_layer:
        return frozenset()
    if num_layers is None:
        return None
    return frozenset(x for block in blocks for x in block[:num_layers])
