"""PostgreSQL's own faults, met by a real server: a lock held elsewhere (a row, a
table, a migration's ACCESS EXCLUSIVE that even reads wait for), a database turned
read-only, and the server's sessions terminated under keyed load.

Each answer is a 201 or a JSON 503 `unavailable` (never a 500), a refused write
changes nothing, and what a client retries after a 503 (with the same key) sells
exactly once. The books are re-added from a fresh connection and `chargebox audit`
must be clean. The lock timeout is the busy timeout, set short here; no assertion
is on speed: an answer before the client's own 30 s timeout shows nothing hung.
"""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
import requests
from psycopg.conninfo import conninfo_to_dict

from chargebox import pg_driver
from chargebox.config import Config
from chargebox.errors import Unavailable
from chargebox.postgresql import Database
from tests import pg_cluster
from tests.support import ADMIN_TOKEN, cli_audit
from tests.test_postgresql_servers import (
    AMOUNT,
    PHONE,
    audit_is_clean,
    funded_seller,
    keyed_load_disrupted,
)
from tests.test_postgresql_service import books

pytestmark = pytest.mark.parallel
BUSY_TIMEOUT_MS = 1_000
CLIENT_TIMEOUT = 30
RETRIES = 50  # a 503 per server thread whose session was lost, at most, then it sells


@pytest.fixture
def database(postgresql_cluster, tmp_path, monkeypatch):
    """A database made by init-db, and servers started on it with a short busy timeout
    and few threads (each holds a session): (roles, data dir, serve())."""
    monkeypatch.setenv("CHARGEBOX_BUSY_TIMEOUT_MS", str(BUSY_TIMEOUT_MS))
    monkeypatch.setenv("CHARGEBOX_THREADS", "8")
    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "faults", data)
    runs = iter(range(100))

    def serve():
        log = tmp_path / f"server-{next(runs)}.log"
        return pg_cluster.serving(made.app_url, data, log, ADMIN_TOKEN)

    return made, data, serve


def sale(url: str, key: str, idempotency_key: str) -> requests.Response:
    return requests.post(
        url + "/api/sales",
        json={"phone": PHONE, "amount": AMOUNT},
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key},
        timeout=CLIENT_TIMEOUT,
    )


def is_unavailable(answer: requests.Response) -> bool:
    """A JSON 503 as docs/api.md has it: `unavailable`, with Retry-After."""
    return (
        answer.status_code == 503
        and answer.headers["Content-Type"].startswith("application/json")
        and answer.json()["error"]["code"] == "unavailable"
        and answer.headers["Retry-After"] == "1"
    )


def sold_on_retry(url: str, key: str, idempotency_key: str) -> dict:
    """Sent again while the answer is a JSON 503, as a client does; the 201's sale."""
    for _ in range(RETRIES):
        answer = sale(url, key, idempotency_key)
        if answer.status_code == 201:
            return answer.json()
        assert is_unavailable(answer), (answer.status_code, answer.text)
    raise AssertionError(f"{idempotency_key} still refused after {RETRIES} tries")


def the_books(app_url: str) -> tuple:
    """Every balance (re-added from its ledger) and the rows a write would add."""
    with psycopg.connect(app_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM sale), (SELECT count(*) FROM ledger_entry),"
            " (SELECT count(*) FROM idempotency_record)"
        ).fetchone()
    return books(app_url), counts


def terminate_sessions(cluster: pg_cluster.Cluster, role: str) -> int:
    """pg_terminate_backend of every session of `role`, from a superuser's; how many."""
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
            (role,),
        ).fetchone()[0]
    return ended


def set_read_only(cluster: pg_cluster.Cluster, app_url: str, on: bool) -> None:
    """Every new session of the database starts read-only (or not), as a DBA sets it."""
    name = conninfo_to_dict(app_url)["dbname"]
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        value = "on" if on else "off"
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = {value}")


HOLDERS = {
    "seller_row_for_update": "SELECT 1 FROM seller WHERE id = %(seller)s FOR UPDATE",
    "sale_table_locked": "LOCK TABLE sale IN EXCLUSIVE MODE",
}


@pytest.mark.parametrize("hold", HOLDERS.values(), ids=HOLDERS.keys())
def test_a_lock_held_elsewhere_answers_a_json_503_then_the_same_request_sells(database, hold):
    """Another connection (the schema's owner) holds a lock a sale needs, inside an open
    transaction: the sale waits at most its lock timeout and is refused with nothing
    changed; once the holder lets go, the very same request (same key) sells."""
    made, data, serve = database
    with serve() as (url, _, _):
        seller_id, key = funded_seller(url, 10_000)
        before = the_books(made.app_url)
        with psycopg.connect(made.owner_url) as holder:
            holder.execute(hold, {"seller": seller_id})
            refused = sale(url, key, "held-1")  # answered: within the client's timeout
            assert is_unavailable(refused), (refused.status_code, refused.text)
            holder.rollback()
        assert the_books(made.app_url) == before
        sold = sale(url, key, "held-1")
        assert sold.status_code == 201 and sold.json()["balance_after"] == 9_000, sold.text
    assert books(made.app_url) == {seller_id: 9_000}
    assert cli_audit(made.app_url, data).returncode == 0


def test_a_table_locked_for_a_migration_answers_reads_and_sales_with_503(database):
    """The schema's owner holds ACCESS EXCLUSIVE on `seller` in an open transaction, as
    an ALTER TABLE of a migration does: even a read (the key's look-up, the balance)
    waits at most the lock timeout and answers a JSON 503 instead of hanging; once the
    lock is let go, the same requests answer and the sale sells once."""
    made, data, serve = database
    with serve() as (url, _, _):
        seller_id, key = funded_seller(url, 10_000)
        seller = {"Authorization": f"Bearer {key}"}
        with psycopg.connect(made.owner_url) as holder:
            holder.execute("LOCK TABLE seller IN ACCESS EXCLUSIVE MODE")
            me = requests.get(url + "/api/me", headers=seller, timeout=CLIENT_TIMEOUT)
            assert is_unavailable(me), (me.status_code, me.text)
            refused = sale(url, key, "locked-1")
            assert is_unavailable(refused), (refused.status_code, refused.text)
            holder.rollback()
        me = requests.get(url + "/api/me", headers=seller, timeout=CLIENT_TIMEOUT)
        assert me.status_code == 200 and me.json()["balance"] == 10_000, me.text
        sold = sale(url, key, "locked-1")
        assert sold.status_code == 201 and sold.json()["balance_after"] == 9_000, sold.text
    assert books(made.app_url) == {seller_id: 9_000}
    assert cli_audit(made.app_url, data).returncode == 0


def test_a_read_only_database_refuses_sales_with_503_and_still_reads(database, postgresql_cluster):
    """The DBA makes the database read-only (`default_transaction_read_only`); a server
    whose sessions start so refuses a sale with a JSON 503 and changes nothing, while
    the seller's balance, its ledger and /health still answer. Turned writable again
    and the server's sessions ended, the same key sells (after a 503 per lost session)."""
    made, data, serve = database
    with serve() as (url, _, _):
        seller_id, key = funded_seller(url, 10_000)
        assert sale(url, key, "before").status_code == 201
    set_read_only(postgresql_cluster, made.app_url, True)
    before = the_books(made.app_url)
    with serve() as (url, _, _):
        seller = {"Authorization": f"Bearer {key}"}
        for _ in range(3):  # on more than one of its sessions
            refused = sale(url, key, "while-read-only")
            assert is_unavailable(refused), (refused.status_code, refused.text)
        me = requests.get(url + "/api/me", headers=seller, timeout=CLIENT_TIMEOUT)
        assert me.status_code == 200 and me.json()["balance"] == 9_000, me.text
        ledger = requests.get(url + "/api/ledger", headers=seller, timeout=CLIENT_TIMEOUT)
        assert ledger.status_code == 200 and len(ledger.json()["items"]) == 2, ledger.text
        assert requests.get(url + "/health", timeout=CLIENT_TIMEOUT).status_code == 200
        assert the_books(made.app_url) == before

        set_read_only(postgresql_cluster, made.app_url, False)
        terminate_sessions(postgresql_cluster, made.app_role)
        assert sold_on_retry(url, key, "while-read-only")["balance_after"] == 8_000
    assert books(made.app_url) == {seller_id: 8_000}
    assert cli_audit(made.app_url, data).returncode == 0


def test_sessions_terminated_under_keyed_load_answer_503s_and_lose_nothing(
    database, postgresql_cluster
):
    """A client process sells 300 keys; meanwhile every session of the app role is ended
    with pg_terminate_backend three times. The answers are 201s and JSON 503s only;
    every acknowledged sale is in the books, and each key, retried, sells once."""
    made, data, serve = database
    keys = [f"dropped-{n}" for n in range(300)]
    with serve() as (url, _, _):
        seller_id, key = funded_seller(url, 1_000_000)
        ended = []

        def terminate_three_times() -> None:
            on_the_database = postgresql_cluster.url(db=conninfo_to_dict(made.app_url)["dbname"])
            with psycopg.connect(on_the_database, autocommit=True) as watch:
                for _ in range(3):
                    ended.append(terminate_sessions(postgresql_cluster, made.app_role))
                    sold = watch.execute("SELECT count(*) FROM sale").fetchone()[0]
                    deadline = time.monotonic() + 30
                    while (
                        watch.execute("SELECT count(*) FROM sale").fetchone()[0] < sold + 20
                        and time.monotonic() < deadline
                    ):
                        time.sleep(0.01)  # polled: 20 more sales between terminations

        first = keyed_load_disrupted(url, key, keys, made.app_url, 20, terminate_three_times)
        statuses = [status for _, status, _ in first]
        assert set(statuses) <= {201, 503}, statuses
        acknowledged = {k: sale_id for k, status, sale_id in first if status == 201}
        for idempotency_key in keys:
            again = sold_on_retry(url, key, idempotency_key)
            assert again["id"] == acknowledged.get(idempotency_key, again["id"])
        assert audit_is_clean(url)
    with psycopg.connect(made.app_url) as conn:
        assert conn.execute("SELECT count(*) FROM sale").fetchone() == (len(keys),)
    assert books(made.app_url) == {seller_id: 1_000_000 - AMOUNT * len(keys)}
    assert cli_audit(made.app_url, data).returncode == 0
    print(
        f"\nsessions ended {ended}: {len(acknowledged)} acknowledged, "
        f"{statuses.count(503)} answered 503; all {len(keys)} keys sold once after"
    )


def test_a_write_whose_session_is_ended_is_unavailable_and_said_once(
    postgresql_cluster, tmp_path, caplog
):
    """A write whose session PostgreSQL ends mid-transaction is Unavailable (503), and
    psycopg's own WARNING that the write's pipeline could not be ended ("error ignored
    terminating <psycopg.Pipeline [BAD] at 0x...>: the connection is lost") is not logged
    beside it: one lost connection, one account of it."""
    made = pg_cluster.initialised(postgresql_cluster, "ended", tmp_path / "data")
    database = Database(Config(db_url=made.app_url, data_dir=tmp_path / "data"))
    on_the_database = postgresql_cluster.url(db=conninfo_to_dict(made.app_url)["dbname"])
    caplog.set_level(logging.INFO)
    try:
        with (
            psycopg.connect(on_the_database, autocommit=True) as superuser,
            pytest.raises(Unavailable),
            database.transaction() as write,
        ):
            backend = database.connection().info.backend_pid
            superuser.execute("SELECT pg_terminate_backend(%s)", (backend,))
            write.execute("SELECT 1")
    finally:
        database.close()
    said = [f"{record.name}: {record.getMessage()}" for record in caplog.records]
    assert not [line for line in said if line.startswith("psycopg")], said


def test_a_role_whose_connections_are_spent_is_503_and_the_log_says_why_once_a_minute(
    postgresql_cluster, tmp_path, caplog
):
    """The app role's CONNECTION LIMIT spent (or PostgreSQL down): every request was 503
    and the log said nothing of why (helper-139). It says so now, once a minute a reason,
    never the URL's password."""
    made = pg_cluster.initialised(postgresql_cluster, "spent", tmp_path / "data")
    database = Database(Config(db_url=made.app_url, data_dir=tmp_path / "data"))
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger=pg_driver.UNAVAILABLE_LOG)  # a command quiets it
    with psycopg.connect(postgresql_cluster.url(), autocommit=True) as superuser:
        superuser.execute(f"ALTER ROLE {made.app_role} CONNECTION LIMIT 0")
        try:
            for _ in range(3):
                with pytest.raises(Unavailable):
                    database.connection()
        finally:
            superuser.execute(f"ALTER ROLE {made.app_role} CONNECTION LIMIT -1")
            database.close()
    said = [
        record.getMessage() for record in caplog.records if "cannot connect" in record.getMessage()
    ]
    assert len(said) == 1 and "too many connections" in said[0], said
    password = conninfo_to_dict(made.app_url).get("password")
    assert not password or password not in said[0]


def test_why_a_request_was_503_is_libpqs_first_line_when_the_server_said_nothing():
    """A connection lost mid-request has no server message: the log said only
    "OperationalError" (helper-140). A server's refusal is its primary message, never
    what follows it (a DETAIL may quote a row)."""
    lost = psycopg.OperationalError("consuming input failed: server closed the connection\n\tmore")
    assert pg_driver._why(lost) == "consuming input failed: server closed the connection"
    assert pg_driver._why(psycopg.errors.ReadOnlySqlTransaction("cbk_secret row")) == (
        "ReadOnlySqlTransaction"
    )
