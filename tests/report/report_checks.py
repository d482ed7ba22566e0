"""Checkers shared by the report tests: HTML self-containment, figure references, PNG files."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    _VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in self._VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> _Collector:
    """Parse ``text``; the collector has every start tag with its attributes and balance errors."""
    p = _Collector()
    p.feed(text)
    p.close()
    if p.stack:
        p.errors.append(f"unclosed tags {p.stack}")
    return p


def external_references(doc: _Collector) -> list[str]:
    """Attributes that would load or link something outside the file."""
    bad = []
    for tag, attrs in doc.tags:
        for key in ("src", "href", "srcset", "poster", "data", "action"):
            value = attrs.get(key, "").strip()
            if not value:
                continue
            if value.startswith("data:") or (key == "href" and value.startswith("#")):
                continue
            bad.append(f"<{tag} {key}={value[:60]!r}>")
        if tag == "script" and "src" in attrs:
            bad.append("<script src>")
        if tag == "link" and "stylesheet" in attrs.get("rel", "") and attrs.get("href"):
            bad.append("<link rel=stylesheet href>")
        style = attrs.get("style", "")
        if "url(" in style:
            bad.append(f"<{tag} style=url(...)>")
    return bad


def html_figures(doc: _Collector) -> dict[str, bytes]:
    """figures/<name>.png named by each <img data-figure>, mapped to the PNG embedded in src."""
    out = {}
    for tag, attrs in doc.tags:
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,"), src[:40]
            out[attrs["data-figure"]] = base64.b64decode(src.split(",", 1)[1])
    return out


def markdown_figures(text: str) -> list[str]:
    """Relative targets of the image links in Markdown."""
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 100 and data.startswith(PNG_SIGNATURE)
