"""A batch of one seller's sales on SQLite: one statement for them all, each answered as
if it had been sold alone (sale_batches.sell_together through the connection's `sale_batch`
view, idempotency._Together), and checked by the schema's triggers row by row.

The batch is made as in test_postgresql_sale_batches.py, with SQLite's lock: another
connection holds the file's write lock, one sale waits for it inline (the writer is
busy), and the sales under test queue behind it, one at a time and in order (counted
in the writer's queue); that connection may write something meanwhile, then lets go,
and the writer takes them all in its next transaction.
"""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import time

import pytest

from chargebox import idempotency, sale_batches
from chargebox.cli import prepare
from chargebox.clock import now
from chargebox.config import Config
from chargebox.errors import (
    NOT_COVERED,
    IdempotencyKeyReused,
    InsufficientCredit,
    IntegrityViolation,
    SellerSuspended,
)
from chargebox.services import Chargebox
from tests.support import ADMIN_TOKEN, credited_seller

FUNDS = 10_000
A, B = "09120000001", "09120000002"


@pytest.fixture
def batching(tmp_path):
    """A service on a new file with 8 threads (6 write slots: one inline, five queued)."""
    config = prepare(Config(db_path=tmp_path / "cb.db", admin_token=ADMIN_TOKEN, threads=8))
    service = Chargebox(config)
    yield service
    service.close()


def queued_together(service, calls: list, meanwhile=None) -> list:
    """Run `calls` so that they queue, in order, for one batch, while another connection
    holds the write lock (and runs `meanwhile(conn)` in it before it commits). Each
    call's outcome or exception; then how many transactions the writer committed."""
    writer = service.database.writer
    blocker = credited_seller(service, FUNDS, "blocker")["id"]
    batches = writer.batches
    holder = sqlite3.connect(service.database.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with concurrent.futures.ThreadPoolExecutor(len(calls) + 1) as pool:
            inline = pool.submit(service.sell, blocker, "09129999999", 1_000)
            waited_for(lambda: writer.busy(), inline)
            futures = []
            for n, call in enumerate(calls, start=1):
                futures.append(pool.submit(call))
                waited_for(lambda n=n: writer.queued() >= n, futures[-1])
            if meanwhile is not None:
                meanwhile(holder)
            holder.execute("COMMIT")
            inline.result(timeout=30)
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result(timeout=30))
                except Exception as exc:
                    outcomes.append(exc)
    finally:
        holder.close()
    return [*outcomes, writer.batches - batches]


def waited_for(condition, future) -> None:
    """Until `condition()`; the call in `future` must not have ended first."""
    deadline = time.monotonic() + 30
    while not condition():
        assert not future.done(), future.exception()
        assert time.monotonic() < deadline, "the call never queued"
        time.sleep(0.005)


def counted(service) -> tuple[int, int]:
    writer = service.database.writer
    return writer.together, writer.separately


def on_disk(service, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(service.database.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_sellers_queued_sales_are_sold_in_one_statement_each_as_if_alone(batching):
    """Five sales of one seller, keyed and not, two refused for want of credit, one phone
    twice: one batch sells them in order; each answer, each key's record and replay,
    the phones' totals, the seals (the full audit) are what one at a time would leave."""
    service = batching
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    *outcomes, transactions = queued_together(service, [
        lambda: service.sell(seller, A, 1_000),
        lambda: service.sell(seller, B, 2_000, "k1"),
        lambda: service.sell(seller, A, 8_000),  # 7,000 left: refused
        lambda: service.sell(seller, B, 9_000, "k2"),  # refused, and the key records it
        lambda: service.sell(seller, A, 7_000, "k3"),  # the last toman
    ])  # fmt: skip
    assert counted(service) == (before[0] + 5 + 1, before[1])  # the inline one went alone too
    assert transactions == 2
    sold = [outcome.record for outcome in (outcomes[0], outcomes[1], outcomes[4])]
    assert [sale["balance_after"] for sale in sold] == [9_000, 7_000, 0]
    assert [outcomes[n].replayed for n in (0, 1, 4)] == [False] * 3
    ids = [sale["id"] for sale in sold]
    assert ids == sorted(ids) and ids[-1] - ids[0] == 2  # numbered as one at a time would
    assert all(isinstance(outcomes[n], InsufficientCredit) for n in (2, 3))
    assert (
        outcomes[2].message == InsufficientCredit(NOT_COVERED, balance=7_000, amount=8_000).message
    )
    assert (
        outcomes[3].message == InsufficientCredit(NOT_COVERED, balance=7_000, amount=9_000).message
    )
    again = service.sell(seller, B, 2_000, "k1")
    assert (again.replayed, again.record) == (True, outcomes[1].record)
    with pytest.raises(InsufficientCredit) as replayed:
        service.sell(seller, B, 9_000, "k2")
    assert replayed.value.message == outcomes[3].message
    assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [(0,)]
    phones = dict(on_disk(service, "SELECT number, total_charged FROM phone"))
    assert (phones[A], phones[B]) == (8_000, 2_000)
    entries = on_disk(
        service,
        "SELECT kind, amount, balance_after, sale_id FROM ledger_entry WHERE seller_id = ?"
        " ORDER BY id",
        (seller,),
    )
    assert entries == [("credit", FUNDS, FUNDS, None), ("sale", -1_000, 9_000, ids[0]),
                       ("sale", -2_000, 7_000, ids[1]), ("sale", -7_000, 0, ids[2])]  # fmt: skip
    audit = service.audit(full=True)
    assert audit["consistent"], audit


def test_a_seller_suspended_while_its_sales_wait_refuses_each_of_them(batching):
    """The batch finds the seller suspended: it goes one sale at a time, and each is
    refused as alone (no key records a suspension); nothing moves."""
    service = batching
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    *outcomes, _ = queued_together(
        service,
        [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 1_000, "k")],
        meanwhile=lambda conn: conn.execute(
            "UPDATE seller SET status = 'suspended' WHERE id = ?", (seller,)
        ),
    )
    assert all(isinstance(outcome, SellerSuspended) for outcome in outcomes)
    assert counted(service) == (before[0] + 1, before[1] + 1)
    assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [(FUNDS,)]
    assert on_disk(service, "SELECT count(*) FROM idempotency_record") == [(0,)]


def test_two_copies_of_one_key_in_a_batch_sell_once(batching):
    """Both copies queue before either is recorded (a copy looks for its key in the
    batch, not before): the first sells, the second replays it after COMMIT."""
    service = batching
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    twice = [lambda: service.sell(seller, A, 1_000, "twice")] * 2
    first, second, _ = queued_together(service, twice)
    assert first.record == second.record
    assert [first.replayed, second.replayed] == [False, True]
    assert counted(service) == (before[0] + 1 + 2, before[1])
    assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [(9_000,)]
    assert service.audit()["consistent"]


def test_a_key_recorded_by_another_process_while_queued_gets_that_outcome(batching):
    """Another process records the key after this copy queued: the batch finds it in its
    look, sells the other sale, and this copy replays the recorded refusal."""
    service = batching
    seller = credited_seller(service, FUNDS)["id"]
    taken = InsufficientCredit(NOT_COVERED, balance=5, amount=1_000)

    def record(conn) -> None:
        conn.execute(
            "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
            " error_message, created_at) VALUES (?, 'raced', ?, ?, ?, ?)",
            (seller, idempotency.fingerprint(A, 1_000), taken.code, taken.message, now()),
        )

    before = counted(service)
    raced, other, _ = queued_together(
        service,
        [lambda: service.sell(seller, A, 1_000, "raced"), lambda: service.sell(seller, B, 500)],
        meanwhile=record,
    )
    assert isinstance(raced, InsufficientCredit) and raced.message == taken.message
    assert other.record["balance_after"] == FUNDS - 500
    assert counted(service) == (before[0] + 1 + 2, before[1])
    assert service.audit()["consistent"]


def test_a_second_copy_of_a_key_with_another_body_in_the_batch_is_refused(batching):
    service = batching
    seller = credited_seller(service, FUNDS)["id"]
    first, second, _ = queued_together(
        service,
        [lambda: service.sell(seller, A, 1_000, "k"), lambda: service.sell(seller, A, 2_000, "k")],
    )
    assert first.record["balance_after"] == FUNDS - 1_000
    assert isinstance(second, IdempotencyKeyReused)
    assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [(9_000,)]


def test_a_batch_that_sells_nothing_records_its_keys_refusals(batching):
    service = batching
    seller = credited_seller(service, 500)["id"]
    first, second, _ = queued_together(
        service,
        [lambda: service.sell(seller, A, 1_000, "a"), lambda: service.sell(seller, B, 2_000, "b")],
    )
    assert isinstance(first, InsufficientCredit) and isinstance(second, InsufficientCredit)
    with pytest.raises(InsufficientCredit) as again:
        service.sell(seller, B, 2_000, "b")
    assert again.value.message == second.message
    assert on_disk(service, "SELECT balance FROM seller WHERE id = ?", (seller,)) == [(500,)]
    assert service.audit()["consistent"]


def test_a_batch_undone_goes_one_at_a_time_and_the_next_batch_is_made_again(batching, monkeypatch):
    """A batch that fails after the writer's connection made its view is undone with the
    view (its savepoint); its sales go alone, and the next batch makes the view again."""
    service = batching
    seller = credited_seller(service, FUNDS)["id"]
    real, failed = sale_batches._batch, []

    def fails_once(write, seller_id, sold, *args):
        moved = real(write, seller_id, sold, *args)
        if len(sold[0]) == 2 and not failed:  # the queued two, on the writer's connection
            failed.append(True)
            raise IntegrityViolation("refused, as the database might")
        return moved

    monkeypatch.setattr(sale_batches, "_batch", fails_once)
    before = counted(service)
    *first, _ = queued_together(
        service, [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 2_000)]
    )
    assert counted(service) == (before[0] + 1, before[1] + 1)  # the inline one, alone
    *second, _ = queued_together(
        service, [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 2_000)]
    )
    assert counted(service) == (before[0] + 1 + 3, before[1] + 1)
    after = [outcome.record["balance_after"] for outcome in [*first, *second]]
    assert after == [9_000, 7_000, 6_000, 4_000]
    assert service.audit(full=True)["consistent"]


def test_the_schema_refuses_a_batch_row_that_does_not_continue_the_books(batching):
    """The view's trigger only makes rows; the schema's triggers check each as it lands:
    a balance that skips (I2, I3), a sale of a seller that does not exist."""
    service = batching
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
