"""The database half of I1-I5: a raw sqlite3 connection, bypassing all Python checks, is refused.

Each test writes straight to the file the `service` fixture created, with a
plain `sqlite3` connection (no foreign_keys PRAGMA, no chargebox code), and
expects `sqlite3.IntegrityError` from a CHECK, UNIQUE or trigger; then it
checks from the same file that the row is unchanged.

A well-formed movement, as `ledger` writes it: the ledger entry first, with
`balance_after` = the seller's current balance + amount, then
`UPDATE seller SET balance = <that balance_after>`. Where a trigger would refuse
before a CHECK could speak, a test also drops that trigger inside its (rolled
back) transaction, so each line of defence is shown to hold on its own.

SQLite's schema only: PostgreSQL's (its own statements, a `seq` column, a deferred
I2 trigger, rights per role) is refused the same way in test_postgresql_schema.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from chargebox import db
from chargebox.cli import prepare
from chargebox.config import MAX_BALANCE
from chargebox.errors import IntegrityViolation
from chargebox.services import Chargebox
from tests.support import database_of, db_snapshot

pytestmark = pytest.mark.sqlite_only

PHONE = "09121234567"
T = "2024-01-01T00:00:00.000000Z"


@pytest.fixture
def raw(service, config):
    """An autocommit sqlite3 connection to the service's database file."""
    conn = sqlite3.connect(database_of(config), isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    yield conn
    conn.close()


@pytest.fixture
def books(service):
    """A seller with an approved credit, a rejected and a pending request, a sale and an
    adjustment; and a second seller with nothing."""
    seller, _ = service.create_seller("Ali")
    credit = service.request_credit(seller["id"], 100_000).record
    service.approve_credit_request(credit["id"])
    rejected = service.request_credit(seller["id"], 7_000).record
    service.reject_credit_request(rejected["id"])
    pending = service.request_credit(seller["id"], 9_000).record
    sale = service.sell(seller["id"], PHONE, 30_000).record
    service.adjust_balance(seller["id"], -5_000, "fee")
    other, _ = service.create_seller("Sara")
    return {
        "seller": seller["id"],
        "credit": credit["id"],
        "rejected": rejected["id"],
        "pending": pending["id"],
        "sale": sale["id"],
        "other": other["id"],
        "balance": 65_000,
    }


def snapshot(conn: sqlite3.Connection) -> dict:
    """`db_snapshot` of the file `conn` is open on: every table of the schema, and the schema."""
    return db_snapshot(Path(conn.execute("PRAGMA database_list").fetchone()[2]))


def refused(conn: sqlite3.Connection, *statements: tuple[str, tuple], match: str | None = None):
    """Run `statements` in one transaction: the database must refuse one of them (with a
    message matching `match`), and after the rollback every table and the schema (triggers a
    test dropped) are as they were."""
    before = snapshot(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.IntegrityError, match=match):
            for sql, params in statements:
                conn.execute(sql, params)
    finally:
        conn.execute("ROLLBACK")
    assert snapshot(conn) == before


def last_balance_after(conn, seller_id: int) -> int:
    return conn.execute(
        "SELECT balance_after FROM ledger_entry WHERE seller_id = ? ORDER BY id DESC LIMIT 1",
        (seller_id,),
    ).fetchone()[0]


def balance_of(conn, seller_id: int) -> int:
    return conn.execute("SELECT balance FROM seller WHERE id = ?", (seller_id,)).fetchone()[0]


ENTRY = (
    "INSERT INTO ledger_entry (seller_id, kind, amount, balance_after, credit_request_id,"
    " sale_id, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def set_balance(seller_id: int, balance: int) -> tuple[str, tuple]:
    """The second half of a movement: the balance lands on the entry just written."""
    return "UPDATE seller SET balance = ? WHERE id = ?", (balance, seller_id)


def without(trigger: str) -> tuple[str, tuple]:
    """Drop a trigger inside the test's transaction; the rollback puts it back."""
    return f"DROP TRIGGER {trigger}", ()


def tampered_balance(seller_id: int, balance: int) -> list[tuple[str, tuple]]:
    """A seller row that disagrees with its ledger, as only a dropped trigger allows."""
    return [without("seller_balance_follows_ledger"), set_balance(seller_id, balance)]


# --- I1 and the ceiling: the balance column ---------------------------------------------------


# The I2 trigger on seller refuses these first; the CHECK must refuse them without it too.
BALANCE_TRIGGERS = ("seller_balance_follows_ledger",)
NEW_SELLER_TRIGGERS = ("seller_starts_at_zero",)


def refused_by_trigger_and_by_check(conn, triggers: tuple[str, ...], statement, check: str):
    """Refused as the schema stands, and again with `triggers` dropped: by `check` alone."""
    refused(conn, statement)
    refused(conn, *(without(t) for t in triggers), statement, match=check)


@pytest.mark.parametrize("value", [-1, -(10**9), MAX_BALANCE + 1, 2**62])
def test_the_database_refuses_a_balance_out_of_zero_to_ten_to_the_fifteen(raw, books, value):
    for seller in (books["seller"], books["other"]):
        refused_by_trigger_and_by_check(
            raw, BALANCE_TRIGGERS, set_balance(seller, value), "CHECK.*balance <= "
        )


def test_the_database_refuses_a_balance_minus_one_written_as_sql(raw, books):
    for statement in (
        "UPDATE seller SET balance = -1",
        "UPDATE seller SET balance = balance - 65001",
    ):
        refused_by_trigger_and_by_check(raw, BALANCE_TRIGGERS, (statement, ()), "CHECK.*balance")


@pytest.mark.parametrize("value", [1.5, "1.5", "ten", "", b"\x00\x01", None], ids=repr)
def test_the_database_refuses_a_balance_that_is_not_an_integer(raw, books, value):
    check = "NOT NULL.*seller.balance" if value is None else "CHECK.*typeof.balance"
    refused_by_trigger_and_by_check(
        raw, BALANCE_TRIGGERS, set_balance(books["seller"], value), check
    )


NEW_SELLER = "INSERT INTO seller (name, balance, created_at) VALUES (?, ?, ?)"


def test_the_database_refuses_a_new_seller_with_a_negative_or_fractional_balance(raw, books):
    for value in (-1, 0.5, MAX_BALANCE + 1):
        refused_by_trigger_and_by_check(
            raw, NEW_SELLER_TRIGGERS, (NEW_SELLER, ("Eve", value, T)), "CHECK.*balance"
        )


@pytest.mark.parametrize("value", [1, 65_000, "10", 2.0], ids=repr)
def test_the_database_refuses_a_new_seller_with_a_balance_other_than_zero(raw, books, value):
    """I2: a new seller has no ledger entries, so its balance can only be 0.

    '10' and 2.0 pass the integer CHECK (affinity makes them integers first).
    """
    refused(raw, (NEW_SELLER, ("Eve", value, T)), match="I2: a new seller")


def test_the_database_accepts_a_new_seller_at_zero_so_the_refusals_above_are_real(raw, books):
    raw.execute("BEGIN IMMEDIATE")
    try:
        raw.execute(NEW_SELLER, ("Eve", 0, T))
        assert raw.execute("SELECT balance FROM seller WHERE name = 'Eve'").fetchall() == [(0,)]
    finally:
        raw.execute("ROLLBACK")


@pytest.mark.parametrize("value", ["10", 2.0, 65_001], ids=repr)
def test_the_database_refuses_a_balance_change_without_its_ledger_entry(raw, books, value):
    """I2 in the database: a balance no ledger entry explains must not be written.

    '10' is the text a careless client might send (2.0 the float): INTEGER affinity
    turns it into an integer before any CHECK runs, so only an I2 guard can refuse it.
    """
    refused(raw, set_balance(books["seller"], value), match="I2: a balance may change only")


@pytest.mark.parametrize(
    ("who", "value"),
    [("seller", 0), ("seller", 64_999), ("seller", 65_001), ("seller", 100_000), ("other", 1)],
)
def test_the_database_refuses_a_balance_in_range_that_is_not_the_newest_balance_after(
    raw, books, who, value
):
    """I2: only the newest entry's balance_after may become the balance, even if the
    value would pass every CHECK (Ali's newest entry says 65,000; Sara has none)."""
    assert last_balance_after(raw, books["seller"]) == books["balance"]
    seller = books[who]
    refused(raw, set_balance(seller, value), match="I2: a balance may change only")
    delta = value - balance_of(raw, seller)
    refused(
        raw,
        ("UPDATE seller SET balance = balance + ? WHERE id = ?", (delta, seller)),
        match="I2: a balance may change only",
    )


def test_the_database_accepts_a_balance_left_as_it_is(raw, books):
    """Control: an UPDATE that keeps the balance (renaming a seller) is not a movement."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        raw.execute("UPDATE seller SET name = 'Ali B', balance = balance")
        raw.execute(*set_balance(books["seller"], books["balance"]))
    finally:
        raw.execute("ROLLBACK")


# --- I5: the ledger is append-only ------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "amount = amount + 1",
        "balance_after = 0",
        "kind = 'adjustment', reason = 'x', sale_id = NULL",
        "created_at = created_at",
    ],
)
def test_the_database_refuses_to_update_a_ledger_row(raw, books, change):
    refused(
        raw,
        (f"UPDATE ledger_entry SET {change} WHERE seller_id = ?", (books["seller"],)),
        match="I5",
    )


def test_the_database_refuses_to_delete_a_ledger_row(raw, books):
    refused(raw, ("DELETE FROM ledger_entry WHERE sale_id = ?", (books["sale"],)), match="I5")
    refused(raw, ("DELETE FROM ledger_entry", ()), match="I5")


# --- I4: one credit entry per approved request, one debit per sale ---------------------------


def entry(seller_id, kind, amount, balance_after, request=None, sale=None, reason=None):
    return ENTRY, (seller_id, kind, amount, balance_after, request, sale, reason, T)


def movement(seller_id, kind, amount, balance_after, **links) -> list[tuple[str, tuple]]:
    """A well-formed movement: the entry first, then the balance onto its balance_after."""
    return [
        entry(seller_id, kind, amount, balance_after, **links),
        set_balance(seller_id, balance_after),
    ]


def approve(request_id: int) -> tuple[str, tuple]:
    return (
        "UPDATE credit_request SET status = 'approved', decided_at = ? WHERE id = ?",
        (T, request_id),
    )


def test_the_database_refuses_a_second_credit_entry_for_one_request(raw, books):
    """The second entry continues the chain and the balance and matches its approved
    request, so only UNIQUE(credit_request_id) is left to refuse it."""
    seller, after = books["seller"], books["balance"] + 100_000
    refused(
        raw,
        *movement(seller, "credit", 100_000, after, request=books["credit"]),
        match="UNIQUE.*credit_request_id",
    )


def test_the_database_refuses_a_credit_entry_for_a_pending_request(raw, books):
    seller, after = books["seller"], books["balance"] + 9_000
    refused(raw, *movement(seller, "credit", 9_000, after, request=books["pending"]), match="I4")


def test_the_database_refuses_a_credit_entry_for_a_rejected_request(raw, books):
    seller, after = books["seller"], books["balance"] + 7_000
    refused(raw, *movement(seller, "credit", 7_000, after, request=books["rejected"]), match="I4")


def test_the_database_refuses_a_credit_entry_with_a_wrong_amount(raw, books):
    seller, request = books["seller"], books["pending"]
    refused(
        raw,
        approve(request),
        *movement(seller, "credit", 9_001, books["balance"] + 9_001, request=request),
        match="I4",
    )


def test_the_database_refuses_a_credit_entry_for_another_sellers_request(raw, books):
    other, request = books["other"], books["pending"]
    refused(
        raw,
        approve(request),
        *movement(other, "credit", 9_000, 9_000, request=request),
        match="I4",
    )


def test_the_database_accepts_a_well_formed_credit_entry_so_the_refusals_above_are_real(raw, books):
    """Control: the same statements with the right amount go through (then roll back)."""
    seller, request, after = books["seller"], books["pending"], books["balance"] + 9_000
    raw.execute("BEGIN IMMEDIATE")
    try:
        raw.execute(*approve(request))
        for statement in movement(seller, "credit", 9_000, after, request=request):
            raw.execute(*statement)
        assert balance_of(raw, seller) == last_balance_after(raw, seller) == after
    finally:
        raw.execute("ROLLBACK")


def insert_sale(seller_id: int, amount: int, balance_after: int) -> tuple[str, tuple]:
    return (
        "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (seller_id, PHONE, amount, balance_after, T),
    )


def test_the_database_refuses_a_sale_entry_that_does_not_debit_its_sale(raw, books):
    seller, balance = books["seller"], books["balance"]
    next_sale = raw.execute("SELECT MAX(id) + 1 FROM sale").fetchone()[0]
    refused(
        raw,
        insert_sale(seller, 1_000, balance - 1_000),
        *movement(seller, "sale", -2_000, balance - 2_000, sale=next_sale),
        match="I4",
    )


def test_the_database_refuses_a_sale_entry_for_a_missing_sale(raw, books):
    seller, balance = books["seller"], books["balance"]
    refused(raw, *movement(seller, "sale", -1_000, balance - 1_000, sale=999), match="I4")


def test_the_database_refuses_a_second_debit_for_one_sale(raw, books):
    """The second debit matches its sale in everything the triggers check: an adjustment
    first brings the chain back to the balance the sale started from, so the entry
    continues the chain and the balance and lands on the sale's balance_after; only
    UNIQUE(sale_id) is left to refuse it."""
    seller, balance, sale = books["seller"], books["balance"], books["sale"]
    amount, sale_after = raw.execute(
        "SELECT amount, balance_after FROM sale WHERE id = ?", (sale,)
    ).fetchone()
    before_sale = sale_after + amount
    refused(
        raw,
        *movement(seller, "adjustment", before_sale - balance, before_sale, reason="x"),
        *movement(seller, "sale", -amount, sale_after, sale=sale),
        match="UNIQUE.*sale_id",
    )


def test_the_database_accepts_a_well_formed_sale_entry_so_the_refusals_above_are_real(raw, books):
    """Control, in the order `ledger.sell` uses: sale, its entry, the balance, the phone."""
    seller, after = books["seller"], books["balance"] - 1_000
    raw.execute("BEGIN IMMEDIATE")
    try:
        sale_id = raw.execute(*insert_sale(seller, 1_000, after)).lastrowid
        for statement in movement(seller, "sale", -1_000, after, sale=sale_id):
            raw.execute(*statement)
        raw.execute(
            "UPDATE phone SET total_charged = total_charged + 1000 WHERE number = ?", (PHONE,)
        )
        assert balance_of(raw, seller) == last_balance_after(raw, seller) == after
    finally:
        raw.execute("ROLLBACK")


# --- I2 and I3 on insert: the chain ------------------------------------------------------------
#
# With both balance triggers in place a seller's balance always equals its newest
# balance_after, so a broken chain also breaks "seller balance + amount". To show
# each check refuses on its own, some tests first move the seller row behind the
# ledger's back (possible only with `seller_balance_follows_ledger` dropped).


def test_the_database_refuses_an_entry_that_breaks_the_balance_after_chain(raw, books):
    seller, balance = books["seller"], books["balance"]
    assert last_balance_after(raw, seller) == balance
    # The entry claims 50 but lands 100 above the previous entry.
    refused(raw, *movement(seller, "adjustment", 50, balance + 100, reason="x"))
    # The seller row was moved by 50, so the entry agrees with it (I2): only I3 refuses.
    refused(
        raw,
        *tampered_balance(seller, balance + 50),
        entry(seller, "adjustment", 50, balance + 100, reason="x"),
        match="I3",
    )


def test_the_database_refuses_a_first_entry_that_does_not_start_from_zero(raw, books):
    other = books["other"]
    refused(raw, *movement(other, "adjustment", 400, 500, reason="x"))
    # The seller row says 100, so 100 + 400 = 500 agrees with it (I2): only I3 refuses.
    refused(
        raw,
        *tampered_balance(other, 100),
        entry(other, "adjustment", 400, 500, reason="x"),
        match="I3",
    )


def test_the_database_refuses_an_entry_whose_balance_after_is_not_the_seller_balance(raw, books):
    seller, balance = books["seller"], books["balance"]
    # The chain is right (previous + 100) but the seller's balance is not the previous one.
    refused(
        raw,
        *tampered_balance(seller, balance + 1),
        entry(seller, "adjustment", 100, balance + 100, reason="x"),
        match="I2: balance_after must equal the seller balance",
    )


def test_the_database_accepts_a_well_formed_adjustment_so_the_refusals_above_are_real(raw, books):
    seller, after = books["seller"], books["balance"] + 100
    raw.execute("BEGIN IMMEDIATE")
    try:
        for statement in movement(seller, "adjustment", 100, after, reason="x"):
            raw.execute(*statement)
        assert balance_of(raw, seller) == last_balance_after(raw, seller) == after
    finally:
        raw.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("kind", "amount", "request_key", "sale_key", "reason"),
    [
        ("adjustment", 0, None, None, "zero"),
        ("adjustment", 100, None, None, None),
        ("bonus", 100, None, None, "unknown kind"),
        ("adjustment", 100, "credit", None, "linked"),
        ("adjustment", 1.5, None, None, "fraction"),
    ],
)
def test_the_database_refuses_a_malformed_ledger_entry(
    raw, books, kind, amount, request_key, sale_key, reason
):
    """Each entry continues the chain and the balance; the row's own CHECKs refuse it."""
    seller = books["seller"]
    refused(
        raw,
        *movement(
            seller,
            kind,
            amount,
            books["balance"] + amount,
            request=books.get(request_key),
            sale=books.get(sale_key),
            reason=reason,
        ),
        match="CHECK",
    )


# --- decided credit requests are final --------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "status", "decided_at"),
    [
        ("credit", "pending", None),
        ("credit", "rejected", T),
        ("credit", "approved", T),
        ("rejected", "approved", T),
        ("rejected", "pending", None),
    ],
)
def test_the_database_refuses_to_change_a_decided_credit_request(
    raw, books, which, status, decided_at
):
    refused(
        raw,
        (
            "UPDATE credit_request SET status = ?, decided_at = ? WHERE id = ?",
            (status, decided_at, books[which]),
        ),
    )


def test_the_database_refuses_to_change_the_amount_or_seller_of_a_credit_request(raw, books):
    for request in ("credit", "pending"):
        refused(
            raw, ("UPDATE credit_request SET amount = amount + 1 WHERE id = ?", (books[request],))
        )
        refused(
            raw,
            (
                "UPDATE credit_request SET seller_id = ? WHERE id = ?",
                (books["other"], books[request]),
            ),
        )


def test_the_database_refuses_a_decided_status_without_a_decision_time(raw, books):
    refused(
        raw, ("UPDATE credit_request SET status = 'approved' WHERE id = ?", (books["pending"],))
    )
    refused(
        raw,
        (
            "UPDATE credit_request SET status = 'done', decided_at = ? WHERE id = ?",
            (T, books["pending"]),
        ),
    )


# --- a key's record is its seller's (schema version 4) -----------------------------------------

KEY_RECORDS = [
    ("idempotency_record", "sale_id", "sale"),
    ("adjustment_record", "entry_id", "adjustment"),
    ("credit_request_record", "request_id", "credit"),
]


def keyed(table: str, column: str, seller_id: int, row: int | None) -> tuple[str, tuple]:
    return (
        f"INSERT INTO {table} (seller_id, key, request_hash, created_at, {column}, error_code)"
        " VALUES (?, 'k', 'h', ?, ?, ?)",
        (seller_id, T, row, None if row else "refused"),
    )


def named(raw, books, names: str) -> int:
    if names == "adjustment":
        return raw.execute("SELECT id FROM ledger_entry WHERE kind = 'adjustment'").fetchone()[0]
    return books[names]


@pytest.mark.parametrize(("table", "column", "names"), KEY_RECORDS)
def test_the_database_refuses_a_key_record_that_names_another_sellers_row(
    raw, books, table, column, names
):
    """The other seller's record of Ali's sale, adjustment or request (a forged replay)."""
    record = keyed(table, column, books["other"], named(raw, books, names))
    refused(raw, record, match="another seller")


@pytest.mark.parametrize(("table", "column", "names"), KEY_RECORDS)
def test_the_database_accepts_a_key_record_of_its_sellers_own_row_so_the_refusal_is_real(
    raw, books, table, column, names
):
    """Control: Ali's record of the same row, and the other seller's refusal (no row), go
    through (then roll back)."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        raw.execute(*keyed(table, column, books["seller"], named(raw, books, names)))
        raw.execute(*keyed(table, column, books["other"], None))
        assert raw.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
    finally:
        raw.execute("ROLLBACK")


# --- nothing that carries money is deleted ---------------------------------------------------


@pytest.mark.parametrize("table", ["sale", "seller", "credit_request"])
def test_the_database_refuses_to_delete_a_row_that_carries_money(raw, books, table):
    refused(raw, (f"DELETE FROM {table}", ()))
    key = {"sale": "sale", "seller": "other", "credit_request": "pending"}[table]
    refused(raw, (f"DELETE FROM {table} WHERE id = ?", (books[key],)))


def test_the_database_refuses_to_update_a_sale(raw, books):
    refused(raw, ("UPDATE sale SET amount = 1 WHERE id = ?", (books["sale"],)))


# --- phones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "9121234567",
        "+989121234567",
        "0912 123 4567",
        "۰۹۱۲۱۲۳۴۵۶۷",
        "0912123456",
        "091212345678",
        "02112345678",
        "0912123456a",
        "",
    ],
)
def test_the_database_refuses_a_phone_number_not_in_normal_form(raw, books, number):
    refused(
        raw, ("INSERT INTO phone (number, total_charged, created_at) VALUES (?, 0, ?)", (number, T))
    )
    refused(raw, ("UPDATE phone SET number = ? WHERE number = ?", (number, PHONE)))


def test_the_database_refuses_a_phone_registered_twice(raw, books):
    refused(
        raw,
        ("INSERT INTO phone (number, total_charged, created_at) VALUES (?, 0, ?)", (PHONE, T)),
        match="UNIQUE",
    )


# --- how the app's connection is set up ------------------------------------------------------


def test_the_database_file_is_in_wal_mode(raw, books, service):
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert service.database.rows("PRAGMA journal_mode") == [("wal",)]


def test_the_apps_connection_enforces_foreign_keys(service):
    assert service.database.rows("PRAGMA foreign_keys") == [(1,)]


def test_the_apps_connection_syncs_normally(service):
    assert service.database.rows("PRAGMA synchronous") == [(1,)]


def test_the_apps_connection_waits_for_a_busy_database(service, config):
    timeout = service.database.rows("PRAGMA busy_timeout")[0][0]
    assert timeout == config.busy_timeout_ms > 0


def test_the_apps_connection_refuses_a_sale_of_an_unknown_phone_at_commit(service, config, books):
    """The sale's phone is a deferred foreign key (the sale row is written before the phone
    upsert): the INSERT is let through, and the COMMIT refuses it. Selling to a number
    not yet registered, which upserts the phone after the sale, is tested in test_services."""
    unknown = "09350000000"
    with contextlib.closing(sqlite3.connect(database_of(config))) as disk:
        before = snapshot(disk)
        inserted = []
        with (
            pytest.raises(IntegrityViolation, match="FOREIGN KEY constraint failed"),
            service.database.transaction() as write,
        ):
            write.execute(
                "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at) "
                "VALUES (?, ?, 1, ?, ?)",
                (books["seller"], unknown, books["balance"] - 1, T),
            )
            inserted.append(True)  # deferred: the INSERT itself was accepted
        assert inserted == [True]
        assert not service.database.connection().in_transaction
        assert snapshot(disk) == before


def test_the_wal_a_long_read_let_grow_is_cut_back_once_it_can_restart(config, monkeypatch):
    """A reader's snapshot (a full audit, a statement) keeps the WAL from restarting, so
    sales grow it; let go, the WAL restarts and is cut back (journal_size_limit), instead
    of keeping its largest size for good. The limit made 1 MiB here (it is 64 MiB)."""
    monkeypatch.setattr(db, "WAL_SIZE_LIMIT", 1 << 20)
    service = Chargebox(prepare(config))
    wal = Path(f"{config.db_path}-wal")
    try:
        assert service.database.rows("PRAGMA journal_size_limit") == [(1 << 20,)]
        seller, _ = service.create_seller("shop")
        service.approve_credit_request(service.request_credit(seller["id"], 10**9).record["id"])
        with contextlib.closing(sqlite3.connect(config.db_path, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sale").fetchall()  # its snapshot, held
            while wal.stat().st_size < 24 << 20:
                service.sell(seller["id"], "09121234567", 1_000)
        for _ in range(300):  # the WAL checkpointed past the reader's end, then restarted
            service.sell(seller["id"], "09121234567", 1_000)
        assert wal.stat().st_size < 8 << 20, wal.stat().st_size  # the limit + ~4 MiB of pages
    finally:
        service.close()
