"""The gallery with a stand-in runner that writes synthetic run directories."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import make_run_dir

from netsim.errors import NetsimError
from netsim.report.gallery import run_gallery


def _runner(calls: list[str]) -> Any:
    def run(scenario: dict[str, Any], run_dir: Path) -> Path:
        calls.append(scenario["workload"])
        return make_run_dir(run_dir, layers=1, microbatches=1, **scenario)

    return run


# the gallery's own job is orchestration (report content is tested elsewhere): small runs
_FEW_TABLES = ("links", "tier_timeseries", "traffic_matrix", "alltoall_layers", "expert_load")
SCENARIOS = {
    "dense": {"workload": "dense-8", "moe": False, "omit": _FEW_TABLES},
    "moe": {"workload": "moe-8", "time_scale": 2.0, "omit": _FEW_TABLES},
}


def test_gallery_writes_reports_and_index(tmp_path: Path) -> None:
    calls: list[str] = []
    lines: list[str] = []
    index = run_gallery(tmp_path / "reports", scenarios=SCENARIOS, runner=_runner(calls), progress=lines.append)
    assert calls == ["dense-8", "moe-8"]
    assert index == tmp_path / "reports" / "index.md"
    text = index.read_text()
    for name in SCENARIOS:
        assert (tmp_path / "reports" / name / "report.html").exists()
        assert (tmp_path / "reports" / name / "trace.json").exists()
        assert f"| {name} |" in text
    for target in re.findall(r"\]\(([^)]+)\)", text):  # every link in the index resolves
        assert (tmp_path / "reports" / target).exists(), target
    assert (tmp_path / "reports" / "compare" / "compare.csv").exists()
    assert "running moe" in lines


def test_gallery_subset_and_unknown_name(tmp_path: Path) -> None:
    calls: list[str] = []
    run_gallery(tmp_path / "g", ["dense"], scenarios=SCENARIOS, runner=_runner(calls))
    assert calls == ["dense-8"]
    assert not (tmp_path / "g" / "compare").exists()
    with pytest.raises(NetsimError, match="unknown gallery scenario"):
        run_gallery(tmp_path / "g", ["nope"], scenarios=SCENARIOS, runner=_runner(calls))
