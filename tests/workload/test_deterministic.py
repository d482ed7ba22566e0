"""Megatron's --deterministic-mode (``training.deterministic``): the fused attention's backward in
its deterministic algorithm, nothing else timed differently."""

from __future__ import annotations

import pytest

from netsim.config.model import ModelSpec
from netsim.workload.costs import DETERMINISTIC_ATTENTION_BWD, ModelCosts
from tests.workload.plans import small_plan

MODEL = {"layers": 2, "hidden": 256, "ffn_hidden": 512, "heads": 8, "vocab": 1000, "seq_len": 512}


def test_the_factor_is_flashattention3s_published_ratio() -> None:
    # Dao-AILab/flash-attention #1893, H100, head dim 128, causal, sequence 8192
    assert pytest.approx(1.2129, abs=1e-4) == DETERMINISTIC_ATTENTION_BWD


@pytest.mark.parametrize("flash", [True, False])
def test_only_the_fused_attention_backward_is_slower(flash: bool) -> None:
    model = ModelSpec.model_validate(MODEL)
    base = ModelCosts(model, 1, 1, flash_attention=flash)
    det = ModelCosts(model, 1, 1, flash_attention=flash, deterministic=True)
    for part in ("F", "B", "W", "BW"):
        a, b = base.attention(part), det.attention(part)
        assert [(c.kernel, c.pass_, c.shape) for c in a] == [(c.kernel, c.pass_, c.shape) for c in b]
        for x, y in zip(a, b, strict=True):
            slower = flash and x.kernel == "attention" and x.pass_ == "bwd"
            assert y.scale == pytest.approx(x.scale * (DETERMINISTIC_ATTENTION_BWD if slower else 1.0))
    assert det.mlp("BW") == base.mlp("BW")


def test_a_plan_in_deterministic_mode_takes_longer_by_its_attention_backward() -> None:
    base = small_plan(MODEL, {"pp": 1, "tp": 1}, "1f1b")
    det = small_plan(MODEL, {"pp": 1, "tp": 1}, "1f1b", "training.deterministic=true")

    def attention(plan, pass_: str) -> float:  # type: ignore[no-untyped-def]
        return sum(r["time_s"] for r in plan.kernel_rows if r["kernel"] == "attention" and r["pass"] == pass_)

    assert attention(det, "fwd") == pytest.approx(attention(base, "fwd"))
    assert attention(det, "bwd") == pytest.approx(attention(base, "bwd") * DETERMINISTIC_ATTENTION_BWD)
    extra = attention(det, "bwd") - attention(base, "bwd")
    b, d = (sum(o.duration_s for o in p.ops if o.kind == "compute") for p in (base, det))
    assert base.layout is not None
    assert d - b == pytest.approx(extra * base.layout.world, rel=1e-6)  # every rank, the same extra
