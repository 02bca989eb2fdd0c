"""The committed Markdown is self-contained: every relative link resolves inside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
OUTSIDE = re.compile(r"SPEC\.md|DESIGN\.md|STYLE\.md|LAYOUT\.md|\.\./shared|/work/shared|PROVENANCE\.md")


def _markdown_files() -> list[Path]:
    """The committed *.md files (every *.md under the repository when git is unavailable)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        return sorted(REPO / name for name in listed)
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in REPO.rglob("*.md") if ".git" not in p.parts and ".venv" not in p.parts)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to '-')."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, mailto:, ...


MARKDOWN = _markdown_files()


def test_the_repository_has_its_method_document() -> None:
    assert REPO / "docs" / "method.md" in MARKDOWN and REPO / "README.md" in MARKDOWN


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_and_anchor(path: Path) -> None:
    broken = []
    for target in _relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists() or REPO.resolve() not in (resolved, *resolved.parents):
            broken.append(f"{target} (no file {resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading with anchor #{anchor} in {resolved.name})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_no_document_points_outside_the_repository(path: Path) -> None:
    found = [
        f"line {number}: {match.group(0)}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for match in OUTSIDE.finditer(line)
    ]
    assert not found, f"{path.relative_to(REPO)} mentions files outside the repository: {found}"


def test_the_anchor_rule_matches_githubs() -> None:
    assert {
        "9-the-librarys-presets-and-the-releases-values",
        "3-attack-criteria-f_x-all-clipped-at-0",
    } <= _anchors(REPO / "docs" / "method.md")
