"""The WAL's checkpoints (SQLite), made by a thread of their own, not in a sale's COMMIT.

SQLite checkpoints its write-ahead log in the connection whose COMMIT takes the log past
`wal_autocheckpoint` pages (1,000): in a server, the group writer's. A checkpoint syncs
the log, copies its pages into the database file and syncs that: on this box about
40 ms every ~0.6 s under load, while no batch commits and the sales of the batch that
set it off wait too. And with `synchronous=NORMAL` nothing syncs the log but a
checkpoint (and the anchoring thread, every 10 s: keeper.py), so an acknowledged sale
could wait that long to reach the disk, to be lost if the power went meanwhile.

So each server process runs `Checkpoints`: every CHECKPOINT_SECONDS, a PASSIVE
checkpoint (it neither waits for nor blocks a reader or a writer) on a connection of its
own, and a last one as it stops; one with nothing new to copy does nothing, and one that
finds another checkpointing (the other processes', the writer's) waits for the next
round. A checkpoint syncs the log only when it copies pages: what a power cut can take
is then what was sold in the last CHECKPOINT_SECONDS and the checkpoint's own time, while
checkpoints work and no long read (a backup's, a full audit's) holds the log back.
The log restarts small and the writer's COMMITs seldom reach `wal_autocheckpoint`, which
stays as it was: should this thread fall behind, or fail, the writer checkpoints as
before and the log stays bounded. A failure is logged (once every ten minutes) and
tried again next round, on a new connection.
docs/performance.md ("The WAL's checkpoints, apart") has the measurements. Here too,
`durable()`: the WAL synced before the anchoring thread anchors what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from chargebox import cpus
from chargebox.config import Config
from chargebox.db import SQLITE_BUSY, SQLITE_LOCKED
from chargebox.errors import primary_code
from chargebox.rounds import Rounds

log = logging.getLogger("chargebox.wal")
_KEPT: dict[str, int] = {}  # WAL path -> a descriptor this process never closes (durable())
_KEPT_LOCK = threading.Lock()
CHECKPOINT_SECONDS = 0.1  # at most this much of what was sold waits for the disk


def checkpointing(config: Config) -> contextlib.AbstractContextManager[Checkpoints | None]:
    """Checkpoints for the duration of a block (a server process's serving), on SQLite."""
    if config.db_url:  # PostgreSQL's WAL is the cluster's own
        return contextlib.nullcontext()
    return Checkpoints(config.db_path, config.synchronous).running()


class Checkpoints(Rounds):
    """`Checkpoints(path, synchronous).start()` in a server process; `stop()` as it stops."""

    def __init__(self, path: Path, synchronous: str, every: float = CHECKPOINT_SECONDS) -> None:
        super().__init__("chargebox-wal", log)
        self.path, self.synchronous, self.every = path, synchronous, every
        self.made = 0  # checkpoints that copied pages, for the tests

    def _run(self) -> None:
        cpus.writer_started()  # beside the writer, when pinned: SQLite's I/O, outside the GIL
        conn: sqlite3.Connection | None = None
        copied = 0
        try:
            while not self._stop.wait(self.every):
                conn, copied = self._round(conn, copied)
            if conn is not None:  # a last one: a clean stop of `--processes K` leaves less
                self._round(conn, copied)
        finally:
            if conn is not None:
                conn.close()

    def _round(self, conn: sqlite3.Connection | None, copied: int
               ) -> tuple[sqlite3.Connection | None, int]:  # fmt: skip
        """One checkpoint; the connection to use next round, and the log's pages copied."""
        try:
            if conn is None:
                conn = self._connect()
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # a damaged or read-only file, a disk error
            if primary_code(exc) in (SQLITE_BUSY, SQLITE_LOCKED):
                return conn, copied  # another connection's moment (a file being made)
            self._say("checkpoint", f"a WAL checkpoint failed ({type(exc).__name__}: {exc}); "
                      "until one works, the writer's checkpoints and the anchoring thread's "
                      "syncs of the WAL stand in")  # fmt: skip
            with contextlib.suppress(sqlite3.Error):
                if conn is not None:
                    conn.close()
            return None, copied
        if busy:  # another checkpoints now (another process's thread, or the writer)
            return conn, copied
        if frames < 0:  # not in WAL mode when connected (a file being made): connect again
            conn.close()
            return None, copied
        if done > 0 and done != copied:  # pages copied (fewer: the log restarted)
            self.made += 1
        return conn, done

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never makes a file (one deleted or replaced under the server stays gone)
        uri = f"file:{quote(str(self.path))}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # how a checkpoint syncs
        return conn


def durable(config: Config) -> None:
    """Make what SQLite committed survive a power cut before it is anchored: with
    synchronous=NORMAL the WAL is synced only at checkpoints (PostgreSQL: at commit).

    The WAL is fsynced through a descriptor kept open for the life of the process:
    closing any descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included, and another process could then checkpoint and delete the WAL
    under our connections (SQLite's "database disk image is malformed").
    """
    if config.db_url:
        return
    path = f"{config.db_path.absolute()}-wal"
    with _KEPT_LOCK:
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return  # no WAL: everything committed is in the file, which checkpoints synced
        fd = _KEPT.get(path)
        if fd is None or os.fstat(fd).st_ino != inode:
            if fd is not None:  # a WAL deleted since (each connection closed): its locks,
                os.close(fd)  # if any, went with it; open, it kept its disk space in use
            fd = _KEPT[path] = os.open(path, os.O_RDONLY)  # then never closed, on purpose
        os.fsync(fd)
