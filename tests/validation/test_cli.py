"""`netsim validate` on the command line: run directory, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_run import run_cli as run

from .test_sources import write


def test_writes_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v"
    code, stdout, err = run(["validate", "--only", "nccl-tests-issue-212/*", "--out", str(out)], capsys)
    assert code == 0, err
    assert "size band" in stdout and ">= 1 MiB" in stdout
    for f in ("results.csv", "results.parquet", "summary.json", "report.md", "report.html", "figures/parity.png"):
        assert (out / f).exists(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["overall"]["points"] == 4
    assert "Parity" in (out / "report.md").read_text()


def test_a_missed_measurement_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1 GiB all-reduce on 8 H100s in 2 ms would be 940 GB/s busbw: netsim predicts ~4 ms
    src = write(tmp_path, time="2000", busbw="939.52")
    code, stdout, _ = run(["validate", "--source", str(src)], capsys)
    assert code == 1 and "FAIL src/ar 1 GiB" in stdout


def test_bad_validation_file_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path, **{"time_us: 4000": "time_us: -1"})
    code, _, err = run(["validate", "--source", str(src)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(src) in err and "time_us" in err


def test_a_selection_that_matches_nothing_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", "--only", "no-such-source/*"], capsys)
    assert code == 2 and "no validation case matches --only 'no-such-source/*'" in err


def test_only_is_repeatable_and_selects_what_any_glob_matches() -> None:
    """``--only A --only B`` runs the cases of both (it used to keep only the last)."""
    from netsim.validation.runner import select_cases
    from netsim.validation.sources import load_sources

    srcs = load_sources()
    a = select_cases(srcs, only="llm-foundry-mpt-h100/mpt-7b-*")
    b = select_cases(srcs, only="nccl-tests-issue-212/*")
    both = select_cases(srcs, only=["llm-foundry-mpt-h100/mpt-7b-*", "nccl-tests-issue-212/*"])
    assert len(a) == 3 and len(b) > 0
    assert {(s.source.id, c.id) for s, c in both} == {(s.source.id, c.id) for s, c in a + b}
    assert select_cases(srcs, only=["no-such/*", "nccl-tests-issue-212/*"]) == b


def test_a_repeated_only_that_matches_nothing_names_every_glob(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", "--only", "no-such/*", "--only", "nor-this/*"], capsys)
    assert code == 2 and "no validation case matches --only 'no-such/*' --only 'nor-this/*'" in err


def test_an_unknown_kind_is_exit_2_naming_the_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    from netsim.validation.cases import PREDICTORS
    from netsim.validation.runner import CASE_KINDS

    assert sorted(CASE_KINDS) == sorted(PREDICTORS.names())  # every registered kind is selectable
    code, _, err = run(["validate", "--kind", "layers"], capsys)
    assert code == 2 and "unknown case kind 'layers'; allowed: collective, training, layer" in err
