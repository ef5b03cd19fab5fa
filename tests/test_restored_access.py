"""A restored copy does not bring back access taken away (or given back) after it
(revocations.py).

Each key revocation (a rotation's too), admin token rotation and change of a seller's
status is anchored outside the database as it commits. A copy that lacks one is an
audit problem and refused at start-up, and `chargebox anchors accept-restore` does each
again. Tested end to end on an SQLite file put back (a server, the CLI, then the old
credentials refused), and on either backend in process: what the audit finds, what a
redo writes, what it passes over, changes made at once.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from chargebox import anchors, auth, clock, restore, revocations
from chargebox.clock import now
from chargebox.services import Chargebox
from tests.support import (
    ADMIN_TOKEN,
    Api,
    credited_seller,
    new_seller,
    owner_url,
    running_server,
    wait_until,
)
from tests.test_anchors import put_back, refused_then_accepted
from tests.test_backup import chargebox, key_env

pytestmark = pytest.mark.timeout(300)
SALE = {"phone": "09121234567", "amount": 1_000}
NEW_ADMIN = "a-newer-admin-token-0123456789abcdefghij"


@pytest.mark.sqlite_only
def test_a_copy_put_back_is_refused_until_its_revocations_are_done_again(tmp_path):
    """After the copy: a key revoked, another rotated, the admin token rotated, a seller
    suspended and another reactivated. No sale was made, so no head is behind: only the
    access anchors tell. Accepted, the copy serves with every one of those done again."""
    live, copy = tmp_path / "chargebox.db", tmp_path / "copy.db"
    with running_server(live) as server:
        admin = server.admin()
        shop, shop_key = new_seller(admin, "shop", credit=100_000)
        kiosk, kiosk_key = new_seller(admin, "kiosk", credit=100_000)
        stall, stall_key = new_seller(admin, "stall", credit=100_000)
        assert admin.post(f"/api/sellers/{stall['id']}/suspend").status_code == 200
        till = admin.post(f"/api/sellers/{shop['id']}/keys", {"label": "till"})
        assert till.status_code == 201, till.text
        till_id, till_key = till.json()["id"], till.json()["api_key"]
        default_id = admin.get(f"/api/sellers/{shop['id']}/keys").json()["items"][0]["id"]
    shutil.copy2(live, copy)  # a clean stop folded the WAL in: the file is all of it
    with running_server(live) as server:
        admin = server.admin()
        revoked = admin.post(f"/api/sellers/{shop['id']}/keys/{till_id}/revoke")
        assert revoked.status_code == 200, revoked.text
        rotated = admin.post(f"/api/sellers/{shop['id']}/keys/{default_id}/rotate")
        assert rotated.status_code == 201, rotated.text
        for seller, action in ((kiosk, "suspend"), (stall, "reactivate")):
            changed = admin.post(f"/api/sellers/{seller['id']}/{action}")
            assert changed.status_code == 200 and set(changed.json()) == set(shop), changed.text
    env = {**key_env(live), "CHARGEBOX_ADMIN_TOKEN": NEW_ADMIN}
    turned = chargebox("rotate-admin-token", "--db", str(live), env=env)
    assert turned.returncode == 0, turned.stderr
    put_back(copy, live)

    audited = chargebox("audit", "--db", str(live), env=key_env(live))
    assert audited.returncode == 1
    for said in (
        f"key {till_id} of seller {shop['id']}, revoked at",
        f"key {default_id} of seller {shop['id']}, revoked at",
        "the admin token rotated in at",
        f"seller {kiosk['id']} suspended (change 1 of its status)",
        f"seller {stall['id']} reactivated (change 2 of its status)",
    ):
        assert said in audited.stderr, audited.stderr  # fmt: skip
    assert "rolled back" not in audited.stderr  # no sale since the copy
    listed = chargebox("keys", str(shop["id"]), "--db", str(live), env=key_env(live))
    assert listed.returncode == 0 and f"key {till_id} of seller" in listed.stderr, listed.stderr
    assert "is older than its anchors" in listed.stderr  # answered, with a warning
    accepted = refused_then_accepted(
        live, "lacks 5 change(s) of access", "is undone in this database"
    )
    assert accepted.count("done again: ") == 5, accepted
    assert "0 seller(s) were behind" in accepted and "5 change(s) of access done again" in accepted
    assert chargebox("audit", "--db", str(live), env=key_env(live)).returncode == 0
    again = chargebox("anchors", "accept-restore", "--db", str(live), env=key_env(live))
    assert again.returncode == 0 and "0 change(s) of access done again" in again.stderr
    listed = chargebox("keys", str(shop["id"]), "--db", str(live), env=key_env(live))
    assert listed.returncode == 0 and "warning" not in listed.stderr, listed.stderr

    with running_server(live, admin_token=NEW_ADMIN) as server:
        for key in (till_key, shop_key):
            sold = server.seller(key).post("/api/sales", SALE)
            assert sold.status_code == 401, sold.text
        assert Api(server.url, ADMIN_TOKEN).get("/api/sellers").status_code == 401
        assert Api(server.url, NEW_ADMIN).get("/api/sellers").status_code == 200
        # the rotated key's replacement was made after the copy: not in it (README)
        assert server.seller(rotated.json()["api_key"]).post("/api/sales", SALE).status_code == 401
        refused = server.seller(kiosk_key).post("/api/sales", SALE)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "seller_suspended"
        assert server.seller(stall_key).post("/api/sales", SALE).status_code == 201


@pytest.mark.sqlite_only
def test_a_copy_both_behind_and_lacking_a_suspension_is_refused_with_both_to_be_found(tmp_path):
    """Start-up checks the heads before the changes of access, and says the first it finds:
    its refusal of a copy both behind and lacking a suspension points to `anchors check`,
    which names both, and accept-restore does the suspension again."""
    live, copy = tmp_path / "chargebox.db", tmp_path / "copy.db"
    with running_server(live) as server:
        seller, key = new_seller(server.admin(), "shop", credit=100_000)
    shutil.copy2(live, copy)  # a clean stop folded the WAL in: the file is all of it
    with running_server(live) as server:
        assert server.seller(key).post("/api/sales", SALE).status_code == 201
        assert server.admin().post(f"/api/sellers/{seller['id']}/suspend").status_code == 200
    put_back(copy, live)
    checked = chargebox("anchors", "check", "--db", str(live), env=key_env(live)).stderr
    assert "rolled back" in checked, checked
    assert f"seller {seller['id']} suspended (change 1 of its status)" in checked, checked
    accepted = refused_then_accepted(live, "`chargebox anchors check` lists every one", "undone")
    assert "1 seller(s) were behind" in accepted and "1 change(s) of access done again" in accepted
    with running_server(live) as server:
        assert server.seller(key).post("/api/sales", SALE).status_code == 403


def test_the_audit_finds_what_the_database_lacks_and_a_redo_does_it(service):
    """Either backend: changes anchored as if a restored copy lacked them (anchored, not
    made); the audit names each, a redo makes each, with the anchored stamps."""
    seller = credited_seller(service, 50_000)
    made, key = service.create_key(seller["id"], "till")
    database = service.database
    revoked_at = now()
    revocations.revoked(database, {**made, "revoked_at": revoked_at}, "revoke-key")
    new_hash, rotated_at = auth.hash_key(NEW_ADMIN), now()
    revocations.admin_rotated(database, new_hash, rotated_at)
    for status, count in (("suspended", 1), ("active", 2), ("suspended", 3)):  # any order
        revocations.status_set(database, {**seller, "status": status, "status_changes": count},
                               "suspend")  # fmt: skip
    auth.Access(database, ADMIN_TOKEN).sign_in(key)  # a web session the suspension ends

    report = service.audit()
    found = [p["message"] for p in report["problems"] if p["invariant"] == "anchor"]
    assert len(found) == 3 and not report["consistent"], report["problems"]
    assert all("is undone in this database" in message for message in found)
    assert f"seller {seller['id']} suspended (change 3 of its status)" in " ".join(found)

    held = anchors.loaded(service.config, database.ledger_key)
    done = restore.redo(database, held)
    assert sorted(change.what for change in done) == ["admin", "key", "seller"]
    assert restore.redo(database, held) == []  # nothing left to do
    assert service.audit()["consistent"]
    key_row = database.rows("SELECT revoked_at FROM seller_key WHERE id = ?", (made["id"],))
    assert key_row == [(revoked_at,)]
    admin = database.rows("SELECT token_hash, changed_at FROM admin_token WHERE id = 1")
    assert admin == [(new_hash, rotated_at)]
    status = database.rows("SELECT status, status_changes FROM seller WHERE id = ?",
                           (seller["id"],))  # fmt: skip
    assert status == [("suspended", 3)]
    sessions = "SELECT count(*) FROM web_session WHERE seller_id = ?"
    assert database.rows(sessions, (seller["id"],)) == [(0,)]


def test_a_key_made_again_with_the_same_id_and_a_newer_rotation_are_passed_over(service):
    """The creation stamp names the key: one anchored under another stamp (a row of the
    copy's, made after it with the same id) is not touched; nor is a newer admin token
    than the one anchored."""
    seller = credited_seller(service, 50_000)
    made, _ = service.create_key(seller["id"], "till")
    database = service.database
    earlier = "2020-01-01T00:00:00.000000Z"
    revocations.revoked(database, {**made, "created_at": earlier, "revoked_at": now()}, "x")
    revocations.admin_rotated(database, auth.hash_key(NEW_ADMIN), earlier)
    auth.rotate_admin(database, ADMIN_TOKEN)  # a rotation newer than the anchored one
    assert service.audit()["consistent"]
    held = anchors.loaded(service.config, database.ledger_key)
    assert restore.redo(database, held) == []
    assert database.rows("SELECT revoked_at FROM seller_key WHERE id = ?", (made["id"],)) == [
        (None,)
    ]


def test_a_status_changed_again_since_or_of_a_seller_made_again_is_passed_over(
    service, monkeypatch
):
    """helper-128's cases for a seller's status: a suspension anchored in one file and a
    reactivation since (another PostgreSQL host's, or a race of two admins anchored out of
    order): the database's count has passed the anchored one, so no alarm and no redo; a
    seller of the same id made again (another creation stamp) is not touched."""
    seller = credited_seller(service, 50_000)
    database = service.database
    suspended = service.set_status(seller["id"], "suspended")
    service.set_status(seller["id"], "active")
    anchored_first = {**suspended, "status_changes": 1}  # its line after the newer one
    revocations.status_set(database, anchored_first, "suspend")
    other = {**seller, "created_at": "2020-01-01T00:00:00.000000Z", "status": "suspended"}
    revocations.status_set(database, {**other, "status_changes": 9}, "suspend")
    assert service.audit()["consistent"]
    assert restore.redo(database, anchors.loaded(service.config, database.ledger_key)) == []
    assert database.rows("SELECT status, status_changes FROM seller WHERE id = ?",
                         (seller["id"],)) == [("active", 2)]  # fmt: skip
    # Seen undone, then changed by another host before the redo's write: not done, nor said
    monkeypatch.setattr(revocations, "undone", lambda db, held: held)
    held = anchors.loaded(service.config, database.ledger_key)
    assert [c.what for c in restore.redo(database, held)] == []
    assert database.rows("SELECT status, status_changes FROM seller WHERE id = ?",
                         (seller["id"],)) == [("active", 2)]  # fmt: skip


def test_changes_of_status_at_once_are_counted_apart_and_anchored_as_they_end(service):
    """Admins suspending and reactivating one seller from many threads at once: each
    change gets a count of its own (the row's lock orders them; PostgreSQL re-reads the
    row it waited for), every one is anchored once (a suspension of a suspended seller
    is no change: neither counted nor anchored), the newest anchored is the database's
    status, and the audit finds nothing undone, whatever order the lines went in."""
    seller = credited_seller(service, 50_000)
    errors: list[BaseException] = []

    def admin(statuses: tuple[str, str]) -> None:
        try:
            for turn in range(12):
                service.set_status(seller["id"], statuses[turn % 2])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=admin, args=(("suspended", "active")[:: 1 - 2 * (n % 2)],))
               for n in range(6)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    database = service.database
    [(status, count)] = database.rows("SELECT status, status_changes FROM seller WHERE id = ?",
                                      (seller["id"],))  # fmt: skip
    held = anchors.read(service.config.anchors_path, database.ledger_key).access
    anchored = sorted((r[4], r[3]) for _, _, r in held if r[0] == revocations.SELLER)
    # each change anchored once, no-ops not at all; from active, each turns it over
    assert count >= 1 and anchored == [
        (n, "suspended" if n % 2 else "active") for n in range(1, count + 1)
    ]  # fmt: skip
    newest = next(c for c in revocations.changes(held) if c.what == revocations.SELLER)
    assert (newest.state, newest.count) == (status, count)
    assert service.audit()["consistent"]


def test_rotations_anchored_apart_or_under_a_clock_set_back_raise_no_alarm(
    service, tmp_path, monkeypatch
):
    """helper-128's cases: a rotation anchored in another file (another PostgreSQL host's
    data dir, or CHARGEBOX_ANCHORS set for one and not the other) after one anchored here,
    and one made while the clock stands before the last: the database holds the newest,
    stamped past the one before it, so neither file sees it undone, and no redo puts a
    rotated-away token back."""
    database = service.database
    auth.rotate_admin(database, NEW_ADMIN)  # anchored here
    here = database.config
    database.config = dataclasses.replace(here, anchors_file=tmp_path / "elsewhere.anchors")
    try:
        auth.rotate_admin(database, ADMIN_TOKEN)  # anchored on another host
    finally:
        database.config = here
    assert service.audit()["consistent"]
    held = anchors.loaded(here, database.ledger_key)
    assert restore.redo(database, held) == []
    assert auth.current_admin(database) == auth.hash_key(ADMIN_TOKEN)

    newest = database.rows("SELECT changed_at FROM admin_token")[0][0]
    for module in (clock, auth):  # whichever stamps it
        monkeypatch.setattr(module, "now", lambda later=None: "2020-01-01T00:00:00.000000Z")
    stamped = auth.rotate_admin(database, NEW_ADMIN)  # the clock set back years
    assert stamped > newest
    monkeypatch.undo()
    auth.rotate_admin(database, ADMIN_TOKEN)
    assert service.audit()["consistent"]
    assert restore.redo(database, anchors.loaded(here, database.ledger_key)) == []
    assert auth.current_admin(database) == auth.hash_key(ADMIN_TOKEN)


def test_the_service_anchors_each_revocation_as_it_commits(service):
    """Revoke, rotate, suspend, reactivate: each a line of kind `access`, which a restore
    line and a compaction keep; a seller's newest is its last change, by its count (a
    suspension of a suspended seller changes nothing, and is not counted)."""
    seller = credited_seller(service, 50_000)
    made, _ = service.create_key(seller["id"], "till")
    service.revoke_key(seller["id"], made["id"])
    first = service.database.rows("SELECT id FROM seller_key WHERE seller_id = ? AND "
                                  "revoked_at IS NULL", (seller["id"],))[0][0]  # fmt: skip
    service.rotate_key(seller["id"], first)
    for status in ("suspended", "suspended", "active", "suspended"):
        answered = service.set_status(seller["id"], status)
        assert answered["status"] == status and "status_changes" not in answered
    path, key = service.config.anchors_path, service.database.ledger_key
    changes = revocations.changes(anchors.read(path, key).access)
    assert sorted((c.what, c.ident[0]) for c in changes) == [
        ("key", first), ("key", made["id"]), ("seller", seller["id"])
    ]  # fmt: skip
    newest = next(c for c in changes if c.what == revocations.SELLER)
    assert (newest.state, newest.count, newest.by) == ("suspended", 3, "suspend")
    lines = [r for _, _, r in anchors.read(path, key).access if r[0] == revocations.SELLER]
    assert [(r[3], r[4]) for r in lines] == [("suspended", 1), ("active", 2), ("suspended", 3)]
    assert service.database.rows("SELECT status_changes FROM seller WHERE id = ?",
                                 (seller["id"],)) == [(3,)]  # fmt: skip
    anchors.record(service.config, key, anchors.heads(service.database), "test", "restore")
    anchors.compact(path, key)
    assert revocations.changes(anchors.read(path, key).access) == changes
    assert service.audit()["consistent"]


def test_a_change_that_cannot_be_anchored_stands_and_is_logged(service, caplog):
    """The anchors file cannot be written (a directory in its place): the revocation is
    committed and answered, and the log says it is not anchored."""
    seller = credited_seller(service, 50_000)
    made, _ = service.create_key(seller["id"], "till")
    path = Path(service.config.anchors_path)
    path.unlink(missing_ok=True)
    path.mkdir()
    with caplog.at_level(logging.ERROR, logger="chargebox.anchors"):
        assert service.revoke_key(seller["id"], made["id"])["revoked_at"] is not None
    assert "could not be anchored" in caplog.text and "restored later" in caplog.text
    revoked = service.database.rows("SELECT revoked_at FROM seller_key WHERE id = ?",
                                    (made["id"],))  # fmt: skip
    assert revoked[0][0] is not None


@pytest.mark.postgresql_only
def test_two_rotations_at_once_leave_the_newer_stamp_on_the_token_in_force(
    config, service, monkeypatch
):
    """helper-129: at READ COMMITTED, a rotation that had read the stamp before another
    committed wrote its older stamp over the newer one: the audit then saw the newest
    anchored rotation undone, and a redo put back the token that had lost. Rotations go
    one at a time: the second, started while the first holds its stamp, waits for it."""
    other = Chargebox(config)
    second: list[str] = []
    looked = clock.after

    def first_looks(stored):
        monkeypatch.setattr(clock, "after", looked)  # the second rotation's is the real one
        waiting = threading.Thread(
            target=lambda: second.append(auth.rotate_admin(other.database, ADMIN_TOKEN))
        )
        waiting.start()
        wait_until(lambda: advisory_waits(config) == 1, "the second rotation waits")
        return looked(stored)

    monkeypatch.setattr(clock, "after", first_looks)
    try:
        first = auth.rotate_admin(service.database, NEW_ADMIN)
        wait_until(lambda: bool(second), "the second rotation done")
    finally:
        other.close()
    assert second[0] > first
    assert auth.current_admin(service.database) == auth.hash_key(ADMIN_TOKEN)
    assert service.audit()["consistent"]
    held = anchors.loaded(service.config, service.database.ledger_key)
    assert restore.redo(service.database, held) == []


def advisory_waits(config) -> int:
    """Sessions of the test's database waiting for an advisory lock."""
    with psycopg.connect(owner_url(config.db_url), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()[0]
