"""PostgreSQL: no page, and no audit checkpoint, passes a row still to come (settled.py).

Two app servers on one database: server A's sale takes its ids, then waits for a
phone's row held by `gate` (so its transaction stays open with the lower ids);
server B's sale, for another seller, takes higher ids and commits. A page read now
must not show B's sale without A's: a client would pass B's id as its next
`after_id` and never see A's. So the page waits for A's transaction to end: it is
503 while A cannot end (the gate held past the reader's busy timeout), and both
sales, in id order, once it has. A page of one seller's rows waits for nothing: they
are written under the seller's row lock, so they commit in id order. An audit's
checkpoint likewise bounds what the next quick audits read of credit requests: none
is recorded past another server's request still to come.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

import psycopg
import pytest

from chargebox import audit
from chargebox.errors import LockTimeout
from chargebox.queries import Page
from chargebox.sale_search import Search
from chargebox.services import Chargebox
from tests.support import credited_seller
from tests.test_postgresql_group_commit import FUNDS, blocked_by

A_NUMBER, B_NUMBER = "09120000001", "09120000002"


def test_a_page_waits_for_a_lower_id_still_in_flight_on_another_server(pg_group_commit):
    a, superuser = pg_group_commit
    b = Chargebox(dataclasses.replace(a.config, busy_timeout_ms=500))
    try:
        low, high = (credited_seller(a, FUNDS)["id"] for _ in range(2))
        first = a.sell(low, A_NUMBER, 1_000).record["id"]  # the phone's row now exists
        entries = b.queries.ledger(Page(limit=1000))[-1]["id"]
        with (
            concurrent.futures.ThreadPoolExecutor(1) as pool,
            psycopg.connect(superuser) as gate,
        ):
            gate.execute("SELECT 1 FROM phone WHERE number = %s FOR UPDATE", (A_NUMBER,))
            in_flight = pool.submit(a.sell, low, A_NUMBER, 1_000)
            blocked_by(superuser, gate.info.backend_pid)  # A holds its ids, not committed
            later = b.sell(high, B_NUMBER, 1_000).record["id"]
            assert later > first + 1  # A's sale took the id between
            for read in (
                lambda: b.queries.sales(Page(after_id=first)),
                lambda: b.queries.sales(Page(after_id=first), search=Search(phone=B_NUMBER)),
                lambda: b.queries.ledger(Page(after_id=entries)),
            ):
                with pytest.raises(LockTimeout):
                    read()
            # one seller's rows are written under its row lock, in id order: none waits
            assert [s["id"] for s in b.queries.sales(Page(after_id=first), high)] == [later]
            assert b.queries.sales(Page(after_id=first), low) == []
            assert [e["seller_id"] for e in b.queries.ledger(Page(after_id=entries), high)] == [
                high
            ]
            gate.rollback()
            middle = in_flight.result(timeout=30).record["id"]
        assert [s["id"] for s in b.queries.sales(Page(after_id=first))] == [middle, later]
        assert [e["kind"] for e in b.queries.ledger(Page(after_id=entries))] == ["sale"] * 2
    finally:
        b.close()


def test_a_page_with_nothing_in_flight_shows_every_committed_row(pg_group_commit):
    """The cap is the sequence's last id: rows up to it are all there (none held back),
    on a fresh database and after sales."""
    service, _ = pg_group_commit
    assert service.queries.sales(Page()) == []
    seller = credited_seller(service, FUNDS)["id"]
    sold = [service.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    assert [s["id"] for s in service.queries.sales(Page())] == sold
    assert [s["id"] for s in service.queries.sales(Page(after_id=sold[0]))] == sold[1:]


def test_no_checkpoint_passes_a_credit_request_still_to_come(pg_group_commit):
    """Another server's credit request holds a lower id, not committed, while this one's,
    higher, commits: a clean audit then records no checkpoint (it would say every request
    up to the higher id was verified). Once the lower one has committed and is tampered
    with (approved with no credit entry), the next quick audit names it."""
    a, superuser = pg_group_commit
    b = Chargebox(dataclasses.replace(a.config, busy_timeout_ms=500))
    try:
        low, high = (credited_seller(a, FUNDS)["id"] for _ in range(2))
        with psycopg.connect(a.config.db_url) as other:  # as a server's write: its xid first
            other.execute("SELECT txid_current()")
            (held,) = other.execute(
                "INSERT INTO credit_request (seller_id, amount, status, created_at)"
                " VALUES (%s, 500, 'pending', %s) RETURNING id",
                (low, "2026-12-04T06:00:00.000000Z"),
            ).fetchone()
            later = b.request_credit(high, 500).record["id"]
            assert later > held
            report = audit.audit(b.database, checkpoint_after=0)
            assert report["consistent"] and report["scope"]["saved_checkpoint"] is None
        with psycopg.connect(superuser) as tamper:
            tamper.execute("SET session_replication_role = replica")
            tamper.execute(
                "UPDATE credit_request SET status = 'approved', decided_at = created_at"
                " WHERE id = %s",
                (held,),
            )
        named = [p["message"] for p in audit.audit(b.database)["problems"]]
        assert f"credit request {held} (approved, 500) has 0 credit entries" in named
    finally:
        b.close()


def test_a_settled_audit_records_its_checkpoint(pg_group_commit):
    """With nothing in flight, a clean audit records its checkpoint, up to the newest
    request."""
    service, _ = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    newest = service.request_credit(seller, 500).record["id"]
    assert audit.audit(service.database, checkpoint_after=0)["scope"]["saved_checkpoint"]
    rows = service.database.rows("SELECT request_id FROM audit_checkpoint ORDER BY id DESC")
    assert rows[0][0] == newest


def test_a_transaction_that_cannot_write_the_table_does_not_hold_pages_back(pg_group_commit):
    """Transactions that write no chargebox row are not waited for: another database's,
    and one of a role that may not insert into the table (each holding a transaction
    id); a superuser's may, and is."""
    service, superuser = pg_group_commit
    quick = Chargebox(dataclasses.replace(service.config, busy_timeout_ms=500))
    elsewhere = superuser.rsplit("/", 1)[0] + "/postgres"
    try:
        seller = credited_seller(service, FUNDS)["id"]
        sold = service.sell(seller, A_NUMBER, 100).record["id"]
        with psycopg.connect(elsewhere, autocommit=True) as admin:
            admin.execute("CREATE ROLE chargebox_reporting LOGIN PASSWORD 'reporting'")
        try:
            reporting = superuser.replace("postgres:", "chargebox_reporting:", 1).replace(
                "chargebox-test-superuser-password", "reporting", 1
            )
            with psycopg.connect(superuser, autocommit=True) as admin:
                database = superuser.rsplit("/", 1)[1]
                admin.execute(f"GRANT CONNECT ON DATABASE {database} TO chargebox_reporting")
                admin.execute("GRANT USAGE ON SCHEMA public TO chargebox_reporting")
                admin.execute("CREATE TABLE reporting_note (id int)")
                admin.execute("GRANT INSERT ON reporting_note TO chargebox_reporting")
            with (
                psycopg.connect(elsewhere) as other_database,
                psycopg.connect(reporting) as reporter,
            ):
                other_database.execute("SELECT txid_current()")
                reporter.execute("INSERT INTO reporting_note VALUES (1)")
                assert [s["id"] for s in quick.queries.sales(Page())] == [sold]
            with psycopg.connect(superuser) as operator:
                operator.execute("SELECT txid_current()")
                with pytest.raises(LockTimeout):
                    quick.queries.sales(Page())
        finally:
            with psycopg.connect(superuser, autocommit=True) as admin:
                admin.execute("DROP TABLE IF EXISTS reporting_note")
                admin.execute("DROP OWNED BY chargebox_reporting")
            with psycopg.connect(elsewhere, autocommit=True) as admin:
                admin.execute("DROP ROLE IF EXISTS chargebox_reporting")
    finally:
        quick.close()
