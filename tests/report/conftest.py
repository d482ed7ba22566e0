"""Fixtures of the report tests: synthetic run directories (see report_fixtures.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from report_fixtures import RunFactory, make_run_dir

from netsim.report import write_report


@pytest.fixture
def make_run(tmp_path: Path) -> RunFactory:
    """Factory fixture: ``make_run("name", **options)`` -> a synthetic run directory under tmp_path."""

    def factory(name: str = "run", **kwargs: Any) -> Path:
        return make_run_dir(tmp_path / name, **kwargs)

    return factory


@pytest.fixture(scope="session")
def moe_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MoE run directory with its report written (shared; do not modify)."""
    run = make_run_dir(tmp_path_factory.mktemp("moe") / "moe-run")
    write_report(run)
    return run
