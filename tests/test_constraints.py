"""The constraints, unique indexes and columns that guard chargebox's tables.

Whoever may change the schema may drop or loosen one, as a trigger (test_migrations.py):
on PostgreSQL the schema's owner (`ALTER TABLE ... DROP CONSTRAINT`), on SQLite whoever
writes the file (`DROP INDEX`, a table's text rewritten as sqlite.org's procedure for
loosening a CHECK does). Each is then named as a guard is: start-up refuses the
database, the audit names it (I5), and `chargebox migrate` makes it again as the schema
has it (PostgreSQL: chargebox/schema_postgresql.shape; SQLite: a new file's text),
unless rows written without it break it: then it refuses in one line, changing nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chargebox import constraints, guards, schema
from tests import backends
from tests.support import (
    REFUSED,
    ROOT,
    cli_audit,
    credited_seller,
    database_of,
    read_only,
    reconciled_balances,
    rows_on_disk,
    writable,
)
from tests.test_migrations import chargebox

SHAPE = ROOT / "chargebox" / constraints.SHAPE
SQLITE_SHAPE = ROOT / "chargebox" / constraints.SQLITE_SHAPE


def rows_of(conn):
    return lambda sql: conn.execute(sql).fetchall()


@pytest.mark.postgresql_only
def test_the_pinned_shape_is_what_the_schema_makes(service, config):
    """schema_postgresql.shape is a fresh schema's, line for line (a migrated one's is the
    same: test_migrations compares their catalogues, and finds no guard missing), for
    every table of chargebox's."""
    with read_only(database_of(config)) as conn:
        made = constraints.described(rows_of(conn))
        assert constraints.changed(rows_of(conn)) == []
    pinned = "".join(f"{line}\n" for line in SHAPE.read_text().splitlines()
                     if not line.startswith("#"))  # fmt: skip
    assert made == pinned, f"{SHAPE} should read, below its comments:\n{made}"
    assert {table for _, table, _ in constraints.pinned()} == schema.tables()


def rewritten(table: str, old: str, new: str):
    """SQLite: `table`'s text with `old` made `new`, as sqlite.org's procedure for loosening
    a CHECK does (writable_schema, then schema_version bumped), on a connection."""

    def rewrite(conn) -> None:
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        assert old in text_of(conn, table)
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table'"
                     " AND name = ?", (old, new, table))  # fmt: skip
        conn.execute(f"PRAGMA schema_version = {version + 1}")
        conn.execute("PRAGMA writable_schema = OFF")

    return rewrite


def text_of(conn, table: str) -> str:
    return conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def put_back(*named: str) -> str:
    return f"put back {len(named)} guard(s) dropped or changed: {', '.join(named)}"


def test_the_pinned_sqlite_text_is_what_the_models_make():
    """schema_sqlite.shape is what this release's peewee makes of each table and UNIQUE
    index, line for line: a file made by it stays taken whichever peewee 4.5 runs it."""
    made = constraints.sqlite_described()
    pinned = "".join(f"{line}\n" for line in SQLITE_SHAPE.read_text().splitlines()
                     if not line.startswith("#"))  # fmt: skip
    assert made == pinned, f"{SQLITE_SHAPE} should read, below its comments:\n{made}"
    assert {table for _, _, table, _ in constraints.sqlite_guards()} == schema.tables() - {
        "schema_version"  # made by migrations.py, not the models: it guards nothing
    }


@pytest.mark.sqlite_only
def test_a_file_made_by_another_peewee_is_taken_as_made(service, config, monkeypatch):
    """Should another peewee write a table in other words, a file this release's made
    (schema_sqlite.shape) is no changed guard; a text that is neither is."""
    service.close()
    made = constraints.sqlite_made()
    other = tuple((kind, name, table, sql.replace("BETWEEN 1 AND 200", ">= 1 AND length(name)"
                   " <= 200")) for kind, name, table, sql in made)  # fmt: skip
    assert other != made
    monkeypatch.setattr(constraints, "sqlite_made", lambda: other)
    with read_only(database_of(config)) as conn:
        assert constraints.sqlite_changed(conn.conn) == []
    monkeypatch.setattr(constraints, "sqlite_pinned", lambda: {})
    with read_only(database_of(config)) as conn:
        assert constraints.sqlite_changed(conn.conn) == ["seller (a table)"]


# Each way a guard declared with a table may be loosened: its name, what migrate says.
POSTGRESQL = {
    "a UNIQUE dropped (a request could be credited twice)": (
        "ledger_entry.ledger_entry_credit_request_id_key (a constraint)",
        "ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_credit_request_id_key",
    ),
    "a CHECK loosened under its name": (
        "seller.seller_balance_check (a constraint)",
        "ALTER TABLE seller DROP CONSTRAINT seller_balance_check,"
        " ADD CONSTRAINT seller_balance_check CHECK (balance >= -1000000)",
    ),
    "a CHECK made again NOT VALID (the rows before it unchecked)": (
        "sale.sale_amount_check (a constraint)",
        "ALTER TABLE sale DROP CONSTRAINT sale_amount_check, ADD CONSTRAINT sale_amount_check"
        " CHECK (amount > 0 AND amount <= 1000000000000000) NOT VALID",
    ),
    "a foreign key deferred to the commit": (
        "sale.sale_seller_id_fkey (a constraint)",
        "ALTER TABLE sale ALTER CONSTRAINT sale_seller_id_fkey DEFERRABLE INITIALLY DEFERRED",
    ),
    "a primary key dropped": (
        "ledger_seal.ledger_seal_pkey (a constraint)",
        "ALTER TABLE ledger_seal DROP CONSTRAINT ledger_seal_pkey",
    ),
    "a NOT NULL dropped": (
        "ledger_entry.balance_after (a column)",
        "ALTER TABLE ledger_entry ALTER COLUMN balance_after DROP NOT NULL",
    ),
    "a column's type widened": (
        "seller_key.key_hash (a column)",
        "ALTER TABLE seller_key ALTER COLUMN key_hash TYPE text",
    ),
    "the unique index dropped": (
        "seller_key.seller_key_seller_id_label (a unique index)",
        "DROP INDEX seller_key_seller_id_label",
    ),
    "the unique index made again over other rows": (
        "seller_key.seller_key_seller_id_label (a unique index)",
        "DROP INDEX seller_key_seller_id_label",
        "CREATE UNIQUE INDEX seller_key_seller_id_label ON seller_key (seller_id, label)"
        " WHERE revoked_at IS NOT NULL",
    ),
    # helper-115's: what a comparison that ignored case and quotes, collations or an
    # index's validity let through
    "a UNIQUE moved to a look-alike column": (
        "ledger_entry.ledger_entry_credit_request_id_key (a constraint)",
        'ALTER TABLE ledger_entry ADD COLUMN "CREDIT_REQUEST_ID" bigint',
        "ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_credit_request_id_key, ADD"
        ' CONSTRAINT ledger_entry_credit_request_id_key UNIQUE ("CREDIT_REQUEST_ID")',
    ),
    "a column's type a domain of a look-alike name": (
        "seller_key.key_hash (a column)",
        'CREATE DOMAIN "character varying(64)" AS text',
        'ALTER TABLE seller_key ALTER COLUMN key_hash TYPE "character varying(64)"',
    ),
    "a column given a collation that folds case": (
        "web_session.role (a column)",
        "CREATE COLLATION folded (provider = icu, locale = 'und-u-ks-level2',"
        " deterministic = false)",
        "ALTER TABLE web_session ALTER COLUMN role TYPE text COLLATE folded",
    ),
}
TAMPERED = {case: (named, put_back(named), *done) for case, (named, *done) in POSTGRESQL.items()}
AMOUNT = ("\"amount\" INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0 AND"
          " amount <= 1000000000000000)")  # fmt: skip
TAMPERED_SQLITE = {
    "a UNIQUE index dropped (a request could be credited twice)": (
        "ledger_entry.ledger_entry_credit_request_id (a unique index)",
        "made what it lacked: ledger_entry_credit_request_id",
        "DROP INDEX ledger_entry_credit_request_id",
    ),
    "a UNIQUE index made again over other rows": (
        "ledger_entry.ledger_entry_credit_request_id (a unique index)",
        "made what it lacked: ledger_entry_credit_request_id (made again: it differed)",
        "DROP INDEX ledger_entry_credit_request_id",
        "CREATE UNIQUE INDEX ledger_entry_credit_request_id ON ledger_entry (credit_request_id)"
        " WHERE credit_request_id IS NULL",
    ),
    "a CHECK written out of a table's text": (
        "seller (a table)",
        put_back("seller (a table)"),
        rewritten("seller", " AND balance >= 0", ""),
    ),
    "a NOT NULL written out": (
        "ledger_entry (a table)",
        put_back("ledger_entry (a table)"),
        rewritten("ledger_entry", '"balance_after" INTEGER NOT NULL', '"balance_after" INTEGER'),
    ),
    # helper-116's: what a comparison that dropped every double quote let through
    "a partial index's WHERE made a string (false: the index holds no row)": (
        "ledger_entry.ledger_entry_credit_request_id (a unique index)",
        "made what it lacked: ledger_entry_credit_request_id (made again: it differed)",
        "DROP INDEX ledger_entry_credit_request_id",
        "CREATE UNIQUE INDEX ledger_entry_credit_request_id ON ledger_entry (credit_request_id)"
        ' WHERE ("credit_request_id IS NOT NULL")',
    ),
    "a column's NOT NULL and CHECK quoted into its type's name": (
        "sale (a table)",
        put_back("sale (a table)"),
        rewritten("sale", AMOUNT, AMOUNT.replace("INTEGER", '"INTEGER', 1) + '"'),
    ),
    "a foreign key written out": (
        "web_session (a table)",
        put_back("web_session (a table)"),
        rewritten(
            "web_session",
            'FOREIGN KEY ("seller_id") REFERENCES "seller" ("id") ON DELETE RESTRICT, ',
            "",
        ),  # fmt: skip
    ),
}


@pytest.mark.postgresql_only
@pytest.mark.parametrize("case", TAMPERED)
def test_a_constraint_dropped_or_changed_is_named_and_migrate_puts_it_back(service, config, case):
    named_and_put_back(service, config, *TAMPERED[case])


@pytest.mark.sqlite_only
@pytest.mark.parametrize("case", TAMPERED_SQLITE)
def test_a_unique_index_dropped_or_a_table_rewritten_is_named_and_put_back(service, config, case):
    named_and_put_back(service, config, *TAMPERED_SQLITE[case])


def named_and_put_back(service, config, named: str | tuple, said: str, *done) -> None:
    """`done` (statements, or calls on a connection) to the database, as someone who may
    change the schema: `named` (one, or several) is refused at start-up and named by the
    audit; migrate says `said` and puts it back; then the audit is clean, and a server
    starts."""
    names = [named] if isinstance(named, str) else list(named)
    db = tampered(service, config, *done, credit=10_000)
    with read_only(db) as conn:
        assert dropped(conn) == names
    where = ["--data-dir", config.data_dir] if config.db_url else []
    refused = chargebox("create-seller", "Sara", "--db", db, *where)
    assert refused.returncode == 2, refused.stderr
    assert (f"{len(names)} guard(s) of the schema are missing or changed ({', '.join(names)})"
            in refused.stderr and "Traceback" not in refused.stderr), refused.stderr  # fmt: skip
    audited = cli_audit(db, config.data_dir if config.db_url else None)
    assert audited.returncode == 1
    for name in names:
        assert f"schema {name} is missing or changed: the schema's is " in audited.stderr
    migrated = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db, *where)
    assert migrated.returncode == 0, migrated.stderr
    assert f"already the newest; {said}" in migrated.stderr, migrated.stderr
    with read_only(db) as conn:
        assert dropped(conn) == []
    audited = cli_audit(db, config.data_dir if config.db_url else None)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    started = chargebox("create-seller", "Sara", "--db", db, *where)
    assert started.returncode == 0, started.stderr
    assert reconciled_balances(db) == {1: 10_000, 2: 0}


def tampered(service, config, *done, credit: int | None = None) -> Path:
    """The service's database, closed, with `done` (statements, or calls on a connection)
    run on it by someone who may change the schema; a seller "Ali" credited `credit`
    first (none if None)."""
    if credit is not None:
        credited_seller(service, credit, "Ali")
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        for statement in done:
            conn.execute(statement) if isinstance(statement, str) else statement(conn)
    return db


def dropped(conn) -> list[str]:
    """The guards a fresh connection finds dropped or changed, on either backend."""
    if conn.postgresql:
        return guards.postgresql_missing(rows_of(conn))
    return guards.missing_in_sqlite(conn.conn)


def session(credential: str, role: str = "root"):
    """A web session of token "a" * 64 and `role`, written by hand, on a connection."""
    sql = SESSION.replace("'root'", f"'{role}'")
    return lambda conn: conn.execute(sql, ("a" * 64, credential * 64))


SESSION = ("INSERT INTO web_session (token_hash, role, credential_hash, created_at, expires_at)"
           " VALUES (?, 'root', ?, '2026-01-01', '2026-01-02')")  # fmt: skip


# A CHECK loosened on each backend: how, and what migrate then says of a row that breaks it.
LOOSENED = {
    "postgresql": (
        "ALTER TABLE web_session DROP CONSTRAINT web_session_role_check",
        "web_session.web_session_role_check (a constraint)",
        'check constraint "web_session_role_check" of relation "web_session" is violated by'
        " some row",
    ),
    "sqlite": (
        rewritten("web_session", " CHECK (role IN ('admin', 'seller'))", ""),
        "web_session (a table)",
        "CHECK constraint failed: role IN ('admin', 'seller')",
    ),
}


def test_rows_written_without_a_constraint_keep_migrate_from_putting_it_back(
    service, config, backend
):
    """A row the constraint would have refused, written while it was gone: migrate says
    which constraint and the database's words, in one line, and changes nothing; once
    the row is gone, it puts the constraint back, which then refuses such a row again."""
    loosen, named, words = LOOSENED[backend]
    db = tampered(service, config, loosen, session("b"))
    owner = backends.owner_url(db) if config.db_url else db
    where = ["--data-dir", config.data_dir] if config.db_url else []
    refused = chargebox("migrate", "--db", owner, *where)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"cannot put back {named}: {words}. Rows were written" in refused.stderr, refused.stderr
    assert "chargebox audit --full" in refused.stderr
    with read_only(db) as conn:
        assert dropped(conn) == [named]
    with writable(db) as conn:
        conn.execute("DELETE FROM web_session WHERE role = 'root'")
    migrated = chargebox("migrate", "--db", owner, *where)
    assert migrated.returncode == 0, migrated.stderr
    with writable(db) as conn, pytest.raises(REFUSED, match="web_session_role_check|role IN"):
        conn.execute(SESSION, ("c" * 64, "d" * 64))
    assert rows_on_disk(db, "SELECT count(*) FROM web_session") == [(0,)]


@pytest.mark.sqlite_only
def test_rows_a_dropped_unique_index_let_in_keep_migrate_from_making_it_again(service, config):
    """SQLite: two sessions of one token, written while its UNIQUE index was dropped:
    migrate names the index and SQLite's words in one line, and changes nothing."""
    db = tampered(service, config, "DROP INDEX web_session_token_hash",
                  session("b", "admin"), session("c", "admin"))  # fmt: skip
    refused = chargebox("migrate", "--db", db)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert ("cannot put back web_session_token_hash: UNIQUE constraint failed:"
            " web_session.token_hash. Rows were written" in refused.stderr)  # fmt: skip
    with read_only(db) as conn:
        assert dropped(conn) == ["web_session.web_session_token_hash (a unique index)"]


@pytest.mark.sqlite_only
def test_a_column_of_the_operators_own_is_never_dropped_by_a_rebuild(service, config):
    """SQLite: a column added to one of chargebox's tables changes its text (start-up
    names it); migrate would rebuild the table without it, losing what it holds, so it
    refuses instead, naming the column, and the column keeps its values."""
    db = tampered(service, config, "ALTER TABLE seller ADD COLUMN note TEXT",
                  "UPDATE seller SET note = 'mine'", credit=10_000)  # fmt: skip
    refused = chargebox("create-seller", "Sara", "--db", db)
    assert refused.returncode == 2 and "missing or changed (seller (a table))" in refused.stderr
    migrated = chargebox("migrate", "--db", db)
    assert migrated.returncode == 2, migrated.stderr
    assert ("cannot put back seller (a table): it holds columns the schema does not make"
            " (note); move them out of it first" in migrated.stderr), migrated.stderr  # fmt: skip
    assert rows_on_disk(db, "SELECT note FROM seller") == [("mine",)]


# Repairs that take other guards with them, made again in the next round, unnamed
# (helper-115): a key its foreign keys use, a column a trigger's WHEN reads.
REPAIRS = {
    "a primary key renamed (every foreign key on it goes, and comes back)": (
        "seller.seller_pkey (a constraint)",
        "ALTER TABLE seller RENAME CONSTRAINT seller_pkey TO seller_pk",
    ),
    "a unique key a foreign key uses, made again otherwise": (
        "phone.phone_number_key (a constraint)",
        "ALTER TABLE sale DROP CONSTRAINT sale_phone_fkey",
        "ALTER TABLE phone DROP CONSTRAINT phone_number_key,"
        " ADD CONSTRAINT phone_number_key UNIQUE NULLS NOT DISTINCT (number)",
        "ALTER TABLE sale ADD CONSTRAINT sale_phone_fkey FOREIGN KEY (phone) REFERENCES"
        " phone(number) ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED",
    ),
    "the type of a column a trigger's WHEN reads (its CHECKs read it otherwise too)": (
        (
            "ledger_entry.kind (a column)",
            "ledger_entry.ledger_entry_check (a constraint)",
            "ledger_entry.ledger_entry_kind_check (a constraint)",
        ),
        "DROP TRIGGER ledger_entry_refund_matches_sale ON ledger_entry",
        "ALTER TABLE ledger_entry ALTER COLUMN kind TYPE varchar(20)",
        "CREATE TRIGGER ledger_entry_refund_matches_sale BEFORE INSERT ON ledger_entry FOR EACH"
        " ROW WHEN (NEW.kind = 'refund') EXECUTE FUNCTION chargebox_refund_matches_sale()",
    ),
}


@pytest.mark.postgresql_only
@pytest.mark.parametrize("case", REPAIRS)
def test_a_repair_that_takes_other_guards_with_it_makes_them_again(service, config, case):
    named, *done = REPAIRS[case]
    said = put_back(named) if isinstance(named, str) else put_back(*named)
    named_and_put_back(service, config, named, said, *done)


@pytest.mark.postgresql_only
def test_a_view_in_a_tables_place_is_named_and_never_taken_for_it(service, config):
    """The table moved to another schema, and an updatable view of it in its place: what
    is written through it no guard of the schema sees (its constraints dropped there).
    Start-up refuses, naming the table; migrate cannot make it again, and says so in one
    line."""
    db = tampered(
        service,
        config,
        "CREATE SCHEMA elsewhere",
        "ALTER TABLE web_session SET SCHEMA elsewhere",
        "ALTER TABLE elsewhere.web_session DROP CONSTRAINT web_session_role_check",
        "CREATE VIEW web_session AS SELECT * FROM elsewhere.web_session",
    )
    with read_only(db) as conn:
        assert dropped(conn) == ["web_session (a table)"]
    refused = chargebox("create-seller", "Sara", "--db", db, "--data-dir", config.data_dir)
    assert refused.returncode == 2 and "(web_session (a table))" in refused.stderr, refused.stderr
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert migrated.returncode == 2 and migrated.stderr.count("\n") == 1, migrated.stderr
    assert ("cannot put back web_session (a table): there is no such table in the schema"
            in migrated.stderr)  # fmt: skip


@pytest.mark.postgresql_only
def test_an_invalid_unique_index_is_named_and_its_storage_settings_are_not(service, config):
    """A unique index a failed CREATE ... CONCURRENTLY left INVALID checks nothing, though
    PostgreSQL describes it alike: named, and migrate, finding the rows it let in, refuses.
    Its storage settings are the operator's to tune: not named."""
    seller = credited_seller(service, 0, "Ali")
    service.create_key(seller["id"], "till")
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        conn.execute("ALTER INDEX seller_key_seller_id_label SET (fillfactor = 90)")
    with read_only(db) as conn:
        assert dropped(conn) == []
    with writable(db) as conn:
        conn.execute("DROP INDEX seller_key_seller_id_label")
        conn.execute("INSERT INTO seller_key (seller_id, label, key_hash, created_at) SELECT"
                     " seller_id, label, repeat('f', 64), created_at FROM seller_key"
                     " WHERE label = 'till'")  # fmt: skip
        with pytest.raises(REFUSED):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY seller_key_seller_id_label ON"
                         " seller_key (seller_id, label) WHERE revoked_at IS NULL")  # fmt: skip
    named = "seller_key.seller_key_seller_id_label (a unique index)"
    with read_only(db) as conn:
        assert dropped(conn) == [named]
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert migrated.returncode == 2 and migrated.stderr.count("\n") == 1, migrated.stderr
    assert f"cannot put back {named}: could not create unique index" in migrated.stderr
    assert "Key (" not in migrated.stderr  # PostgreSQL's DETAIL (the row's values) is not said


@pytest.mark.postgresql_only
def test_a_dropped_column_is_named_and_migrate_says_it_cannot_make_it_again(service, config):
    """What a dropped column held went with it: migrate says so in one line, changing
    nothing, rather than blame rows."""
    db = tampered(service, config, "ALTER TABLE web_session DROP COLUMN credential_hash")
    with read_only(db) as conn:
        assert dropped(conn) == ["web_session.credential_hash (a column)"]
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert migrated.returncode == 2 and migrated.stderr.count("\n") == 1, migrated.stderr
    assert ("cannot put back web_session.credential_hash (a column): the column was dropped,"
            " and what it held with it; restore a backup" in migrated.stderr)  # fmt: skip
    assert "Rows were written" not in migrated.stderr


@pytest.mark.sqlite_only
def test_a_rebuild_keeps_the_operators_indexes_and_refuses_to_lose_a_column(service, config):
    """SQLite, helper-116: the rebuild makes again the operator's own index on the table
    (it was lost without a word); a column dropped from one of chargebox's tables cannot
    be made again (every row would have read its name as a string, and migrate said it
    put the table back): refused, changing nothing; so is a generated column of the
    operator's (PRAGMA table_info leaves it out) and a table of the name migrate builds in."""
    db = tampered(service, config, "CREATE INDEX mine ON seller (created_at)",
                  rewritten("seller", " AND balance >= 0", ""), credit=10_000)  # fmt: skip
    migrated = chargebox("migrate", "--db", db)
    assert migrated.returncode == 0, migrated.stderr
    assert rows_on_disk(db, "SELECT name FROM sqlite_master WHERE name = 'mine'") == [("mine",)]
    for done, said in (
        ("ALTER TABLE seller_key DROP COLUMN last_used_at",
         "cannot put back seller_key (a table): it lacks the column(s) last_used_at, and what"
         " they held with them; restore a backup"),
        ("ALTER TABLE seller ADD COLUMN shown TEXT AS (upper(name)) VIRTUAL",
         "cannot put back seller (a table): it holds columns the schema does not make (shown)"),
        ("CREATE TABLE seller_put_back (x)",
         'cannot put back seller (a table): rename "seller_put_back", which migrate builds'),
    ):  # fmt: skip
        with writable(db) as conn:
            conn.execute(done)
            if "seller_put_back" in done:
                rewritten("seller", " AND balance >= 0", "")(conn)
            before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        refused = chargebox("migrate", "--db", db)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Rows were written" not in refused.stderr
        assert rows_on_disk(db, "SELECT sql FROM sqlite_master ORDER BY name") == before
        with writable(db) as conn:  # as it was, for the next
            conn.execute("DROP TABLE IF EXISTS seller_put_back")
            if "DROP COLUMN" in done:
                conn.execute("ALTER TABLE seller_key ADD COLUMN last_used_at VARCHAR(32)")


@pytest.mark.sqlite_only
@pytest.mark.parametrize("replaced", ["dropped", "a view in its place"])
def test_a_table_dropped_or_a_view_in_its_place_is_named_never_made_again_empty(
    service, config, replaced
):
    """SQLite, helper-116: a table of chargebox's that no trigger guards, dropped, was made
    again, empty, by the next start without a word; a view in its place was never named.
    Named now, and migrate, which cannot make its rows again, says so."""
    view = "CREATE VIEW web_session AS SELECT 1 AS id"
    db = tampered(service, config, "DROP TABLE web_session", *[view] * (replaced != "dropped"))
    with read_only(db) as conn:
        assert dropped(conn) == ["web_session (a table)"]
    refused = chargebox("create-seller", "Sara", "--db", db)
    assert refused.returncode == 2 and "(web_session (a table))" in refused.stderr
    migrated = chargebox("migrate", "--db", db)
    assert migrated.returncode == 2 and migrated.stderr.count("\n") == 1, migrated.stderr
    assert ("cannot put back web_session (a table): there is no such table in the file"
            in migrated.stderr)  # fmt: skip


@pytest.mark.postgresql_only
def test_a_repair_that_cascades_makes_the_operators_foreign_keys_again(service, config):
    """PostgreSQL, helper-116: a primary key made again with CASCADE took a foreign key of
    the operator's own table with it, and nothing made it again. It is made again now."""
    db = tampered(service, config, "CREATE TABLE mine (seller_id bigint REFERENCES seller (id))",
                  "ALTER TABLE seller RENAME CONSTRAINT seller_pkey TO seller_pk")  # fmt: skip
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert migrated.returncode == 0, migrated.stderr
    assert put_back("seller.seller_pkey (a constraint)") in migrated.stderr
    assert rows_on_disk(db, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                            " WHERE conrelid = 'mine'::regclass") == [
        ("mine_seller_id_fkey", "FOREIGN KEY (seller_id) REFERENCES seller(id)")
    ]  # fmt: skip
    with read_only(db) as conn:
        assert dropped(conn) == []


@pytest.mark.postgresql_only
def test_a_database_that_quotes_every_name_is_no_changed_guard(service, config):
    """`quote_all_identifiers = on` for the database (or the service's role) quotes every
    name of every definition PostgreSQL gives back: start-up named 171 guards changed
    (55 triggers before constraints were compared). chargebox's sessions set it off."""
    service.close()
    db = database_of(config)
    name = config.db_url.rsplit("/", 1)[1]
    with writable(db) as conn:
        conn.execute(f"ALTER DATABASE {name} SET quote_all_identifiers = on")
    with read_only(db) as conn:  # a session of the database's settings, not chargebox's
        assert conn.execute("SHOW quote_all_identifiers").fetchone() == ("on",)
    started = chargebox("create-seller", "Sara", "--db", db, "--data-dir", config.data_dir)
    assert started.returncode == 0, started.stderr
    audited = cli_audit(db, config.data_dir)
    assert audited.returncode == 0, audited.stdout + audited.stderr


@pytest.mark.postgresql_only
def test_an_index_dropped_while_the_audit_reads_is_no_error(service, config):
    """helper-117: an operator's index dropped after an audit's snapshot began has no
    definition left (pg_get_indexdef gives NULL): the comparison was a TypeError (the
    audit a traceback, /metrics a 500). It is no index of the schema's: left out."""
    with read_only(database_of(config)) as conn:
        found = rows_of(conn)(constraints._HELD)
    gone = [*found, ("index", "mine", "mine_a", None)]
    assert constraints.changed(lambda sql: gone) == [] == constraints.changed(lambda sql: found)


@pytest.mark.postgresql_only
def test_the_guards_are_read_with_names_unquoted_whatever_the_session_says(service, config):
    """Behind pgbouncer a statement may run in another server session than the one
    pg_driver.connect set quote_all_identifiers off in (helper-118): the guards are read
    in a transaction that sets it off for itself."""
    service.close()
    with read_only(database_of(config)) as conn:
        conn.execute("SET quote_all_identifiers = on")
        assert len(guards.postgresql_missing(rows_of(conn))) > 100  # read as it stands
        assert guards.missing_in(conn.conn) == []
