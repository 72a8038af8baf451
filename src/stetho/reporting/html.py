"""A self-contained HTML page: inline CSS, images as ``data:`` URIs, no scripts, no network."""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stetho.utils.io import atomic_write_bytes, atomic_write_text

__all__ = ["HtmlPage", "md_table_to_html", "table_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
header{background:#1d2a3a;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d3df;font-size:13px}
nav{padding:8px 28px;background:#e8ecf1;font-size:13px} nav a{margin-right:14px;color:#1d4f91}
main{padding:8px 28px 40px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:18px;margin:6px 0 10px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
td,th{border:1px solid #d5dbe3;padding:3px 8px;text-align:right}
th{background:#eef2f6} td:first-child,th:first-child{text-align:left}
.omega{font-size:20px;font-weight:600;color:#0d5c2e} .warn{color:#a0410d;font-weight:600}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
img{max-width:100%;border:1px solid #eef0f3} .note{color:#5b6676;font-size:12px}
"""


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def table_html(rows: Sequence[Sequence[object]], header: bool = True) -> str:
    """An HTML table of rows (first row = header when ``header``); cells are escaped."""
    out = ["<table>"]
    for i, row in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{_esc(c)}</{tag}>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def md_table_to_html(markdown: str) -> str:
    """The subset of markdown :meth:`EvaluationResult.table` writes: pipe tables, paragraphs,
    ``**bold**`` and ``_notes_``."""
    parts: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            parts.append(table_html([[c.replace("**", "") for c in r] for r in rows]))
            rows.clear()

    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if s:
            text = _BOLD.sub(r"<b>\1</b>", _esc(s))
            cls = ' class="note"' if s.startswith("_") else ""
            parts.append(f"<p{cls}>{text.strip('_')}</p>")
    flush()
    return "\n".join(parts)


@dataclass
class HtmlPage:
    """Collects sections and figures; :meth:`write` saves the page and every PNG.

    Attributes:
        title: Page title.
        subtitle: Line under the title.
        sections: ``(id, heading, body html)`` in order.
        images: ``{file name: PNG bytes}`` written under ``figures/``.
    """

    title: str
    subtitle: str = ""
    sections: list[tuple[str, str, str]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def image(self, png: bytes, name: str, alt: str) -> str:
        """Register a PNG (saved as ``figures/<name>``) and return its inline ``<img>`` tag."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        stem, i = base, 1
        while base in self.images:
            i += 1
            base = f"{Path(stem).stem}-{i}.png"
        self.images[base] = png
        data = base64.b64encode(png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}" title="{_esc(base)}">'

    def add(self, sid: str, heading: str, body: str) -> None:
        """Append a section (``id`` must be unique)."""
        self.sections.append((sid, heading, body))

    def render(self) -> str:
        """The whole page as one string."""
        nav = " ".join(f'<a href="#{_esc(s)}">{_esc(h)}</a>' for s, h, _ in self.sections)
        body = "\n".join(
            f'<section id="{_esc(s)}">\n<h2>{_esc(h)}</h2>\n{b}\n</section>'
            for s, h, b in self.sections
        )
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{_esc(self.title)}</h1><p>{_esc(self.subtitle)}</p></header>\n"
            f"<nav>{nav}</nav>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
        )

    def write(self, out_dir: str | os.PathLike[str], name: str = "report.html") -> Path:
        """Write ``<out_dir>/<name>`` and ``<out_dir>/figures/*.png`` atomically."""
        out = Path(out_dir)
        for fname, png in self.images.items():
            atomic_write_bytes(out / "figures" / fname, png)
        path = out / name
        atomic_write_text(path, self.render())
        return path
