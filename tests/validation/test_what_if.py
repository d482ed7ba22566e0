"""``netsim validate --set``: what-if overrides on every selected published case."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.cli import main
from netsim.errors import SpecError
from netsim.validation.runner import run_validation, select_cases
from netsim.validation.sources import TrainingCase, load_sources, with_overrides

CASE = "nemo-2407-pretrain-h100/llama2-7b-8gpus"


def test_overrides_reach_every_case_and_leave_the_sources_alone() -> None:
    srcs = load_sources()
    before = [dict(s.system.set) for s in srcs]
    new = with_overrides(
        srcs,
        [
            "topology.accelerator.compute.attention=flash-attention-2",
            "workload.micro_batch_size=2",
            "options.lockstep=true",
        ],
    )
    assert with_overrides(srcs, []) == srcs
    for old, src in zip(srcs, new, strict=True):
        own = {k.removeprefix("topology."): v for k, v in old.system.set.items()}
        assert src.system.set == {**own, "accelerator.compute.attention": "flash-attention-2"}
        assert "accelerator.compute.attention=flash-attention-2" in src.system.overrides()
        for c_old, c in zip(old.cases, src.cases, strict=True):
            if isinstance(c, TrainingCase):
                assert c.workload_set == {**c_old.workload_set, "micro_batch_size": 2}
                assert c.options == {**c_old.options, "lockstep": True}  # values read as YAML
    assert [dict(s.system.set) for s in srcs] == before  # the loaded sources are untouched


def test_an_override_wins_over_the_source_s_own_key_with_or_without_its_prefix() -> None:
    (src,) = [s for s in load_sources() if s.source.id == "llama3-405b"]
    prefixed = src.model_copy(
        update={"system": src.system.model_copy(update={"set": {"topology.collectives.qps_per_connection": 16}})}
    )
    (new,) = with_overrides([prefixed], ["topology.collectives.qps_per_connection=1"])
    assert new.system.overrides() == ["collectives.qps_per_connection=1"]


@pytest.mark.parametrize(
    "item", ["micro_batch_size=2", "workload.micro_batch_size", "topology.=1", "options.x=[1", "options=1"]
)
def test_bad_overrides_name_the_option(item: str) -> None:
    with pytest.raises(SpecError) as ei:
        with_overrides(load_sources(), [item])
    assert ei.value.source == f"--set {item}"  # the one-line error names the whole item


def test_a_what_if_changes_the_prediction_not_the_measurement() -> None:
    srcs = load_sources()
    (one,) = select_cases(srcs, only=CASE, kinds=["training"])
    base = run_validation(srcs, only=CASE, kinds=["training"]).table.iloc[0]
    fa2 = with_overrides(srcs, ["topology.accelerator.compute.attention=flash-attention-2"])
    slow = run_validation(fa2, only=CASE, kinds=["training"]).table.iloc[0]
    assert slow["measured"] == base["measured"] == one[1].measured
    # FlashAttention-2 runs the attention core at ~55% of FlashAttention-3's speed: a slower step
    assert 0.85 < slow["predicted"] / base["predicted"] < 0.99


def test_a_bad_what_if_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v"
    argv = ["validate", "--kind", "training", "--only", CASE, "-o", str(out)]
    with pytest.raises(SystemExit) as ei:
        main([*argv, "--set", "topology.accelerator.compute.attention=fa9"])
    assert ei.value.code == 2 and not out.exists()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "accelerator.compute.attention" in err[0] and "allowed: flash-attention-3" in err[0]
