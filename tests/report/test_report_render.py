"""The document renderers and the unit formatting."""

from __future__ import annotations

import math

from report_checks import external_references, parse_html

from netsim.report.fmt import fmt_bytes, fmt_pct, fmt_ratio, fmt_time, ratio
from netsim.report.render import Document, Figure, Note, Paragraph, Section, Table, render_html, render_markdown

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 120


def _doc() -> Document:
    sec = Section("A & B <tags>")
    sec.add(Paragraph("text with `code` and <script>alert(1)</script>"))
    sec.add(Note("a note | with a pipe"))
    sec.add(Table(["name", "value"], [["x|y", "1 ms"], ["<b>", "2 ms"]], align="lr", caption="cap"))
    sec.add(Figure("f.png", "a figure"))
    return Document("T <1>", header=[("k", "v")], sections=[sec])


def test_html_escapes_text_and_embeds_figures() -> None:
    html = render_html(_doc(), {"f.png": PNG})
    doc = parse_html(html)
    assert doc.errors == [] and external_references(doc) == []
    assert not any(tag in ("script", "b") for tag, _ in doc.tags)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<code>code</code>" in html
    assert '<td class="r">1 ms</td>' in html
    [img] = [attrs for tag, attrs in doc.tags if tag == "img"]
    assert img["data-figure"] == "figures/f.png" and img["src"].startswith("data:image/png;base64,")
    anchors = {attrs["href"][1:] for tag, attrs in doc.tags if tag == "a"}
    ids = {attrs["id"] for tag, attrs in doc.tags if "id" in attrs}
    assert anchors <= ids


def test_markdown_tables_and_figure_links() -> None:
    md = render_markdown(_doc())
    assert "| x\\|y | 1 ms |" in md
    assert "| --- | ---: |" in md
    assert "![a figure](figures/f.png)" in md
    assert "> **Note:** a note | with a pipe" in md


def test_formatting() -> None:
    assert fmt_time(0.01234567) == "12.35 ms"
    assert fmt_time(2.5e-6) == "2.5 us"
    assert fmt_time(0) == "0 s"
    assert fmt_time(None) == "–" and fmt_time(float("nan")) == "–"
    assert fmt_bytes(1_234_567) == "1.235 MB"
    assert fmt_bytes(999) == "999 B"
    assert fmt_bytes(4e12) == "4 TB"
    assert fmt_pct(0.1234) == "12.3 %"
    assert fmt_ratio(2) == "2.000x"
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(None, 1.0))
