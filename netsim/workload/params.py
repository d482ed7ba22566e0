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

__all__ = ["LayerParams", "ParamCounts", "linear_dims"]


@dataclass(frozen=True)
class LayerParams:
    """Parameters (elements) one rank holds for one layer: dense (DP-reduced) and expert."""

    dense: float
    expert: float


def linear_dims(model: ModelSpec) -> dict[str, tuple[int, int]]:
    """``(in, out)`` of the attention's and the dense MLP's linear layers before tensor parallelism,
    by Megatron's module name (GQA/MHA attention; the LoRA targets, :mod:`netsim.workload.lora`)."""
    h, f, d = model.hidden, model.ffn_hidden, model.dim_per_head
    return {
        "linear_qkv": (h, (model.heads + 2 * model.num_kv_heads) * d),
        "linear_proj": (model.heads * d, h),
        "linear_fc1": (h, (2 if model.activation == "swiglu" else 1) * f),
        "linear_fc2": (f, h),
    }


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
        dims = linear_dims(m)
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
            attn = sum(k * n for name, (k, n) in dims.items() if name in ("linear_qkv", "linear_proj")) / t
        mats = 3 if self.gated else 2
        dense = attn + 2 * h  # two norms
        expert = 0.0
        if m.is_moe_layer(layer):
            moe = m.moe
            assert moe is not None
            dense += h * moe.experts + moe.shared_experts * mats * h * self.expert_ffn
            expert = self.slots * mats * h * self.expert_shard_ffn
        else:
            dense += sum(k * n for name, (k, n) in dims.items() if name in ("linear_fc1", "linear_fc2")) / t
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
        # (in + out) r / tp per target: the adapter's A (in -> r) and B (r -> out), each split
        # over TP (netsim.workload.lora); the MLP targets only where the layer has a dense MLP
        dims, moe = linear_dims(self.m), self.m.is_moe_layer(layer)
        adapters = [dims[t] for t in self.lora.targets if not (moe and t in ("linear_fc1", "linear_fc2"))]
        return LayerParams(dense=sum(k + n for k, n in adapters) * self.lora.rank / self.tp, expert=0.0)

    def trainable_head_params(self) -> float:
        """The output head's trained parameters (none under LoRA)."""
        return 0.0 if self.lora is not None else self.head_params()

    def trainable_embedding_params(self) -> float:
        """The embedding's trained parameters (none under LoRA)."""
        return 0.0 if self.lora is not None else self.embedding_params()
