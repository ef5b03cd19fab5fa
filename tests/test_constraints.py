"""PostgreSQL: the constraints, unique indexes and columns that guard chargebox's tables.

The schema's owner may drop or loosen any of them (`ALTER TABLE ... DROP CONSTRAINT`),
as it may a trigger (test_migrations.py). Each is then named as a guard is: start-up
refuses the database, the audit names it (I5), and `chargebox migrate` makes it again
as chargebox/schema_postgresql.shape pins it, unless rows written without it break it.
"""

from __future__ import annotations

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
    rows_on_disk,
    writable,
)
from tests.test_migrations import chargebox

pytestmark = pytest.mark.postgresql_only

SHAPE = ROOT / "chargebox" / constraints.SHAPE


def rows_of(conn):
    return lambda sql: conn.execute(sql).fetchall()


def test_the_pinned_shape_is_what_the_schema_makes(service, config):
    """schema_postgresql.shape is a fresh schema's, line for line (a migrated one's is the
    same: test_migrations compares their catalogues, and finds no guard missing), for
    every table of chargebox's; and it compares equal however names are quoted."""
    with read_only(database_of(config)) as conn:
        made = constraints.described(rows_of(conn))
        assert constraints.changed(rows_of(conn)) == []
        conn.execute("SET quote_all_identifiers = on")
        assert (
            '"seller"'
            in conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conname = 'sale_seller_id_fkey'"
            ).fetchone()[0]
        )
        assert constraints.changed(rows_of(conn)) == []
    pinned = "".join(f"{line}\n" for line in SHAPE.read_text().splitlines()
                     if not line.startswith("#"))  # fmt: skip
    assert made == pinned, f"{SHAPE} should read, below its comments:\n{made}"
    assert {table for _, table, _ in constraints.pinned()} == schema.tables()


# Each way the schema's owner may loosen a guard declared with a table, and its name.
TAMPERED = {
    "a UNIQUE dropped (a request could be credited twice)": (
        ["ledger_entry.ledger_entry_credit_request_id_key (a constraint)"],
        "ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_credit_request_id_key",
    ),
    "a CHECK loosened under its name": (
        ["seller.seller_balance_check (a constraint)"],
        "ALTER TABLE seller DROP CONSTRAINT seller_balance_check,"
        " ADD CONSTRAINT seller_balance_check CHECK (balance >= -1000000)",
    ),
    "a CHECK made again NOT VALID (the rows before it unchecked)": (
        ["sale.sale_amount_check (a constraint)"],
        "ALTER TABLE sale DROP CONSTRAINT sale_amount_check, ADD CONSTRAINT sale_amount_check"
        " CHECK (amount > 0 AND amount <= 1000000000000000) NOT VALID",
    ),
    "a foreign key deferred to the commit": (
        ["sale.sale_seller_id_fkey (a constraint)"],
        "ALTER TABLE sale ALTER CONSTRAINT sale_seller_id_fkey DEFERRABLE INITIALLY DEFERRED",
    ),
    "a primary key dropped": (
        ["ledger_seal.ledger_seal_pkey (a constraint)"],
        "ALTER TABLE ledger_seal DROP CONSTRAINT ledger_seal_pkey",
    ),
    "a NOT NULL dropped": (
        ["ledger_entry.balance_after (a column)"],
        "ALTER TABLE ledger_entry ALTER COLUMN balance_after DROP NOT NULL",
    ),
    "a column's type widened": (
        ["seller_key.key_hash (a column)"],
        "ALTER TABLE seller_key ALTER COLUMN key_hash TYPE text",
    ),
    "the unique index dropped": (
        ["seller_key.seller_key_seller_id_label (a unique index)"],
        "DROP INDEX seller_key_seller_id_label",
    ),
    "the unique index made again over other rows": (
        ["seller_key.seller_key_seller_id_label (a unique index)"],
        "DROP INDEX seller_key_seller_id_label",
        "CREATE UNIQUE INDEX seller_key_seller_id_label ON seller_key (seller_id, label)"
        " WHERE revoked_at IS NOT NULL",
    ),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_constraint_dropped_or_changed_is_named_and_migrate_puts_it_back(service, config, case):
    named, *statements = TAMPERED[case]
    credited_seller(service, 10_000, "Ali")
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        for statement in statements:
            conn.execute(statement)
    with read_only(db) as conn:
        assert guards.postgresql_missing(rows_of(conn)) == named
    refused = chargebox("create-seller", "Sara", "--db", db, "--data-dir", config.data_dir)
    assert refused.returncode == 2, refused.stderr
    assert (f"{len(named)} guard(s) of the schema are missing or changed ({', '.join(named)})"
            in refused.stderr and "Traceback" not in refused.stderr), refused.stderr  # fmt: skip
    audited = cli_audit(db, config.data_dir)
    assert audited.returncode == 1
    assert f"schema {named[0]} is missing or changed: the schema's is " in audited.stderr
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert migrated.returncode == 0, migrated.stderr
    assert f"put back {len(named)} guard(s) dropped or changed: {', '.join(named)}" in (
        migrated.stderr
    )
    with read_only(db) as conn:
        assert guards.postgresql_missing(rows_of(conn)) == []
    assert cli_audit(db, config.data_dir).returncode == 0
    started = chargebox("create-seller", "Sara", "--db", db, "--data-dir", config.data_dir)
    assert started.returncode == 0, started.stderr


SESSION = ("INSERT INTO web_session (token_hash, role, credential_hash, created_at, expires_at)"
           " VALUES (?, 'root', ?, '2026-01-01', '2026-01-02')")  # fmt: skip


def test_rows_written_without_a_constraint_keep_migrate_from_putting_it_back(service, config):
    """A row the constraint would have refused, written while it was gone: migrate says
    which constraint and PostgreSQL's words, in one line, and changes nothing; once the
    row is gone, it puts the constraint back, which then refuses such a row again."""
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        conn.execute("ALTER TABLE web_session DROP CONSTRAINT web_session_role_check")
        conn.execute(SESSION, ("a" * 64, "b" * 64))
    owner = backends.owner_url(db)
    refused = chargebox("migrate", "--db", owner, "--data-dir", config.data_dir)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert ("cannot put back web_session.web_session_role_check (a constraint): check"
            ' constraint "web_session_role_check" of relation "web_session" is violated by'
            " some row" in refused.stderr), refused.stderr  # fmt: skip
    assert "chargebox audit --full" in refused.stderr
    with read_only(db) as conn:
        assert guards.postgresql_missing(rows_of(conn)) == [
            "web_session.web_session_role_check (a constraint)"
        ]
    with writable(db) as conn:
        conn.execute("DELETE FROM web_session WHERE role = 'root'")
    migrated = chargebox("migrate", "--db", owner, "--data-dir", config.data_dir)
    assert migrated.returncode == 0, migrated.stderr
    with writable(db) as conn, pytest.raises(REFUSED, match="web_session_role_check"):
        conn.execute(SESSION, ("c" * 64, "d" * 64))
    assert rows_on_disk(db, "SELECT count(*) FROM web_session") == [(0,)]
