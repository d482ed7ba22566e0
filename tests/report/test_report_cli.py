"""`netsim report`, `netsim compare` and `netsim gallery` through the command-line entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_run_dir

from netsim.cli import main


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    return int(code) if code is not None else 0


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run_dir(tmp_path / "run", layers=1, microbatches=1, omit=("traffic_matrix", "expert_load"))
    assert _run(["report", str(run), "--trace-ranks", "0,2-3", "--top-links", "3"]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "trace.json" in out
    trace = json.loads((run / "trace.json").read_text())
    assert trace["otherData"]["ranks_shown"] == [0, 2, 3]
    md = (run / "report.md").read_text()
    assert "The 3 links with the highest mean utilisation" in md


def test_report_command_no_trace(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", layers=1, microbatches=1, omit=("links", "alltoall_layers", "expert_load"))
    assert _run(["report", str(run), "--no-trace"]) == 0
    assert (run / "report.html").exists()
    assert not (run / "trace.json").exists()


def test_report_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", layers=1, microbatches=1)
    (run / "summary.json").unlink()
    proc = subprocess.run(
        [sys.executable, "-c", "from netsim.cli import main; main()", "report", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "summary.json is missing" in lines[0]
    assert not (run / "report.html").exists()


def test_bad_rank_list_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run_dir(tmp_path / "run", layers=1, microbatches=1)
    assert _run(["report", str(run), "--trace-ranks", "a-b"]) == 2
    assert "--trace-ranks" in capsys.readouterr().err


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run_dir(tmp_path / "a", layers=1, microbatches=1)
    b = make_run_dir(tmp_path / "b", layers=1, microbatches=1, time_scale=1.5)
    out = tmp_path / "cmp"
    assert _run(["compare", str(a), str(b), "--baseline", str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "b: step" in printed and "(baseline)" in printed and "0.667x" in printed
    df = pd.read_csv(out / "compare.csv")
    assert df.loc[df["label"] == "a", "step_time_s_ratio"].iloc[0] == pytest.approx(1 / 1.5)
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert _run(["compare", str(a), str(tmp_path / "missing"), "--out", str(out)]) == 2
