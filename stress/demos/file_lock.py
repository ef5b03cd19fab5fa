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


def _sale(conn: sqlite3.Connection, gated: float) -> float:
    """One short write; returns how long BEGIN IMMEDIATE waited inside SQLite (seconds)."""
    conn.execute("BEGIN IMMEDIATE")
    waited = time.perf_counter() - gated
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
    waits: list[float] = []  # per write: from wanting the lock to holding SQLite's
    in_sqlite = 0.0  # the part of those waits spent inside BEGIN IMMEDIATE
    ops = locked = other = 0
    barrier.wait(timeout=60)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = gated = time.perf_counter()
        try:
            with gate():
                gated = time.perf_counter()
                waited = _sale(conn, gated)
                waits.append(gated - began + waited)
                in_sqlite += waited
            ops += 1
        except sqlite3.OperationalError as exc:
            waits.append(time.perf_counter() - began)  # a failed wait still kept a buyer waiting
            in_sqlite += time.perf_counter() - gated
            locked += "locked" in str(exc)
            other += "locked" not in str(exc)
    results.put(
        {"ops": ops, "locked": locked, "other": other, "waits": waits, "in_sqlite": in_sqlite}
    )
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
    waited = sum(sum(report["waits"]) for report in reports)
    in_sqlite = sum(report["in_sqlite"] for report in reports)
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
        # Where writers spent their waiting: in SQLite's busy handler, or queued at the gate.
        "waited_in_sqlite_pct": round(100 * in_sqlite / waited, 1) if waited else 0.0,
    }


def _shown(busy: dict, flock: dict) -> bool:
    """The mechanism, which a busy box does not change: queued by the flock, writers waited
    in the kernel (under 10% of their waiting inside SQLite) and no error escaped; with the
    busy timeout alone they waited in SQLite's busy handler, which sleeps and retries, so
    whoever retried first took the lock: one writer did at least twice another's writes
    (or a 'database is locked' escaped). The waits in ms are the figures, not the test."""
    queued = flock["waited_in_sqlite_pct"] < 10 and flock["locked_errors"] == 0
    barged = busy["worker_ops_max"] >= 2 * busy["worker_ops_min"] or busy["locked_errors"] > 0
    return queued and flock["other_errors"] == 0 and barged


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
        "effect_shown": _shown(by_name[VARIANTS[0]], by_name[VARIANTS[3]]),
        "criterion": " ".join(_shown.__doc__.split()),
        "processes": PROCESSES,
        "seconds_per_variant": seconds,
        "busy_timeout_ms": BUSY_TIMEOUT_MS,
        "machine": machine(),
    }
