"""A self-contained HTML report: one section per analysis, figures embedded, no scripts.

The page needs no network and no other file: styles are inline and every figure is a PNG in
a ``data:`` URI, so it can be mailed or attached to a lab notebook as one file.
"""

from __future__ import annotations

import base64
import html
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

__all__ = ["Section", "render_report", "write_report"]

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       max-width: 1080px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.0em; margin: 1.2em 0 0.4em; }
.meta, .files, figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.4em 0 1em; }
th, td { padding: 0.25em 0.7em; text-align: right; border-bottom: 1px solid #eee; }
th { background: #f5f5f7; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f5f5f7; padding: 0 0.25em; border-radius: 3px; }
nav ul { padding-left: 1.2em; }
"""


@dataclass
class Section:
    """One analysis in the report.

    Attributes:
      title: heading, e.g. ``"Spatial deconvolution"``.
      summary: what was run on which data, and the headline result (plain text, one or more
        paragraphs separated by blank lines).
      tables: ``(caption, DataFrame)`` pairs, drawn as HTML tables.
      figures: ``(caption, png_path)`` pairs, embedded in the page.
      files: outputs the analysis wrote (linked relative to the report).
      seconds: wall time of the analysis.
    """

    title: str
    summary: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    seconds: float | None = None


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _table(caption: str, frame: pd.DataFrame) -> str:
    body = frame.to_html(
        border=0, float_format=lambda v: f"{v:.4g}", na_rep="n/a", escape=True, index=True
    )
    return f"<h3>{html.escape(caption)}</h3>\n{body}"


def _figure(caption: str, png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _section(section: Section, folder: Path) -> str:
    parts = [f'<section id="{_anchor(section.title)}">', f"<h2>{html.escape(section.title)}</h2>"]
    parts += [f"<p>{html.escape(p.strip())}</p>" for p in section.summary.split("\n\n") if p]
    parts += [_table(c, t) for c, t in section.tables]
    parts += [_figure(c, p) for c, p in section.figures]
    if section.files:
        links = ", ".join(
            f'<a href="{html.escape(_relative(p, folder))}">{html.escape(Path(p).name)}</a>'
            for p in section.files
        )
        seconds = f" in {section.seconds:.1f} s" if section.seconds is not None else ""
        parts.append(f'<p class="files">Written{seconds}: {links}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_uri()


def render_report(title: str, sections: list[Section], *, command: str, folder: Path) -> str:
    """The report page as a string (self-contained HTML5)."""
    from diffomics import __version__

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(
        f'<li><a href="#{_anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in sections
    )
    meta = (
        f"diffomics {__version__}, Python {sys.version.split()[0]} on {platform.machine()}, "
        f"{stamp}. Command: <code>{html.escape(command)}</code>"
    )
    body = "\n".join(_section(s, folder) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="meta">{meta}</p>\n'
        f"<nav><ul>{nav}</ul></nav>\n{body}\n</body>\n</html>\n"
    )


def write_report(path: Path, title: str, sections: list[Section], *, command: str) -> Path:
    """Write the report atomically to `path` and return it."""
    from diffomics.cli._io import atomic

    page = render_report(title, sections, command=command, folder=path.parent)
    return atomic(path, lambda p: p.write_text(page, encoding="utf-8"))
