"""The database of one process: its connections, PRAGMAs and the one door to a write.

`Database(config)` owns what a process holds of one SQLite file: a connection per thread
(opened lazily, so after any fork), the write gate, the group writer and the ledger key.
Every write is `database.write(work)`: `work(write)` runs inside BEGIN IMMEDIATE ... COMMIT
and changes rows only through the `Write` it is given. SQLite is spelled here (connections,
transactions, result codes), in `gate` (the flock), in `schema`, `schema_steps` and
`migrations` (triggers, the catalogue, PRAGMAs), in `sale_batches` (its batch's TEMP view),
`wal` (checkpoints) and `backup` (VACUUM INTO, quick_check); the SQL elsewhere is what
SQLite and PostgreSQL share, but for the audit's `typeof()` checks (audit, audit_checks).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import peewee

from chargebox import errors, guards, location, metrics, migrations, schema
from chargebox.config import Config
from chargebox.errors import DAMAGED, Damaged, IntegrityViolation, LockTimeout, Unavailable
from chargebox.gate import WriteGate
from chargebox.slots import WriteSlots
from chargebox.writer import GroupWriter

T = TypeVar("T")

# SQLite's primary result codes (sqlite3.h): a lock held elsewhere, a file that takes no write
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 5, 6, 8
_UNAVAILABLE_CODES = {SQLITE_BUSY, SQLITE_LOCKED, 8, 10, 13, 14}  # READONLY IOERR FULL CANTOPEN
DAMAGED_CODES = {11, 26}  # CORRUPT, NOTADB: a file damaged, or another put in its place
_BUSY_SLACK_MS = 50  # a deadline this close to the full busy timeout keeps the default
# The WAL cannot restart past a reader's snapshot: a long read (a full audit, a statement,
# a backup) lets it grow by hundreds of MB under sales; SQLite keeps the file that size for
# good unless it is told to truncate it once the WAL restarts.
WAL_SIZE_LIMIT = 64 << 20


class Write:
    """The open write transaction, handed to each write's work: the only way to change rows.

    Reads through it see the transaction's own changes. It refuses to run once its
    transaction has ended, so a write cannot escape its `database.write()`.
    """

    __slots__ = ("_conn", "ledger_key", "open")
    dialect = "sqlite"
    balance_first = False  # the entry first: SQLite's triggers cannot wait for COMMIT

    def __init__(self, conn: sqlite3.Connection, ledger_key: bytes | None) -> None:
        self._conn = conn
        self.ledger_key = ledger_key
        self.open = True

    def execute(self, sql: str, params: Sequence | dict = ()) -> sqlite3.Cursor:
        if not (self.open and self._conn.in_transaction):
            raise AssertionError("this write has ended: write only inside database.write()")
        try:
            return self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:  # a full disk fails the batch, not each run
            if busy := _unavailable(exc):
                raise busy from exc
            raise

    def rows(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def dicts(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        return as_dicts(self.execute(sql, params))

    def send(self, sql: str, params: Sequence | dict = ()) -> None:
        """A statement whose result nobody reads (PostgreSQL's need not wait for it)."""
        self.execute(sql, params)

    def send_all(self, statements: list[tuple[str, tuple]]) -> None:
        """Statements whose results nobody reads (PostgreSQL sends them as one)."""
        for sql, params in statements:
            self.execute(sql, params)

    def table(self, alias: str, columns: dict[str, str], values: list[list]) -> tuple[str, tuple]:
        """`values` (a list per column, named with its PostgreSQL type in `columns`) as a
        table `alias` to select from: its SQL, and its one parameter (a JSON array of rows)."""
        picked = ", ".join(
            f"json_extract(j.value, '$[{n}]') AS {name}" for n, name in enumerate(columns)
        )
        rows = json.dumps(list(zip(*values, strict=True)))
        return f"(SELECT {picked} FROM json_each(?) AS j ORDER BY j.key) AS {alias}", (rows,)

    def lock_seller(self, seller_id: int) -> None:
        """Nothing to do: a write holds the whole file's lock already."""

    def hold(self, *seller_ids: int) -> None:
        """Nothing to do: a write holds the whole file's lock already."""

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the write that is undone alone if it fails (driver errors translated)."""
        self.execute("SAVEPOINT part")
        try:
            with translate_errors():
                yield
        except BaseException:
            self._conn.execute("ROLLBACK TO part")
            self._conn.execute("RELEASE part")
            raise
        self._conn.execute("RELEASE part")


def open_database(config: Config):
    """The database `config` names: an SQLite file, or PostgreSQL (`--db postgresql://`)."""
    if config.db_url:
        from chargebox import postgresql

        return postgresql.Database(config)
    return Database(config)


def as_dicts(cursor: sqlite3.Cursor) -> list[dict]:
    """Rows as dicts keyed by column name: the one row-to-dict helper."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Database:
    """One SQLite file as this process uses it: open lazily, write through `write()`."""

    dialect = "sqlite"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.path = config.db_path
        self.timeout = config.busy_timeout_ms / 1000
        self.peewee = peewee.SqliteDatabase(
            str(config.db_path),
            pragmas=[
                ("foreign_keys", 1),
                ("busy_timeout", config.busy_timeout_ms),
                # SQLite's WAL default is FULL unless a build says otherwise: always say it.
                ("synchronous", config.synchronous),
                ("temp_store", "memory"),
                ("journal_size_limit", WAL_SIZE_LIMIT),
            ],
            timeout=self.timeout,
            # A plain BEGIN that later writes fails at once when another holds the lock (the
            # busy timeout does not cover a lock upgrade): every transaction is IMMEDIATE.
            lock_type="IMMEDIATE",
            thread_safe=True,  # one connection per thread: sharing one corrupts writes
        )
        self.ledger_key = config.ledger_key.encode("utf-8") if config.ledger_key else None
        self.gate = WriteGate(config.db_path.with_name(config.db_path.name + ".write-lock"))
        self.writer = (
            GroupWriter(self.transaction, self._close_connection, side_by_side=True, late=True)
            if config.group_commit
            else None
        )
        self.slots = WriteSlots(config.threads, self.seconds_since_a_write_began)
        self.file = location.watched(self.path, config.db_file, config.serving)  # damaged, replaced

    # --- reads -----------------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, in this thread)."""
        return self.peewee.connection()

    def rows(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        with translate_errors(self.file.damaged):
            return self.connection().execute(sql, params).fetchall()

    def dicts(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        with translate_errors(self.file.damaged):
            return as_dicts(self.connection().execute(sql, params))

    def settled(self, table: str, wait: bool = True, at_least: int | None = None) -> None:
        """No id to hold back from a page: one write at a time takes its ids and commits,
        so a page never passes a row still to come (PostgreSQL's: settled.py)."""

    @contextlib.contextmanager
    def snapshot(self, lenient: bool = False) -> Iterator[Database]:
        """A consistent view for several reads (WAL readers never block the writer).
        `lenient` (the audit's): text that is not UTF-8, which only a byte editor can
        write, is read with its bad bytes as surrogates (`_lenient`), so that the audit
        names the row (its seal no longer matches) instead of failing on the read."""
        with translate_errors(self.file.damaged), self.peewee.atomic(lock_type="DEFERRED"):
            if not lenient:
                yield self
                return
            conn = self.connection()
            before, conn.text_factory = conn.text_factory, _lenient
            try:
                yield self
            finally:
                conn.text_factory = before

    # --- the one door to a write -----------------------------------------------------------

    def write(self, work: Callable[[Write], T], order: int | None = None,
              alone: bool = False) -> T:  # fmt: skip
        """Run `work(write)` in a write transaction and return its result once committed.

        Answered within the busy timeout (plus one transaction): done, or Unavailable
        with nothing changed. A write started inside a write fails at once. `order`
        (the seller whose row the write locks first) places it in a group commit;
        `alone` keeps it out of one, in a transaction of its own (a write that may wait
        for a lock no sale needs, which the sales batched with it would wait for too).
        """
        if self.gate.held():
            raise AssertionError("a write was started inside a write: pass the open Write on")
        deadline = time.monotonic() + self.timeout
        with self.slots.taken():
            try:
                return self._write(work, deadline, order, alone)
            except Unavailable as exc:
                # A connection opened while the file was read-only stays read-only after
                # it is writable again (its BEGIN IMMEDIATE passes; its first write fails,
                # nothing changed). It was replaced as it failed: the write goes once more.
                if errors.primary_code(exc.__cause__) != SQLITE_READONLY:
                    raise
                return self._write(work, deadline, order, alone)

    def _write(self, work: Callable[[Write], T], deadline: float, order: int | None,
               alone: bool) -> T:  # fmt: skip
        if self.writer is not None and not alone:
            return self.writer.submit(work, deadline, order)
        return metrics.one_write(self.transaction, work, deadline)

    @contextlib.contextmanager
    def transaction(self, deadline: float | None = None) -> Iterator[Write]:
        """Queue for the write lock, then BEGIN IMMEDIATE ... COMMIT around one Write.

        Waiting (the gate, then SQLite's busy handler) ends at `deadline` (default: the
        busy timeout from now) with LockTimeout, so no write waits for the lock twice.
        """
        if self.gate.held() or self.connection().in_transaction:
            raise AssertionError("a write was started inside a write: pass the open Write on")
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        try:
            with (
                self.gate.held_until(deadline),
                translate_errors(self.file.damaged),
                self._immediate(deadline),
            ):
                self.file.check()
                write = Write(self.connection(), self.ledger_key)
                try:
                    yield write
                finally:
                    write.open = False
        except LockTimeout:
            raise  # the connection is fine; only the lock was taken
        except Unavailable:
            # A connection opened while the file was read-only stays read-only, and one that
            # hit a disk error may be in a poor state: this thread starts afresh next time.
            with contextlib.suppress(Exception):
                self.peewee.close()
            raise

    @contextlib.contextmanager
    def _immediate(self, deadline: float) -> Iterator[None]:
        """BEGIN IMMEDIATE, letting SQLite's busy handler wait only until `deadline`."""
        conn = self.connection()
        full_ms = int(self.timeout * 1000)
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        shortened = left_ms < full_ms - _BUSY_SLACK_MS
        if shortened:  # most writes find the lock at once: then the PRAGMA is not worth it
            conn.execute(f"PRAGMA busy_timeout = {left_ms}")
        transaction = self.peewee.atomic(lock_type="IMMEDIATE")
        try:
            transaction.__enter__()
        except (peewee.OperationalError, sqlite3.OperationalError) as exc:
            if errors.primary_code(exc) in (SQLITE_BUSY, SQLITE_LOCKED):
                raise LockTimeout("the database is busy; retry shortly") from None
            raise
        finally:
            if shortened:
                conn.execute(f"PRAGMA busy_timeout = {full_ms}")
        self.gate.began = time.monotonic()
        try:
            yield
        except BaseException:
            transaction.__exit__(*sys.exc_info())
            raise
        transaction.__exit__(None, None, None)

    def seconds_since_a_write_began(self) -> float:
        """How long ago this process last had the write lock (a stalled writer shows here)."""
        return time.monotonic() - self.gate.began

    # --- schema and lifetime ---------------------------------------------------------------

    def ensure_schema(self, models: Sequence[type[peewee.Model]]) -> None:
        """WAL mode, then the schema: made at the newest version in a new file, checked
        (and anything missing put back) in a file at it, refused at any other version.

        The caller holds the start-up lock (cli.prepare), so processes starting
        together create the schema one at a time, and has refused another application's
        file (migrations.refuse_another_applications) before anything was written.
        """
        conn = self.connection()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {self.path} to WAL mode (got {mode})")
        with translate_errors():
            migrations.prepare_sqlite(self.peewee, models, str(self.path))
        self.file.opened()  # a new file's (config.db_file was read before it was made)

    def check_schema(self) -> None:
        """For the commands that only read (audit, anchors): refuse, in one line and
        without writing, a file that holds no chargebox database or another version."""
        found = migrations.sqlite_version(self.connection())
        if found is None:
            raise ValueError(f"--db {self.path}: no chargebox database in this file")
        migrations.check(found, str(self.path))

    def missing_triggers(self) -> list[str]:
        with translate_errors():  # a locked or unreadable file: 503, not a bug
            return guards.missing_in_sqlite(self.connection())

    def storage_bytes(self) -> dict[str, int]:
        """The file's size and its write-ahead log's (0 when there is none)."""
        sizes = {}
        for name, path in (("database", self.path), ("wal", Path(f"{self.path}-wal"))):
            try:
                sizes[name] = path.stat().st_size
            except FileNotFoundError:
                sizes[name] = 0
        return sizes

    def table_names(self) -> set[str]:
        with translate_errors():
            return schema.table_names(self.connection())

    def close(self) -> None:
        """Close this thread's connection and the gate, and end the writer thread (which
        closes its own). Other threads' connections close when those threads end."""
        if self.writer is not None:
            self.writer.close()
        self._close_connection()
        self.gate.close()

    def release(self) -> None:
        """Close this thread's connection (a background thread between its rounds: a
        connection left open at exit leaves the WAL unmerged into the file)."""
        self._close_connection()

    def _close_connection(self) -> None:
        if not self.peewee.is_closed():
            self.peewee.close()


_told: dict[int, float] = {}  # when the log last said why the file took no write


def _unavailable(cause: BaseException) -> Unavailable | None:
    """503 for a lock held elsewhere, or a file that takes no write (why: logged at most
    once a minute each, not once a refused batch); None for anything else."""
    if (code := errors.primary_code(cause)) not in _UNAVAILABLE_CODES:
        return None
    if code not in (SQLITE_BUSY, SQLITE_LOCKED) and time.monotonic() - _told.get(code, -60) >= 60:
        _told[code] = time.monotonic()
        location.log.warning("the database takes no write (503): %s", getattr(cause, "orig", cause))
    return Unavailable("the database is busy or unavailable; retry shortly")


@contextlib.contextmanager
def translate_errors(damaged: Callable[[str], None] | None = None) -> Iterator[None]:
    """Turn driver errors into our tree: schema refusals are bugs, lock/disk trouble is 503,
    and so is a damaged file (`Damaged`, told to `damaged` in words).

    Decided by SQLite's result code, never by the message: a bug such as `no such
    column: fully_paid` stays a bug instead of becoming a 503 "retry".
    """
    try:
        yield
    except (peewee.IntegrityError, sqlite3.IntegrityError) as exc:
        raise IntegrityViolation("the database refused a write: {exc}", exc=exc) from exc
    except (peewee.DatabaseError, sqlite3.DatabaseError) as exc:
        # A failed COMMIT has already been rolled back by SQLite; peewee's own ROLLBACK
        # then fails ("no transaction is active") and hides the cause in __context__.
        cause: BaseException | None = exc
        while cause is not None:  # its cause: the error with the code
            if busy := _unavailable(cause):
                raise busy from cause
            if errors.primary_code(cause) in DAMAGED_CODES:
                if damaged is not None:
                    damaged(f"SQLite: {getattr(cause, 'orig', cause)}")
                raise Damaged(DAMAGED) from cause
            cause = cause.__context__
        raise
