"""Tamper evidence: forgeries that keep every sum consistent are still caught by the seals.

Each forgery works on a copy of one realistic database, the way someone holding
the file could: drop the triggers, change rows, then repair balances,
balance_after chains, sale rows and phone totals so that I1-I4 all hold again.
Only the HMAC seals (chained per seller, head sealed) can tell, and they must
name the first broken entry.
"""

from __future__ import annotations

import functools
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests.support import ADMIN_TOKEN, cli_audit, database_of

FORGERIES = 200
SEED = 20261124


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Three sellers with credits, adjustments and sales; returns (db path, ledger key)."""
    folder = tmp_path_factory.mktemp("tamper")
    config = prepare(Config(db_path=folder / "chargebox.db", admin_token=ADMIN_TOKEN))
    service, rng = Chargebox(config), random.Random(SEED)
    for n in range(3):
        seller, _ = service.create_seller(f"seller {n}")
        for _ in range(3):
            request = service.request_credit(seller["id"], rng.randrange(50, 200) * 1_000).record
            service.approve_credit_request(request["id"])
        service.adjust_balance(seller["id"], 7_000, "opening bonus")
        for _ in range(12):
            service.sell(
                seller["id"], f"0912{rng.randrange(10**7):07d}", rng.choice((1_000, 5_000))
            )
    service.close()  # the writer thread ends and closes its connection
    checkpoint = sqlite3.connect(database_of(config))
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    return database_of(config), config.ledger_key


def audit_copy(original, tmp_path, name: str, forge) -> dict:
    path = tmp_path / f"{name}.db"
    shutil.copy(original[0], path)
    target = None
    if forge is not None:
        conn = sqlite3.connect(path)
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("PRAGMA foreign_keys = OFF")
        target = forge(conn)
        repair(conn)
        conn.commit()
        conn.close()
    report = audit_of(path, original[1])
    return {"report": report, "target": target}


def audit_of(path: Path, ledger_key: str) -> dict:
    """The in-process audit of the file at `path` with `ledger_key`."""
    service = Chargebox(Config(db_path=path, admin_token=ADMIN_TOKEN, ledger_key=ledger_key))
    try:
        return service.audit()
    finally:
        service.close()


def repair(conn: sqlite3.Connection) -> None:
    """Make every sum agree again: chains, balances, sale rows, phone totals."""
    for (seller_id,) in conn.execute("SELECT id FROM seller").fetchall():
        running = 0
        for entry_id, amount, sale_id in conn.execute(
            "SELECT id, amount, sale_id FROM ledger_entry WHERE seller_id = ? ORDER BY id",
            (seller_id,),
        ).fetchall():
            running += amount
            conn.execute(
                "UPDATE ledger_entry SET balance_after = ? WHERE id = ?", (running, entry_id)
            )
            if sale_id is not None:
                conn.execute(
                    "UPDATE sale SET amount = ?, balance_after = ? WHERE id = ?",
                    (-amount, running, sale_id),
                )
        conn.execute("UPDATE seller SET balance = ? WHERE id = ?", (running, seller_id))
    conn.execute(
        "UPDATE phone SET total_charged = (SELECT COALESCE(SUM(amount), 0) FROM sale "
        "WHERE sale.phone = phone.number)"
    )


def entries(conn, kind: str | None = None) -> list[tuple]:
    sql = "SELECT id, seller_id, amount, sale_id FROM ledger_entry"
    return conn.execute(
        sql + (" WHERE kind = ?" if kind else "") + " ORDER BY id", (kind,) if kind else ()
    ).fetchall()


def edit_sale_amount(conn, rng):
    entry_id, _, amount, sale_id = rng.choice(entries(conn, "sale"))
    conn.execute("UPDATE ledger_entry SET amount = ? WHERE id = ?", (amount - 1_000, entry_id))
    return entry_id


def edit_credit(conn, rng):
    entry_id, _, amount, _ = rng.choice(entries(conn, "credit"))
    conn.execute("UPDATE ledger_entry SET amount = ? WHERE id = ?", (amount * 2, entry_id))
    conn.execute(
        "UPDATE credit_request SET amount = ? WHERE id = (SELECT credit_request_id "
        "FROM ledger_entry WHERE id = ?)",
        (amount * 2, entry_id),
    )
    return entry_id


def delete_an_entry(conn, rng):
    """Delete a sale from the middle: the next entry's seal no longer chains."""
    entry_id, seller_id, _, sale_id = rng.choice(entries(conn, "sale"))
    following = conn.execute(
        "SELECT MIN(id) FROM ledger_entry WHERE seller_id = ? AND id > ?", (seller_id, entry_id)
    ).fetchone()[0]
    conn.execute("DELETE FROM ledger_entry WHERE id = ?", (entry_id,))
    conn.execute("DELETE FROM ledger_seal WHERE entry_id = ?", (entry_id,))
    conn.execute("DELETE FROM sale WHERE id = ?", (sale_id,))
    return following if following is not None else "head"


def delete_the_newest_entry(conn, rng):
    seller_id = rng.choice([row[0] for row in conn.execute("SELECT id FROM seller")])
    entry_id, sale_id = conn.execute(
        "SELECT id, sale_id FROM ledger_entry WHERE seller_id = ? ORDER BY id DESC LIMIT 1",
        (seller_id,),
    ).fetchone()
    conn.execute("DELETE FROM ledger_entry WHERE id = ?", (entry_id,))
    conn.execute("DELETE FROM ledger_seal WHERE entry_id = ?", (entry_id,))
    conn.execute("DELETE FROM sale WHERE id = ?", (sale_id,))
    return "head"


def insert_an_entry(conn, rng):
    entry_id, seller_id, _, _ = rng.choice(entries(conn))
    conn.execute(
        "INSERT INTO ledger_entry (id, seller_id, kind, amount, balance_after, reason, created_at)"
        " VALUES (?, ?, 'adjustment', 50000, 0, 'goodwill', '2026-01-01T00:00:00.000000Z')",
        (entry_id * 1000 + 1 if rng.random() < 0.5 else 10**6 + entry_id, seller_id),
    )
    return "inserted"


def swap_two_entries(conn, rng):
    sales = entries(conn, "sale")
    first = rng.randrange(len(sales) - 1)
    (a, seller_a, amount_a, _), (b, seller_b, amount_b, _) = sales[first], sales[first + 1]
    if seller_a != seller_b or amount_a == amount_b:
        return swap_reasons(conn, rng)
    conn.execute("UPDATE ledger_entry SET amount = ? WHERE id = ?", (amount_b, a))
    conn.execute("UPDATE ledger_entry SET amount = ? WHERE id = ?", (amount_a, b))
    return a


def swap_reasons(conn, rng):
    entry_id = rng.choice(entries(conn, "adjustment"))[0]
    conn.execute("UPDATE ledger_entry SET reason = 'forged' WHERE id = ?", (entry_id,))
    return entry_id


def redirect_a_sale(conn, rng):
    entry_id, _, _, sale_id = rng.choice(entries(conn, "sale"))
    conn.execute(
        "INSERT OR IGNORE INTO phone (number, total_charged, created_at) "
        "VALUES ('09990000000', 0, '2026-01-01T00:00:00.000000Z')"
    )
    conn.execute("UPDATE sale SET phone = '09990000000' WHERE id = ?", (sale_id,))
    return entry_id


FORGERS = (edit_sale_amount, edit_credit, delete_an_entry, delete_the_newest_entry,
           insert_an_entry, swap_two_entries, swap_reasons, redirect_a_sale)  # fmt: skip


def test_an_untouched_copy_passes_every_check_including_the_seals(original, tmp_path):
    result = audit_copy(original, tmp_path, "untouched", None)
    assert result["report"]["consistent"], result["report"]["problems"]


def test_every_consistent_forgery_is_caught_by_the_seals_and_names_the_first_broken_entry(
    original, tmp_path
):
    rng = random.Random(SEED)
    caught = 0
    for n in range(FORGERIES):
        forger = FORGERS[n % len(FORGERS)]
        result = audit_copy(original, tmp_path, f"forgery{n}", functools.partial(forger, rng=rng))
        problems = result["report"]["problems"]
        others = [p for p in problems if p["invariant"] not in ("seal", "I5")]
        assert others == [], f"{forger.__name__}: the forgery was not consistent: {others}"
        seals = [p for p in problems if p["invariant"] == "seal"]
        assert seals, f"{forger.__name__} (forgery {n}) went undetected"
        if isinstance(result["target"], int):
            assert result["target"] in {p["entry_id"] for p in seals}, (forger.__name__, seals)
        caught += 1
    print(f"\n{caught} of {FORGERIES} consistent forgeries detected")
    assert caught == FORGERIES


def test_the_audit_without_the_key_says_the_seals_cannot_be_checked(original, tmp_path):
    path = tmp_path / "nokey.db"
    shutil.copy(original[0], path)
    service = Chargebox(Config(db_path=path, admin_token=ADMIN_TOKEN))
    try:
        report = service.audit()
    finally:
        service.close()
    assert not report["consistent"]
    assert "no ledger key" in report["problems"][0]["message"]


def test_chargebox_audit_names_the_first_broken_seal_straight_from_the_file(original, tmp_path):
    """As an operator runs it: the key file beside the copy, the CLI on the forged file."""
    (tmp_path / "ledger_key").write_text(original[1] + "\n")
    result = audit_copy(
        original, tmp_path, "cli", functools.partial(swap_reasons, rng=random.Random(1))
    )
    audited = cli_audit(tmp_path / "cli.db")
    seal = next(p for p in result["report"]["problems"] if p["invariant"] == "seal")
    assert audited.returncode == 1
    assert seal["entry_id"] == result["target"]
    expected = (
        f"seal: seller {seal['seller_id']}, entry {seal['entry_id']}: its seal does not match"
    )
    assert expected in audited.stderr


def test_a_seal_left_behind_by_its_deleted_entry_is_named(original, tmp_path):
    """A seller's newest sale deleted with its entry, its seal kept, every sum repaired:
    the audit names that seal as one whose entry was deleted (read with NOT EXISTS: a
    NOT IN over the ledger ran for hours on PostgreSQL at a million entries)."""

    def forge(conn):
        entry_id, sale_id = conn.execute(
            "SELECT id, sale_id FROM ledger_entry WHERE kind = 'sale' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM ledger_entry WHERE id = ?", (entry_id,))
        conn.execute("DELETE FROM sale WHERE id = ?", (sale_id,))
        return entry_id

    result = audit_copy(original, tmp_path, "stray", forge)
    stray = [problem["entry_id"] for problem in result["report"]["problems"]
             if problem["message"] == "a seal whose entry was deleted"]  # fmt: skip
    assert stray == [result["target"]], result["report"]["problems"]


@pytest.mark.parametrize("column", ["seal", "reason"])
def test_a_row_forged_with_bytes_that_are_not_utf8_is_named_not_fatal(original, tmp_path, column):
    """One byte edited into a seal (or an entry's reason) that is not UTF-8: the audit
    failed on the read ("Could not decode to UTF-8"), in process, over HTTP (500) and in
    the CLI, naming nothing, so such a byte hid every other forgery."""

    def forge(conn):
        entry_id = random.Random(3).choice(entries(conn, "adjustment"))[0]
        table, key = ("ledger_seal", "entry_id") if column == "seal" else ("ledger_entry", "id")
        name = "mac" if column == "seal" else "reason"
        conn.execute(
            f"UPDATE {table} SET {name} = CAST(X'ff' || CAST(substr({name}, 2) AS BLOB) AS TEXT)"
            f" WHERE {key} = ?",
            (entry_id,),
        )
        return entry_id

    (tmp_path / "ledger_key").write_text(original[1] + "\n")
    result = audit_copy(original, tmp_path, "bytes", forge)
    seals = [p for p in result["report"]["problems"] if p["invariant"] == "seal"]
    assert [p["entry_id"] for p in seals][:1] == [result["target"]], result["report"]
    audited = cli_audit(tmp_path / "bytes.db")
    assert audited.returncode == 1, audited.stderr
    assert f"entry {result['target']}: its seal does not match" in audited.stderr


def test_chargebox_audit_without_a_key_says_nothing_was_verified_and_names_no_seller(
    original, tmp_path
):
    """No key beside the copy: the audit says plainly that no seal was verified, and why
    (not "0 entries verified", not "seller None, entry None"), and exits 1."""
    path = tmp_path / "nokey.db"
    shutil.copy(original[0], path)
    audited = cli_audit(path)
    assert audited.returncode == 1, audited.stderr
    assert "nothing verified against the seals" in audited.stderr
    assert "no ledger key was given" in audited.stderr
    assert "0 entries" not in audited.stderr and "None" not in audited.stderr
    assert "  seal: no ledger key: the seals cannot be checked" in audited.stderr


def test_a_head_edited_in_place_is_named_without_contradicting_itself(original, tmp_path):
    """A head whose entry and count still agree with the ledger but whose seal does not:
    the problem does not say that equal numbers do not match."""
    path = tmp_path / "head.db"
    shutil.copy(original[0], path)
    with sqlite3.connect(path) as conn:  # a head's own row: no guard stops its update
        conn.execute("UPDATE seller_head SET mac = ? WHERE seller_id = 2", ("0" * 64,))
    conn.close()
    report = audit_of(path, original[1])
    (problem,) = report["problems"]
    assert problem["seller_id"] == 2 and problem["invariant"] == "seal"
    assert "names the ledger's newest entry" in problem["message"]
    assert "does not match the ledger (entry" not in problem["message"]
