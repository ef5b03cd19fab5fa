"""PostgreSQL through psycopg 3: the service's database.

`Database` and `Write` here are the service's database on PostgreSQL, beside db.py's for SQLite:
the same methods, PostgreSQL's locks instead of a file's. (Connecting and the SQL's parameters are
pg_driver's; what `init-db --grant-to ROLE` grants the service's role is grants.py's.)

Group commit (writer.GroupWriter, as on SQLite): one sale per transaction on one hot seller is
bound by the wait for that seller's row lock, so the writes that queue in one process go in one
transaction, sorted by seller: the sellers' queued sales in one statement (their rows held in one
statement, in id order), what else waits a SAVEPOINT each. That only batches this process's own
writes; other servers' batches meet them in PostgreSQL's row locks and UNIQUEs, which alone decide.
Sorting cannot rule out deadlocks across servers (a credit request, another key's outcome, a write
alone are locked after the seller, in no global order), and ordering every row would reshape the
ledger, so the rare deadlock is handled, not prevented: PostgreSQL stops one waiting statement with
DeadlockDetected after `deadlock_timeout`; the sales' statement is undone with its transaction and
the batch goes again run by run, and a write in a savepoint is undone by it (`Deadlocked`), the
rest of the batch commits, and it is tried again in the next batch while its deadline allows. A
lost server fails the whole batch (503, nothing committed); if it was lost once COMMIT had been
sent, what the transaction did is read first (lost_commit.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from chargebox import guards, lost_commit, metrics, pg_driver, settled
from chargebox.config import Config
from chargebox.errors import Deadlocked, HeldBack, LockTimeout, Unavailable
from chargebox.pg_driver import Reader, as_dicts, connect, described, to_psycopg, translated
from chargebox.slots import WriteSlots
from chargebox.writer import GroupWriter

T = TypeVar("T")
# Writes per group commit. A backend keeps the ids of 64 subtransactions in shared
# memory (PGPROC_MAX_CACHED_SUBXIDS); past them every snapshot in the cluster must look
# them up in pg_subtrans. A write takes one: its savepoint.
MAX_BATCH = 32
# Within a batch, a later write's lock wait is bounded again by the batch's earliest
# deadline once the batch has run this long (the setting is one more statement per write).
_REBOUND = 0.05


class Write:
    """The open write transaction on PostgreSQL: what `work(write)` changes rows through.

    Money moves balance first here (`balance_first`): the seller's row lock (`hold`) is
    what serialises one seller across every app server. In a group commit the statements
    go down one pipeline (psycopg's pipeline mode): `send` queues a statement whose
    result nobody reads, and the next `execute` (or the end of a savepoint) waits for
    them all, so a keyed sale is two round trips, not twenty, while its seller is held.
    """

    __slots__ = ("_conn", "ledger_key", "open", "deadline", "_bounded_at", "_pipeline",
                 "_unchecked", "_held")  # fmt: skip
    dialect = "postgresql"
    balance_first = True

    def __init__(self, conn, ledger_key: bytes | None, deadline: float | None = None,
                 pipeline=None) -> None:  # fmt: skip
        self._conn = conn
        self.ledger_key = ledger_key
        self.open = True
        self.deadline = deadline  # the earliest of its writes' (None: not bounded here)
        self._bounded_at = 0.0
        self._pipeline = pipeline  # None: each statement waits for its answer
        self._unchecked = False  # statements sent whose outcome is not known yet
        self._held: set[int] = set()  # sellers whose rows this transaction holds

    def bound(self, also: str = "") -> Callable[[], tuple]:
        """Waiting for a row lock ends at the deadline (LockTimeout, 503): `lock_timeout`
        bounds each wait, so a later write of a batch is bounded again by what is left.
        `also`: columns (an SQL list) to read in the same statement (one send less, and
        one wait less for the interpreter lock); returns what reads their values."""
        left_ms = max(1, int((self.deadline - time.monotonic()) * 1000))
        columns = f", {also}" if also else ""
        read = self.later(f"SELECT set_config('lock_timeout', ?, true){columns}",
                          (f"{left_ms}ms",))  # fmt: skip
        self._bounded_at = time.monotonic()
        return lambda: tuple(read()[0][1:])

    def execute(self, sql: str, params: tuple | dict = ()):
        """Run a statement and wait for it (and for everything sent before it)."""
        cursor = self._sent(sql, params)
        self._unchecked = self._pipeline is not None
        self.checked()
        return cursor

    def send(self, sql: str, params: tuple | dict = ()) -> None:
        """Run a statement whose result nobody reads; in a pipeline, without waiting.
        Its failure is raised by the next `execute`, or at the end of the savepoint."""
        self.later(sql, params)

    def send_all(self, statements: list[tuple[str, tuple]]) -> None:
        """Several statements nobody reads, sent as one: the first ones as data-modifying
        WITH queries of the last (one statement to parse and run, not several). They must
        not touch the same rows: within one statement none sees another's changes."""
        *first, (last, params) = statements
        queries = ", ".join(f"q{n} AS ({sql})" for n, (sql, _) in enumerate(first))
        values = tuple(value for _, each in first for value in each)
        self.send(f"WITH {queries} {last}" if first else last, values + tuple(params))

    def later(self, sql: str, params: tuple | dict = ()) -> Callable[[], list[tuple]]:
        """Send a statement now and read its rows later: the next `execute` waits for it
        too (one round trip for both). Returns what reads them."""
        cursor = self._sent(sql, params)
        self._unchecked = self._pipeline is not None
        return cursor.fetchall

    def _sent(self, sql: str, params: tuple | dict):
        if not self.open:
            raise AssertionError("this write has ended: write only inside database.write()")
        with translated():
            return self._conn.execute(to_psycopg(sql), params or None)

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def dicts(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return as_dicts(self.execute(sql, params))

    def lock_seller(self, seller_id: int) -> None:
        """Hold the seller's row until COMMIT (a check-then-insert), as `hold` does."""
        self.send("SELECT 1 FROM seller WHERE id = ? FOR NO KEY UPDATE", (seller_id,))

    def table(self, alias: str, columns: dict[str, str], values: list[list]) -> tuple[str, tuple]:
        """`values` (a list per column, of the type `columns` names) as a table `alias`
        to select from: its SQL, and its parameters (an array per column)."""
        arrays = ", ".join(f"CAST(? AS {kind}[])" for kind in columns.values())
        return f"unnest({arrays}) AS {alias}({', '.join(columns)})", tuple(values)

    def hold(self, *seller_ids: int) -> None:
        """Hold the sellers' rows (as their balance UPDATE would) before a movement, once
        per transaction, in the order of their ids. The statements after it then wait for
        no lock, so each one's snapshot, taken once the locks were had, sees the sellers'
        newest entries and heads."""
        wanted = sorted(set(seller_ids) - self._held)
        if wanted:
            self.send(
                "SELECT 1 FROM seller WHERE id = ANY(CAST(? AS bigint[])) ORDER BY id"
                " FOR NO KEY UPDATE",
                (wanted,),
            )
            self._held.update(wanted)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        if self.deadline is not None and time.monotonic() - self._bounded_at > _REBOUND:
            self.bound()
        self.send("SAVEPOINT part")
        held = set(self._held)
        try:
            with translated():
                yield
                self.checked()  # its statements' failure is its own, not the next write's
        except BaseException:
            self._held = held  # rolling back to the savepoint lets go of its locks
            with translated():  # a lost server is a 503 here too, not psycopg's own error
                self.settle()
                self.send("ROLLBACK TO SAVEPOINT part")
                self.send("RELEASE SAVEPOINT part")
            raise
        self.send("RELEASE SAVEPOINT part")

    def checked(self) -> None:
        """Wait for what was sent: its failure is raised here."""
        if self._unchecked:
            with translated():
                self._pipeline.sync()
            self._unchecked = False

    def settle(self) -> None:
        """After a failure, take in every answer still due (their errors were raised, or
        belong to the part being undone), so that the pipeline takes commands again."""
        self._unchecked = False
        if self._pipeline is None:
            return
        import psycopg

        for _ in range(3):  # a sync that raised may leave answers queued: one more takes them
            try:
                self._pipeline.sync()
                return
            except psycopg.errors.PipelineAborted:
                continue
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                continue


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
        self.tops = settled.Tops(min(self.timeout, settled.WAIT))
        # read as a write begins: its bounds (pg_driver.left_idle), its id and backend
        self._began_with = f"{pg_driver.left_idle(config)}, {lost_commit.IDENTITY}"
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
            GroupWriter(self.transaction, self._drop, max_batch=MAX_BATCH, side_by_side=True)
            if config.group_commit
            else None
        )

    def connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or pg_driver.hung_up(conn):
            self._drop()  # forgets one lost on a path that did not drop it (snapshot's)
            try:
                conn = connect(self.url, autocommit=True, lost_after=self.config.peer_timeout)
                self._local.conn = conn
            except ValueError as exc:  # down, restarting, unreachable: a client may retry
                pg_driver.tell(f"cannot connect: {exc}")
                raise Unavailable("the database is unavailable; retry shortly") from exc
            with self._opened_lock:
                self._opened.add(conn)
            # A read waits for a lock no longer than a write does (a migration's ACCESS
            # EXCLUSIVE, say): then LockTimeout, 503. A write sets its own, for its
            # transaction only.
            with translated():
                conn.execute(f"SET lock_timeout = '{self.config.busy_timeout_ms}ms'")
        return conn

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with self._reading() as conn:
            return conn.execute(to_psycopg(sql), params or None).fetchall()

    def dicts(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        with self._reading() as conn:
            return as_dicts(conn.execute(to_psycopg(sql), params or None))

    def settled(self, table: str, wait: bool = True, at_least: int | None = None) -> int:
        """The largest id of `table` a page may show: known, or (`wait`) settled anew."""
        if not wait:
            return self.tops.known(table)
        with self._reading() as conn:
            return self.tops.settle(conn, table, at_least)

    @contextlib.contextmanager
    def _reading(self):
        try:
            with translated():
                yield self.connection()
        except Unavailable as exc:
            if not isinstance(exc, HeldBack):  # (a write elsewhere: the connection is fine)
                self._drop()
            raise

    @contextlib.contextmanager
    def snapshot(self, lenient: bool = False) -> Iterator[Database]:
        """One consistent view for reads (REPEATABLE READ, read only; `lenient`: SQLite's)."""
        conn = self.connection()
        with translated(), conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield self

    def write(self, work: Callable[[Write], T], order: int | None = None,
              alone: bool = False) -> T:  # fmt: skip
        """`work(write)` in a transaction (a group commit's, unless `alone`: db.py's write),
        answered within the busy timeout; `order`: the seller whose row it locks first."""
        if getattr(self._local, "writing", False):
            raise AssertionError("a write was started inside a write: pass the open Write on")
        deadline = time.monotonic() + self.timeout
        with self.slots.taken():
            if self.writer is not None and not alone:
                return self.writer.submit(work, deadline, order)
            return metrics.one_write(self.transaction, work, deadline)

    @contextlib.contextmanager
    def transaction(self, deadline: float | None = None) -> Iterator[Write]:
        if getattr(self._local, "writing", False):
            raise AssertionError("a write was started inside a write: pass the open Write on")
        deadline = time.monotonic() + self.timeout if deadline is None else deadline
        conn = self.connection()
        self._local.writing = True
        write, sent = None, None  # sent: the transaction and its backend, once COMMIT is sent
        try:
            # BEGIN and COMMIT by hand: psycopg's transaction() syncs a pipeline three times
            with translated(), pg_driver.pipelined(conn) as pipeline:
                write = Write(conn, self.ledger_key, deadline, pipeline)
                write.send("BEGIN")
                identity = write.bound(also=self._began_with)
                self._began = time.monotonic()
                try:
                    yield write
                    sent = identity()[-2:]  # the transaction's id and backend
                    write.execute("COMMIT")  # what COMMIT refuses (deferred checks) is raised
                except BaseException:
                    with contextlib.suppress(Exception):  # a lost server: dropped below
                        write.settle()
                        write.execute("ROLLBACK")
                    raise
        except (LockTimeout, Deadlocked):
            raise  # the connection is fine; only a lock was not had
        except Unavailable:
            lost = sent is not None and conn.broken  # COMMIT's answer: read what it did
            self._drop()
            if not (lost and lost_commit.outcome(self.url, *sent, max(deadline, time.monotonic()))):
                raise
        finally:
            if write is not None:
                write.open = False
            self._local.writing = False
            if not conn.closed and conn.info.transaction_status.name != "IDLE":
                self._drop()  # a transaction left open by a failure: start again

    def seconds_since_a_write_began(self) -> float:
        return time.monotonic() - self._began

    def storage_bytes(self) -> dict[str, int]:
        """The database's size (one catalogue read). PostgreSQL's WAL is the cluster's, not
        this database's, and reading it needs pg_monitor: not reported."""
        return {"database": int(self.rows("SELECT pg_database_size(current_database())")[0][0])}

    def table_names(self) -> set[str]:
        with self._reading() as conn:
            return Reader(conn).table_names()

    def ensure_schema(self, models: object = None) -> None:
        """Made by its owner (`init-db --grant-to`), upgraded by its owner (`migrate`): its
        version checked here, and that each paged table's ids come one at a time."""
        self.check_schema()
        if unordered := settled.unordered(self.rows):
            raise ValueError(f"--db {described(self.url)}: {', '.join(unordered)}: pages need"
                             " ids one at a time: run `chargebox migrate` as the schema's owner"
                             " (ALTER SEQUENCE ... CACHE 1 INCREMENT 1 NO CYCLE)")  # fmt: skip

    def check_schema(self) -> None:
        """The commands that only read (the audit): the version (not the ids' order)."""
        from chargebox import schema

        found = (
            self.rows("SELECT max(version) FROM schema_version")[0][0]
            if ("schema_version" in self.table_names())
            else None
        )
        if found is None:
            raise ValueError(
                f"--db {described(self.url)}: no chargebox schema (version "
                f"{schema.VERSION}) here; run `chargebox init-db --db OWNER_URL "
                "--grant-to ROLE` first"
            )
        schema.check_version(found, described(self.url))

    def missing_triggers(self) -> list[str]:
        """The schema's guards dropped or changed (guards.missing_in)."""
        with self._reading() as conn:
            return guards.missing_in(conn)

    def release(self) -> None:
        """Close this thread's connection (a background thread between its rounds)."""
        self._drop()

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
