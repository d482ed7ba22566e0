"""The issue 18 MoE-system features through `netsim run` (the real entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netsim.cli import main

from ..replay.conftest import tiny_scenario


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_run_reports_the_batch_and_the_dispatch(tmp_path: Path) -> None:
    scen = tmp_path / "tiny.yaml"
    scen.write_text(yaml.safe_dump(tiny_scenario()))
    sets = [
        "workload.schedule.name=zb-h1",
        "workload.model.moe.dispatcher=deepep",
        "workload.placement.name=eplb",
        "workload.placement.redundant_experts=8",
        "workload.router.name=zipf",
        "workload.global_batch_size=8",
        "workload.batch_reference_devices=8",
    ]
    out = tmp_path / "run"
    argv = ["run", str(scen), "--out", str(out), "--quiet", "--no-report"]
    assert _main(argv + [a for s in sets for a in ("--set", s)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schedule"] == "zb-h1"
    assert summary["batch"]["scaling"] == "per-device" and summary["batch"]["global_batch_size"] == 16
    md = summary["moe_dispatch"]
    assert md["dispatcher"] == "deepep" and md["dedup"].startswith("exact") and md["expert_layout"] == "megatron"
    assert md["call_latency_us"] == pytest.approx(250.0)  # DeepEP's fixed time per call
    assert summary["bytes_by_class"]["dp"] > 0


def test_run_prints_the_dispatch_kernels_time_per_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = tmp_path / "tiny.yaml"
    scen.write_text(yaml.safe_dump(tiny_scenario()))
    argv = ["run", str(scen), "--out", str(tmp_path / "run"), "--no-report"]
    sets = [
        "workload.model.moe.dispatcher=hybridep",
        "workload.model.moe.dispatch_latency_us=40",
        "workload.model.moe.host_sync_us=100",
    ]
    assert _main(argv + [a for s in sets for a in ("--set", s)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(dispatcher hybridep, 40 us fixed per call, 100 us host wait per forward dispatch)" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["moe_dispatch"]["host_sync_us"] == pytest.approx(100.0)


def test_an_unused_placement_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = tmp_path / "tiny.yaml"
    scen.write_text(yaml.safe_dump(tiny_scenario()))
    assert (
        _main(
            [
                "run",
                str(scen),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--set",
                "workload.placement.options.policy=global",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "placement.options.policy: unknown option 'policy' of placement contiguous; allowed: none" in err
    assert not (tmp_path / "o").exists()
