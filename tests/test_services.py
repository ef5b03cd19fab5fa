"""The use cases of `Chargebox`, each on a real SQLite file (the `service` fixture).

Results are checked through the service and again from a fresh sqlite3
connection, so a test sees what is really on disk. Invariants I1-I5 are those
of the README ("The invariants"); `audit()` must call the books consistent after every flow here.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import random

import peewee
import pytest

from chargebox import idempotency, ledger, models
from chargebox.cli import prepare
from chargebox.clock import now
from chargebox.config import MAX_BALANCE, MAX_PHONE_TOTAL, Config
from chargebox.errors import (
    BalanceLimitExceeded,
    IdempotencyKeyReused,
    InsufficientCredit,
    NotFound,
    NotPending,
    PhoneTotalExceeded,
    ValidationError,
)
from chargebox.queries import Page
from chargebox.services import Chargebox
from tests.support import (
    ADMIN_TOKEN,
    REFUSED,
    credited_seller,
    database_of,
    owner_url,
    reconciled_balances,
    rows_on_disk,
    writable,
)

PHONE = "09121234567"


def balance_on_disk(config, seller_id: int) -> int:
    sql = "SELECT balance FROM seller WHERE id = ?"
    return rows_on_disk(database_of(config), sql, (seller_id,))[0][0]


def ledger_on_disk(config, seller_id: int) -> list[tuple]:
    return rows_on_disk(
        database_of(config),
        "SELECT kind, amount, balance_after FROM ledger_entry WHERE seller_id = ? ORDER BY id",
        (seller_id,),
    )


def counts(config) -> tuple:
    return rows_on_disk(
        database_of(config),
        "SELECT (SELECT COUNT(*) FROM ledger_entry), (SELECT COUNT(*) FROM sale), "
        "(SELECT COUNT(*) FROM phone), (SELECT COUNT(*) FROM idempotency_record), "
        "(SELECT COUNT(*) FROM credit_request)",
    )[0]


def assert_books_consistent(service: Chargebox, config) -> None:
    report = service.audit()
    assert report["consistent"], report["problems"]
    reconciled_balances(database_of(config))  # and I1-I4 re-checked apart from chargebox's code


def all_pages(list_fn, limit: int = 1000, **filters) -> list[dict]:
    items, after_id = [], 0
    while True:
        page = list_fn(Page(limit=limit, after_id=after_id), **filters)
        items.extend(page)
        if len(page) < limit:
            return items
        after_id = page[-1]["id"]


# --- sellers ---------------------------------------------------------------------------------


def test_a_new_seller_starts_at_zero_and_gets_its_key_once(service, config):
    seller, key = service.create_seller("  Ali Store ")
    assert seller["name"] == "Ali Store"
    assert seller["balance"] == 0
    assert service.queries.seller(seller["id"]) == seller
    other, other_key = service.create_seller("Sara")
    assert key != other_key
    assert len(key) >= 32
    assert "api_key" not in service.queries.seller(seller["id"])


@pytest.mark.sqlite_only  # the files themselves
def test_only_the_sha256_of_a_seller_key_is_stored(service, config):
    seller, key = service.create_seller("Ali")
    (row,) = rows_on_disk(
        database_of(config), "SELECT * FROM seller_key WHERE seller_id = ?", (seller["id"],)
    )
    assert hashlib.sha256(key.encode()).hexdigest() in row
    assert not any(isinstance(value, str) and key in value for value in row)
    # Neither the WAL nor, once closing has checkpointed it, the main file holds the key.
    for _moment in ("before checkpoint", "after checkpoint"):
        files = list(database_of(config).parent.glob(database_of(config).name + "*"))
        assert database_of(config) in files
        for path in files:
            assert key.encode() not in path.read_bytes(), path
        service.close()


@pytest.mark.parametrize("name", ["", "   ", None, 7, "x" * 201, "a\x00b", "a\nb"], ids=repr)
def test_a_seller_without_a_proper_name_is_refused_and_not_created(service, config, name):
    with pytest.raises(ValidationError) as refused:
        service.create_seller(name)
    assert refused.value.field == "name"
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM seller") == [(0,)]


def test_an_unknown_seller_is_not_found(service):
    with pytest.raises(NotFound):
        service.queries.seller(12345)


# --- credit requests -------------------------------------------------------------------------


def test_a_credit_request_is_pending_and_moves_no_money(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 50_000).record
    assert request["status"] == "pending"
    assert request["decided_at"] is None
    assert request["amount"] == 50_000
    assert service.queries.credit_request(request["id"]) == request
    assert balance_on_disk(config, seller["id"]) == 0
    assert ledger_on_disk(config, seller["id"]) == []


@pytest.mark.parametrize("amount", [0, -5, 1.0, "5000", True, None, 1_000_000_001], ids=repr)
def test_a_credit_request_with_a_bad_amount_is_refused_and_not_recorded(service, config, amount):
    seller, _ = service.create_seller("Ali")
    with pytest.raises(ValidationError) as refused:
        service.request_credit(seller["id"], amount)
    assert refused.value.field == "amount"
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM credit_request") == [(0,)]


def test_approving_credits_the_seller_exactly_once(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 70_000).record
    approved = service.approve_credit_request(request["id"])
    assert approved["status"] == "approved"
    assert approved["decided_at"] is not None
    assert service.queries.credit_request(request["id"]) == approved
    assert balance_on_disk(config, seller["id"]) == 70_000
    assert ledger_on_disk(config, seller["id"]) == [("credit", 70_000, 70_000)]
    assert rows_on_disk(database_of(config), "SELECT credit_request_id FROM ledger_entry") == [
        (request["id"],)
    ]


def test_a_request_made_by_a_clock_ahead_is_decided_when_it_was_made_not_before(
    service, config, monkeypatch
):
    """After the clock is set back (NTP), or on a host whose clock is behind the one that
    took the request, it was decided, and its seller credited, before it was made."""
    from tests.test_refunds import clock_ahead

    seller, _ = service.create_seller("Ali")
    clock_ahead(monkeypatch, datetime.timedelta(hours=1))
    approved = service.request_credit(seller["id"], 5_000).record
    rejected = service.request_credit(seller["id"], 6_000).record
    monkeypatch.undo()
    decided = service.approve_credit_request(approved["id"])
    assert decided["decided_at"] == approved["created_at"] > now()
    entry = service.queries.ledger(Page(), seller["id"])[0]  # the credit
    assert (entry["credit_request_id"], entry["created_at"]) == (
        approved["id"],
        decided["decided_at"],
    )
    assert service.reject_credit_request(rejected["id"])["decided_at"] == rejected["created_at"]
    assert service.audit(full=True)["consistent"]


def test_approving_twice_credits_once(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 70_000).record
    service.approve_credit_request(request["id"])
    with pytest.raises(NotPending) as refused:
        service.approve_credit_request(request["id"])
    assert refused.value.code == "not_pending"
    assert balance_on_disk(config, seller["id"]) == 70_000
    assert len(ledger_on_disk(config, seller["id"])) == 1


def test_a_rejected_request_cannot_be_approved_and_credits_nothing(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 70_000).record
    rejected = service.reject_credit_request(request["id"])
    assert rejected["status"] == "rejected"
    assert rejected["decided_at"] is not None
    with pytest.raises(NotPending):
        service.approve_credit_request(request["id"])
    assert service.queries.credit_request(request["id"])["status"] == "rejected"
    assert balance_on_disk(config, seller["id"]) == 0
    assert ledger_on_disk(config, seller["id"]) == []


def test_an_approved_request_cannot_be_rejected_and_keeps_its_credit(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 70_000).record
    approved = service.approve_credit_request(request["id"])
    with pytest.raises(NotPending):
        service.reject_credit_request(request["id"])
    with pytest.raises(NotPending):
        service.reject_credit_request(request["id"])
    assert service.queries.credit_request(request["id"]) == approved
    assert balance_on_disk(config, seller["id"]) == 70_000


def test_rejecting_twice_is_not_pending(service):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 70_000).record
    first = service.reject_credit_request(request["id"])
    with pytest.raises(NotPending):
        service.reject_credit_request(request["id"])
    assert service.queries.credit_request(request["id"]) == first


def test_deciding_an_unknown_request_is_not_found_and_changes_nothing(service, config):
    seller = credited_seller(service, 10_000)
    before = counts(config)
    with pytest.raises(NotFound):
        service.approve_credit_request(999)
    with pytest.raises(NotFound):
        service.reject_credit_request(999)
    with pytest.raises(NotFound):
        service.queries.credit_request(999)
    assert counts(config) == before
    assert balance_on_disk(config, seller["id"]) == 10_000


def test_a_credit_past_the_balance_ceiling_is_refused_and_the_request_stays_pending(
    service, config
):
    big = Chargebox(dataclasses.replace(service.config, max_amount=MAX_BALANCE))
    seller = credited_seller(big, MAX_BALANCE)
    assert seller["balance"] == MAX_BALANCE
    request = big.request_credit(seller["id"], 1).record
    before = counts(config)
    with pytest.raises(BalanceLimitExceeded):
        big.approve_credit_request(request["id"])
    assert big.queries.credit_request(request["id"])["status"] == "pending"
    assert counts(config) == before
    assert balance_on_disk(config, seller["id"]) == MAX_BALANCE
    assert big.reject_credit_request(request["id"])["status"] == "rejected"
    assert_books_consistent(big, config)


# --- adjustments -----------------------------------------------------------------------------


def test_an_adjustment_moves_the_balance_either_way_with_a_ledger_entry(service, config):
    seller = credited_seller(service, 10_000)
    up = service.adjust_balance(seller["id"], 2_500, "  bonus ").record
    assert (up["kind"], up["amount"], up["balance_after"], up["reason"]) == (
        "adjustment",
        2_500,
        12_500,
        "bonus",
    )
    down = service.adjust_balance(seller["id"], -12_000, "chargeback").record
    assert (down["amount"], down["balance_after"]) == (-12_000, 500)
    assert balance_on_disk(config, seller["id"]) == 500
    assert ledger_on_disk(config, seller["id"]) == [
        ("credit", 10_000, 10_000),
        ("adjustment", 2_500, 12_500),
        ("adjustment", -12_000, 500),
    ]
    assert_books_consistent(service, config)


def test_an_adjustment_down_to_exactly_zero_is_allowed(service, config):
    seller = credited_seller(service, 10_000)
    assert service.adjust_balance(seller["id"], -10_000, "close").record["balance_after"] == 0
    assert balance_on_disk(config, seller["id"]) == 0


def test_an_adjustment_below_zero_is_refused_and_records_nothing(service, config):
    seller = credited_seller(service, 10_000)
    before = counts(config)
    with pytest.raises(InsufficientCredit) as refused:
        service.adjust_balance(seller["id"], -10_001, "too much")
    assert refused.value.code == "insufficient_credit"
    assert counts(config) == before
    assert balance_on_disk(config, seller["id"]) == 10_000


def test_an_adjustment_past_the_balance_ceiling_is_refused_and_records_nothing(service, config):
    big = Chargebox(dataclasses.replace(service.config, max_amount=MAX_BALANCE))
    seller = credited_seller(big, MAX_BALANCE - 10)
    big.adjust_balance(seller["id"], 10, "to the ceiling")
    before = counts(config)
    with pytest.raises(BalanceLimitExceeded):
        big.adjust_balance(seller["id"], 1, "over the ceiling")
    assert counts(config) == before
    assert balance_on_disk(config, seller["id"]) == MAX_BALANCE
    assert_books_consistent(big, config)


@pytest.mark.parametrize(
    "amount", [0, 1.5, "-5", False, None, 1_000_000_001, -1_000_000_001], ids=repr
)
def test_an_adjustment_with_a_bad_amount_is_refused(service, config, amount):
    seller = credited_seller(service, 10_000)
    with pytest.raises(ValidationError) as refused:
        service.adjust_balance(seller["id"], amount, "why")
    assert refused.value.field == "amount"
    assert len(ledger_on_disk(config, seller["id"])) == 1


@pytest.mark.parametrize("reason", ["", "  ", None, 5, "x" * 501], ids=repr)
def test_an_adjustment_needs_a_reason(service, config, reason):
    seller = credited_seller(service, 10_000)
    with pytest.raises(ValidationError) as refused:
        service.adjust_balance(seller["id"], 1_000, reason)
    assert refused.value.field == "reason"
    assert balance_on_disk(config, seller["id"]) == 10_000


def test_adjusting_an_unknown_seller_is_not_found_and_records_nothing(service, config):
    before = counts(config)
    with pytest.raises(NotFound):
        service.adjust_balance(4242, 1_000, "ghost")
    assert counts(config) == before


# --- sales -----------------------------------------------------------------------------------


def test_a_sale_debits_the_balance_and_records_sale_entry_and_phone_total(service, config):
    seller = credited_seller(service, 100_000)
    result = service.sell(seller["id"], "+98 912 123 4567", 30_000)
    assert result.replayed is False
    sale = result.record
    assert (sale["seller_id"], sale["phone"], sale["amount"], sale["balance_after"]) == (
        seller["id"],
        PHONE,
        30_000,
        70_000,
    )
    assert service.queries.sale(sale["id"]) == sale
    assert service.queries.seller(seller["id"])["balance"] == 70_000
    assert balance_on_disk(config, seller["id"]) == 70_000
    assert ledger_on_disk(config, seller["id"])[-1] == ("sale", -30_000, 70_000)
    assert rows_on_disk(
        database_of(config), "SELECT sale_id FROM ledger_entry WHERE kind = 'sale'"
    ) == [(sale["id"],)]
    assert rows_on_disk(database_of(config), "SELECT number, total_charged FROM phone") == [
        (PHONE, 30_000)
    ]
    service.sell(seller["id"], "۰۹۱۲۱۲۳۴۵۶۷", 5_000)
    assert rows_on_disk(database_of(config), "SELECT number, total_charged FROM phone") == [
        (PHONE, 35_000)
    ]
    assert_books_consistent(service, config)


def test_a_sale_past_its_numbers_64_bit_total_is_refused_and_records_nothing(service, config):
    """With CHARGEBOX_MAX_AMOUNT at 10^15, 9,224 sales to one number pass its total past
    2^63 - 1: the database refused the write (SQLite's CHECK that it is an integer,
    PostgreSQL's bigint) and the sale answered 500, its key unusable (hostile review,
    s36). Refused before anything is written now, in code as in the database; the key is
    not used up."""
    big = Chargebox(dataclasses.replace(service.config, max_amount=MAX_BALANCE))
    seller = credited_seller(big, 10_000)
    big.sell(seller["id"], PHONE, 1_000)
    with writable(database_of(config)) as conn:  # as if 9,223 sales of 10^15 were made
        conn.execute("UPDATE phone SET total_charged = ? WHERE number = ?",
                     (MAX_PHONE_TOTAL - 500, PHONE))  # fmt: skip
    before = counts(config)
    for key in (None, "past-the-total"):
        with pytest.raises(PhoneTotalExceeded):
            big.sell(seller["id"], PHONE, 501, idempotency_key=key)
    assert counts(config) == before and balance_on_disk(config, seller["id"]) == 9_000
    made = big.sell(seller["id"], PHONE, 500, idempotency_key="past-the-total").record
    assert made["balance_after"] == 8_500
    assert rows_on_disk(database_of(config), "SELECT total_charged FROM phone") == [
        (MAX_PHONE_TOTAL,)
    ]
    big.close()


def test_a_sale_of_the_whole_balance_leaves_zero(service, config):
    seller = credited_seller(service, 5_000)
    assert service.sell(seller["id"], PHONE, 5_000).record["balance_after"] == 0
    assert balance_on_disk(config, seller["id"]) == 0


def test_a_sale_over_the_balance_is_refused_and_records_nothing(service, config):
    seller = credited_seller(service, 5_000)
    before = counts(config)
    with pytest.raises(InsufficientCredit) as refused:
        service.sell(seller["id"], PHONE, 5_001)
    assert refused.value.replayed is False
    assert counts(config) == before
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM phone") == [(0,)]
    assert balance_on_disk(config, seller["id"]) == 5_000


@pytest.mark.parametrize(
    ("phone", "amount", "field"),
    [
        ("02112345678", 1_000, "phone"),
        (None, 1_000, "phone"),
        (PHONE, 0, "amount"),
        (PHONE, 1_000.0, "amount"),
        (PHONE, "1000", "amount"),
        (PHONE, True, "amount"),
    ],
)
def test_a_sale_with_a_bad_field_is_refused_and_records_nothing(
    service, config, phone, amount, field
):
    seller = credited_seller(service, 5_000)
    before = counts(config)
    with pytest.raises(ValidationError) as refused:
        service.sell(seller["id"], phone, amount)
    assert refused.value.field == field
    assert counts(config) == before


# --- idempotent sales ------------------------------------------------------------------------


def test_a_replayed_sale_returns_the_same_sale_and_charges_once(service, config):
    seller = credited_seller(service, 50_000)
    first = service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
    again = service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
    third = service.sell(seller["id"], "0912-123-4567", 10_000, idempotency_key="order-1")
    assert first.replayed is False
    assert again.replayed is True and third.replayed is True
    assert again.record == first.record == third.record
    assert balance_on_disk(config, seller["id"]) == 40_000
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM sale") == [(1,)]
    assert rows_on_disk(database_of(config), "SELECT total_charged FROM phone") == [(10_000,)]
    assert_books_consistent(service, config)


@pytest.mark.parametrize(("phone", "amount"), [(PHONE, 10_001), ("09351234567", 10_000)])
def test_the_same_key_with_a_different_body_is_refused_and_charges_nothing(
    service, config, phone, amount
):
    seller = credited_seller(service, 50_000)
    service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
    before = counts(config)
    with pytest.raises(IdempotencyKeyReused) as refused:
        service.sell(seller["id"], phone, amount, idempotency_key="order-1")
    assert refused.value.code == "idempotency_key_reused"
    assert counts(config) == before
    assert balance_on_disk(config, seller["id"]) == 40_000


def test_a_key_refused_for_insufficient_credit_stays_refused_after_a_credit(service, config):
    seller = credited_seller(service, 1_000)
    with pytest.raises(InsufficientCredit) as first:
        service.sell(seller["id"], PHONE, 5_000, idempotency_key="k")
    assert first.value.replayed is False
    service.approve_credit_request(service.request_credit(seller["id"], 100_000).record["id"])
    with pytest.raises(InsufficientCredit) as again:
        service.sell(seller["id"], PHONE, 5_000, idempotency_key="k")
    assert again.value.replayed is True
    assert again.value.message == first.value.message
    assert balance_on_disk(config, seller["id"]) == 101_000
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM sale") == [(0,)]
    fresh = service.sell(seller["id"], PHONE, 5_000, idempotency_key="k2")
    assert fresh.replayed is False and fresh.record["balance_after"] == 96_000


def looks_before_a_sale(service) -> bool:
    """Whether a keyed sale looks for its key before it writes: only without a group
    writer (with one, its batch looks for the keys of all its sales in one read)."""
    return service.database.writer is None


def hide_the_first_look(monkeypatch, database) -> list:
    """Make `once`'s look outside the write miss once, as when the first copy commits
    on another server just after it: then only the write itself can find the key. A
    look after the write (its replay) is never hidden."""
    real, hidden, wrote = idempotency.earlier, [], []
    real_write = database.write

    def write(*args, **kwargs):
        wrote.append(True)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(database, "write", write)

    def earlier(reader, *args):
        if reader is database and not hidden and not wrote:
            hidden.append(args)
            return None
        return real(reader, *args)

    monkeypatch.setattr(idempotency, "earlier", earlier)
    return hidden


def test_a_copy_that_missed_the_first_outcome_outside_the_write_sells_nothing_more(
    service, config, monkeypatch
):
    """Without a group writer a keyed sale looks for its key before the write and again
    inside it: a copy that missed the first look (the first copy committed just after
    it) is found by the second. With one (the default), a sale does not look before the
    write: its batch looks (PostgreSQL: once the seller is held; the UNIQUE race is
    test_postgresql_sale_batches.py's). Either way the copy sells nothing more and
    replays the first sale."""
    seller = credited_seller(service, 50_000)
    first = service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
    hidden = hide_the_first_look(monkeypatch, service.database)
    again = service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
    assert (again.record, again.replayed) == (first.record, True)
    assert bool(hidden) == looks_before_a_sale(service)
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM sale") == [(1,)]
    assert balance_on_disk(config, seller["id"]) == 40_000
    assert_books_consistent(service, config)


def test_without_a_group_writer_a_copy_that_missed_the_first_look_is_found_inside(
    tmp_path, monkeypatch
):
    """SQLite without group commit: a keyed sale looks for its key before the write and
    again inside it (idempotency._first); a copy whose first look missed (its first copy
    committed just after) is found by the second and replays."""
    config = prepare(Config(db_path=tmp_path / "cb.db", admin_token=ADMIN_TOKEN,
                            group_commit=False))  # fmt: skip
    service = Chargebox(config)
    try:
        seller = credited_seller(service, 50_000)
        first = service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
        hidden = hide_the_first_look(monkeypatch, service.database)
        again = service.sell(seller["id"], PHONE, 10_000, idempotency_key="order-1")
        assert hidden  # the look before the write was made, and missed
        assert (again.record, again.replayed) == (first.record, True)
        assert balance_on_disk(config, seller["id"]) == 40_000
    finally:
        service.close()


def test_a_copy_that_missed_a_refusal_outside_the_write_is_refused_the_same(
    service, config, monkeypatch
):
    seller = credited_seller(service, 1_000)
    with pytest.raises(InsufficientCredit) as first:
        service.sell(seller["id"], PHONE, 5_000, idempotency_key="k")
    service.approve_credit_request(service.request_credit(seller["id"], 100_000).record["id"])
    hidden = hide_the_first_look(monkeypatch, service.database)
    with pytest.raises(InsufficientCredit) as again:
        service.sell(seller["id"], PHONE, 5_000, idempotency_key="k")
    assert again.value.replayed is True
    assert bool(hidden) == looks_before_a_sale(service)
    assert again.value.message == first.value.message
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM sale") == [(0,)]
    assert balance_on_disk(config, seller["id"]) == 101_000


def test_a_sale_refused_before_execution_does_not_use_up_its_key(service, config):
    seller = credited_seller(service, 50_000)
    with pytest.raises(ValidationError):
        service.sell(seller["id"], "not a phone", 10_000, idempotency_key="k")
    with pytest.raises(ValidationError):
        service.sell(seller["id"], PHONE, -1, idempotency_key="k")
    result = service.sell(seller["id"], PHONE, 10_000, idempotency_key="k")
    assert result.replayed is False
    assert balance_on_disk(config, seller["id"]) == 40_000


def test_idempotency_keys_are_scoped_to_their_seller(service, config):
    ali = credited_seller(service, 50_000, "Ali")
    sara = credited_seller(service, 50_000, "Sara")
    ali_sale = service.sell(ali["id"], PHONE, 10_000, idempotency_key="shared")
    sara_sale = service.sell(sara["id"], "09351234567", 20_000, idempotency_key="shared")
    assert sara_sale.replayed is False
    assert sara_sale.record["id"] != ali_sale.record["id"]
    assert sara_sale.record["seller_id"] == sara["id"]
    same_body = service.sell(sara["id"], PHONE, 10_000, idempotency_key="ali-only")
    assert same_body.replayed is False
    assert balance_on_disk(config, ali["id"]) == 40_000
    assert balance_on_disk(config, sara["id"]) == 20_000


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "کلید", "new\nline"], ids=repr)
def test_a_malformed_idempotency_key_is_refused_before_anything_happens(service, config, key):
    seller = credited_seller(service, 50_000)
    before = counts(config)
    with pytest.raises(ValidationError) as refused:
        service.sell(seller["id"], PHONE, 1_000, idempotency_key=key)
    assert refused.value.field == "Idempotency-Key"
    assert counts(config) == before


def test_an_idempotency_key_of_255_printable_characters_is_accepted(service):
    seller = credited_seller(service, 50_000)
    key = ("~ !" * 100)[:255]
    assert service.sell(seller["id"], PHONE, 1_000, idempotency_key=key).replayed is False
    assert service.sell(seller["id"], PHONE, 1_000, idempotency_key=key).replayed is True


# --- lists and phones ------------------------------------------------------------------------


def test_lists_page_by_cursor_in_id_order(service):
    seller, _ = service.create_seller("Ali")
    made = [service.request_credit(seller["id"], 1_000 * (i + 1)).record for i in range(7)]
    first = service.queries.credit_requests(Page(limit=3))
    second = service.queries.credit_requests(Page(limit=3, after_id=first[-1]["id"]))
    third = service.queries.credit_requests(Page(limit=3, after_id=second[-1]["id"]))
    assert [len(first), len(second), len(third)] == [3, 3, 1]
    assert first + second + third == made
    assert service.queries.credit_requests(Page(after_id=made[-1]["id"])) == []
    assert service.queries.credit_requests(Page()) == made


def test_the_default_page_holds_a_hundred_items(service):
    sellers = [service.create_seller(f"Ali {n}")[0] for n in range(11)]
    for n in range(101):  # spread over 11 sellers: each stays within its cap of 10 pending
        service.request_credit(sellers[n % 11]["id"], 1_000)
    assert len(service.queries.credit_requests(Page())) == 100
    assert len(service.queries.credit_requests(Page(limit=1000))) == 101


def test_credit_requests_filter_by_status_and_seller(service):
    ali, _ = service.create_seller("Ali")
    sara, _ = service.create_seller("Sara")
    a1 = service.request_credit(ali["id"], 1_000).record
    a2 = service.request_credit(ali["id"], 2_000).record
    s1 = service.request_credit(sara["id"], 3_000).record
    s2 = service.request_credit(sara["id"], 4_000).record
    service.approve_credit_request(a1["id"])
    service.reject_credit_request(s1["id"])

    def ids(**filters):
        return [r["id"] for r in service.queries.credit_requests(Page(), **filters)]

    assert ids(seller_id=ali["id"]) == [a1["id"], a2["id"]]
    assert ids(status="pending") == [a2["id"], s2["id"]]
    assert ids(status="approved") == [a1["id"]]
    assert ids(status="rejected", seller_id=sara["id"]) == [s1["id"]]
    assert ids(status="rejected", seller_id=ali["id"]) == []
    with pytest.raises(ValidationError) as refused:
        service.queries.credit_requests(Page(), status="done")
    assert refused.value.field == "status"


def test_sales_and_ledger_list_per_seller_and_page(service):
    ali = credited_seller(service, 100_000, "Ali")
    sara = credited_seller(service, 100_000, "Sara")
    ali_sales = [service.sell(ali["id"], PHONE, 1_000 + i).record for i in range(5)]
    sara_sales = [service.sell(sara["id"], "09351234567", 2_000).record for _ in range(2)]
    assert service.queries.sales(Page(), seller_id=ali["id"]) == ali_sales
    assert service.queries.sales(Page(), seller_id=sara["id"]) == sara_sales
    assert all_pages(service.queries.sales, limit=2) == sorted(
        ali_sales + sara_sales, key=lambda s: s["id"]
    )
    page = service.queries.sales(Page(limit=2, after_id=ali_sales[1]["id"]), seller_id=ali["id"])
    assert page == ali_sales[2:4]

    entries = service.queries.ledger(Page(), seller_id=ali["id"])
    assert [e["kind"] for e in entries] == ["credit"] + ["sale"] * 5
    assert [e["sale_id"] for e in entries[1:]] == [s["id"] for s in ali_sales]
    assert entries[-1]["balance_after"] == ali_sales[-1]["balance_after"]
    assert all_pages(service.queries.ledger, limit=3) == service.queries.ledger(Page())
    assert len(service.queries.ledger(Page())) == 9


def test_sellers_list_with_their_balances(service):
    ali = credited_seller(service, 10_000, "Ali")
    sara = credited_seller(service, 0, "Sara")
    listed = service.queries.sellers(Page())
    assert [(s["id"], s["name"], s["balance"]) for s in listed] == [
        (ali["id"], "Ali", 10_000),
        (sara["id"], "Sara", 0),
    ]
    assert service.queries.sellers(Page(limit=1, after_id=ali["id"])) == [sara]


def test_registering_a_phone_stores_its_normal_form_once(service, config):
    phone, created = service.register_phone("+98 912 123 4567")
    assert created is True
    assert (phone["number"], phone["total_charged"]) == (PHONE, 0)
    again, created_again = service.register_phone("۰۹۱۲۱۲۳۴۵۶۷")
    assert created_again is False
    assert again == phone
    assert service.queries.phones(Page()) == [phone]


def test_a_sale_to_a_registered_phone_adds_to_its_total(service):
    seller = credited_seller(service, 10_000)
    phone, _ = service.register_phone(PHONE)
    service.sell(seller["id"], PHONE, 3_000)
    service.sell(seller["id"], "09351234567", 1_000)
    listed = service.queries.phones(Page())
    assert [(p["id"], p["number"], p["total_charged"]) for p in listed] == [
        (phone["id"], PHONE, 3_000),
        (listed[1]["id"], "09351234567", 1_000),
    ]
    assert service.queries.phones(Page(limit=1, after_id=phone["id"]))[0]["number"] == "09351234567"


@pytest.mark.parametrize("number", ["02112345678", "", None, 9121234567, "०९१२१२३४५६७"], ids=repr)
def test_registering_a_phone_that_is_not_a_mobile_is_refused(service, config, number):
    with pytest.raises(ValidationError) as refused:
        service.register_phone(number)
    assert refused.value.field == "number"
    assert rows_on_disk(database_of(config), "SELECT COUNT(*) FROM phone") == [(0,)]


# --- audit -----------------------------------------------------------------------------------


def test_the_audit_is_consistent_after_a_mixed_flow(service, config):
    ali = credited_seller(service, 100_000, "Ali")
    sara, _ = service.create_seller("Sara")
    pending = service.request_credit(sara["id"], 40_000).record
    rejected = service.request_credit(sara["id"], 9_000).record
    service.reject_credit_request(rejected["id"])
    service.sell(ali["id"], PHONE, 25_000)
    service.sell(ali["id"], PHONE, 25_000, idempotency_key="a")
    service.sell(ali["id"], PHONE, 25_000, idempotency_key="a")
    with pytest.raises(InsufficientCredit):
        service.sell(sara["id"], PHONE, 1_000, idempotency_key="a")
    service.approve_credit_request(pending["id"])
    service.sell(sara["id"], "09351234567", 15_000)
    service.adjust_balance(ali["id"], -10_000, "refund")
    service.adjust_balance(sara["id"], 500, "goodwill")
    with pytest.raises(InsufficientCredit):
        service.adjust_balance(ali["id"], -50_000, "too much")

    report = service.audit()
    assert report["consistent"] is True
    assert report["problems"] == [] and report["problem_count"] == 0
    assert report["sellers"] == [
        {"seller_id": ali["id"], "balance": 40_000, "ledger_sum": 40_000, "consistent": True},
        {"seller_id": sara["id"], "balance": 25_500, "ledger_sum": 25_500, "consistent": True},
    ]
    assert report["totals"] == {
        "sellers": 2,
        "ledger_entries": 7,
        "sales": 3,
        "balance_sum": 65_500,
    }
    assert_books_consistent(service, config)


def test_the_audit_reports_a_balance_that_the_ledger_does_not_explain(service, config):
    """The database refuses such a balance, so the tamperer (holding the file) first
    drops the trigger that guards it; the audit reports both the balance and the
    missing trigger."""
    ali = credited_seller(service, 10_000)
    with writable(database_of(config)) as conn:
        with pytest.raises(REFUSED, match="I2"):
            conn.execute("UPDATE seller SET balance = 9000 WHERE id = ?", (ali["id"],))
        on_table = " ON seller" if conn.postgresql else ""
        conn.execute("DROP TRIGGER seller_balance_follows_ledger" + on_table)
        conn.execute("UPDATE seller SET balance = 9000 WHERE id = ?", (ali["id"],))
    assert balance_on_disk(config, ali["id"]) == 9_000
    report = service.audit()
    assert report["consistent"] is False
    assert report["sellers"] == [
        {"seller_id": ali["id"], "balance": 9_000, "ledger_sum": 10_000, "consistent": False}
    ]
    problems = {(p["invariant"], p["seller_id"], p["message"]) for p in report["problems"]}
    assert problems == {
        ("I2", ali["id"], "balance 9000 != ledger sum 10000"),
        ("I5", None, "schema trigger seller_balance_follows_ledger is missing or changed"),
    }


# --- the ORM cannot move money ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def models_bound_to_the_service(request):
    """The peewee models belong to no database; these tests use them as a careless
    script would, on the service's own database."""
    if "service" not in request.fixturenames:
        yield
        return
    service = request.getfixturevalue("service")
    if service.config.db_url:
        # Through peewee 4's own psycopg 3 support, as the schema's owner: the service's
        # role may not even try these UPDATEs (test_postgresql_init), the schema refuses them.
        careless = peewee.PostgresqlDatabase(owner_url(service.config.db_url))
    else:
        careless = service.database.peewee
    with careless.bind_ctx(models.ALL_MODELS):
        yield
    careless.close()


def approved_request(service):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 80_000).record
    service.approve_credit_request(request["id"])
    return seller, request


def test_re_saving_the_approved_request_through_the_orm_credits_nothing_more(service, config):
    seller, request = approved_request(service)
    before = (balance_on_disk(config, seller["id"]), ledger_on_disk(config, seller["id"]))
    loaded = models.CreditRequest.get_by_id(request["id"])
    assert loaded.status == "approved"
    assert loaded.save() == 1
    loaded.save(force_insert=False)
    assert (balance_on_disk(config, seller["id"]), ledger_on_disk(config, seller["id"])) == before
    assert before == (80_000, [("credit", 80_000, 80_000)])
    assert_books_consistent(service, config)


@pytest.mark.parametrize("decided_at", ["keep", None], ids=["decided_at-kept", "decided_at-null"])
def test_setting_an_approved_request_back_to_pending_through_the_orm_is_refused(
    service, config, decided_at
):
    seller, request = approved_request(service)
    loaded = models.CreditRequest.get_by_id(request["id"])
    loaded.status = "pending"
    if decided_at is None:
        loaded.decided_at = None
    with pytest.raises(peewee.IntegrityError):
        loaded.save()
    assert service.queries.credit_request(request["id"])["status"] == "approved"
    with pytest.raises(NotPending):
        service.approve_credit_request(request["id"])
    assert balance_on_disk(config, seller["id"]) == 80_000


def test_a_stale_pending_object_saved_after_approval_is_refused(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 80_000).record
    stale = models.CreditRequest.get_by_id(request["id"])
    assert (stale.status, stale.decided_at) == ("pending", None)
    service.approve_credit_request(request["id"])
    with pytest.raises(peewee.IntegrityError):
        stale.save()
    assert service.queries.credit_request(request["id"])["status"] == "approved"
    with pytest.raises(NotPending):
        service.approve_credit_request(request["id"])
    assert balance_on_disk(config, seller["id"]) == 80_000
    assert len(ledger_on_disk(config, seller["id"])) == 1


def test_changing_the_amount_of_an_approved_request_through_the_orm_is_refused(service, config):
    seller, request = approved_request(service)
    loaded = models.CreditRequest.get_by_id(request["id"])
    loaded.amount = 1_000_000
    with pytest.raises(peewee.IntegrityError):
        loaded.save()
    assert service.queries.credit_request(request["id"])["amount"] == 80_000
    assert_books_consistent(service, config)


def test_a_stale_seller_object_saved_after_a_sale_is_refused_and_the_sale_stands(service, config):
    """The ORM lost update: a Seller loaded before a sale and saved after it would write
    the old balance back over the sale's debit. The database refuses it (I2: the
    balance may only land on the newest ledger entry), so the debit stands."""
    seller = credited_seller(service, 10_000)
    stale = models.Seller.get_by_id(seller["id"])
    assert stale.balance == 10_000
    service.sell(seller["id"], PHONE, 3_000)
    stale.name = "Ali renamed"
    with pytest.raises(peewee.IntegrityError, match="I2"):
        stale.save()
    assert balance_on_disk(config, seller["id"]) == 7_000
    assert service.queries.seller(seller["id"])["name"] == "Ali"
    assert ledger_on_disk(config, seller["id"]) == [
        ("credit", 10_000, 10_000),
        ("sale", -3_000, 7_000),
    ]
    assert_books_consistent(service, config)


def test_a_fresh_seller_object_saved_through_the_orm_keeps_its_balance(service, config):
    """Control: saving an up-to-date Seller (no balance change) is accepted."""
    seller = credited_seller(service, 10_000)
    service.sell(seller["id"], PHONE, 3_000)
    loaded = models.Seller.get_by_id(seller["id"])
    loaded.name = "Ali renamed"
    assert loaded.save() == 1
    assert service.queries.seller(seller["id"])["name"] == "Ali renamed"
    assert balance_on_disk(config, seller["id"]) == 7_000
    assert_books_consistent(service, config)


def test_approving_through_the_orm_behind_the_ledgers_back_is_caught_by_the_audit(service):
    """The database cannot see a missing entry at UPDATE time; audit() is the second check."""
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 80_000).record
    loaded = models.CreditRequest.get_by_id(request["id"])
    loaded.status, loaded.decided_at = "approved", now()
    loaded.save()
    report = service.audit()
    assert report["consistent"] is False
    assert [p["invariant"] for p in report["problems"]] == ["I4"]
    assert service.queries.seller(seller["id"])["balance"] == 0


# --- money moves only inside a write ----------------------------------------------------------


def test_a_write_used_after_its_transaction_ended_raises_and_moves_nothing(service, config):
    seller = credited_seller(service, 50_000)
    request = service.request_credit(seller["id"], 1_000).record
    escaped = service.database.write(lambda write: write)  # kept beyond its transaction
    before = counts(config)
    with pytest.raises(AssertionError, match="ended"):
        ledger.adjust(escaped, seller["id"], 1_000, "no tx", now())
    with pytest.raises(AssertionError, match="ended"):
        ledger.sell(escaped, seller["id"], PHONE, 1_000, now())
    with pytest.raises(AssertionError, match="ended"):
        ledger.approve_credit_request(escaped, request["id"], now())
    assert counts(config) == before
    assert balance_on_disk(config, seller["id"]) == 50_000
    assert service.queries.credit_request(request["id"])["status"] == "pending"


def test_ledger_functions_given_the_open_write_do_move_money(service, config):
    seller = credited_seller(service, 50_000)
    with service.database.transaction() as write:
        ledger.adjust(write, seller["id"], -1_000, "inside", now())
    assert balance_on_disk(config, seller["id"]) == 49_000


@pytest.mark.parametrize("group_commit", [True, False], ids=["group-commit", "own-transaction"])
def test_a_write_started_inside_a_write_fails_at_once_and_the_outer_write_rolls_back(
    tmp_path, group_commit
):
    """Before, with group commit on, the inner write queued behind its own outer write: a hang."""
    config = Config(db_path=tmp_path / "cb.db", admin_token=ADMIN_TOKEN, group_commit=group_commit)
    service = Chargebox(prepare(config))
    try:
        seller = credited_seller(service, 50_000)

        def outer(write):
            ledger.adjust(write, seller["id"], -1_000, "outer", now())
            service.database.write(lambda inner: ledger.adjust(inner, seller["id"], -1, "x", now()))

        with pytest.raises(AssertionError, match="inside a write"):
            service.database.write(outer)
        with (
            pytest.raises(AssertionError, match="inside a write"),
            service.database.transaction(),
            service.database.transaction(),
        ):
            pass
        assert balance_on_disk(config, seller["id"]) == 50_000
        service.adjust_balance(seller["id"], -1_000, "after")  # the gate was released
        assert balance_on_disk(config, seller["id"]) == 49_000
    finally:
        service.close()


# --- the customer's test ---------------------------------------------------------------------


def test_two_sellers_ten_credits_and_a_thousand_sales_balance_to_the_toman(service, config):
    """2 sellers, 10 approved credit increases, 1,000 sales of mixed amounts.

    A dict of expected balances, kept beside the service, predicts each sale's
    outcome (including refusals); the final balances, the ledger sums and the
    audit must all agree with it exactly.
    """
    rng = random.Random(20240601)
    sellers = [service.create_seller(name)[0]["id"] for name in ("Ali", "Sara")]
    expected = dict.fromkeys(sellers, 0)
    sales_done = dict.fromkeys(sellers, 0)
    credits = dict.fromkeys(sellers, 0)
    phone_totals: dict[str, int] = {}
    credit_at = {i * 100: sellers[i % 2] for i in range(10)}
    amounts = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 1_234, 99_999]
    refused = 0
    for i in range(1_000):
        if i in credit_at:
            seller_id = credit_at[i]
            amount = rng.choice([2_000_000, 3_000_000, 5_000_000])
            service.approve_credit_request(service.request_credit(seller_id, amount).record["id"])
            expected[seller_id] += amount
            credits[seller_id] += 1
        seller_id = rng.choice(sellers)
        amount = rng.choice(amounts)
        phone = f"0912{rng.randrange(10_000_000):07d}" if rng.random() < 0.5 else PHONE
        if amount <= expected[seller_id]:
            sale = service.sell(seller_id, phone, amount).record
            expected[seller_id] -= amount
            sales_done[seller_id] += 1
            phone_totals[phone] = phone_totals.get(phone, 0) + amount
            assert sale["balance_after"] == expected[seller_id]
        else:
            with pytest.raises(InsufficientCredit):
                service.sell(seller_id, phone, amount)
            refused += 1
    assert 0 < refused < 300  # the mix exercised both outcomes

    for seller_id in sellers:
        assert balance_on_disk(config, seller_id) == expected[seller_id]
        assert service.queries.seller(seller_id)["balance"] == expected[seller_id]
        entries = all_pages(service.queries.ledger, seller_id=seller_id)
        assert sum(e["amount"] for e in entries) == expected[seller_id]
        assert entries[-1]["balance_after"] == expected[seller_id]
        assert len(entries) == sales_done[seller_id] + credits[seller_id]
        assert len(all_pages(service.queries.sales, seller_id=seller_id)) == sales_done[seller_id]
    assert sum(credits.values()) == 10
    assert sum(sales_done.values()) + refused == 1_000
    assert {p["number"]: p["total_charged"] for p in all_pages(service.queries.phones)} == (
        phone_totals
    )
    report = service.audit()
    assert report["consistent"], report["problems"]
    assert {s["seller_id"]: s["balance"] for s in report["sellers"]} == expected
    assert_books_consistent(service, config)


def test_a_seller_credited_a_million_that_sold_sixty_5000_charges_has_700000_left(service, config):
    seller = credited_seller(service, 1_000_000)
    for i in range(60):
        service.sell(seller["id"], f"0912000{i:04d}", 5_000)
    assert service.queries.seller(seller["id"])["balance"] == 700_000
    assert balance_on_disk(config, seller["id"]) == 700_000
    entries = ledger_on_disk(config, seller["id"])
    assert len(entries) == 61
    assert entries[0] == ("credit", 1_000_000, 1_000_000)
    assert entries[-1] == ("sale", -5_000, 700_000)
    assert sum(amount for _kind, amount, _after in entries) == 700_000
    assert_books_consistent(service, config)


def test_a_credit_request_for_an_unknown_seller_is_not_found_and_records_nothing(service, config):
    with pytest.raises(NotFound):
        service.request_credit(999_999, 1_000)
    assert service.queries.credit_requests(Page()) == []
