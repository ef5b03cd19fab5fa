"""The server's anchoring thread: every CHARGEBOX_ANCHOR_SECONDS, the sealed heads that moved.

One thread per server process, and of the processes sharing an anchors file only the
one holding its writer flock (`<anchors>.writer`) writes; another takes over if that
one dies. It reads the heads in a read snapshot of its own connection (never the
write lock, never a sale's thread), makes them durable, appends one line for the
sellers whose head moved, and does a last round at a clean stop. A failure is
logged (once every ten minutes per kind) and retried next round: anchoring never stops a sale.

Its first round is as it starts, and its connection stays open: on PostgreSQL that
session (named 'chargebox serve') is how `chargebox migrate` knows, from any host,
that a server runs on the database (migrations.mark_serving).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

from chargebox import anchors
from chargebox.config import Config
from chargebox.db import open_database
from chargebox.rounds import Rounds

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: every process writes
    fcntl = None

log = logging.getLogger("chargebox.anchors")


class Keeper(Rounds):
    """`Keeper(config).start()` in a server process; `stop()` when it stops serving: a last
    round (what was sold until now is anchored), then the thread ends."""

    def __init__(self, config: Config) -> None:
        super().__init__("chargebox-anchors", log)
        # Reads only: no group writer for this connection.
        self.config = dataclasses.replace(config, group_commit=False)
        self.key = config.ledger_key.encode("utf-8") if config.ledger_key else None
        self.rounds = 0  # rounds that wrote a line, for the tests
        self._writer_fd: int | None = None
        self._anchored: dict[int, int] | None = None  # seller -> entries last anchored

    def start(self) -> Keeper:
        return super().start() if self.key is not None else self  # no key: nothing to seal

    def _run(self) -> None:
        database = None
        try:
            stopping = False
            while True:
                try:
                    if self._leading():
                        database = database or open_database(self.config)
                        self._round(database)
                except Exception as exc:  # noqa: BLE001 - logged; the next round retries
                    self._say("round", f"anchoring failed: {type(exc).__name__}: {exc}")
                if stopping:
                    break
                stopping = self._stop.wait(self.config.anchor_seconds)
        finally:
            if database is not None:
                with contextlib.suppress(Exception):
                    database.close()
            if self._writer_fd is not None:
                os.close(self._writer_fd)

    def _leading(self) -> bool:
        """Whether this process writes the anchors (holds the writer flock, kept open)."""
        if self._writer_fd is not None or fcntl is None:
            return True
        fd = os.open(f"{self.config.anchors_path}{anchors.WRITER}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._writer_fd = fd
        return True

    def _round(self, database) -> None:
        if self._anchored is None:  # what the file holds already: not written again
            held = anchors.read(self.config.anchors_path, self.key).heads
            self._anchored = {seller: a.head.entries for seller, a in held.items()}
        with database.snapshot() as db:
            now_heads = anchors.heads(db)
        moved = [h for h in now_heads if h.entries > self._anchored.get(h.seller_id, 0)]
        behind = [h for h in now_heads if h.entries < self._anchored.get(h.seller_id, 0)]
        if behind:
            self._say("behind", f"{len(behind)} seller(s) behind their anchors, seller "
                      f"{behind[0].seller_id} first: the database was replaced under a running "
                      "server? run `chargebox audit`")  # fmt: skip
        if moved:
            anchors.record(self.config, self.key, moved, f"server {os.getpid()}")
            self._anchored.update((h.seller_id, h.entries) for h in moved)
            self.rounds += 1
