"""Write slots: how many of a process's threads may wait for the write lock at once.

db.py and postgresql.py each make one per database, with group commit or without.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from chargebox.errors import Unavailable

# How long a write waits for one of the process's write slots before it is refused,
# unless no write has begun for STALLED seconds: then the lock is stuck, and it is
# refused at once, so that a queue of writes cannot keep the threads from reads.
SLOT_WAIT = 0.25
STALLED = 0.25


class WriteSlots:
    """At most N threads of a process wait for the write lock; the rest are refused (503).

    A thread waiting for the lock is a waitress worker that answers nobody else. If
    all of them wait (a backup or a stalled process holds the lock), /health and
    every read queue behind them; the slots keep some threads free for those.
    """

    def __init__(self, threads: int, since_a_write_began: Callable[[], float]) -> None:
        self.count = max(1, threads - max(2, threads // 8))
        self._free = threading.BoundedSemaphore(self.count)
        self._since_a_write_began = since_a_write_began

    @contextlib.contextmanager
    def taken(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False) and (
            self._since_a_write_began() > STALLED or not self._free.acquire(timeout=SLOT_WAIT)
        ):
            raise Unavailable("too many writes are waiting for the database; retry shortly")
        try:
            yield
        finally:
            self._free.release()
