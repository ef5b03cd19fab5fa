"""Test support: a real chargebox server process, an HTTP client, and the file read back.

What is on disk is read from a fresh read-only connection (sqlite3 for a file,
psycopg for a PostgreSQL URL: tests/backends.py), independent of chargebox's own
code: `reconciled_balances` re-adds the ledger and checks I1-I4 (refunds too), `rows_on_disk`
returns the rows of one query (written with SQLite's `?`), and `db_snapshot`
digests every table and the schema (two equal snapshots: nothing changed). Kept
importable (not only fixtures) so that worker processes started with `spawn` can
use the same client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import psycopg
import requests

from chargebox import process
from chargebox.process import cli_audit  # noqa: F401 - re-exported for the tests
from tests.backends import (  # noqa: F401 - database_of re-exported for the tests
    database_of,
    is_postgresql,
    owner_url,
    read_only_postgresql,
)

ROOT = Path(__file__).resolve().parent.parent  # the checkout

ADMIN_TOKEN = "test-admin-token-0123456789abcdefghij"  # 36: at least 32 (config.py)


class Api:
    """A keep-alive HTTP client speaking JSON to one server with one bearer token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body=None, headers=None, **kwargs):
        return self.session.request(
            method, self.url + path, json=body, headers=headers, timeout=60, **kwargs
        )

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def close(self) -> None:
        self.session.close()


@dataclasses.dataclass
class ServerProcess(process.ServerProcess):
    """A real server process (chargebox.process), with the tests' admin token and clients."""

    admin_token: str = ADMIN_TOKEN
    environ: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ))

    def admin(self) -> Api:
        return Api(self.url, ADMIN_TOKEN)

    def seller(self, key: str) -> Api:
        return Api(self.url, key)


@contextlib.contextmanager
def running_server(db_path: Path | str, **options) -> Iterator[ServerProcess]:
    """A server process for the duration of a block; it must stop cleanly (exit 0)."""
    process = ServerProcess(db_path, **options).start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie has stopped (a container's PID 1 may not reap
    a daemonised server at once)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


def outcomes(futures) -> list:
    """Each future's result, or the exception it raised (each waited for 30 s at most)."""
    found = []
    for future in futures:
        try:
            found.append(future.result(timeout=30))
        except Exception as exc:
            found.append(exc)
    return found


def counted(service) -> tuple[int, int, int]:
    """The service's group writer's counts: writes applied together, runs that went one
    sale at a time, batches redone run by run (writer.GroupWriter)."""
    writer = service.database.writer
    return writer.together, writer.separately, writer.redone


def new_seller(admin: Api, name: str = "seller", credit: int = 0) -> tuple[dict, str]:
    """Create a seller through the API and, if asked, credit it by an approved request."""
    created = admin.post("/api/sellers", {"name": name})
    assert created.status_code == 201, created.text
    seller = created.json()
    key = seller.pop("api_key")
    if credit:
        own = Api(admin.url, key)
        request = own.post("/api/credit-requests", {"amount": credit})
        assert request.status_code == 201, request.text
        approved = admin.post(f"/api/credit-requests/{request.json()['id']}/approve")
        assert approved.status_code == 200, approved.text
        own.close()
        seller["balance"] = credit
    return seller, key


def run_stress(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """`python -m stress ARGS` as a user types it, from the checkout; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stress", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stress_report(out: Path, command: str, *args: str, timeout: float = 300):
    """`python -m stress COMMAND ARGS --quiet --out OUT`, which must exit 0, and the JSON
    report it wrote there."""
    result = run_stress(command, *args, "--quiet", "--out", str(out), timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    (document,) = [json.loads(path.read_text()) for path in out.glob(f"{command}-*.json")]
    return result, document


def credited_seller(service, amount: int, name: str = "Ali") -> dict:
    """In process: a seller credited `amount` by an approved request (none if 0)."""
    seller, _key = service.create_seller(name)
    if amount:
        service.approve_credit_request(service.request_credit(seller["id"], amount).record["id"])
    return service.queries.seller(seller["id"])


class _Reading:
    """One read-only connection of either backend, taking SQLite's `?` parameters."""

    def __init__(self, conn, postgresql: bool) -> None:
        self.conn = conn
        self.postgresql = postgresql

    def execute(self, sql: str, params: tuple = ()):
        if self.postgresql:
            return self.conn.execute(re.sub(r"\?", "%s", sql), params or None)
        return self.conn.execute(sql, params)

    def ids_given(self, table: str) -> None:
        """After rows written here with their ids given: on PostgreSQL, the table's
        sequence set to the largest id, as `chargebox copy` does, so that the service
        hands out none below them and its pages show them (chargebox/settled.py)."""
        if self.postgresql:
            self.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                         f" (SELECT max(id) FROM {table}))")  # fmt: skip


@contextlib.contextmanager
def read_only(db: Path | str) -> Iterator[_Reading]:
    """A fresh read-only connection to the database: what is stored, not in a process."""
    if is_postgresql(db):
        conn = read_only_postgresql(str(db))
    else:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        yield _Reading(conn, is_postgresql(db))
    finally:
        conn.close()


@contextlib.contextmanager
def writable(db: Path | str) -> Iterator[_Reading]:
    """A connection of its own that commits each statement: to change the database behind
    the service's back (on PostgreSQL as the schema's owner, who may do more than the
    service's role: what still refuses is the schema itself)."""
    if is_postgresql(db):
        conn = psycopg.connect(owner_url(str(db)), autocommit=True, connect_timeout=10)
    else:
        conn = sqlite3.connect(db, isolation_level=None)
    try:
        yield _Reading(conn, is_postgresql(db))
    finally:
        conn.close()


@contextlib.contextmanager
def write_lock_held(db_path: Path | str, gate: bool = False) -> Iterator[None]:
    """SQLite: another process's open write transaction (and, if asked, chargebox's write
    gate) for the block."""
    gate_file = None
    if gate:
        gate_path = Path(f"{db_path}.write-lock")
        assert gate_path.exists(), "chargebox's write gate is not where this test expects it"
        gate_file = open(gate_path, "r+b")  # noqa: SIM115 - held across the block
        fcntl.flock(gate_file, fcntl.LOCK_EX)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()
        if gate_file is not None:
            gate_file.close()


def drop_trigger(conn: _Reading, name: str) -> None:
    """DROP TRIGGER in either dialect (PostgreSQL's names the trigger's table)."""
    if conn.postgresql:
        sql = "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = ?"
        (table,) = conn.execute(sql, (name,)).fetchone()
        conn.execute(f"DROP TRIGGER {name} ON {table}")
    else:
        conn.execute(f"DROP TRIGGER {name}")


def cli_audit_of(config) -> subprocess.CompletedProcess:
    """`chargebox audit` of a config's database, as an operator runs it."""
    return cli_audit(database_of(config), config.data_dir if config.db_url else None)


# What the schema raises when it refuses a statement, on either backend.
REFUSED = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)


def rows_on_disk(db: Path | str, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of one query, from a fresh read-only connection."""
    with read_only(db) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


# Each Idempotency-Key's record table, its column, and the table of the row it names (the
# row is the record's seller's own).
KEYED_ROWS = (
    ("idempotency_record", "sale_id", "sale"),
    ("adjustment_record", "entry_id", "ledger_entry"),
    ("credit_request_record", "request_id", "credit_request"),
)


def statements_read(service, run: Callable[[], object]) -> list[tuple[str, tuple]]:
    """The statements chargebox's reader ran (SQL, parameters) while `run()` ran."""
    reader, ran = service.queries.reader, []
    for name in ("rows", "dicts"):
        real = getattr(reader, name)
        setattr(reader, name, lambda sql, params=(), real=real: ran.append((sql, params))
                or real(sql, params))  # fmt: skip
    try:
        run()
    finally:
        for name in ("rows", "dicts"):
            delattr(reader, name)
    return ran


def postgresql_plan(reader, sql: str, params: tuple = ()) -> dict:
    """The plan PostgreSQL ran `sql` by, through chargebox's `reader` (EXPLAIN ANALYZE)."""
    (row,) = reader.rows("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
    return (json.loads(row[0]) if isinstance(row[0], str) else row[0])[0]["Plan"]


def rows_read(plan: dict) -> int:
    """Rows a PostgreSQL plan node and its children read (returned + removed by filter)."""
    loops = plan.get("Actual Loops", 1)
    own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * loops
    return own + sum(rows_read(child) for child in plan.get("Plans", ()))


def sqlite_plan(reader, sql: str, params: tuple = ()) -> str:
    """SQLite's query plan for `sql`, through chargebox's `reader`: its steps in one line."""
    return " ".join(str(step[-1]) for step in reader.rows("EXPLAIN QUERY PLAN " + sql, params))


def reconciled_balances(db_path: Path | str) -> dict[int, int]:
    """{seller_id: balance}, once I1-I4 are checked from a fresh read-only connection.

    Independent of chargebox's own code on purpose: the ledger is re-added here.
    """
    with read_only(db_path) as conn:
        balances = dict(conn.execute("SELECT id, balance FROM seller"))
        for seller_id, balance in balances.items():
            assert balance >= 0, f"I1: seller {seller_id} balance {balance}"
            running = 0
            for entry_id, amount, after in conn.execute(
                "SELECT id, amount, balance_after FROM ledger_entry WHERE seller_id = ? "
                "ORDER BY id",
                (seller_id,),
            ):
                running += amount
                assert after == running >= 0, f"I3: seller {seller_id} entry {entry_id}"
            assert running == balance, f"I2: seller {seller_id} {balance} != ledger {running}"
        unmatched_sales = conn.execute(
            "SELECT COUNT(*) FROM sale s WHERE (SELECT COUNT(*) FROM ledger_entry l "
            "WHERE l.sale_id = s.id AND l.amount = -s.amount) != 1"
        ).fetchone()[0]
        assert unmatched_sales == 0, f"I4: {unmatched_sales} sales without exactly one debit"
        unmatched_credits = conn.execute(
            "SELECT COUNT(*) FROM credit_request r WHERE (SELECT COUNT(*) FROM ledger_entry l "
            "WHERE l.credit_request_id = r.id) "
            "!= CASE WHEN r.status = 'approved' THEN 1 ELSE 0 END"
        ).fetchone()[0]
        assert unmatched_credits == 0, f"I4: {unmatched_credits} requests credited wrongly"
        unmatched_refunds = conn.execute(
            "SELECT COUNT(*) FROM ledger_entry l WHERE l.refund_of IS NOT NULL AND ("
            "l.kind != 'refund' OR (SELECT COUNT(*) FROM ledger_entry o WHERE o.refund_of ="
            " l.refund_of) != 1 OR NOT EXISTS (SELECT 1 FROM sale s WHERE s.id = l.refund_of"
            " AND s.seller_id = l.seller_id AND s.amount = l.amount))"
        ).fetchone()[0]
        assert unmatched_refunds == 0, f"I4: {unmatched_refunds} refunds not once, whole"
        for table, column, names in KEYED_ROWS:
            strangers = conn.execute(
                f"SELECT COUNT(*) FROM {table} k JOIN {names} t ON t.id = k.{column}"
                " WHERE t.seller_id != k.seller_id"
            ).fetchone()[0]
            assert strangers == 0, f"{strangers} {table} rows name another seller's {names}"
        return balances


# Never excluded: a snapshot that silently lost one of these would prove nothing.
LEDGER_TABLES = ("seller", "credit_request", "sale", "ledger_entry", "phone", "idempotency_record")


def db_snapshot(db_path: Path | str) -> dict[str, object]:
    """Row count and content digest of every table, the schema, and the sum of balances,
    from a fresh read-only connection.

    Two equal snapshots around a refused request prove that it changed nothing. The
    tables are read from the catalog (sqlite_master, or PostgreSQL's), so a table added
    to the schema is covered without a change here. None is left out: no request that
    is refused writes a row (web sessions, the one table a read-only visit could be
    thought to touch, are written by sign-in and sign-out only); and the schema is
    compared too, since a test that drops a trigger inside a transaction must see it
    back after the rollback. One column is left out: a seller key's `last_used_at`,
    which says that the key was presented, refused request or not, and is written
    behind the request at most once a minute (key_use.LastUse); everything else of the
    key (revoked or not) is compared.
    """
    with read_only(db_path) as conn:
        if conn.postgresql:
            schema = [conn.execute(sql).fetchall() for sql in _POSTGRESQL_SCHEMA]
            tables = [name for (name,) in schema[0]]
        else:
            schema = conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            tables = [name for kind, name, _, _ in schema if kind == "table"]
        missing = set(LEDGER_TABLES) - set(tables)
        assert not missing, f"the snapshot would miss tables {missing}"
        state: dict[str, object] = {"schema": _digest(schema)}
        for table in tables:
            columns = _SNAPSHOT_COLUMNS.get(table, "*")
            rows = conn.execute(f'SELECT {columns} FROM "{table}" ORDER BY 1').fetchall()
            state[table] = (len(rows), _digest(rows))
        state["sum(seller.balance)"] = int(
            conn.execute("SELECT COALESCE(SUM(balance), 0) FROM seller").fetchone()[0]
        )
        return state


_SNAPSHOT_COLUMNS = {"seller_key": "id, seller_id, label, key_hash, created_at, revoked_at"}


# PostgreSQL's schema as the snapshot compares it: tables, columns, constraints,
# indexes, triggers (and whether they are enabled) and the functions they run.
_POSTGRESQL_SCHEMA = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
    "AND table_type = 'BASE TABLE' ORDER BY 1",
    "SELECT table_name, column_name, data_type, is_nullable, column_default "
    "FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2",
    "SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = current_schema() ORDER BY 1, 2",
    "SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE NOT tgisinternal ORDER BY 1, 2",
    "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
    "ORDER BY 1, 2",
)


def _digest(rows: list[tuple]) -> str:
    return hashlib.sha256("\n".join(sorted(map(repr, rows))).encode()).hexdigest()


def wait_until(condition, what: str, seconds: float = 30) -> None:
    """Poll `condition` until it holds; fail naming `what` if it has not within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)  # polling for the condition, bounded above


def socket_queues(port: int) -> list[tuple[bool, int, int]]:
    """Each established TCP connection's end with `port` at either side, from `ss`: (is it
    the server's end, bytes in its receive queue, bytes in its send queue)."""
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{port} or"
                          f" dport = :{port} )"], capture_output=True, text=True, timeout=30,
                         check=True).stdout  # fmt: skip
    ends = []
    for line in out.splitlines():
        recv_q, send_q, local = line.split()[:3]
        ends.append((local.endswith(f":{port}"), int(recv_q), int(send_q)))
    return ends


def exchange(url: str, data: bytes) -> bytes:
    """Send `data` as it is on one connection (an HTTP library would not send a malformed
    request) and read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def cannot(message: str) -> None:
    """Skip for want of what the machine lacks (a program, root) and say why; under CI,
    fail (README, Quick start)."""
    import pytest  # here: worker processes import this module and need no pytest

    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def needs_root(what: str) -> None:
    """A test that needs root (chattr, mount) goes no further without it (`cannot`)."""
    if os.geteuid() != 0:
        cannot(f"{what} needs root")
