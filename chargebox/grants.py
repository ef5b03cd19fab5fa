"""What `init-db --grant-to ROLE` (and `migrate`, again for the roles the service uses)
grants the service's role on PostgreSQL: only what the service needs, and only on
chargebox's own tables and their sequences.

The role reads and inserts; it may update the columns the service changes and delete
web sessions; it may not update, delete or truncate what is append-only (revoked from
PUBLIC as well), nor insert a schema version. A table or sequence an operator keeps in
the same schema is theirs: nothing here grants the service anything on it.
"""

from __future__ import annotations

from chargebox.schema import current_schema, tables

# What the service's role may change, column by column; everything else it may only
# read and insert, and the append-only tables not even that much more.
_UPDATABLE = {
    "seller": ("balance", "status", "status_changes"),
    "seller_key": ("revoked_at", "last_used_at"),  # and so a sale's lock on its key (auth)
    "admin_token": ("token_hash", "changed_at"),  # rotate-admin-token, as the service
    "credit_request": ("status", "decided_at"),
    "phone": ("total_charged",),
    "seller_head": ("entry_id", "entries", "entry_mac", "mac"),
    "sale_block": ("first_stamp", "last_stamp"),  # widened by the trigger on sale, as the service
}
_DELETABLE = ("web_session",)  # sign-out, and the sweep of expired sessions
_APPEND_ONLY = ("ledger_entry", "sale", "ledger_seal", "idempotency_record",
                "adjustment_record", "credit_request_record", "audit_checkpoint",
                "seller_checkpoint")  # fmt: skip
# The sequences behind chargebox's tables' serial columns (owned by a column of one of
# them), in the schema the connection works in (by name: a cast of current_schema() to
# regnamespace would read a name like Shop as shop).
_SEQUENCES = (
    "SELECT s.relname FROM pg_class AS s"
    " JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid"
    " AND d.deptype IN ('a', 'i')"
    " JOIN pg_class AS t ON t.oid = d.refobjid"
    " JOIN pg_namespace AS n ON n.oid = t.relnamespace AND n.nspname = current_schema()"
    " WHERE s.relkind = 'S' AND t.relname = ANY(%s) ORDER BY 1"
)


_THERE = ("SELECT name FROM unnest(%s::text[]) AS name"
          " WHERE to_regclass(quote_ident(name)) IS NOT NULL")  # fmt: skip


def check_role(conn, role: str) -> None:
    """Refuse, in one line, a role to grant to that does not exist."""
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        raise ValueError(
            f"--grant-to {role}: no such role; create it first "
            f"(CREATE ROLE {_typed(role)} LOGIN PASSWORD '...')"
        )


def _typed(role: str) -> str:
    """The role's name as SQL must spell it, double-quoted (the hint for `no-such-role` or
    `user`, a reserved word, was a syntax error)."""
    return '"' + role.replace('"', '""') + '"'


def check_migrate(conn, where: str) -> None:
    """migrate's refusal of a role that is not the schema's owner (nor a superuser, nor a
    member of the owner's role): it could change no table, and its grants would grant
    nothing (PostgreSQL only warns). No schema yet: upgrade_postgresql says so itself."""
    found = conn.execute(
        "SELECT pg_get_userbyid(c.relowner), current_user,"
        " pg_has_role(current_user, c.relowner, 'MEMBER')"
        " FROM pg_class c WHERE c.oid = to_regclass('schema_version')"
    ).fetchone()
    if found and not found[2]:
        raise ValueError(
            f"--db {where}: migrate changes the schema and grants on it, which only its "
            f"owner may: connect as {found[0]}, not {found[1]} (init-db's URL, not serve's)"
        )


def check_init_db(conn, grant_to: str | None, where: str) -> None:
    """init-db's refusals before it writes a secret: a role to grant to that does not
    exist, and, where there is no schema yet, a role that may not create it (the app
    role's URL given, say). Over a schema already made, init-db only checks it and the
    key, which any role of the service may."""
    if grant_to is not None and not grant_to.strip():
        raise ValueError("--grant-to: an empty role name (leave --grant-to out to grant none)")
    if grant_to:
        check_role(conn, grant_to)
    query = ("SELECT to_regclass('schema_version') IS NOT NULL"
             " OR coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)")  # fmt: skip
    if not conn.execute(query).fetchone()[0]:
        raise ValueError(
            f"--db {where}: this role may not create the schema: init-db needs the schema "
            "owner's URL (serve, the app role's)"
        )


def grant(conn, role: str) -> None:
    """Grant `role` what the service needs, and nothing that could rewrite history."""
    from psycopg import sql

    check_role(conn, role)
    who = sql.Identifier(role)
    ours = sorted(tables())
    sequences = [name for (name,) in conn.execute(_SEQUENCES, (ours,))]

    def listed(names) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, names))

    statements = [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(conn.info.dbname), who),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(current_schema(conn), who),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(listed(ours), who),
        sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(listed(sequences), who),
        sql.SQL("REVOKE INSERT ON schema_version FROM {}").format(who),
    ]
    for table, columns in _UPDATABLE.items():
        statements.append(
            sql.SQL("GRANT UPDATE ({}) ON {} TO {}").format(
                listed(columns), sql.Identifier(table), who
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


def lacking(conn) -> tuple[str, list[str]]:
    """The connecting role (current_user), and what it lacks of what `grant` gives, each
    as `PRIVILEGE ON table` (`UPDATE (column) ON table`, `USAGE ON SEQUENCE name`). An
    owner or a superuser lacks nothing. Only the tables there are checked (the checkpoint
    tables may not be: checkpoints.kept_in)."""
    ours = [name for (name,) in conn.execute(_THERE, (sorted(tables()),)).fetchall()]
    wanted = []  # (what, the test's SQL, its parameters)
    for table in ours:
        privileges = ("SELECT",) if table == "schema_version" else ("SELECT", "INSERT")
        for privilege in privileges + (("DELETE",) if table in _DELETABLE else ()):
            wanted.append((f"{privilege} ON {table}", "has_table_privilege(%s, %s)",
                           (table, privilege)))  # fmt: skip
    for table, columns in _UPDATABLE.items():
        for column in columns if table in ours else ():
            wanted.append((f"UPDATE ({column}) ON {table}",
                           "has_column_privilege(%s, %s, 'UPDATE')", (table, column)))  # fmt: skip
    for (sequence,) in conn.execute(_SEQUENCES, (ours,)).fetchall():
        wanted.append((f"USAGE ON SEQUENCE {sequence}", "has_sequence_privilege(%s, 'USAGE')",
                       (sequence,)))  # fmt: skip
    query = "SELECT current_user, " + ", ".join(test for _, test, _ in wanted)
    role, *had = conn.execute(query, [v for *_, values in wanted for v in values]).fetchone()
    return role, [what for (what, _, _), yes in zip(wanted, had, strict=True) if not yes]


def refuse_lacking(conn, where: str) -> None:
    """Start-up: ValueError naming what the service's role was not granted (a role made
    by hand, or a grant revoked), rather than a server whose sales fail one by one."""
    role, missing = lacking(conn)
    if missing:
        raise ValueError(
            f"--db {where}: the role {role} lacks {', '.join(missing)}, which the service"
            f" needs: run `chargebox migrate --grant-to {role}` with the schema owner's URL"
        )
