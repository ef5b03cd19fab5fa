"""Schema versions, and the steps from one to the next: start-up's check and `chargebox migrate`.

Each database records the versions applied to it in `schema_version`. An SQLite file made
before versions were recorded (chargebox 0.1.0) holds chargebox's tables and no such table:
it is version 1. A new database is made at LATEST directly; an older one is brought there
by `chargebox migrate`, every missing step in one transaction, which also re-installs every
trigger; start-up refuses any version but LATEST (`check`), in one line that says what to do,
and a database at LATEST whose guard trigger someone dropped, or added one beside, which
`migrate` then puts back, or drops (guards.py). The steps themselves: schema_steps.py.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import peewee

from chargebox import constraints, grants, guards, schema, settled
from chargebox.clock import now
from chargebox.config import Config
from chargebox.location import check_database_path
from chargebox.pg_driver import connect, described, name_sessions, to_psycopg
from chargebox.schema_steps import STEPS, Step, sqlite_missing

LATEST = schema.VERSION  # the schema this code reads and writes
# What widens the blocks of sales (version 7): put back, it leaves the sales made without
# it outside every span (a search would miss them), so migrate widens the blocks again.
_BLOCKS_TRIGGER, _BLOCKS_FUNCTION = "sale_widens_its_block", "chargebox_sales_widen_their_blocks"
check = schema.check_version
# How a running server is known, so that migrate can refuse to change the schema under
# it: on PostgreSQL by its sessions' application_name (every host's), on SQLite by a
# shared lock it holds on a file beside the database (one host's, as the file is).
SERVING_NAME = "chargebox serve"
SERVING_SUFFIX = ".serving"

# SQLite's; PostgreSQL's is in schema_postgresql.sql. One row per version applied.
SQLITE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY,"
    " applied_at TEXT NOT NULL)"
)


def mark_serving(config: Config) -> None:
    """For `chargebox serve`, once its database is ready (on SQLite under the start-up
    lock, which migrate takes too): be known as serving it for the process's life,
    forked children too. PostgreSQL: every session it opens is named SERVING_NAME (its
    anchoring thread keeps one open: keeper.py). SQLite: a shared lock on the
    SERVING_SUFFIX file beside the database."""
    if config.db_url:
        name_sessions(SERVING_NAME)
        return
    import fcntl  # the file's servers are on one host, a POSIX one

    path = f"{config.db_path}{SERVING_SUFFIX}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as exc:  # made by another user (root), say
        raise ValueError(f"--db {config.db_path}: cannot open {path} ({exc.strerror})") from None
    fcntl.flock(fd, fcntl.LOCK_SH)  # held, and the descriptor open, until the process ends


_STOP = "stop every server first: it would run its old code on the new schema"


def serving_sessions(conn) -> int:
    """PostgreSQL: the sessions of running servers on the database, from any host. Best
    effort behind a transaction pooler, whose idle server connections keep a name a while
    and whose idle clients hold none (README, Upgrading)."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE %s", (SERVING_NAME + "%",)  # pgbouncer may add a host
    ).fetchone()[0]  # fmt: skip


def _refuse_serving_sessions(conn, where: str) -> None:
    if count := serving_sessions(conn):
        raise ValueError(
            f"--db {where}: {count} session(s) of running chargebox servers (named "
            f"'{SERVING_NAME}'): {_STOP} (behind pgbouncer its idle server connections keep "
            "the name until they close: RECONNECT in its console), or --force"
        )


def _refuse_a_serving_file(path: Path, where: str) -> None:
    """SQLite: migrate's check, under the start-up lock, that no server holds the shared
    lock on the SERVING_SUFFIX file. The file is never made here (run as root, migrate
    would leave one the service's user cannot open); none means no server has started."""
    import fcntl

    try:
        fd = os.open(f"{path}{SERVING_SUFFIX}", os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(
            f"--db {where}: a chargebox server is serving it: {_STOP}, or --force"
        ) from None
    finally:
        os.close(fd)


# SQLite's unix VFS: each connection to a WAL file holds a read lock on this byte of its
# `-shm` for as long as it is open (the "DMS" slot, (22 + 8) * 4 + 8), to learn if it is
# the last. Linux's struct flock: type, whence, start, length, pid.
_SHM_OPEN_BYTE, _FLOCK = 128, "hhqqi"


def _refuse_open_elsewhere(path: Path, where: str) -> None:
    """SQLite on Linux: migrate's check that no other process has read the file (in WAL
    mode) and has it open still, which finds the servers `_refuse_a_serving_file` cannot:
    chargebox 0.2.0's and older took no lock on the SERVING_SUFFIX file. Asked with
    F_GETLK, which takes no lock (a SQLite connection opening meanwhile is not disturbed);
    made before this process opens the file (closing a descriptor drops every lock the
    process holds on the file)."""
    if not sys.platform.startswith("linux"):
        return
    import fcntl
    import struct

    try:
        fd = os.open(f"{path}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return  # none: no connection has it open in WAL mode
    try:
        asked = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _SHM_OPEN_BYTE, 1, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, asked))
    finally:
        os.close(fd)
    if kind != fcntl.F_UNLCK:
        raise ValueError(
            f"--db {where}: process {pid} has it open (a server of chargebox 0.2.0 or older, "
            f"which takes no {SERVING_SUFFIX} lock; a backup; the sqlite3 shell): stop it "
            "first, or --force"
        )


def migrate(
    config: Config,
    lock: Callable[[], contextlib.AbstractContextManager],
    grant_to: str | None,
    force: bool = False,
) -> str:
    """`chargebox migrate`: bring the database `config` names to LATEST; a line saying so.

    SQLite: under the start-up lock (`lock()`, which serve takes too), in one BEGIN
    IMMEDIATE. PostgreSQL: `--db` is the schema owner's URL; the service's roles are
    granted what the new schema needs (those found, and `grant_to`).
    """
    made: list[str] = []  # SQLite: the tables and indexes it lacked, made
    if config.db_url:
        where = described(config.db_url)
        conn = connect(config.db_url, autocommit=True, lost_after=config.peer_timeout)
        try:
            grants.check_migrate(conn, where)
            if grant_to:
                grants.check_role(conn, grant_to)
            if not force:
                _refuse_serving_sessions(conn, where)
            found, to, roles, put = upgrade_postgresql(conn, where, [grant_to] if grant_to else [])
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        also = f"; granted to {', '.join(roles)}" if roles else ""
    else:
        if grant_to:
            raise ValueError("--grant-to is for a PostgreSQL --db (postgresql://...)")
        where = str(config.db_path)
        if not config.db_path.is_file():
            raise ValueError(f"--db {where}: no database here to migrate")
        check_database_path(config.db_path)
        with lock():
            if not force:
                _refuse_a_serving_file(config.db_path, where)
                _refuse_open_elsewhere(config.db_path, where)
            found, to, put, made = upgrade_sqlite(
                str(config.db_path), config.busy_timeout_ms / 1000, where
            )
        also = f"; made what it lacked: {', '.join(made)}" if made else ""
    if found == to and not put and not made:
        return f"schema version {to} in {where}: already the newest, nothing to do{also}"
    done = f"{to} in {where}: already the newest" if found == to else f"{found} -> {to} in {where}"
    return f"schema version {done}{guards.repaired(put)}{also}"


# --- SQLite ----------------------------------------------------------------------------------


# The tables chargebox 0.1.0 made from its first day (it recorded no version); another
# application's file may well have a table named `seller`.
_FIRST_TABLES = frozenset({"seller", "credit_request", "sale", "ledger_entry"})


def sqlite_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version; None for a file that holds no chargebox database yet."""
    tables = schema.table_names(conn)
    found = None
    if "schema_version" in tables:
        found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if found is None and tables >= _FIRST_TABLES:
        return 1  # chargebox 0.1.0 recorded no version
    return found


def refuse_another_applications(conn: sqlite3.Connection, where: str) -> None:
    """A file with tables and no chargebox database in it is another application's: it
    was switched to WAL for good and given chargebox's tables beside its own, a ledger
    key and an admin token beside it (helper-110). Refused before anything is written."""
    tables = sorted(name for name in schema.table_names(conn) if not name.startswith("sqlite_"))
    if tables and sqlite_version(conn) is None:
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise ValueError(f"--db {where}: holds tables that are not chargebox's ({shown}): "
                         "another application's database? Name another file")  # fmt: skip


def prepare_sqlite(database: peewee.SqliteDatabase, models: Sequence[type[peewee.Model]],
                   where: str) -> None:  # fmt: skip
    """At start-up, under the start-up lock: a new file is made at LATEST, a file at LATEST
    gets back a table it lacks (the audit's checkpoints, made later) and is refused if a
    guard was dropped or changed (a trigger, a UNIQUE index, a table's text:
    guards.refuse_dropped_guards), any other version is refused."""
    conn = database.connection()
    found = sqlite_version(conn)
    check(found, where)
    if found is not None:  # what it lacks it gets back, but a dropped guard: see there
        missing, tables = guards.missing_in_sqlite(conn), schema.table_names(conn)
        guards.refuse_dropped_guards(guards.dropped_guards(missing, tables), where)
    with database.bind_ctx(models), database.atomic():
        database.create_tables(models, safe=True)
        for statement in (*schema.TRIGGERS, SQLITE_VERSION_TABLE):
            database.execute_sql(statement)
        _record_sqlite(conn, found or LATEST)


def upgrade_sqlite(path: str, timeout: float,
                   where: str) -> tuple[int, int, list[str], list[str]]:  # fmt: skip
    """Apply the missing steps to the file at `path` in one write transaction, put back the
    guard triggers someone dropped and drop those added, rebuild a table whose text differs
    from a new file's (constraints.put_back_sqlite), make the tables and indexes it lacks
    or holds otherwise; (from, to, the guards put back at LATEST and at any version those
    dropped as added: schema.Added, the tables and indexes made).

    The caller holds the start-up lock. Foreign keys are off while the steps run (they
    cannot be switched inside a transaction) and checked before COMMIT.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = sqlite_version(conn)
            if found is None:
                raise ValueError(f"--db {where}: no chargebox database here to migrate")
            if found > LATEST:
                check(found, where)
            added = schema.added_triggers(conn)  # the steps may drop them
            steps = _steps_after(found)
            for step in steps:
                step.sqlite(conn)
            # Checked only after a step ran (a whole file's read: ~1.7 s at 1M entries).
            broken = steps and conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"a migration step broke {len(broken)} foreign key(s)")
            missing = schema.missing_triggers(conn)  # dropped or changed: made again, below
            missing += [name for name in added if name not in missing]
            rebuilt = [name for name in constraints.sqlite_changed(conn) if name.kind == "table"]
            constraints.put_back_sqlite(conn, rebuilt)  # their triggers go with them: below
            made = sqlite_missing(conn)  # a table or index a new file has
            for name, statements in made:
                try:
                    for statement in statements:
                        conn.execute(statement)
                except sqlite3.IntegrityError as exc:  # a UNIQUE index, rows breaking it
                    raise constraints.refused(name, str(exc)) from None
            for name in missing:  # and one added beside the guards (its own name): dropped
                conn.execute(f"DROP TRIGGER IF EXISTS {schema.quoted(getattr(name, 'name', name))}")
            for statement in (*schema.TRIGGERS, SQLITE_VERSION_TABLE):
                conn.execute(statement)
            missing += rebuilt
            if found == LATEST and _BLOCKS_TRIGGER in missing:  # (a step made them)
                for statement in schema.SALE_BLOCKS:  # the sales made without it, in their spans
                    conn.execute(statement)
            _record_sqlite(conn, found)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    put = [n for n in missing if found == LATEST or isinstance(n, schema.Added)]
    return found, LATEST, put, [name for name, _ in made]


def _record_sqlite(conn: sqlite3.Connection, since: int) -> None:
    """Record each version from `since` (the one found) to LATEST that is not recorded."""
    applied = now()
    for version in range(since, LATEST + 1):
        conn.execute(
            "INSERT OR IGNORE INTO schema_version (version, applied_at) VALUES (?, ?)",
            (version, applied),
        )


def _steps_after(version: int) -> list[Step]:
    return [step for step in STEPS if step.version > version]


# --- PostgreSQL ------------------------------------------------------------------------------


def postgresql_version(conn) -> int | None:
    """The schema's version; None where init-db has not made one."""
    if not conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]:
        return None
    return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]


def service_roles(conn) -> list[str]:
    """The roles granted the service's rights (`init-db --grant-to`): those that may insert
    sales, other than the owner. A migration grants them what its new tables need."""
    rows = conn.execute(
        "SELECT DISTINCT acl.grantee::regrole::text FROM pg_class AS c,"
        " aclexplode(c.relacl) AS acl WHERE c.oid = 'sale'::regclass"
        " AND acl.privilege_type = 'INSERT' AND acl.grantee NOT IN (0, c.relowner)"
    ).fetchall()
    return sorted(name.strip('"') for (name,) in rows)


def upgrade_postgresql(conn, where: str,
                       grant_to: Sequence[str] = ()) -> tuple[int, int, list, list]:  # fmt: skip
    """Apply the missing steps as the schema's owner, in one transaction under the schema
    lock, and put back the guards someone dropped or changed; then grant the service's
    roles (found, and `grant_to`) what the new schema needs. Returns (from, to, the roles
    granted, the triggers put back)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (schema.SCHEMA_LOCK,))
        schema.confine_search_path(conn)  # what the guard functions made here take
        found = postgresql_version(conn)
        if found is None:
            raise ValueError(f"--db {where}: no chargebox schema here; run `chargebox init-db`")
        if found > LATEST:
            check(found, where)
        early = guards.put_back_dropped_functions(conn, found)  # a step may call one
        schema.add_checkpoints(conn)  # a database made before them: the grants name them
        for step in _steps_after(found):
            step.postgresql(conn)
        put = guards.put_back_postgresql_guards(conn)  # after the steps: what they did not make
        put += settled.put_in_order(
            lambda sql, params: conn.execute(to_psycopg(sql), params).fetchall(), conn.execute
        )
        put = sorted({*early, *put})
        if any(_BLOCKS_TRIGGER in name or _BLOCKS_FUNCTION in name for name in put):
            conn.execute(schema.SALE_BLOCKS_POSTGRESQL)  # the sales made without it, in spans
        applied = now()
        for version in range(found + 1, LATEST + 1):
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                (version, applied),
            )
        roles = sorted({*service_roles(conn), *grant_to})
        for role in roles:
            grants.grant(conn, role)
    return found, LATEST, roles, put
