"""A clone stands on its own: every document the repository cites is in the repository.

Code, tests, docs and configuration cite docs/api.md, docs/stack-notes.md, the
README and the other docs, never a document kept outside the repository (the
first HTTP contract, the style guide, the notes on the stack the project began
with) nor a path that leads out of it. A "trap N" is one of docs/stack-notes.md's,
so a file that cites one names that file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a clone does not hold: tools' caches, the virtual environment, generated data.
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".hypothesis",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
}
SKIPPED_PATHS = {ROOT / "data", ROOT / "tests" / "artifacts"}
# Spelled in pieces, so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        (
            r"\.\./" + "shared",
            r"/work/" + "shared",
            r"\bAPI" + r"\.md",  # docs/api.md is spelled in lower case
            r"\bSTYLE" + r"\.md",
            r"\bSTACK" + "_NOTES",
            r"\bBRIEF" + r"\.md",
        )
    )
)
TRAP = re.compile(r"\btraps? \d")
NOTES = ROOT / "docs" / "stack-notes.md"


def repository_files() -> Iterator[Path]:
    """Every text file of the working tree that a clone would hold."""
    pending = [ROOT]
    while pending:
        directory = pending.pop()
        for path in sorted(directory.iterdir()):
            if path in SKIPPED_PATHS or path.is_symlink():
                continue
            if path.is_dir():
                if path.name not in SKIPPED_DIRS and not path.name.endswith(".egg-info"):
                    pending.append(path)
            elif path.is_file():
                yield path


def text_of(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError:  # an image, a database: nothing to cite there
        return None


def test_no_file_cites_a_document_outside_the_repository():
    citing = []
    for path in repository_files():
        text = text_of(path) or ""
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                citing.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not citing, "cites what a clone lacks:\n" + "\n".join(citing)


def test_a_file_that_cites_a_trap_names_the_stack_notes_it_is_from():
    unnamed = [
        str(path.relative_to(ROOT))
        for path in repository_files()
        if path != NOTES
        and TRAP.search(text := text_of(path) or "")
        and "stack-notes.md" not in text
    ]
    assert not unnamed, f"cite a trap without naming docs/stack-notes.md: {unnamed}"


def test_the_documents_the_docs_link_to_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text("utf-8")):
            if not re.match(r"[a-z]+:", target):
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
