"""Fixtures for replay tests: a tiny MoE scenario on two DGX H100 servers."""

from __future__ import annotations

from typing import Any

import pytest

TINY_MOE: dict[str, Any] = {
    "name": "tiny-moe",
    "model": {
        "layers": 2,
        "hidden": 512,
        "ffn_hidden": 1024,
        "heads": 8,
        "vocab": 4096,
        "seq_len": 512,
        "moe": {"experts": 16, "top_k": 2, "every_n": 1},
    },
    "parallelism": {"pp": 2, "tp": 2, "ep": 8, "zero_stage": 1},
    "micro_batch_size": 1,
    "num_microbatches": 2,
    "grad_bucket_bytes": "4MB",
    "steps": 1,
}


def tiny_scenario(**changes: Any) -> dict[str, Any]:
    """The tiny MoE scenario mapping (2 x dgx-h100, TP2 x PP2 x DP4, EP8), with ``changes``."""
    base: dict[str, Any] = {
        "name": "tiny",
        "topology": "dgx-h100",
        "nodes": 2,
        "workload": TINY_MOE,
        "seed": 0,
        "options": {"algorithms": {"all_to_allv": "direct"}},
    }
    base.update(changes)
    return base


def replay(scenario: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Prepare and replay ``scenario``: (the prepared run, the replay result, its summary)."""
    from netsim.config.scenario import load_scenario
    from netsim.run import prepare, simulate, summarize_replay

    prep = prepare(load_scenario(scenario))
    res, net = simulate(prep)
    return prep, res, summarize_replay(prep, res, net, None)[0]


@pytest.fixture
def tiny() -> dict[str, Any]:
    return tiny_scenario()
