"""The write gate: a queue in front of SQLite's write lock, for threads and for processes.

SQLite's busy handler sleeps and retries instead of queueing, so under load some
writers starve and `database is locked` escapes. A thread lock queues one
process's threads; flocks on two kept-open files serialise processes, polled
(every 0.1-0.5 ms: one thread per process polls) and given up at the write's
deadline, so a stuck writer elsewhere cannot hang us. The second file is the
line in front of the gate: a process takes its place in line, then the gate,
then leaves the line. So a process that has just written cannot take the gate
again before the one already waiting (it must first get into line, which the
waiter holds until it has the gate): busy processes take turns, instead of the
one that wrote last winning again while the other sleeps between its polls.
The files are reopened after fork, since an flock belongs to the open file and
a child must not share its parent's.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from chargebox.errors import LockTimeout

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the thread lock and busy timeout remain
    fcntl = None


class WriteGate:
    """One database file's gate; `held_until(deadline)` holds it for a block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line_path = path.with_name(path.name.removesuffix("-lock") + "-line")
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._line_fd: int | None = None
        self._pid = 0
        self._owner: int | None = None
        self.began = 0.0  # time.monotonic() when a write of this process last began

    def held(self) -> bool:
        """Whether this thread holds the gate (it is inside a write)."""
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def held_until(self, deadline: float) -> Iterator[None]:
        """Hold the gate for a block, waiting for it until `deadline` at most (LockTimeout)."""
        if not self._thread_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise LockTimeout("the database is busy; retry shortly")
        try:
            fd = self._file()
            if fd is not None:
                self._flock(self._line_fd, deadline)  # a place in line
                try:
                    self._flock(fd, deadline)
                finally:
                    fcntl.flock(self._line_fd, fcntl.LOCK_UN)
        except BaseException:
            self._thread_lock.release()
            raise
        self._owner = threading.get_ident()
        try:
            yield
        finally:
            self._release()

    @staticmethod
    def _flock(fd: int, deadline: float) -> None:
        """Take the process-wide flock, giving up at the deadline.

        One thread per process asks at a time (the thread lock is held), so the short
        polls below cost little; a stuck writer elsewhere can no longer hang us.
        """
        pause = 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout("the database is busy; retry shortly") from None
                time.sleep(pause)  # another process is writing: poll, not spin
                pause = min(pause * 2, 0.0005)

    def _release(self) -> None:
        self._owner = None
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _file(self) -> int | None:
        if fcntl is None:
            return None
        if self._fd is None or self._pid != os.getpid():
            self._line_fd = os.open(self.line_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
                os.close(self._line_fd)
            self._fd = self._line_fd = None
