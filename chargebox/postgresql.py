"""PostgreSQL through psycopg 3: connecting, the SQL's parameters, and init-db's grants.

chargebox's SQL is written once, with SQLite's `?` and `:name` parameters; here
it is handed to psycopg as `%s` and `%(name)s`. `init-db --grant-to ROLE` creates
the schema as its owner and grants the service's role only what the service
needs: no UPDATE, DELETE or TRUNCATE on what is append-only, no trigger to drop.
The service itself does not serve a PostgreSQL database yet (see README).
"""

from __future__ import annotations

import re

# A quoted literal (left alone), a `?`, a `:name` (not a `::cast`), or a `%` to escape.
_PARAMETER = re.compile(r"'(?:[^']|'')*'|\?|(?<!:):([A-Za-z_]\w*)|%")
# What the service's role may change, column by column; everything else it may only
# read and insert, and the append-only tables not even that much more.
_UPDATABLE = {
    "seller": ("balance",),
    "credit_request": ("status", "decided_at"),
    "phone": ("total_charged",),
    "seller_head": ("entry_id", "entries", "entry_mac", "mac"),
}
_DELETABLE = ("web_session",)  # sign-out, and the sweep of expired sessions
_APPEND_ONLY = ("ledger_entry", "sale", "ledger_seal", "idempotency_record",
                "adjustment_record", "credit_request_record")  # fmt: skip


def to_psycopg(sql: str) -> str:
    """SQLite's parameter style as psycopg's: `?` -> `%s`, `:name` -> `%(name)s`."""

    def swap(match: re.Match) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return f"%({match.group(1)})s"

    return _PARAMETER.sub(swap, sql)


def described(url: str) -> str:
    """A PostgreSQL URL without its password, fit for a message or a log."""
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)


def connect(url: str, autocommit: bool = False):
    """A psycopg connection, or one line naming the database (never its password)."""
    import psycopg  # only a PostgreSQL deployment needs the driver

    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--db {described(url)}: cannot connect ({reason})") from None


class Reader:
    """Reads over one psycopg connection, in chargebox's SQL (what seals.key_check takes)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        return self.conn.execute(to_psycopg(sql), params).fetchall()

    def table_names(self) -> set[str]:
        found = self.conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return {name for (name,) in found}


def check_role(conn, role: str) -> None:
    """Refuse, in one line, a role to grant to that does not exist."""
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        raise ValueError(
            f"--grant-to {role}: no such role; create it first "
            f"(CREATE ROLE {role} LOGIN PASSWORD '...')"
        )


def grant(conn, role: str) -> None:
    """Grant `role` what the service needs, and nothing that could rewrite history."""
    from psycopg import sql

    check_role(conn, role)
    who = sql.Identifier(role)
    statements = [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(conn.info.dbname), who),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(_schema(conn), who),
        sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {} TO {}").format(_schema(conn), who),
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(_schema(conn), who),
        sql.SQL("REVOKE INSERT ON schema_version FROM {}").format(who),
    ]
    for table, columns in _UPDATABLE.items():
        statements.append(
            sql.SQL("GRANT UPDATE ({}) ON {} TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table), who
            )
        )
    for table in _DELETABLE:
        statements.append(sql.SQL("GRANT DELETE ON {} TO {}").format(sql.Identifier(table), who))
    for table in _APPEND_ONLY:
        statements.append(
            sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}, PUBLIC").format(
                sql.Identifier(table), who
            )
        )
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)


def _schema(conn):
    from psycopg import sql

    (name,) = conn.execute("SELECT current_schema()").fetchone()
    return sql.Identifier(name)
