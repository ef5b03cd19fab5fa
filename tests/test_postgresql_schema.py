"""PostgreSQL enforces I1-I5 itself: the schema of `schema_postgresql.sql` on a real cluster.

A throwaway cluster (tests/pg_cluster.py) runs on 127.0.0.1; each test gets a
database of its own with the schema. Without a PostgreSQL server installed these
tests skip and say how to get one, except under CI=true, where they must run.
Money is moved here the way chargebox's PostgreSQL writes will move it: the
guarded balance UPDATE first (it takes the seller's row lock), then the entry
that lands on the new balance. Every forgery
a script with the app's rights could try must be refused by the database.
"""

from __future__ import annotations

import itertools
import os
import threading

import psycopg
import pytest

from chargebox import schema

T = "2026-12-01T00:00:00.000000Z"
PHONE = "09121234567"
_names = itertools.count()


@pytest.fixture
def cluster(postgresql_cluster):
    return postgresql_cluster


@pytest.fixture
def url(cluster):
    """A fresh database with chargebox's schema; its superuser URL."""
    name = f"schema_{os.getpid()}_{next(_names)}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    target = cluster.url(db=name)
    with psycopg.connect(target) as conn:
        schema.create_postgresql(conn)
    return target


@pytest.fixture
def conn(url):
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def seller(conn, name: str = "Ali") -> int:
    return conn.execute(
        "INSERT INTO seller (name, balance, created_at) VALUES (%s, 0, %s) RETURNING id",
        (name, T),
    ).fetchone()[0]


def move(conn, seller_id: int, delta: int, kind: str, **links) -> int:
    """The balance first (row lock), then the entry on the new balance; one transaction."""
    with conn.transaction():
        (balance,) = conn.execute(
            "UPDATE seller SET balance = balance + %s WHERE id = %s AND balance + %s >= 0"
            " RETURNING balance",
            (delta, seller_id, delta),
        ).fetchone()
        (seq,) = conn.execute(
            "SELECT COALESCE(max(seq), 0) + 1 FROM ledger_entry WHERE seller_id = %s",
            (seller_id,),
        ).fetchone()
        return conn.execute(
            "INSERT INTO ledger_entry (seller_id, seq, kind, amount, balance_after,"
            " credit_request_id, sale_id, reason, created_at, refund_of)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (seller_id, seq, kind, delta, balance, links.get("request"), links.get("sale"),
             links.get("reason"), T, links.get("refund_of")),
        ).fetchone()[0]  # fmt: skip


def credit(conn, seller_id: int, amount: int) -> int:
    with conn.transaction():
        (request,) = conn.execute(
            "INSERT INTO credit_request (seller_id, amount, created_at) VALUES (%s, %s, %s)"
            " RETURNING id",
            (seller_id, amount, T),
        ).fetchone()
        conn.execute(
            "UPDATE credit_request SET status = 'approved', decided_at = %s"
            " WHERE id = %s AND status = 'pending'",
            (T, request),
        )
        move(conn, seller_id, amount, "credit", request=request)
    return request


def refused(conn, sql: str, params: tuple = (), match: str | None = None) -> None:
    with pytest.raises(psycopg.errors.IntegrityError, match=match), conn.transaction():
        conn.execute(sql, params)


def test_the_schema_records_its_version_and_installs_once(url):
    with psycopg.connect(url) as conn:
        schema.create_postgresql(conn)  # again: nothing to do
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (schema.POSTGRESQL_VERSION,)
        ]


def test_money_moved_balance_first_is_accepted_and_each_seller_is_numbered(conn):
    ali, sara = seller(conn), seller(conn, "Sara")
    credit(conn, ali, 100_000)
    credit(conn, sara, 5_000)
    move(conn, ali, -2_500, "adjustment", reason="fee")
    assert conn.execute(
        "SELECT seller_id, seq, balance_after FROM ledger_entry ORDER BY id"
    ).fetchall() == [(ali, 1, 100_000), (sara, 1, 5_000), (ali, 2, 97_500)]


def test_i1_a_balance_below_zero_is_refused(conn):
    ali = seller(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE seller SET balance = -1 WHERE id = %s", (ali,))


def test_i2_a_balance_changed_without_its_entry_is_refused_at_commit(conn):
    ali = seller(conn)
    credit(conn, ali, 10_000)
    refused(conn, "UPDATE seller SET balance = 50000 WHERE id = %s", (ali,), "I2")
    assert conn.execute("SELECT balance FROM seller WHERE id = %s", (ali,)).fetchone() == (10_000,)


def test_i2_an_entry_that_does_not_land_on_the_sellers_balance_is_refused(conn):
    ali = seller(conn)
    credit(conn, ali, 10_000)
    refused(
        conn,
        "INSERT INTO ledger_entry (seller_id, seq, kind, amount, balance_after, reason,"
        " created_at) VALUES (%s, 2, 'adjustment', 500, 10500, 'no balance move', %s)",
        (ali, T),
        "I2",
    )


def test_i2_a_new_seller_starts_at_zero(conn):
    refused(
        conn,
        "INSERT INTO seller (name, balance, created_at) VALUES ('x', 5, %s)",
        (T,),
        "I2",
    )


@pytest.mark.parametrize("seq, after", [(3, 10_500), (2, 11_000), (1, 10_500)])
def test_i3_an_entry_off_the_chain_is_refused(conn, seq, after):
    ali = seller(conn)
    credit(conn, ali, 10_000)
    with pytest.raises(psycopg.errors.IntegrityError), conn.transaction():
        conn.execute("UPDATE seller SET balance = balance + 500 WHERE id = %s", (ali,))
        conn.execute(
            "INSERT INTO ledger_entry (seller_id, seq, kind, amount, balance_after, reason,"
            " created_at) VALUES (%s, %s, 'adjustment', 500, %s, 'off the chain', %s)",
            (ali, seq, after, T),
        )


def test_i4_a_request_credits_once_and_a_decided_request_is_final(conn):
    ali = seller(conn)
    request = credit(conn, ali, 10_000)
    with pytest.raises(psycopg.errors.IntegrityError):
        move(conn, ali, 10_000, "credit", request=request)  # UNIQUE(credit_request_id)
    refused(conn, "UPDATE credit_request SET status = 'pending', decided_at = NULL", (), "I4")
    refused(conn, "UPDATE credit_request SET amount = 99", (), "I4")


def test_i4_a_credit_entry_needs_an_approved_request_of_its_amount(conn):
    ali = seller(conn)
    (pending,) = conn.execute(
        "INSERT INTO credit_request (seller_id, amount, created_at) VALUES (%s, 700, %s)"
        " RETURNING id",
        (ali, T),
    ).fetchone()
    with pytest.raises(psycopg.errors.IntegrityError, match="I4"):
        move(conn, ali, 700, "credit", request=pending)


def a_sale_of_1000(conn, seller_id: int) -> int:
    """A sale row of 1,000 from a balance of 10,000 (its debit is the test's to write)."""
    conn.execute("INSERT INTO phone (number, created_at) VALUES (%s, %s)", (PHONE, T))
    return conn.execute(
        "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
        " VALUES (%s, %s, 1000, 9000, %s) RETURNING id",
        (seller_id, PHONE, T),
    ).fetchone()[0]


def test_i4_a_sale_entry_must_debit_exactly_its_sale(conn):
    ali = seller(conn)
    credit(conn, ali, 10_000)
    sale = a_sale_of_1000(conn, ali)
    with pytest.raises(psycopg.errors.IntegrityError, match="I4"):
        move(conn, ali, -2_000, "sale", sale=sale)
    move(conn, ali, -1_000, "sale", sale=sale)


def test_i4_a_refund_entry_gives_back_its_sale_whole_and_once(conn):
    """A refund entry must be its sale's seller's and its whole amount (the trigger), and a
    second one for the sale is refused by UNIQUE(refund_of); the sale stays as it was."""
    ali, sara = seller(conn), seller(conn, "Sara")
    credit(conn, ali, 10_000)
    credit(conn, sara, 10_000)
    sale = a_sale_of_1000(conn, ali)
    move(conn, ali, -1_000, "sale", sale=sale)
    for who, amount in ((ali, 999), (ali, 1_001), (sara, 1_000)):
        with pytest.raises(psycopg.errors.IntegrityError, match="I4"):
            move(conn, who, amount, "refund", refund_of=sale, reason="x")
    with pytest.raises(psycopg.errors.IntegrityError, match="ledger_entry_check"):
        move(conn, ali, 1_000, "refund", refund_of=sale)  # a refund has a reason
    move(conn, ali, 1_000, "refund", refund_of=sale, reason="not delivered")
    with pytest.raises(psycopg.errors.UniqueViolation, match="refund_of"):
        move(conn, ali, 1_000, "refund", refund_of=sale, reason="again")
    refused(conn, "UPDATE sale SET amount = 1 WHERE id = %s", (sale,))
    assert conn.execute("SELECT balance FROM seller WHERE id = %s", (ali,)).fetchone() == (10_000,)


@pytest.mark.parametrize(
    ("table", "column", "names"),
    [
        ("idempotency_record", "sale_id", "sale"),
        ("adjustment_record", "entry_id", "adjustment"),
        ("credit_request_record", "request_id", "request"),
    ],
)
def test_a_keys_record_names_a_row_of_its_own_seller(conn, table, column, names):
    """A key's record naming Sara's sale, adjustment or request is refused for Ali (schema
    version 4), a refusal's record (no row) is not checked, and Sara's own goes in."""
    ali, sara = seller(conn), seller(conn, "Sara")
    request = credit(conn, sara, 10_000)
    rows = {
        "sale": a_sale_of_1000(conn, sara),
        "adjustment": move(conn, sara, -100, "adjustment", reason="fee"),
        "request": request,
    }
    record = (
        f"INSERT INTO {table} (seller_id, key, request_hash, created_at, {column},"
        " error_code) VALUES (%s, %s, 'h', %s, %s, %s)"
    )
    refused(conn, record, (ali, "k1", T, rows[names], None), match="another seller")
    conn.execute(record, (ali, "k2", T, None, "refused"))
    conn.execute(record, (sara, "k1", T, rows[names], None))
    assert conn.execute(f"SELECT seller_id, key FROM {table} ORDER BY id").fetchall() == [
        (ali, "k2"),
        (sara, "k1"),
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET reason = 'edited'",
        "DELETE FROM ledger_entry",
        "TRUNCATE ledger_entry CASCADE",
        "TRUNCATE ledger_seal",
        "TRUNCATE sale CASCADE",
        "TRUNCATE idempotency_record",
        "TRUNCATE adjustment_record",
        "TRUNCATE credit_request_record",
        "DELETE FROM seller",
        "TRUNCATE seller CASCADE",
        "DELETE FROM credit_request",
        "TRUNCATE credit_request CASCADE",
    ],
)
def test_i5_history_is_never_rewritten_nor_truncated(conn, statement):
    ali = seller(conn)
    credit(conn, ali, 10_000)
    move(conn, ali, -100, "adjustment", reason="fee")
    refused(conn, statement)
    assert conn.execute("SELECT count(*) FROM ledger_entry").fetchone() == (2,)


def test_racing_writers_on_one_seller_are_serialised_by_its_row_lock(url):
    """16 threads, each its own connection, move one seller's money at once (barrier)."""
    with psycopg.connect(url, autocommit=True) as setup:
        ali = seller(setup)
        credit(setup, ali, 1_000_000)
    barrier, errors = threading.Barrier(16), []

    def worker() -> None:
        with psycopg.connect(url, autocommit=True) as own:
            barrier.wait()
            for _ in range(10):
                try:
                    move(own, ali, -1_000, "adjustment", reason="race")
                except psycopg.Error as exc:  # a failure here is the test's finding
                    errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(url) as fresh:
        rows = fresh.execute(
            "SELECT seq, amount, balance_after FROM ledger_entry WHERE seller_id = %s ORDER BY seq",
            (ali,),
        ).fetchall()
        (balance,) = fresh.execute("SELECT balance FROM seller WHERE id = %s", (ali,)).fetchone()
    assert [seq for seq, _, _ in rows] == list(range(1, 162))
    assert balance == rows[-1][2] == sum(amount for _, amount, _ in rows) == 1_000_000 - 160_000
