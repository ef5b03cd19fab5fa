"""A backup's copy while it is made, and what killed backups leave of theirs.

`making(target)` gives a backup an empty, owner-only file for its copy in a directory
of its own beside `target` (same file system: the copy's rename onto `target` is
atomic), `.TARGET.XXXXXXXX.partial`. The directory is flock'ed before anything is put in
it, then marked (MARK) as a backup's, and removed with the lock still held when the
backup ends; a program the backup runs (pg_dump) inherits the lock, so the lock lives
exactly as long as something may write there. A backup killed meanwhile leaves a marked
directory whose lock no one holds: `sweep` removes those, and only those. It never
removes what is not provably such a leftover: a directory without the mark, one holding
anything but regular files of the names a copy has, or one whose lock is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SUFFIX = ".partial"
MARK = "chargebox-backup"  # the file that says a directory is a backup's
COPY = "copy"
NAMES = frozenset({MARK, COPY, f"{COPY}-wal", f"{COPY}-shm", f"{COPY}-journal"})


@contextlib.contextmanager
def making(target: Path) -> Iterator[tuple[Path, int]]:
    """The file for a copy of `target`, and the descriptor that holds its directory's
    lock (to pass to a program that writes the copy); all removed when the block ends.
    ValueError, in one line, if nothing can be made beside `target`."""
    try:
        made = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=SUFFIX)
    except OSError as exc:  # a folder this user may not write in (cron as the wrong user)
        raise ValueError(f"{target}: cannot create files in {target.parent} ({exc.strerror})"
                         ) from None  # fmt: skip
    directory = Path(made)
    fd = None
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # before the mark: a marked directory is locked
        for name in (MARK, COPY):
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        yield directory / COPY, fd
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if fd is not None:
            os.close(fd)  # the lock goes with the directory, never before it


def sweep(directory: Path) -> list[Path]:
    """Remove the copies killed backups left in `directory` (see the top); the ones
    removed."""
    removed = []
    for path in sorted(directory.glob(f".*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # not a directory, a link, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a backup's, now
            names = os.listdir(fd)
            if MARK not in names or not all(_a_copys_file(fd, name) for name in names):
                continue
            for name in sorted(names, key=lambda n: n == MARK):  # the mark last, through
                # the descriptor checked, whatever the path names now
                os.unlink(name, dir_fd=fd)
            os.rmdir(path)  # empty now; fails if something else took its name meanwhile
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _a_copys_file(fd: int, name: str) -> bool:
    if name not in NAMES:
        return False
    found = os.stat(name, dir_fd=fd, follow_symlinks=False)
    return stat.S_ISREG(found.st_mode) and found.st_uid == os.geteuid()
