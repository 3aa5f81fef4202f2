"""Documentation links: every pointer in the repository names a file in it.

* No text file outside ``docs/`` may point at documents that are not part of the repository: the former
  design notes and reference specification (by file name), the shared folder beside the checkout, numbered
  issues or bare section numbers of those documents. Point at ``docs/<file>.md#<anchor>`` instead.
* Every ``docs/<file>.md#<anchor>`` written anywhere (and every ``(<file>.md#<anchor>)`` /
  ``(#<anchor>)`` link inside ``docs/``) names an existing file and an existing heading anchor in it,
  with GitHub's anchor rules (lowercase, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` … for
  repeated headings).

Files are those git knows or would add (tracked plus untracked, not ignored); the test is skipped outside
a git checkout.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

# Written in pieces so that this file does not match its own patterns.
FORBIDDEN = {
    "the reference specification": re.compile("reference" + r"-spec", re.IGNORECASE),
    "the design notes": re.compile("design" + r"\.md", re.IGNORECASE),
    "the shared folder beside the checkout": re.compile(r"\.\./" + "shared"),
    "an issue number": re.compile(r"\bissues?\s*#?\s*" + r"\d", re.IGNORECASE),
    "a section number of an outside document": re.compile("\u00a7" + r"\s*\d"),
}
DOC_REF = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)#([A-Za-z0-9_-]+)")
DOC_FILE_REF = re.compile(r"docs/([A-Za-z0-9_-]+\.md)\b")
LOCAL_LINK = re.compile(r"\]\(([A-Za-z0-9_.-]+\.md)?#([A-Za-z0-9_-]+)\)")


def _repo_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (or git is missing): the file list comes from git")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout
    names = sorted({n for n in out.decode("utf-8", "surrogateescape").split("\0") if n})
    return [REPO / n for n in names if (REPO / n).is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@lru_cache(maxsize=None)
def _texts() -> tuple[tuple[str, str], ...]:
    files = []
    for path in _repo_files():
        text = _text(path)
        if text is not None:
            files.append((path.relative_to(REPO).as_posix(), text))
    return tuple(files)


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading text: lowercase, every character that is not a letter, digit,
    space, hyphen or underscore dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """Anchors of the ATX headings of a Markdown text, outside fenced code blocks."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence = None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)[0]
            elif stripped.startswith(fence * 3):
                fence = None
            continue
        if fence is not None:
            continue
        m = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def _lines_matching(text: str, pattern: re.Pattern) -> list[tuple[int, str]]:
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]


def test_github_anchor_rules():
    assert github_anchor("GS-TMSE") == "gs-tmse"
    assert github_anchor("Spatial block (SP)") == "spatial-block-sp"
    assert github_anchor("One fused op, end to end") == "one-fused-op-end-to-end"
    assert heading_anchors("# A\n## A\n```\n# not a heading\n```\n### B `c`\n") == {"a", "a-1", "b-c"}


def test_docs_exist():
    for name in ("model.md", "architecture.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"
        assert heading_anchors((DOCS / name).read_text(encoding="utf-8")), f"docs/{name} has no headings"


def test_no_pointers_outside_the_repository():
    problems = []
    for rel, text in _texts():
        if rel.startswith("docs/"):
            continue
        for what, pattern in FORBIDDEN.items():
            for lineno, line in _lines_matching(text, pattern):
                problems.append(f"{rel}:{lineno}: points at {what}: {line[:160]}")
    assert not problems, ("pointers to documents outside the repository (use docs/<file>.md#<anchor>):\n"
                          + "\n".join(problems))


def test_doc_anchors_exist():
    anchors = {p.name: heading_anchors(p.read_text(encoding="utf-8")) for p in DOCS.glob("*.md")}
    problems = []
    for rel, text in _texts():
        for lineno, line in enumerate(text.splitlines(), 1):
            for name in DOC_FILE_REF.findall(line):
                if name not in anchors:
                    problems.append(f"{rel}:{lineno}: docs/{name} does not exist")
            for name, anchor in DOC_REF.findall(line):
                if name in anchors and anchor not in anchors[name]:
                    problems.append(f"{rel}:{lineno}: docs/{name} has no heading with anchor #{anchor}")
            if rel.startswith("docs/"):
                here = rel.split("/", 1)[1]
                for name, anchor in LOCAL_LINK.findall(line):
                    name = name or here
                    if name not in anchors:
                        problems.append(f"{rel}:{lineno}: link to missing docs/{name}")
                    elif anchor not in anchors[name]:
                        problems.append(f"{rel}:{lineno}: docs/{name} has no heading with anchor #{anchor}")
    assert not problems, "broken documentation references:\n" + "\n".join(problems)
