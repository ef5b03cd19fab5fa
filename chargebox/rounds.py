"""A server's background thread that works in rounds until it is stopped (keeper.py, wal.py).

Each starts with its server process and is stopped as the process stops serving; a
failure is said in the thread's own log at most once every SAY_AGAIN seconds for its kind,
so a round that fails every time does not fill the log, and one that comes back is said.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Self

STOP_TIMEOUT = 5.0  # how long a stop waits for the thread's last round
SAY_AGAIN = 600.0  # seconds before a failure of a kind already said is said again


class Rounds:
    """A subclass runs its rounds in `_run`, until `self._stop` is set, and tells `_say`."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._log = log
        self._said: dict[str, float] = {}  # a failure's kind -> when it was last said

    def start(self) -> Self:
        self._thread.start()
        return self

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Started for the duration of a block (a server process's serving), then stopped."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """The thread ends, after a last round if it makes one."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        raise NotImplementedError

    def _say(self, kind: str, message: str) -> None:
        """Log `message` unless a failure of its `kind` was said less than SAY_AGAIN ago."""
        now = time.monotonic()
        if now - self._said.get(kind, -SAY_AGAIN) >= SAY_AGAIN:
            self._said[kind] = now
            self._log.warning("%s", message)
