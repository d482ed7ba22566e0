"""Scenario options: the deprecated ``routing`` spelling of ``path_policy``; what a name in a
scenario resolves to."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.config.scenario import load_scenario


def test_path_policy_and_its_old_spelling() -> None:
    assert load_scenario(None).options.path_policy == "ecmp"  # the built-in scenario's file
    assert load_scenario(None, ["options.path_policy=spray"]).options.path_policy == "spray"
    # the old spelling, given on top of a file that uses the new one, overrides it
    assert load_scenario(None, ["options.routing=pxn"]).options.path_policy == "pxn"
    spec = load_scenario({"topology": "dgx-h100", "workload": "gpt-dense", "options": {"routing": "shortest"}})
    assert spec.options.path_policy == "shortest" and "routing" not in spec.options.model_dump()


def test_a_folder_named_like_a_preset_does_not_shadow_the_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run directory is named after its scenario, so a folder ``deepseek-v3/`` beside a scenario
    (or in the working directory) is common; it must not be read as the workload file."""
    from tests.cli_run import run_cli

    (tmp_path / "gpt-dense").mkdir()
    (tmp_path / "dgx-h100").mkdir()
    monkeypatch.chdir(tmp_path)
    sc = load_scenario({"name": "x", "topology": "dgx-h100", "nodes": 2, "workload": "gpt-dense"})
    assert sc.resolve_path("gpt-dense") == "gpt-dense" and sc.resolve_path("dgx-h100") == "dgx-h100"
    (tmp_path / "mine.yaml").write_text("x: 1\n")
    assert sc.resolve_path("mine.yaml") == str(tmp_path / "mine.yaml")
    args = ["run", "--topology", "dgx-h100", "--nodes", "2", "--workload", "gpt-dense", "--no-report", "--out", "r"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "gpt-dense on dgx-h100" in out
