"""Reading the manual: its pages, their code, links and tables, as the tests need them.

The pages are README.md, runtime/README.md and every docs/*.md, so a page added by anyone
is checked without registering it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ROOT",
    "Page",
    "all_pages",
    "page",
    "slug",
]

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


@dataclass(frozen=True)
class Page:
    """One Markdown file of the manual."""

    path: Path
    text: str

    @property
    def name(self) -> str:
        """The path from the repository root (``docs/batch.md``)."""
        return self.path.relative_to(ROOT).as_posix()

    def fenced(self, *languages: str) -> list[str]:
        """The bodies of fenced code blocks in ``languages`` ("" for a bare fence)."""
        return [m.group(2) for m in _FENCE.finditer(self.text) if m.group(1) in languages]

    def prose(self) -> str:
        """The text without its fenced blocks."""
        return _FENCE.sub("", self.text)

    def snippets(self) -> list[str]:
        """Every piece of code a reader may type: each line of a shell or bare fenced
        block (continuation lines joined) and each inline code span of the prose."""
        lines: list[str] = []
        for block in self.fenced("", "bash", "sh", "shell", "console"):
            lines += block.replace("\\\n", " ").splitlines()
        lines += [m.group(1).replace("\n", " ") for m in _INLINE.finditer(self.prose())]
        return lines

    def links(self) -> list[str]:
        """Every Markdown link target in the prose."""
        return [m.group(1) for m in _LINK.finditer(self.prose())]

    def anchors(self) -> set[str]:
        """The anchors GitHub gives the page's headings."""
        return {slug(m.group(1)) for m in _HEADING.finditer(self.prose())}

    def table(self, header: str) -> list[list[str]]:
        """The rows (cells stripped) of the table whose header row starts with ``header``.

        Raises :class:`LookupError` when the page has no such table."""
        lines = self.text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith(header):
                rows = []
                for row in lines[i + 2 :]:
                    if not row.startswith("|"):
                        break
                    rows.append([cell.strip() for cell in row.strip().strip("|").split(" | ")])
                return rows
        raise LookupError(f"{self.name} has no table starting {header!r}")


def slug(heading: str) -> str:
    """The anchor GitHub makes of a heading: lower case, punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def page(name: str) -> Page:
    """The page at ``name`` from the repository root."""
    path = ROOT / name
    return Page(path, path.read_text(encoding="utf-8"))


def all_pages() -> list[Page]:
    """README.md, runtime/README.md and every page under docs/."""
    paths = [ROOT / "README.md", ROOT / "runtime" / "README.md"]
    paths += sorted((ROOT / "docs").glob("**/*.md"))
    return [Page(p, p.read_text(encoding="utf-8")) for p in paths]
