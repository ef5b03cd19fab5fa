"""What a batch of one seller's queued sales must do, on each backend: sold as one
statement (sale_batches.sell_together), each sale answered as if it had gone alone;
what cannot go as one (a suspended seller) goes one at a time, and the writer counts
both ways.

Each test holds the writer while its sales queue for one batch, the backend's own way
(`Batching.queue`): SQLite's in test_sqlite_sale_batches.py (another connection holds
the file's write lock), PostgreSQL's in test_postgresql_sale_batches.py (another
session holds a row). What only one backend does is tested in its file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from chargebox import idempotency
from chargebox.cli import prepare
from chargebox.clock import now
from chargebox.config import Config
from chargebox.errors import NOT_COVERED, IdempotencyKeyReused, InsufficientCredit, SellerSuspended
from chargebox.services import Chargebox
from tests import test_postgresql_sale_batches, test_sqlite_sale_batches
from tests.support import ADMIN_TOKEN, counted, credited_seller

FUNDS = 10_000
A, B = "09120000001", "09120000002"
RECORD = (
    "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
    " error_message, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclasses.dataclass
class Batching:
    """A service whose writer can be held while calls queue for one batch."""

    service: Any
    # queue(calls, meanwhile) -> [each call's outcome or exception, transactions committed];
    # `meanwhile`: one statement (SQL with ? parameters, its parameters) that another
    # session runs and commits while the calls wait, or None
    queue: Callable[[list, tuple[str, tuple] | None], list]
    rows: Callable[[str, tuple], list[tuple]]  # a read of another session, ? parameters

    def balance(self, seller_id: int) -> int:
        return self.rows("SELECT balance FROM seller WHERE id = ?", (seller_id,))[0][0]

    def counted(self) -> tuple[int, int, int]:
        return counted(self.service)

    @property
    def transactions(self) -> int:
        """How many transactions the calls queued for one batch take, the blocked inline
        sale's with them: SQLite's writer binds late (once the file's lock is had, the
        sales queued while it was waited for join that transaction): 1; PostgreSQL: 2."""
        return 1 if self.service.database.dialect == "sqlite" else 2

    def seller(self, funds: int = FUNDS) -> int:
        return credited_seller(self.service, funds)["id"]


@pytest.fixture
def batching(request, backend, tmp_path) -> Batching:
    """A service (8 threads: 6 write slots, one inline and five queued) whose writer
    can be held, on the backend under test."""
    if backend == "postgresql":
        service, superuser = request.getfixturevalue("pg_group_commit")

        def pg_queue(calls: list, meanwhile: tuple[str, tuple] | None) -> list:
            def run(conn) -> None:
                conn.execute(meanwhile[0].replace("?", "%s"), meanwhile[1])

            return test_postgresql_sale_batches.queued_together(
                service, superuser, calls, run if meanwhile else None
            )

        def pg_rows(sql: str, params: tuple) -> list[tuple]:
            with psycopg.connect(superuser) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()

        return Batching(service, pg_queue, pg_rows)
    config = prepare(Config(db_path=tmp_path / "cb.db", admin_token=ADMIN_TOKEN, threads=8))
    service = Chargebox(config)
    request.addfinalizer(service.close)

    def queue(calls: list, meanwhile: tuple[str, tuple] | None) -> list:
        def run(holder) -> None:
            holder.execute(*meanwhile)

        return test_sqlite_sale_batches.queued_together(service, calls,
                                                        run if meanwhile else None)  # fmt: skip

    def rows(sql: str, params: tuple) -> list[tuple]:
        return test_sqlite_sale_batches.on_disk(service, sql, params)

    return Batching(service, queue, rows)


def test_a_sellers_queued_sales_are_sold_in_one_statement_each_as_if_alone(batching):
    """Five sales of one seller (as many as 8 threads' write slots let wait), keyed and
    not, two refused for want of credit, one phone twice: one batch sells them in order;
    each answer, each key's record and replay, the phones' totals, the entries and their
    seals (the full audit) are what five sales one at a time would leave."""
    service, seller = batching.service, batching.seller()
    before = batching.counted()
    *outcomes, transactions = batching.queue([
        lambda: service.sell(seller, A, 1_000),
        lambda: service.sell(seller, B, 2_000, "k1"),
        lambda: service.sell(seller, A, 8_000),  # 7,000 left: refused
        lambda: service.sell(seller, B, 9_000, "k2"),  # refused, and the key records it
        lambda: service.sell(seller, A, 7_000, "k3"),  # the last toman
    ], None)  # fmt: skip
    assert batching.counted() == (before[0] + 5 + 1, before[1], before[2])  # the inline one too
    assert transactions == batching.transactions
    sold = [outcomes[n] for n in (0, 1, 4)]
    assert [o.record["balance_after"] for o in sold] == [9_000, 7_000, 0]
    assert [o.replayed for o in sold] == [False] * 3
    assert all(o.record["refunded_at"] is None for o in sold)
    ids = [o.record["id"] for o in sold]
    assert ids == sorted(ids)
    for refusal, amount in ((outcomes[2], 8_000), (outcomes[3], 9_000)):
        assert isinstance(refusal, InsufficientCredit)
        expected = InsufficientCredit(NOT_COVERED, balance=7_000, amount=amount)
        assert refusal.message == expected.message
    # Every copy of a key gets the first outcome: the sale, or the refusal, again.
    again = service.sell(seller, B, 2_000, "k1")
    assert (again.replayed, again.record) == (True, sold[1].record)
    with pytest.raises(InsufficientCredit) as replayed:
        service.sell(seller, B, 9_000, "k2")
    assert replayed.value.message == outcomes[3].message
    assert batching.balance(seller) == 0
    phones = dict(batching.rows("SELECT number, total_charged FROM phone", ()))
    assert (phones[A], phones[B]) == (8_000, 2_000)
    entries = batching.rows(
        "SELECT kind, amount, balance_after, sale_id FROM ledger_entry WHERE seller_id = ?"
        " ORDER BY id",
        (seller,),
    )
    assert entries == [("credit", FUNDS, FUNDS, None), ("sale", -1_000, 9_000, ids[0]),
                       ("sale", -2_000, 7_000, ids[1]), ("sale", -7_000, 0, ids[2])]  # fmt: skip
    if service.database.dialect == "postgresql":  # each seller's own numbering too
        seqs = batching.rows("SELECT seq FROM ledger_entry WHERE seller_id = ? ORDER BY id",
                             (seller,))  # fmt: skip
        assert [seq for (seq,) in seqs] == [1, 2, 3, 4]
    audit = service.audit(full=True)
    assert audit["consistent"], audit


def test_the_runs_of_several_sellers_in_a_batch_are_sold_as_one_each_as_if_alone(batching):
    """Three sellers' sales queued for one batch (each seller's run leads it, so they go
    side by side: one statement for all): one key used by two sellers is two keys, one
    phone sold by two sellers sums both, a refusal for want of credit is its seller's
    alone, and the books and seals are what the five sales one at a time would leave."""
    service = batching.service
    first, second, third = batching.seller(), batching.seller(), batching.seller(3_000)
    before = batching.counted()
    *outcomes, transactions = batching.queue([
        lambda: service.sell(first, A, 1_000, "k"),
        lambda: service.sell(second, A, 2_000, "k"),  # another seller's key "k"
        lambda: service.sell(third, B, 4_000),  # 3,000 left: refused
        lambda: service.sell(first, B, 3_000),
        lambda: service.sell(third, A, 3_000, "t"),  # the last toman
    ], None)  # fmt: skip
    assert transactions == batching.transactions
    assert batching.counted() == (before[0] + 5 + 1, before[1], before[2])  # the inline one too
    assert isinstance(outcomes[2], InsufficientCredit)
    sold = [outcomes[n].record for n in (0, 1, 3, 4)]
    assert [(r["seller_id"], r["balance_after"]) for r in sold] == [
        (first, 9_000), (second, 8_000), (first, 6_000), (third, 0)]  # fmt: skip
    assert service.sell(second, A, 2_000, "k").record == sold[1]  # each seller's own key
    assert service.sell(first, A, 1_000, "k").record == sold[0]
    assert [batching.balance(s) for s in (first, second, third)] == [6_000, 8_000, 0]
    phones = dict(batching.rows("SELECT number, total_charged FROM phone", ()))
    assert (phones[A], phones[B]) == (1_000 + 2_000 + 3_000, 3_000)
    audit = service.audit(full=True)
    assert audit["consistent"], audit


def test_a_seller_suspended_while_its_sales_wait_refuses_each_of_them(batching):
    """The batch finds the seller suspended: it goes one sale at a time, and each is
    refused as alone (no key records a suspension); nothing moves."""
    service, seller = batching.service, batching.seller()
    before = batching.counted()
    *outcomes, _ = batching.queue(
        [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 1_000, "k")],
        (
            "UPDATE seller SET status = 'suspended', status_changes = status_changes + 1"
            " WHERE id = ?",
            (seller,),
        ),
    )
    assert all(isinstance(outcome, SellerSuspended) for outcome in outcomes)
    # side by side, then in its savepoint, then each sale alone
    assert batching.counted() == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert batching.balance(seller) == FUNDS
    assert batching.rows("SELECT count(*) FROM idempotency_record", ()) == [(0,)]


def test_two_copies_of_one_key_in_a_batch_sell_once(batching):
    """Both copies queue before either is recorded (a copy looks for its key in the
    batch, not before): the first sells, the second replays it after COMMIT."""
    service, seller = batching.service, batching.seller()
    before = batching.counted()
    first, second, _ = batching.queue([lambda: service.sell(seller, A, 1_000, "twice")] * 2, None)
    assert first.record == second.record
    assert [first.replayed, second.replayed] == [False, True]
    assert batching.counted() == (before[0] + 1 + 2, before[1], before[2])
    assert batching.balance(seller) == FUNDS - 1_000
    assert service.audit()["consistent"]


def test_a_key_recorded_by_another_server_while_queued_gets_that_outcome(batching):
    """Another server's copy records the key after this copy queued: the batch finds it
    in its look, sells the other sale, and this copy replays the recorded refusal."""
    service, seller = batching.service, batching.seller()
    taken = InsufficientCredit(NOT_COVERED, balance=5, amount=1_000)
    recorded = (seller, "raced", idempotency.fingerprint(A, 1_000), taken.code, taken.message,
                now())  # fmt: skip
    before = batching.counted()
    raced, other, _ = batching.queue(
        [lambda: service.sell(seller, A, 1_000, "raced"), lambda: service.sell(seller, B, 500)],
        (RECORD, recorded),
    )
    assert isinstance(raced, InsufficientCredit) and raced.message == taken.message
    assert other.record["balance_after"] == FUNDS - 500
    assert batching.counted() == (before[0] + 1 + 2, before[1], before[2])
    assert batching.balance(seller) == FUNDS - 500
    assert service.audit()["consistent"]


def test_a_second_copy_of_a_key_with_another_body_in_the_batch_is_refused(batching):
    """Two requests with one key and different bodies in one batch: the first sells, the
    second is idempotency_key_reused (its body is not the key's first), as alone."""
    service, seller = batching.service, batching.seller()
    first, second, _ = batching.queue(
        [lambda: service.sell(seller, A, 1_000, "k"), lambda: service.sell(seller, A, 2_000, "k")],
        None,
    )
    assert first.record["balance_after"] == FUNDS - 1_000
    assert isinstance(second, IdempotencyKeyReused)
    assert batching.balance(seller) == FUNDS - 1_000


def test_a_batch_that_sells_nothing_records_its_keys_refusals(batching):
    """Every sale of the batch is refused for want of credit: nothing moves, and each key
    records its refusal, replayed to a later copy."""
    service, seller = batching.service, batching.seller(500)
    first, second, _ = batching.queue(
        [lambda: service.sell(seller, A, 1_000, "a"), lambda: service.sell(seller, B, 2_000, "b")],
        None,
    )
    assert isinstance(first, InsufficientCredit) and isinstance(second, InsufficientCredit)
    with pytest.raises(InsufficientCredit) as again:
        service.sell(seller, B, 2_000, "b")
    assert again.value.message == second.message
    assert batching.balance(seller) == 500
    assert service.audit()["consistent"]


def test_a_sellers_other_writes_between_its_sales_go_alone_and_split_the_batch(batching):
    """A credit request queued between two sales of its seller: the three keep their
    order; each sale is a batch of its own (the writer never mixes kinds in one)."""
    service, seller = batching.service, batching.seller()
    before = batching.counted()
    first, request, second, transactions = batching.queue([
        lambda: service.sell(seller, A, 1_000),
        lambda: service.request_credit(seller, 5_000, "asked"),
        lambda: service.sell(seller, B, 2_000),
    ], None)  # fmt: skip
    assert [first.record["balance_after"], second.record["balance_after"]] == [9_000, 7_000]
    assert request.record["status"] == "pending"
    assert batching.counted() == (before[0] + 1 + 2, before[1], before[2])
    assert transactions == 2
    assert service.audit()["consistent"]
