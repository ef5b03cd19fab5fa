"""`python -m stress history`: a generated history is one the service could have written.

Small runs only (2,000 entries): the audit finds it clean, seals and heads included;
each balance is its ledger's sum; the schema (tables, indexes, triggers) is the one
`prepare` makes; and the service carries on selling from it, its seals chained on.
How fast it goes is measured in docs/performance.md, never here.
"""

from __future__ import annotations

import sqlite3

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests.support import cli_audit, run_stress


def generated(tmp_path, entries: int = 2_000):
    path = tmp_path / "history" / "chargebox.db"
    result = run_stress(
        "history", "--db", str(path), "--entries", str(entries), "--sellers", "30",
        "--phones", "500", "--quiet", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return path, result


def schema_of(path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute("SELECT type, sql FROM sqlite_master WHERE sql NOT NULL"))
    finally:
        conn.close()


def test_a_generated_history_audits_clean_with_every_balance_its_ledger_sum(tmp_path):
    path, result = generated(tmp_path)
    assert "2,000 ledger entries" in result.stdout
    audit = cli_audit(path)
    assert audit.returncode == 0, audit.stderr
    assert "books reconcile (30 sellers, 2,000 ledger entries" in audit.stderr
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT s.id, s.balance, COALESCE(SUM(l.amount), 0), COUNT(l.id), h.entries"
        " FROM seller s LEFT JOIN ledger_entry l ON l.seller_id = s.id"
        " LEFT JOIN seller_head h ON h.seller_id = s.id GROUP BY s.id"
    ).fetchall()
    kinds = dict(conn.execute("SELECT kind, COUNT(*) FROM ledger_entry GROUP BY kind"))
    (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    assert all(balance == total >= 0 for _, balance, total, _, _ in rows)
    assert all(count == (head or 0) for *_, count, head in rows)
    assert kinds["sale"] > kinds["credit"] > 0 and sum(kinds.values()) == 2_000
    assert journal == "wal"


def test_a_generated_history_has_the_schema_prepare_makes(tmp_path):
    path, _ = generated(tmp_path)
    fresh = tmp_path / "fresh" / "chargebox.db"
    fresh.parent.mkdir()
    prepare(Config(db_path=fresh))
    assert schema_of(path) == schema_of(fresh)


def test_the_service_sells_on_from_a_generated_history_and_the_seals_chain_on(tmp_path):
    path, _ = generated(tmp_path)
    service = Chargebox(prepare(Config(db_path=path)))
    try:
        (seller_id,) = service.database.rows("SELECT id FROM seller ORDER BY balance DESC LIMIT 1")[
            0
        ]
        service.sell(seller_id, "09121234567", 1_000)
        service.adjust_balance(seller_id, 500, "goodwill")
        report = service.audit()
    finally:
        service.close()
    assert report["consistent"], report["problems"]
    assert report["totals"]["ledger_entries"] == 2_002
