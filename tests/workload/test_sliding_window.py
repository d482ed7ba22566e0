"""Sliding-window attention (``model.sliding_window``): which layers are windowed, the attention
core's shape, and its speed-up against Mistral 7B's published one."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.workload import load_workload
from netsim.workload.costs import ModelCosts

from .test_lora import MODEL, S, _costs


def test_sliding_window_layers_follow_the_global_pattern() -> None:
    def model(**window: Any) -> Any:
        return load_workload({"model": {**MODEL, "layers": 12, "sliding_window": window}}, source="w.yaml").model

    assert [model(tokens=128).attention_window(x) for x in range(3)] == [128, 128, 128]  # Mistral: every layer
    gpt_oss = model(tokens=128, global_every=2, global_first=1)  # sliding, full, sliding, ...
    assert [gpt_oss.attention_window(x) for x in range(4)] == [128, None, 128, None]
    gemma3 = model(tokens=1024, global_every=6, global_first=5)  # five local layers, then a global one
    assert [x for x in range(12) if gemma3.attention_window(x) is None] == [5, 11]
    assert model(tokens=S).attention_window(0) is None  # a window as long as the sequence: none


def test_a_window_is_causal_calls_of_twice_its_length() -> None:
    c = _costs()
    (full,), (win,) = c.attention_core("F"), c.attention_core("F", 256)
    assert dict(full.shape)["seq"] == S and dict(full.shape)["batch"] == 1
    # S x 256 score entries (less 256^2 / 2): S / 512 causal calls of 512 tokens
    assert dict(win.shape)["seq"] == 512 and dict(win.shape)["batch"] == S / 512
    assert c.attention_core("F", S) == c.attention_core("F")  # no shorter than half the sequence: whole
    # packed documents longer than twice the window are windowed inside each document
    (both,) = _costs(document_tokens=1024).attention_core("F", 128)
    assert dict(both.shape)["seq"] == 256 and dict(both.shape)["batch"] == (S / 1024) * (1024 / 256)


def test_sliding_window_speedup_against_mistral() -> None:
    # Mistral 7B (arXiv 2310.06825, section 2): "for a sequence length of 16K and W = 4096, changes
    # made to FlashAttention and xFormers yield a 2x speed improvement over a vanilla attention
    # baseline"; netsim's H100 attention model (FlashAttention-3's measured curve): forward and backward
    from netsim.config.scenario import load_scenario
    from netsim.run import build_compute_model
    from netsim.topology import load_topology

    graph = load_topology("dgx-h100", nodes=1)
    scenario = load_scenario({"name": "w", "topology": "dgx-h100", "nodes": 1, "workload": "gpt-dense"}, source="t")
    model = build_compute_model(graph, scenario, "bf16")
    spec = load_workload({"model": {**MODEL, "hidden": 4096, "heads": 32, "kv_heads": 8, "seq_len": 16384}}, source="m")
    costs = ModelCosts(spec.model, 1, 1)

    def seconds(window: int | None) -> float:
        calls = costs.attention_core("F", window) + costs.attention_core("BW", window)
        return sum(k.time_s(model, "bf16") for k in calls)

    assert seconds(None) / seconds(4096) == pytest.approx(2.0, rel=0.15)
