"""Generate README.md from docs/readme_head.md, the home page of the documentation site.

    python docs/build_readme.py          # rewrite README.md
    python docs/build_readme.py --check  # exit 1 if README.md is out of date (used by a test)

The README is the front door (what moe-netsim is, the two-command quickstart, one worked example
with a figure, where to go next); the manual is the site built from docs/ by mkdocs
(mkdocs.yml).  docs/readme_head.md is written for the site, with links relative to docs/; in
the README they are rewritten to point into docs/ so that they work on a code host and in a
checkout.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "docs" / "readme_head.md"
MAX_LINES = 300

_NOTE = "<!-- Generated from docs/readme_head.md by docs/build_readme.py: edit that file, not this one. -->\n"


def _rewrite_link(match: re.Match[str]) -> str:
    text, target = match.group(1), match.group(2)
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):  # a URL, an anchor of this page, an absolute path
        return match.group(0)
    return f"{text}(docs/{target})"


def build() -> str:
    """The README text: the site's home page with its relative links pointing into docs/."""
    text = SOURCE.read_text()
    body = re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", _rewrite_link, text)
    return _NOTE + body.rstrip() + "\n"


def main() -> int:
    text = build()
    if text.count("\n") > MAX_LINES:
        print(
            f"README.md would have {text.count(chr(10))} lines, more than {MAX_LINES}: move detail to a page "
            "under docs/",
            file=sys.stderr,
        )
        return 1
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
