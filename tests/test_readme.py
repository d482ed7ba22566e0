"""The README is generated from docs/, is the front door (<= 300 lines), its quickstart is what CI
runs, and the documentation site lists every page and builds in strict mode."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _quickstart() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S)
    assert block is not None
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_is_up_to_date() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_readme.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr


def test_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for heading in ("## Quickstart", "## Worked example", "## Where to go next"):
        assert heading in text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures and all((ROOT / f).is_file() for f in figures)
    for target in re.findall(r"\]\((docs/[^)#]+)", text):  # every page link resolves in a checkout
        assert (ROOT / target).exists(), target


def test_ci_runs_the_readme_quickstart_in_order() -> None:
    lines = _quickstart()
    assert len(lines) == 2  # one installs and runs the main job, one installs test needs and tests
    assert "netsim run" in lines[0]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [ln.strip() for ln in ci.splitlines()]
    first, second = ci_lines.index(lines[0]), ci_lines.index(lines[1])  # exactly as written, whole lines
    assert first < second
    after = ci_lines[second + 1 :]
    # the tool still works afterwards (runs/default is there from the first line: --force replaces it)
    assert "netsim --version" in after and any(ln.split("#")[0].split() == ["netsim", "run", "--force"] for ln in after)
    assert "python3 -m venv" in ci and ci.index("python3 -m venv") < ci.index(lines[0])
    assert "mkdocs build --strict" in ci


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return []


def test_every_docs_page_is_in_the_site_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    excluded = set(config["exclude_docs"].split())
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages - excluded == nav
    assert all((ROOT / "docs" / p).is_file() for p in nav)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install '.[docs]')"
)
def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
