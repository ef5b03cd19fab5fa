"""`chargebox backup DIR/ --keep N`: which older stamped copies in DIR are deleted.

A stamped name (`chargebox-20261207T030000Z.db`) says only which file name was backed
up: two deployments' `data/chargebox.db` backed up into one directory share it, and a
copy restored and served where it lies keeps it. So an SQLite copy is deleted only when
it is this database's (its first seller and its first sealed ledger entry are the new
copy's, or it holds none of them) and nothing has it open (no `-wal` or `-shm` beside
it); any other is left, and named. The newest N of this database's copies stay, by
their names' stamps: by count, not age (a clock jumped a year ahead and set back cannot
make every copy look old; a copy named in the future keeps its place among the N until
the clock passes it). The copy just made is never deleted. pg_dump's files cannot be
read so cheaply: they are told apart by their names alone. Nor can two deployments born
of one database (a staging restored from production's copy) be told apart: README asks
for a folder per deployment; this is the guard for when that is forgotten.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

from chargebox import anchors
from chargebox.config import anchors_beside

# What a database holds from its first rows on, and every later copy of it still holds.
_BIRTH = (
    "SELECT id, name, created_at FROM seller ORDER BY id LIMIT 1",
    "SELECT entry_id, mac FROM ledger_seal ORDER BY entry_id LIMIT 1",
)


def stamped_alike(made: Path) -> list[Path]:
    """The files beside `made` (itself too) named as it is but for the stamp, newest first."""
    stem, _, stamped = made.name.rpartition("-")
    ending = stamped[stamped.index("Z") + 1 :]  # ".db", ".dump", or nothing
    shape = re.compile(re.escape(stem) + r"-\d{8}T\d{6}Z" + re.escape(ending))
    return sorted((p for p in made.parent.iterdir() if shape.fullmatch(p.name)), reverse=True)


def births(path: Path) -> tuple:
    """`_BIRTH`'s rows of an SQLite file, opened read-only; ValueError saying why not."""
    if not path.is_file():
        raise ValueError("not a file")
    if Path(f"{path}-wal").exists() or Path(f"{path}-shm").exists():
        raise ValueError("in use (a -wal or -shm beside it: served or read where it lies)")
    try:
        # immutable: read as it lies, no -wal or -shm made beside a copy in WAL mode (a
        # plain read-only open makes both, and leaves them: the copy then looked in use)
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            return tuple(conn.execute(sql).fetchone() for sql in _BIRTH)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ValueError(f"not a chargebox database that can be read ({exc})") from None


def past_keeping(made: Path, keep: int, sqlite: bool = True) -> tuple[list[Path], list[str]]:
    """The older copies to delete, and a line for each stamped name left for another
    reason than being among the newest `keep`."""
    ours, left = [], []
    ancestry = births(made) if sqlite else ()
    for path in stamped_alike(made):
        if sqlite and path != made:
            try:
                found = births(path)
            except ValueError as exc:
                left.append(f"left {path}: {exc}")
                continue
            theirs = zip(found, ancestry, strict=True)
            if any(row is not None and row != mine for row, mine in theirs):
                left.append(f"left {path}: a copy of another database (its first seller or "
                            "first sealed entry is not this one's)")  # fmt: skip
                continue
        ours.append(path)
    return [path for path in ours[keep:] if path != made], left


def prune(made: Path, keep: int, sqlite: bool) -> bool:
    """Delete what `past_keeping` names, each with its anchors; say what went and what
    was left; False if one could not be deleted."""
    deleted, left = past_keeping(made, keep, sqlite)
    for line in left:
        print(f"chargebox: {line} (--keep {keep} counts this database's copies)", file=sys.stderr)
    kept = True
    for path in deleted:
        anchored = anchors_beside(path)  # if it was audited or served: its anchors and theirs
        for each in (path, anchored, *anchors.beside(anchored)):
            try:
                each.unlink(missing_ok=True)
            except OSError as exc:
                print(f"chargebox: could not delete {each} (--keep {keep}): {exc.strerror}",
                      file=sys.stderr)  # fmt: skip
                kept = False
                break
        else:
            print(f"chargebox: deleted {path} (--keep {keep})", file=sys.stderr)
    return kept
