"""A batch of one seller's sales on SQLite: one statement for them all, each answered as
if it had been sold alone (sale_batches.sell_together through the connection's `sale_batch`
view, idempotency._Together), and checked by the schema's triggers row by row.

The batch is made as in test_postgresql_sale_batches.py, with SQLite's lock: another
connection holds the file's write lock, one sale waits for it inline (the writer is
busy), and the sales under test queue behind it, one at a time and in order (counted
in the writer's queue); that connection may write something meanwhile, then lets go,
and the writer takes them all in its next transaction. The cases both backends share
are in test_sale_batches.py; here, what is SQLite's own (the view made again after a
rollback, the schema's checks of each row, a replay while the file is held).
"""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import time

import pytest

from chargebox import sale_batches
from chargebox.cli import prepare
from chargebox.clock import now
from chargebox.config import Config
from chargebox.errors import IntegrityViolation
from chargebox.services import Chargebox
from tests.support import ADMIN_TOKEN, counted, credited_seller, outcomes

FUNDS = 10_000
A, B = "09120000001", "09120000002"


@pytest.fixture
def sqlite_service(tmp_path):
    """A service on a new file with 8 threads (6 write slots: one inline, five queued)."""
    config = prepare(Config(db_path=tmp_path / "cb.db", admin_token=ADMIN_TOKEN, threads=8))
    service = Chargebox(config)
    yield service
    service.close()


def queued_together(service, calls: list, meanwhile=None, inline=None) -> list:
    """Run `calls` so that they queue, in order, for one batch, while another connection
    holds the write lock (and runs `meanwhile(conn)` in it before it commits), and a
    write that found the writer idle waits for it inline: a sale of another seller, or
    `inline(that seller)`. Once the lock is had, that write's transaction takes the
    queued sales too (SQLite binds late), unless it is of another kind. Each call's
    outcome or exception; then how many transactions the writer committed."""
    writer = service.database.writer
    blocker = credited_seller(service, FUNDS, "blocker")["id"]
    batches = writer.batches
    holder = sqlite3.connect(service.database.path, isolation_level=None)
    first = inline or (lambda seller: service.sell(seller, "09129999999", 1_000))
    try:
        holder.execute("BEGIN IMMEDIATE")
        with concurrent.futures.ThreadPoolExecutor(len(calls) + 1) as pool:
            waiting = pool.submit(first, blocker)
            waited_for(lambda: writer.busy(), waiting)
            futures = []
            for n, call in enumerate(calls, start=1):
                futures.append(pool.submit(call))
                waited_for(lambda n=n: writer.queued() >= n, futures[-1])
            if meanwhile is not None:
                meanwhile(holder)
            holder.execute("COMMIT")
            waiting.result(timeout=30)
            answers = outcomes(futures)
    finally:
        holder.close()
    return [*answers, writer.batches - batches]


def waited_for(condition, future) -> None:
    """Until `condition()`; the call in `future` must not have ended first."""
    deadline = time.monotonic() + 30
    while not condition():
        assert not future.done(), future.exception()
        assert time.monotonic() < deadline, "the call never queued"
        time.sleep(0.005)


def on_disk(service, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(service.database.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_batch_undone_goes_one_at_a_time_and_the_next_batch_is_made_again(
    sqlite_service, monkeypatch
):
    """A batch that fails after the writer's connection made its view is undone with the
    view: side by side, with its transaction; run by run, with its savepoint. Its sales
    then go alone, and the next batch makes the view again. (The write waiting inline is
    a credit request, so that the two sales are the writer thread's batch.)"""
    service = sqlite_service
    seller = credited_seller(service, FUNDS)["id"]
    real, failed = sale_batches._batch, []

    def fails_twice(write, sold, *args):
        moved = real(write, sold, *args)
        if len(sold[0]) == 2 and len(failed) < 2:  # the queued two, on the writer's connection
            failed.append(True)
            raise IntegrityViolation("refused, as the database might")
        return moved

    monkeypatch.setattr(sale_batches, "_batch", fails_twice)
    before = counted(service)
    two = [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 2_000)]
    asks = lambda blocker: service.request_credit(blocker, 1_000)  # noqa: E731
    *first, _ = queued_together(service, two, inline=asks)
    # the two, side by side, then in their savepoint, then alone
    assert counted(service) == (before[0], before[1] + 1, before[2] + 1)
    assert len(failed) == 2
    *second, _ = queued_together(service, two, inline=asks)
    assert counted(service) == (before[0] + 2, before[1] + 1, before[2] + 1)
    after = [outcome.record["balance_after"] for outcome in [*first, *second]]
    assert after == [9_000, 7_000, 6_000, 4_000]
    assert service.audit(full=True)["consistent"]


def test_sales_bound_late_to_a_batch_that_is_redone_are_sold_once(sqlite_service, monkeypatch):
    """The blocked inline sale's transaction takes the two sales queued meanwhile (bound
    late); its one statement for both sellers fails once, so the batch is rolled back and
    goes run by run, in the same transaction: every sale is sold once, answered once."""
    service = sqlite_service
    seller = credited_seller(service, FUNDS)["id"]
    real, failed = sale_batches._batch, []

    def fails_once(write, sold, *args):
        if sold[0].count(seller) == 2 and len(sold[0]) == 3 and not failed:
            failed.append(True)
            raise IntegrityViolation("refused, as the database might")
        return real(write, sold, *args)

    monkeypatch.setattr(sale_batches, "_batch", fails_once)
    before, late = counted(service), service.database.writer.late
    *sold, transactions = queued_together(
        service, [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 2_000)]
    )
    assert failed and transactions == 1  # the inline one's: side by side, then run by run
    assert service.database.writer.late == late + 2
    assert counted(service) == (before[0] + 3, before[1], before[2] + 1)
    assert [outcome.record["balance_after"] for outcome in sold] == [9_000, 7_000]
    assert on_disk(service, "SELECT count(*) FROM sale WHERE seller_id = ?", (seller,)) == [(2,)]
    assert service.audit(full=True)["consistent"]


def test_the_schema_refuses_a_batch_row_that_does_not_continue_the_books(sqlite_service):
    """The view's trigger only makes rows; the schema's triggers check each as it lands:
    a balance that skips (I2, I3), a sale of a seller that does not exist."""
    service = sqlite_service
    seller = credited_seller(service, FUNDS)["id"]
    (last_sale,), (last_entry,) = (
        on_disk(service, f"SELECT COALESCE(max(id), 0) FROM {table}")[0]
        for table in ("sale", "ledger_entry")
    )
    row = [last_sale + 1, last_entry + 1, seller, A, 1_000, 9_000, now(), "00"]
    wrong = {"a balance that skips": {5: 8_000}, "no such seller": {2: seller + 1}}
    for why, changes in wrong.items():
        bad = [changes.get(n, value) for n, value in enumerate(row)]
        with pytest.raises(IntegrityViolation), service.database.transaction() as write:
            write.execute(sale_batches._BATCH_VIEW)
            write.execute(sale_batches._BATCH_TRIGGER)
            write.execute(sale_batches._BATCH, (json.dumps([bad]),))
        assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [
            (FUNDS,)
        ], why


def test_a_copy_of_a_recorded_key_is_answered_while_another_holds_the_file(tmp_path):
    """A keyed sale does not read its key before it queues; when the write cannot have the
    file's lock (another connection holds it past the busy timeout), a copy of a key
    recorded earlier is still answered, from a read, not 503."""
    config = prepare(Config(db_path=tmp_path / "cb.db", admin_token=ADMIN_TOKEN,
                            busy_timeout_ms=200))  # fmt: skip
    service = Chargebox(config)
    try:
        seller = credited_seller(service, FUNDS)["id"]
        sold = service.sell(seller, A, 1_000, "k")
        holder = sqlite3.connect(service.database.path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            again = service.sell(seller, A, 1_000, "k")
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert (again.replayed, again.record) == (True, sold.record)
        assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [(9_000,)]
    finally:
        service.close()
