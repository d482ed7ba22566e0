"""docs/sections/moe.md stays true: its Python examples run and print what the page shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from netsim.moe import placement_names, router_names, stat_model_names
from netsim.moe.trace import TraceMeta

DOC = Path(__file__).resolve().parents[2] / "docs" / "sections" / "moe.md"


def _blocks() -> list[tuple[str, str]]:
    """(language, content) of every fenced code block, in order."""
    out: list[tuple[str, str]] = []
    inside: str | None = None
    lines: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            if inside is None:
                inside, lines = line[3:].strip(), []
            else:
                out.append((inside, "\n".join(lines) + "\n"))
                inside = None
        elif inside is not None:
            lines.append(line)
    return out


def _examples() -> list[tuple[str, str]]:
    """Each ``python`` block with the plain block right after it (its shown output)."""
    blocks = _blocks()
    return [(code, blocks[i + 1][1]) for i, (lang, code) in enumerate(blocks[:-1]) if lang == "python"]


@pytest.mark.parametrize("index", range(len(_examples())))
def test_python_examples_print_what_the_page_shows(index: int) -> None:
    code, shown = _examples()[index]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, f"{DOC}:example{index}", "exec"), {})
    assert [ln.rstrip() for ln in buf.getvalue().splitlines()] == shown.rstrip("\n").splitlines()


def test_the_page_lists_every_router_model_and_placement() -> None:
    text = DOC.read_text()
    table_routers = re.findall(r"^\| `(\w+)` \| (?!\d)", text, flags=re.M)
    assert sorted(set(table_routers) & set(router_names())) == router_names()
    for name in stat_model_names():
        assert f"`{name}" in text
    for name in placement_names():
        assert f"`{name}`" in text


def test_documented_trace_metadata_keys_are_the_written_ones() -> None:
    meta = TraceMeta(experts=1, ep=1, ranks_per_node=1, hidden=1, top_k=1, router="x").to_json()
    text = " ".join(DOC.read_text().split())
    for key in meta:
        assert f'"{key}"' in text
