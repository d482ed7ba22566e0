"""Scenario options: the deprecated ``routing`` spelling of ``path_policy``."""

from __future__ import annotations

from netsim.config.scenario import load_scenario


def test_path_policy_and_its_old_spelling() -> None:
    assert load_scenario(None).options.path_policy == "ecmp"  # the built-in scenario's file
    assert load_scenario(None, ["options.path_policy=spray"]).options.path_policy == "spray"
    # the old spelling, given on top of a file that uses the new one, overrides it
    assert load_scenario(None, ["options.routing=pxn"]).options.path_policy == "pxn"
    spec = load_scenario({"topology": "dgx-h100", "workload": "gpt-dense", "options": {"routing": "shortest"}})
    assert spec.options.path_policy == "shortest" and "routing" not in spec.options.model_dump()
