"""Torch wrappers: identical routing to numpy, equal loss values, gradients that flow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from netsim.moe import make_router

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from netsim.moe.torch_routers import torch_router  # noqa: E402

CASES = [
    ("switch", {"capacity_factor": 1.0}),
    ("gshard", {"capacity_factor": 1.0}),
    ("mixtral", {}),
    ("deepseek", {"top_k": 2, "n_groups": 4, "topk_groups": 2}),
    ("expert_choice", {}),
    ("locmoe", {"local_experts": [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]] * 2, "mu": 0.1}),
    ("hash", {"vocab_size": 64}),
    ("rre", {"vocab_size": 64, "domains": 2}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_torch_routes_like_numpy_and_losses_agree(name: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 16))
    ids = rng.integers(0, 64, 96)
    src = np.repeat(np.arange(4), 24)
    seq = np.repeat(np.arange(8), 12)
    np_router = make_router(name, n_experts=8, hidden=16, seed=4, **params)
    ref = make_router(name, n_experts=8, hidden=16, seed=4, **params).route(x, token_ids=ids, src_rank=src, seq_ids=seq)
    mod = torch_router(np_router).double()
    out = mod(torch.tensor(x), token_ids=ids, src_rank=src, seq_ids=seq)
    assert np.array_equal(out.result.experts, ref.experts)
    assert np.allclose(out.gates.detach().numpy(), ref.gates, atol=1e-12)
    assert set(out.losses) == set(ref.aux_losses)
    # both compute the gate logits as a float32 product, but numpy's BLAS and torch's sum in
    # different orders (logits differ in the last float32 bit), so the losses agree to ~1e-8
    for k, v in out.losses.items():
        assert float(v.detach()) == pytest.approx(ref.aux_losses[k], rel=1e-6, abs=1e-15)


def test_gradients_reach_router_weights_and_inputs() -> None:
    r = make_router("switch", n_experts=4, hidden=8, seed=0)
    mod: Any = torch_router(r)
    x = torch.randn(32, 8, requires_grad=True)
    out = mod(x)
    (out.gates.sum() + out.losses["aux"]).backward()
    assert mod.weight.grad is not None and mod.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_locmoe_locality_loss_trains_its_bias_towards_local_experts() -> None:
    # rank 0's node holds expert 0, rank 1's node expert 1; a shared bias cannot favour both,
    # but with only rank-0 tokens minimising L_loc must raise expert 0's bias.
    r: Any = make_router("locmoe", n_experts=2, hidden=4, local_experts=[[0], [1]], mu=1.0, alpha=0.0)
    mod: Any = torch_router(r)
    opt = torch.optim.SGD(mod.parameters(), lr=0.5)
    x = torch.randn(64, 4)
    src = np.zeros(64, dtype=np.int64)
    first = float(mod(x, src_rank=src).losses["loc"].detach())
    for _ in range(30):
        out = mod(x, src_rank=src)
        loss = out.losses["loc"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    assert mod.gate_bias[0] > mod.gate_bias[1]
    mod.sync_to_numpy()
    assert r.gate_bias[0] == pytest.approx(float(mod.gate_bias[0].detach()))
