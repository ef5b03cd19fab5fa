"""Seller keys and suspension, across two server processes sharing one database.

Two real `chargebox serve` processes on one database (one SQLite file, or one
PostgreSQL database): what the admin does through one is in force on the other
from its very next request, since no process caches a key. A key revoked or
rotated through server A is refused by server B on the first request after the
answer (the window is zero, measured as "no request succeeds after"); a
suspended seller is refused everywhere with its own code, its web sessions end,
and not one row of its books changes; reactivation restores the same keys.
"""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from chargebox import clock, services
from chargebox.errors import SellerSuspended
from tests.support import (
    ADMIN_TOKEN,
    REFUSED,
    Api,
    database_of,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    running_server,
    writable,
)
from tests.web_support import Browser, text_of

ROUNDS = 10  # revocations raced against the other server, each checked at once


@pytest.fixture
def two_servers(tmp_path, new_database):
    """Two server processes on one new database."""
    db, data = new_database(tmp_path)
    with running_server(db, data_dir=data) as one, running_server(db, data_dir=data) as other:
        yield one, other


def sells(api: Api, amount: int = 1_000) -> int:
    return api.post("/api/sales", {"phone": "09121234567", "amount": amount}).status_code


def test_a_revoked_or_rotated_key_is_refused_at_once_by_the_other_server(two_servers):
    one, other = two_servers
    admin = one.admin()
    seller, default_key = new_seller(admin, "Ali", 100_000)
    for n in range(ROUNDS):
        made = admin.post(f"/api/sellers/{seller['id']}/keys", {"label": f"till {n}"})
        assert made.status_code == 201, made.text
        key = made.json()
        on_other = other.seller(key.pop("api_key"))
        assert on_other.get("/api/me").status_code == 200  # known, and used, on B first
        revoked = admin.post(f"/api/sellers/{seller['id']}/keys/{key['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
        refused = on_other.get("/api/me")
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"
        assert sells(on_other) == 401
        on_other.close()
    # Rotation: the new key works on B at once, the old one is refused there at once.
    old = other.seller(default_key)
    assert sells(old) == 201
    (default,) = [k for k in admin.get(f"/api/sellers/{seller['id']}/keys").json()["items"]
                  if k["label"] == "default"]  # fmt: skip
    rotated = admin.post(f"/api/sellers/{seller['id']}/keys/{default['id']}/rotate")
    assert rotated.status_code == 201, rotated.text
    assert rotated.json()["label"] == "default" and rotated.json()["id"] != default["id"]
    assert sells(old) == 401
    new = other.seller(rotated.json()["api_key"])
    assert sells(new) == 201
    again = admin.post(f"/api/sellers/{seller['id']}/keys/{default['id']}/rotate")
    assert again.status_code == 409 and again.json()["error"]["code"] == "key_revoked"
    keys = admin.get(f"/api/sellers/{seller['id']}/keys").json()["items"]
    assert len(keys) == ROUNDS + 2
    assert [k["label"] for k in keys if k["revoked_at"] is None] == ["default"]
    assert all("api_key" not in k and "key_hash" not in k for k in keys)
    for api in (admin, old, new):
        api.close()


def test_several_labelled_keys_work_side_by_side_and_a_label_is_unique_among_live_keys(
    two_servers,
):
    one, other = two_servers
    admin = one.admin()
    seller, _ = new_seller(admin, "Sara", 50_000)
    keys = {}
    for label in ("web shop", "POS"):
        made = admin.post(f"/api/sellers/{seller['id']}/keys", {"label": label})
        assert made.status_code == 201, made.text
        keys[label] = made.json()
    twice = admin.post(f"/api/sellers/{seller['id']}/keys", {"label": "POS"})
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "key_label_in_use"
    for made in keys.values():
        api = other.seller(made["api_key"])
        assert api.get("/api/me").json()["id"] == seller["id"]
        api.close()
    # A key's use shows, to within a minute, without waiting for anything of the request.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = admin.get(f"/api/sellers/{seller['id']}/keys").json()["items"]
        if all(k["last_used_at"] for k in listed if k["label"] in keys):
            break
        time.sleep(0.05)
    assert all(k["last_used_at"] for k in listed if k["label"] in keys), listed
    # A label freed by revocation can be used again.
    pos = keys["POS"]
    assert admin.post(f"/api/sellers/{seller['id']}/keys/{pos['id']}/revoke").status_code == 200
    assert admin.post(f"/api/sellers/{seller['id']}/keys", {"label": "POS"}).status_code == 201
    # Another seller's key id is not this seller's.
    other_seller, _ = new_seller(admin, "Eve")
    wrong = admin.post(f"/api/sellers/{other_seller['id']}/keys/{pos['id']}/revoke")
    assert wrong.status_code == 404
    admin.close()


def test_a_suspended_seller_is_refused_everywhere_its_sessions_end_and_no_money_moves(
    two_servers,
):
    one, other = two_servers
    admin = one.admin()
    seller, key = new_seller(admin, "Reza", 80_000)
    api = other.seller(key)
    assert sells(api, 5_000) == 201
    browser = Browser(other.url)
    assert browser.sign_in(key).status_code == 303
    assert browser.get("/seller").status_code == 200
    books = ("SELECT id, balance FROM seller", "SELECT * FROM ledger_entry", "SELECT * FROM sale",
             "SELECT * FROM credit_request", "SELECT * FROM phone")  # fmt: skip
    db = one.db_path
    before = [rows_on_disk(db, sql) for sql in books]
    suspended = admin.post(f"/api/sellers/{seller['id']}/suspend")
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    for answer in (api.get("/api/me"), api.get("/api/ledger"),
                   api.post("/api/sales", {"phone": "09121234567", "amount": 1_000}),
                   api.post("/api/credit-requests", {"amount": 1_000},
                            headers={"Idempotency-Key": "k1"})):  # fmt: skip
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "seller_suspended"
    assert browser.get("/seller").status_code == 303  # the session ended: to the sign-in page
    assert Browser(other.url).sign_in(key).status_code == 403
    assert [rows_on_disk(db, sql) for sql in books] == before
    # The admin still sees its books, and may still adjust them.
    seen = admin.get(f"/api/sellers/{seller['id']}").json()
    assert (seen["balance"], seen["status"]) == (75_000, "suspended")
    assert len(admin.get(f"/api/ledger?seller_id={seller['id']}").json()["items"]) == 2
    assert len(admin.get(f"/api/sales?seller_id={seller['id']}").json()["items"]) == 1
    # Reactivation: the same key works again, and the refused keyed request left its key free.
    back = admin.post(f"/api/sellers/{seller['id']}/reactivate")
    assert back.status_code == 200 and back.json()["status"] == "active"
    assert sells(api, 5_000) == 201
    filed = api.post("/api/credit-requests", {"amount": 1_000}, headers={"Idempotency-Key": "k1"})
    assert filed.status_code == 201 and "Idempotent-Replayed" not in filed.headers
    reconciled_balances(db)
    assert admin.get("/api/audit").json()["consistent"]
    for each in (api, admin):
        each.close()


def test_a_sale_waiting_for_the_write_when_the_suspension_commits_is_refused(service):
    """The suspension's write holds the lock; a sale queues behind it (its thread holds a
    write slot); the suspension commits; the sale, run next, is refused inside its own
    write with seller_suspended, and nothing of it is written."""
    seller, _ = service.create_seller("Ali")
    service.approve_credit_request(service.request_credit(seller["id"], 50_000).record["id"])
    holding, release = threading.Event(), threading.Event()

    def suspend(write):
        write.execute(
            "UPDATE seller SET status = 'suspended', status_changes = status_changes + 1"
            " WHERE id = ?",
            (seller["id"],),
        )
        holding.set()
        assert release.wait(10)

    suspender = threading.Thread(target=service.database.write, args=(suspend,))
    suspender.start()
    assert holding.wait(10)
    outcome: list = []
    seller_thread = threading.Thread(target=lambda: outcome.append(_attempt(service, seller["id"])))
    slots = service.database.slots
    seller_thread.start()
    deadline = time.monotonic() + 10
    while slots._free._value > slots.count - 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # until the sale holds its write slot, queued behind the lock
    assert slots._free._value == slots.count - 2
    release.set()
    suspender.join(10)
    seller_thread.join(10)
    assert outcome and isinstance(outcome[0], SellerSuspended), outcome
    assert service.queries.sales(_page(), seller["id"]) == []
    assert service.queries.seller(seller["id"])["balance"] == 50_000


def _attempt(service, seller_id: int):
    try:
        return service.sell(seller_id, "09121234567", 1_000, "queued")
    except SellerSuspended as refused:
        return refused


def _page():
    from chargebox.queries import Page

    return Page()


def test_the_database_refuses_a_suspended_sellers_request_and_a_key_unrevoked(service, config):
    """The second line: the schema itself, whoever writes (the owner, on PostgreSQL)."""
    seller, _ = service.create_seller("Ali")
    service.set_status(seller["id"], "suspended")
    db = database_of(config)
    with writable(db) as conn:
        for sql in (
            "INSERT INTO credit_request (seller_id, amount, status, created_at)"
            " VALUES (?, 5, 'pending', 'x')",
            "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
            " VALUES (?, '09121234567', 5, 0, 'x')",
        ):
            with pytest.raises(REFUSED, match="suspended"):
                conn.execute(sql, (seller["id"],))
        conn.execute("UPDATE seller_key SET revoked_at = 'z' WHERE seller_id = ?", (seller["id"],))
        with pytest.raises(REFUSED, match="revoked key stays revoked"):
            conn.execute("UPDATE seller_key SET revoked_at = NULL WHERE seller_id = ?",
                         (seller["id"],))  # fmt: skip
        with pytest.raises(REFUSED, match="never deleted"):
            conn.execute("DELETE FROM seller_key WHERE seller_id = ?", (seller["id"],))
        with pytest.raises(REFUSED, match="never changes"):  # its id too (version 8)
            conn.execute("UPDATE seller_key SET id = id + 1000 WHERE seller_id = ?",
                         (seller["id"],))  # fmt: skip


def test_a_key_made_by_a_clock_ahead_is_revoked_and_rotated_all_the_same(service, monkeypatch):
    """A clock set back after a key was made (NTP), or another host's clock ahead when it
    made it: its revocation is stamped when the key was made, never before (CHECK)."""
    seller, _ = service.create_seller("Ali")
    ahead = clock.now(datetime.timedelta(hours=1))
    monkeypatch.setattr(services, "now", lambda: ahead)
    first, _ = service.create_key(seller["id"], "till")
    second, _ = service.create_key(seller["id"], "web")
    monkeypatch.undo()
    revoked = service.revoke_key(seller["id"], first["id"])
    assert revoked["revoked_at"] == revoked["created_at"] == ahead
    new, _ = service.rotate_key(seller["id"], second["id"])
    keys = {key["id"]: key for key in service.queries.seller_keys(seller["id"])}
    assert keys[second["id"]]["revoked_at"] == ahead and keys[new["id"]]["label"] == "web"
    assert keys[new["id"]]["revoked_at"] is None and new["created_at"] < ahead


def test_a_last_use_stamped_by_a_clock_ahead_is_stamped_again(service, config):
    """A key used while the clock ran a year ahead was stamped a year ahead; once the
    clock is set back its next use writes the stamp afresh (it stood, and showed a use to
    come, until the clock passed it: a year of "used" for a key nobody used)."""
    seller, key = service.create_seller("Ali")
    ahead = clock.now(datetime.timedelta(days=365))
    with writable(database_of(config)) as conn:
        conn.execute("UPDATE seller_key SET last_used_at = ? WHERE seller_id = ?",
                     (ahead, seller["id"]))  # fmt: skip
    service.access.authenticate(f"Bearer {key}")
    deadline = time.monotonic() + 30  # written behind the request: polled, bounded
    while (stamp := service.queries.seller_keys(seller["id"])[0]["last_used_at"]) == ahead:
        assert time.monotonic() < deadline, "the stamp a year ahead stayed"
        time.sleep(0.02)
    assert stamp <= clock.now()


def test_the_admins_seller_page_makes_revokes_and_rotates_keys_and_suspends(two_servers):
    one, other = two_servers
    admin = one.admin()
    seller, key = new_seller(admin, "Pages", 20_000)
    page = f"/admin/sellers/{seller['id']}"
    browser = Browser(one.url)
    assert browser.sign_in(ADMIN_TOKEN).status_code == 303
    shown = browser.get(page)
    assert shown.status_code == 200 and 'id="seller-status">active<' in shown.text
    assert browser.post_form(f"{page}/suspend", {}, csrf=False).status_code == 403  # no CSRF
    made = browser.post_form(f"{page}/keys", {"label": "kiosk"})
    assert made.status_code == 201, made.text
    secret = text_of(made.text, "api-key")
    kiosk = other.seller(secret)
    assert kiosk.get("/api/me").status_code == 200
    taken = browser.post_form(f"{page}/keys", {"label": "kiosk"})
    assert taken.status_code == 409 and "labelled" in taken.text
    listed = admin.get(f"/api/sellers/{seller['id']}/keys").json()["items"]
    kiosk_id = next(k["id"] for k in listed if k["label"] == "kiosk")
    revoked = browser.post_form(f"{page}/keys/{kiosk_id}/revoke", {})
    assert revoked.status_code == 303 and revoked.headers["Location"].endswith("?done=revoked")
    assert kiosk.get("/api/me").status_code == 401
    again = browser.post_form(f"{page}/keys/{kiosk_id}/rotate", {})
    assert again.status_code == 409 and "already revoked" in again.text
    default_id = next(k["id"] for k in listed if k["label"] == "default")
    rotated = browser.post_form(f"{page}/keys/{default_id}/rotate", {})
    assert rotated.status_code == 201 and "shown only this once" in rotated.text
    assert other.seller(key).get("/api/me").status_code == 401
    new_key = text_of(rotated.text, "api-key")
    fresh = other.seller(new_key)
    assert browser.post_form(f"{page}/suspend", {}).status_code == 303
    assert fresh.get("/api/me").json()["error"]["code"] == "seller_suspended"
    assert 'id="seller-status">suspended<' in browser.get(page).text
    assert browser.post_form(f"{page}/reactivate", {}).status_code == 303
    assert fresh.get("/api/me").status_code == 200
    for api in (admin, kiosk, fresh):
        api.close()


@pytest.mark.postgresql_only  # a PostgreSQL session is a server slot; SQLite's cost no slot
def test_stamping_many_keys_last_use_keeps_the_servers_sessions_bounded(server):
    """Each first use of a key is stamped (`last_used_at`) behind the request by one thread
    of the process: 60 fresh keys used once each must not open a session apiece (a thread
    per stamp did, held until the server stopped, and exhausted max_connections)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from tests.backends import owner_url

    name = conninfo_to_dict(server.db_path)["dbname"]

    def sessions() -> int:
        with psycopg.connect(owner_url(server.db_path)) as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            return conn.execute(query, (name,)).fetchone()[0]

    admin = server.admin()
    for n in range(60):
        _, key = new_seller(admin, f"stamp-{n}")
        assert server.seller(key).get("/api/me").status_code == 200
    assert sessions() <= server.threads + 8, sessions()  # its threads, a writer, a stamper
