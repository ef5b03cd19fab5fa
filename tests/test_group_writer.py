"""The group writer's two ways of applying a batch (writer.GroupWriter), with stand-ins for
the database: what leads a batch goes in one call, side by side; if that call fails, the
transaction is rolled back and the batch goes run by run, and nothing is counted twice;
what fails after that call (COMMIT) is not tried again. The real databases' cases are in
test_sale_batches.py and test_postgresql_group_commit.py."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import pytest

from chargebox.cpus import WRITER_THREAD
from chargebox.errors import LockTimeout, Unavailable
from chargebox.writer import GroupWriter, _Item


class Refused(Exception):
    """What a database might refuse a statement with."""


class Sale:
    """A write that can go together with others (as idempotency._Together does)."""

    calls: list[list[int]] = []  # each together() call: its runs' sizes
    refuse_runs_of = 0  # a together() call with this many runs or more is refused

    def __init__(self, seller: int, n: int) -> None:
        self.seller, self.n = seller, n

    def __call__(self, write) -> str:
        return f"alone {self.seller}.{self.n}"

    @staticmethod
    def together(write, runs: list[list[Sale]]) -> list[list[tuple[str, None]]]:
        Sale.calls.append([len(run) for run in runs])
        if Sale.refuse_runs_of and len(runs) >= Sale.refuse_runs_of:
            raise Refused("as the database might")
        return [[(f"together {w.seller}.{w.n}", None) for w in run] for run in runs]


class Transactions:
    """`begin(deadline)` for a GroupWriter: counts transactions begun, rolled back and
    committed; COMMIT fails when told to."""

    def __init__(self) -> None:
        self.begun = self.rolled_back = self.committed = 0
        self.fail_commit = False
        self.meanwhile = lambda: None  # what happens while the first lock is waited for

    @contextlib.contextmanager
    def begin(self, deadline: float):
        self.begun += 1
        meanwhile, self.meanwhile = self.meanwhile, lambda: None  # once
        meanwhile()
        try:
            yield self
        except BaseException:
            self.rolled_back += 1
            raise
        if self.fail_commit:
            self.rolled_back += 1
            raise Refused("COMMIT refused")
        self.committed += 1

    @contextlib.contextmanager
    def savepoint(self):
        yield


@pytest.fixture
def writer():
    Sale.calls, Sale.refuse_runs_of = [], 0
    transactions = Transactions()
    return GroupWriter(transactions.begin, side_by_side=True), transactions


def batch(*sellers: int) -> list[_Item]:
    deadline = time.monotonic() + 30
    return [_Item(Sale(seller, n), deadline, seller) for n, seller in enumerate(sellers)]


def test_the_runs_that_lead_a_batch_go_in_one_call(writer):
    group_writer, transactions = writer
    items = batch(2, 1, 2, 3)
    assert group_writer._apply(items) == []
    assert Sale.calls == [[1, 2, 1]]  # sellers 1, 2 (two sales), 3: one call
    assert [item.result for item in items] == ["together 2.0", "together 1.1", "together 2.2",
                                               "together 3.3"]  # fmt: skip
    assert (group_writer.together, group_writer.redone, group_writer.batches) == (4, 0, 1)
    assert (transactions.begun, transactions.committed) == (1, 1)


def test_a_call_that_fails_is_rolled_back_and_the_batch_goes_run_by_run(writer, caplog):
    group_writer, transactions = writer
    Sale.refuse_runs_of = 2  # one seller's run alone goes
    items = batch(1, 2, 2)
    with caplog.at_level(logging.WARNING, logger="chargebox.writer"):
        assert group_writer._apply(items) == []
    assert Sale.calls == [[1, 2], [1], [2]]  # side by side; then each run in its savepoint
    assert [item.result for item in items] == ["together 1.0", "together 2.1", "together 2.2"]
    # counted once, as committed, and the redo with it
    assert (group_writer.together, group_writer.redone, group_writer.batches) == (3, 1, 1)
    assert (transactions.begun, transactions.rolled_back, transactions.committed) == (2, 1, 1)
    assert "a batch of 2 runs goes run by run: Refused" in caplog.text


def test_what_fails_after_the_call_fails_the_batch_and_is_not_tried_again(writer):
    group_writer, transactions = writer
    transactions.fail_commit = True
    items = batch(1, 2)
    assert group_writer._apply(items) == []
    assert Sale.calls == [[1, 1]]  # once: not run again run by run
    assert all(isinstance(item.error, Refused) for item in items)
    assert (group_writer.together, group_writer.redone, group_writer.batches) == (0, 0, 0)
    assert (transactions.begun, transactions.rolled_back) == (1, 1)


class Approval(Sale):
    """A write of another kind: it never goes together with sales."""

    together = None


def test_bound_late_the_sales_queued_while_the_lock_was_waited_for_join_the_batch():
    """SQLite's writer (`late`: its lock holds every seller): while a batch of sellers 2
    and 1 waits for the lock, sales of 3, 1 and 2, an approval of 1 and one more sale of
    1 queue; once the lock is had, the sales join the batch's one call (they need not
    wait for the lock again), but the approval and the sale of 1 behind it stay queued,
    in order. Bound early, they would all wait for the next batch."""
    Sale.calls, Sale.refuse_runs_of = [], 0
    transactions = Transactions()
    group_writer = GroupWriter(transactions.begin, side_by_side=True, late=True)
    items = batch(2, 1)
    deadline = time.monotonic() + 30
    queued = [_Item(Sale(3, 10), deadline, 3), _Item(Sale(1, 11), deadline, 1),
              _Item(Approval(1, 12), deadline, 1), _Item(Sale(2, 13), deadline, 2),
              _Item(Sale(1, 14), deadline, 1)]  # fmt: skip
    transactions.meanwhile = lambda: group_writer._queue.extend(queued)
    assert group_writer._apply(items) == []
    assert Sale.calls == [[2, 2, 1]]  # sellers 1 (1.1, 1.11), 2 (2.0, 2.13), 3 (3.10)
    joined = [queued[0], queued[1], queued[3]]
    assert [item.result for item in (*items, *joined)] == ["together 2.0", "together 1.1",
        "together 3.10", "together 1.11", "together 2.13"]  # fmt: skip
    assert list(group_writer._queue) == [queued[2], queued[4]]
    assert (group_writer.together, group_writer.late, group_writer.batches) == (5, 3, 1)


def test_bound_late_a_batch_redone_run_by_run_keeps_the_sales_that_joined_it():
    Sale.calls, Sale.refuse_runs_of = [], 2
    transactions = Transactions()
    group_writer = GroupWriter(transactions.begin, side_by_side=True, late=True)
    items = batch(1, 2)
    joined = _Item(Sale(2, 5), time.monotonic() + 30, 2)
    transactions.meanwhile = lambda: group_writer._queue.append(joined)
    assert group_writer._apply(items) == []
    assert Sale.calls == [[1, 2], [1], [2]]  # side by side, refused; then run by run
    assert joined.result == "together 2.5" and not group_writer._queue
    assert (group_writer.together, group_writer.redone, group_writer.late) == (3, 1, 1)


def test_a_batch_that_fails_of_a_bug_answers_its_writes_and_the_writer_goes_on(caplog):
    """Not the database's refusal but a bug (here: two orders that cannot be compared):
    each write the batch held fails with it, and the writer thread lives on for the next
    ones. Before, the thread died, and every write queued after it waited for ever."""
    Sale.calls, Sale.refuse_runs_of = [], 0
    group_writer = GroupWriter(Transactions().begin, side_by_side=True, late=True)
    deadline = time.monotonic() + 30
    broken = [_Item(Sale(1, 0), deadline, 1), _Item(Sale(2, 1), deadline, "two")]  # type: ignore[arg-type]
    after = _Item(Sale(3, 2), deadline, 3)

    def queue(*items: _Item) -> None:
        with group_writer._wake:  # to the writer's thread, as submit() queues behind a batch
            group_writer._ensure_thread()
            group_writer._queue.extend(items)
            group_writer._wake.notify()

    with caplog.at_level(logging.ERROR, logger="chargebox.writer"):
        queue(*broken)
        assert all(item._answered.acquire(timeout=10) for item in broken), "never answered"
        queue(after)
        assert after._answered.acquire(timeout=10), "the writer thread is gone"
    assert all(isinstance(item.error, TypeError) for item in broken)
    assert after.result == "together 3.2" and after.error is None
    assert "a batch failed: TypeError (at " in caplog.text
    assert "2 writes answered with it" in caplog.text
    group_writer.close()


def test_what_is_counted_after_the_commit_cannot_turn_a_committed_write_into_a_failure(
    writer, monkeypatch, caplog
):
    """The writes are answered as soon as COMMIT returns: a metric that fails after it (a
    bug, a full disk under prometheus's files) fails no client whose money moved."""
    group_writer, transactions = writer

    def broken(count: int) -> None:
        raise OSError("no space left for the metrics")

    monkeypatch.setattr("chargebox.writer.metrics.write_committed", broken)
    items = batch(1, 2)
    group_writer._busy = True
    with caplog.at_level(logging.ERROR, logger="chargebox.writer"):
        group_writer._apply_and_release(items)
    assert transactions.committed == 1
    assert [(item.result, item.error) for item in items] == [("together 1.0", None),
                                                             ("together 2.1", None)]  # fmt: skip
    assert "a batch failed: OSError" in caplog.text and "0 writes answered" in caplog.text


class Exits(Approval):
    """A write whose work ends the thread it runs in (SystemExit): not an Exception."""

    def __call__(self, write) -> str:
        raise SystemExit(3)


def test_a_writer_thread_that_ends_answers_what_it_held_and_the_next_write_starts_another():
    """A work that ends its thread (SystemExit, not an Exception) takes the writer thread
    with it, quietly: what its batch held is answered 503, and the next write is served
    (the thread that ended had left its writer unable to write again: every write
    waited)."""
    Sale.calls, Sale.refuse_runs_of = [], 0
    group_writer = GroupWriter(Transactions().begin, side_by_side=True)
    deadline = time.monotonic() + 30
    held = [_Item(Exits(1, 0), deadline, 1), _Item(Sale(2, 1), deadline, 2)]
    before = set(threading.enumerate())
    with group_writer._wake:  # queued to the writer's thread, as behind a batch
        group_writer._ensure_thread()
        group_writer._queue.extend(held)
        group_writer._wake.notify()
    (thread,) = [t for t in set(threading.enumerate()) - before if t.name == WRITER_THREAD]
    assert all(item._answered.acquire(timeout=10) for item in held), "never answered"
    assert all(isinstance(item.error, Unavailable) for item in held)
    thread.join(timeout=10)
    assert not thread.is_alive() and not group_writer._alive
    assert group_writer.submit(Sale(3, 2), time.monotonic() + 30, 3) == "together 3.2"
    group_writer.close()


def test_a_count_that_fails_never_fails_a_write(monkeypatch, caplog):
    """The counts a write's path makes (its wait for the lock, its commit) are quiet: a
    count that fails (prometheus's files on a full disk) is logged once, and the write,
    committed, is answered as it went (`metrics.one_write`: no group commit)."""
    from chargebox import metrics

    class Broken:
        def __getattr__(self, name: str):
            raise OSError("no space left for the metrics")

    monkeypatch.setattr(metrics, "_on", Broken())
    monkeypatch.setattr(metrics, "_FAILED", set())
    transactions = Transactions()
    with caplog.at_level(logging.ERROR, logger="chargebox.metrics"):
        for n in range(2):
            sold = metrics.one_write(transactions.begin, Sale(1, n), time.monotonic() + 30)
            assert sold == f"alone 1.{n}"
    assert transactions.committed == 2
    said = [record.getMessage().split(" (at ")[0] for record in caplog.records
            if record.name == "chargebox.metrics"]  # fmt: skip
    assert said == ["lock_waited was not counted: OSError",  # once each, not once a write
                    "write_committed was not counted: OSError"]  # fmt: skip


def test_a_write_put_back_in_line_after_the_writer_thread_ended_gets_a_new_one():
    """An inline write that missed the lock (or lost a deadlock) goes back in line; if the
    writer thread has ended meanwhile (the state set here), a new one serves the line,
    rather than leave it waiting for ever for a write that may never come."""
    Sale.calls, Sale.refuse_runs_of = [], 0
    transactions = Transactions()
    group_writer = GroupWriter(transactions.begin, side_by_side=True)
    missed = []

    def miss_once() -> None:
        if not missed:
            missed.append(True)
            raise LockTimeout("the lock was not had in time")

    transactions.meanwhile = miss_once
    item = _Item(Sale(1, 0), time.monotonic() + 30, 1)
    group_writer._pid, group_writer._alive = os.getpid(), False  # its thread has ended
    group_writer._busy = True  # the inline write's own hold, as submit() takes it
    group_writer._apply_and_release([item])
    assert item._answered.acquire(timeout=10), "put back in line, and left there"
    assert item.result == "together 1.0" and transactions.begun == 2
    group_writer.close()
