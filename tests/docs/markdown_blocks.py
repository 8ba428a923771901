"""Read the guide's Markdown: its Python code blocks and its configuration tables.

A ```` ```python ```` block is run by `test_examples.py`; one whose nearest preceding
non-blank line is an HTML comment ``<!-- skip: reason -->`` is skipped with that reason.
A configuration table follows a comment ``<!-- config: dotted.path.ToTheDataclass -->``
and has the columns ``field | type | default | meaning`` (`test_config_tables.py`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_SKIP = re.compile(r"^<!--\s*skip:\s*(?P<reason>.+?)\s*-->$")
_CONFIG = re.compile(r"^<!--\s*config:\s*(?P<target>[\w.]+)\s*-->$")


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    """One fenced Python block of a page."""

    page: Path
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None  # the reason, when the block is marked to be skipped

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(DOCS).as_posix()}:{self.line}"


@dataclasses.dataclass(frozen=True)
class ConfigTable:
    """A configuration table and the dataclass it documents."""

    page: Path
    line: int
    target: str
    rows: list[dict[str, str]]

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(DOCS).as_posix()}:{self.target.rsplit('.', 1)[-1]}"


def pages() -> list[Path]:
    """Every Markdown page of the guide, in a stable order."""
    return sorted(p for p in DOCS.rglob("*.md") if "_scripts" not in p.parts)


def _previous_nonblank(lines: list[str], index: int) -> str:
    for j in range(index - 1, -1, -1):
        if lines[j].strip():
            return lines[j].strip()
    return ""


def code_blocks(page: Path) -> list[CodeBlock]:
    """The top-level ```` ```python ```` blocks of `page`, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match["fence"], match["info"].strip().split()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        if end == len(lines):
            msg = f"{page}:{i + 1}: code fence {fence} is never closed"
            raise ValueError(msg)
        if info and info[0] in ("python", "py"):
            skip = _SKIP.match(_previous_nonblank(lines, i))
            blocks.append(
                CodeBlock(
                    page,
                    i + 2,
                    "\n".join(lines[i + 1 : end]) + "\n",
                    skip["reason"] if skip else None,
                )
            )
        i = end + 1
    return blocks


def _cells(row: str) -> list[str]:
    """Split a table row on the pipes outside code spans (Python-Markdown's rule)."""
    cells, current, in_code = [], [], False
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    for char in body:
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    cells.append("".join(current).strip())
    return cells


def config_tables(page: Path) -> list[ConfigTable]:
    """The tables of `page` announced by a ``<!-- config: ... -->`` comment."""
    lines = page.read_text(encoding="utf-8").splitlines()
    tables = []
    for i, line in enumerate(lines):
        match = _CONFIG.match(line.strip())
        if not match:
            continue
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        rows = []
        end = start
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            rows.append(_cells(lines[end]))
            end += 1
        if len(rows) < 2:
            msg = f"{page}:{i + 1}: no table follows the config comment"
            raise ValueError(msg)
        header = [h.lower() for h in rows[0]]
        body = [dict(zip(header, r, strict=False)) for r in rows[2:]]
        tables.append(ConfigTable(page, i + 1, match["target"], body))
    return tables


def unquote(cell: str) -> str:
    """The text of a cell that holds one code span (backticks removed)."""
    cell = cell.strip()
    if len(cell) >= 2 and cell.startswith("`") and cell.endswith("`"):
        return cell[1:-1]
    return cell
