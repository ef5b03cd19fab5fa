"""The cap on a seller's pending credit requests (`max_pending_requests`, 10 by default).

At the cap, one more request is `409 too_many_pending_requests` and files nothing:
in the service, over the JSON API and through the seller's credit form (beside the
amount field). A decision by the admin frees a place; a keyed copy of a request
already filed is still replayed. Racing requests (threads, processes, two server
processes, one group-commit batch) file exactly the cap, checked from a fresh
sqlite3 connection.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import urllib.parse

import pytest

from chargebox.cli import prepare
from chargebox.config import DEFAULT_MAX_PENDING_REQUESTS, Config, env_defaults
from chargebox.errors import TooManyPendingRequests
from chargebox.services import Chargebox
from tests.support import (
    database_of,
    db_snapshot,
    new_seller,
    reconciled_balances,
    rows_on_disk,
)
from tests.test_http_contract import assert_error
from tests.test_openapi import error_code
from tests.web_support import SELLER, refused, text_of, value_of
from tests.workloads import THREADS_FOR_HELD_COPIES, run_parallel, write_lock_held_until_sent

CAP = 3
TOO_MANY = TooManyPendingRequests.code


@pytest.fixture
def capped(config):
    """The use cases on a fresh file, with a cap of CAP pending requests per seller."""
    prepared = prepare(dataclasses.replace(config, max_pending_requests=CAP))
    service = Chargebox(prepared)
    yield service
    service.close()


def pending_on_disk(db_path, seller_id: int) -> tuple[int, int]:
    """(pending, all) credit requests of a seller, from a fresh read-only connection."""
    sql = (
        "SELECT COUNT(*) FILTER (WHERE status = 'pending'), COUNT(*) FROM credit_request"
        " WHERE seller_id = ?"
    )
    return rows_on_disk(db_path, sql, (seller_id,))[0]


# --- the use case -------------------------------------------------------------------------


def test_the_default_cap_is_ten_and_the_eleventh_request_is_refused(service):
    seller, _ = service.create_seller("flood")
    for _ in range(DEFAULT_MAX_PENDING_REQUESTS):
        service.request_credit(seller["id"], 1)
    before = db_snapshot(database_of(service.config))
    with pytest.raises(TooManyPendingRequests) as refusal:
        service.request_credit(seller["id"], 1)
    assert DEFAULT_MAX_PENDING_REQUESTS == 10
    assert refusal.value.code == TOO_MANY and "at most 10" in refusal.value.message
    assert db_snapshot(database_of(service.config)) == before


def test_one_request_over_the_cap_is_refused_and_files_nothing(capped):
    seller, _ = capped.create_seller("flood")
    filed = [capped.request_credit(seller["id"], 1_000 + n).record["id"] for n in range(CAP)]
    before = db_snapshot(database_of(capped.config))
    for amount in (1, 5_000, 10**9):
        with pytest.raises(TooManyPendingRequests):
            capped.request_credit(seller["id"], amount)
    assert db_snapshot(database_of(capped.config)) == before
    assert pending_on_disk(database_of(capped.config), seller["id"]) == (CAP, CAP)
    assert [r["id"] for r in capped.queries.recent_credit_requests(seller["id"])] == filed[::-1]


def test_the_cap_counts_each_sellers_requests_apart(capped):
    flood, _ = capped.create_seller("flood")
    other, _ = capped.create_seller("other")
    for _ in range(CAP):
        capped.request_credit(flood["id"], 1)
    with pytest.raises(TooManyPendingRequests):
        capped.request_credit(flood["id"], 1)
    assert capped.request_credit(other["id"], 7_000).record["status"] == "pending"
    assert {row["seller_id"]: row["pending"] for row in capped.queries.pending_by_seller()} == {
        flood["id"]: CAP,
        other["id"]: 1,
    }


def test_approving_or_rejecting_a_request_frees_a_place(capped):
    seller, _ = capped.create_seller("shop")
    filed = [capped.request_credit(seller["id"], 1_000).record["id"] for _ in range(CAP)]
    capped.approve_credit_request(filed[0])
    again = capped.request_credit(seller["id"], 2_000).record
    with pytest.raises(TooManyPendingRequests):
        capped.request_credit(seller["id"], 3_000)
    capped.reject_credit_request(again["id"])
    capped.request_credit(seller["id"], 4_000)
    with pytest.raises(TooManyPendingRequests):
        capped.request_credit(seller["id"], 5_000)
    assert pending_on_disk(database_of(capped.config), seller["id"]) == (CAP, CAP + 2)
    assert capped.queries.seller(seller["id"])["balance"] == 1_000


def test_a_keyed_copy_of_a_filed_request_is_replayed_at_the_cap(capped):
    seller, _ = capped.create_seller("shop")
    first = capped.request_credit(seller["id"], 9_000, "ask-1")
    for _ in range(CAP - 1):
        capped.request_credit(seller["id"], 1)
    copy = capped.request_credit(seller["id"], 9_000, "ask-1")
    assert (copy.record, copy.replayed) == (first.record, True)
    assert pending_on_disk(database_of(capped.config), seller["id"]) == (CAP, CAP)


def test_a_key_refused_by_the_cap_is_not_used_up(capped):
    """The cap frees up, so its refusal is not a key's final outcome: nothing is kept,
    and the same key files the request once a place is free."""
    seller, _ = capped.create_seller("shop")
    filed = [capped.request_credit(seller["id"], 1).record["id"] for _ in range(CAP)]
    before = db_snapshot(database_of(capped.config))
    for _ in range(2):
        with pytest.raises(TooManyPendingRequests) as refusal:
            capped.request_credit(seller["id"], 9_000, "ask-2")
        assert not refusal.value.replayed
    assert db_snapshot(database_of(capped.config)) == before
    capped.reject_credit_request(filed[0])
    later = capped.request_credit(seller["id"], 9_000, "ask-2")
    assert (later.record["amount"], later.replayed) == (9_000, False)


def test_the_cap_is_set_by_the_environment_within_bounds():
    assert Config().max_pending_requests == DEFAULT_MAX_PENDING_REQUESTS
    assert env_defaults({"CHARGEBOX_MAX_PENDING_REQUESTS": "25"}) == {"max_pending_requests": 25}
    for text in ("0", "-1", "ten", "1.5"):
        with pytest.raises(ValueError, match="CHARGEBOX_MAX_PENDING_REQUESTS"):
            Config(**env_defaults({"CHARGEBOX_MAX_PENDING_REQUESTS": text}))
    for bad in (0, 100_001):
        with pytest.raises(ValueError, match="max_pending_requests"):
            Config(max_pending_requests=bad)
    assert Config(max_pending_requests=100_000).max_pending_requests == 100_000


# --- over HTTP ------------------------------------------------------------------------------


def test_over_http_the_request_over_the_cap_is_409_and_files_nothing(server, admin, make_seller):
    seller, api = make_seller()
    filed = [api.post("/api/credit-requests", {"amount": 1}) for _ in range(10)]
    assert {answer.status_code for answer in filed} == {201}
    before = db_snapshot(server.db_path)
    refusal = api.post("/api/credit-requests", {"amount": 1})
    keyed = api.post("/api/credit-requests", {"amount": 2}, headers={"Idempotency-Key": "k-1"})
    assert "at most 10" in assert_error(refusal, 409, TOO_MANY)["message"]
    assert error_code(refusal, "/api/credit-requests") == TOO_MANY  # as documented
    assert_error(keyed, 409, TOO_MANY)
    assert "Idempotent-Replayed" not in keyed.headers
    assert db_snapshot(server.db_path) == before
    approved = admin.post(f"/api/credit-requests/{filed[0].json()['id']}/approve")
    assert approved.status_code == 200, approved.text
    retried = api.post("/api/credit-requests", {"amount": 2}, headers={"Idempotency-Key": "k-1"})
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert pending_on_disk(server.db_path, seller["id"]) == (10, 11)


def test_the_credit_form_over_the_cap_says_so_beside_the_amount_and_files_nothing(world):
    seller = world.browser(SELLER)  # the world's seller has one request pending already
    for _ in range(9):
        assert seller.post_form("/seller/credit-requests", {"amount": "1,000"}).status_code == 303
    key = value_of(seller.get("/seller").text, "credit-form-key")
    form = {"amount": "۲٬۰۰۰", "idempotency_key": key}
    answer = refused(world.server, 409, seller.post_form, "/seller/credit-requests", form)
    assert text_of(answer.text, "credit-amount-error") == (
        "You cannot ask for more credit yet: at most 10 of your credit requests may wait for "
        "the admin at once; ask again when one is approved or rejected."
    )
    assert value_of(answer.text, "credit-amount") == "۲٬۰۰۰"
    assert pending_on_disk(world.server.db_path, world.seller["id"]) == (10, 11)


# --- racing requests --------------------------------------------------------------------------


def file_request(index, barrier, url, key, sent):
    """One unkeyed credit request, sent when every worker is ready; (status, code)."""
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=60)
    conn.connect()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    barrier.wait()
    conn.request("POST", "/api/credit-requests", json.dumps({"amount": 1_000 + index}), headers)
    if sent is not None:
        sent.wait(30)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body.get("error", {}).get("code")


RACES = {
    "threads": ("threads", {}, False),
    "processes, two server processes": ("processes", {"CHARGEBOX_PROCESSES": "2"}, False),
    "threads, no group commit": ("threads", {"CHARGEBOX_GROUP_COMMIT": "0"}, False),
    "threads, all in one group-commit batch": ("threads", {}, True),
}


@pytest.mark.parallel
@pytest.mark.parametrize("mode, env, held", RACES.values(), ids=RACES.keys())
def test_20_racing_requests_of_one_seller_file_exactly_the_cap(
    tmp_path, new_server, mode, env, held
):
    """20 workers, released by a barrier, each file one request for the same seller with
    a cap of 5: exactly 5 are filed (201) and 15 refused (409), on disk too. With the write
    lock held until all are sent, the 20 meet in one group-commit batch, where each count
    must see the savepoints before it."""
    cap, workers = 5, 20
    env = {"CHARGEBOX_MAX_PENDING_REQUESTS": str(cap), **env}
    with new_server(tmp_path, env=env, threads=THREADS_FOR_HELD_COPIES) as server:
        admin = server.admin()
        seller, key = new_seller(admin, "racer")
        admin.close()
        if held:
            with write_lock_held_until_sent(server.db_path, workers) as sent:
                results = run_parallel(mode, workers, file_request, server.url, key, sent)
        else:
            results = run_parallel(mode, workers, file_request, server.url, key, None)
        assert sorted(results) == [(201, None)] * cap + [(409, TOO_MANY)] * (workers - cap)
        assert pending_on_disk(server.db_path, seller["id"]) == (cap, cap)
        assert reconciled_balances(server.db_path) == {seller["id"]: 0}
