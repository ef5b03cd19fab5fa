"""PostgreSQL through psycopg 3: connecting, the SQL's parameters, the service's database.

chargebox's SQL is written once, with SQLite's `?` and `:name` parameters; here
it is handed to psycopg as `%s` and `%(name)s`. (What `init-db --grant-to ROLE`
grants the service's role is schema.grant.)
`Database` and `Write` here are the service's database on PostgreSQL, beside
db.py's for SQLite: the same methods, PostgreSQL's locks instead of a file's.

Group commit (writer.GroupWriter, as on SQLite): one sale per transaction on one
hot seller is bound by the wait for that seller's row lock, so the writes that
queue in one process go in one transaction, a SAVEPOINT each, sorted by seller.
That only batches this process's own writes; other servers' batches meet them
in PostgreSQL's row locks and UNIQUEs, which alone decide. Sorting cannot rule
out deadlocks across servers (a phone row, a credit request, another key's
outcome are locked after the seller, in no global order), and ordering every
row would reshape the ledger, so the rare deadlock is handled, not prevented:
PostgreSQL stops one waiting statement with DeadlockDetected after
`deadlock_timeout`; that write's savepoint undoes it (`Deadlocked`), the rest
of the batch commits, and it is tried again in the next batch while its
deadline allows. A lost server fails the whole batch (503, nothing committed).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from chargebox.config import Config
from chargebox.errors import Deadlocked, IntegrityViolation, LockTimeout, Unavailable
from chargebox.writer import GroupWriter, WriteSlots

T = TypeVar("T")
# A quoted literal (left alone), a `?`, a `:name` (not a `::cast`), or a `%` to escape.
_PARAMETER = re.compile(r"'(?:[^']|'')*'|\?|(?<!:):([A-Za-z_]\w*)|%")
# Writes per group commit. A backend keeps the ids of 64 subtransactions in shared
# memory (PGPROC_MAX_CACHED_SUBXIDS); past them every snapshot in the cluster must look
# them up in pg_subtrans. A keyed write takes two: its savepoint, and its key's own.
MAX_BATCH = 32
# Within a batch, a later write's lock wait is bounded again by the batch's earliest
# deadline once the batch has run this long (the SET costs a round trip per write).
_REBOUND = 0.05


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


# --- the service's database on PostgreSQL ----------------------------------------------------


class Write:
    """The open write transaction on PostgreSQL: what `work(write)` changes rows through.

    Money moves balance first here (`balance_first`): the guarded UPDATE takes the
    seller's row lock, which is what serialises one seller across every app server.
    """

    __slots__ = ("_conn", "ledger_key", "open", "deadline", "_bounded_at")
    dialect = "postgresql"
    balance_first = True

    def __init__(self, conn, ledger_key: bytes | None, deadline: float | None = None) -> None:
        self._conn = conn
        self.ledger_key = ledger_key
        self.open = True
        self.deadline = deadline  # the earliest of its writes' (None: not bounded here)
        self._bounded_at = 0.0

    def bound(self) -> None:
        """Waiting for a row lock ends at the deadline (LockTimeout, 503): `lock_timeout`
        bounds each wait, so a later write of a batch is bounded again by what is left."""
        left_ms = max(1, int((self.deadline - time.monotonic()) * 1000))
        self._conn.execute(f"SET LOCAL lock_timeout = '{left_ms}ms'")
        self._bounded_at = time.monotonic()

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
        if self.deadline is not None and time.monotonic() - self._bounded_at > _REBOUND:
            self.bound()
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
    except psycopg.errors.DeadlockDetected as exc:
        raise Deadlocked("the database is busy; retry shortly") from exc
    except (
        psycopg.OperationalError,
        psycopg.errors.SerializationFailure,
        psycopg.errors.ReadOnlySqlTransaction,
    ) as exc:
        raise Unavailable("the database is busy or unavailable; retry shortly") from exc


class Database:
    """A PostgreSQL database as one process uses it: a connection per thread (the group
    writer's thread has its own), and the one door to a write. Nothing here is local to
    a host that another server could contradict: no flock, no cache of keys; the group
    writer only batches this process's writes; PostgreSQL's row locks serialise what
    must be serialised."""

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
        # A forked child starts its own writer thread (GroupWriter checks the pid), and
        # that thread opens its own connection.
        self.writer = (
            GroupWriter(self.transaction, self._drop, max_batch=MAX_BATCH)
            if config.group_commit
            else None
        )

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

    def write(self, work: Callable[[Write], T], order: int | None = None) -> T:
        """Run `work(write)` in a transaction (a group commit's, if on); answered within
        the busy timeout. `order`: the seller whose row it locks first (see the top)."""
        if getattr(self._local, "writing", False):
            raise AssertionError("a write was started inside a write: pass the open Write on")
        deadline = time.monotonic() + self.timeout
        with self.slots.taken():
            if self.writer is not None:
                return self.writer.submit(work, deadline, order)
            with self.transaction(deadline) as write:
                return work(write)

    @contextlib.contextmanager
    def transaction(self, deadline: float | None = None) -> Iterator[Write]:
        if getattr(self._local, "writing", False):
            raise AssertionError("a write was started inside a write: pass the open Write on")
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        conn = self.connection()
        self._local.writing = True
        write = Write(conn, self.ledger_key, deadline)
        try:
            with translated(), conn.transaction():
                write.bound()
                self._began = time.monotonic()
                yield write
        except (LockTimeout, Deadlocked):
            raise  # the connection is fine; only a lock was not had
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
        """Close every connection this database opened, in whichever thread (the writer's
        too: its thread ends once nothing waits)."""
        if self.writer is not None:
            self.writer.close()
        self._local.conn = None
        with self._opened_lock:
            opened = list(self._opened)
        for conn in opened:
            self._close(conn)


class _NoCache(dict):
    """A dict that remembers nothing (auth's key cache, on a shared database)."""

    def __setitem__(self, key, value) -> None:
        return None
