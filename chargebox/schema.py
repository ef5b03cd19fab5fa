"""The schema beyond the models: the triggers that enforce I1-I5 in the database itself.

The models (models.py) declare tables, CHECKs, UNIQUEs and foreign keys; what a
column constraint cannot say (a chain, an append-only table, a decided request
that never changes) is a trigger here. `create` installs both, idempotently;
`missing_triggers` lets the audit notice a trigger someone dropped or changed, and
start-up refuse the database until `migrate` puts it back (guards.py). PostgreSQL's
schema, triggers in PL/pgSQL, is `schema_postgresql.sql` (`postgresql_statements`),
and `grant` gives the service's role only what it needs there (`init-db --grant-to`).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Sequence
from importlib import resources

import peewee

from chargebox.clock import now

# The schema version this code reads and writes, and that a new database is made at (the
# models with TRIGGERS; schema_postgresql.sql). Older ones: migrations.py and its steps
# (schema_steps.STEPS, one line each; 1: chargebox 0.1.0).
VERSION = 11
POSTGRESQL_VERSION = VERSION


def check_version(found: int | None, where: str) -> None:
    """Refuse, in one line, a database whose schema is not the one this code knows
    (None: no schema yet, to be made)."""
    if found is None or found == VERSION:
        return
    if found < VERSION:
        raise ValueError(
            f"--db {where}: the database has schema version {found} and this chargebox "
            f"needs {VERSION}: back it up, stop its servers, then run `chargebox migrate`"
        )
    raise ValueError(
        f"--db {where}: the database was made by a newer chargebox (schema version {found}; "
        f"this one knows up to {VERSION}): run that release, or restore a backup"
    )


def create(database: peewee.Database, models: Sequence[type[peewee.Model]]) -> None:
    """Create the tables, indexes and triggers that are missing, in one transaction."""
    with database.bind_ctx(models), database.atomic():
        database.create_tables(models, safe=True)
        for statement in TRIGGERS:
            database.execute_sql(statement)


def postgresql_statements() -> list[str]:
    """The statements of `schema_postgresql.sql`, in order (PL/pgSQL bodies hold `;`,
    so a line of only `-- ;` separates them)."""
    text = resources.files("chargebox").joinpath("schema_postgresql.sql").read_text()
    parts = re.split(r"(?m)^-- ;\s*$", text)
    return [part.strip() for part in parts if _sql_in(part)]


def postgresql_added_in(version: int) -> list[str]:
    """The statements of `schema_postgresql.sql` that schema version `version` added: from
    its `-- VERSION n:` line on, to the next such line (what migrations.py applies)."""
    found, since = [], 1
    for statement in postgresql_statements():
        if marked := re.search(r"(?m)^-- VERSION (\d+):", statement):
            since = int(marked.group(1))
        if since == version:
            found.append(statement)
    return found


def _sql_in(part: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in part.splitlines())


def table_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def missing_triggers(conn: sqlite3.Connection) -> list[str]:
    """Names of schema triggers not installed as TRIGGERS makes them: dropped, or made
    again under the same name with another body (SQLite keeps each one's text as made,
    less its IF NOT EXISTS); then each trigger added to one of chargebox's tables that the
    schema does not make (`Added`): it fires beside the guards."""
    wanted = {re.search(r"EXISTS (\w+)", sql).group(1): sql.replace(" IF NOT EXISTS", "", 1)
              for sql in TRIGGERS}  # fmt: skip
    found = conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
    found = {name: (table, sql) for name, table, sql in found}
    changed = [name for name, sql in wanted.items() if found.get(name, (0, 0))[1] != sql]
    added = [Added(table, name) for name, (table, _) in found.items()
             if name not in wanted and table.lower() in tables()]  # fmt: skip
    return sorted(changed) + sorted(added)


def added_triggers(conn: sqlite3.Connection) -> list[Added]:
    """The triggers on chargebox's tables that the schema does not make (`missing_triggers`)."""
    return [name for name in missing_triggers(conn) if isinstance(name, Added)]


def triggers_on_its_tables(conn: sqlite3.Connection) -> list[str]:
    """The names of the triggers on chargebox's tables, whoever made them."""
    found = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
    return [name for name, table in found if table.lower() in tables()]


@functools.cache
def tables() -> frozenset[str]:
    """The tables chargebox makes, the same on both backends (schema_postgresql.sql's; on
    SQLite the models' and schema_version): what is added to them is looked at (I5), what
    an operator adds elsewhere is theirs."""
    return frozenset(re.findall(r"(?m)^CREATE TABLE (\w+)", "\n".join(postgresql_statements())))


class Added(str):
    """What someone added to one of chargebox's tables that the schema does not make: a
    trigger (it fires beside the guards) or, on PostgreSQL, a rule or a table inheriting
    from it (`kind`). It reads as the audit and start-up name it (`table.name`; `table.name (a
    rule)`; `child (a table inheriting table)`); `table` and `name` stand apart, for the
    statement that removes it, since either may hold anything (a child's name is
    PostgreSQL's regclass text: quoted, and with its schema where it needs one)."""

    table: str
    name: str
    kind: str

    def __new__(cls, table: str, name: str, kind: str = "trigger") -> Added:
        shown = {"trigger": f"{table}.{name}", "rule": f"{table}.{name} (a rule)",
                 "child": f"{name} (a table inheriting {table})"}[kind]  # fmt: skip
        added = super().__new__(cls, shown)
        added.table, added.name, added.kind = table, name, kind
        return added

    def __getnewargs__(self) -> tuple[str, str, str]:  # copied or pickled whole
        return self.table, self.name, self.kind


def quoted(name: str) -> str:
    """An identifier as SQL quotes it (in both dialects), whatever it holds."""
    return '"' + name.replace('"', '""') + '"'


# Version 4 (I4 for Idempotency-Keys): a key's record names a row (a sale; an adjustment's
# or a refund's entry; a credit request) of its own seller. Each is (table, column, names).
KEY_RECORDS = (
    ("idempotency_record", "sale_id", "sale"),
    ("adjustment_record", "entry_id", "ledger_entry"),
    ("credit_request_record", "request_id", "credit_request"),
)


def key_records(where: str = "") -> list[str]:
    """One query per record table: its records that name another seller's row (`where`
    adds to the condition on that row, `t`): the audit's check, and migrate's to version 4."""
    return [
        "SELECT k.seller_id, NULL, "
        f"'{table} ' || k.id || ' of seller ' || k.seller_id || ' names {names} ' || t.id "
        f"|| ' of seller ' || t.seller_id FROM {table} k JOIN {names} t ON t.id = k.{column} "
        f"WHERE k.seller_id != t.seller_id {where}"
        for table, column, names in KEY_RECORDS
    ]


def _immutable(table: str, action: str, why: str) -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{why}'); END"
    )


def _its_sellers(table: str, column: str, names: str) -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS {table}_is_its_sellers BEFORE INSERT ON {table} "
        f"WHEN NEW.{column} IS NOT NULL AND NEW.seller_id IS NOT "
        f"(SELECT seller_id FROM {names} WHERE id = NEW.{column}) "
        "BEGIN SELECT RAISE(ABORT, 'a key''s record names a row of another seller'); END"
    )


# A block of sales (models.SaleBlock) is the ids of one value of `id >> BLOCK_BITS`; the
# same in schema_postgresql.sql (tests/test_statements.py checks it).
BLOCK_BITS = 10

# Start-up compares each database's triggers with this text (guards.py): change it only
# with a new schema version (tests/test_migrations.py pins it).
TRIGGERS = (
    # I5: the ledger, sales and idempotency outcomes are append-only.
    _immutable("ledger_entry", "UPDATE", "I5: ledger entries are never updated"),
    _immutable("ledger_entry", "DELETE", "I5: ledger entries are never deleted"),
    _immutable("sale", "UPDATE", "sales are never updated"),
    _immutable("sale", "DELETE", "sales are never deleted"),
    _immutable("idempotency_record", "UPDATE", "idempotency outcomes are final"),
    _immutable("ledger_seal", "UPDATE", "ledger seals are never updated"),
    _immutable("ledger_seal", "DELETE", "ledger seals are never deleted"),
    _immutable("idempotency_record", "DELETE", "idempotency outcomes are final"),
    _immutable("adjustment_record", "UPDATE", "idempotency outcomes are final"),
    _immutable("adjustment_record", "DELETE", "idempotency outcomes are final"),
    _immutable("credit_request_record", "UPDATE", "idempotency outcomes are final"),
    _immutable("credit_request_record", "DELETE", "idempotency outcomes are final"),
    _immutable("seller", "DELETE", "sellers are never deleted"),
    _immutable("credit_request", "DELETE", "credit requests are never deleted"),
    _immutable("seller_key", "DELETE", "seller keys are never deleted"),
    # A key keeps what it was issued as, its row's id too (version 8: a process that has
    # read a key names it by id: auth.SellerKey); once revoked it stays revoked.
    """CREATE TRIGGER IF NOT EXISTS seller_key_revocation_is_final
       BEFORE UPDATE ON seller_key
       WHEN NEW.id IS NOT OLD.id
         OR NEW.seller_id IS NOT OLD.seller_id OR NEW.label IS NOT OLD.label
         OR NEW.key_hash IS NOT OLD.key_hash OR NEW.created_at IS NOT OLD.created_at
         OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NOT OLD.revoked_at)
       BEGIN SELECT RAISE(ABORT, 'a seller key never changes, and a revoked key stays revoked');
       END""",
    # A suspended seller neither sells nor files credit requests (code refuses first).
    """CREATE TRIGGER IF NOT EXISTS sale_needs_an_active_seller
       BEFORE INSERT ON sale
       WHEN (SELECT status FROM seller WHERE id = NEW.seller_id) IS NOT 'active'
       BEGIN SELECT RAISE(ABORT, 'a suspended seller cannot sell'); END""",
    # Version 11: each change of a seller's status is counted, and the count only grows.
    """CREATE TRIGGER IF NOT EXISTS seller_status_is_counted
       BEFORE UPDATE OF status, status_changes ON seller
       WHEN NEW.status_changes < OLD.status_changes + (NEW.status IS NOT OLD.status)
       BEGIN SELECT RAISE(ABORT, 'a change of a seller''s status is counted'); END""",
    """CREATE TRIGGER IF NOT EXISTS credit_request_needs_an_active_seller
       BEFORE INSERT ON credit_request
       WHEN (SELECT status FROM seller WHERE id = NEW.seller_id) IS NOT 'active'
       BEGIN SELECT RAISE(ABORT, 'a suspended seller cannot ask for credit'); END""",
    _immutable("audit_checkpoint", "UPDATE", "audit checkpoints are never updated"),
    _immutable("audit_checkpoint", "DELETE", "audit checkpoints are never deleted"),
    # Version 9: a checkpoint is recorded once; a copy would verify (checkpoints.newest).
    """CREATE TRIGGER IF NOT EXISTS audit_checkpoint_is_new BEFORE INSERT ON audit_checkpoint
       WHEN EXISTS (SELECT 1 FROM audit_checkpoint WHERE mac = NEW.mac)
       BEGIN SELECT RAISE(ABORT, 'an audit checkpoint is recorded once'); END""",
    _immutable("seller_checkpoint", "UPDATE", "audit checkpoints are never updated"),
    _immutable("seller_checkpoint", "DELETE", "audit checkpoints are never deleted"),
    # I4: a decided request never changes again, so it can never be approved twice.
    """CREATE TRIGGER IF NOT EXISTS credit_request_decided_is_final
       BEFORE UPDATE ON credit_request
       WHEN NEW.seller_id IS NOT OLD.seller_id OR NEW.amount IS NOT OLD.amount
         OR NEW.created_at IS NOT OLD.created_at
         OR (OLD.status != 'pending'
             AND (NEW.status IS NOT OLD.status OR NEW.decided_at IS NOT OLD.decided_at))
       BEGIN SELECT RAISE(ABORT, 'I4: a decided credit request is final'); END""",
    # I2 + I3: each entry continues its seller's chain and the seller's current balance.
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_continues_chain
       BEFORE INSERT ON ledger_entry
       BEGIN
         SELECT RAISE(ABORT, 'I3: balance_after must equal the previous balance_after + amount')
         WHERE NEW.balance_after IS NOT COALESCE((SELECT balance_after FROM ledger_entry
                 WHERE seller_id = NEW.seller_id ORDER BY id DESC LIMIT 1), 0) + NEW.amount;
         SELECT RAISE(ABORT, 'I2: balance_after must equal the seller balance + amount')
         WHERE NEW.balance_after IS NOT
               (SELECT balance FROM seller WHERE id = NEW.seller_id) + NEW.amount;
       END""",
    # I2: a balance changes only onto the newest ledger entry, written just before.
    """CREATE TRIGGER IF NOT EXISTS seller_balance_follows_ledger
       BEFORE UPDATE OF balance ON seller WHEN NEW.balance IS NOT OLD.balance
       BEGIN
         SELECT RAISE(ABORT, 'I2: a balance may change only with its ledger entry')
         WHERE NEW.balance IS NOT (SELECT balance_after FROM ledger_entry
                 WHERE seller_id = NEW.id ORDER BY id DESC LIMIT 1);
       END""",
    """CREATE TRIGGER IF NOT EXISTS seller_starts_at_zero
       BEFORE INSERT ON seller WHEN NEW.balance IS NOT 0
       BEGIN SELECT RAISE(ABORT, 'I2: a new seller starts with balance 0'); END""",
    # I4: a credit entry exists only for an approved request, with its amount.
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_credit_matches_request
       BEFORE INSERT ON ledger_entry WHEN NEW.kind = 'credit'
       BEGIN
         SELECT RAISE(ABORT, 'I4: a credit entry needs its approved request')
         WHERE NOT EXISTS (SELECT 1 FROM credit_request WHERE id = NEW.credit_request_id
                 AND seller_id = NEW.seller_id AND status = 'approved'
                 AND amount = NEW.amount);
       END""",
    # I4: a sale entry debits exactly its sale.
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_sale_matches_sale
       BEFORE INSERT ON ledger_entry WHEN NEW.kind = 'sale'
       BEGIN
         SELECT RAISE(ABORT, 'I4: a sale entry needs its sale')
         WHERE NOT EXISTS (SELECT 1 FROM sale WHERE id = NEW.sale_id
                 AND seller_id = NEW.seller_id AND amount = -NEW.amount
                 AND balance_after = NEW.balance_after);
       END""",
    # I4: a refund entry gives its sale's whole amount back to the sale's seller (once:
    # the UNIQUE index on refund_of). The sale itself stays as it was (sale_no_update).
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_refund_matches_sale
       BEFORE INSERT ON ledger_entry WHEN NEW.kind = 'refund'
       BEGIN
         SELECT RAISE(ABORT, 'I4: a refund entry needs its sale, whole')
         WHERE NOT EXISTS (SELECT 1 FROM sale WHERE id = NEW.refund_of
                 AND seller_id = NEW.seller_id AND amount = NEW.amount);
       END""",
    # Version 4: a key's record names a sale, an entry or a request of its own seller.
    *(_its_sellers(*record) for record in KEY_RECORDS),
    # Version 7: each sale widens its block's span of stamps (models.SaleBlock), which
    # only ever widens: every sale lies in its block's span, which a search trusts. A block
    # row is made once (an INSERT OR REPLACE of one would delete it unseen by any trigger).
    f"""CREATE TRIGGER IF NOT EXISTS sale_widens_its_block AFTER INSERT ON sale
       BEGIN
         INSERT INTO sale_block (block, slot, first_stamp, last_stamp)
         SELECT NEW.id >> {BLOCK_BITS}, 0, NEW.created_at, NEW.created_at WHERE NOT EXISTS
           (SELECT 1 FROM sale_block WHERE block = NEW.id >> {BLOCK_BITS} AND slot = 0);
         UPDATE sale_block SET first_stamp = min(first_stamp, NEW.created_at),
                               last_stamp = max(last_stamp, NEW.created_at)
         WHERE block = NEW.id >> {BLOCK_BITS} AND slot = 0
           AND (first_stamp > NEW.created_at OR last_stamp < NEW.created_at);
       END""",
    """CREATE TRIGGER IF NOT EXISTS sale_block_is_new BEFORE INSERT ON sale_block
       WHEN EXISTS (SELECT 1 FROM sale_block WHERE block = NEW.block AND slot = NEW.slot)
       BEGIN SELECT RAISE(ABORT, 'a block of sales only ever widens'); END""",
    """CREATE TRIGGER IF NOT EXISTS sale_block_only_widens BEFORE UPDATE ON sale_block
       WHEN NEW.block IS NOT OLD.block OR NEW.slot IS NOT OLD.slot
         OR NEW.first_stamp > OLD.first_stamp OR NEW.last_stamp < OLD.last_stamp
       BEGIN SELECT RAISE(ABORT, 'a block of sales only ever widens'); END""",
    _immutable("sale_block", "DELETE", "a block of sales only ever widens"),
)

# Version 7: the blocks of the sales there, widened to hold each (a migration, the history
# generator; and migrate, when it puts back the trigger on sale: a sale made without it
# lies in no span). First the blocks with a row, then the others (SQLite; PostgreSQL: one
# upsert, which its guard lets through as it only widens).
_SPANS = (
    f"SELECT id >> {BLOCK_BITS} AS n, min(created_at) AS f, max(created_at) AS l"
    " FROM sale GROUP BY 1"
)
SALE_BLOCKS = (
    f"UPDATE sale_block SET first_stamp = min(first_stamp, s.f), last_stamp = max(last_stamp, s.l)"
    f" FROM ({_SPANS}) AS s WHERE block = s.n AND slot = 0"
    " AND (first_stamp > s.f OR last_stamp < s.l)",
    "INSERT INTO sale_block (block, slot, first_stamp, last_stamp) SELECT n, 0, f, l"
    f" FROM ({_SPANS}) AS s WHERE NOT EXISTS (SELECT 1 FROM sale_block WHERE block = s.n)",
)
SALE_BLOCKS_POSTGRESQL = (
    "INSERT INTO sale_block AS b (block, slot, first_stamp, last_stamp)"
    f" SELECT n, 0, f, l FROM ({_SPANS}) AS s ON CONFLICT (block, slot) DO UPDATE"
    " SET first_stamp = least(b.first_stamp, excluded.first_stamp),"
    " last_stamp = greatest(b.last_stamp, excluded.last_stamp)"
)


SCHEMA_LOCK = 7355608  # PostgreSQL's advisory lock for making or changing the schema


def create_postgresql(conn, where: str | None = None) -> None:
    """Create the PostgreSQL schema at VERSION in one transaction of `conn` (a psycopg
    connection), unless it is there already; another version is refused (`check_version`:
    an older one is upgraded by `chargebox migrate`, migrations.py).

    An advisory lock makes servers that start together create it once.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        confine_search_path(conn)
        found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
        if found:
            version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            check_version(version, where or conn.info.dbname)
            add_checkpoints(conn)
            return
        for statement in postgresql_statements():
            conn.execute(statement)
        conn.execute(  # stamped as migrate and SQLite stamp it (clock.now), not now()::text
            "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
            (POSTGRESQL_VERSION, now()),
        )


def confine_search_path(conn) -> None:
    """In the owner's transaction that makes or changes the schema: the search_path becomes
    the schema, then pg_temp, as the guard functions take it (`SET search_path FROM
    CURRENT`; guards._HELD checks it). Left out, pg_temp is searched first, and any
    session that may make temporary tables (PUBLIC may, unless revoked) could hide a table
    the guard reads (the sale a refund names, say) behind one of its own."""
    from psycopg import sql

    conn.execute("SET LOCAL quote_all_identifiers = off")  # the form guards._HELD expects
    conn.execute(sql.SQL("SET LOCAL search_path TO {}, pg_temp").format(current_schema(conn)))


CHECKPOINT_TABLES = ("audit_checkpoint", "seller_checkpoint")


def add_checkpoints(conn) -> None:
    """The audit checkpoint tables, added to a database made before them (init-db, and
    migrate before its steps: they only add, and the audit does without them)."""
    if conn.execute("SELECT to_regclass('audit_checkpoint') IS NOT NULL").fetchone()[0]:
        return
    for statement in postgresql_statements():
        if any(table in statement for table in CHECKPOINT_TABLES):
            conn.execute(statement)


def current_schema(conn):
    """The schema a psycopg connection works in, as an identifier for its sql module."""
    from psycopg import sql

    (name,) = conn.execute("SELECT current_schema()").fetchone()
    return sql.Identifier(name)
