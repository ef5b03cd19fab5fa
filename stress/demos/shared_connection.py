"""Demo: threads sharing one SQLite connection vs one connection per thread.

The facts it shows are traps 1 and 2 of docs/stack-notes.md.

Each variant runs the same sale transaction from 8 threads on its own temp WAL file with
a two-table schema of its own; it never imports chargebox, because the lesson is about
connections, not our schema. Every exception is caught per operation and counted by its
message, and every run is capped in time, so a stalled or corrupted variant still reports.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import peewee

from stress.report import machine

NAME = "shared-connection"
SUMMARY = "threads sharing one sqlite3/peewee connection vs one per thread: real errors and drift"

THREADS = 8
AMOUNT = 5_000
OPENING = 10**12  # never runs out, so every refusal below is a connection fault, not a balance
# Long enough that eight honest per-thread connections queue instead of failing (trap 6).
BUSY_TIMEOUT_MS = 5_000
# Short for the shared peewee database: when an orphaned connection keeps the write lock
# (trap 2), each statement fails after this instead of waiting out the whole run.
STALL_TIMEOUT_MS = 200
MAX_OPS_PER_THREAD = 200_000
TOP_ERRORS = 5

SCHEMA = (
    "CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
    "CREATE TABLE ledger (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL,"
    " amount INTEGER NOT NULL)",
)
DEBIT = "UPDATE account SET balance = balance - ? WHERE id = 1 AND balance >= ?"
RECORD = "INSERT INTO ledger (account_id, amount) VALUES (1, ?)"


class NotDebited(Exception):
    """The guarded UPDATE matched no row; with this balance only a confused connection does that."""


def _create(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO account (id, balance) VALUES (1, ?)", (OPENING,))
    conn.execute(RECORD, (OPENING,))
    conn.close()


def _sqlite_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _peewee_database(path: Path, thread_safe: bool, **connect: object) -> peewee.SqliteDatabase:
    timeout_ms = BUSY_TIMEOUT_MS if thread_safe else STALL_TIMEOUT_MS
    return peewee.SqliteDatabase(
        str(path),
        pragmas=[("busy_timeout", timeout_ms), ("synchronous", "NORMAL")],
        timeout=timeout_ms / 1000,
        thread_safe=thread_safe,
        **connect,
    )


def _sqlite_sale(conn: sqlite3.Connection) -> None:
    """The sale as careful single-threaded code writes it: BEGIN IMMEDIATE, guarded, rollback."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute(DEBIT, (AMOUNT, AMOUNT)).rowcount != 1:
            raise NotDebited("the guarded UPDATE matched no row")
        conn.execute(RECORD, (-AMOUNT,))
        conn.execute("COMMIT")
    except Exception:
        # On a shared connection this ROLLBACK may undo another thread's half-done sale.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _peewee_sale(db: peewee.SqliteDatabase) -> None:
    """The sale as idiomatic peewee code writes it: atomic() commits or rolls back for us."""
    with db.atomic(lock_type="IMMEDIATE"):
        if db.execute_sql(DEBIT, (AMOUNT, AMOUNT)).rowcount != 1:
            raise NotDebited("the guarded UPDATE matched no row")
        db.execute_sql(RECORD, (-AMOUNT,))


class _Tally:
    """What one thread saw; merged after the run, so the threads share no counters."""

    def __init__(self) -> None:
        self.attempts = 0
        self.ok = 0
        self.last_ok = 0.0
        self.errors: Counter[str] = Counter()


def _hammer(sale: Callable[[], None], barrier: threading.Barrier, seconds: float) -> _Tally:
    tally = _Tally()
    barrier.wait()
    start = time.monotonic()
    for _ in range(MAX_OPS_PER_THREAD):
        if time.monotonic() - start >= seconds:
            break
        tally.attempts += 1
        try:
            sale()
        except Exception as exc:  # the demo counts every failure instead of dying on one
            tally.errors[_message(exc)] += 1
        else:
            tally.ok += 1
            tally.last_ok = time.monotonic() - start
    return tally


def _run_threads(sales: list[Callable[[], None]], seconds: float) -> tuple[list[_Tally], int]:
    """Run one sale callable per thread; threads still alive past the cap are abandoned."""
    barrier = threading.Barrier(len(sales))
    tallies: list[_Tally | None] = [None] * len(sales)

    def work(index: int) -> None:
        tallies[index] = _hammer(sales[index], barrier, seconds)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(sales))]
    for thread in threads:
        thread.start()
    cap = time.monotonic() + seconds + 5 * BUSY_TIMEOUT_MS / 1000 + 5
    for thread in threads:
        thread.join(max(0.0, cap - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    return [tally for tally in tallies if tally is not None], stuck


def _books(path: Path) -> tuple[int, int]:
    """Balance and ledger sum as a fresh connection sees them (WAL: committed data only)."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        (balance,) = conn.execute("SELECT balance FROM account WHERE id = 1").fetchone()
        (ledger,) = conn.execute("SELECT SUM(amount) FROM ledger").fetchone()
    finally:
        conn.close()
    return balance, ledger


def _variant_sqlite_shared(path: Path, seconds: float) -> tuple[list[_Tally], int]:
    conn = _sqlite_connection(path)
    try:
        return _run_threads([lambda: _sqlite_sale(conn)] * THREADS, seconds)
    finally:
        with contextlib.suppress(sqlite3.Error):  # an abandoned thread may still be inside it
            conn.close()


def _variant_peewee(
    path: Path, seconds: float, thread_safe: bool, **connect: object
) -> tuple[list[_Tally], int]:
    db = _peewee_database(path, thread_safe, **connect)
    try:
        return _run_threads([lambda: _peewee_sale(db)] * THREADS, seconds)
    finally:
        # thread_safe=False: the state close() sees may belong to another thread's connection.
        with contextlib.suppress(Exception):
            db.close()


def _variant_sqlite_per_thread(path: Path, seconds: float) -> tuple[list[_Tally], int]:
    conns = [_sqlite_connection(path) for _ in range(THREADS)]
    try:
        return _run_threads([lambda c=conn: _sqlite_sale(c) for conn in conns], seconds)
    finally:
        for conn in conns:
            conn.close()


# (label, shares one connection?, how to run it)
VARIANTS: tuple[tuple[str, bool, Callable[[Path, float], tuple[list[_Tally], int]]], ...] = (
    ("A sqlite3, one connection shared", True, _variant_sqlite_shared),
    # peewee's own default: sqlite3 refuses a connection from another thread, loudly.
    ("B1 peewee thread_safe=False, shared", True, lambda p, s: _variant_peewee(p, s, False)),
    # ...and what it does once someone silences that refusal (trap 2).
    (
        "B2 the same + check_same_thread=False",
        True,
        lambda p, s: _variant_peewee(p, s, False, check_same_thread=False),
    ),
    ("C sqlite3, one connection per thread", False, _variant_sqlite_per_thread),
    ("D peewee thread_safe=True (per thread)", False, lambda p, s: _variant_peewee(p, s, True)),
)

# Thread ids and savepoint names make equal messages distinct; masked, messages are verbatim.
_VOLATILE = (
    (re.compile(r"thread id \d+"), "thread id N"),
    (re.compile(r"savepoint: \w+"), "savepoint: sN"),
)


def _message(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    for pattern, mask in _VOLATILE:
        text = pattern.sub(mask, text)
    return text


def _measure(label: str, shared: bool, variant: Callable, folder: Path, seconds: float) -> dict:
    path = folder / f"{label.split()[0]}.db"
    _create(path)
    tallies, stuck = variant(path, seconds)
    errors: Counter[str] = sum((tally.errors for tally in tallies), Counter())
    ok = sum(tally.ok for tally in tallies)
    balance, ledger = _books(path)
    return {
        "variant": label,
        "shared": shared,
        "attempts": sum(tally.attempts for tally in tallies),
        "ok": ok,
        "errors": sum(errors.values()),
        "distinct_errors": len(errors),
        "drift_toman": balance - (OPENING - ok * AMOUNT),
        "ledger_minus_balance": ledger - balance,
        "last_ok_s": round(max((tally.last_ok for tally in tallies), default=0.0), 2),
        "stuck_threads": stuck,
        "top_errors": [[message, count] for message, count in errors.most_common(TOP_ERRORS)],
    }


def _faulty(row: dict) -> bool:
    return row["errors"] > 0 or row["drift_toman"] != 0 or row["ledger_minus_balance"] != 0


def _lesson(rows: list[dict], seconds: float) -> str:
    shared = [row for row in rows if row["shared"]]
    errors = sum(row["errors"] for row in shared)
    worst = max(abs(row["drift_toman"]) for row in shared)
    drift = (
        f"left a balance up to {worst:,} toman off what the acknowledged sales imply"
        if worst
        else "kept its books exact this time"
    )
    stalled = [row for row in shared if row["last_ok_s"] < seconds / 2]
    if stalled:
        drift += (
            f"; {len(stalled)} shared variant(s) stopped making progress within"
            f" {max(row['last_ok_s'] for row in stalled):.2f} s of the {seconds:g} s run"
        )
    clean = all(not _faulty(row) for row in rows if not row["shared"])
    tail = (
        "while one connection per thread made no error and no drift"
        if clean
        else "and even one connection per thread showed faults here (see rows)"
    )
    return (
        f"Sharing one connection (or one thread_safe=False peewee database) among {THREADS}"
        f" threads raised {errors:,} errors and {drift}, {tail}: open one connection per thread."
    )


def run(quick: bool = False) -> dict:
    """Run every variant for 1 s (quick) or 8 s each and compare errors and drift."""
    seconds = 1.0 if quick else 8.0
    with tempfile.TemporaryDirectory(prefix="chargebox-shared-") as folder:
        rows = [_measure(*variant, Path(folder), seconds) for variant in VARIANTS]
    top = {row["variant"]: row.pop("top_errors") for row in rows}
    shown = all(_faulty(row) for row in rows if row["shared"]) and not any(
        _faulty(row) for row in rows if not row["shared"]
    )
    return {
        "demo": NAME,
        "rows": rows,
        "top_errors": top,
        "lesson": _lesson(rows, seconds),
        "effect_shown": shown,
        "threads": THREADS,
        "seconds_per_variant": seconds,
        "busy_timeout_ms": BUSY_TIMEOUT_MS,
        "stall_timeout_ms": STALL_TIMEOUT_MS,
        "notes": (
            "drift_toman = final balance - (opening - ok x amount): below zero, sales reported"
            " as failed were debited anyway (a retrying client pays twice); ledger_minus_balance"
            " != 0 means the balance and its ledger no longer reconcile; last_ok_s is when the"
            " last sale succeeded, so a small value on a long run is a stall"
        ),
        "machine": machine(),
    }
