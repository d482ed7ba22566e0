"""examples/hf_routing_trace.py: routing traces from Hugging Face MoE models (tiny random models, no download)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("hf_routing_trace", ROOT / "examples" / "hf_routing_trace.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["hf_routing_trace"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_text_batches_split_tokens_into_rank_rows() -> None:
    m = _script()
    b = m.text_batches(np.arange(10), steps=2, rows=2, seq_len=3)
    assert [x.tolist() for x in b] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 0, 1]]]


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("kind", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_tiny_models_give_a_valid_trace_that_matches_the_router(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch

    from netsim.moe import read_routing_trace

    m = _script()
    out = tmp_path / f"{kind}.parquet"
    assert (
        m.main(
            ["--tiny", kind, "--ep", "4", "--ranks-per-node", "2", "--seq-len", "32", "--steps", "2", "--out", str(out)]
        )
        == 0
    )
    tr = read_routing_trace(out)
    assert tr.meta.experts == 8 and tr.meta.top_k == 2 and tr.meta.ep == 4 and tr.meta.tokens_per_rank == 32
    assert tr.steps == [0, 1] and len(tr.layers) == 2
    for _, _, _, tok, drp in tr.iter_counts():
        assert drp.sum() == 0 and tok.sum(axis=1).tolist() == [32 * 2] * 4  # every token, top-2, per rank
    # the recorded experts are the router's own choice: recompute layer 0 of Mixtral by hand
    if kind == "mixtral":
        model = m.tiny_model("mixtral")
        ids = torch.as_tensor(np.arange(4 * 32).reshape(4, 32) % 512)
        rec = m.record_expert_ids(model, ids)
        layer0 = model.model.layers[0]
        with torch.no_grad():
            h = model.model.embed_tokens(ids)
            pos = torch.arange(32)[None]
            out_attn = layer0.self_attn(
                layer0.input_layernorm(h), position_embeddings=model.model.rotary_emb(h, pos), attention_mask=None
            )[0]
            x = layer0.post_attention_layernorm(h + out_attn).reshape(-1, h.shape[-1])
            want = torch.topk(x @ layer0.mlp.gate.weight.T, 2, dim=-1).indices.numpy()
        assert rec[0].shape == (4 * 32, 2)
        assert (np.sort(rec[0], axis=1) == np.sort(want, axis=1)).mean() > 0.9
