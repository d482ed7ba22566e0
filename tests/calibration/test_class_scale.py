"""options.compute_class_scale (netsim.calibration.class_scale): each kernel call's time scaled by
its class's factor (FP8 casts as their own class, the optimizer step never), wired through
scenarios, and bad factors as one-line errors."""

from __future__ import annotations

import pytest

from netsim.calibration.class_scale import ClassScaled, with_class_scale
from netsim.config.scenario import load_scenario
from netsim.errors import SpecError
from netsim.workload.kernel_calls import KernelCall


class Unit:
    """Every kernel takes 1 s."""

    name = "unit"
    notes = ("a note",)

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        return 1.0

    def estimate(self, *a: object, **k: object) -> object:  # pragma: no cover - not used here
        raise AssertionError


def _call(kernel: str, quant: bool = False, scale: float = 1.0) -> KernelCall:
    return KernelCall(kernel, "fwd", (("tokens", 8.0),), scale, quant=quant)


def test_each_call_is_scaled_by_its_class() -> None:
    model = ClassScaled(Unit(), {"gemm": 2.0, "fp8_cast": 3.0, "other": 5.0, "norm": 7.0})  # type: ignore[arg-type]
    assert _call("grouped_gemm").time_s(model, "bf16") == 2.0
    assert _call("router_linear", scale=0.5).time_s(model, "bf16") == 1.0  # the call's own scale too
    assert _call("residual", quant=True).time_s(model, "bf16") == 3.0  # a cast, not an element-wise add
    assert _call("residual").time_s(model, "bf16") == 5.0
    assert _call("rmsnorm").time_s(model, "bf16") == 7.0
    assert _call("attention").time_s(model, "bf16") == 1.0  # no factor given: unscaled
    assert _call("adamw").time_s(model, "bf16") == 1.0  # the optimizer step is never scaled
    assert model.notes == ["a note"] and "gemm x2" in model.name
    assert with_class_scale(Unit(), None).__class__ is Unit  # type: ignore[arg-type]


def test_scenarios_carry_the_factors_and_refuse_bad_ones() -> None:
    sc = load_scenario(
        {
            "name": "x",
            "topology": "dgx-h100",
            "workload": "gpt-dense",
            "options": {"compute_class_scale": {"gemm": 1.2}},
        },
        source="s.yaml",
    )
    assert sc.options.compute_class_scale == {"gemm": 1.2}
    for bad, field in (({"gemm": 0}, "gemm"), ({"gemms": 1.1}, "gemms"), ({"attention": -1.0}, "attention")):
        with pytest.raises(SpecError) as ei:
            load_scenario(
                {"name": "x", "topology": "dgx-h100", "workload": "gpt-dense", "options": {"compute_class_scale": bad}},
                source="s.yaml",
            )
        msg = str(ei.value)
        assert "s.yaml" in msg and "compute_class_scale" in msg and field in msg and "\n" not in msg


def test_a_run_with_factors_is_slower_by_them() -> None:
    """The default scenario with every class at x2 computes twice as long (the optimizer aside)."""
    from netsim.run import prepare

    base = {"name": "x", "topology": "dgx-h100", "nodes": 1, "workload": "gpt-dense", "steps": 1}
    plain = prepare(load_scenario(base, source="s"))
    two = {c: 2.0 for c in ("gemm", "attention", "fp8_cast", "norm", "other")}
    scaled = prepare(load_scenario({**base, "options": {"compute_class_scale": two}}, source="s"))
    t_plain = {o.name: o.duration_s for o in plain.plan.ops if o.kind == "compute"}
    t_scaled = {o.name: o.duration_s for o in scaled.plan.ops if o.kind == "compute"}
    assert {"F.attn", "F.mlp", "optimizer"} <= set(t_plain)
    for name, t in t_plain.items():
        assert t_scaled[name] == pytest.approx(t if name == "optimizer" else 2 * t), name
