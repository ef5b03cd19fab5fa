"""The steps from one schema version to the next, on each backend (migrations.py runs them).

Each step builds what a new database of its version has (SQLite: from the models, read back
from a database made in memory; PostgreSQL: the file's `-- VERSION n:` part), from what the
version before it had, inside migrate's one transaction; a step that finds rows the new
schema would refuse stops the migration, naming them, and changes nothing.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

from chargebox import guards, schema
from chargebox.constraints import sqlite_made, sqlite_pinned


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
    """name -> CREATE statement of every table and index a new file gets from the models
    (constraints.sqlite_made): a step builds what a new file has."""
    return {name: sql for _, name, _, sql in sqlite_made()}


def sqlite_missing(conn: sqlite3.Connection) -> list[tuple[str, tuple[str, ...]]]:
    """What to say and run for each table and index a new file has and this one lacks, in
    the order a new file makes them, and for each index of a new file's name in another
    shape (dropped, made again): a file made by a development build before 0.1.0 (which
    printed 0.1.0 too) lacks the audit's checkpoint tables and an index, and holds
    `ledger_entry_credit_request_id` on every row where a new file's is partial."""
    found = dict(
        conn.execute("SELECT name, sql FROM sqlite_master WHERE name != 'sqlite_sequence'")
    )
    steps = []
    for name, sql in _sqlite_model_schema().items():
        if name not in found:
            steps.append((name, (sql,)))
        elif " INDEX " in sql and found[name] not in (sql, sqlite_pinned().get(name)):
            steps.append((f"{name} (made again: it differed)", (f'DROP INDEX "{name}"', sql)))
    return steps


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
    _sqlite_column_added(conn, "ledger_entry", 2, ("refund_of", "INTEGER", 0, None, 0))
    conn.execute(_sqlite_model_schema()["ledger_entry_refund_of"])  # empty: no refund yet


def _sqlite_column_added(conn: sqlite3.Connection, table: str, was: int, column: tuple) -> None:
    """`table`'s CREATE statement becomes a new file's, whose last column, `column` (as
    PRAGMA table_info has it: name, type, NOT NULL, default, primary key), the version `was`
    table lacks; no row is written (version 3's procedure). A stored row's missing last
    column reads as its default. A table made anew earlier in the same migration (seller by
    version 2) has it already."""
    made = _sqlite_model_schema()
    old = _columns(conn, table)
    new = _columns(_memory_with(made[table]), table)
    if old == new:
        return
    if old != new[:-1] or new[-1][1:] != column:
        raise RuntimeError(f"{table} is not the version-{was} table: {old}")
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (made[table], table),
        )
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


def _memory_with(table: str) -> sqlite3.Connection:
    memory = sqlite3.connect(":memory:")
    memory.execute(table)
    return memory


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple]:
    return [tuple(row) for row in conn.execute(f"PRAGMA table_info({table})")]


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
    statement of a period reads instead of the seller's whole ledger. Writes no row. (It
    also made an index of sales by stamp, which version 7 replaced and drops: a database
    migrated past 7 in one go is spared making it.)"""
    conn.execute(_sqlite_model_schema()["ledger_entry_seller_id_created_at_amount"])


def _postgresql_entries_by_stamp(conn) -> None:
    """Version 5 on PostgreSQL: the file's VERSION 5 part (the same indexes); and each guard
    function's search_path confined to the schema, then pg_temp (it was the search_path of
    the session that made it, where pg_temp came first: schema.confine_search_path)."""
    for statement in schema.postgresql_added_in(5):
        conn.execute(statement)
    functions, _ = guards.postgresql_guards()
    for name, (_, statement) in functions.items():  # those of versions 1-5 are all there (a
        if _version_of(statement) <= 5:  # dropped one was made before the steps); later
            conn.execute(f'ALTER FUNCTION "{name}"() SET search_path FROM CURRENT')  # not yet


def _version_of(statement: str) -> int:
    """The schema version whose part of the file makes `statement`."""
    return next(
        v for v in range(1, schema.VERSION + 1) if statement in schema.postgresql_added_in(v)
    )


def _sqlite_has_it(conn: sqlite3.Connection) -> None:
    """Versions 6 and 10 on SQLite: nothing to make (its file has had `sale_phone` and
    `web_session_seller_id` since version 1; only the version is recorded)."""


def _sqlite_key_ids_pinned(conn: sqlite3.Connection) -> None:
    """Version 8 on SQLite: the trigger seller_key_revocation_is_final is made again with
    schema.TRIGGERS' text, after the steps, as every guard whose text changed is."""


def _sqlite_checkpoints_once(conn: sqlite3.Connection) -> None:
    """Version 9 on SQLite: the trigger audit_checkpoint_is_new is made from
    schema.TRIGGERS after the steps, as every guard is."""


def _postgresql_checkpoints_once(conn) -> None:
    """Version 9: the file's VERSION 9 part, its trigger made anew: migrate adds the
    checkpoint tables before the steps (schema.add_checkpoints), and with them, this."""
    conn.execute("DROP TRIGGER IF EXISTS audit_checkpoint_is_new ON audit_checkpoint")
    _postgresql_part(9)(conn)


def _sqlite_sale_blocks(conn: sqlite3.Connection) -> None:
    """Version 7: the spans of the sales' stamps by block of ids (models.SaleBlock), made
    from the sales there (one read of them), in place of version 5's index of sales by
    stamp; its triggers come with schema.TRIGGERS, after the steps."""
    conn.execute(_sqlite_model_schema()["sale_block"])
    for statement in schema.SALE_BLOCKS:
        conn.execute(statement)
    conn.execute('DROP INDEX IF EXISTS "sale_created_at_seller_id"')


def _postgresql_sale_blocks(conn) -> None:
    """Version 7 on PostgreSQL: the file's VERSION 7 part (sale_block, its guards, the
    trigger on sale; the old index dropped), then the blocks of the sales there, as for
    SQLite (the statement migrate also runs when it puts that trigger back)."""
    _postgresql_part(7)(conn)
    conn.execute(schema.SALE_BLOCKS_POSTGRESQL)


def _sqlite_status_changes(conn: sqlite3.Connection) -> None:
    """Version 11: seller gains status_changes (last, 0 in every row: no change counted
    before), as version 3 added refund_of; its guard seller_status_is_counted comes with
    schema.TRIGGERS, after the steps."""
    _sqlite_column_added(conn, "seller", 10, ("status_changes", "INTEGER", 1, "0", 0))


def _postgresql_part(version: int) -> Callable[[object], None]:
    """A step that is the file's VERSION `version` part (6: the index of sales by number,
    10: of web sessions by holder): one read of the table, under the migration's lock."""

    def step(conn) -> None:
        for statement in schema.postgresql_added_in(version):
            conn.execute(statement)

    return step


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
         _sqlite_has_it, _postgresql_part(6)),
    Step(7, "the span of the sales' stamps by block of ids (sale_block), for searches by"
            " time, in place of the index of sales by stamp",
         _sqlite_sale_blocks, _postgresql_sale_blocks),
    Step(8, "a seller key's row id pinned (the guard seller_key_revocation_is_final)",
         _sqlite_key_ids_pinned, _postgresql_part(8)),
    Step(9, "an audit checkpoint recorded once (the guard audit_checkpoint_is_new)",
         _sqlite_checkpoints_once, _postgresql_checkpoints_once),
    Step(10, "web sessions by holder (on PostgreSQL an index; SQLite's file has had one)",
         _sqlite_has_it, _postgresql_part(10)),
    Step(11, "a seller's status changes counted (seller.status_changes, the guard"
             " seller_status_is_counted), for a restore to tell one undone",
         _sqlite_status_changes, _postgresql_part(11)),
)  # fmt: skip
