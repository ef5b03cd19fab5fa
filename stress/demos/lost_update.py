"""Demo: the lost update — read-modify-write of a balance by threads and by processes.

Here live four ways to debit one balance in a temp SQLite file (naive, threading.Lock,
filelock.FileLock, BEGIN IMMEDIATE with a guarded UPDATE), each run by threads and by
spawned processes, and the books that count the money they lose. It never imports
chargebox: the race is SQLite's and Python's, and the fix chargebox uses is the last one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from filelock import FileLock

from stress.demos.common import collect_reports
from stress.report import machine

NAME = "lost-update"
SUMMARY = "naive balance read-modify-write loses money; which locks fix threads, which processes"

WORKERS = 8
AMOUNT = 5_000
# The pause between reading the balance and writing it back stands for real work (validating
# the phone, pricing the charge). It only widens the race window so that a short demo shows
# the race reliably. The race exists without it: with no pause, 8 threads on this box still
# lost most of 16,000 debits (sqlite3 releases the GIL inside each statement).
THINK_S = 0.001
BUSY_TIMEOUT_MS = 10_000  # writers wait rather than fail, so lost money is not hidden by errors
# filelock's 50 ms default would make the serial variants crawl (docs/stack-notes.md, trap 7).
FILELOCK_POLL_S = 0.001

VARIANTS = ("naive", "threading.Lock", "filelock.FileLock", "BEGIN IMMEDIATE + guarded")
KINDS = ("threads", "processes")

READ = "SELECT balance FROM account WHERE id = 1"
WRITE_BACK = "UPDATE account SET balance = ? WHERE id = 1"
GUARDED = "UPDATE account SET balance = balance - ? WHERE id = 1 AND balance >= ?"

# Created at import: each spawned process imports this module afresh and so gets its own
# lock, exactly as a module-level lock in a multi-process server would.
_THREAD_LOCK = threading.Lock()


def _create(path: Path, opening: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.execute("INSERT INTO account (id, balance) VALUES (1, ?)", (opening,))
    conn.close()


def _read_modify_write(conn: sqlite3.Connection) -> bool:
    """The naive debit, in autocommit: each statement is its own transaction."""
    (balance,) = conn.execute(READ).fetchone()
    time.sleep(THINK_S)  # "validate the phone": another writer may debit meanwhile
    conn.execute(WRITE_BACK, (balance - AMOUNT,))
    return True


def _guarded(conn: sqlite3.Connection) -> bool:
    """The debit chargebox makes: work first, then a short write that decides in SQL."""
    time.sleep(THINK_S)  # the same work, done before the transaction (no sleeps inside one)
    conn.execute("BEGIN IMMEDIATE")
    try:
        debited = conn.execute(GUARDED, (AMOUNT, AMOUNT)).rowcount == 1
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # keep the first error, not the rollback's
            conn.execute("ROLLBACK")
        raise
    return debited


def _debit_once(variant: str, conn: sqlite3.Connection, file_lock: FileLock) -> bool:
    if variant == "naive":
        return _read_modify_write(conn)
    if variant == "threading.Lock":
        with _THREAD_LOCK:
            return _read_modify_write(conn)
    if variant == "filelock.FileLock":
        with file_lock:
            return _read_modify_write(conn)
    return _guarded(conn)


def _worker(variant: str, db_path: str, debits: int, barrier) -> dict:
    """One worker's K debits; it opens its own connection and lock after it starts."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA synchronous = NORMAL")
    file_lock = FileLock(db_path + ".lock", poll_interval=FILELOCK_POLL_S)
    tally = {"acked": 0, "refused": 0, "locked": 0, "errors": Counter(), "seconds": 0.0}
    barrier.wait(timeout=60)
    start = time.perf_counter()
    for _ in range(debits):
        try:
            if _debit_once(variant, conn, file_lock):
                tally["acked"] += 1
            else:
                tally["refused"] += 1
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                tally["locked"] += 1
            else:
                tally["errors"][str(exc)] += 1
        except Exception as exc:  # counted, never fatal: the books below are the point
            tally["errors"][f"{type(exc).__name__}: {exc}"] += 1
    tally["seconds"] = time.perf_counter() - start
    conn.close()
    return tally


def _process_main(variant: str, db_path: str, debits: int, barrier, results) -> None:
    results.put(_worker(variant, db_path, debits, barrier))


def _run_threads(variant: str, db_path: str, debits: int) -> list[dict]:
    barrier = threading.Barrier(WORKERS)
    tallies: list[dict] = []

    def work() -> None:
        tallies.append(_worker(variant, db_path, debits, barrier))

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies


def _run_processes(variant: str, db_path: str, debits: int) -> list[dict]:
    # spawn, not fork: a child starts clean and opens its own connection (never inherits one).
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_process_main, args=(variant, db_path, debits, barrier, results))
        for _ in range(WORKERS)
    ]
    for process in processes:
        process.start()
    return collect_reports(processes, results, timeout=120)


def _measure(variant: str, kind: str, folder: Path, debits: int) -> dict:
    path = folder / f"{VARIANTS.index(variant)}-{kind}.db"
    opening = WORKERS * debits * AMOUNT  # exactly enough for every debit: exact ends at 0
    _create(path, opening)
    runner = _run_threads if kind == "threads" else _run_processes
    tallies = runner(variant, str(path), debits)
    conn = sqlite3.connect(path)
    (balance,) = conn.execute(READ).fetchone()
    conn.close()
    acked = sum(t["acked"] for t in tallies)
    expected = opening - acked * AMOUNT
    errors: Counter[str] = sum((t["errors"] for t in tallies), Counter())
    return {
        "variant": variant,
        "workers": f"{WORKERS} {kind}",
        "debits_acked": acked,
        "refused": sum(t["refused"] for t in tallies),
        "expected": expected,
        "actual": balance,
        "drift_toman": balance - expected,
        "lost_debits": (balance - expected) // AMOUNT,
        "locked_errors": sum(t["locked"] for t in tallies),
        "other_errors": sum(errors.values()),
        "seconds": round(max(t["seconds"] for t in tallies), 2),
        "exact": balance == expected,
    }


def _expected_exact(variant: str, kind: str) -> bool:
    """What the demo claims: which variants keep exact books for which kind of worker."""
    if variant == "naive":
        return False
    if variant == "threading.Lock":
        return kind == "threads"
    return True


def _lesson(rows: list[dict], shown: bool) -> str:
    def lost(variant: str, kind: str) -> int:
        row = next(r for r in rows if r["variant"] == variant and r["workers"].endswith(kind))
        return row["lost_debits"]

    if not shown:
        return "This run did not show the usual pattern; lost debits per variant: " + ", ".join(
            f"{row['variant']} by {row['workers']}: {row['lost_debits']:,}" for row in rows
        )
    return (
        f"With {THINK_S * 1000:g} ms of work between reading and writing the balance, naive"
        f" read-modify-write lost {lost('naive', 'threads'):,} of {rows[0]['debits_acked']:,}"
        f" acknowledged debits with threads and {lost('naive', 'processes'):,} with processes"
        " (a seller keeps money it spent); a threading.Lock fixed threads but lost"
        f" {lost('threading.Lock', 'processes'):,} across processes because it does not cross"
        " them, while a FileLock or BEGIN IMMEDIATE with a guarded UPDATE kept both exact."
    )


def run(quick: bool = False) -> dict:
    """Every variant by threads and by processes; quick: 20 debits per worker, full: 250."""
    debits = 20 if quick else 250
    with tempfile.TemporaryDirectory(prefix="chargebox-lost-") as folder:
        rows = [_measure(v, k, Path(folder), debits) for v in VARIANTS for k in KINDS]
    shown = all(
        row["exact"] == _expected_exact(row["variant"], row["workers"].split()[1]) for row in rows
    )
    return {
        "demo": NAME,
        "rows": rows,
        "lesson": _lesson(rows, shown),
        "effect_shown": shown,
        "workers": WORKERS,
        "debits_per_worker": debits,
        "amount": AMOUNT,
        "think_ms": THINK_S * 1000,
        "note": (
            f"each naive/locked debit pauses {THINK_S * 1000:g} ms between reading and writing"
            " the balance, standing for real work; it widens the race window so a short run"
            " shows it, but the race exists without it"
        ),
        "machine": machine(),
    }
