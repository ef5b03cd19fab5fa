"""Web sessions of `Chargebox` on a real SQLite file (typed amounts: test_typed_amounts).

access.sign_in / access.session / access.sign_out are called in-process (the `service`
fixture); what they leave on disk is read back with a separate sqlite3
connection. Expiry is simulated by moving a session's `expires_at` in the
file, never by sleeping.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

import pytest

from chargebox import auth
from chargebox.auth import ADMIN, SESSION_LIFETIME, Principal
from chargebox.errors import Unauthorized
from chargebox.services import Chargebox
from tests.support import (
    ADMIN_TOKEN,
    REFUSED,
    database_of,
    postgresql_plan,
    rows_read,
    sqlite_plan,
    writable,
)

PAST = "2000-01-01T00:00:00.000000Z"


def sql(config, statement: str, params: tuple = ()) -> list[tuple]:
    """One statement on a fresh connection of its own, committed."""
    with writable(database_of(config)) as conn:
        cursor = conn.execute(statement, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def digest(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()


def expire(config, session: str) -> None:
    sql(
        config,
        "UPDATE web_session SET expires_at = ? WHERE token_hash = ?",
        (PAST, digest(session)),
    )


@pytest.fixture
def seller(service) -> tuple[dict, str]:
    return service.create_seller("shop")


# --- signing in ------------------------------------------------------------------------------


def test_a_seller_key_opens_a_twelve_hour_session_acting_as_that_seller(service, config, seller):
    (shop, key), other = seller, service.create_seller("other")[0]
    session, principal = service.access.sign_in(key)
    assert principal == Principal("seller", shop["id"]) != Principal("seller", other["id"])
    assert service.access.session(session) == principal
    [(role, seller_id, created, expires)] = sql(
        config, "SELECT role, seller_id, created_at, expires_at FROM web_session"
    )
    assert (role, seller_id) == ("seller", shop["id"])
    lifetime = datetime.datetime.fromisoformat(expires) - datetime.datetime.fromisoformat(created)
    assert abs(lifetime - SESSION_LIFETIME) < datetime.timedelta(seconds=5)


def test_the_admin_token_opens_an_admin_session_even_with_spaces_around_it(service, config):
    session, principal = service.access.sign_in(f"  {ADMIN_TOKEN}\n")
    assert principal == ADMIN == service.access.session(session)
    assert sql(config, "SELECT role, seller_id FROM web_session") == [("admin", None)]


@pytest.mark.parametrize(
    "token",
    ["cbk_" + "A" * 43, ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], "", "  \t", None, 42, b"bytes"],
    ids=["unknown key", "token+x", "token-1", "empty", "blank", "None", "int", "bytes"],
)
def test_an_unknown_or_blank_token_opens_no_session(service, config, seller, token):
    with pytest.raises(Unauthorized) as refused:
        service.access.sign_in(token)
    assert not isinstance(token, str) or not token or token not in refused.value.message
    assert sql(config, "SELECT COUNT(*) FROM web_session") == [(0,)]


# --- which sessions are honoured ---------------------------------------------------------------


@pytest.mark.parametrize("session", [None, "", "x" * 600, auth.new_session_token()[0]])
def test_a_missing_oversized_or_unknown_cookie_acts_as_nobody(service, seller, session):
    service.access.sign_in(seller[1])
    assert service.access.session(session) is None


def test_an_expired_session_acts_as_nobody_and_others_are_untouched(service, config, seller):
    (expired, _), (live, principal) = (
        service.access.sign_in(seller[1]),
        service.access.sign_in(seller[1]),
    )
    assert service.access.session(expired) == principal
    expire(config, expired)
    assert service.access.session(expired) is None
    assert service.access.session(live) == principal


def test_a_session_opened_by_a_clock_running_ahead_ends_when_the_clock_is_set_back(
    service, monkeypatch, seller
):
    """Opened a year ahead, it would last a year once NTP set the clock right; opened by a
    host a minute ahead of this one (CLOCK_SKEW), it is good."""
    real = auth.now

    def clock_ahead(by: datetime.timedelta):
        return lambda later=datetime.timedelta(0): real(later + by)

    for ahead, lasts in ((datetime.timedelta(days=365), False),
                         (datetime.timedelta(minutes=1), True)):  # fmt: skip
        monkeypatch.setattr(auth, "now", clock_ahead(ahead))
        session, principal = service.access.sign_in(seller[1])
        assert service.access.session(session) == principal
        monkeypatch.undo()
        assert (service.access.session(session) == principal) is lasts


def test_an_admin_session_ends_when_the_admin_token_changes(service, config, seller):
    (admin_session, _), (seller_session, shop) = (
        service.access.sign_in(ADMIN_TOKEN),
        service.access.sign_in(seller[1]),
    )
    renewed = Chargebox(
        dataclasses.replace(service.config, admin_token="a-new-admin-token-9876543210")
    )
    assert renewed.access.session(admin_session) is None
    assert renewed.access.session(seller_session) == shop  # a seller's key did not change
    assert renewed.access.sign_in("a-new-admin-token-9876543210")[1] == ADMIN
    without = Chargebox(dataclasses.replace(service.config, admin_token=None))
    assert without.access.session(admin_session) is None
    assert service.access.session(admin_session) == ADMIN  # the old token still holds it


def test_signing_out_ends_that_session_only_and_removes_its_row(service, config, seller):
    (leaving, _), (staying, principal) = (
        service.access.sign_in(seller[1]),
        service.access.sign_in(seller[1]),
    )
    service.access.sign_out(leaving)
    assert service.access.session(leaving) is None
    assert service.access.session(staying) == principal
    assert sql(config, "SELECT token_hash FROM web_session") == [(digest(staying),)]
    service.access.sign_out(leaving)  # twice, or an unknown session: nothing to do, no error
    service.access.sign_out(auth.new_session_token()[0])
    assert service.access.session(staying) == principal


def test_a_sign_in_while_the_clock_runs_ahead_sweeps_no_session_still_good(
    service, monkeypatch, seller
):
    """A sign-in during a clock's jump ahead (a virtual machine resumed, 13 hours on) swept
    every session it took as expired, on every host, though each was good again once the
    clock was set right."""
    real = auth.now
    clerk, principal = service.access.sign_in(seller[1])
    admin, _ = service.access.sign_in(ADMIN_TOKEN)
    monkeypatch.setattr(auth, "now", lambda later=datetime.timedelta(0): real(
        later + datetime.timedelta(hours=13)))  # fmt: skip
    assert service.access.session(clerk) is None  # expired, as far as this clock knows
    service.access.sign_in(seller[1])
    monkeypatch.undo()
    assert service.access.session(clerk) == principal
    assert service.access.session(admin) == ADMIN


def test_expired_sessions_are_swept_out_at_the_next_sign_in(service, config, seller):
    (old, _), (live, _) = service.access.sign_in(seller[1]), service.access.sign_in(ADMIN_TOKEN)
    expire(config, old)
    assert sql(config, "SELECT COUNT(*) FROM web_session") == [(2,)]
    new, _ = service.access.sign_in(seller[1])
    stored = {row[0] for row in sql(config, "SELECT token_hash FROM web_session")}
    assert stored == {digest(live), digest(new)}


def test_each_holder_keeps_its_newest_sessions_and_a_sign_in_ends_the_oldest(
    service, monkeypatch, seller
):
    """A seller's flood of sign-ins (1,300 a second, each a session) left rows that a
    suspension, or a later sweep, deleted in one write of seconds under the write lock:
    the admin and each seller keep MAX_SESSIONS open, a sign-in past it ends the oldest."""
    monkeypatch.setattr(auth, "MAX_SESSIONS", 3)
    other, other_key = service.create_seller("Other")
    theirs, _ = service.access.sign_in(other_key)
    for key, principal in ((seller[1], None), (ADMIN_TOKEN, ADMIN)):
        sessions = [service.access.sign_in(key) for _ in range(5)]
        principal = principal or sessions[0][1]
        assert [service.access.session(made) for made, _ in sessions] == [None] * 2 + [
            principal
        ] * 3
    assert service.access.session(theirs).seller_id == other["id"]


def test_a_holders_sessions_are_found_along_an_index_not_by_a_read_of_every_one(
    service, config, seller
):
    """On PostgreSQL web_session had no index by seller: each sign-in (ending the holder's
    oldest past MAX_SESSIONS) and each suspension read every session, 55 ms a sign-in at
    100,000 (helper-94). Schema version 10 adds one (SQLite's file has had one)."""
    other, _ = service.create_seller("Other")
    sql(config, "INSERT INTO web_session (token_hash, role, seller_id, credential_hash,"
        " created_at, expires_at) SELECT 'h' || n, 'seller', ?, 'c', 'now', 'later' FROM"
        " (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3000)"
        " SELECT n FROM r) AS numbers", (other["id"],))  # fmt: skip
    service.access.sign_in(seller[1])
    reader = service.queries.reader
    for who, params in (("seller_id = ?", (seller[0]["id"],)), ("seller_id IS NULL", ())):
        oldest = f"SELECT id FROM web_session WHERE {who} ORDER BY id DESC LIMIT 1 OFFSET 0"
        if config.db_url:
            sql(config, "ANALYZE web_session")
            assert rows_read(postgresql_plan(reader, oldest, params)) < 100
        else:
            assert "USING COVERING INDEX web_session_seller_id" in sqlite_plan(
                reader, oldest, params
            )


def test_a_sign_in_sweeps_a_bounded_number_of_expired_sessions(
    service, config, monkeypatch, seller
):
    """A million expired sessions were swept by the next sign-in in one write of 13.5 s,
    under the write lock: each sign-in sweeps SWEEP at most."""
    monkeypatch.setattr(auth, "SWEEP", 3)
    other, other_key = service.create_seller("Other")
    for session in [service.access.sign_in(other_key)[0] for _ in range(5)]:
        expire(config, session)
    count = "SELECT COUNT(*) FROM web_session WHERE expires_at = ?"
    assert sql(config, count, (PAST,)) == [(5,)]
    service.access.sign_in(seller[1])
    assert sql(config, count, (PAST,)) == [(2,)]
    service.access.sign_in(seller[1])
    assert sql(config, count, (PAST,)) == [(0,)]


@pytest.mark.sqlite_only  # the files themselves
def test_only_the_sha256_of_a_session_cookie_is_stored(service, config, seller):
    sessions = [service.access.sign_in(seller[1])[0], service.access.sign_in(ADMIN_TOKEN)[0]]
    stored = {row[0] for row in sql(config, "SELECT token_hash FROM web_session")}
    assert stored == {digest(session) for session in sessions}
    files = sorted(database_of(config).parent.glob(database_of(config).name + "*"))
    assert database_of(config) in files
    on_disk = b"".join(path.read_bytes() for path in files)
    for secret in (*sessions, seller[1], ADMIN_TOKEN):
        assert secret.encode() not in on_disk


def test_each_session_has_its_own_csrf_token_that_is_not_its_cookie(service, seller):
    first, second = service.access.sign_in(seller[1])[0], service.access.sign_in(seller[1])[0]
    assert auth.csrf_token(first) != auth.csrf_token(second)
    assert auth.csrf_token(first) == auth.csrf_token(first) != first


@pytest.mark.parametrize(
    "role, with_seller, accepted",
    [
        ("seller", False, False),
        ("admin", True, False),
        ("root", False, False),
        ("seller", True, True),
        ("admin", False, True),
    ],
)
def test_the_database_allows_a_seller_id_on_seller_sessions_only(
    service, config, seller, role, with_seller, accepted
):
    row = (digest(role), role, seller[0]["id"] if with_seller else None, "h" * 64, PAST, PAST)
    insert = (
        "INSERT INTO web_session (token_hash, role, seller_id, credential_hash, created_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?)"
    )
    if accepted:
        sql(config, insert, row)
    else:
        with pytest.raises(REFUSED, match="(?i)check"):
            sql(config, insert, row)
    assert sql(config, "SELECT COUNT(*) FROM web_session") == [(int(accepted),)]
