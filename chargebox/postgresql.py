"""PostgreSQL through psycopg 3: connecting, the SQL's parameters, and init-db's grants.

chargebox's SQL is written once, with SQLite's `?` and `:name` parameters; here
it is handed to psycopg as `%s` and `%(name)s`. `init-db --grant-to ROLE` creates
the schema as its owner and grants the service's role only what the service
needs: no UPDATE, DELETE or TRUNCATE on what is append-only, no trigger to drop.
`Database` and `Write` here are the service's database on PostgreSQL, beside
db.py's for SQLite: the same methods, PostgreSQL's locks instead of a file's.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from chargebox.config import Config
from chargebox.errors import IntegrityViolation, LockTimeout, Unavailable
from chargebox.writer import WriteSlots

T = TypeVar("T")
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
    try:
        import psycopg  # only a PostgreSQL deployment needs the driver
    except ImportError:
        raise ValueError(
            f"--db {described(url)}: PostgreSQL needs its driver: "
            'pip install -e ".[postgresql]" (psycopg 3)'
        ) from None

    conn = None
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
        if _behind_a_pooler(conn):
            conn.prepare_threshold = None
        if not autocommit:
            conn.rollback()  # the probe's transaction
        return conn
    except psycopg.Error as exc:
        if conn is not None:
            conn.close()
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise ValueError(f"--db {described(url)}: cannot connect ({reason})") from None


def _behind_a_pooler(conn) -> bool:
    """Whether a pooler (pgbouncer) stands between us and PostgreSQL: it answers the
    start-up with a backend id of its own, not the server process's.

    psycopg prepares a statement on the server after its fifth run on a connection.
    Behind pgbouncer in transaction mode (before 1.21, and Debian 12 has 1.18) the
    next transaction may run on another server connection, which never saw it:
    `prepared statement "_pg3_0" does not exist`. So there, and only there, psycopg
    prepares nothing; straight to PostgreSQL the prepares stay.
    """
    (server_pid,) = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
    return server_pid != conn.info.backend_pid


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


# --- the service's database on PostgreSQL ----------------------------------------------------


class Write:
    """The open write transaction on PostgreSQL: what `work(write)` changes rows through.

    Money moves balance first here (`balance_first`): the guarded UPDATE takes the
    seller's row lock, which is what serialises one seller across every app server.
    """

    __slots__ = ("_conn", "ledger_key", "open")
    dialect = "postgresql"
    balance_first = True

    def __init__(self, conn, ledger_key: bytes | None) -> None:
        self._conn = conn
        self.ledger_key = ledger_key
        self.open = True

    def execute(self, sql: str, params: tuple | dict = ()):
        if not self.open:
            raise AssertionError("this write has ended: write only inside database.write()")
        with translated():
            return self._conn.execute(to_psycopg(sql), params or None)

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def dicts(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return _dicts(self.execute(sql, params))

    def lock_seller(self, seller_id: int) -> None:
        """Hold the seller's row until COMMIT (what a check-then-insert needs here)."""
        self.execute("SELECT 1 FROM seller WHERE id = ? FOR UPDATE", (seller_id,))

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        self.execute("SAVEPOINT part")
        try:
            with translated():
                yield
        except BaseException:
            with translated():  # a lost server is a 503 here too, not psycopg's own error
                self._conn.execute("ROLLBACK TO SAVEPOINT part")
                self._conn.execute("RELEASE SAVEPOINT part")
            raise
        self.execute("RELEASE SAVEPOINT part")


def _dicts(cursor) -> list[dict]:
    names = [column.name for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """psycopg's errors in chargebox's tree: a refused write is a bug (the schema's
    guards fired), a lock not had in time or a lost server is 503, retry."""
    import psycopg

    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        raise LockTimeout("the database is busy; retry shortly") from exc
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityViolation(f"the database refused a write: {exc}") from exc
    except (
        psycopg.OperationalError,
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.ReadOnlySqlTransaction,
    ) as exc:
        raise Unavailable("the database is busy or unavailable; retry shortly") from exc


class Database:
    """A PostgreSQL database as one process uses it: a connection per thread, and the
    one door to a write. Nothing here is local to a host that another server could
    contradict: no flock, no cache of keys, no group writer; PostgreSQL's row locks
    serialise what must be serialised."""

    dialect = "postgresql"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = config.db_url
        self.timeout = config.busy_timeout_ms / 1000
        self.ledger_key = config.ledger_key.encode("utf-8") if config.ledger_key else None
        self.slots = WriteSlots(config.threads, self.seconds_since_a_write_began)
        self.seller_keys = _NoCache()  # another server may change a key: never cached
        self._local = threading.local()
        self._began = 0.0
        # Every connection opened, whatever thread it serves, so that close() ends them
        # all: a thread's connection would otherwise stay open until the thread and its
        # local data are collected, holding one of the server's max_connections.
        self._opened: set = set()
        self._opened_lock = threading.Lock()

    def connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self._local.conn = connect(self.url, autocommit=True)
            except ValueError:  # down, restarting, unreachable: a client may retry
                raise Unavailable("the database is unavailable; retry shortly") from None
            with self._opened_lock:
                self._opened.add(conn)
        return conn

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with self._reading() as conn:
            return conn.execute(to_psycopg(sql), params or None).fetchall()

    def dicts(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        with self._reading() as conn:
            return _dicts(conn.execute(to_psycopg(sql), params or None))

    @contextlib.contextmanager
    def _reading(self):
        try:
            with translated():
                yield self.connection()
        except Unavailable:
            self._drop()
            raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Database]:
        """One consistent view for several reads (REPEATABLE READ, read only)."""
        conn = self.connection()
        with translated(), conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield self

    def write(self, work: Callable[[Write], T]) -> T:
        """Run `work(write)` in its own transaction; answered within the busy timeout."""
        if getattr(self._local, "writing", False):
            raise AssertionError("a write was started inside a write: pass the open Write on")
        deadline = time.monotonic() + self.timeout
        with self.slots.taken(), self.transaction(deadline) as write:
            return work(write)

    @contextlib.contextmanager
    def transaction(self, deadline: float | None = None) -> Iterator[Write]:
        if getattr(self._local, "writing", False):
            raise AssertionError("a write was started inside a write: pass the open Write on")
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        left_ms = max(1, int((deadline - time.monotonic()) * 1000))
        conn = self.connection()
        self._local.writing = True
        write = Write(conn, self.ledger_key)
        try:
            with translated(), conn.transaction():
                # Waiting for a row lock ends at the write's deadline (LockTimeout, 503).
                conn.execute(f"SET LOCAL lock_timeout = '{left_ms}ms'")
                self._began = time.monotonic()
                yield write
        except Unavailable:
            self._drop()
            raise
        finally:
            write.open = False
            self._local.writing = False

    def seconds_since_a_write_began(self) -> float:
        return time.monotonic() - self._began

    def table_names(self) -> set[str]:
        return Reader(self.connection()).table_names()

    def ensure_schema(self, models: object = None) -> None:
        """The schema is created by its owner (`init-db --grant-to`); here it is checked."""
        from chargebox import schema

        found = (
            self.rows("SELECT max(version) FROM schema_version")[0][0]
            if ("schema_version" in self.table_names())
            else None
        )
        if found != schema.POSTGRESQL_VERSION:
            raise ValueError(
                f"--db {described(self.url)}: no chargebox schema (version "
                f"{schema.POSTGRESQL_VERSION}) here; run `chargebox init-db --db OWNER_URL "
                "--grant-to ROLE` first"
            )

    def missing_triggers(self) -> list[str]:
        from chargebox import schema

        wanted = schema.postgresql_triggers()
        found = {
            name for (name,) in self.rows("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
        return sorted(wanted - found)

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            self._close(conn)

    def _close(self, conn) -> None:
        with self._opened_lock:
            self._opened.discard(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close every connection this database opened, in whichever thread."""
        self._local.conn = None
        with self._opened_lock:
            opened = list(self._opened)
        for conn in opened:
            self._close(conn)


class _NoCache(dict):
    """A dict that remembers nothing (auth's key cache, on a shared database)."""

    def __setitem__(self, key, value) -> None:
        return None
