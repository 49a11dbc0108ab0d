"""The README stays a front page, and every relative link in README.md and docs/ leads somewhere.

Docs are moved around (results into docs/evaluation/, experiments into docs/lab/); a link that still names the
old place fails here instead of in a reader's browser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_BYTES = 15 * 1024
# [text](target) or [text](target "title"); the target stops at whitespace or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Fenced code blocks hold shell and JSON, where "[...](...)" is not a link.
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:")


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _relative_links(path: Path) -> list[str]:
    """The link targets in a Markdown file that point into the repository.

    Args:
        path: The Markdown file.

    Returns:
        Each target without its ``#anchor``; external links and links to an anchor of the same page are left out.
    """
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code, e.g. a regex or an array index, is not a link either
    targets = []
    for target in LINK.findall(text):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link target exists, read from the folder of the file that links to it."""
    broken = [t for t in _relative_links(path) if not (path.parent / t).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_readme_is_a_front_page() -> None:
    """README.md is a front page; results and guides belong in docs/."""
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {README_MAX_BYTES})"
