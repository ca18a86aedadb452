"""Every relative link in the README and docs/ reaches a file, and every #anchor a heading
of it (GitHub's slugs), so moving a section cannot leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text())
    found: set[str] = set()
    for line in body.splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            n, name = 0, base
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    found |= set(re.findall(r'<a (?:name|id)="([^"]+)"', body))
    return found


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            dead.append(f"{page.name}: {target} (no file {path})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            dead.append(f"{page.name}: {target} (no heading #{anchor} in {file.name})")
    return dead


def test_every_relative_link_and_anchor_resolves() -> None:
    assert [d for page in pages() for d in dead_links(page)] == []


def test_the_checker_finds_a_dead_file_and_a_dead_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Real heading\n")
    page = tmp_path / "a.md"
    page.write_text("[x](b.md#real-heading) [y](b.md#gone) [z](missing.md) [w](#local)\n# Local\n")
    assert dead_links(page) == [
        "a.md: b.md#gone (no heading #gone in b.md)",
        "a.md: missing.md (no file missing.md)",
    ]
