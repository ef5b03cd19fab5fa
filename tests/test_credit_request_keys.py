"""Keyed credit requests: a seller's Idempotency-Key files one request, whatever the copies.

The same rules as keyed sales (docs/api.md), extended to `POST /api/credit-requests`:
a copy with the same key and amount gets the request the key filed (as it is
now), a different amount is `idempotency_key_reused`, and a refused request
does not use up its key. The web page's credit form carries such a key.
"""

from __future__ import annotations

import pytest

from chargebox.errors import IdempotencyKeyReused, NotFound, ValidationError
from tests.support import (
    REFUSED,
    database_of,
    db_snapshot,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    writable,
)
from tests.test_services import hide_the_first_look
from tests.workloads import keyed_post, run_parallel, write_lock_held_until_sent

MODES = ["threads", "processes"]


def test_a_keyed_credit_request_is_filed_once_and_replayed_as_it_is_now(service):
    seller, _ = service.create_seller("shop")
    first = service.request_credit(seller["id"], 40_000, "ask-1")
    before = db_snapshot(database_of(service.config))
    again = service.request_credit(seller["id"], 40_000, "ask-1")
    assert (again.record, again.replayed, first.replayed) == (first.record, True, False)
    assert db_snapshot(database_of(service.config)) == before
    service.approve_credit_request(first.record["id"])
    later = service.request_credit(seller["id"], 40_000, "ask-1")
    assert (later.record["id"], later.record["status"]) == (first.record["id"], "approved")
    assert service.queries.seller(seller["id"])["balance"] == 40_000


def test_the_same_key_with_another_amount_is_refused_and_files_nothing(service):
    seller, _ = service.create_seller("shop")
    service.request_credit(seller["id"], 40_000, "ask-1")
    before = db_snapshot(database_of(service.config))
    with pytest.raises(IdempotencyKeyReused):
        service.request_credit(seller["id"], 40_001, "ask-1")
    assert db_snapshot(database_of(service.config)) == before


def test_a_refused_request_does_not_use_up_its_key(service):
    seller, _ = service.create_seller("shop")
    with pytest.raises(ValidationError):
        service.request_credit(seller["id"], 0, "ask-1")
    with pytest.raises(NotFound):
        service.request_credit(seller["id"] + 1, 5_000, "ask-1")
    filed = service.request_credit(seller["id"], 5_000, "ask-1")
    assert (filed.record["amount"], filed.replayed) == (5_000, False)


def test_a_copy_that_missed_the_first_request_outside_the_write_gets_it_even_at_the_cap(
    service, monkeypatch
):
    """Filing again would be refused (the seller's pending requests are at the cap), but
    a copy gets the first request all the same: on PostgreSQL the write looks for the
    key after the refusal, on SQLite before acting."""
    seller, _ = service.create_seller("shop")
    first = service.request_credit(seller["id"], 5_000, "ask-1")
    for n in range(service.config.max_pending_requests - 1):
        service.request_credit(seller["id"], 1_000 + n)
    hidden = hide_the_first_look(monkeypatch, service.database)
    copy = service.request_credit(seller["id"], 5_000, "ask-1")
    assert hidden and (copy.record, copy.replayed) == (first.record, True)


def test_keys_are_per_seller_and_apart_from_sale_keys(service):
    ali, _ = service.create_seller("ali")
    sara, _ = service.create_seller("sara")
    mine = service.request_credit(ali["id"], 9_000, "same-key").record
    theirs = service.request_credit(sara["id"], 9_000, "same-key").record
    assert mine["id"] != theirs["id"]
    service.approve_credit_request(mine["id"])
    sold = service.sell(ali["id"], "09121234567", 1_000, "same-key")
    assert not sold.replayed and service.queries.seller(ali["id"])["balance"] == 8_000


def test_the_database_keeps_credit_request_keys_final(service):
    seller, _ = service.create_seller("shop")
    service.request_credit(seller["id"], 9_000, "ask-1")
    with writable(database_of(service.config)) as conn:
        for statement in (
            "UPDATE credit_request_record SET key = 'other'",
            "DELETE FROM credit_request_record",
            "INSERT INTO credit_request_record (seller_id, key, request_hash, created_at)"
            " VALUES (1, 'ask-2', 'h', 'now')",  # neither a request nor a refusal
        ):
            with pytest.raises(REFUSED):
                conn.execute(statement)


def test_over_http_a_copy_is_201_with_the_replayed_header_and_the_same_location(make_seller):
    _, seller = make_seller()
    headers = {"Idempotency-Key": "ask-http"}
    first = seller.post("/api/credit-requests", {"amount": 70_000}, headers=headers)
    again = seller.post("/api/credit-requests", {"amount": 70_000}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert (first.json(), first.headers["Location"]) == (again.json(), again.headers["Location"])
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    other = seller.post("/api/credit-requests", {"amount": 1}, headers=headers)
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(seller.get("/api/credit-requests").json()["items"]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_20_concurrent_copies_of_one_keyed_credit_request_file_one(fresh_server, mode):
    """20 workers (threads, or processes) send one keyed request at once, released by a
    barrier, while the write lock is held until all are sent (so they meet inside the
    write): all get 201 with the same request, one of them first; one request is filed."""
    admin = fresh_server.admin()
    seller, key = new_seller(admin, "racer")
    with write_lock_held_until_sent(fresh_server.db_path, 20) as sent:
        args = (fresh_server.url, key, "/api/credit-requests", {"amount": 30_000}, "ask", sent)
        results = run_parallel(mode, 20, keyed_post, *args)
    assert {status for status, _, _ in results} == {201}
    assert len({repr(body) for _, body, _ in results}) == 1
    assert sum(not replayed for _, _, replayed in results) == 1
    filed = "SELECT COUNT(*) FROM credit_request WHERE seller_id = ?"
    assert rows_on_disk(fresh_server.db_path, filed, (seller["id"],)) == [(1,)]
    assert reconciled_balances(fresh_server.db_path) == {seller["id"]: 0}
    admin.close()
