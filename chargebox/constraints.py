"""The guards declared with PostgreSQL's tables: their constraints, unique indexes, columns.

CHECK, UNIQUE, PRIMARY KEY and FOREIGN KEY constraints, the one unique index and each
column's type and NOT NULL enforce I1-I5 as the triggers do (guards.py), and the
schema's owner may drop or change any of them (`ALTER TABLE ... DROP CONSTRAINT`).
`schema_postgresql.shape` pins what schema_postgresql.sql makes, as PostgreSQL describes
it; `changed` names what differs (guards.postgresql_missing adds it to the rest) and
`put_back` makes it again, in migrate. What an operator adds beside them only narrows
what may be written: left alone. SQLite's are in its tables' text: not compared (README).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from chargebox.schema import quoted

SHAPE = "schema_postgresql.shape"
# What the schema's tables hold, as (kind, table, name, definition): each constraint
# (not a constraint trigger: guards.py looks at those; not NOT NULL, which PostgreSQL 18
# makes a constraint too: it is the column's), each unique index that backs none, each
# column. An index's definition loses the schema's name, which PostgreSQL writes there.
_HELD = (
    "WITH t AS (SELECT c.oid, c.relname FROM pg_class AS c JOIN pg_namespace AS n"
    " ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p'))"
    " SELECT 'constraint', t.relname, k.conname, pg_get_constraintdef(k.oid, true)"
    " FROM pg_constraint AS k JOIN t ON t.oid = k.conrelid WHERE k.contype IN ('c', 'f', 'p',"
    " 'u', 'x')"
    " UNION ALL SELECT 'index', t.relname, i.relname, replace(pg_get_indexdef(i.oid), ' ON '"
    " || quote_ident(current_schema()) || '.', ' ON ') FROM pg_index AS x JOIN pg_class AS i"
    " ON i.oid = x.indexrelid JOIN t ON t.oid = x.indrelid WHERE x.indisunique AND NOT EXISTS"
    " (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.oid AND k.conrelid = t.oid)"
    " UNION ALL SELECT 'column', t.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
    " || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END FROM pg_attribute AS a JOIN t"
    " ON t.oid = a.attrelid WHERE a.attnum > 0 AND NOT a.attisdropped"
)
# The order they are made again in: a column's type before what reads it, a key before
# the foreign keys that name it.
_ORDER = ("column", "PRIMARY", "UNIQUE", "index", "CHECK", "EXCLUDE", "FOREIGN")
# A quoted string, kept as written when a definition is compared.
_LITERAL = re.compile(r"('(?:[^']|'')*')")


def outside_literals(text: str, change) -> str:
    """`text` with `change` applied to what lies outside its quoted strings."""
    parts = _LITERAL.split(text)
    return "".join(part if n % 2 else change(part) for n, part in enumerate(parts))


def _compared(definition: str | None) -> str | None:
    """A definition as it compares: outside quoted strings, in lower case, with single
    spaces and no double quotes (`quote_all_identifiers` quotes every name)."""
    if definition is None:
        return None
    return outside_literals(definition, _plain)


def _plain(text: str) -> str:
    return " ".join(text.lower().split()).replace('"', "")


class Shape(str):
    """One of the guards `SHAPE` pins, missing or changed in a database: it reads as
    start-up and migrate name it (`table.name (a constraint)`, `... (a unique index)`,
    `table.column (a column)`); `definition` is the schema's."""

    kind: str
    table: str
    name: str
    definition: str

    def __new__(cls, kind: str, table: str, name: str, definition: str) -> Shape:
        shown = super().__new__(cls, f"{table}.{name} (a {'unique ' * (kind == 'index')}{kind})")
        shown.kind, shown.table, shown.name, shown.definition = kind, table, name, definition
        return shown

    def __getnewargs__(self) -> tuple[str, str, str, str]:  # copied or pickled whole
        return self.kind, self.table, self.name, self.definition


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


def described(rows) -> str:
    """What `rows` (`reader.rows`) shows of the schema's tables, as `SHAPE` writes it."""
    lines = [f"{kind} {table}.{name} {definition}" for kind, table, name, definition
             in rows(_HELD) if table in {table for _, table, _ in pinned()}]  # fmt: skip
    return "".join(f"{line}\n" for line in sorted(lines, key=_in_order))


def _in_order(line: str) -> tuple[str, str, str]:
    kind, where, _ = line.split(" ", 2)
    table, name = where.split(".")
    return table, kind, name


def changed(rows) -> list[Shape]:
    """The guards `SHAPE` pins that `rows` (`reader.rows`) shows dropped or changed, those
    of a table the database does not have aside (a table of a later version, not made
    yet). What was added beside them is not named."""
    found = {(kind, table, name): _compared(definition)
             for kind, table, name, definition in rows(_HELD)}  # fmt: skip
    tables = {table for _, table, _ in found}
    return sorted(Shape(*key, definition) for key, definition in pinned().items()
                  if key[1] in tables and found.get(key) != _compared(definition))  # fmt: skip


def put_back(conn, shapes: list[Shape]) -> None:
    """Inside migrate's transaction, as the schema's owner: each of `shapes` made again as
    `SHAPE` has it. Rows written while one was gone may break it: ValueError naming it and
    PostgreSQL's words (the row), and the transaction is rolled back."""
    from psycopg import errors

    def order(shape: Shape) -> int:
        return _ORDER.index(shape.kind if shape.kind != "constraint"
                            else shape.definition.split(" ", 1)[0])  # fmt: skip

    for shape in sorted(shapes, key=order):
        table, name = quoted(shape.table), quoted(shape.name)
        try:
            with conn.transaction():  # a savepoint: its error is said, not a traceback
                if shape.kind == "column":
                    _put_back_column(conn, shape)
                elif shape.kind == "index":
                    conn.execute(f"DROP INDEX IF EXISTS {name}")
                    conn.execute(shape.definition)
                else:
                    conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
                    conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {shape.definition}")
        except errors.Error as exc:  # a row that breaks it, a column dropped
            detail = " ".join(str(exc).split())
            raise ValueError(
                f"cannot put back {shape}: {detail}. Rows were written without it: run"
                " `chargebox audit --full` to see them, mend or restore them, then migrate"
            ) from None


def _put_back_column(conn, shape: Shape) -> None:
    """A column's type made the schema's again (only where it differs: it rewrites the
    table), then its NOT NULL."""
    table, name = quoted(shape.table), quoted(shape.name)
    kind, not_null = re.fullmatch(r"(.+?)( NOT NULL)?", shape.definition).groups()
    (now,) = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attname = %s AND NOT attisdropped",
        (table, shape.name),
    ).fetchone() or (None,)
    if now != kind:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {kind}")
    null = "SET NOT NULL" if not_null else "DROP NOT NULL"
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN {name} {null}")
