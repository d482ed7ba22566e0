"""Record a routing trace from a Hugging Face MoE model's forward pass.

Works with the transformers (>= 4.57 / 5.x) MoE models whose MoE block calls its experts as
``self.experts(hidden_states, top_k_index, top_k_weights)``: Mixtral, Qwen2-MoE, Qwen3-MoE,
DeepSeek-V3 (and others built the same way).  A forward pre-hook on every ``*Experts`` module
records the experts each token was sent to, *after* everything the router does (softmax or
sigmoid, DeepSeek's bias and node-limited groups); models of older transformers versions that
only expose ``output_router_logits`` fall back to the top-k of the returned router logits.

The batch is laid out as the expert-parallel group would see it: ``ep`` ranks, each with
``--sequences-per-rank`` sequences of ``--seq-len`` tokens, rank ``r`` holding rows ``r *
spr ... (r + 1) * spr - 1``; every ``--steps`` is a new batch of text.  The per-token expert ids
``[steps, layers, ep, tokens, top_k]`` become a routing trace (:mod:`netsim.moe.trace`, Parquet)
with :func:`netsim.moe.trace.trace_from_expert_ids`; ``netsim run --routing-trace FILE`` replays
it.  Nothing is downloaded: ``--model`` must be a local directory (``from_pretrained`` with
``local_files_only=True``), or ``--tiny KIND`` builds a small randomly initialised model locally.

Examples::

    # a tiny random Mixtral-style model (8 experts, top-2), text = this file, 4 EP ranks, 2 per node
    python examples/hf_routing_trace.py --tiny mixtral --ep 4 --ranks-per-node 2 --out /tmp/hf.parquet
    # a downloaded model (its tokenizer is used), 16 EP ranks of 8 per node, 4 steps of 512 tokens
    python examples/hf_routing_trace.py --model ~/models/Qwen1.5-MoE-A2.7B --text corpus.txt \\
        --ep 16 --ranks-per-node 8 --seq-len 512 --steps 4 --out qwen.parquet

Needs ``pip install torch transformers``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netsim.moe.trace import RoutingTrace, trace_from_expert_ids, write_routing_trace

TINY_KINDS = ("mixtral", "qwen2_moe", "deepseek_v3")


def tiny_model(
    kind: str, *, experts: int = 8, top_k: int = 2, layers: int = 2, hidden: int = 64, vocab: int = 512, seed: int = 0
) -> Any:
    """A small randomly initialised MoE causal LM of the given architecture (built locally)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        num_experts_per_tok=top_k,
    )
    if kind == "mixtral":
        cfg = tf.MixtralConfig(intermediate_size=2 * hidden, num_local_experts=experts, **common)
        return tf.MixtralForCausalLM(cfg).eval()
    if kind == "qwen2_moe":
        cfg = tf.Qwen2MoeConfig(
            intermediate_size=2 * hidden,
            moe_intermediate_size=hidden,
            num_experts=experts,
            shared_expert_intermediate_size=hidden,
            decoder_sparse_step=1,
            **common,
        )
        return tf.Qwen2MoeForCausalLM(cfg).eval()
    if kind == "deepseek_v3":
        cfg = tf.DeepseekV3Config(
            intermediate_size=2 * hidden,
            moe_intermediate_size=hidden,
            n_routed_experts=experts,
            n_shared_experts=1,
            n_group=2,
            topk_group=1,
            first_k_dense_replace=0,
            kv_lora_rank=32,
            q_lora_rank=32,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=16,
            **common,
        )
        return tf.DeepseekV3ForCausalLM(cfg).eval()
    raise SystemExit(f"--tiny must be one of {', '.join(TINY_KINDS)} (got {kind!r})")


def _layer_of(name: str) -> int:
    m = re.search(r"layers\.(\d+)\.", name + ".")
    return int(m.group(1)) if m else -1


def num_experts(model: Any) -> int:
    c = model.config
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        v = getattr(c, key, None)
        if isinstance(v, int) and v > 0:
            return v
    raise SystemExit("cannot tell the number of routed experts from the model config")


def record_expert_ids(model: Any, input_ids: Any) -> dict[int, np.ndarray]:
    """Run one forward pass; return ``{model layer index: expert ids [batch * seq, top_k]}``."""
    import torch

    seen: dict[int, np.ndarray] = {}
    hooks = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            idx = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
            if idx is not None:
                seen[_layer_of(name)] = idx.detach().reshape(idx.shape[0], -1).cpu().numpy().astype(np.int64)

        return pre

    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("Experts"):
            hooks.append(mod.register_forward_pre_hook(hook(name), with_kwargs=True))
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, output_router_logits=not hooks)
    finally:
        for h in hooks:
            h.remove()
    if not seen:  # older transformers: top-k of the router logits the model returns
        k = int(model.config.num_experts_per_tok)
        for layer, logits in enumerate(getattr(out, "router_logits", None) or ()):
            seen[layer] = torch.topk(logits.float(), k, dim=-1).indices.cpu().numpy().astype(np.int64)
    if not seen:
        raise SystemExit("no MoE routing seen in the forward pass (is this a MoE model?)")
    return dict(sorted(seen.items()))


def routing_trace(
    model: Any,
    batches: Sequence[np.ndarray],
    *,
    ep: int,
    ranks_per_node: int,
    router: str = "measured",
    source: str = "<hf>",
) -> RoutingTrace:
    """A routing trace of ``batches`` (each ``[ep * sequences_per_rank, seq_len]`` token ids)."""
    import torch

    steps = []
    for ids in batches:
        rows, seq = ids.shape
        if rows % ep:
            raise SystemExit(f"a batch of {rows} sequences does not split over ep={ep} ranks")
        per_layer = record_expert_ids(model, torch.as_tensor(ids, dtype=torch.long))
        steps.append(np.stack([e.reshape(ep, (rows // ep) * seq, -1) for e in per_layer.values()]))
    expert_ids = np.stack(steps)  # [steps, layers, ep, tokens, k]
    c = model.config
    return trace_from_expert_ids(
        expert_ids,
        experts=num_experts(model),
        ep=ep,
        ranks_per_node=ranks_per_node,
        hidden=int(c.hidden_size),
        router=router,
        source=source,
        extra={
            "source": "examples/hf_routing_trace.py",
            "model_type": str(getattr(c, "model_type", "?")),
            "layers": [int(x) for x in per_layer],
        },
    )


def text_batches(tokens: np.ndarray, *, steps: int, rows: int, seq_len: int) -> list[np.ndarray]:
    """``steps`` batches of ``rows`` consecutive windows of ``seq_len`` tokens."""
    need = steps * rows * seq_len
    if tokens.size < need:
        reps = -(-need // max(tokens.size, 1))
        tokens = np.tile(tokens, reps)
    return [tokens[s * rows * seq_len : (s + 1) * rows * seq_len].reshape(rows, seq_len) for s in range(steps)]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="local directory of a Hugging Face MoE model (no download)")
    src.add_argument("--tiny", choices=TINY_KINDS, help="build a small random model of this kind instead")
    p.add_argument("--text", type=Path, default=Path(__file__), help="text to run through the model")
    p.add_argument("--ep", type=int, default=4, help="expert-parallel ranks the batch is split over")
    p.add_argument("--ranks-per-node", type=int, default=2)
    p.add_argument("--sequences-per-rank", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=1, help="batches (trace steps)")
    p.add_argument("--out", type=Path, required=True, help="routing trace (.parquet)")
    a = p.parse_args(argv)
    raw = a.text.read_bytes()
    if a.tiny:
        model = tiny_model(a.tiny)
        tokens = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) % int(model.config.vocab_size)
        router = f"tiny-{a.tiny}"
    else:
        import transformers as tf

        model = tf.AutoModelForCausalLM.from_pretrained(a.model, local_files_only=True).eval()
        tok = tf.AutoTokenizer.from_pretrained(a.model, local_files_only=True)
        tokens = np.asarray(tok(raw.decode("utf-8", errors="replace"))["input_ids"], dtype=np.int64)
        router = str(getattr(model.config, "model_type", "measured"))
    batches = text_batches(tokens, steps=a.steps, rows=a.ep * a.sequences_per_rank, seq_len=a.seq_len)
    trace = routing_trace(
        model, batches, ep=a.ep, ranks_per_node=a.ranks_per_node, router=router, source=str(a.model or a.tiny)
    )
    write_routing_trace(trace, a.out)
    m = trace.meta
    print(
        f"wrote {a.out}: {len(trace.steps)} steps x {len(trace.layers)} MoE layers, {m.experts} experts, "
        f"top-{m.top_k}, ep {m.ep}, {m.tokens_per_rank} tokens per rank"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
