"""`netsim sweep` through the real entry point: output, resuming, exit codes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from netsim.cli import main

from .conftest import write_sweep


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_sweep_runs_resumes_and_prints_the_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path, "seeds", grid={"seed": [0, 1]}, exclude=[])
    monkeypatch.chdir(tmp_path)
    assert _main(["sweep", str(path), "--workers", "1", "--no-reports", "--quiet"]) == 0
    text = capsys.readouterr().out
    out = tmp_path / "sweeps" / "seeds"  # default: sweeps/<name>
    assert "sweep seeds: 2 points" in text and "ran 2 point(s) (serial), reused 0, failed 0" in text
    assert "results: sweeps/seeds/results.csv (and .parquet)" in text
    df = pd.read_parquet(out / "results.parquet")
    assert list(df["seed"]) == [0, 1] and list(df["status"]) == ["ok", "ok"]
    assert not (out / "compare").exists()  # --no-reports: no reports at all
    assert not (out / "points" / df["id"][0] / "report.html").exists()
    # again: nothing to run
    assert _main(["sweep", str(path), "-j", "1", "--no-reports", "-q"]) == 0
    text = capsys.readouterr().out
    assert "ran 0 point(s), reused 2, failed 0" in text and text.count("reused") == 3


def test_dry_run_lists_points_and_runs_nothing(
    micro_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(["sweep", str(micro_sweep), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep micro: 4 points")
    assert lines[1].split()[:2] == ["0", lines[1].split()[1]] and lines[1].split()[1].startswith(
        "fabric-rail-optimized_ep-4-"
    )
    assert lines[4].endswith("fabric=leaf-spine, ep=8")
    assert not (tmp_path / "o").exists()


def test_bad_sweep_file_exits_2_before_running_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, "bad", grid={"seed": [0, 1, 2], "topology.backend.oversubscription": [1, 0]})
    out = tmp_path / "o"
    assert _main(["sweep", str(path), "-o", str(out), "-j", "1", "-q"]) == 2
    err = _error_line(capsys)
    assert err == (
        f"error: {path}: grid.topology.backend.oversubscription: must be a ratio > 0, e.g. 1 (non-blocking) "
        "or 2:1 (got 0) (point 1: seed=0, oversubscription=0)"
    )
    assert not out.exists()
    assert _main(["sweep", str(tmp_path / "missing.yaml"), "-q"]) == 2
    assert "missing.yaml: file not found" in _error_line(capsys)
    assert _main(["sweep", str(path), "--workers", "2", "--scheduler", "tcp://x:1"]) == 2
    assert "give --workers or --scheduler, not both" in _error_line(capsys)
    assert _main(["sweep", str(path), "--workers", "0"]) == 2
    _error_line(capsys)


def test_failing_point_exits_2_after_writing_the_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad-kernels.csv").write_text("garbage,x\n1,2\n")
    path = write_sweep(tmp_path, grid={"options.kernels": [None, "bad-kernels.csv"]})
    out = tmp_path / "o"
    assert _main(["sweep", str(path), "-o", str(out), "-j", "1", "--no-reports"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith(f"error: {out / 'results.csv'}: 1 of 2 points failed (point 1: ")
    assert "missing column" in err
    assert "failed" in captured.out and "ran 2 point(s) (serial), reused 0, failed 1" in captured.out
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(df["status"]) == ["ok", "failed"] and df["step_time_s"][0] != ""
