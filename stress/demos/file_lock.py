"""Demo: how writer processes should queue for SQLite's single write lock.

The facts it shows are traps 6 and 7 of docs/stack-notes.md.

Here live four ways for P spawned processes to take turns writing one temp WAL file: the
busy timeout alone, filelock.FileLock at its default 50 ms poll, FileLock at a 1 ms poll,
and a blocking fcntl.flock on a kept-open fd (what chargebox.db does). It never imports
chargebox, so the comparison is of the locks alone, on the same short write transaction.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

from stress.demos.common import collect_reports
from stress.report import latency_summary, machine

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: run() refuses
    fcntl = None

NAME = "file-lock"
SUMMARY = "writer processes queued by filelock / flock vs SQLite's busy timeout alone"

PROCESSES = 8
AMOUNT = 5_000
OPENING = 10**12
BUSY_TIMEOUT_MS = 2_000  # every variant keeps it; only the first relies on it alone

VARIANTS = (
    "busy timeout alone",
    "FileLock, default 50 ms poll",
    "FileLock, 1 ms poll",
    "fcntl.flock, blocking",
)


def _create(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
    conn.execute("INSERT INTO account (id, balance) VALUES (1, ?)", (OPENING,))
    conn.close()


@contextlib.contextmanager
def _flock(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)  # blocks in the kernel: no polling, no sleeping past a release
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _gate(variant: str, db_path: str) -> Callable[[], contextlib.AbstractContextManager]:
    """What a process holds around each write transaction; built after the process starts."""
    if variant == VARIANTS[1]:
        lock = FileLock(db_path + ".lock")
        return lambda: lock
    if variant == VARIANTS[2]:
        lock = FileLock(db_path + ".lock", poll_interval=0.001)
        return lambda: lock
    if variant == VARIANTS[3]:
        # Opened once and kept open: flock belongs to this open file, and reopening per
        # write would cost a syscall pair each time.
        fd = os.open(db_path + ".flock", os.O_RDWR | os.O_CREAT, 0o600)
        return lambda: _flock(fd)
    return contextlib.nullcontext


def _sale(conn: sqlite3.Connection, started: float) -> float:
    """One short write; returns how long it waited for the write lock (seconds)."""
    conn.execute("BEGIN IMMEDIATE")
    waited = time.perf_counter() - started
    try:
        conn.execute(
            "UPDATE account SET balance = balance - ? WHERE id = 1 AND balance >= ?",
            (AMOUNT, AMOUNT),
        )
        conn.execute("INSERT INTO ledger (amount) VALUES (?)", (-AMOUNT,))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # keep the first error, not the rollback's
            conn.execute("ROLLBACK")
        raise
    return waited


def _writer(variant: str, db_path: str, seconds: float, barrier, results) -> None:
    """One process: write as fast as its lock lets it for `seconds`, then report."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA synchronous = NORMAL")
    gate = _gate(variant, db_path)
    waits: list[float] = []
    ops = locked = other = 0
    barrier.wait(timeout=60)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        try:
            with gate():
                waits.append(_sale(conn, began))
            ops += 1
        except sqlite3.OperationalError as exc:
            waits.append(time.perf_counter() - began)  # a failed wait still kept a buyer waiting
            locked += "locked" in str(exc)
            other += "locked" not in str(exc)
    results.put({"ops": ops, "locked": locked, "other": other, "waits": waits})
    conn.close()


def _run_variant(variant: str, folder: Path, seconds: float) -> list[dict]:
    path = folder / f"{VARIANTS.index(variant)}.db"
    _create(path)
    # spawn: each writer starts clean and opens its own connection and lock.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_writer, args=(variant, str(path), seconds, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    # Read before joining: a child cannot exit while its large result sits in the pipe.
    return collect_reports(processes, results, timeout=seconds + 120)


def jain(values: list[int]) -> float:
    """Jain's fairness index: 1.0 when all workers got equal shares, 1/n when one got all."""
    total = sum(values)
    squares = sum(value * value for value in values)
    return total * total / (len(values) * squares) if squares else 0.0


def _row(variant: str, reports: list[dict], seconds: float) -> dict:
    per_worker = [report["ops"] for report in reports]
    waits = latency_summary([wait for report in reports for wait in report["waits"]])
    return {
        "variant": variant,
        "tx_per_s": round(sum(per_worker) / seconds),
        "p50_wait_ms": waits["p50_ms"],
        "p99_wait_ms": waits["p99_ms"],
        "max_wait_ms": waits["max_ms"],
        "locked_errors": sum(report["locked"] for report in reports),
        "other_errors": sum(report["other"] for report in reports),
        "worker_ops_min": min(per_worker),
        "worker_ops_max": max(per_worker),
        "jain": round(jain(per_worker), 3),
    }


def _beats(busy: dict, flock: dict) -> bool:
    """The claim, robust to a noisy box: the busy timeout alone let an error escape, or its
    worst wait was at least twice the flock queue's, or it was less fair by 0.05 of Jain."""
    return (
        busy["locked_errors"] > 0
        or busy["max_wait_ms"] >= 2 * flock["max_wait_ms"]
        or busy["jain"] <= flock["jain"] - 0.05
    )


def _lesson(rows: dict[str, dict]) -> str:
    busy, flock = rows[VARIANTS[0]], rows[VARIANTS[3]]
    polled, fast = rows[VARIANTS[1]], rows[VARIANTS[2]]
    text = (
        f"With the busy timeout alone {PROCESSES} writer processes made {busy['tx_per_s']:,}"
        f" tx/s, but the unluckiest waited {busy['max_wait_ms']:,.0f} ms, shares ranged"
        f" {busy['worker_ops_min']:,}-{busy['worker_ops_max']:,} ops (Jain {busy['jain']})"
        f" and {busy['locked_errors']} 'database is locked' escaped; queued by a blocking flock"
        f" the worst wait was {flock['max_wait_ms']:,.0f} ms, Jain {flock['jain']}, at"
        f" {flock['tx_per_s']:,} tx/s"
    )
    if polled["max_wait_ms"] > flock["max_wait_ms"] and fast["tx_per_s"] < flock["tx_per_s"]:
        text += (
            f"; filelock's polling costs latency at its 50 ms default (worst wait"
            f" {polled['max_wait_ms']:,.0f} ms) or throughput at 1 ms ({fast['tx_per_s']:,} tx/s)"
        )
    return text + "."


def run(quick: bool = False) -> dict:
    """Each variant for 1.5 s (quick) or 10 s: throughput, waits and fairness per variant."""
    seconds = 1.5 if quick else 10.0
    if fcntl is None:  # pragma: no cover
        raise RuntimeError("the file-lock demo needs fcntl (POSIX)")
    with tempfile.TemporaryDirectory(prefix="chargebox-filelock-") as folder:
        rows = [_row(v, _run_variant(v, Path(folder), seconds), seconds) for v in VARIANTS]
    by_name = {row["variant"]: row for row in rows}
    return {
        "demo": NAME,
        "rows": rows,
        "lesson": _lesson(by_name),
        "effect_shown": _beats(by_name[VARIANTS[0]], by_name[VARIANTS[3]]),
        "criterion": " ".join(_beats.__doc__.split()),
        "processes": PROCESSES,
        "seconds_per_variant": seconds,
        "busy_timeout_ms": BUSY_TIMEOUT_MS,
        "machine": machine(),
    }
