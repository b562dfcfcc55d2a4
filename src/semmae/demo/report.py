"""The demo's report: one self-contained ``report.html`` (figures embedded as base64 PNG) and a ``report.md``
(figures linked by relative path), built from the same list of sections."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from semmae.utils.io import atomic_write_text


@dataclass
class Table:
    """A table of numbers with a one-line explanation of what it does and does not show."""

    title: str
    columns: list[str]
    rows: list[list[object]]
    note: str = ""


@dataclass
class Figure:
    title: str
    path: Path  # a PNG inside the report folder
    note: str = ""


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    figures_first: bool = False  # draw the figures before the tables (a figure that the table below itemises)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def render_markdown(title: str, sections: list[Section], root: Path) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        tables, figures = [], []
        for t in s.tables:
            tables += [
                f"**{t.title}**",
                "",
                "| " + " | ".join(t.columns) + " |",
                "|" + "---|" * len(t.columns),
            ]
            tables += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in t.rows]
            tables += ["", f"*{t.note}*" if t.note else "", ""]
        for f in s.figures:
            figures += [
                f"**{f.title}**",
                "",
                f"![{f.title}]({Path(f.path).relative_to(root).as_posix()})",
                "",
            ]
            if f.note:
                figures += [f"*{f.note}*", ""]
        out += figures + tables if s.figures_first else tables + figures
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
.note{color:#555;font-style:italic;margin:.2em 0 1.2em}pre{background:#f6f6f6;padding:.6em;overflow:auto;white-space:pre-wrap}"""


#: figures narrower than this are drawn at an integer multiple of their size (nearest neighbour: part cells stay
#: crisp), at most :data:`MAX_FIGURE_WIDTH` wide - a 64 px image per panel is unreadable at its natural size
MIN_FIGURE_WIDTH, MAX_FIGURE_WIDTH = 640, 1060


def _upscale(path: Path) -> str:
    """The ``style`` attribute that draws a small figure ``k`` times larger (``k`` an integer), or nothing."""
    from PIL import Image

    with Image.open(path) as img:
        width = img.width
    k = min(MAX_FIGURE_WIDTH // max(width, 1), -(-MIN_FIGURE_WIDTH // max(width, 1)))
    if width >= MIN_FIGURE_WIDTH or k < 2:
        return ""
    return f" style='width:{k * width}px;image-rendering:pixelated'"


def render_html(title: str, sections: list[Section]) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            body = s.text
            out.append(
                f"<pre>{html.escape(body[4:-4])}</pre>"
                if body.startswith("```\n")
                else f"<p>{html.escape(body)}</p>"
            )
        tables, figures = [], []
        for t in s.tables:
            tables.append(
                f"<h3>{html.escape(t.title)}</h3><table><tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
                + "</tr>"
            )
            for row in t.rows:
                tables.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
            tables.append("</table>")
            if t.note:
                tables.append(f"<p class='note'>{html.escape(t.note)}</p>")
        for f in s.figures:
            data = base64.b64encode(Path(f.path).read_bytes()).decode()
            figures.append(
                f"<h3>{html.escape(f.title)}</h3><img alt='{html.escape(f.title)}' "
                f"src='data:image/png;base64,{data}'{_upscale(Path(f.path))}>"
            )
            if f.note:
                figures.append(f"<p class='note'>{html.escape(f.note)}</p>")
        out += figures + tables if s.figures_first else tables + figures
    out.append("</body></html>")
    return "\n".join(out)


def write_report(out_dir: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, render_markdown(title, sections, out_dir))
    atomic_write_text(page, render_html(title, sections))
    return page, md
