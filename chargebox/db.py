"""Opening the database, its PRAGMAs, schema and triggers, and `write_tx()`.

This is the only module that knows SQL dialects and locking. Every write in
chargebox goes through `write_tx()`: a process-wide queue (a thread lock plus
an flock across processes) and then `BEGIN IMMEDIATE`, so the SQLite write lock
is taken up front and writers wait in line instead of spinning in SQLite's
busy handler (STACK_NOTES traps 3, 4 and 6). Connections are per thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import peewee
from filelock import FileLock

from chargebox.config import Config
from chargebox.errors import IntegrityViolation, Unavailable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the thread lock and busy timeout remain
    fcntl = None

database = peewee.DatabaseProxy()
_ledger_key: bytes | None = None  # the HMAC key of the ledger seals, set at start-up

_BUSY_SLACK_MS = 50  # a deadline this close to the full busy timeout keeps the default
_UNAVAILABLE_MARKERS = ("locked", "busy", "readonly", "disk", "full", "unable to open")


def open_database(config: Config) -> peewee.SqliteDatabase:
    """Bind the models to the SQLite file of `config`; connections open lazily, one per thread."""
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    sqlite_db = peewee.SqliteDatabase(
        str(config.db_path),
        pragmas=[
            ("foreign_keys", 1),
            ("busy_timeout", config.busy_timeout_ms),
            # Debian defaults WAL to FULL, other builds to NORMAL: always say it.
            ("synchronous", config.synchronous),
            ("temp_store", "memory"),
        ],
        timeout=config.busy_timeout_ms / 1000,
        lock_type="IMMEDIATE",  # also for any atomic() someone adds later (trap 4)
        thread_safe=True,  # one connection per thread (traps 1 and 2)
    )
    database.initialize(sqlite_db)
    _gate.bind(config.db_path, config.busy_timeout_ms / 1000)
    return sqlite_db


def use_ledger_key(key: str | None) -> None:
    """Set the key that seals ledger entries (None: seals cannot be made or checked)."""
    global _ledger_key
    _ledger_key = key.encode("utf-8") if key else None


def ledger_key() -> bytes | None:
    return _ledger_key


def close_database() -> None:
    if database.obj is not None and not database.is_closed():
        database.close()


def startup_lock(config: Config) -> FileLock:
    """The lock that processes starting on one database take in turn (schema, ledger key).

    One instance per file in this process, so that it may be taken again inside itself.
    """
    return FileLock(str(config.db_path) + ".lock", timeout=60, is_singleton=True)


def ensure_schema(config: Config, models: Sequence[type[peewee.Model]]) -> None:
    """Create tables, indexes and triggers if missing; safe when processes start together."""
    with startup_lock(config):
        conn = database.connection()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {config.db_path} to WAL mode (got {mode})")
        with database.atomic():
            database.create_tables(models, safe=True)
            for statement in TRIGGERS:
                database.execute_sql(statement)


def missing_triggers() -> list[str]:
    """Names of schema triggers that are not installed (someone dropped the second line)."""
    wanted = {re.search(r"EXISTS (\w+)", sql).group(1) for sql in TRIGGERS}
    rows = database.execute_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return sorted(wanted - {name for (name,) in rows.fetchall()})


class LockTimeout(Unavailable):
    """The write lock was not had by the write's deadline; nothing of the write ran."""


# SQLite's result codes for "another connection holds the lock" (sqlite3.h).
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def seconds_since_a_write_began() -> float:
    """How long ago this process last had the write lock (a stalled writer shows here)."""
    return time.monotonic() - _gate.began


def deadline_in(seconds: float) -> float:
    """A deadline for write_tx(): `seconds` from now, on the monotonic clock."""
    return time.monotonic() + seconds


@contextlib.contextmanager
def write_tx(deadline: float | None = None) -> Iterator[None]:
    """The only door to a write: queue for the write lock, then BEGIN IMMEDIATE ... COMMIT.

    Waiting for the lock (the gate, then SQLite's) ends at `deadline` (default: the
    busy timeout from now) with LockTimeout, so a write never waits twice its timeout.
    Never nest it: a nested transaction would become a SAVEPOINT inside the outer one.
    """
    if database.in_transaction():
        raise AssertionError("write_tx() must not be nested")
    if deadline is None:
        deadline = deadline_in(_gate.timeout)
    try:
        with _gate.held_until(deadline), translate_errors(), _immediate(deadline):
            yield
    except LockTimeout:
        raise  # the connection is fine; only the lock was taken
    except Unavailable:
        # A connection opened while the file was read-only stays read-only, and one that
        # hit a disk error may be in a poor state: this thread starts afresh next time.
        with contextlib.suppress(Exception):
            database.close()
        raise


@contextlib.contextmanager
def _immediate(deadline: float) -> Iterator[None]:
    """BEGIN IMMEDIATE, letting SQLite's busy handler wait only until `deadline`."""
    conn = database.connection()
    left_ms = max(0, int((deadline - time.monotonic()) * 1000))
    shortened = left_ms < _gate.timeout * 1000 - _BUSY_SLACK_MS
    if shortened:  # most writes find the lock at once: then the PRAGMA is not worth it
        conn.execute(f"PRAGMA busy_timeout = {left_ms}")
    transaction = database.atomic(lock_type="IMMEDIATE")
    try:
        transaction.__enter__()
    except (peewee.OperationalError, sqlite3.OperationalError) as exc:
        code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            raise LockTimeout("the database is busy; retry shortly") from None
        raise
    finally:
        if shortened:
            conn.execute(f"PRAGMA busy_timeout = {int(_gate.timeout * 1000)}")
    _gate.began = time.monotonic()
    try:
        yield
    except BaseException:
        transaction.__exit__(*sys.exc_info())
        raise
    transaction.__exit__(None, None, None)


@contextlib.contextmanager
def savepoint() -> Iterator[None]:
    """A nested, individually undoable part of the open write transaction."""
    conn = write_connection()
    conn.execute("SAVEPOINT part")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO part")
        conn.execute("RELEASE part")
        raise
    conn.execute("RELEASE part")


def execute(sql: str, params: tuple = ()) -> sqlite3.Cursor:
    """Run one statement on this thread's connection, without peewee's query hooks."""
    return database.connection().execute(sql, params)


def rows(sql: str, params: tuple = ()) -> list[tuple]:
    return execute(sql, params).fetchall()


@contextlib.contextmanager
def read_tx() -> Iterator[None]:
    """A consistent snapshot for multi-statement reads (WAL readers never block writers)."""
    with translate_errors(), database.atomic(lock_type="DEFERRED"):
        yield


def write_connection() -> sqlite3.Connection:
    """This thread's connection, asserting it is inside write_tx(): writes happen only there."""
    conn = database.connection()
    if not (conn.in_transaction and _gate.held()):
        raise AssertionError("this needs an open db.write_tx()")
    return conn


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors into our tree: schema refusals are bugs, lock/disk trouble is 503."""
    try:
        yield
    except (peewee.IntegrityError, sqlite3.IntegrityError) as exc:
        raise IntegrityViolation(f"the database refused a write: {exc}") from exc
    except (peewee.OperationalError, sqlite3.OperationalError) as exc:
        # A failed COMMIT has already been rolled back by SQLite; peewee's own ROLLBACK
        # then fails ("no transaction is active") and hides the cause in __context__.
        cause: BaseException | None = exc
        while cause is not None:
            if any(marker in str(cause).lower() for marker in _UNAVAILABLE_MARKERS):
                raise Unavailable("the database is busy or unavailable; retry shortly") from exc
            cause = cause.__context__
        raise


class _WriteGate:
    """A FIFO-ish queue in front of SQLite's write lock, for threads and for processes.

    SQLite's busy handler sleeps and retries instead of queueing, so under load
    some writers starve and `database is locked` escapes (trap 6). A thread lock
    queues this process's threads; an flock on a kept-open file, polled every
    0.5-5 ms, serialises processes and gives up (503) at the busy timeout, so a
    stuck writer elsewhere cannot hang us. The lock file is reopened after fork,
    since flock belongs to the open file and a child must not share its parent's.
    """

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()
        self._path: Path | None = None
        self._fd: int | None = None
        self._pid = 0
        self._owner: int | None = None
        self.timeout = 10.0  # seconds: the busy timeout
        self.began = 0.0  # time.monotonic() when a write of this process last began

    def bind(self, db_path: Path, timeout: float) -> None:
        with self._thread_lock:
            self._close_fd()
            self._path = Path(str(db_path) + ".write-lock")
            self.timeout = timeout

    def held(self) -> bool:
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def held_until(self, deadline: float) -> Iterator[None]:
        """Hold the gate for a block, waiting for it until `deadline` at most (LockTimeout)."""
        if not self._thread_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise LockTimeout("the database is busy; retry shortly")
        try:
            fd = self._file()
            if fd is not None:
                self._flock(fd, deadline)
        except BaseException:
            self._thread_lock.release()
            raise
        self._owner = threading.get_ident()
        try:
            yield
        finally:
            self._release()

    @staticmethod
    def _flock(fd: int, deadline: float) -> None:
        """Take the process-wide flock, giving up (503) at the busy timeout.

        One thread per process asks at a time (the thread lock is held), so the short
        polls below cost little; a stuck writer elsewhere can no longer hang us.
        """
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout("the database is busy; retry shortly") from None
                time.sleep(pause)  # another process is writing: poll, not spin
                pause = min(pause * 2, 0.005)

    def _release(self) -> None:
        self._owner = None
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _file(self) -> int | None:
        if fcntl is None or self._path is None:
            return None
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


_gate = _WriteGate()


def _immutable(table: str, action: str, why: str) -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{why}'); END"
    )


TRIGGERS = (
    # I5: the ledger, sales and idempotency outcomes are append-only.
    _immutable("ledger_entry", "UPDATE", "I5: ledger entries are never updated"),
    _immutable("ledger_entry", "DELETE", "I5: ledger entries are never deleted"),
    _immutable("sale", "UPDATE", "sales are never updated"),
    _immutable("sale", "DELETE", "sales are never deleted"),
    _immutable("idempotency_record", "UPDATE", "idempotency outcomes are final"),
    _immutable("ledger_seal", "UPDATE", "ledger seals are never updated"),
    _immutable("ledger_seal", "DELETE", "ledger seals are never deleted"),
    _immutable("idempotency_record", "DELETE", "idempotency outcomes are final"),
    _immutable("adjustment_record", "UPDATE", "idempotency outcomes are final"),
    _immutable("adjustment_record", "DELETE", "idempotency outcomes are final"),
    _immutable("credit_request_record", "UPDATE", "idempotency outcomes are final"),
    _immutable("credit_request_record", "DELETE", "idempotency outcomes are final"),
    _immutable("seller", "DELETE", "sellers are never deleted"),
    _immutable("credit_request", "DELETE", "credit requests are never deleted"),
    # I4: a decided request never changes again, so it can never be approved twice.
    """CREATE TRIGGER IF NOT EXISTS credit_request_decided_is_final
       BEFORE UPDATE ON credit_request
       WHEN NEW.seller_id IS NOT OLD.seller_id OR NEW.amount IS NOT OLD.amount
         OR NEW.created_at IS NOT OLD.created_at
         OR (OLD.status != 'pending'
             AND (NEW.status IS NOT OLD.status OR NEW.decided_at IS NOT OLD.decided_at))
       BEGIN SELECT RAISE(ABORT, 'I4: a decided credit request is final'); END""",
    # I2 + I3: each entry continues its seller's chain and the seller's current balance.
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_continues_chain
       BEFORE INSERT ON ledger_entry
       BEGIN
         SELECT RAISE(ABORT, 'I3: balance_after must equal the previous balance_after + amount')
         WHERE NEW.balance_after IS NOT COALESCE((SELECT balance_after FROM ledger_entry
                 WHERE seller_id = NEW.seller_id ORDER BY id DESC LIMIT 1), 0) + NEW.amount;
         SELECT RAISE(ABORT, 'I2: balance_after must equal the seller balance + amount')
         WHERE NEW.balance_after IS NOT
               (SELECT balance FROM seller WHERE id = NEW.seller_id) + NEW.amount;
       END""",
    # I2: a balance changes only onto the newest ledger entry, written just before.
    """CREATE TRIGGER IF NOT EXISTS seller_balance_follows_ledger
       BEFORE UPDATE OF balance ON seller WHEN NEW.balance IS NOT OLD.balance
       BEGIN
         SELECT RAISE(ABORT, 'I2: a balance may change only with its ledger entry')
         WHERE NEW.balance IS NOT (SELECT balance_after FROM ledger_entry
                 WHERE seller_id = NEW.id ORDER BY id DESC LIMIT 1);
       END""",
    """CREATE TRIGGER IF NOT EXISTS seller_starts_at_zero
       BEFORE INSERT ON seller WHEN NEW.balance IS NOT 0
       BEGIN SELECT RAISE(ABORT, 'I2: a new seller starts with balance 0'); END""",
    # I4: a credit entry exists only for an approved request, with its amount.
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_credit_matches_request
       BEFORE INSERT ON ledger_entry WHEN NEW.kind = 'credit'
       BEGIN
         SELECT RAISE(ABORT, 'I4: a credit entry needs its approved request')
         WHERE NOT EXISTS (SELECT 1 FROM credit_request WHERE id = NEW.credit_request_id
                 AND seller_id = NEW.seller_id AND status = 'approved'
                 AND amount = NEW.amount);
       END""",
    # I4: a sale entry debits exactly its sale.
    """CREATE TRIGGER IF NOT EXISTS ledger_entry_sale_matches_sale
       BEFORE INSERT ON ledger_entry WHEN NEW.kind = 'sale'
       BEGIN
         SELECT RAISE(ABORT, 'I4: a sale entry needs its sale')
         WHERE NOT EXISTS (SELECT 1 FROM sale WHERE id = NEW.sale_id
                 AND seller_id = NEW.seller_id AND amount = -NEW.amount
                 AND balance_after = NEW.balance_after);
       END""",
)
