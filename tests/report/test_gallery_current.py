"""The committed gallery (reports/) is what the current code prints for the preset scenarios.

Every number under ``reports/`` is a claim a visitor reads without running anything, so a change
that moves a preset scenario's step must regenerate it (``netsim gallery --out reports
--force``).  The gallery runs in about 20 s of CPU; its ``summary.json`` files are compared
number by number (relative 1e-9: the same code and seed give the same bytes here, and a
different CPU may round the last bit of a float differently), every other field exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from netsim.report.gallery import run_gallery

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def _differences(committed: Any, fresh: Any, where: str = "") -> list[str]:
    """The paths at which two JSON values differ (numbers within relative 1e-9 are equal)."""
    if isinstance(committed, dict) and isinstance(fresh, dict):
        out = [f"{where}.{k}: only in one" for k in sorted(set(committed) ^ set(fresh))]
        for k in sorted(set(committed) & set(fresh)):
            out += _differences(committed[k], fresh[k], f"{where}.{k}")
        return out
    if isinstance(committed, list) and isinstance(fresh, list):
        if len(committed) != len(fresh):
            return [f"{where}: {len(committed)} items, now {len(fresh)}"]
        pairs = enumerate(zip(committed, fresh, strict=True))
        return [d for i, (a, b) in pairs for d in _differences(a, b, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(committed, numbers) and isinstance(fresh, numbers) and not isinstance(committed, bool):
        same = math.isclose(committed, fresh, rel_tol=1e-9, abs_tol=1e-12)
        return [] if same else [f"{where}: {committed!r} committed, {fresh!r} now"]
    return [] if committed == fresh else [f"{where}: {committed!r} committed, {fresh!r} now"]


def test_differences_finds_moved_numbers_and_ignores_rounding() -> None:
    assert _differences({"a": 1.0, "b": [1, "x"]}, {"a": 1.0 + 1e-13, "b": [1, "x"]}) == []
    assert _differences({"a": 1.0}, {"a": 1.01}) == [".a: 1.0 committed, 1.01 now"]
    assert _differences({"a": [1]}, {"a": [1, 2]}) == [".a: 1 items, now 2"]


@pytest.fixture(scope="module")
def fresh_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "reports"
    run_gallery(out)
    return out


def _scenarios() -> list[str]:
    return sorted(p.parent.name for p in REPORTS.glob("*/scenario.yaml"))


def test_the_gallery_has_every_preset_scenario(fresh_gallery: Path) -> None:
    assert _scenarios() == sorted(p.parent.name for p in fresh_gallery.glob("*/scenario.yaml"))


@pytest.mark.parametrize("name", _scenarios())
def test_committed_gallery_summary_is_current(fresh_gallery: Path, name: str) -> None:
    committed = json.loads((REPORTS / name / "summary.json").read_text())
    fresh = json.loads((fresh_gallery / name / "summary.json").read_text())
    diff = _differences(committed, fresh)
    assert not diff, f"reports/{name} is stale (netsim gallery --out reports --force): " + "; ".join(diff[:5])
