"""Admin balance adjustments with an Idempotency-Key: the first outcome of a key is final.

In process on a real SQLite file (`service`), over HTTP against the shared real
server, and as concurrent copies from threads and spawned processes against a
fresh server. "Writes nothing" is two equal `db_snapshot`s; after money moves the
books are re-added from a fresh sqlite3 connection (`reconciled_balances`) and audited.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chargebox import errors
from chargebox.config import MAX_BALANCE
from chargebox.services import Chargebox
from tests.support import (
    ADMIN_TOKEN,
    REFUSED,
    Api,
    credited_seller,
    database_of,
    db_snapshot,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    writable,
)
from tests.workloads import keyed_post, run_parallel, write_lock_held_until_sent

PHONE = "09121234567"
MODES = ("threads", "processes")


def credited(service: Chargebox, amount: int, name: str = "Ali") -> int:
    return credited_seller(service, amount, name)["id"]


def records(db_path: Path) -> list[tuple]:
    """The stored outcomes of adjustment keys: (seller_id, key, entry_id, error_code)."""
    sql = "SELECT seller_id, key, entry_id, error_code FROM adjustment_record ORDER BY id"
    return rows_on_disk(db_path, sql)


def entries(db_path: Path, seller_id: int) -> list[tuple]:
    sql = "SELECT kind, amount FROM ledger_entry WHERE seller_id = ? ORDER BY id"
    return rows_on_disk(db_path, sql, (seller_id,))


def audited(service: Chargebox, config) -> dict[int, int]:
    report = service.audit()
    assert report["consistent"], report["problems"]
    return reconciled_balances(database_of(config))


# --- in process ------------------------------------------------------------------------------


def test_a_keyed_adjustment_happens_once_and_its_replays_write_nothing(service, config):
    seller_id = credited(service, 10_000)
    first = service.adjust_balance(seller_id, 2_500, "caf\u00e9 bonus", "adj-1")
    assert first.replayed is False
    made = first.record
    assert (made["kind"], made["amount"], made["balance_after"]) == ("adjustment", 2_500, 12_500)
    before = db_snapshot(database_of(config))
    for reason in ("caf\u00e9 bonus", "  cafe\u0301 bonus\t"):  # same after trimming and NFC
        again = service.adjust_balance(seller_id, 2_500, reason, "adj-1")
        assert again.replayed is True and again.record == made
    assert service.adjust_balance(seller_id, 2_500, "caf\u00e9 bonus", "adj-1").record == made
    assert db_snapshot(database_of(config)) == before
    assert records(database_of(config)) == [(seller_id, "adj-1", made["id"], None)]
    assert audited(service, config)[seller_id] == 12_500


@pytest.mark.parametrize(
    ("amount", "reason"), [(2_501, "bonus"), (-2_500, "bonus"), (2_500, "bonus!"), (2_500, "Bonus")]
)
def test_the_same_key_with_another_amount_or_reason_is_refused_and_writes_nothing(
    service, config, amount, reason
):
    seller_id = credited(service, 10_000)
    service.adjust_balance(seller_id, 2_500, "bonus", "adj-1")
    before = db_snapshot(database_of(config))
    with pytest.raises(errors.IdempotencyKeyReused) as refused:
        service.adjust_balance(seller_id, amount, reason, "adj-1")
    assert refused.value.field == "Idempotency-Key"
    assert db_snapshot(database_of(config)) == before


@pytest.mark.parametrize(
    ("credit", "amount", "room", "refusal"),
    [
        (1_000, -5_000, 100_000, errors.InsufficientCredit),
        (MAX_BALANCE - 10, 11, -100, errors.BalanceLimitExceeded),
    ],
    ids=["insufficient-credit", "balance-limit"],
)
def test_a_refused_adjustment_stays_refused_after_an_unkeyed_one_makes_room(
    service, config, credit, amount, room, refusal
):
    big = Chargebox(dataclasses.replace(service.config, max_amount=MAX_BALANCE))
    seller_id = credited(big, credit)
    with pytest.raises(refusal) as first:
        big.adjust_balance(seller_id, amount, "refused", "k")
    assert first.value.replayed is False
    assert records(database_of(config)) == [(seller_id, "k", None, refusal.code)]
    big.adjust_balance(seller_id, room, "make room")
    before = db_snapshot(database_of(config))
    with pytest.raises(refusal) as again:
        big.adjust_balance(seller_id, amount, "refused", "k")
    assert again.value.replayed is True and again.value.message == first.value.message
    assert db_snapshot(database_of(config)) == before
    fresh = big.adjust_balance(seller_id, amount, "refused", "k2")
    assert fresh.replayed is False and fresh.record["balance_after"] == credit + room + amount
    assert audited(big, config)[seller_id] == credit + room + amount


def test_an_unknown_seller_does_not_use_up_the_key(service, config):
    ghost = credited(service, 0) + 1
    before = db_snapshot(database_of(config))
    with pytest.raises(errors.NotFound):
        service.adjust_balance(ghost, 1_000, "early", "k")
    assert db_snapshot(database_of(config)) == before
    late, _ = service.create_seller("Late")
    assert late["id"] == ghost  # the seller the key was first tried on now exists
    made = service.adjust_balance(ghost, 1_000, "early", "k")
    assert made.replayed is False and made.record["balance_after"] == 1_000
    assert audited(service, config)[ghost] == 1_000


INVALID = [("amount", v) for v in (0, True, 1.5)] + [("reason", v) for v in ("  ", None, "x" * 501)]
BAD_KEYS = ["", "x" * 256, "tab\there", "new\nline", "del\x7f", "کلید"]  # 1-255 printable ASCII


@pytest.mark.parametrize(("field", "value"), INVALID + [("Idempotency-Key", k) for k in BAD_KEYS])
def test_a_request_refused_as_invalid_writes_nothing_and_does_not_use_up_the_key(
    service, config, field, value
):
    seller_id = credited(service, 10_000)
    before = db_snapshot(database_of(config))
    request = {"amount": 1_000, "reason": "fine", "Idempotency-Key": "k", field: value}
    with pytest.raises(errors.ValidationError) as refused:
        service.adjust_balance(seller_id, *request.values())
    assert refused.value.field == field
    assert db_snapshot(database_of(config)) == before
    assert service.adjust_balance(seller_id, 1_000, "fine", "k").replayed is False


def test_the_same_key_on_two_sellers_makes_two_entries(service, config):
    ali, sara = credited(service, 10_000, "Ali"), credited(service, 10_000, "Sara")
    key = ("~ !" * 100)[:255]  # also the longest key there is
    one = service.adjust_balance(ali, 1_000, "same", key)
    two = service.adjust_balance(sara, 1_000, "same", key)
    assert (one.replayed, two.replayed) == (False, False)
    assert one.record["id"] != two.record["id"] and two.record["seller_id"] == sara
    assert service.adjust_balance(sara, 1_000, "same", key).record == two.record
    assert [row[:2] for row in records(database_of(config))] == [(ali, key), (sara, key)]
    balances = audited(service, config)
    assert (balances[ali], balances[sara]) == (11_000, 11_000)


@pytest.mark.parametrize("sale_first", [True, False], ids=["sale-first", "adjustment-first"])
def test_a_sale_and_an_adjustment_of_one_seller_with_the_same_key_both_happen(
    service, config, sale_first
):
    seller_id = credited(service, 50_000)

    def sell():
        return service.sell(seller_id, PHONE, 10_000, idempotency_key="same")

    def adjust():
        return service.adjust_balance(seller_id, -7_000, "correction", "same")

    first, second = (sell(), adjust()) if sale_first else (adjust(), sell())
    assert (first.replayed, second.replayed) == (False, False)
    sale, entry = (first, second) if sale_first else (second, first)
    assert sell().record == sale.record and adjust().record == entry.record
    assert entry.record["kind"] == "adjustment" and entry.record["amount"] == -7_000
    kinds = sorted(entries(database_of(config), seller_id))
    assert kinds == [("adjustment", -7_000), ("credit", 50_000), ("sale", -10_000)]
    assert audited(service, config)[seller_id] == 33_000


INSERT = (
    "INSERT INTO adjustment_record (seller_id, key, request_hash, entry_id, error_code,"
    " error_message, created_at) VALUES (?, ?, 'h', ?, ?, 'm', 't')"
)
TAMPERING = [  # (statement, its values after the seller id, what the database answers)
    ("UPDATE adjustment_record SET request_hash = 'x' WHERE seller_id = ?", (), "are final"),
    ("UPDATE adjustment_record SET error_code = NULL WHERE seller_id = ?", (), "are final"),
    ("DELETE FROM adjustment_record WHERE seller_id = ?", (), "are final"),
    (INSERT, ("neither", None, None), "CHECK"),
    (INSERT, ("both", 1, "insufficient_credit"), "CHECK"),
    (INSERT, ("", None, "insufficient_credit"), "CHECK"),
    (INSERT, ("k" * 256, None, "insufficient_credit"), "CHECK"),
    (INSERT, ("k", None, "insufficient_credit"), "UNIQUE"),
]
TAMPERING_IDS = ["update", "un-refuse", "delete", "neither", "both", "empty", "256", "same-key"]


def behind_the_back(db_path: Path, sql: str, params: tuple = ()) -> None:
    """One statement on a raw connection of its own, committed if it passes."""
    with writable(db_path) as conn:
        conn.execute(sql, params)


@pytest.mark.parametrize(("sql", "values", "answer"), TAMPERING, ids=TAMPERING_IDS)
def test_the_database_refuses_to_change_or_forge_an_adjustment_outcome(
    service, config, sql, values, answer
):
    seller_id = credited(service, 1_000)
    service.adjust_balance(seller_id, 500, "bonus", "k")
    with pytest.raises(errors.InsufficientCredit):
        service.adjust_balance(seller_id, -5_000, "too much", "k-refused")
    before = db_snapshot(database_of(config))
    with pytest.raises(REFUSED, match=f"(?i){answer}"):
        behind_the_back(database_of(config), sql, (seller_id, *values))
    assert db_snapshot(database_of(config)) == before
    assert audited(service, config)[seller_id] == 1_500


# --- over HTTP against the shared server -------------------------------------------------------


def adjust(admin: Api, seller_id: int, amount: int, reason: str, key: str | None = None):
    headers = {"Idempotency-Key": key} if key is not None else None
    body = {"amount": amount, "reason": reason}
    return admin.post(f"/api/sellers/{seller_id}/adjustments", body, headers=headers)


def test_a_replayed_adjustment_is_201_again_with_the_header_and_the_same_entry(
    server, admin, make_seller
):
    seller, _ = make_seller(credit=10_000)
    first = adjust(admin, seller["id"], 3_000, "bonus", "adj-h1")
    assert first.status_code == 201, first.text
    assert first.headers.get("Idempotent-Replayed") is None
    for reason in ("bonus", "  bonus "):
        again = adjust(admin, seller["id"], 3_000, reason, "adj-h1")
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
    assert entries(server.db_path, seller["id"]) == [("credit", 10_000), ("adjustment", 3_000)]
    assert reconciled_balances(server.db_path)[seller["id"]] == 13_000


def test_a_keyed_decrease_refused_with_409_replays_the_409_after_the_balance_grows(
    server, admin, make_seller
):
    seller, _ = make_seller(credit=1_000)
    refused = adjust(admin, seller["id"], -5_000, "chargeback", "adj-h2")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "insufficient_credit"
    assert refused.headers.get("Idempotent-Replayed") is None
    assert adjust(admin, seller["id"], 10_000, "top up").status_code == 201
    replayed = adjust(admin, seller["id"], -5_000, "chargeback", "adj-h2")
    assert (replayed.status_code, replayed.json()) == (409, refused.json())
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert reconciled_balances(server.db_path)[seller["id"]] == 11_000


def test_the_same_key_with_another_body_is_422_idempotency_key_reused(server, admin, make_seller):
    seller, _ = make_seller(credit=10_000)
    assert adjust(admin, seller["id"], 1_000, "bonus", "adj-h3").status_code == 201
    for amount, reason in [(1_001, "bonus"), (1_000, "another reason")]:
        reused = adjust(admin, seller["id"], amount, reason, "adj-h3")
        assert reused.status_code == 422, reused.text
        error = reused.json()["error"]
        assert (error["code"], error["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert reconciled_balances(server.db_path)[seller["id"]] == 11_000


def test_an_unknown_seller_is_404_and_does_not_use_up_the_key(server, admin):
    before, _ = new_seller(admin, "before-the-ghost")
    ghost = before["id"] + 1
    missing = adjust(admin, ghost, 1_000, "early", "adj-h4")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    late, _ = new_seller(admin, "the-ghost")
    assert late["id"] == ghost  # the seller the key was first tried on now exists
    made = adjust(admin, ghost, 1_000, "early", "adj-h4")
    assert made.status_code == 201, made.text
    assert made.headers.get("Idempotent-Replayed") is None
    assert reconciled_balances(server.db_path)[ghost] == 1_000


# --- concurrent copies against a fresh server ------------------------------------------------


def race(fresh_server, mode: str, credit: int, amount: int, key: str) -> tuple[int, list]:
    """A seller with `credit`, then 20 copies of one keyed adjustment of `amount` at once.

    The test holds the database's write lock until every copy has been sent, so that
    most copies find no outcome yet and queue for the write, where all but one must
    find the outcome of the first (without the lock only a few copies get that far).
    """
    admin = fresh_server.admin()
    seller, _ = new_seller(admin, f"{key}-{mode}", credit=credit)
    path, body = f"/api/sellers/{seller['id']}/adjustments", {"amount": amount, "reason": "race"}
    with write_lock_held_until_sent(fresh_server.db_path, 20) as sent:
        args = (fresh_server.url, ADMIN_TOKEN, path, body, key, sent)
        copies = run_parallel(mode, 20, keyed_post, *args)
    assert len({repr(body) for _, body, _ in copies}) == 1, copies
    replays = [replayed for _, _, replayed in copies]
    assert (replays.count(False), replays.count(True)) == (1, 19)
    assert admin.get("/api/audit").json()["consistent"] is True
    admin.close()
    return seller["id"], copies


@pytest.mark.parallel
@pytest.mark.parametrize("mode", MODES)
def test_20_concurrent_copies_of_one_keyed_adjustment_adjust_once(fresh_server, mode):
    """Proves a key holds under a real race (see `race`): every copy is answered 201 with
    the same entry, one of them not as a replay; one entry and one outcome are stored,
    and the books re-added from a fresh connection show the balance moved once."""
    seller_id, copies = race(fresh_server, mode, 100_000, 7_000, "up")
    assert {status for status, _, _ in copies} == {201}
    entry_id = copies[0][1]["id"]
    assert entries(fresh_server.db_path, seller_id) == [("credit", 100_000), ("adjustment", 7_000)]
    assert records(fresh_server.db_path) == [(seller_id, "up", entry_id, None)]
    assert reconciled_balances(fresh_server.db_path) == {seller_id: 107_000}


@pytest.mark.parallel
@pytest.mark.parametrize("mode", MODES)
def test_20_concurrent_copies_of_an_overdrawing_keyed_decrease_are_all_refused(fresh_server, mode):
    """Proves a refusal is a key's one final outcome under a race (-7,000 against 5,000):
    every copy gets the same 409, one of them not as a replay; one refusal is stored,
    and the books re-added from a fresh connection show nothing moved."""
    seller_id, copies = race(fresh_server, mode, 5_000, -7_000, "down")
    assert {status for status, _, _ in copies} == {409}
    assert copies[0][1]["error"]["code"] == "insufficient_credit"
    assert entries(fresh_server.db_path, seller_id) == [("credit", 5_000)]
    assert records(fresh_server.db_path) == [(seller_id, "down", None, "insufficient_credit")]
    assert reconciled_balances(fresh_server.db_path) == {seller_id: 5_000}
