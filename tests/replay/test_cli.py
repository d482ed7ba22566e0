"""`netsim run` through the real entry point: the default scenario, and bad input exiting 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from netsim.cli import main

from .conftest import tiny_scenario


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_default_scenario_runs_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _main(["run", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "step time:" in text and "expert all-to-all" in text and str(out) in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == "default"
    for cls in ("dp", "pp", "ep", "tp"):
        assert summary["bytes_by_class"][cls] > 0
    assert (out / "scenario.yaml").is_file() and (out / "ops.parquet").is_file()


def test_large_exact_run_points_to_the_faster_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from netsim.cli import run_cmd

    monkeypatch.setattr(run_cmd, "LARGE_RUN_FLOWS", 100)
    assert _main(["run", "--out", str(tmp_path / "a"), "--quiet", "--no-report", "--collective-model", "exact"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "--collective-model auto or coflow" in out and "simulated with: exact (set by the user)" in out
    assert (
        _main(
            [
                "run",
                "--out",
                str(tmp_path / "b"),
                "--quiet",
                "--no-report",
                "--collective-model",
                "coflow",
                "--routing-samples",
                "2",
            ]
        )
        == 0
    )
    assert "--collective-model auto or coflow" not in capsys.readouterr().out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["collective_model"] == "coflow" and summary["routing_samples"] == 2
    assert summary["lockstep"] is False
    assert summary["model_choice"] == "coflow + routing samples 2 (set by the user)"


def test_lockstep_flag_reaches_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["run", "--out", str(tmp_path / "a"), "--quiet", "--no-report", "--lockstep"]) == 0
    text = capsys.readouterr().out
    assert "lockstep: one rank per EP group simulated" in text
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["lockstep"] is True and summary["num_ranks"] > summary["parallelism"]["pp"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_ep_not_dividing_the_ranks_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = tmp_path / "bad-ep.yaml"
    scen.write_text(yaml.safe_dump(tiny_scenario(name="bad-ep")))
    code = _main(["run", str(scen), "--out", str(tmp_path / "o"), "--quiet", "--set", "workload.parallelism.ep=3"])
    assert code == 2
    err = _error_line(capsys)
    assert "parallelism.ep" in err and "allowed: 1, 2, 4, 8" in err
    assert not (tmp_path / "o").exists()


def test_malformed_yaml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = tmp_path / "broken.yaml"
    scen.write_text("name: x\ntopology: [dgx-h100\nworkload: gpt-dense\n")
    assert _main(["run", str(scen), "--quiet"]) == 2
    assert "broken.yaml" in _error_line(capsys)


def test_unknown_workload_field_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _main(
            [
                "run",
                "--topology",
                "dgx-h100",
                "--nodes",
                "1",
                "--workload",
                "gpt-dense",
                "--quiet",
                "--set",
                "workload.parallelism.ppp=2",
            ]
        )
        == 2
    )
    err = _error_line(capsys)
    assert "parallelism.ppp" in err and "allowed keys" in err


def test_unknown_preset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["run", "--topology", "dgx-h100", "--workload", "no-such-model", "--quiet"]) == 2
    assert "gpt-dense" in _error_line(capsys)


def test_a_run_that_does_not_fit_exits_2_or_warns_with_allow_oom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["--set", "topology.accelerator.memory=1GB", "--no-report", "--quiet"]
    assert _main(["run", "--out", str(tmp_path / "a"), *small]) == 2
    err = _error_line(capsys)
    assert "does not fit in accelerator memory: needs 1.7 GiB per rank on pp stage 0 (params 0.2," in err
    assert "HBM is 0.9 GiB" in err and not (tmp_path / "a").exists()
    assert _main(["run", "--out", str(tmp_path / "b"), *small, "--allow-oom"]) == 0
    out = capsys.readouterr()
    assert "memory: 1.7 GiB per rank at most (pp stage 0: params 0.2" in out.out
    assert "warning: rank 0 needs 1.7 GiB, more than the HBM 0.9 GiB" in out.err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["memory"]["fits"] is False and summary["memory"]["capacity_bytes"] == 1e9


def test_unknown_recompute_mode_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["run", "--quiet", "--no-report", "--set", "workload.training.recompute=partial"]) == 2
    err = _error_line(capsys)
    assert "training.recompute: unknown recompute mode 'partial'; allowed: none, selective, full, norms-mla-up" in err
