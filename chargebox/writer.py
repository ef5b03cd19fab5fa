"""Group commit: one writer thread per process applies the waiting writes in one transaction.

A write that finds the process idle runs at once in its caller's thread (a lone
client pays no hand-off); writes that arrive while another is in progress
queue, and the writer thread applies all that wait in one `db.write_tx()`, on
its one warm connection. Each write runs in its own SAVEPOINT, so it is
validated, recorded and answered on its own: a refused or failed write rolls
back only itself. Nobody is answered before COMMIT; nobody waits for a batch.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from typing import Any

from chargebox import db
from chargebox.errors import Unavailable

MAX_BATCH = 256


class _Item:
    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class GroupWriter:
    """Run write callables for many threads, many per `BEGIN IMMEDIATE ... COMMIT`."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = threading.Condition()
        self._busy = False  # a transaction of this writer is in progress (inline or batched)
        self._pid = 0
        self.batches = 0  # counters for the benchmark; written by the writer thread only
        self.writes = 0

    def submit(self, work: Callable[[], Any]) -> Any:
        """Run `work()` inside a write transaction; return its result once committed."""
        item = _Item(work)
        with self._wake:
            self._ensure_thread()
            inline = not self._busy and not self._queue
            if inline:
                self._busy = True
            else:
                self._queue.append(item)
                self._wake.notify()
        if inline:
            self._apply_and_release([item])
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def _ensure_thread(self) -> None:
        # A thread does not survive fork: a child process starts its own writer.
        if self._pid != os.getpid():
            self._pid, self._busy = os.getpid(), False
            self._queue.clear()
            threading.Thread(target=self._run, name="chargebox-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue or self._busy:
                    self._wake.wait()
                self._busy = True
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))
                ]
            self._apply_and_release(batch)

    def _apply_and_release(self, batch: list[_Item]) -> None:
        try:
            self._apply(batch)
        finally:
            with self._wake:
                self._busy = False
                if self._queue:
                    self._wake.notify()

    def _apply(self, batch: list[_Item]) -> None:
        try:
            with db.write_tx():
                for item in batch:
                    try:
                        with db.translate_errors(), db.savepoint():
                            item.result = item.work()
                    except Unavailable:
                        raise  # the database cannot write now: the whole batch fails
                    except Exception as exc:  # this write only; the savepoint undid it
                        item.error = exc
        except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch was written
            for item in batch:
                item.error = _copy(exc)
        finally:
            self.batches += 1
            self.writes += len(batch)
            for item in batch:
                item.done.set()


def _copy(exc: Exception) -> Exception:
    """One exception object per waiting thread: each raises (and annotates) its own."""
    message = getattr(exc, "message", None)
    try:
        copy = type(exc)(message) if message is not None else type(exc)(*exc.args)
    except Exception:  # an exception type we cannot rebuild: share it rather than lose it
        return exc
    copy.__cause__ = exc.__cause__
    return copy
