"""Refunds: the admin gives a sale's whole amount back to its seller, at most once.

In process (`service`) and over HTTP against real servers, on both backends: the refund
entry, the sale's refund fields, the phone's total, the audit; a second refund is 409
`already_refunded` and changes nothing; keyed refunds replay. The database half (UNIQUE on
`refund_of`, the trigger matching a refund to its sale) is tried with raw SQL on SQLite
here and on PostgreSQL in test_postgresql_schema.py. Then 50 refunds of one sale race,
from threads and from spawned processes, against a fresh server: exactly one is made,
and the books are re-added from a fresh connection.
"""

from __future__ import annotations

import dataclasses
import datetime
import sqlite3
from collections import Counter

import pytest

from chargebox import audit, clock, errors, idempotency, services
from chargebox.config import MAX_BALANCE
from chargebox.services import Chargebox
from tests.support import (
    ADMIN_TOKEN,
    Api,
    credited_seller,
    database_of,
    db_snapshot,
    drop_trigger,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    writable,
)
from tests.workloads import (
    THREADS_FOR_HELD_COPIES,
    keyed_post,
    run_parallel,
    write_lock_held_until_sent,
)

PHONE = "09121234567"


def sold(service: Chargebox, credit: int = 100_000, amount: int = 7_000) -> tuple[int, dict]:
    seller_id = credited_seller(service, credit)["id"]
    return seller_id, service.sell(seller_id, PHONE, amount).record


def audited(service: Chargebox, config) -> dict[int, int]:
    report = service.audit(full=True)
    assert report["consistent"], report["problems"]
    assert service.audit()["consistent"]
    return reconciled_balances(database_of(config))


# --- in process --------------------------------------------------------------------------------


def test_a_refund_gives_the_whole_sale_back_once_and_the_sale_says_so(service, config):
    seller_id, sale = sold(service)
    assert (sale["refunded_at"], sale["refund_entry_id"]) == (None, None)
    made = service.refund(sale["id"], "operator did not deliver")
    assert made.replayed is False
    entry = made.record
    assert (entry["kind"], entry["amount"], entry["balance_after"]) == ("refund", 7_000, 100_000)
    assert (entry["refund_of"], entry["sale_id"], entry["credit_request_id"]) == (
        sale["id"],
        None,
        None,
    )
    assert entry["reason"] == "operator did not deliver"
    now = service.queries.sale(sale["id"])
    assert (now["refunded_at"], now["refund_entry_id"]) == (entry["created_at"], entry["id"])
    assert {k: now[k] for k in sale if not k.startswith("refund")} == {
        k: v for k, v in sale.items() if not k.startswith("refund")
    }
    assert service.queries.phone(PHONE)["total_charged"] == 0
    assert audited(service, config)[seller_id] == 100_000


def clock_ahead(monkeypatch, by: datetime.timedelta) -> None:
    """The service stamps what it writes `by` ahead, until `monkeypatch.undo()`: another
    host's clock ahead, or this one's before NTP set it back."""
    ahead = clock.now(by)
    for module in (services, idempotency):
        monkeypatch.setattr(module, "now", lambda: ahead)


def test_a_sale_made_by_a_clock_ahead_is_refunded_when_it_was_sold_not_before(
    service, config, monkeypatch
):
    """After the clock is set back, its refund was stamped before the sale: the pages and
    the API showed it refunded before it was sold."""
    seller_id = credited_seller(service, 100_000)["id"]
    clock_ahead(monkeypatch, datetime.timedelta(hours=1))
    sale = service.sell(seller_id, PHONE, 7_000).record
    monkeypatch.undo()
    entry = service.refund(sale["id"], "operator did not deliver").record
    assert entry["created_at"] == sale["created_at"] > clock.now()
    assert service.queries.sale(sale["id"])["refunded_at"] == sale["created_at"]
    later = service.refund(sold(service)[1]["id"], "not delivered").record  # the clock's own
    assert sale["created_at"] > later["created_at"]
    assert audited(service, config)[seller_id] == 100_000


def test_a_second_refund_is_already_refunded_and_changes_nothing(service, config):
    _, sale = sold(service)
    first = service.refund(sale["id"], "wrong number").record
    before = db_snapshot(database_of(config))
    with pytest.raises(errors.AlreadyRefunded) as again:
        service.refund(sale["id"], "wrong number")
    assert str(first["id"]) in again.value.message
    with pytest.raises(errors.AlreadyRefunded):
        service.refund(sale["id"], "another reason", "fresh-key")
    assert db_snapshot(database_of(config)) == before


def test_refunding_an_unknown_sale_is_not_found_and_writes_nothing(service, config):
    _, sale = sold(service)
    before = db_snapshot(database_of(config))
    with pytest.raises(errors.NotFound):
        service.refund(sale["id"] + 1, "ghost", "k")
    assert db_snapshot(database_of(config)) == before


@pytest.mark.parametrize("reason", ["", "   ", None, 5, "x" * 501])
def test_a_refund_without_a_visible_reason_is_invalid_and_writes_nothing(service, config, reason):
    _, sale = sold(service)
    before = db_snapshot(database_of(config))
    with pytest.raises(errors.ValidationError) as refused:
        service.refund(sale["id"], reason, "k")
    assert refused.value.field == "reason"
    assert db_snapshot(database_of(config)) == before


def test_a_keyed_refund_replays_its_entry_and_the_key_is_the_sellers_with_adjustments(
    service, config
):
    seller_id, sale = sold(service)
    first = service.refund(sale["id"], "late", "rf-1")
    before = db_snapshot(database_of(config))
    again = service.refund(sale["id"], "late", "rf-1")
    assert again.replayed is True and again.record == first.record
    assert db_snapshot(database_of(config)) == before
    with pytest.raises(errors.IdempotencyKeyReused):
        service.refund(sale["id"], "another reason", "rf-1")
    with pytest.raises(errors.IdempotencyKeyReused):  # the admin's keys on this seller's money
        service.adjust_balance(seller_id, 1_000, "late", "rf-1")
    assert db_snapshot(database_of(config)) == before


def test_a_refund_above_the_balance_ceiling_is_refused_and_stays_refused_for_its_key(
    service, config
):
    big = Chargebox(dataclasses.replace(service.config, max_amount=MAX_BALANCE))
    seller_id, sale = sold(big, 100_000, 7_000)
    big.adjust_balance(seller_id, MAX_BALANCE - 93_000 - 3_000, "fill up")
    before = db_snapshot(database_of(config))
    with pytest.raises(errors.BalanceLimitExceeded):
        big.refund(sale["id"], "over the top")
    assert db_snapshot(database_of(config)) == before
    with pytest.raises(errors.BalanceLimitExceeded):
        big.refund(sale["id"], "over the top", "rk")
    big.adjust_balance(seller_id, -10_000, "make room")
    with pytest.raises(errors.BalanceLimitExceeded) as replayed:  # the key's outcome is final
        big.refund(sale["id"], "over the top", "rk")
    assert replayed.value.replayed is True
    assert big.refund(sale["id"], "over the top").record["balance_after"] == MAX_BALANCE - 6_000
    assert audited(big, config)[seller_id] == MAX_BALANCE - 6_000


def test_a_suspended_sellers_sale_is_refunded_all_the_same(service, config):
    seller_id, sale = sold(service)
    service.set_status(seller_id, "suspended")
    assert service.refund(sale["id"], "closing the account").record["balance_after"] == 100_000
    assert audited(service, config)[seller_id] == 100_000


def test_the_phones_total_counts_only_the_sales_not_refunded(service, config):
    seller_id = credited_seller(service, 100_000)["id"]
    sales = [service.sell(seller_id, PHONE, amount).record for amount in (1_000, 2_000, 4_000)]
    service.refund(sales[1]["id"], "typo")
    assert service.queries.phone(PHONE)["total_charged"] == 5_000
    assert audited(service, config)[seller_id] == 100_000 - 5_000


# --- the database alone (SQLite; PostgreSQL: test_postgresql_schema.py) ----------------------

_REFUND = (
    "INSERT INTO ledger_entry (seller_id, kind, amount, balance_after, reason, created_at,"
    " refund_of) VALUES (?, 'refund', ?, ?, 'x', '2024-01-01T00:00:00Z', ?)"
)


def _raw_refund(path, seller_id: int, amount: int, sale_id: int) -> None:
    """A refund as ledger.refund writes it, in raw SQL: the entry, then the balance."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        (balance,) = conn.execute(
            "SELECT balance FROM seller WHERE id = ?", (seller_id,)
        ).fetchone()
        conn.execute(_REFUND, (seller_id, amount, balance + amount, sale_id))
        conn.execute("UPDATE seller SET balance = ? WHERE id = ?", (balance + amount, seller_id))
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_the_database_refuses_a_refund_that_does_not_match_its_sale_or_comes_twice(service, config):
    path = database_of(config)
    seller_id, sale = sold(service)
    other = credited_seller(service, 50_000, "Sara")["id"]
    before = db_snapshot(path)
    for who, amount, match in ((seller_id, 7_001, "I4"), (seller_id, 6_999, "I4"),
                               (other, 7_000, "I4"), (seller_id, 7_000, None)):  # fmt: skip
        if match is None:
            _raw_refund(path, who, amount, sale["id"])  # control: the well-formed one goes in
            continue
        with pytest.raises(sqlite3.IntegrityError, match=match):
            _raw_refund(path, who, amount, sale["id"])
        assert db_snapshot(path) == before
    refunded = db_snapshot(path)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE.*refund_of"):
        _raw_refund(path, seller_id, 7_000, sale["id"])
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in ("UPDATE sale SET amount = 1 WHERE id = ?", "DELETE FROM sale WHERE id = ?"):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(statement, (sale["id"],))
    conn.close()
    assert db_snapshot(path) == refunded


# --- the audit ---------------------------------------------------------------------------------


def problems(report: dict) -> list[tuple]:
    return [(p["invariant"], p["entry_id"], p["message"]) for p in report["problems"]]


def test_audit_names_a_refund_that_does_not_match_its_sale(service, config):
    """A refund entry pointed at another sale behind the service's back (the no-update
    trigger dropped) is named by the full audit and by the quick one that starts from a
    checkpoint taken before the refund: I4 for the mismatch, and its broken seal."""
    seller_id = credited_seller(service, 100_000)["id"]
    first = service.sell(seller_id, PHONE, 7_000).record
    other = service.sell(seller_id, PHONE, 3_000).record
    assert audit.audit(service.database, full=True, checkpoint_after=1)["consistent"]
    entry = service.refund(first["id"], "wrong number").record
    quick = audit.audit(service.database)  # verifies the refund, records no checkpoint
    assert quick["consistent"] and not quick["scope"]["full"], quick
    assert quick["scope"]["entries_verified"] == 1 and quick["scope"]["saved_checkpoint"] is None
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
        conn.execute(
            "UPDATE ledger_entry SET refund_of = ? WHERE id = ?", (other["id"], entry["id"])
        )
    for full in (False, True):
        report = audit.audit(service.database, full=full)
        assert report["scope"]["full"] is full
        found = problems(report)
        assert ("I4", entry["id"], "entry points at missing or mismatched sale/request") in found
        assert any(p[0] == "seal" and p[1] == entry["id"] for p in found), found


@pytest.mark.sqlite_only
def test_audit_names_a_sale_refunded_twice_behind_the_unique_index(service, config):
    """With the UNIQUE index on refund_of dropped, a second refund entry that continues the
    chain is named (sale, count) by the full audit and by the quick one."""
    seller_id, sale = sold(service)
    service.refund(sale["id"], "late")
    assert audit.audit(service.database, full=True, checkpoint_after=1)["consistent"]
    path = database_of(config)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP INDEX ledger_entry_refund_of")
    conn.close()
    _raw_refund(path, seller_id, 7_000, sale["id"])
    for full in (False, True):
        messages = [p[2] for p in problems(audit.audit(service.database, full=full))]
        assert f"sale {sale['id']} has 2 refund entries" in messages, messages


# --- over HTTP -------------------------------------------------------------------------------


def test_the_admin_refunds_over_http_and_the_seller_reads_it(server, admin, make_seller):
    seller, api = make_seller(credit=50_000)
    sale = api.post("/api/sales", {"phone": PHONE, "amount": 5_000}).json()
    assert (sale["refunded_at"], sale["refund_entry_id"]) == (None, None)
    path = f"/api/sales/{sale['id']}/refund"
    assert api.post(path, {"reason": "mine"}).status_code == 403
    assert Api(server.url).post(path, {"reason": "x"}).status_code == 401
    assert admin.post(path, {"reason": "x", "amount": 1}).json()["error"]["field"] == "amount"
    assert admin.post(path, {}).json()["error"]["field"] == "reason"
    assert admin.post("/api/sales/999999999/refund", {"reason": "x"}).status_code == 404
    made = admin.post(path, {"reason": "not delivered"}, headers={"Idempotency-Key": "r-1"})
    assert made.status_code == 201, made.text
    entry = made.json()
    assert (entry["kind"], entry["amount"], entry["refund_of"]) == ("refund", 5_000, sale["id"])
    replay = admin.post(path, {"reason": "not delivered"}, headers={"Idempotency-Key": "r-1"})
    assert replay.status_code == 201 and replay.json() == entry
    assert replay.headers["Idempotent-Replayed"] == "true"
    again = admin.post(path, {"reason": "not delivered"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_refunded"
    seen = api.get(f"/api/sales/{sale['id']}").json()
    assert (seen["refunded_at"], seen["refund_entry_id"]) == (entry["created_at"], entry["id"])
    ledger = api.get("/api/ledger").json()["items"]
    assert ledger[-1] == entry and api.get("/api/me").json()["balance"] == 50_000
    _, stranger = make_seller(credit=0, name="stranger")
    assert stranger.get(f"/api/sales/{sale['id']}").status_code == 404
    assert admin.get("/api/audit").json()["consistent"] is True


# --- the race ----------------------------------------------------------------------------------


def refund_once(index, barrier, url, token, sale_id):
    api = Api(url, token)
    api.get("/health")  # the keep-alive connection is open before the race
    barrier.wait()
    response = api.post(f"/api/sales/{sale_id}/refund", {"reason": f"race {index}"})
    api.close()
    return response.status_code, response.json()


@pytest.fixture(params=[1, 2], ids=["1 server process", "2 server processes"])
def race_server(request, tmp_path, new_server):
    """A fresh server of one process, or of two sharing the socket (`--processes 2`)."""
    env = {"CHARGEBOX_PROCESSES": str(request.param)}
    with new_server(tmp_path, threads=THREADS_FOR_HELD_COPIES, env=env) as process:
        yield process


@pytest.mark.parallel
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_50_concurrent_refunds_of_one_sale_refund_it_exactly_once(
    race_server, backend, mode, capsys
):
    """Proves at-most-once under a real race: 50 admin clients, each its own connection,
    released together on a barrier (threads, or 8 spawned processes of threads), refund
    one sale, on a server of one process or of two. Exactly one 201; every other answer is
    409 already_refunded (or a JSON 503, which changed nothing); one refund entry is
    stored, and the books re-added from a fresh connection show the sale's amount given
    back once; the server's full audit is clean."""
    fresh_server = race_server
    admin = fresh_server.admin()
    seller, key = new_seller(admin, f"race-{mode}", credit=100_000)
    api = fresh_server.seller(key)
    sale = api.post("/api/sales", {"phone": PHONE, "amount": 9_000}).json()
    api.close()
    answers = run_parallel(mode, 50, refund_once, fresh_server.url, ADMIN_TOKEN, sale["id"])
    statuses = Counter(status for status, _ in answers)
    with capsys.disabled():
        shape = fresh_server.env["CHARGEBOX_PROCESSES"]
        print(f"\n50 refunds of one sale ({mode}, {backend}, server processes: {shape}):"
              f" {dict(sorted(statuses.items()))}")  # fmt: skip
    assert statuses[201] == 1, statuses
    assert set(statuses) <= {201, 409, 503}, answers
    codes = {body["error"]["code"] for status, body in answers if status != 201}
    assert codes <= {"already_refunded", "unavailable"}, codes
    made = next(body for status, body in answers if status == 201)
    stored = rows_on_disk(
        fresh_server.db_path, "SELECT id, amount FROM ledger_entry WHERE refund_of = ?",
        (sale["id"],),
    )  # fmt: skip
    assert stored == [(made["id"], 9_000)]
    assert reconciled_balances(fresh_server.db_path) == {seller["id"]: 100_000}
    assert admin.get("/api/audit?full=true").json()["consistent"] is True
    admin.close()


@pytest.mark.parallel
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_20_concurrent_copies_of_one_keyed_refund_refund_once_and_all_answer_201(
    fresh_server, mode
):
    """Proves a refund's key holds under a real race: the write lock is held until all 20
    copies are sent (so they meet inside the write); every copy answers 201 with the same
    entry, one of them not as a replay; one refund entry and one key outcome are stored."""
    admin = fresh_server.admin()
    seller, key = new_seller(admin, f"keyed-{mode}", credit=50_000)
    api = fresh_server.seller(key)
    sale = api.post("/api/sales", {"phone": PHONE, "amount": 4_000}).json()
    api.close()
    path, body = f"/api/sales/{sale['id']}/refund", {"reason": "race"}
    with write_lock_held_until_sent(fresh_server.db_path, 20) as sent:
        args = (fresh_server.url, ADMIN_TOKEN, path, body, "refund-race", sent)
        copies = run_parallel(mode, 20, keyed_post, *args)
    assert {status for status, _, _ in copies} == {201}, copies
    assert len({repr(body) for _, body, _ in copies}) == 1, copies
    replays = [replayed for _, _, replayed in copies]
    assert (replays.count(False), replays.count(True)) == (1, 19)
    made = copies[0][1]
    outcomes = rows_on_disk(
        fresh_server.db_path, "SELECT key, entry_id FROM adjustment_record WHERE seller_id = ?",
        (seller["id"],),
    )  # fmt: skip
    assert outcomes == [("refund-race", made["id"])]
    refunds = "SELECT id FROM ledger_entry WHERE refund_of = ?"
    assert rows_on_disk(fresh_server.db_path, refunds, (sale["id"],)) == [(made["id"],)]
    assert reconciled_balances(fresh_server.db_path) == {seller["id"]: 50_000}
    assert admin.get("/api/audit").json()["consistent"] is True
    admin.close()
