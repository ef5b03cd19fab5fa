"""`chargebox init-db --db OWNER_URL --grant-to APP_ROLE` on a real PostgreSQL cluster.

The schema is created by its owner; the service's role gets only what the
service needs. With those rights a script can do every legitimate write, and
none of the ways to rewrite history: no UPDATE, DELETE or TRUNCATE of what is
append-only, no trigger switched off (that needs a superuser or the owner).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from chargebox import guards, postgresql
from chargebox.pg_driver import NOT_GRANTED
from chargebox.process import ServerProcess
from tests import pg_cluster
from tests.support import ROOT, Api, alive, new_seller

SALE = {"phone": "09121234567", "amount": 1_000}

T = "2026-12-01T00:00:00.000000Z"
_names = itertools.count()


def chargebox(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def roles(postgresql_cluster, tmp_path):
    """A database owned by a fresh owner role, and a fresh app role: their URLs."""
    made = pg_cluster.new_database(postgresql_cluster, "init")
    return {"owner": made.owner_url, "app": made.app_url, "app_role": made.app_role,
            "data": tmp_path / "data"}  # fmt: skip


def init_db(roles: dict, grant_to: str | None = None) -> subprocess.CompletedProcess:
    grant = ["--grant-to", grant_to] if grant_to else []
    return chargebox("init-db", "--db", roles["owner"], *grant, "--data-dir", str(roles["data"]))


@pytest.fixture
def granted(roles):
    result = init_db(roles, roles["app_role"])
    assert result.returncode == 0, result.stderr
    return roles


def test_init_db_creates_the_schema_and_the_secrets_and_never_shows_a_password(roles):
    result = init_db(roles, roles["app_role"])
    assert result.returncode == 0, result.stderr
    assert "schema ready" in result.stderr and "***" in result.stderr
    assert "secret" not in result.stdout + result.stderr
    assert {path.name for path in roles["data"].iterdir()} == {"admin_token", "ledger_key"}
    again = init_db(roles)
    assert again.returncode == 0, again.stderr  # once is enough: the second changes nothing
    with psycopg.connect(roles["owner"]) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)


def test_an_app_server_given_no_ledger_key_or_admin_token_refuses_to_make_its_own(
    granted, tmp_path
):
    """Before anything is sealed, a server whose --data-dir lacked init-db's key made its
    own and sealed with it beside the others: the books mixed two keys for good. One
    given the key but no admin token made a token of its own, its admin on that server
    alone (and wrote it before refusing for the key). Neither is made, nor any file."""
    token = (granted["data"] / "admin_token").read_text().strip()
    key = (granted["data"] / "ledger_key").read_text().strip()
    other = tmp_path / "other"
    for command in (["create-seller", "Ali"], ["serve", "--port", "0"]):
        for given, lacking in (
            ({"CHARGEBOX_ADMIN_TOKEN": token}, "ledger key"),
            ({"CHARGEBOX_LEDGER_KEY": key}, "admin token"),
            ({}, "admin token"),
        ):
            refused = chargebox(*command, "--db", granted["app"], "--data-dir", str(other), **given)
            assert refused.returncode == 2, refused.stderr
            (line,) = refused.stderr.strip().splitlines()
            name = lacking.replace(" ", "_")
            assert f"no {lacking} in {other / name}" in line and "init-db" in line, line
            assert not other.exists()
    given = chargebox("create-seller", "Ali", "--db", granted["app"], "--data-dir", str(other),
                      CHARGEBOX_ADMIN_TOKEN=token, CHARGEBOX_LEDGER_KEY=key)  # fmt: skip
    assert given.returncode == 0, given.stderr


def test_a_server_whose_role_commits_without_waiting_for_the_disk_says_so(granted):
    """`synchronous_commit = off` (set for the database here) lost acknowledged sales on
    `kill -9` of PostgreSQL: the server starts, with a warning; its start line does not
    claim SQLite's `synchronous=`, which PostgreSQL has not."""
    with psycopg.connect(granted["owner"], autocommit=True) as owner:
        database = owner.execute("SELECT current_database()").fetchone()[0]
        owner.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    token = (granted["data"] / "admin_token").read_text().strip()
    server = ServerProcess(granted["app"], token, os.environ, data_dir=granted["data"]).start()
    try:
        assert "synchronous=" not in server.announced, server.announced
    finally:
        assert server.stop() == 0
    said = server.log_path.read_text()
    assert "warning: synchronous_commit is off (for the server" in said, said


def test_a_role_that_does_not_exist_is_one_line(roles):
    result = init_db(roles, "nobody_here")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--grant-to nobody_here" in result.stderr
    assert '(CREATE ROLE "nobody_here" LOGIN' in result.stderr
    # a name SQL must quote is quoted in the hint (it was pasted as a syntax error)
    odd = init_db(roles, 'no-such "role"')
    assert odd.returncode == 2 and '(CREATE ROLE "no-such ""role""" LOGIN' in odd.stderr
    # an empty name granted nothing and said nothing (helper-113)
    empty = chargebox("init-db", "--db", roles["owner"], "--grant-to", "", "--data-dir",
                      str(roles["data"]))  # fmt: skip
    assert empty.returncode == 2 and "--grant-to: an empty role name" in empty.stderr
    assert not roles["data"].exists()


@pytest.mark.parametrize(
    "command",
    [["init-db"], ["audit"], ["audit", "--full"], ["anchors", "check"], ["create-seller", "Ali"],
     ["rotate-admin-token"], ["migrate"]],
)  # fmt: skip
def test_a_database_that_cannot_be_reached_is_one_line_without_its_password(tmp_path, command):
    """Each command names the database and why it cannot reach it (the audit and the
    anchors said only "the database is unavailable; retry shortly", the API's words)."""
    url = "postgresql://someone:hunter2-secret@127.0.0.1:1/nowhere"
    data = tmp_path / "data"
    data.mkdir()
    (data / "ledger_key").write_text("k" * 43 + "\n")  # the anchors' check needs one first
    result = chargebox(*command, "--db", url, "--data-dir", str(data))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot connect" in result.stderr and "hunter2" not in result.stderr
    assert "Connection refused" in result.stderr and "Traceback" not in result.stderr


def app_writes_a_credit(conn) -> int:
    """Every legitimate write of a credit, in the service's order, with the app's rights."""
    with conn.transaction():
        (seller,) = conn.execute(
            "INSERT INTO seller (name, balance, created_at) VALUES ('Ali', 0, %s) RETURNING id",
            (T,),
        ).fetchone()
        (request,) = conn.execute(
            "INSERT INTO credit_request (seller_id, amount, created_at) VALUES (%s, 5000, %s)"
            " RETURNING id",
            (seller, T),
        ).fetchone()
        conn.execute(
            "UPDATE credit_request SET status = 'approved', decided_at = %s WHERE id = %s",
            (T, request),
        )
        conn.execute("UPDATE seller SET balance = balance + 5000 WHERE id = %s", (seller,))
        (entry,) = conn.execute(
            "INSERT INTO ledger_entry (seller_id, seq, kind, amount, balance_after,"
            " credit_request_id, created_at) VALUES (%s, 1, 'credit', 5000, 5000, %s, %s)"
            " RETURNING id",
            (seller, request, T),
        ).fetchone()
        conn.execute("INSERT INTO ledger_seal (entry_id, mac) VALUES (%s, %s)", (entry, "m" * 64))
        conn.execute(
            "INSERT INTO seller_head (seller_id, entry_id, entries, entry_mac, mac)"
            " VALUES (%s, %s, 1, %s, %s) ON CONFLICT (seller_id) DO UPDATE"
            " SET entry_id = excluded.entry_id, entries = excluded.entries",
            (seller, entry, "m" * 64, "h" * 64),
        )
        conn.execute(
            "INSERT INTO web_session (token_hash, role, credential_hash, created_at, expires_at)"
            " VALUES (%s, 'admin', %s, %s, %s)",
            ("s" * 64, "c" * 64, T, T),
        )
        conn.execute("DELETE FROM web_session WHERE expires_at <= %s", (T,))
    return seller


def test_the_app_role_can_do_every_write_the_service_does(granted):
    with psycopg.connect(granted["app"], autocommit=True) as conn:
        seller = app_writes_a_credit(conn)
        assert conn.execute("SELECT balance FROM seller WHERE id = %s", (seller,)).fetchone() == (
            5000,
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET reason = 'edited'",
        "DELETE FROM ledger_entry",
        "TRUNCATE ledger_entry",
        "UPDATE ledger_seal SET mac = 'x'",
        "TRUNCATE sale",
        "DELETE FROM idempotency_record",
        "UPDATE seller SET name = 'renamed'",
        "UPDATE seller_key SET key_hash = 'stolen'",
        "DELETE FROM seller_key",
        "DELETE FROM seller",
        "SET session_replication_role = replica",
        "ALTER TABLE ledger_entry DISABLE TRIGGER ALL",
        "DROP TRIGGER ledger_entry_no_update ON ledger_entry",
        "CREATE TABLE mine (x int)",
        "INSERT INTO schema_version (version, applied_at) VALUES (99, 'now')",
    ],
)
def test_the_app_role_cannot_rewrite_history_or_switch_a_guard_off(granted, statement):
    with psycopg.connect(granted["app"], autocommit=True) as conn:
        app_writes_a_credit(conn)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        assert conn.execute("SELECT count(*), sum(amount) FROM ledger_entry").fetchone() == (
            1,
            5000,
        )


def test_a_temporary_table_of_the_app_role_hides_no_table_from_a_guard(granted):
    """PUBLIC may make temporary tables in a new database (PostgreSQL's default), and where
    a search_path leaves pg_temp out, it is searched first. The guard functions took the
    search_path of the session that made them, so the app role could hide `seller` from
    one behind a temporary table of its own, there calling a suspended seller active, and
    sell for it (or hide `sale`, and refund more than a sale). Their search_path is the
    schema, then pg_temp: the guard reads the real table and refuses."""
    name = granted["owner"].rsplit("/", 1)[1]
    with psycopg.connect(granted["owner"], autocommit=True) as owner:
        owner.execute(f"GRANT TEMPORARY ON DATABASE {name} TO PUBLIC")
    with psycopg.connect(granted["app"], autocommit=True) as conn:
        seller = app_writes_a_credit(conn)
        conn.execute(
            "UPDATE seller SET status = 'suspended', status_changes = status_changes + 1"
            " WHERE id = %s",
            (seller,),
        )
        conn.execute("CREATE TEMPORARY TABLE seller AS SELECT * FROM public.seller")
        conn.execute("UPDATE pg_temp.seller SET status = 'active'")
        conn.execute(
            "INSERT INTO phone (number, total_charged, created_at) VALUES ('09121234567', 0, %s)",
            (T,),
        )
        with pytest.raises(psycopg.errors.IntegrityError, match="a suspended seller cannot sell"):
            conn.execute(
                "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
                " VALUES (%s, '09121234567', 10, 4990, %s)",
                (seller, T),
            )


def test_the_app_role_gets_nothing_on_a_table_of_the_operators_own(granted):
    """init-db (and migrate, through the same grants.grant) grant the service's role what
    it needs on chargebox's tables and their sequences, by name. `GRANT ... ON ALL TABLES
    IN SCHEMA` also gave it reading and writing a table an operator keeps in the schema,
    and its sequence. And a TRIGGER granted on that table no longer makes serve refuse the
    role: no guard is there to get past (one on chargebox's tables still does)."""
    app = granted["app_role"]
    with psycopg.connect(granted["owner"], autocommit=True) as owner:
        owner.execute('CREATE TABLE "my notes" (id bigserial PRIMARY KEY, body text)')
    again = init_db(granted, app)
    assert again.returncode == 0, again.stderr
    with psycopg.connect(granted["app"], autocommit=True) as conn:
        for statement in ('SELECT * FROM "my notes"',
                          """INSERT INTO "my notes" (body) VALUES ('read by the service')""",
                          """SELECT nextval('"my notes_id_seq"')"""):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        app_writes_a_credit(conn)  # chargebox's tables and sequences, as before
    with psycopg.connect(granted["owner"], autocommit=True) as owner:
        owner.execute(f'GRANT TRIGGER ON "my notes" TO {app}')
        assert guards.above_the_guards(owner, app) is None
        owner.execute(f"GRANT TRIGGER ON ledger_entry TO {app}")
        assert "may make triggers on a table of chargebox's" in guards.above_the_guards(owner, app)


# Each way a role could get past the guards (a review found the ones after the first
# three): what the superuser grants the app role, the URL `serve` is given, what it says.
ABOVE_THE_GUARDS = {
    "owner": ([], "owner", "owns the schema"),
    "superuser": ([], "superuser", "is a superuser"),
    "may create in the schema": (["GRANT CREATE ON SCHEMA public TO PUBLIC"], "app",
                                 "REVOKE CREATE ON SCHEMA public FROM PUBLIC, "),
    "a NOINHERIT member of the owner": (["ALTER ROLE {app} NOINHERIT", "GRANT {owner} TO {app}"],
                                        "app", "owns the schema"),
    "a member of a superuser": (["GRANT postgres TO {app}"], "app", "is a superuser"),
    "SET on session_replication_role": (
        ["GRANT SET ON PARAMETER session_replication_role TO {app}"], "app",
        "may SET session_replication_role"),
    "CREATEROLE": (["ALTER ROLE {app} CREATEROLE"], "app", "may create roles"),
    "TRIGGER on a table": (["GRANT TRIGGER ON ledger_entry TO {app}"], "app",
                           "REVOKE TRIGGER ON ALL TABLES IN SCHEMA public FROM"),
    "server programs": (["GRANT pg_execute_server_program TO {app}"], "app",
                        "pg_execute_server_program"),
    "logged in as a superuser, SET ROLE to the app": ([], "superuser as app", "is a superuser"),
    "owns an operator it planted": (
        ["GRANT CREATE ON SCHEMA public TO {app}",
         "SET ROLE {app}", "CREATE FUNCTION planted(varchar, varchar) RETURNS boolean"
         " LANGUAGE sql AS 'SELECT true'", "CREATE OPERATOR = (LEFTARG = varchar, RIGHTARG"
         " = varchar, FUNCTION = planted)", "RESET ROLE",
         "REVOKE CREATE ON SCHEMA public FROM {app}"], "app", "owns the schema or something"),
}  # fmt: skip


@pytest.mark.parametrize("case", ABOVE_THE_GUARDS)
def test_serve_refuses_a_role_that_could_get_past_the_guards(granted, postgresql_cluster, case):
    """The owner may DISABLE TRIGGER, a superuser may SET session_replication_role =
    replica, and a role that may create in the schema could put an operator there that
    a guard would call instead of PostgreSQL's (PostgreSQL before 15 lets PUBLIC create
    in public); so may whoever can become one of them, or add a trigger that fires after
    the guards. `serve` refuses each in one line saying why, before it serves; the app
    role init-db granted serves (as in every other test). init-db warns when it grants
    a role serve would refuse."""
    name = granted["owner"].rsplit("/", 1)[1]
    superuser = postgresql_cluster.url(db=name)
    setup, whose, why = ABOVE_THE_GUARDS[case]
    app, owner = granted["app_role"], granted["owner"].split("//")[1].split(":")[0]
    with psycopg.connect(superuser, autocommit=True) as conn:
        for statement in setup:
            conn.execute(statement.format(app=app, owner=owner))
    url = {"owner": granted["owner"], "superuser": superuser, "app": granted["app"],
           "superuser as app": f"{superuser}?options=-crole%3D{app}"}[whose]  # fmt: skip
    if whose == "app":
        again = init_db(granted, app)  # init-db says so when it grants
        assert again.returncode == 0 and "warning: serve will refuse it" in again.stderr
    served = chargebox("serve", "--port", "0", "--db", url, "--data-dir", str(granted["data"]))
    assert served.returncode == 2, served.stderr
    assert served.stderr.count("\n") == 1 and why in served.stderr, served.stderr
    assert "get past the guards" in served.stderr and "secret" not in served.stderr


def test_serve_refuses_a_role_not_granted_what_the_service_needs_and_migrate_grants_it(granted):
    """A role granted by hand, or a grant revoked: the server started, and every sale
    failed with a 500 (a sale's lock on its key needs UPDATE on seller_key). serve refuses
    in one line naming what the role lacks and the command that grants it."""
    app = granted["app_role"]
    with psycopg.connect(granted["owner"], autocommit=True) as owner:
        owner.execute(f"REVOKE UPDATE ON seller_key FROM {app}")
        owner.execute(f"REVOKE DELETE ON web_session FROM {app}")
    where = ("--db", granted["app"], "--data-dir", str(granted["data"]))
    for command in (["serve", "--port", "0"], ["create-seller", "Ali"]):
        refused = chargebox(*command, *where)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        lacks = ("DELETE ON web_session, UPDATE (revoked_at) ON seller_key, UPDATE"
                 " (last_used_at) ON seller_key, which the service needs")  # fmt: skip
        assert f"the role {app} lacks {lacks}: run `chargebox migrate --grant-to {app}`" in line
    migrated = chargebox("migrate", "--db", granted["owner"], "--grant-to", app)
    assert migrated.returncode == 0, migrated.stderr
    made = chargebox("create-seller", "Ali", *where)
    assert made.returncode == 0, made.stderr


def test_a_grant_revoked_under_a_running_server_is_503_and_said_once_in_its_log(granted):
    """The same grant revoked while the server runs: each sale is 503 (nothing sold, a
    retry may work once it is granted again), not 500, and the log says why once. What
    the 503 says to run grants it again while the server runs (`migrate` would refuse:
    servers are running)."""
    token = (granted["data"] / "admin_token").read_text().strip()
    server = ServerProcess(granted["app"], token, os.environ, data_dir=granted["data"]).start()
    try:
        admin = Api(server.url, token)
        _, key = new_seller(admin, credit=5_000)
        shop = Api(server.url, key)
        assert shop.post("/api/sales", SALE).status_code == 201
        app = granted["app_role"]
        with psycopg.connect(granted["owner"], autocommit=True) as owner:
            owner.execute(f"REVOKE UPDATE ON seller_key FROM {app}")
            for _ in range(3):
                refused = shop.post("/api/sales", SALE)
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == {"code": "unavailable", "message": NOT_GRANTED}
        regranted = init_db(granted, app)  # what the 503 says to run: it grants while serving
        assert regranted.returncode == 0, regranted.stderr
        assert shop.post("/api/sales", SALE).status_code == 201
        assert shop.get("/api/me").json()["balance"] == 3_000
    finally:
        assert server.stop() == 0
    said = server.log_path.read_text()
    assert said.count("the database refused this server's role: permission denied") == 1, said
    assert "grant it again: chargebox init-db --grant-to ROLE" in said, said  # helper-139
    assert "goes run by run" not in said, said  # a line each refused sale, said once now
    assert "Traceback" not in said and "internal_error" not in said, said


def test_a_schema_whose_name_needs_quotes_is_made_and_served(roles):
    """The guards were looked for with to_regnamespace(current_schema()), which reads a
    name like Shop as shop: every guard function of such a schema was taken for gone,
    and every command but init-db refused the database (a reviewer's find)."""
    with psycopg.connect(roles["owner"], autocommit=True) as owner:
        owner.execute('CREATE SCHEMA "Shop"')
    shop = "?options=-csearch_path%3D%22Shop%22"
    made = chargebox("init-db", "--db", roles["owner"] + shop, "--grant-to", roles["app_role"],
                     "--data-dir", str(roles["data"]))  # fmt: skip
    assert made.returncode == 0, made.stderr
    served = chargebox("create-seller", "Ali", "--db", roles["app"] + shop,
                       "--data-dir", str(roles["data"]))  # fmt: skip
    assert served.returncode == 0, served.stderr
    with psycopg.connect(roles["owner"], autocommit=True) as owner:
        assert owner.execute('SELECT name FROM "Shop".seller').fetchall() == [("Ali",)]


def test_the_sql_is_written_once_and_handed_to_psycopg_in_its_style():
    assert postgresql.to_psycopg("SELECT ? WHERE a = :name AND b::text = '?:x' AND c LIKE '%'") == (
        "SELECT %s WHERE a = %(name)s AND b::text = '?:x' AND c LIKE '%'"
    )
    assert postgresql.to_psycopg("SELECT 5 % 2") == "SELECT 5 %% 2"


# A process holding a throwaway cluster: it prints the cluster's home and postmaster PID,
# waits for a line, then waits to be killed (`serving`, `twice`) or is sent SIGTERM before
# start() has returned (`starting`); `twice`: a second SIGTERM comes while it stops.
# The run works until it is stopped in turns of a sleep, not blocked in one read: a
# SIGTERM that came between Python's last look for signals and the read's system call
# would be seen by no one, and the read would wait for ever (it hung 1 run in 4).
CLUSTER_UNTIL_KILLED = """
import os, signal, sys, time
from stress import pg_cluster

def ready(cluster):
    pid = (cluster.data / "postmaster.pid").read_text().split()[0]
    print(cluster.home, pid, flush=True)
    sys.stdin.readline()

def at_work():
    while True:
        time.sleep(0.05)

if sys.argv[1] == "starting":
    real_start = pg_cluster._initdb_and_start
    def starting(cluster, *args):
        real_start(cluster, *args)
        ready(cluster)
        os.kill(os.getpid(), signal.SIGTERM)
        at_work()
    pg_cluster._initdb_and_start = starting
if sys.argv[1] == "twice":
    real_stop = pg_cluster.Cluster.stop
    def stop(self, *args):
        os.kill(os.getpid(), signal.SIGTERM)
        real_stop(self, *args)
    pg_cluster.Cluster.stop = stop
with pg_cluster.running() as cluster:
    ready(cluster)
    at_work()
"""


@pytest.mark.parametrize("when", ["serving", "starting", "twice"])
def test_a_run_sent_sigterm_stops_and_removes_its_throwaway_cluster(when):
    """`pg_ctl` leaves the server running on its own: a test run or `stress backends`
    stopped by SIGTERM (a CI job cancelled) must not leave its cluster behind, whether
    the signal comes while the cluster serves, before start() has returned, or twice."""
    pg_cluster.needed()
    child = subprocess.Popen([sys.executable, "-c", CLUSTER_UNTIL_KILLED, when], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    home, pid = child.stdout.readline().split()
    home, postmaster = Path(home), int(pid)
    try:
        assert alive(postmaster)
        child.stdin.write("go\n")
        child.stdin.flush()
        if when != "starting":  # that one sends itself the signal
            child.send_signal(signal.SIGTERM)
        # its own bound: the stop's pg_ctl may take STOP_TIMEOUT * 2 before it is given up
        assert child.wait(timeout=pg_cluster.STOP_TIMEOUT * 4) != 0
        assert not alive(postmaster) and not home.exists()
    finally:  # on failure, no orphan either: a fast shutdown, by its PID
        child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGINT)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://app:s3cret@db.local:5432/cb", "postgresql://app:***@db.local:5432/cb"),
        # an `@` and a `/` in the password, not percent-encoded: hidden to the last `@`
        ("postgresql://app:p@ss#1/x@127.0.0.1/cb", "postgresql://app:***@127.0.0.1/cb"),
        ("postgresql://app@db/cb?password=s3cret&sslmode=require",
         "postgresql://app@db/cb?password=***&sslmode=require"),
        # a `?` in the password: libpq reads it to the `@` (it was shown whole)
        ("postgresql://app:pa?ss@db/cb", "postgresql://app:***@db/cb"),
        ("postgresql://app:pw?x@db/cb?sslmode=require", "postgresql://app:***@db/cb?sslmode=require"),
        # an `@` in the query: the host is hidden with the password (never the password shown)
        ("postgresql://app:s3cret@db/cb?application_name=a@b", "postgresql://app:***@b"),
        # the client key's password too, in any case (helper-113)
        ("postgresql://app@db/cb?sslmode=verify-full&sslpassword=TOP&x=1",
         "postgresql://app@db/cb?sslmode=verify-full&sslpassword=***&x=1"),
        ("postgresql://app@db/cb?PassWord=TOP", "postgresql://app@db/cb?PassWord=***"),
        ("postgresql://app@db/cb?%70assword=TOP", "postgresql://app@db/cb?%70assword=***"),
        ("postgres+psycopg://app:TOP@db/cb", "postgres+psycopg://app:***@db/cb"),
    ],
)  # fmt: skip
def test_a_url_is_described_without_any_of_its_password(url, said):
    assert postgresql.described(url) == said


def test_a_command_with_the_wrong_role_or_no_schema_says_so_in_one_line(roles):
    """psycopg's refusals reached the shell as a trace: now one line, with a hint."""
    with psycopg.connect(roles["owner"], autocommit=True) as owner:
        database = owner.execute("SELECT current_database()").fetchone()[0]
        owner.execute(f"GRANT CONNECT ON DATABASE {database} TO {roles['app_role']}")
    as_the_app = chargebox("init-db", "--db", roles["app"], "--data-dir", str(roles["data"]))
    assert not roles["data"].exists()  # refused before it wrote a secret (it wrote both)
    no_schema = chargebox("migrate", "--db", roles["owner"], "--data-dir", str(roles["data"]))
    for result, hint in ((as_the_app, "the schema owner's URL"), (no_schema, "init-db")):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        (said,) = result.stderr.strip().splitlines()
        assert said.startswith("chargebox: --db postgresql://") and hint in said, said
        assert "-secret" not in result.stderr


def test_init_db_stamps_its_schema_version_as_migrate_and_sqlite_do(roles):
    """applied_at is chargebox's stamp (2026-12-01T00:00:00.000000Z), on either path; init-db
    wrote PostgreSQL's now()::text (2026-12-01 00:00:00.123+00) beside migrate's."""
    assert init_db(roles, roles["app_role"]).returncode == 0
    with psycopg.connect(roles["owner"]) as conn:
        (stamp,) = conn.execute("SELECT applied_at FROM schema_version").fetchone()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp


@pytest.mark.parametrize("command", [["init-db"], ["audit"], ["create-seller", "Ali"]])
def test_a_database_not_in_utf8_is_refused_in_one_line(postgresql_cluster, tmp_path, command):
    """A database made `ENCODING 'SQL_ASCII'`: psycopg hands its text back as bytes, and
    init-db was a TypeError (helper-117). Every command refuses it, naming its encoding."""
    name = f"ascii_{os.getpid()}_{len(command)}"
    with psycopg.connect(postgresql_cluster.url(), autocommit=True) as superuser:
        superuser.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C'"
                          " LC_CTYPE 'C' TEMPLATE template0")  # fmt: skip
    try:
        url = postgresql_cluster.url(db=name)
        result = chargebox(*command, "--db", url, "--data-dir", str(tmp_path / "data"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "the database's encoding is SQL_ASCII; chargebox needs UTF8" in result.stderr
        assert pg_cluster.PASSWORD not in result.stderr
    finally:
        with psycopg.connect(postgresql_cluster.url(), autocommit=True) as superuser:
            superuser.execute(f"DROP DATABASE {name}")


def test_a_url_or_environment_asking_for_another_client_encoding_is_given_utf8(granted):
    """`?client_encoding=SQL_ASCII` (or PGCLIENTENCODING) had psycopg hand text back as
    bytes: `audit` said there was no schema, `init-db` was a TypeError (helper-118).
    chargebox's sessions talk UTF8 whatever is asked."""
    asked = granted["app"] + "?client_encoding=SQL_ASCII"
    audited = chargebox("audit", "--db", asked, "--data-dir", str(granted["data"]))
    assert audited.returncode == 0, audited.stderr
    made = chargebox("create-seller", "علی", "--db", granted["app"], "--data-dir",
                     str(granted["data"]), PGCLIENTENCODING="LATIN1")  # fmt: skip
    assert made.returncode == 0, made.stderr
