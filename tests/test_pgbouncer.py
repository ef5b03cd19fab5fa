"""Two app servers behind pgbouncer in transaction mode, raced by client threads.

pgbouncer (Debian's, started here on a free 127.0.0.1 port with a config of its
own; no service) hands a server connection to a client for one transaction only,
and has fewer of them than the servers have threads: the writes of one app
server run on whichever PostgreSQL session is free. Every guarantee must hold
anyway: chargebox keeps no session state between transactions (settings for
one transaction only, one transaction per write, read-only snapshots opened
inside their own transaction) and prepares no statement behind a pooler (postgresql.connect).
The books are re-added from a fresh connection straight to PostgreSQL.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from chargebox import postgresql
from tests import pg_cluster
from tests.support import ADMIN_TOKEN
from tests.test_postgresql_servers import AMOUNT, audit_is_clean, funded_seller, sell
from tests.test_postgresql_service import books

pytestmark = pytest.mark.parallel
PGBOUNCER = "/usr/sbin/pgbouncer"
POOL_SIZE = 4  # PostgreSQL sessions for every thread of both app servers


@pytest.fixture(scope="session")
def pgbouncer_program() -> str:
    """Debian's pgbouncer; missing, the tests skip with how to get it, except under CI=true."""
    if not os.access(PGBOUNCER, os.X_OK):
        message = "no pgbouncer: apt-get install pgbouncer (CI's .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PGBOUNCER


@contextlib.contextmanager
def pgbouncer(program: str, cluster: pg_cluster.Cluster, roles: pg_cluster.Roles):
    """pgbouncer in transaction mode in front of `roles`' database; yields the app role's
    URL through it. It runs as the cluster's owner when we are root (it refuses root),
    from a directory of its own, and is stopped by its PID."""
    app = conninfo_to_dict(roles.app_url)
    home = Path(tempfile.mkdtemp(prefix="chargebox-pgbouncer-", dir="/tmp"))
    port = pg_cluster._free_port()
    (home / "users.txt").write_text(f'"{app["user"]}" "{app["password"]}"\n')
    (home / "pgbouncer.ini").write_text(
        f"[databases]\n{app['dbname']} = host=127.0.0.1 port={cluster.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {home}/users.txt\npool_mode = transaction\n"
        f"default_pool_size = {POOL_SIZE}\nmax_client_conn = 1000\nlogfile = {home}/log\n"
    )
    command = [program, str(home / "pgbouncer.ini")]
    if cluster.owner is not None:
        record = pwd.getpwnam(cluster.owner)
        for path in (home, *home.iterdir()):
            os.chown(path, record.pw_uid, record.pw_gid)
        command[1:1] = ["-u", cluster.owner]
    (home / "users.txt").chmod(0o600)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = roles.app_url.replace(f":{cluster.port}/", f":{port}/")
    try:
        _until_it_answers(url, process, home)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=pg_cluster.STOP_TIMEOUT)
        shutil.rmtree(home, ignore_errors=True)


def _until_it_answers(url: str, process: subprocess.Popen, home: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            log = (home / "log").read_text() if (home / "log").exists() else ""
            assert process.poll() is None, f"pgbouncer exited: {log[-1500:]}"
            assert time.monotonic() < deadline, f"pgbouncer did not answer: {log[-1500:]}"
            time.sleep(0.05)  # polled until it listens, bounded above


@pytest.fixture
def pooled(pgbouncer_program, postgresql_cluster, tmp_path, monkeypatch):
    """Two `serve` processes (B with 2 children) whose --db is pgbouncer: (A, B, roles).
    With few threads each, every thread's connection runs each statement many times
    (psycopg would prepare it), on whichever server session pgbouncer gives it."""
    monkeypatch.setenv("CHARGEBOX_THREADS", "8")
    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "pooled", data)
    with (
        pgbouncer(pgbouncer_program, postgresql_cluster, made) as through,
        pg_cluster.serving(through, data, tmp_path / "a.log", ADMIN_TOKEN) as (a, _, _),
        pg_cluster.serving(through, data, tmp_path / "b.log", ADMIN_TOKEN, 2) as (b, _, _),
    ):
        yield a, b, made


def in_client_threads(jobs: list[tuple]) -> list[list[tuple]]:
    """`sell(*job)` for each job in a thread of its own, all started on one barrier."""
    barrier = threading.Barrier(len(jobs))
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: sell(*job, barrier), jobs))


def server_sessions(cluster: pg_cluster.Cluster, role: str) -> int:
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        query = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
        return admin.execute(query, (role,)).fetchone()[0]


def test_copies_of_each_key_through_the_pooler_sell_once(pooled, postgresql_cluster):
    """8 client threads send copies of the same 40 keys, half to each server: more
    client connections than pgbouncer has server sessions, so transactions of one
    app thread run on several PostgreSQL sessions. Each key sells once."""
    a, b, made = pooled
    seller_id, key = funded_seller(a, 1_000_000)
    keys = [f"pooled-{n}" for n in range(40)]
    answers = in_client_threads([(url, key, keys) for url in (a, b) * 4])
    by_key: dict[str, set] = {}
    for thread in answers:
        for idempotency_key, status, sale in thread:
            assert status == 201, (idempotency_key, status)
            by_key.setdefault(idempotency_key, set()).add(sale)
    assert all(len(sales) == 1 for sales in by_key.values()), "a key sold twice"
    assert books(made.app_url) == {seller_id: 1_000_000 - AMOUNT * len(keys)}
    assert audit_is_clean(b)
    assert server_sessions(postgresql_cluster, made.app_role) <= POOL_SIZE


def test_a_balance_spent_through_the_pooler_never_goes_negative(pooled):
    a, b, made = pooled
    seller_id, key = funded_seller(b, 30 * AMOUNT)
    answers = in_client_threads([(url, key, [None] * 15) for url in (a, b) * 3])
    statuses = [status for thread in answers for _, status, _ in thread]
    assert statuses.count(201) == 30 and statuses.count(409) == 60, statuses
    assert books(made.app_url) == {seller_id: 0}
    assert audit_is_clean(a)


def test_automatic_prepares_are_off_behind_the_pooler_only(
    pgbouncer_program, postgresql_cluster, tmp_path
):
    made = pg_cluster.initialised(postgresql_cluster, "prepares", tmp_path / "data")
    with pgbouncer(pgbouncer_program, postgresql_cluster, made) as through:
        pooled_conn = postgresql.connect(through, autocommit=True, lost_after=10)
        direct = postgresql.connect(made.app_url, autocommit=True, lost_after=10)
        try:
            assert pooled_conn.prepare_threshold is None
            assert direct.prepare_threshold == 5  # psycopg's default, kept
        finally:
            pooled_conn.close()
            direct.close()
