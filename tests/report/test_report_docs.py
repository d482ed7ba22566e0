"""docs/sections/report.md documents every run-directory table column and summary field."""

from __future__ import annotations

import re
from pathlib import Path

from netsim.report.tables import SUMMARY_EXTRA_FIELDS, SUMMARY_FIELDS, TABLES

DOC = Path(__file__).resolve().parents[2] / "docs" / "sections" / "report.md"


def _section(text: str, heading: str) -> str:
    m = re.search(rf"^#+ .*{re.escape(heading)}.*$", text, re.M)
    assert m, f"no heading for {heading!r}"
    rest = text[m.end() :]
    nxt = re.search(r"^#+ ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def test_every_table_column_is_documented() -> None:
    text = DOC.read_text()
    for name, spec in TABLES.items():
        section = _section(text, f"`{name}`")
        documented = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
        assert documented == set(spec.columns) | set(spec.extra), name


def test_every_summary_field_is_documented() -> None:
    section = _section(DOC.read_text(), "`summary.json`")
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
    assert documented == set(SUMMARY_FIELDS) | set(SUMMARY_EXTRA_FIELDS)


def test_commands_are_documented() -> None:
    text = DOC.read_text()
    for command in ("netsim report", "netsim compare", "netsim gallery", "trace.json", "ui.perfetto.dev"):
        assert command in text
