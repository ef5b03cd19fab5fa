"""Schema versions, and the steps from one to the next: start-up's check and `chargebox migrate`.

Each database records the versions applied to it in `schema_version`. An SQLite file made
before versions were recorded (chargebox 0.1.0) holds chargebox's tables and no such table:
it is version 1. A new database is made at LATEST directly; an older one is brought there
by `chargebox migrate`, every missing step in one transaction, which also re-installs every
trigger; start-up refuses any version but LATEST (`check`), in one line that says what to do,
and a database at LATEST whose guard trigger someone dropped, or added one beside, which
`migrate` then puts back, or drops (guards.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Callable, Sequence

import peewee

from chargebox import grants, guards, schema
from chargebox.clock import now
from chargebox.config import Config
from chargebox.location import check_database_path
from chargebox.models import ALL_MODELS
from chargebox.pg_driver import connect, described

LATEST = schema.VERSION  # the schema this code reads and writes
check = schema.check_version

# SQLite's; PostgreSQL's is in schema_postgresql.sql. One row per version applied.
SQLITE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY,"
    " applied_at TEXT NOT NULL)"
)


@dataclasses.dataclass(frozen=True)
class Step:
    """What turns a database of version `version - 1` into `version`, on each backend. Each
    runs inside migrate's one transaction (SQLite: with foreign keys off, checked at the
    end, so that a table can be rebuilt; PostgreSQL: as the schema's owner)."""

    version: int
    what: str
    sqlite: Callable[[sqlite3.Connection], None]
    postgresql: Callable[[object], None]


def _sqlite_model_schema() -> dict[str, str]:
    """name -> CREATE statement of every table and index a new file gets from the models,
    read back from a database made in memory: a step builds what a new file has."""
    memory = peewee.SqliteDatabase(":memory:")
    with memory.bind_ctx(ALL_MODELS):
        memory.create_tables(ALL_MODELS)
    rows = memory.execute_sql("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
    made = dict(rows.fetchall())
    memory.close()
    return made


def _sqlite_keys_and_suspension(conn: sqlite3.Connection) -> None:
    """Version 2: each seller's one key becomes its key labelled "default" in seller_key
    (and admin_token, for rotations of the admin token, is made);
    the seller table is rebuilt without api_key_hash and with status (SQLite cannot drop a
    UNIQUE column): made anew as a new file has it, copied, the old one dropped, renamed.
    Every trigger on chargebox's tables is dropped first (a rename checks the triggers that
    name the table) and comes back, in the same transaction, with schema.TRIGGERS
    (upgrade_sqlite, which names one added beside them, gone now)."""
    made = _sqlite_model_schema()
    for name in schema.triggers_on_its_tables(conn):
        conn.execute(f"DROP TRIGGER {schema.quoted(name)}")
    for name in ("seller_key", "seller_key_key_hash", "seller_key_seller_id_id",
                 "seller_key_seller_id_label", "admin_token"):  # fmt: skip
        conn.execute(made[name])
    conn.execute(
        "INSERT INTO seller_key (seller_id, label, key_hash, created_at)"
        " SELECT id, 'default', api_key_hash, created_at FROM seller ORDER BY id"
    )
    conn.execute(made["seller"].replace('CREATE TABLE "seller"', 'CREATE TABLE "seller_v2"', 1))
    conn.execute(
        "INSERT INTO seller_v2 (id, name, balance, created_at, status)"
        " SELECT id, name, balance, created_at, 'active' FROM seller ORDER BY id"
    )
    conn.execute("DROP TABLE seller")
    conn.execute("ALTER TABLE seller_v2 RENAME TO seller")


def _postgresql_keys_and_suspension(conn) -> None:
    """Version 2 on PostgreSQL: the status column as schema_postgresql.sql has it, what the
    file's VERSION 2 part adds (seller_key, its triggers, the suspension triggers), each
    seller's key moved into seller_key as "default", then api_key_hash dropped."""
    conn.execute(
        "ALTER TABLE seller ADD COLUMN status text NOT NULL DEFAULT 'active'"
        " CHECK (status IN ('active', 'suspended'))"
    )
    for statement in schema.postgresql_added_in(2):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO seller_key (seller_id, label, key_hash, created_at)"
        " SELECT id, 'default', api_key_hash, created_at FROM seller ORDER BY id"
    )
    conn.execute("ALTER TABLE seller DROP COLUMN api_key_hash")


def _sqlite_refunds(conn: sqlite3.Connection) -> None:
    """Version 3: ledger_entry gains refund_of (last) and the kind 'refund' in its CHECKs.

    SQLite cannot change a CHECK in place, and rebuilding the ledger would copy every entry.
    This is the procedure sqlite.org documents for loosening CHECK constraints ("Making
    Other Kinds Of Table Schema Changes"), with a column added at the end as ALTER TABLE
    ADD COLUMN does: the table's CREATE statement becomes a new file's, by writing it into
    sqlite_master and bumping schema_version, inside migrate's transaction. No row is
    written, whatever the ledger's size (the empty index reads them): every stored row is a
    valid row of the new table (its refund_of reads NULL) and satisfies the new CHECKs,
    which only add a kind. That holds because the old columns are the new ones but the
    last, which is checked first."""
    made = _sqlite_model_schema()
    old = _columns(conn)
    new = _columns(_memory_with(made["ledger_entry"]))
    if old != new[:-1] or new[-1][1:] != ("refund_of", "INTEGER", 0, None, 0):
        raise RuntimeError(f"ledger_entry is not the version-2 table: {old}")
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'ledger_entry'",
            (made["ledger_entry"],),
        )
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")
    conn.execute(made["ledger_entry_refund_of"])  # empty: no entry is a refund yet


def _memory_with(table: str) -> sqlite3.Connection:
    memory = sqlite3.connect(":memory:")
    memory.execute(table)
    return memory


def _columns(conn: sqlite3.Connection) -> list[tuple]:
    return [tuple(row) for row in conn.execute("PRAGMA table_info(ledger_entry)")]


def _postgresql_refunds(conn) -> None:
    """Version 3 on PostgreSQL: what the file's VERSION 3 part says (refund_of, the CHECKs
    that know the kind 'refund', the refund trigger): a new schema runs the same."""
    for statement in schema.postgresql_added_in(3):
        conn.execute(statement)


def _sqlite_records_are_their_sellers(conn: sqlite3.Connection) -> None:
    """Version 4: the triggers that keep a key's record its seller's (schema.TRIGGERS, which
    upgrade_sqlite installs), once no record names another seller's row."""
    _refuse_records_of_another_seller(conn)


def _postgresql_records_are_their_sellers(conn) -> None:
    """Version 4 on PostgreSQL: the file's VERSION 4 part, once no record names another
    seller's row."""
    _refuse_records_of_another_seller(conn)
    for statement in schema.postgresql_added_in(4):
        conn.execute(statement)


def _sqlite_entries_by_stamp(conn: sqlite3.Connection) -> None:
    """Version 5: the index of a seller's entries by stamp (models.LedgerEntry), which a
    statement of a period reads instead of the seller's whole ledger, and of sales by
    stamp (models.Sale), for a search of sales by time. Writes no row."""
    made = _sqlite_model_schema()
    conn.execute(made["ledger_entry_seller_id_created_at_amount"])
    conn.execute(made["sale_created_at_seller_id"])


def _postgresql_entries_by_stamp(conn) -> None:
    """Version 5 on PostgreSQL: the file's VERSION 5 part (the same indexes); and each guard
    function's search_path confined to the schema, then pg_temp (it was the search_path of
    the session that made it, where pg_temp came first: schema.confine_search_path)."""
    for statement in schema.postgresql_added_in(5):
        conn.execute(statement)
    functions, _ = guards.postgresql_guards()
    for name in functions:  # every one is there: a dropped one was made before the steps
        conn.execute(f'ALTER FUNCTION "{name}"() SET search_path FROM CURRENT')


def _sqlite_sales_by_number(conn: sqlite3.Connection) -> None:
    """Version 6 on SQLite: nothing to make (its file has had `sale_phone` since version 1;
    only the version is recorded)."""


def _postgresql_sales_by_number(conn) -> None:
    """Version 6 on PostgreSQL: the file's VERSION 6 part, the index of sales by number
    (one read of the sales, under the migration's lock)."""
    for statement in schema.postgresql_added_in(6):
        conn.execute(statement)


def _refuse_records_of_another_seller(conn) -> None:
    """A record that names another seller's row was written by hand (no chargebox writes
    one): the migration stops, naming it, rather than make a schema it breaks."""
    for sql in schema.key_records():
        found = conn.execute(sql).fetchall()
        if found:
            raise ValueError(
                f"{len(found)} key record(s) name a row of another seller, first: "
                f"{found[0][2]}; the database was changed outside chargebox: restore a backup"
            )


STEPS: tuple[Step, ...] = (
    Step(2, "seller keys (several per seller, revocable) and seller suspension",
         _sqlite_keys_and_suspension, _postgresql_keys_and_suspension),
    Step(3, "refunds (ledger_entry.refund_of, the kind 'refund')",
         _sqlite_refunds, _postgresql_refunds),
    Step(4, "a key's record is its seller's (the triggers *_is_its_sellers)",
         _sqlite_records_are_their_sellers, _postgresql_records_are_their_sellers),
    Step(5, "entries and sales by stamp (indexes, for statements and searches); on"
            " PostgreSQL, the guard functions' search_path confined to the schema",
         _sqlite_entries_by_stamp, _postgresql_entries_by_stamp),
    Step(6, "sales by number (on PostgreSQL an index; SQLite's file has had one)",
         _sqlite_sales_by_number, _postgresql_sales_by_number),
)  # fmt: skip


def migrate(
    config: Config, lock: Callable[[], contextlib.AbstractContextManager], grant_to: str | None
) -> str:
    """`chargebox migrate`: bring the database `config` names to LATEST; a line saying so.

    SQLite: under the start-up lock (`lock()`, which serve takes too), in one BEGIN
    IMMEDIATE. PostgreSQL: `--db` is the schema owner's URL; the service's roles are
    granted what the new schema needs (those found, and `grant_to`).
    """
    if config.db_url:
        where = described(config.db_url)
        conn = connect(config.db_url, autocommit=True)
        try:
            if grant_to:
                grants.check_role(conn, grant_to)
            found, to, roles, put = upgrade_postgresql(conn, where, [grant_to] if grant_to else [])
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        granted = f"; granted to {', '.join(roles)}" if roles else ""
    else:
        if grant_to:
            raise ValueError("--grant-to is for a PostgreSQL --db (postgresql://...)")
        where = str(config.db_path)
        if not config.db_path.is_file():
            raise ValueError(f"--db {where}: no database here to migrate")
        check_database_path(config.db_path)
        with lock():
            found, to, put = upgrade_sqlite(
                str(config.db_path), config.busy_timeout_ms / 1000, where
            )
        granted = ""
    if found == to and not put:
        return f"schema version {to} in {where}: already the newest, nothing to do{granted}"
    done = f"{to} in {where}: already the newest" if found == to else f"{found} -> {to} in {where}"
    return f"schema version {done}{guards.repaired(put)}{granted}"


# --- SQLite ----------------------------------------------------------------------------------


def sqlite_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version; None for a file that holds no chargebox database yet."""
    tables = schema.table_names(conn)
    found = None
    if "schema_version" in tables:
        found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if found is None and "seller" in tables:
        return 1  # chargebox 0.1.0 recorded no version
    return found


def prepare_sqlite(database: peewee.SqliteDatabase, models: Sequence[type[peewee.Model]],
                   where: str) -> None:  # fmt: skip
    """At start-up, under the start-up lock: a new file is made at LATEST, a file at LATEST
    gets back a table it lacks (the audit's checkpoints, made later) and is refused if a
    guard trigger was dropped (guards.refuse_dropped_guards), any other version is refused."""
    conn = database.connection()
    found = sqlite_version(conn)
    check(found, where)
    if found is not None:  # what it lacks it gets back, but a dropped guard: see there
        missing, tables = schema.missing_triggers(conn), schema.table_names(conn)
        guards.refuse_dropped_guards(guards.dropped_guards(missing, tables), where)
    with database.bind_ctx(models), database.atomic():
        database.create_tables(models, safe=True)
        for statement in (*schema.TRIGGERS, SQLITE_VERSION_TABLE):
            database.execute_sql(statement)
        _record_sqlite(conn, found or LATEST)


def upgrade_sqlite(path: str, timeout: float, where: str) -> tuple[int, int, list[str]]:
    """Apply the missing steps to the file at `path` in one write transaction, put back the
    guard triggers someone dropped and drop those added; (from, to, the triggers put back
    at LATEST, and at any version those dropped as added: schema.Added).

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
            for step in _steps_after(found):
                step.sqlite(conn)
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"a migration step broke {len(broken)} foreign key(s)")
            missing = schema.missing_triggers(conn)  # dropped or changed: made again, below
            missing += [name for name in added if name not in missing]
            for name in missing:  # and one added beside the guards (its own name): dropped
                conn.execute(f"DROP TRIGGER IF EXISTS {schema.quoted(getattr(name, 'name', name))}")
            for statement in (*schema.TRIGGERS, SQLITE_VERSION_TABLE):
                conn.execute(statement)
            _record_sqlite(conn, found)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return found, LATEST, [n for n in missing if found == LATEST or isinstance(n, schema.Added)]


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
        for step in _steps_after(found):
            step.postgresql(conn)
        put = guards.put_back_postgresql_guards(conn)  # after the steps: what they did not make
        put = sorted({*early, *put})
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
