"""Group commit: one writer thread per process applies the waiting writes in one transaction.

A write that finds the process idle runs at once in its caller's thread (a lone client
pays no hand-off); writes that arrive while another is in progress queue, and the
writer thread applies all that wait in one transaction, on its one warm connection,
each answered on its own as if it had gone alone. Nobody is answered before COMMIT;
nobody waits for a batch. Each write has a deadline: a batch waits for the lock until
its earliest one, and the writes whose time is left try again, so none waits past its
own. A batch applies its writes in the order of their `order` (a seller's id), so that
batches of other processes take the same rows' locks in the same order.

The runs of writes that can go together (their work has `together`: a seller's queued
sales, idempotency._Together) that lead a batch, one run per seller, go first, all in
one call and no savepoint, when the writer is made `side_by_side` (both databases'
are): the sales of 30 sellers are then a handful of statements, not 30 savepoints and
some 200 statements. If that call fails (a seller suspended meanwhile, a key another
server recorded, a deadlock; not the lock missed or the database down: those fail the
batch), the transaction is rolled back (`redone`) and the batch goes run by run, each
in its SAVEPOINT, a run that fails there each write alone, so a refused write rolls
back only itself; a deadlock's victim (PostgreSQL) goes first into the next batch.

A writer made `late` (SQLite's: its lock holds every seller) binds a batch late: once
the lock is had, the sales queued while another process held it join the leading runs
(on PostgreSQL that cost a round trip more while the row is held: docs/performance.md).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from chargebox import cpus, metrics
from chargebox.errors import Deadlocked, LockTimeout, NotGranted, Unavailable, raised_at

_log = logging.getLogger("chargebox.writer")
MAX_BATCH = 256
LOCK_SLACK = 0.01  # a write this close to its deadline when the lock was missed: answered now
_BUSY = "the database is busy; retry shortly"


class Separately(Exception):
    """Raised by a `together` call: these writes cannot go as one; each goes alone."""


class _Item:
    __slots__ = ("work", "deadline", "order", "result", "error", "done", "_answered")

    def __init__(self, work: Callable[[Any], Any], deadline: float, order: int | None) -> None:
        self.work = work
        self.deadline = deadline  # time.monotonic() by which it is answered
        self.order = order  # where it goes in a batch (None: after those that have one)
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False  # answered (by one thread: the writer, or the caller inline)
        self._answered = threading.Lock()  # held until answered: cheaper to wake than an Event
        self._answered.acquire()

    def answer(self) -> None:
        """Its result or error is set: wake the thread that waits for it (once)."""
        if not self.done:
            self.done = True
            self._answered.release()

    def wait(self) -> None:
        self._answered.acquire()


class GroupWriter:
    """Run write callables for many threads, many per `BEGIN IMMEDIATE ... COMMIT`:
    `begin(deadline)` opens a write transaction (LockTimeout if the lock is not had by
    then) and yields the open write, which has `savepoint()`; each work gets it."""

    def __init__(self, begin: Callable[[float], AbstractContextManager[Any]],
                 finish: Callable[[], None] = lambda: None, max_batch: int = MAX_BATCH,
                 side_by_side: bool = False, late: bool = False) -> None:  # fmt: skip
        self._begin = begin
        self.side_by_side = side_by_side  # the runs that lead a batch in one call (see the top)
        self.bind_late = late  # begin() holds every seller: add what queued meanwhile
        self._finish = finish  # run in the writer thread as it ends (closes its connection)
        self._closed = False
        self.max_batch = max_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = threading.Condition()
        self._busy = False  # a transaction of this writer is in progress (inline or batched)
        self._held: list[_Item] = []  # the writes of the batch in hand (one applier at a time)
        self._pid, self._alive = 0, False  # whose queue this is; whether its writer thread runs
        self.batches = self.writes = 0  # counters for the benchmark; by one applier at a time
        self.together = 0  # writes applied together with others of their kind and order
        self.separately = 0  # groups that could not be applied as one (each went alone)
        self.redone = 0  # batches tried side by side, rolled back, applied run by run
        self.late = 0  # writes added to a batch once its lock was had (_bind_late)

    def submit(self, work: Callable[[Any], Any], deadline: float, order: int | None = None) -> Any:
        """Run `work(write)` inside a write transaction; its result once committed. Unavailable
        if the lock cannot be had by `deadline` (time.monotonic()). Writes with an `order`
        (the seller whose row they lock first) run in that order."""
        item = _Item(work, deadline, order)
        with self._wake:
            if self._closed:
                raise AssertionError("this database was closed: open a new one to write")
            self._ensure_thread()
            inline = not self._busy and not self._queue
            if inline:
                self._busy = True
            else:
                self._queue.append(item)
                self._wake.notify()
        if inline:
            self._apply_and_release([item])
        item.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a thread does not survive fork: a child starts its own
            if self._pid:  # forked: the parent's queue and transaction are not this process's
                self._queue.clear()
                self._busy = False
            self._pid, self._alive = os.getpid(), False
        if not self._alive:  # none yet, or the last one ended
            threading.Thread(target=self._run, name=cpus.WRITER_THREAD, daemon=True).start()
            self._alive = True

    def _run(self) -> None:
        try:
            cpus.writer_started()  # to a CPU of its own, when the server is pinned (--cpus)
            while True:
                with self._wake:  # never beside an inline write, even once closed
                    while self._busy or (not self._queue and not self._closed):
                        self._wake.wait()
                    if not self._queue:
                        return  # closed
                    self._busy = True
                    count = min(len(self._queue), self.max_batch)
                    batch = [self._queue.popleft() for _ in range(count)]
                self._apply_and_release(batch)
        except BaseException as exc:  # it ends (what it held is answered): another takes over
            _log.error("the writer thread ended: %s (at %s)", type(exc).__name__, raised_at(exc))
            with self._wake:
                self._alive = False
                if self._queue:
                    self._ensure_thread()
        finally:
            self._finish()

    def busy(self) -> bool:
        """Whether a write transaction of this writer is in progress (inline or batched)."""
        with self._wake:
            return self._busy

    def queued(self) -> int:
        """How many writes wait for the writer's next batch."""
        with self._wake:
            return len(self._queue)

    def close(self) -> None:
        """Let the writer thread end once nothing waits (it closes its own connection)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _apply_and_release(self, batch: list[_Item]) -> None:
        again: list[_Item] = []
        self._held = batch  # then _apply's list, which the writes that join late go to
        try:
            again = self._apply(batch)
        except BaseException as exc:  # a bug: what it held and had not answered fails with it
            unanswered = [item for item in {*batch, *self._held} if not item.done]
            _answer(unanswered, exc if isinstance(exc, Exception) else Unavailable(_BUSY))
            _log.error("a batch failed: %s (at %s); %d writes answered with it",
                       type(exc).__name__, raised_at(exc), len(unanswered))  # fmt: skip
            if not isinstance(exc, Exception):
                raise
        finally:
            with self._wake:
                self._held = []
                self._queue.extendleft(reversed(again))  # first in line, in their order
                self._busy = False
                if self._queue and not self._alive:  # its thread ended meanwhile
                    self._ensure_thread()
                if self._queue or self._closed:
                    self._wake.notify()

    def _apply(self, batch: list[_Item]) -> list[_Item]:
        """Apply `batch` in one transaction; return the writes to try again (lock busy,
        or a deadlock's victim)."""
        live = self._held = _answer_late(batch, time.monotonic())
        if not live:
            return []
        live.sort(key=_in_order)
        groups = list(_groups(live))
        if self.side_by_side and (lead := _leading_runs(groups)):
            try:
                return self._commit(live, groups, side_by_side=lead)
            except _NotSideBySide:  # rolled back: each run in its savepoint, as below
                self.redone += 1
                metrics.batch_redone()
        return self._commit(live, groups)

    def _commit(self, live: list[_Item], groups: list[list[_Item]],
                side_by_side: int = 0) -> list[_Item]:  # fmt: skip
        """`groups` (`live`, grouped) in one transaction, the first `side_by_side` of them
        in one call (_NotSideBySide, answering nobody, if that call fails but for the lock
        or the database), then answer `live`; return the writes to try again."""
        victims: list[_Item] = []
        runs: list[tuple[bool, int]] = []  # each run that went together: as one?, its size
        began, waited = time.perf_counter(), False
        try:
            with self._begin(min(item.deadline for item in live)) as write:
                metrics.lock_waited(time.perf_counter() - began)
                waited = True
                if side_by_side and self.bind_late:
                    side_by_side = self._bind_late(live, groups)
                self._side_by_side(write, groups[:side_by_side], runs)
                self._one_by_one(write, groups[side_by_side:], victims, runs)
        except _NotSideBySide:
            raise  # rolled back
        except (LockTimeout, Deadlocked):  # rolled back; the earliest deadline has come
            if not waited:
                metrics.lock_waited(time.perf_counter() - began)  # waited, and gave up
            return _answer_late(live, time.monotonic() + LOCK_SLACK)
        except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch was written
            _answer(live, exc)
            return []
        committed = [item for item in live if item not in victims]
        for item in committed:  # first: nothing counted after the COMMIT may undo an answer
            item.answer()
        for together, size in runs:
            metrics.run_written(together)
            if together:
                self.together += size
            else:
                self.separately += 1
        self.batches += 1
        self.writes += len(committed)
        metrics.write_committed(len(committed))
        return _answer_late(victims, time.monotonic() + LOCK_SLACK)

    def _bind_late(self, live: list[_Item], groups: list[list[_Item]]) -> int:
        """The lock is had (SQLite: the whole file's): add the writes of the leading runs' kind
        (sales) queued meanwhile, none behind a write of another kind of its seller (a
        seller's writes stay in order). `live` and `groups` grow in place (a redo keeps
        them); returns how many groups lead now."""
        together, room = _together_of(groups[0][0]), self.max_batch - len(live)
        taken, kept, behind = [], collections.deque(), set()  # behind: sellers not taken
        with self._wake:
            for item in self._queue:
                if _together_of(item) == together and item.order not in behind and room:
                    taken.append(item)
                    room -= 1
                else:  # and, whatever its kind, its seller's later writes stay behind it
                    behind.add(item.order)
                    kept.append(item)
            live.extend(taken)  # answered with the batch from here on, whatever happens
            self._queue = kept
        self.late += len(taken)
        live.sort(key=_in_order)
        groups[:] = _groups(live)
        return _leading_runs(groups)

    def _one_by_one(self, write: Any, groups: list[list[_Item]], victims: list[_Item],
                    runs: list[tuple[bool, int]]) -> None:  # fmt: skip
        """Each run of writes that go together in one savepoint, each other write in its own."""
        for group in groups:
            if _together_of(group[0]) is not None:
                group = self._together(write, group, victims, runs)
            for item in group:
                self._alone(write, item, victims)

    def _side_by_side(self, write: Any, groups: list[list[_Item]],
                      runs: list[tuple[bool, int]]) -> None:  # fmt: skip
        """The groups (runs that go together, each its own seller's) in one call, with no
        savepoint; if it fails but for the lock or the database, _NotSideBySide (then rolled
        back), and why is logged unless a seller could not (`Separately`) or a deadlock."""
        if not groups:
            return
        together = _together_of(groups[0][0])
        try:
            answers = together(write, [[item.work for item in group] for group in groups])
        except Deadlocked:
            raise _NotSideBySide from None
        except Unavailable:
            raise  # the lock not had in time, or the database cannot write now
        except Exception as exc:
            if not isinstance(exc, (Separately, NotGranted)):  # NotGranted: said once (pg_driver)
                _log.warning("a batch of %d runs goes run by run: %s", len(groups),
                             type(exc).__name__)  # fmt: skip
            raise _NotSideBySide from None
        for group, answered in zip(groups, answers, strict=True):
            self._answered(group, answered, runs)

    @staticmethod
    def _answered(group: list[_Item], answers: list, runs: list[tuple[bool, int]]) -> None:
        for item, (result, error) in zip(group, answers, strict=True):
            item.result, item.error = result, error
        runs.append((True, len(group)))

    def _alone(self, write: Any, item: _Item, victims: list[_Item]) -> None:
        """Apply one write in its own savepoint."""
        item.result, item.error = None, None  # from an attempt rolled back
        try:
            with write.savepoint():
                item.result = item.work(write)
        except Deadlocked:  # its savepoint undid it; the others go on
            victims.append(item)
        except Unavailable:
            raise  # the database cannot write now: the whole batch fails
        except Exception as exc:  # this write only; the savepoint undid it
            item.error = exc

    def _together(self, write: Any, group: list[_Item], victims: list[_Item],
                  runs: list[tuple[bool, int]]) -> list[_Item]:  # fmt: skip
        """Writes that go together (`work.together`) in one savepoint; those left to go alone:
        all of them if they could not go as one (`runs` is told which)."""
        try:
            with write.savepoint():
                (answers,) = _together_of(group[0])(write, [[item.work for item in group]])
        except Deadlocked:  # undone by its savepoint; tried again in the next batch
            victims.extend(group)
            return []
        except Unavailable:
            raise
        except Exception as exc:  # `Separately`, a key a copy took, or a refusal: one at a time
            runs.append((False, len(group)))
            if not isinstance(exc, Separately):  # what the database refused, say
                _log.warning("a batch of %d writes goes one at a time: %s", len(group),
                             type(exc).__name__)  # fmt: skip
            return group
        self._answered(group, answers, runs)
        return []


class _NotSideBySide(Exception):
    """A batch's runs could not go side by side: rolled back, each goes in its savepoint."""


def _groups(items: list[_Item]) -> Iterator[list[_Item]]:
    """Runs of `items` (in order) that may go together: writes with the same `together`
    (a function of the writes' kind) and the same order (their seller); the rest alone."""
    run: list[_Item] = []
    for item in items:
        if run and (_together_of(item) is None or _together_of(item) != _together_of(run[0])
                    or item.order is None or item.order != run[0].order):  # fmt: skip
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _leading_runs(groups: list[list[_Item]]) -> int:
    """How many of the first groups may go side by side: runs that go together, each of
    its own order (seller). What follows them (a write alone; they come last when they
    have no order, as a key's stamp of last use) goes in its savepoint after them."""
    orders: set[int | None] = set()
    for count, group in enumerate(groups):
        together = _together_of(group[0])
        if together is None or together != _together_of(groups[0][0]) or group[0].order in orders:
            return count
        orders.add(group[0].order)
    return len(groups)


def _together_of(item: _Item) -> Callable | None:
    return getattr(item.work, "together", None)


def _in_order(item: _Item) -> tuple[bool, int]:
    return (item.order is None, item.order or 0)


def _answer_late(items: list[_Item], now: float) -> list[_Item]:
    """Answer the writes whose deadline is past with 503; return the others."""
    _answer([item for item in items if item.deadline <= now], Unavailable(_BUSY))
    return [item for item in items if item.deadline > now]


def _answer(items: list[_Item], exc: BaseException) -> None:
    """Answer each of `items` with its own copy of `exc`."""
    for item in items:
        item.error = _copy(exc)
        item.answer()


def _copy(exc: BaseException) -> BaseException:
    """One exception object per waiting thread: each raises (and annotates) its own."""
    message = getattr(exc, "message", None)
    try:
        copy = type(exc)(message) if message is not None else type(exc)(*exc.args)
    except Exception:  # an exception type we cannot rebuild: share it rather than lose it
        return exc
    copy.__cause__ = exc.__cause__
    return copy
