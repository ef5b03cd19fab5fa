"""A sale's seller key, known from an earlier read, is checked inside the sale's write.

`POST /api/sales` does not read a key this process has read before (auth.KnownKeys:
which key row its hash named); the write that would sell checks that the key still
holds (its id, seller and hash), in its own transaction: alone
(`auth.refuse_unless_held`), or for a whole batch of sales at once (`auth.keys_hold`).
A key read first in the same request is checked in the write all the same. What must
stay as it was with a read first: a revoked key or a suspended seller sells nothing,
its refusal comes before any other (a bad body, a copy of a recorded key), and the
key's last use is stamped.
The other server's side (a revocation through one server refused by the next sale
on the other) is in test_seller_keys.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import psycopg
import pytest

from chargebox import auth, clock, key_use
from chargebox.access_log import ENVIRON_WHO
from chargebox.cli import prepare
from chargebox.errors import (
    ChargeboxError,
    LockTimeout,
    NotGranted,
    SellerSuspended,
    Unauthorized,
)
from chargebox.idempotency import Outcome
from chargebox.pg_driver import NOT_GRANTED
from chargebox.queries import Page
from chargebox.services import Chargebox
from chargebox.web import api, create_app, forms
from chargebox.web.sessions import SESSION_COOKIE
from tests.backends import database_of, owner_url
from tests.support import drop_trigger, writable

PHONE = "09121234567"


def seller_with_key(service, name: str, credit: int = 50_000) -> tuple[int, str, auth.SellerKey]:
    """A funded seller: its id, its key, and the key as a request presents it."""
    seller, key = service.create_seller(name)
    service.approve_credit_request(service.request_credit(seller["id"], credit).record["id"])
    key_id = service.queries.seller_keys(seller["id"])[0]["id"]
    return seller["id"], key, auth.SellerKey(key_id, seller["id"], auth.hash_key(key))


def test_a_batch_sells_only_for_the_keys_that_still_hold(service):
    """Three sellers' sales queue behind a held write and go in one batch: the revoked
    key's and the suspended seller's are refused with their own codes, the third sells."""
    ali, _, ali_key = seller_with_key(service, "Ali")
    bita, _, bita_key = seller_with_key(service, "Bita")
    cyrus, _, cyrus_key = seller_with_key(service, "Cyrus")
    service.revoke_key(bita, bita_key.id)
    service.set_status(cyrus, "suspended")
    writer = service.database.writer
    before = (writer.batches, writer.redone)
    holding, release = threading.Event(), threading.Event()

    def hold(write) -> None:
        holding.set()
        assert release.wait(10)

    holder = threading.Thread(target=service.database.write, args=(hold,))
    holder.start()
    assert holding.wait(10)
    outcomes: dict[int, object] = {}

    def sell(seller_id: int, key: auth.SellerKey) -> None:
        try:
            outcomes[seller_id] = service.sell(seller_id, PHONE, 1_000, f"k{seller_id}", key)
        except ChargeboxError as refused:
            outcomes[seller_id] = refused

    sellers = [threading.Thread(target=sell, args=pair)
               for pair in ((ali, ali_key), (bita, bita_key), (cyrus, cyrus_key))]  # fmt: skip
    for thread in sellers:
        thread.start()
    deadline = time.monotonic() + 10
    while writer.queued() < 3:  # all three wait for the writer's next batch
        assert time.monotonic() < deadline, "the sales did not queue"
        time.sleep(0.001)
    release.set()
    for thread in (holder, *sellers):
        thread.join(10)
    assert isinstance(outcomes[ali], Outcome) and not outcomes[ali].replayed, outcomes
    assert isinstance(outcomes[bita], Unauthorized), outcomes
    assert isinstance(outcomes[cyrus], SellerSuspended), outcomes
    # the held write, then one batch for the three: tried together, redone seller by seller
    assert (writer.batches - before[0], writer.redone - before[1]) == (2, 1)
    assert [len(service.queries.sales(Page(), seller)) for seller in (ali, bita, cyrus)] == [
        1,
        0,
        0,
    ]
    balances = [service.queries.seller(seller)["balance"] for seller in (ali, bita, cyrus)]
    assert balances == [49_000, 50_000, 50_000]
    assert service.audit()["consistent"]


@pytest.mark.parametrize("group_commit", [True, False], ids=["batched", "one-by-one"])
def test_a_copy_of_a_recorded_key_is_not_replayed_to_a_key_revoked_since(config, group_commit):
    """The first outcome of an Idempotency-Key is the key's holder's to see: once the
    seller key is revoked, a copy is refused, whether it meets the record in its write
    or (no group commit) in the read before it."""
    service = Chargebox(prepare(dataclasses.replace(config, group_commit=group_commit)))
    try:
        seller, _, key = seller_with_key(service, "Ali")
        first = service.sell(seller, PHONE, 1_000, "same", key)
        assert not first.replayed
        assert service.sell(seller, PHONE, 1_000, "same", key).replayed  # while it holds
        service.revoke_key(seller, key.id)
        with pytest.raises(Unauthorized):
            service.sell(seller, PHONE, 1_000, "same", key)
        with pytest.raises(Unauthorized):
            service.sell(seller, PHONE, 1_000, "new", key)
        service.set_status(seller, "suspended")
        with pytest.raises(Unauthorized):  # revoked: as a read would say, before suspended
            service.sell(seller, PHONE, 1_000, None, key)
        assert len(service.queries.sales(Page(), seller)) == 1
    finally:
        service.close()


def test_a_remembered_keys_refusal_comes_before_a_bad_body_or_a_copy(admin, make_seller):
    """Over HTTP: a key revoked, or its seller suspended, after it sold through this server
    is refused with its own code before its body is looked at or a copy is replayed."""
    for makes_it_fail in ("revoke", "suspend"):
        seller, api = make_seller(50_000)
        sale = {"phone": PHONE, "amount": 1_000}
        assert api.post("/api/sales", sale, headers={"Idempotency-Key": "k1"}).status_code == 201
        assert api.post("/api/sales", sale).status_code == 201  # the key remembered: unread
        if makes_it_fail == "revoke":
            (key,) = admin.get(f"/api/sellers/{seller['id']}/keys").json()["items"]
            done = admin.post(f"/api/sellers/{seller['id']}/keys/{key['id']}/revoke")
            status, code = 401, "unauthorized"
        else:
            done = admin.post(f"/api/sellers/{seller['id']}/suspend")
            status, code = 403, "seller_suspended"
        assert done.status_code == 200, done.text
        for answer in (
            api.post("/api/sales", {"phone": PHONE, "amount": "lots"}),
            api.post("/api/sales", {"phone": "12"}),
            api.post("/api/sales", sale, headers={"Idempotency-Key": "k1"}),
            api.post("/api/sales", sale, headers={"Idempotency-Key": "\u00e9"}),
            api.post("/api/sales", sale),
        ):
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (
                makes_it_fail,
                answer.text,
            )
        sold = admin.get(f"/api/sales?seller_id={seller['id']}").json()["items"]
        assert len(sold) == 2, makes_it_fail


def test_a_remembered_key_is_stamped_as_used_once_its_stamp_is_a_minute_old(service, monkeypatch):
    """A key that is not read again still has its last use written, at most once a
    minute: the stamp remembered with it is the one that stands, looked at again once a
    second at most."""
    seller, key = service.create_seller("Ali")
    assert not service.access.authenticate(f"Bearer {key}").unchecked  # read, and remembered
    first = _stamp_once_written(service, seller["id"], None)
    remembered = service.access.authenticate(f"Bearer {key}", remembered=True)
    assert remembered.unchecked and remembered.seller_id == seller["id"]
    later = datetime.timedelta(minutes=2)

    def later_now(ahead: datetime.timedelta = datetime.timedelta(0)) -> str:
        return clock.now(ahead + later)

    monkeypatch.setattr(key_use, "now", later_now)
    monkeypatch.setattr(auth, "monotonic", lambda: time.monotonic() + later.total_seconds())
    assert service.access.authenticate(f"Bearer {key}", remembered=True).unchecked
    second = _stamp_once_written(service, seller["id"], first)
    assert second > clock.now(datetime.timedelta(minutes=1))


def _stamp_once_written(service, seller_id: int, before: str | None) -> str:
    deadline = time.monotonic() + 30  # written behind the request: polled, bounded
    while (stamp := service.queries.seller_keys(seller_id)[0]["last_used_at"]) == before:
        assert time.monotonic() < deadline, "the key's use was not stamped"
        time.sleep(0.02)
    return stamp


def test_a_refused_key_is_forgotten_so_a_read_refuses_its_next_sales(service):
    """Once a read refuses a remembered key (the read a refused sale makes first), it is
    read again on its next sale, not let into a write (and a batch) to be refused there."""
    seller, key = service.create_seller("Ali")
    service.access.authenticate(f"Bearer {key}")  # read, and remembered
    assert service.access.authenticate(f"Bearer {key}", remembered=True).unchecked
    service.set_status(seller["id"], "suspended")
    with pytest.raises(SellerSuspended):
        service.access.authenticate(f"Bearer {key}")
    with pytest.raises(SellerSuspended):  # read again: not remembered any more
        service.access.authenticate(f"Bearer {key}", remembered=True)
    (key_row,) = service.queries.seller_keys(seller["id"])
    service.set_status(seller["id"], "active")
    service.revoke_key(seller["id"], key_row["id"])
    with pytest.raises(Unauthorized):
        service.access.authenticate(f"Bearer {key}", remembered=True)


@pytest.mark.parametrize("group_commit", [True, False], ids=["batched", "one-by-one"])
def test_a_key_is_checked_by_its_id_seller_and_hash_together(config, group_commit):
    """Should a key row's id be changed (its guard dropped and the ids edited by hand, or
    the database restored under running servers) so that a revoked key's id now names
    another seller's good key, the revoked key still sells nothing: the write checks the
    id, seller and hash together."""
    service = Chargebox(prepare(dataclasses.replace(config, group_commit=group_commit)))
    try:
        ali, _, ali_key = seller_with_key(service, "Ali")
        bita, _, bita_key = seller_with_key(service, "Bita")
        service.revoke_key(ali, ali_key.id)

        with writable(database_of(config)) as conn:  # as the owner: the app's role may not
            drop_trigger(conn, "seller_key_revocation_is_final")  # it pins ids (version 8)
            for old, new in ((ali_key.id, -1), (bita_key.id, ali_key.id), (-1, bita_key.id)):
                conn.execute("UPDATE seller_key SET id = ? WHERE id = ?", (new, old))
        with pytest.raises(Unauthorized):
            service.sell(ali, PHONE, 1_000, None, ali_key)
        with pytest.raises(Unauthorized):
            service.sell(ali, PHONE, 1_000, "k1", ali_key)
        assert not service.database.write(lambda write: auth.keys_hold(write, [ali_key]))
        moved = auth.SellerKey(ali_key.id, bita, bita_key.digest)  # Bita's key, at its new id
        assert service.database.write(lambda write: auth.keys_hold(write, [moved]))
        assert service.sell(bita, PHONE, 1_000, None, moved).record["seller_id"] == bita
        assert service.queries.sales(Page(), ali) == []
        assert service.queries.seller(ali)["balance"] == 50_000
    finally:
        service.close()


def test_a_keys_last_use_stamp_does_not_wait_for_a_sale_whose_write_checked_it(config, monkeypatch):
    """What a sale's write holds on its key row lets the key's last-use stamp (key_use.py,
    another server's) through: were the stamp to wait, the sales queued behind it would
    deadlock with other sellers' batches. SQLite's write holds the file (no stamp goes
    through it); there the stamp waits, as every write does."""
    service, other = Chargebox(prepare(config)), _other_server(config)
    try:
        seller, _, seller_key = seller_with_key(service, "Ali")
        params = ("2026-12-05T00:00:00Z", seller_key.id, "9", "0")  # any stamp is old

        def stamp() -> str:
            other.database.write(lambda write: write.execute(key_use._USED, params))
            return "stamped"

        stamped = _once_the_sales_write_checked_its_key(monkeypatch, stamp)
        service.sell(seller, PHONE, 1_000, None, seller_key)
        assert stamped == (["stamped"] if config.db_url else ["waited"])
    finally:
        other.close()
        service.close()


def test_a_key_revoked_after_its_request_read_it_sells_nothing(service, monkeypatch):
    """A key read by the request itself (not remembered) is checked in the sale's write all
    the same: a revocation that commits between the read and the write refuses the sale,
    and the refused request names no seller in the access log."""
    seller, key, seller_key = seller_with_key(service, "Ali")
    read_json = api.read_json

    def revoked_meanwhile(*args, **kwargs):
        service.revoke_key(seller, seller_key.id)
        return read_json(*args, **kwargs)

    monkeypatch.setattr(api, "read_json", revoked_meanwhile)
    environ, (status, body) = _post_sale(service, key, {"phone": PHONE, "amount": 1_000})
    assert status.startswith("401"), body
    assert service.queries.sales(Page(), seller) == []
    assert ENVIRON_WHO not in environ


def test_a_credit_request_refused_in_its_write_names_no_seller_in_the_access_log(
    service, monkeypatch
):
    """A seller suspended after its credit request read its key is refused in the request's
    write (403), and, as for a sale, the refused request names no seller in the log."""
    seller, key, _ = seller_with_key(service, "Ali")
    read_json = api.read_json

    def suspended_meanwhile(*args, **kwargs):
        service.set_status(seller, "suspended")
        return read_json(*args, **kwargs)

    monkeypatch.setattr(api, "read_json", suspended_meanwhile)
    body = json.dumps({"amount": 1_000}).encode()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}", "CONTENT_TYPE": "application/json"}
    environ, status, _, answered = _post(service, "/api/credit-requests", body, headers)
    assert status.startswith("403"), answered
    assert json.loads(answered)["error"]["code"] == "seller_suspended"
    assert service.queries.credit_requests(Page(), seller, "pending") == []
    assert ENVIRON_WHO not in environ


@pytest.mark.parametrize("group_commit", [True, False], ids=["batched", "one-by-one"])
def test_a_revocation_waits_for_a_sale_whose_write_has_checked_its_key(
    config, group_commit, monkeypatch
):
    """Once a sale's write has checked its key, a revocation from another server waits for
    that write to end (PostgreSQL: the key row's key-share lock; SQLite: the file): it cannot
    commit in between, leaving a sale sold by a key revoked before the sale committed."""
    service = Chargebox(prepare(dataclasses.replace(config, group_commit=group_commit)))
    other = _other_server(config)
    try:
        seller, _, seller_key = seller_with_key(service, "Ali")
        tried = _once_the_sales_write_checked_its_key(
            monkeypatch, lambda: other.revoke_key(seller, seller_key.id)["revoked_at"]
        )
        sold = service.sell(seller, PHONE, 1_000, None, seller_key)
        assert tried == ["waited"]
        assert service.queries.sales(Page(), seller)[0]["id"] == sold.record["id"]
        other.revoke_key(seller, seller_key.id)  # once the sale has committed
        with pytest.raises(Unauthorized):
            service.sell(seller, PHONE, 1_000, None, seller_key)
    finally:
        other.close()
        service.close()


@pytest.mark.postgresql_only  # SQLite's revocation holds the file from its BEGIN on
def test_a_revocation_is_stamped_after_the_sales_of_its_key_that_commit_before_it(
    config, monkeypatch
):
    """A revocation waits for the sales whose writes have checked its key
    (auth.hold_for_revocation). Stamped before it waited, it named a moment before sales
    its key made (helper-80): here another server's sale commits after the revocation
    began, just before it holds the key; the sale must be stamped before the revocation."""
    service, other = Chargebox(prepare(config)), Chargebox(prepare(config))
    try:
        seller, _, seller_key = seller_with_key(service, "Ali")
        sold: list[dict] = []
        hold = auth.hold_for_revocation

        def a_sale_first(write, *args):
            if not sold:
                selling = threading.Thread(target=lambda: sold.append(
                    other.sell(seller, PHONE, 1_000, None, seller_key).record))  # fmt: skip
                selling.start()
                selling.join(60)
            return hold(write, *args)

        monkeypatch.setattr(auth, "hold_for_revocation", a_sale_first)
        revoked = service.revoke_key(seller, seller_key.id)
        assert len(sold) == 1
        assert sold[0]["created_at"] <= revoked["revoked_at"], (sold, revoked)
    finally:
        other.close()
        service.close()


@pytest.mark.postgresql_only  # SQLite's writes hold the whole file: no row to wait for
@pytest.mark.parametrize("hold", ["hold", "lock_seller"], ids=["a-batch", "a-credit-request"])
def test_a_rotation_does_not_wait_for_its_sellers_row(config, hold):
    """A rotation holds the key, and held its seller's row after it: a batch that held
    the seller (an adjustment's, or a credit request's) and then the key (a sale's check)
    deadlocked with it (helper-80: 2 rotations in 20 answered 503, and sales were
    retried). It needs the key alone: the new key takes the old one's label, which no
    other unrevoked key can have (a partial UNIQUE); its row's reference to the seller
    waits for no seller's hold (a key-share lock, which the holds leave free). Here it
    ends while another server's write holds the seller as a batch or a credit request
    does."""
    service = Chargebox(prepare(config))
    other = Chargebox(prepare(dataclasses.replace(config, busy_timeout_ms=1000)))
    held, release = threading.Event(), threading.Event()

    def holding(write) -> None:
        getattr(write, hold)(seller)
        held.set()
        release.wait(60)

    try:
        seller, _, seller_key = seller_with_key(service, "Ali")
        holder = threading.Thread(target=service.database.write, args=(holding,))
        holder.start()
        try:
            assert held.wait(60)
            rotated, _ = other.rotate_key(seller, seller_key.id)
        finally:
            release.set()
            holder.join(60)
        keys = {key["id"]: key for key in service.queries.seller_keys(seller)}
        assert keys[seller_key.id]["revoked_at"] is not None
        assert keys[rotated["id"]]["revoked_at"] is None
        assert keys[rotated["id"]]["label"] == keys[seller_key.id]["label"]
    finally:
        other.close()
        service.close()


def test_a_remembered_keys_refusal_names_no_seller_in_the_access_log(service):
    """A remembered key refused by the read its failed sale makes leaves no principal in the
    request's environ: the access log does not name the seller of a refused request."""
    seller, key, seller_key = seller_with_key(service, "Ali")
    environ, (status, _) = _post_sale(service, key, {"phone": PHONE, "amount": 1_000})
    assert status.startswith("201") and environ[ENVIRON_WHO].seller_id == seller
    service.revoke_key(seller, seller_key.id)
    environ, (status, _) = _post_sale(service, key, {"phone": PHONE, "amount": "lots"})
    assert status.startswith("401") and ENVIRON_WHO not in environ


class _HeldWriter:
    """A service whose group writer is kept busy (a write that waits for `release`), so
    that what is sent meanwhile queues for one batch; each act's result, or its error."""

    def __init__(self, service) -> None:
        self.service, self.writer = service, service.database.writer
        self.results: dict[str, object] = {}
        self._held, self._threads = threading.Event(), []
        busy = self.run("busy", lambda: service.database.write(lambda _: self._held.wait(30)))
        while not self.writer.busy() and busy.is_alive():
            busy.join(0.001)

    def run(self, name: str, act: Callable[[], object]) -> threading.Thread:
        def attempt() -> None:
            try:
                self.results[name] = act()
            except ChargeboxError as exc:
                self.results[name] = exc

        thread = threading.Thread(target=attempt)
        thread.start()
        self._threads.append(thread)
        return thread

    def queue(self, name: str, act: Callable[[], object]) -> None:
        """Send `act` and wait until it is queued for the writer's next batch."""
        count = self.writer.queued() + 1
        self.run(name, act)
        deadline = time.monotonic() + 30
        while self.writer.queued() < count and time.monotonic() < deadline:
            time.sleep(0.001)
        assert self.writer.queued() == count

    def release(self) -> dict[str, object]:
        self._held.set()
        for thread in self._threads:
            thread.join(30)
        return self.results


@pytest.mark.postgresql_only
@pytest.mark.parametrize("change", ["revoke", "rotate"])
def test_a_revocation_goes_in_a_transaction_of_its_own(config, change):
    """A revocation (or rotation) is not batched: in a batch after a sale of the same
    seller it waited for another server's sale of the key holding that seller's row, which
    the other sale could be waiting for (a deadlock, broken after 1 s). Alone it holds
    nothing else: here it is done while this server's batch is held, and the sale queued
    before it, checked after, is refused (PostgreSQL; SQLite's file takes one at a time)."""
    service = Chargebox(prepare(dataclasses.replace(config, group_commit=True)))
    try:
        seller, _, seller_key = seller_with_key(service, "Ali")
        held = _HeldWriter(service)
        held.queue("sale", lambda: service.sell(seller, PHONE, 1_000, None, seller_key))
        revoke = getattr(service, f"{change}_key")
        revocation = held.run("revocation", lambda: revoke(seller, seller_key.id))
        revocation.join(30)
        assert not revocation.is_alive() and "revocation" in held.results, held.results
        results = held.release()
        assert isinstance(results["sale"], Unauthorized), results
        assert not isinstance(results["revocation"], Exception), results
        assert service.queries.sales(Page(), seller) == []
    finally:
        service.close()


def test_a_revocation_leaves_the_batch_it_meets_side_by_side(config, monkeypatch):
    """Other sellers' sales queued with a revocation still go in one call (helper-67: the
    revocation first in their batch made each go in its own savepoint)."""
    service = Chargebox(prepare(dataclasses.replace(config, group_commit=True)))
    calls = []
    side_by_side = type(service.database.writer)._side_by_side

    def counted(self, write, groups, *args):
        calls.append(len(groups))
        return side_by_side(self, write, groups, *args)

    monkeypatch.setattr(type(service.database.writer), "_side_by_side", counted)
    try:
        (a, _, a_key), (b, _, b_key), (c, _, c_key) = (
            seller_with_key(service, name) for name in ("Ali", "Bita", "Cyrus")
        )
        held = _HeldWriter(service)
        held.queue("a", lambda: service.sell(a, PHONE, 1_000, None, a_key))
        held.queue("b", lambda: service.sell(b, PHONE, 1_000, None, b_key))
        held.run("revocation", lambda: service.revoke_key(c, c_key.id))
        results = held.release()
        assert not any(isinstance(result, Exception) for result in results.values()), results
        assert 2 in calls, calls  # the two sellers' sales in one call
    finally:
        service.close()


@pytest.mark.postgresql_only
def test_a_write_refused_a_privilege_fails_alone_not_its_batch(config):
    """A grant revoked under the server (here DELETE on web_session) fails the writes that
    need it, 503, and not the sales batched with them (helper-67: as Unavailable it failed
    the whole batch)."""
    service = Chargebox(prepare(dataclasses.replace(config, group_commit=True)))
    role = psycopg.conninfo.conninfo_to_dict(config.db_url)["user"]
    try:
        seller, _, seller_key = seller_with_key(service, "Ali")
        with psycopg.connect(owner_url(config.db_url), autocommit=True) as owner:
            owner.execute(f'REVOKE DELETE ON web_session FROM "{role}"')
        held = _HeldWriter(service)
        held.queue("sale", lambda: service.sell(seller, PHONE, 1_000, None, seller_key))
        sign_out = "DELETE FROM web_session WHERE token_hash = 'x'"
        held.queue("sign-out", lambda: service.database.write(lambda w: w.execute(sign_out)))
        results = held.release()
        assert isinstance(results["sign-out"], NotGranted), results
        assert results["sign-out"].message == NOT_GRANTED
        assert not isinstance(results["sale"], Exception), results
    finally:
        with psycopg.connect(owner_url(config.db_url), autocommit=True) as owner:
            owner.execute(f'GRANT DELETE ON web_session TO "{role}"')
        service.close()


def _other_server(config) -> Chargebox:
    """Another server on the same database: one write at a time, a lock waited for 300 ms
    at most (then LockTimeout)."""
    return Chargebox(prepare(dataclasses.replace(config, group_commit=False,
                                                 busy_timeout_ms=300)))  # fmt: skip


def _once_the_sales_write_checked_its_key(monkeypatch, act: Callable[[], str]) -> list[str]:
    """Make the first key check of a sale's write (alone or batched) run `act` from another
    thread before the write goes on: what it returned, or "waited" (LockTimeout), is put
    in the list returned."""
    done: list[str] = []

    def attempt() -> None:
        try:
            done.append(act())
        except LockTimeout:
            done.append("waited")

    for name in ("refuse_unless_held", "keys_hold"):
        check = getattr(auth, name)

        def then_act(*args, check=check, **kwargs):
            held = check(*args, **kwargs)
            if not done:  # from another thread: this one is inside the sale's write
                acting = threading.Thread(target=attempt)
                acting.start()
                acting.join(60)
            return held

        monkeypatch.setattr(auth, name, then_act)
    return done


def _post_sale(service, key: str, sale: dict) -> tuple[dict, tuple[str, dict]]:
    """`POST /api/sales` through the application in this process: its environ afterwards,
    and its status and JSON body."""
    headers = {"CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {key}"}
    environ, status, _, body = _post(service, "/api/sales", json.dumps(sale).encode(), headers)
    return environ, (status, json.loads(body))


def _post(service, path: str, body: bytes, headers: dict) -> tuple[dict, str, dict, bytes]:
    """A POST through the application in this process: its environ afterwards, and the
    answer's status, headers and body."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), **headers}  # fmt: skip
    setup_testing_defaults(environ)
    answered = {}
    app = create_app(service.config, service)
    chunks = app(environ, lambda status, sent, *_: answered.update(status=status, sent=sent))
    return environ, answered["status"], dict(answered["sent"]), b"".join(chunks)


def test_a_web_sessions_sale_checks_the_sessions_key_in_its_write(service):
    """A seller's web session acts with the key it was opened with (auth.Principal.key),
    which the page's sale hands to its write: revoked after the page read the session, the
    key sells nothing."""
    seller, key, seller_key = seller_with_key(service, "Ali")
    session, _ = service.access.sign_in(key)
    you = service.access.session(session)
    assert you.key == seller_key and not you.unchecked
    service.revoke_key(seller, seller_key.id)
    with pytest.raises(Unauthorized):
        service.sell(seller, PHONE, 1_000, None, you.key)
    assert service.access.session(session) is None


def test_a_sale_page_whose_key_is_revoked_mid_request_sends_to_sign_in(service, monkeypatch):
    """The seller's sale form hands its session's key to the sale's write: revoked after
    the page read the session, the key sells nothing, and the browser is sent to sign in
    (as its next page would be), with no seller named in the access log."""
    seller, key, seller_key = seller_with_key(service, "Ali")
    session, _ = service.access.sign_in(key)
    amount_from_text = forms.amount_from_text

    def revoked_meanwhile(*args, **kwargs):
        service.revoke_key(seller, seller_key.id)
        return amount_from_text(*args, **kwargs)

    monkeypatch.setattr(forms, "amount_from_text", revoked_meanwhile)
    form = {"phone": PHONE, "amount": "1000", "csrf": auth.csrf_token(session)}
    headers = {"CONTENT_TYPE": "application/x-www-form-urlencoded",
               "HTTP_COOKIE": f"{SESSION_COOKIE}={session}"}  # fmt: skip
    environ, status, sent, _ = _post(service, "/seller/sales", urlencode(form).encode(), headers)
    assert status.startswith("303") and sent["Location"].endswith("/login?ended=1")
    assert ENVIRON_WHO not in environ
    assert service.queries.sales(Page(), seller) == []
    assert service.queries.seller(seller)["balance"] == 50_000


def test_a_page_whose_session_ended_sends_to_sign_in_saying_so(service):
    """A session expired, or its key revoked or seller suspended while a sale was typed:
    the browser landed on the sign-in page with no word of why, what it typed gone
    (Persian pages' review, s36). The page says the session ended and nothing was done;
    a browser that never signed in is sent there without it."""
    seller, key, _ = seller_with_key(service, "Ali")
    session, _ = service.access.sign_in(key)
    service.set_status(seller, "suspended")
    form = urlencode({"phone": PHONE, "amount": "1000", "csrf": auth.csrf_token(session)})
    kinds = {"ended": f"{SESSION_COOKIE}={session}", "never": "other=1"}
    for kind, cookie in kinds.items():
        headers = {"CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_COOKIE": cookie}
        _, status, sent, _ = _post(service, "/seller/sales", form.encode(), headers)
        wanted = "/login?ended=1" if kind == "ended" else "/login"
        assert status.startswith("303") and sent["Location"].endswith(wanted), (kind, sent)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/login", "QUERY_STRING": "ended=1"}
    setup_testing_defaults(environ)
    answered = {}
    page = b"".join(
        create_app(service.config, service)(environ, lambda s, h, *_: answered.update(s=s))
    )
    assert answered["s"].startswith("200") and b"Your session has ended" in page
    assert service.queries.sales(Page(), seller) == []


def test_known_keys_past_their_limit_let_the_oldest_go_not_all(monkeypatch):
    """A process that has read more than KnownKeys.LIMIT keys forgets the one it read
    longest ago, one at a time; the others stay known (not read again on every sale)."""
    monkeypatch.setattr(auth.KnownKeys, "LIMIT", 3)
    known = auth.KnownKeys()
    keys = [auth.SellerKey(n, n, f"hash{n}") for n in range(1, 6)]
    for key in keys[:3]:
        known.remember(key, None)
    known.remember(keys[0], None)  # read again: the newest now
    known.remember(keys[3], None)
    assert [known.get(key.digest) is not None for key in keys] == [True, False, True, True, False]
    known.remember(keys[4], None)
    assert [known.get(key.digest) is not None for key in keys] == [True, False, False, True, True]
