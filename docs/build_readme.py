"""Assemble README.md from docs/readme_head.md, the sections in docs/sections/ and the tail.

    python docs/build_readme.py          # rewrite README.md
    python docs/build_readme.py --check  # exit 1 if README.md is out of date (used by a test)

The sections are the source of truth; each is owned by the part of the code it documents.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["topology", "collectives", "run", "moe", "kernels", "report", "sweep", "benchmarks"]


def _shift_headings(lines: list[str]) -> list[str]:
    """Shift every heading (outside code fences) so that the first one is level 2."""
    first = len(lines[0]) - len(lines[0].lstrip("#"))
    shift = 2 - first
    out, fenced = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#") and shift:
            level = len(line) - len(line.lstrip("#"))
            line = "#" * max(1, level + shift) + line[level:]
        out.append(line)
    return out


def build() -> str:
    docs = ROOT / "docs"
    parts = [(docs / "readme_head.md").read_text().rstrip() + "\n"]
    sections = docs / "sections"
    names = [n for n in ORDER if (sections / f"{n}.md").exists()]
    names += sorted(p.stem for p in sections.glob("*.md") if p.stem not in ORDER)
    toc = ["## Contents", ""]
    bodies = []
    for name in names:
        text = (sections / f"{name}.md").read_text().strip()
        lines = _shift_headings(text.splitlines())
        # every section starts with one title line, now a level-2 heading
        title = lines[0].lstrip("#").strip()
        anchor = "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")
        toc.append(f"- [{title}](#{anchor})")
        bodies.append("\n".join([f"## {title}", *lines[1:]]).rstrip() + "\n")
    tail = (docs / "readme_tail.md").read_text().rstrip() + "\n" if (docs / "readme_tail.md").exists() else ""
    return "\n".join([*parts, "\n".join(toc) + "\n", *bodies, tail]).rstrip() + "\n"


def main() -> int:
    text = build()
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print("README.md is out of date: run python docs/build_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
