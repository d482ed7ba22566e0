"""The parameters one rank holds: per layer (dense, reduced over data parallelism, and expert),
the embedding and the output head, under tensor parallelism and the rank's expert slots; and the
ones it trains (all of them, or with LoRA only the adapters, :mod:`netsim.workload.lora`).

:class:`ParamCounts` is the counting half of :class:`netsim.workload.costs.ModelCosts` (which
derives from it and sets the attributes it reads: the model ``m``, ``tp``, the expert ``slots``,
``gated``, ``expert_ffn``, ``expert_shard_ffn`` and ``lora``); the memory tally, the gradient reduction and
the optimizer step count with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.config.model import ModelSpec
from netsim.config.workload import LoraSpec
from netsim.workload.lora import adapter_params

__all__ = ["LayerParams", "ParamCounts"]


@dataclass(frozen=True)
class LayerParams:
    """Parameters (elements) one rank holds for one layer: dense (DP-reduced) and expert."""

    dense: float
    expert: float


class ParamCounts:
    """Parameter counts of one rank (elements); see the module doc for the attributes it reads."""

    m: ModelSpec
    tp: int
    slots: int
    gated: bool
    expert_ffn: int
    expert_shard_ffn: int
    lora: LoraSpec | None

    def layer_params(self, layer: int) -> LayerParams:
        """Parameters of ``layer`` held by one rank (elements)."""
        m, t = self.m, self.tp
        h = m.hidden
        if m.mla is not None:
            a = m.mla
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            attn = (
                h * a.q_lora_rank
                + a.q_lora_rank * m.heads * qk / t
                + h * (a.kv_lora_rank + a.qk_rope_head_dim)
                + a.kv_lora_rank * m.heads * (a.qk_nope_head_dim + a.v_head_dim) / t
                + m.heads * a.v_head_dim * h / t
            )
        else:
            d = m.dim_per_head
            attn = h * (m.heads + 2 * m.num_kv_heads) * d / t + m.heads * d * h / t
        mats = 3 if self.gated else 2
        dense = attn + 2 * h  # two norms
        expert = 0.0
        if m.is_moe_layer(layer):
            moe = m.moe
            assert moe is not None
            dense += h * moe.experts + moe.shared_experts * mats * h * self.expert_ffn
            expert = self.slots * mats * h * self.expert_shard_ffn
        else:
            dense += mats * h * m.ffn_hidden / t
        if m.is_mtp_layer(layer):  # a multi-token-prediction block: its input norms, projection M, head norm
            dense += 3 * h + 2 * h * h
        return LayerParams(dense=dense, expert=expert)

    def embedding_params(self) -> float:
        return self.m.vocab * self.m.hidden / self.tp

    def head_params(self) -> float:
        return self.m.vocab * self.m.hidden / self.tp + self.m.hidden

    def trainable_params(self, layer: int) -> LayerParams:
        """Parameters of ``layer`` one rank trains: :meth:`layer_params`, or with LoRA only its
        adapters'."""
        if self.lora is None:
            return self.layer_params(layer)
        return LayerParams(dense=adapter_params(self.m, self.lora, self.tp, self.m.is_moe_layer(layer)), expert=0.0)

    def trainable_head_params(self) -> float:
        """The output head's trained parameters (none under LoRA)."""
        return 0.0 if self.lora is not None else self.head_params()

    def trainable_embedding_params(self) -> float:
        """The embedding's trained parameters (none under LoRA)."""
        return 0.0 if self.lora is not None else self.embedding_params()
