"""A server's background thread that works in rounds until it is stopped (keeper.py, wal.py).

Each starts with its server process and is stopped as the process stops serving; a
failure is said once per message in the thread's own log, so a round that fails the same
way every time does not fill the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Self

STOP_TIMEOUT = 5.0  # how long a stop waits for the thread's last round


class Rounds:
    """A subclass runs its rounds in `_run`, until `self._stop` is set, and tells `_say`."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._log = log
        self._said: set[str] = set()

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

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._log.warning("%s", message)
