"""The schema's guards: which are dropped or changed, start-up's refusal, migrate's repair.

The guards are the triggers that enforce I1-I5 in the database (schema.TRIGGERS;
schema_postgresql.sql, where they call PL/pgSQL functions), and the constraints declared
with the tables (compared in constraints.py). Whoever can write to the database can drop
one, or on PostgreSQL change a function's body, make a trigger again under its name
doing something else, or switch it off (`ALTER TABLE ... DISABLE TRIGGER`, which the
schema's owner may do without being a superuser); or add beside them, to one of
chargebox's tables, a trigger of their own (on PostgreSQL also a rule, or a table
inheriting it, whose rows it shows and no guard sees written: schema.Added).
The audit names each (I5), `GET /metrics` counts them (`chargebox_schema_guards_missing`),
and start-up refuses the database (`refuse_dropped_guards`), repairing nothing, which
would hide from the audit what was done; `chargebox migrate` puts the guards back and
removes what was added (`put_back_postgresql_guards`; on SQLite,
migrations.upgrade_sqlite drops a changed or added trigger and re-runs schema.TRIGGERS).
Which SQLite triggers are dropped, changed or added is schema.missing_triggers' to say
(it compares their text). On PostgreSQL, `serve` also refuses to run as a role that
could get past the guards (`above_the_guards`).
"""

from __future__ import annotations

import functools
import re
import sys

from chargebox import constraints
from chargebox.schema import CHECKPOINT_TABLES, Added, postgresql_statements, quoted, tables
from chargebox.schema import missing_triggers as schema_missing_triggers
from chargebox.schema import postgresql_added_in as schema_statements_of

_FUNCTION = re.compile(r"(?m)^CREATE (?:OR REPLACE )?FUNCTION (\w+)\(.*?AS \$\$(.*?)\$\$", re.S)
_TRIGGER = re.compile(r"CREATE (?:CONSTRAINT )?TRIGGER (\w+) .*? ON (\w+)", re.S)
# A trigger's definition, as schema_postgresql.sql writes it and as pg_get_triggerdef
# gives it back (which orders the events, adds casts, parentheses and schema names).
_DEFINITION = re.compile(
    r"create (constraint )?trigger (\w+) (before|after|instead of) (.+?) on (?:\w+\.)?(\w+) "
    r"(.*?)for each (row|statement) (?:when (.+) )?execute (?:function|procedure) "
    r"(?:\w+\.)?(\w+)\((.*)\)$"
)
# What the schema holds (its namespace found by name: to_regnamespace() would take a
# name that needs quotes for another): its tables; its triggers (table.name: whether it
# fires, i.e. not disabled, and calls a function of the schema; its definition); its
# guard functions (trigger functions of no arguments: their bodies, where they are
# PL/pgSQL run as the caller, and their settings); and what is on its tables, by table
# and name, for what the schema does not make (`on`: each trigger; each rule, which
# rewrites what is written there; each table that inherits one, whose rows it shows and
# which no guard of it sees written: its regclass, quoted as SQL needs).
_HELD = (
    "WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = current_schema()),"
    " guard AS (SELECT p.* FROM pg_proc AS p, ns WHERE p.pronamespace = ns.oid"
    " AND p.proname LIKE 'chargebox%' AND p.pronargs = 0 AND p.prorettype = 'trigger'::regtype)"
    " SELECT 'table', c.relname, NULL FROM pg_class AS c, ns"
    " WHERE c.relkind IN ('r', 'p') AND c.relnamespace = ns.oid"
    " UNION ALL SELECT 'trigger', c.relname || '.' || t.tgname,"
    " CASE WHEN t.tgenabled IN ('O', 'A') AND p.pronamespace = c.relnamespace"
    " THEN pg_get_triggerdef(t.oid, true) END"
    " FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid"
    " JOIN pg_proc AS p ON p.oid = t.tgfoid, ns WHERE NOT t.tgisinternal"
    " AND c.relnamespace = ns.oid"
    " UNION ALL SELECT 'on', c.relname, t.tgname FROM pg_trigger AS t JOIN pg_class AS c"
    " ON c.oid = t.tgrelid, ns WHERE NOT t.tgisinternal AND c.relnamespace = ns.oid"
    " UNION ALL SELECT 'rule', c.relname, r.rulename FROM pg_rewrite AS r JOIN pg_class AS c"
    " ON c.oid = r.ev_class, ns WHERE r.rulename <> '_RETURN' AND c.relnamespace = ns.oid"
    " UNION ALL SELECT 'child', c.relname, i.inhrelid::regclass::text FROM pg_inherits AS i"
    " JOIN pg_class AS c ON c.oid = i.inhparent, ns WHERE c.relnamespace = ns.oid"
    " UNION ALL SELECT 'function', proname, CASE WHEN NOT prosecdef AND prolang ="
    " (SELECT oid FROM pg_language WHERE lanname = 'plpgsql') THEN prosrc END FROM guard"
    # Their settings, 'confined' where they are only the search_path schema.confine_search_path
    # gives (the schema, then pg_temp), as PostgreSQL writes it, with or without
    # quote_all_identifiers. With pg_temp anywhere else, or left out (then it is searched
    # first), a session that may make temporary tables could hide a table from the guard.
    " UNION ALL SELECT 'setting', proname, CASE WHEN proconfig IN (ARRAY['search_path='"
    " || quote_ident(current_schema()) || ', pg_temp'], ARRAY['search_path=\"'"
    " || replace(current_schema(), '\"', '\"\"') || '\", \"pg_temp\"'])"
    " THEN 'confined' END FROM guard"
)
# What would let a role get past the guards, each a column (true: it could), for one role
# (a row of r): being a superuser, or a member of one, even NOINHERIT (it may SET ROLE
# to it; 'MEMBER', not 'USAGE'), switches every trigger off (`SET session_replication_role
# = replica`), as may a role granted SET on that parameter (PostgreSQL 15); the server's
# file and program roles are as good as a superuser; CREATEROLE may grant itself the
# owner's role; a member of a role that owns the schema or anything in it may disable,
# drop or replace a guard (or keeps an operator it planted); TRIGGER on a table adds a
# trigger that fires after the guards and rewrites the row they passed (on chargebox's
# tables: an operator's own table in the schema is theirs); and CREATE in
# the schema may plant a function or an operator that a guard's body would call instead
# of PostgreSQL's (the guards search the schema, and one of the exact types, `varchar =
# varchar`, beats pg_catalog's). Names come quoted as SQL would need them.
_ABOVE = (
    "WITH ns AS (SELECT oid, nspowner FROM pg_namespace WHERE nspname = current_schema()),"
    " r AS (SELECT oid, rolname FROM pg_roles WHERE rolname = %s),"
    " held AS (SELECT s.* FROM pg_roles AS s, r WHERE pg_has_role(r.oid, s.oid, 'MEMBER'))"
    " SELECT quote_ident(r.rolname), quote_ident(current_schema()), current_schema(),"
    " EXISTS (SELECT 1 FROM held WHERE rolsuper){parameter},"
    " EXISTS (SELECT 1 FROM held WHERE rolname IN"
    " ('pg_execute_server_program', 'pg_write_server_files')),"
    " EXISTS (SELECT 1 FROM held WHERE rolcreaterole),"
    " EXISTS (SELECT 1 FROM held, ns WHERE held.oid = ns.nspowner OR held.oid IN"
    " (SELECT relowner FROM pg_class WHERE relnamespace = ns.oid UNION ALL"
    " SELECT proowner FROM pg_proc WHERE pronamespace = ns.oid UNION ALL"
    " SELECT oprowner FROM pg_operator WHERE oprnamespace = ns.oid UNION ALL"
    " SELECT typowner FROM pg_type WHERE typnamespace = ns.oid)),"
    " EXISTS (SELECT 1 FROM pg_class AS c, ns WHERE c.relnamespace = ns.oid"
    " AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)"
    " AND has_table_privilege(r.oid, c.oid, 'TRIGGER')),"
    " EXISTS (SELECT 1 FROM ns WHERE has_schema_privilege(r.oid, ns.oid, 'CREATE')),"
    " EXISTS (SELECT 1 FROM held WHERE pg_has_role(held.oid,"
    " to_regrole('pg_create_subscription'), 'MEMBER')"
    " AND has_database_privilege(held.oid, current_database(), 'CREATE'))"
    " OR EXISTS (SELECT 1 FROM pg_subscription AS s, held WHERE s.subowner = held.oid"
    " AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    " FROM r"
)
_SET_PARAMETER = (" OR has_parameter_privilege(r.oid, 'session_replication_role', 'SET')"
                  " AS superuser")  # fmt: skip
# A quoted string, kept as written when a definition is compared.
_LITERAL = re.compile(r"('(?:[^']|'')*')")


def _outside_literals(text: str, change) -> str:
    parts = _LITERAL.split(text)
    return "".join(part if n % 2 else change(part) for n, part in enumerate(parts))


def trigger_definition(text: str | None) -> tuple | None:
    """A trigger's definition in parts that compare alike however it is spelled (the events
    in any order; outside quoted strings, which compare as written: letter case, spaces,
    and the casts to text and parentheses of its WHEN, which the schema writes as one
    condition, no AND, OR or NOT: a test keeps it so); None for None or a text of no such
    form. A cast to a type of one's own counts (its operators could do anything); a WHEN
    that compared non-text columns by order would need more (an added ::text would
    compare them as text, and pass)."""
    if text is None:
        return None
    made = _DEFINITION.match(
        _outside_literals(text.strip().rstrip(";"), lambda part: " ".join(part.lower().split()))
    )
    if made is None:
        return None
    parts = list(made.groups())
    parts[3] = tuple(sorted(parts[3].split(" or ")))
    parts[7] = _outside_literals(parts[7] or "", lambda part: re.sub(r"::text\b|[()\s]", "", part))
    return tuple(parts)


@functools.lru_cache(maxsize=1)  # read once: each scrape of /metrics compares them
def postgresql_guards() -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    """The guards `schema_postgresql.sql` makes: each function's newest (body, statement),
    and each trigger's (table, statement). Read only: the cache hands out the same dicts."""
    functions, triggers = {}, {}
    for statement in postgresql_statements():
        if made := _FUNCTION.search(statement):
            functions[made.group(1)] = (made.group(2), statement)
        elif made := _TRIGGER.match(statement):
            if trigger_definition(statement) is None:  # it would compare equal to a dropped one
                raise ValueError(f"schema_postgresql.sql: trigger {made.group(1)} not understood")
            triggers[made.group(1)] = (made.group(2), statement)
    return functions, triggers


def postgresql_missing(rows) -> list[str]:
    """The guards that `rows` (`reader.rows`) shows missing: each trigger dropped from its
    table, made again otherwise, disabled or calling a function of another schema (one of
    a table not made yet is not missing), and each guard function dropped or changed, as
    `name()`; each constraint, unique index or column changed or dropped (constraints.
    Shape); then what was added to one of chargebox's tables that the schema does not
    make (schema.Added): a trigger (a BEFORE trigger that fires after a guard may rewrite
    the row the guard passed), a rule, or a table inheriting it. Whoever can do that can
    do anything; the audit (I5) says so."""
    found = rows(_HELD)
    held = {(kind, name): body for kind, name, body in found}  # `on` rows: below
    functions, triggers = postgresql_guards()
    gone = [f"{name}()" for name, (body, _) in functions.items()
            if held.get(("function", name)) != body
            or held.get(("setting", name)) != "confined"]  # fmt: skip
    changed = [name for name, (table, statement) in triggers.items()
               if ("table", table) in held and trigger_definition(statement)
               != trigger_definition(held.get(("trigger", f"{table}.{name}")))]  # fmt: skip
    guarded = {(table, name) for name, (table, _) in triggers.items()}
    added = [Added(table, name, {"on": "trigger"}.get(kind, kind))
             for kind, table, name in found if kind in ("on", "rule", "child")
             and table in tables() and (table, name) not in guarded]  # fmt: skip
    return sorted(gone) + sorted(changed) + constraints.changed(rows) + sorted(added)


def missing_in_sqlite(conn) -> list[str]:
    """What an SQLite file holds of the guards otherwise than the schema makes: its
    triggers (schema.missing_triggers), then its tables' text and UNIQUE indexes
    (constraints.sqlite_changed)."""
    return schema_missing_triggers(conn) + constraints.sqlite_changed(conn)


def missing_in(conn) -> list[str]:
    """`postgresql_missing` of a psycopg connection, read in one transaction (a savepoint
    inside one) that sets quote_all_identifiers off: behind a pooler, another session
    than the one pg_driver.connect set it off in may answer (helper-118)."""
    with conn.transaction():
        conn.execute("SET LOCAL quote_all_identifiers = off")
        return postgresql_missing(lambda sql: conn.execute(sql).fetchall())


def dropped_guards(missing: list[str], tables: set[str]) -> list[str]:
    """Of `missing` (a database's `missing_triggers()`), the guards someone dropped or
    changed: a checkpoint table's triggers only once that table exists."""
    checkpointed = set(CHECKPOINT_TABLES) <= tables
    return [name for name in missing if checkpointed or not name.startswith(CHECKPOINT_TABLES)]


def dropped_in(database) -> list[str]:
    """`dropped_guards` of a database (or an audit's snapshot of it) as it stands."""
    return dropped_guards(database.missing_triggers(), database.table_names())


def refuse_dropped_guards(dropped: list[str], where: str) -> None:
    """Start-up, on a database at VERSION: ValueError naming the guards someone dropped
    or changed, or what was added beside them (`dropped_guards`, schema.Added). A server
    never writes without them, and never repairs them itself, which would hide from the
    audit (I5) that they were gone; `chargebox migrate` does, once the operator has looked:
    it puts back what was dropped or changed and removes what was added."""
    if dropped:
        added = [name for name in dropped if isinstance(name, Added)]
        added = (f"; {len(added)} of them added beside the guards, which the schema does not"
                 " make (`table.name`: a trigger)" if added else "")  # fmt: skip
        raise ValueError(
            f"--db {where}: {len(dropped)} guard(s) of the schema are missing or changed"
            f" ({', '.join(dropped)}){added}: someone who could write to the database did it."
            " Run `chargebox audit --full` with the same --db to see what was written"
            " without them, then `chargebox migrate` (PostgreSQL: as the schema's owner)"
            " to put them back and drop what was added"
        )


def repaired(put: list[str]) -> str:
    """What migrate says it repaired: the guards it put back, what it removed (Added)."""
    added = [name for name in put if isinstance(name, Added)]
    put = [name for name in put if name not in added]
    return (f"; put back {len(put)} guard(s) dropped or changed: {', '.join(put)}" if put
            else "") + (f"; removed {len(added)} addition(s) the schema does not make:"
                        f" {', '.join(added)}" if added else "")  # fmt: skip


def _made_again(conn, statement: str) -> None:
    """A guard function's statement of the schema file, run so that it replaces one there."""
    conn.execute(re.sub(r"(?m)^CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", statement))


def put_back_dropped_functions(conn, version: int) -> list[str]:
    """Before migrate's steps: each guard function of schema version `version` or older
    that was dropped, made again (confined), since a later step may make a trigger that
    calls it; their names. What else differs, put_back_postgresql_guards puts back after."""
    made = []
    for older in range(1, version + 1):
        for statement in schema_statements_of(older):
            name = _FUNCTION.search(statement)
            if name and not conn.execute("SELECT to_regprocedure(%s)",
                                         (f'"{name.group(1)}"()',)).fetchone()[0]:  # fmt: skip
                _made_again(conn, statement)
                made.append(f"{name.group(1)}()")
    return made


def put_back_postgresql_guards(conn) -> list[str]:
    """As the schema's owner, inside migrate's transaction, its search_path confined
    (schema.confine_search_path): each constraint, unique index or column dropped or
    changed made again (constraints.put_back, which refuses where rows written without it
    break it), each guard function (its newest body and settings), then each trigger; and
    what was added beside them removed (a trigger or a rule dropped, an inheriting table
    detached, NO INHERIT: its rows are the operator's to look at); their names. What a
    repair takes with it (a foreign key on a unique key made again, the triggers on a
    column's table) the next round makes again, unnamed: it was not changed; what still
    differs after three rounds (a PostgreSQL that spells definitions otherwise) fails
    migrate, changing nothing."""

    def rows(sql: str) -> list[tuple]:
        return conn.execute(sql).fetchall()

    put = missing = postgresql_missing(rows)
    for _ in range(3):
        if not missing:
            return put
        _put_back(conn, missing)
        missing = postgresql_missing(rows)
    raise ValueError(f"the guards made again still differ from the schema's ({', '.join(missing)})"
                     ": put them back by hand, or restore a backup")  # fmt: skip


def _put_back(conn, missing: list[str]) -> None:
    """One round of put_back_postgresql_guards: each of `missing` made again or removed."""
    constraints.put_back(conn, [name for name in missing if isinstance(name, constraints.Shape)])
    functions, triggers = postgresql_guards()
    for name, (_, statement) in functions.items():
        if f"{name}()" in missing:
            _made_again(conn, statement)
    for name, (table, statement) in triggers.items():
        if name in missing:
            conn.execute(f'DROP TRIGGER IF EXISTS "{name}" ON "{table}"')
            conn.execute(statement)
    for added in (name for name in missing if isinstance(name, Added)):
        conn.execute(f"DROP TRIGGER IF EXISTS {quoted(added.name)} ON {quoted(added.table)}"
                     if added.kind == "trigger" else
                     f"DROP RULE IF EXISTS {quoted(added.name)} ON {quoted(added.table)}"
                     if added.kind == "rule" else
                     f"ALTER TABLE {added.name} NO INHERIT {quoted(added.table)}")  # fmt: skip


_SERVE_AS = ("serve with the role that `chargebox init-db --grant-to ROLE` granted"
             " (README, PostgreSQL: Roles)")  # fmt: skip


def _reasons(user: str, schema: str, bare: str) -> tuple[tuple[str, str], ...]:
    """What each of `_ABOVE`'s columns after the names means, and what to do about it."""
    revoke = "as the schema's owner, REVOKE {} ON {} FROM {}"
    before_15 = " (PostgreSQL before 15 grants it)" if bare == "public" else ""
    return (
        ("is a superuser, a member of one, or may SET session_replication_role", _SERVE_AS),
        ("is a member of pg_execute_server_program or pg_write_server_files", _SERVE_AS),
        ("may create roles (and grant itself the owner's)", _SERVE_AS),
        ("owns the schema or something in it, or is a member of a role that does", _SERVE_AS),
        ("may make triggers on a table of chargebox's (one that fires after the guards could"
         " rewrite a row they passed)",
         revoke.format("TRIGGER", f"ALL TABLES IN SCHEMA {schema}", user)),
        (f"may create objects in schema {schema}",
         revoke.format("CREATE", f"SCHEMA {schema}", f"PUBLIC, {user}") + before_15),
        ("may create a subscription here (pg_create_subscription, and CREATE on the"
         " database), or owns one, whose writes run as session_replication_role = replica",
         f"as a superuser, REVOKE pg_create_subscription FROM {user} and drop its"
         " subscriptions (PostgreSQL 16 on)"),
    )  # fmt: skip


def above_the_guards(conn, role: str | None = None) -> str | None:
    """Why `role` could get past the guards (by default the role the connection logged in
    as, or the one it is now: either may act), and what to do about it (`_ABOVE`); None
    if neither can. The service needs none of that: run so, the database would no longer
    enforce I1-I5 against it, only the code would."""
    sql = _ABOVE.format(parameter=_SET_PARAMETER if conn.info.server_version >= 150000 else "")
    roles = [role] if role else dict.fromkeys(conn.execute("SELECT session_user, current_user"
                                                           ).fetchone())  # fmt: skip
    for name in roles:
        user, schema, bare, *could = conn.execute(sql, (name, sorted(tables()))).fetchone()
        for true, (why, fix) in zip(could, _reasons(user, schema, bare), strict=True):
            if true:
                return (f"the role {user} {why}, so it could get past the guards that"
                        f" enforce I1-I5 in the database: {fix}")  # fmt: skip
    return None


def refuse_a_role_above_the_guards(conn, where: str) -> None:
    """`serve` on PostgreSQL: ValueError if the role it connects as is above the guards;
    a warning if its commits do not wait for the disk (synchronous_commit off: a sale
    answered 201 could be lost in a crash of PostgreSQL)."""
    if why := above_the_guards(conn):
        raise ValueError(f"--db {where}: {why}")
    if conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
        print("chargebox: warning: synchronous_commit is off (for the server, the database "
              "or the role): a sale answered 201 can be lost if PostgreSQL crashes; set it "
              "on (README)", file=sys.stderr)  # fmt: skip
