"""The guards declared with chargebox's tables: constraints, unique indexes, column types.

CHECK, UNIQUE, PRIMARY KEY and FOREIGN KEY constraints, the unique indexes and each
column's type and NOT NULL enforce I1-I5 as the triggers do (guards.py), and whoever
may change the schema may drop or loosen one: on PostgreSQL the schema's owner (`ALTER
TABLE ... DROP CONSTRAINT`), compared with `schema_postgresql.shape`, which pins what
schema_postgresql.sql makes; on SQLite whoever writes the file (`DROP INDEX`, a table
rebuilt), compared word for word with a new file's (or `schema_sqlite.shape`). `changed` and
`sqlite_changed` name what differs (start-up refuses, the audit's I5); `put_back` and
`put_back_sqlite` make it again, in migrate. What an operator adds beside them only
narrows what may be written: left alone.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from importlib import resources

import peewee

from chargebox.models import ALL_MODELS
from chargebox.schema import CHECKPOINT_TABLES, quoted, tables

SHAPE = "schema_postgresql.shape"
SQLITE_SHAPE = "schema_sqlite.shape"
# What the schema holds, as (kind, table, name, definition): each relation of a table's
# name and its kind (a view or a foreign table in a table's place is no table); each
# constraint (not a constraint trigger: guards.py looks at those; not NOT NULL, which
# PostgreSQL 18 makes a constraint too: it is the column's) and unique index that backs
# none, of a table; each column, its collation where it is not its type's, its NOT NULL
# marked NOT VALID where 18 holds one so (rows before it unchecked). An index's
# definition loses the schema's name, which PostgreSQL writes there, and is marked where
# it is not valid (a CREATE ... CONCURRENTLY that failed checks nothing).
_HELD = (
    "WITH r AS (SELECT c.oid, c.relname, c.relkind FROM pg_class AS c JOIN pg_namespace AS n"
    " ON n.oid = c.relnamespace WHERE n.nspname = current_schema()),"
    " t AS (SELECT * FROM r WHERE relkind = 'r')"
    " SELECT 'table', relname, relname, relkind::text FROM r"
    " UNION ALL SELECT 'constraint', t.relname, k.conname, pg_get_constraintdef(k.oid, true)"
    " FROM pg_constraint AS k JOIN t ON t.oid = k.conrelid WHERE k.contype IN ('c', 'f', 'p',"
    " 'u', 'x')"
    " UNION ALL SELECT 'index', t.relname, i.relname, replace(pg_get_indexdef(i.oid), ' ON '"
    " || quote_ident(current_schema()) || '.', ' ON ') || CASE WHEN x.indisvalid AND"
    " x.indisready THEN '' ELSE ' (INVALID)' END FROM pg_index AS x JOIN pg_class AS i"
    " ON i.oid = x.indexrelid JOIN t ON t.oid = x.indrelid WHERE x.indisunique AND NOT EXISTS"
    " (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.oid AND k.conrelid = t.oid)"
    " UNION ALL SELECT 'column', t.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
    " || CASE WHEN a.attcollation <> y.typcollation THEN ' COLLATE '"
    " || a.attcollation::regcollation::text ELSE '' END"
    " || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || CASE WHEN EXISTS (SELECT 1"
    " FROM pg_constraint AS k WHERE k.conrelid = t.oid AND k.contype = 'n' AND k.conkey ="
    " ARRAY[a.attnum] AND NOT k.convalidated) THEN ' NOT VALID' ELSE '' END"
    " FROM pg_attribute AS a JOIN t"
    " ON t.oid = a.attrelid JOIN pg_type AS y ON y.oid = a.atttypid"
    " WHERE a.attnum > 0 AND NOT a.attisdropped"
)
# The order they are made again in: a column's type before what reads it, a key before
# the foreign keys that name it.
_ORDER = ("table", "column", "PRIMARY", "UNIQUE", "index", "CHECK", "EXCLUDE", "FOREIGN")
# A unique index's storage settings (`ALTER INDEX ... SET (fillfactor = 90)`): an
# operator's to tune, no part of what it guards.
_STORAGE = re.compile(r"(?<=\)) WITH \([^()]*\)(?= WHERE |$)")


class Shape(str):
    """A guard declared with a table, missing or changed in a database: it reads as
    start-up and migrate name it (`table.name (a constraint)`, `... (a unique index)`,
    `table.column (a column)`, `table (a table)`: on SQLite its whole text, on PostgreSQL
    the table itself, gone or another kind of relation); `definition` is the schema's,
    `held` the database's (None: there is none), where it was read."""

    kind: str
    table: str
    name: str
    definition: str
    held: str | None

    def __new__(cls, kind: str, table: str, name: str, definition: str,
                held: str | None = None) -> Shape:  # fmt: skip
        where = table if kind == "table" else f"{table}.{name}"
        shown = super().__new__(cls, f"{where} (a {'unique ' * (kind == 'index')}{kind})")
        shown.kind, shown.table, shown.name = kind, table, name
        shown.definition, shown.held = definition, held
        return shown

    def __getnewargs__(self) -> tuple[str, str, str, str, str | None]:  # copied or pickled
        return self.kind, self.table, self.name, self.definition, self.held


@functools.lru_cache(maxsize=1)
def pinned() -> dict[tuple[str, str, str], str]:
    """`schema_postgresql.shape`, what schema_postgresql.sql makes as `described` writes it
    (test_constraints.py keeps it so): {(kind, table, name): definition}."""
    found = {}
    for line in resources.files("chargebox").joinpath(SHAPE).read_text().splitlines():
        if line.startswith("#"):
            continue
        kind, where, definition = line.split(" ", 2)
        table, name = where.split(".")
        found[kind, table, name] = definition
    return found


def _held(rows) -> dict[tuple[str, str, str], str]:
    """What `rows` (`reader.rows`) shows of the schema: {(kind, table, name): definition}.
    A definition PostgreSQL no longer has (an operator's index dropped since the audit's
    snapshot began) is left out."""
    return {(kind, table, name): _STORAGE.sub("", definition) if kind == "index" else definition
            for kind, table, name, definition in rows(_HELD) if definition is not None}  # fmt: skip


def described(rows) -> str:
    """What `rows` (`reader.rows`) shows of the schema's tables, as `SHAPE` writes it."""
    lines = [f"{kind} {table}.{name} {definition}" for (kind, table, name), definition
             in _held(rows).items() if table in tables() and kind != "table"]  # fmt: skip
    return "".join(f"{line}\n" for line in sorted(lines, key=_in_order))


def _in_order(line: str) -> tuple[str, str, str]:
    kind, where, _ = line.split(" ", 2)
    table, name = where.split(".")
    return table, kind, name


def changed(rows) -> list[Shape]:
    """The guards `SHAPE` pins that `rows` (`reader.rows`) shows dropped or changed, as
    PostgreSQL writes them; a table of the schema's that is gone or is no table (a view in
    its place, say: what it shows no guard sees written) is named itself. What was added
    beside them is not named."""
    found = _held(rows)
    gone = {table for table in tables() if found.get(("table", table, table)) != "r"}
    return sorted([Shape("table", table, table, "a table") for table in gone]
                  + [Shape(*key, definition, found.get(key)) for key, definition
                     in pinned().items() if key[1] not in gone
                     and found.get(key) != definition])  # fmt: skip


def put_back(conn, shapes: list[Shape]) -> None:
    """Inside migrate's transaction, as the schema's owner: each of `shapes` made again as
    `SHAPE` has it; what depends on what it replaces goes with it (CASCADE: a foreign key
    on a unique key, a trigger on a column's type), for the next round to make again
    (guards.put_back_postgresql_guards), or at once where it is the operator's (their
    table's foreign key to it). Rows written while it was gone may break it, or
    the schema may hold it otherwise than it can mend: ValueError naming it, and the
    transaction is rolled back."""
    from psycopg import errors

    def order(shape: Shape) -> int:
        return _ORDER.index(shape.definition.split(" ", 1)[0] if shape.kind == "constraint"
                            else shape.kind)  # fmt: skip

    for shape in sorted(shapes, key=order):
        try:
            with conn.transaction():  # a savepoint: its error is said, not a traceback
                _put_back(conn, shape)
        except errors.IntegrityError as exc:  # a row that breaks it
            raise refused(shape, exc.diag.message_primary or str(exc)) from None
        except errors.Error as exc:  # a column dropped, an index of another table's
            raise ValueError(
                f"cannot put back {shape}: {exc.diag.message_primary or exc}. Make it again by"
                f" hand as the schema has it ({shape.definition}), or restore a backup"
            ) from None


def _put_back(conn, shape: Shape) -> None:
    table, name = quoted(shape.table), quoted(shape.name)
    if shape.kind == "table":
        raise ValueError(f"cannot put back {shape}: there is no such table in the schema (it"
                         " was dropped, moved to another schema, or another relation took its"
                         " place); put it back by hand, or restore a backup")  # fmt: skip
    if shape.kind == "column":
        _put_back_column(conn, shape)
        return
    theirs = _foreign_keys_on(conn, table)  # a CASCADE below may take them
    if shape.kind == "index":
        (on,) = conn.execute("SELECT (SELECT indrelid::regclass::text FROM pg_index WHERE"
                             " indexrelid = to_regclass(%s))", (name,)).fetchone()  # fmt: skip
        if on is not None and on != table.strip('"'):
            raise ValueError(f"cannot put back {shape}: an index of that name is on {on};"
                             " rename it")  # fmt: skip
        conn.execute(f"DROP INDEX IF EXISTS {name} CASCADE")
        conn.execute(shape.definition)
    else:
        if shape.definition.startswith("PRIMARY KEY"):  # its own, under any name
            for (key,) in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
                (table,),
            ).fetchall():
                conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quoted(key)} CASCADE")
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name} CASCADE")
        conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {shape.definition}")
    for where, key, definition in theirs:  # the operator's, as they were
        if not conn.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND"
                            " conname = %s", (where, key)).fetchone():  # fmt: skip
            conn.execute(f"ALTER TABLE {where} ADD CONSTRAINT {quoted(key)} {definition}")


def _foreign_keys_on(conn, table: str) -> list[tuple[str, str, str]]:
    """The foreign keys that name `table` and that the schema does not make (an operator's
    table's): (their table, as SQL names it, their name, their definition)."""
    found = conn.execute(
        "SELECT k.conrelid::regclass::text, c.relname, k.conname, pg_get_constraintdef(k.oid)"
        " FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid"
        " WHERE k.contype = 'f' AND k.confrelid = %s::regclass",
        (table,),
    ).fetchall()
    ours = pinned()
    return [(where, key, definition) for where, of, key, definition in found
            if ("constraint", of, key) not in ours]  # fmt: skip


def _put_back_column(conn, shape: Shape) -> None:
    """A column's type and collation made the schema's again (only where they differ from
    what `changed` read: it rewrites the table; the triggers on the table go first, as one
    may read the column, and come back in the next round), then its NOT NULL (which
    validates one NOT VALID, PostgreSQL 18)."""
    table, name = quoted(shape.table), quoted(shape.name)
    kind, not_null = re.fullmatch(r"(.+?)( NOT NULL)?", shape.definition).groups()
    if shape.held is None:
        raise ValueError(f"cannot put back {shape}: the column was dropped, and what it held"
                         " with it; restore a backup")  # fmt: skip
    if re.sub(r"( NOT NULL)?( NOT VALID)?$", "", shape.held) != kind:
        for (trigger,) in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (table,),
        ).fetchall():
            conn.execute(f"DROP TRIGGER {quoted(trigger)} ON {table}")
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {kind}")  # its collation too
    null = "SET NOT NULL" if not_null else "DROP NOT NULL"
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN {name} {null}")


# --- SQLite ----------------------------------------------------------------------------------


@functools.cache
def sqlite_made() -> tuple[tuple[str, str, str, str], ...]:
    """(type, name, table, CREATE statement) of each table and index a new file gets from
    the models, read back from a database made in memory, once."""
    memory = peewee.SqliteDatabase(":memory:")
    with memory.bind_ctx(ALL_MODELS):
        memory.create_tables(ALL_MODELS)
    made = memory.execute_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
    ).fetchall()
    memory.close()
    return tuple(made)


def sqlite_guards() -> list[tuple[str, str, str, str]]:
    """Of `sqlite_made`, the tables (their CHECKs, NOT NULLs, foreign keys) and the UNIQUE
    indexes: the guards declared with SQLite's tables."""
    return [(kind, name, table, sql) for kind, name, table, sql in sqlite_made()
            if kind == "table" or sql.startswith("CREATE UNIQUE")]  # fmt: skip


def sqlite_described() -> str:
    """`sqlite_guards` as `schema_sqlite.shape` writes them: a line each, `name statement`."""
    return "".join(f"{name} {sql}\n" for _, name, _, sql in sqlite_guards())


@functools.lru_cache(maxsize=1)
def sqlite_pinned() -> dict[str, str]:
    """`schema_sqlite.shape`, what this release's peewee makes (test_constraints.py keeps it
    so): {name: statement}. A file it made is taken as made whichever peewee 4.5 runs it,
    though another may write the same tables in other words."""
    text = resources.files("chargebox").joinpath(SQLITE_SHAPE).read_text()
    return dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def sqlite_changed(conn: sqlite3.Connection) -> list[Shape]:
    """Each table of a new file that this file lacks (dropped, or a view in its place; the
    audit's checkpoint tables, made later, aside) or holds in other words (its CHECKs, NOT
    NULLs and foreign keys: a table rebuilt, or its text written by hand), and each UNIQUE
    index of a table it has, dropped or made otherwise; compared as SQLite keeps them,
    word for word (a double quote may turn a name into a string), with what the running
    peewee makes and with `sqlite_pinned`."""
    found = {name.lower(): (kind, sql) for kind, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_master")}  # fmt: skip
    tables = {name for name, (kind, _) in found.items() if kind == "table"}
    pinned = sqlite_pinned()
    return sorted(Shape(kind, table, name, sql) for kind, name, table, sql in sqlite_guards()
                  if (table in tables or kind == "table" and table not in CHECKPOINT_TABLES)
                  and found.get(name, ("", None))[1] not in (sql, pinned.get(name)))  # fmt: skip


def put_back_sqlite(conn: sqlite3.Connection, shapes: list[Shape]) -> None:
    """Inside migrate's transaction, foreign keys off: each table of `shapes` rebuilt as a
    new file has it (a new table, every row copied into it, which checks each, the old one
    dropped, the new one renamed; its indexes made again, the operator's too; its
    triggers, dropped with it, are schema.TRIGGERS' to make again after). A row the new
    table refuses: ValueError naming it; so is a table not there, one that lacks a column
    (what it held is gone) or holds one of the operator's (it would be lost); the
    transaction is then rolled back."""
    for shape in (shape for shape in shapes if shape.kind == "table"):
        _rebuild(conn, shape)


def _rebuild(conn: sqlite3.Connection, shape: Shape) -> None:
    table, temporary = quoted(shape.table), quoted(f"{shape.table}_put_back")
    cannot = f"cannot put back {shape}: "
    kept = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ?"
                        " COLLATE NOCASE", (shape.table,)).fetchall()  # fmt: skip
    if not any(kind == "table" for kind, _, _ in kept):
        raise ValueError(f"{cannot}there is no such table in the file (it was dropped, or"
                         " another kind of object took its name); restore a backup")  # fmt: skip
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE",
                    (f"{shape.table}_put_back",)).fetchone():  # fmt: skip
        raise ValueError(f"{cannot}rename {temporary}, which migrate builds the table in")
    conn.execute(re.sub(r'^CREATE TABLE ("[^"]+"|\S+)', f"CREATE TABLE {temporary}",
                        shape.definition, count=1))  # fmt: skip
    new, old = _columns(conn, temporary), _columns(conn, table)
    if lost := [name for name in new if name not in old]:
        raise ValueError(f"{cannot}it lacks the column(s) {', '.join(lost)}, and what they"
                         " held with them; restore a backup")  # fmt: skip
    if others := [name for name in old if name not in new]:
        raise ValueError(f"{cannot}it holds columns the schema does not make"
                         f" ({', '.join(others)}); move them out of it first")  # fmt: skip
    names = ", ".join(f"{table}.{quoted(name)}" for name in new)  # never a string
    made = {name for _, name, _, _ in sqlite_made()}
    mine = [sql for kind, name, sql in kept if kind == "index" and sql
            and name.lower() not in made]  # fmt: skip
    try:
        conn.execute(f"INSERT INTO {temporary} SELECT {names} FROM {table}")
        conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA legacy_alter_table = ON")  # other tables' triggers name it
        conn.execute(f"ALTER TABLE {temporary} RENAME TO {table}")
        conn.execute("PRAGMA legacy_alter_table = OFF")
        for kind, _, of, sql in sqlite_made():
            if kind == "index" and of == shape.table:
                conn.execute(sql)
        for sql in mine:  # the operator's indexes on it, as they were
            conn.execute(sql)
        if broken := conn.execute(f"PRAGMA foreign_key_check({table})").fetchone():
            raise sqlite3.IntegrityError(f"row {broken[1]} names a {broken[2]} not there")
    except sqlite3.IntegrityError as exc:
        raise refused(shape, str(exc)) from None


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """A table's columns, generated ones too (table_info leaves them out)."""
    return [row[1] for row in conn.execute(f"PRAGMA table_xinfo({table})")]


def refused(shape: Shape, why: str) -> ValueError:
    """migrate's words where rows written without a guard break it."""
    return ValueError(
        f"cannot put back {shape}: {' '.join(why.split())}. Rows were written without it: run"
        " `chargebox audit --full` to see them, mend or restore them, then migrate"
    )
