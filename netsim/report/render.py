"""A small document model and its two renderings: self-contained HTML and Markdown.

A :class:`Document` is a title, a few header lines and :class:`Section` s of blocks
(:class:`Paragraph`, :class:`Note`, :class:`Table`, :class:`Figure`).  The HTML rendering
embeds every figure as a base64 PNG data URI, carries its CSS inline and declares a Content
Security Policy that forbids loading anything, so the file shows the same offline, attached to
an e-mail or in a CI artifact viewer.  It contains no script.  The Markdown rendering links the
figures as relative paths ``figures/<name>.png`` next to ``report.md``.

Rendering is a pure function of its inputs: no timestamps, sorted where order is not given, so
the same run gives byte-identical files.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from netsim import __version__


@dataclass(frozen=True)
class Paragraph:
    """Plain text (no markup; inline ``code`` in backticks is rendered as code)."""

    text: str


@dataclass(frozen=True)
class Note:
    """A remark set apart from the text (e.g. why a section was omitted)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells; ``align`` is 'l' or 'r' per column."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    align: str = ""
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG figure ``figures/<file>`` with a caption (also its alt text)."""

    file: str
    caption: str


Block = Paragraph | Note | Table | Figure


@dataclass
class Section:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""

    def add(self, block: Block) -> None:
        self.blocks.append(block)


@dataclass
class Document:
    """A report: title, header lines (key, value) and sections."""

    title: str
    header: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[str]:
        """File names of all figures in document order."""
        return [b.file for s in self.sections for b in s.blocks if isinstance(b, Figure)]


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #4c72b0;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.15em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d0d0;padding:.25em .6em}
th{background:#f2f4f8;text-align:left}
td.r{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding:.2em 0}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #e4e4e4}
figcaption{font-size:.88em;color:#444}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em;margin:.6em 0}
dl.header{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:.5em 0}
dl.header dt{font-weight:600}
dl.header dd{margin:0}
nav ul{columns:2;font-size:.92em}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
footer{margin-top:2.5em;font-size:.8em;color:#777}
""".strip()

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _inline(text: str) -> str:
    """Escape ``text`` for HTML and render `backtick` spans as <code>."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        esc = html.escape(part, quote=False)
        out.append(f"<code>{esc}</code>" if i % 2 == 1 and i < len(parts) - 1 else esc)
    if len(parts) % 2 == 0:  # an unmatched backtick: keep it literally
        out[-1] = "`" + out[-1]
    return "".join(out)


def _anchor(section: Section, index: int) -> str:
    if section.anchor:
        return section.anchor
    slug = "".join(c if c.isalnum() else "-" for c in section.title.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug or f"section-{index}"


def render_html(doc: Document, figures: Mapping[str, bytes]) -> str:
    """The document as one self-contained HTML page; ``figures`` maps file name -> PNG bytes."""
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="netsim {html.escape(__version__)}">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    if doc.header:
        out.append('<dl class="header">')
        for key, value in doc.header:
            out.append(f"<dt>{html.escape(key)}</dt><dd>{_inline(value)}</dd>")
        out.append("</dl>")
    if len(doc.sections) > 2:
        out.append("<nav><ul>")
        for i, s in enumerate(doc.sections):
            out.append(f'<li><a href="#{_anchor(s, i)}">{html.escape(s.title)}</a></li>')
        out.append("</ul></nav>")
    for i, section in enumerate(doc.sections):
        out.append(f'<section id="{_anchor(section, i)}">')
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            out.append(_html_block(block, figures))
        out.append("</section>")
    out.append(f"<footer>Generated by netsim {html.escape(__version__)} from result tables.</footer>")
    out.append("</body>")
    out.append("</html>")
    return "\n".join(out) + "\n"


def _html_block(block: Block, figures: Mapping[str, bytes]) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Note):
        return f'<p class="note">{_inline(block.text)}</p>'
    if isinstance(block, Table):
        lines = ["<table>"]
        if block.caption:
            lines.append(f"<caption>{_inline(block.caption)}</caption>")
        lines.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block.headers) + "</tr></thead>")
        lines.append("<tbody>")
        for row in block.rows:
            cells = []
            for j, cell in enumerate(row):
                cls = ' class="r"' if j < len(block.align) and block.align[j] == "r" else ""
                cells.append(f"<td{cls}>{_inline(cell)}</td>")
            lines.append("<tr>" + "".join(cells) + "</tr>")
        lines.append("</tbody></table>")
        return "\n".join(lines)
    png = figures[block.file]
    data = base64.b64encode(png).decode("ascii")
    cap = html.escape(block.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{cap}" '
        f'data-figure="figures/{html.escape(block.file)}">'
        f"<figcaption>{_inline(block.caption)} (<code>figures/{html.escape(block.file)}</code>)"
        "</figcaption></figure>"
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    """The document as Markdown; figures are relative links ``figures/<file>``."""
    out: list[str] = [f"# {doc.title}", ""]
    for key, value in doc.header:
        out.append(f"- **{key}:** {value}")
    if doc.header:
        out.append("")
    for section in doc.sections:
        out.append(f"## {section.title}")
        out.append("")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out.append(block.text)
            elif isinstance(block, Note):
                out.append(f"> **Note:** {block.text}")
            elif isinstance(block, Table):
                if block.caption:
                    out.append(f"**{block.caption}**")
                    out.append("")
                out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                seps = []
                for j in range(len(block.headers)):
                    seps.append("---:" if j < len(block.align) and block.align[j] == "r" else "---")
                out.append("| " + " | ".join(seps) + " |")
                for row in block.rows:
                    out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            else:
                out.append(f"![{block.caption}](figures/{block.file})")
                out.append("")
                out.append(f"*{block.caption}*")
            out.append("")
    out.append(f"<sub>Generated by netsim {__version__} from result tables.</sub>")
    return "\n".join(out) + "\n"
