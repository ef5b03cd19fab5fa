"""`python -m stress memory`: does a server's memory stay bounded under long load and audits?

One server as `run.py` starts it (one process, its default threads) on an SQLite file:
a fresh one, or a copy of `--db` (with its `ledger_key`) to start from a long history.
Debian's `wrk` sends keyed sales of `--sellers` sellers, round-robin, over
`--connections` keep-alive connections, in phases of `--phase` seconds, for
`--seconds` in all. Meanwhile one admin asks for `GET /api/audit` every
`--audit-every` seconds, and every `--full-every`th time for `?full=true`, one after
another; and the server's resident memory (VmRSS of it and any child) is read every
`--sample` seconds. Printed: a row per phase (RSS at its end and its highest,
sales/s, p99, the audits in it), then RSS idle, at the first phase's end and at the
end, and the books (each seller's balance = funding - its sales = its ledger sum,
every 201 a sale row, `/api/audit` and `chargebox audit` clean). Nothing is asserted
about the figures; the exit status is the books'.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from chargebox.config import DEFAULT_THREADS
from chargebox.process import ServerProcess
from stress import backends, report
from stress.bench import fund_sellers
from stress.client import Client

COLUMNS = ("phase", "minute", "rss_mb", "rss_peak_mb", "sales_s", "p99_ms", "non_201",
           "audits", "audit_ms_median", "full_audits", "full_audit_s_max")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Options:
    seconds: int = 3600
    phase: int = 60  # seconds of one wrk run
    connections: int = 32
    sellers: int = 8
    audit_every: float = 10.0
    full_every: int = 12
    sample: float = 5.0
    db: Path | None = None  # a history to start from (copied; the copy is removed after)
    quiet: bool = False

    def __post_init__(self) -> None:
        if min(self.seconds, self.phase, self.connections, self.sellers, self.full_every) < 1:
            raise ValueError("seconds, phase, connections, sellers and full-every: at least 1")
        if min(self.audit_every, self.sample) <= 0:
            raise ValueError("audit-every and sample: more than 0 seconds")
        if self.db is not None and not (self.db.is_file() and self.db.with_name("ledger_key")
                                        .is_file()):  # fmt: skip
            raise ValueError(f"--db {self.db}: needs the file and its ledger_key beside it")


def rss_mb(root: int) -> float:
    """The resident memory (MB) of `root` and its descendants, from /proc."""
    total_kb = 0
    for pid in backends.process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # ended between the two reads
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return round(total_kb / 1024, 1)


class Watcher:
    """In the background: the audits, one after another, and the RSS samples."""

    def __init__(self, url: str, token: str, pid: int, options: Options) -> None:
        self.url, self.token, self.pid, self.options = url, token, pid, options
        self.samples: list[tuple[float, float]] = []  # (time.monotonic(), MB)
        self.audits: list[dict] = []  # asked and answered when, full, seconds, consistent, status
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._audit, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]  # fmt: skip

    def __enter__(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _sample(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append((time.monotonic(), rss_mb(self.pid)))
                self._stop.wait(self.options.sample)
        except Exception as exc:  # recorded, so that the run cannot end as if all went well
            self.failures.append(f"the RSS sampler stopped: {type(exc).__name__}: {exc}")

    def _audit(self) -> None:
        admin = Client(self.url, self.token, timeout=3600)
        count = 0
        try:
            while not self._stop.wait(self.options.audit_every):
                count += 1
                full = count % self.options.full_every == 0
                started = time.monotonic()
                answer = admin.get("/api/audit?full=true" if full else "/api/audit")
                done = time.monotonic()
                self.audits.append({
                    "at": started, "done": done, "full": full, "status": answer.status,
                    "seconds": round(done - started, 3),
                    "consistent": answer.body.get("consistent") is True,
                })  # fmt: skip
        except Exception as exc:  # a lost connection, a timeout: the audits stopped
            self.failures.append(f"the audits stopped: {type(exc).__name__}: {exc}")
        finally:
            admin.close()

    def between(self, start: float, end: float) -> tuple[list[float], list[dict]]:
        """The RSS samples taken in [start, end), and the audits answered in it: a full
        audit that outlasts a phase is in the row of the phase it ended in."""
        return ([mb for at, mb in self.samples if start <= at < end],
                [audit for audit in self.audits if start <= audit["done"] < end])  # fmt: skip


def phase_row(number: int, wrk_row: dict, rss: float, sampled: list[float], audits: list[dict],
              minute: float) -> dict:  # fmt: skip
    """One phase: `rss` read at its end, `sampled` in it, and the audits answered in it."""
    quick = [a["seconds"] * 1000 for a in audits if not a["full"]]
    full = [a["seconds"] for a in audits if a["full"]]
    return {
        "phase": number,
        "minute": round(minute, 1),
        "rss_mb": rss,
        "rss_peak_mb": max([rss, *sampled]),
        "sales_s": wrk_row["sales_s"],
        "p99_ms": wrk_row["p99_ms"],
        "non_201": wrk_row["non_201"],
        "audits": len(audits),
        "audit_ms_median": round(statistics.median(quick), 1) if quick else None,
        "full_audits": len(full),
        "full_audit_s_max": round(max(full), 2) if full else None,
    }


def phases(options: Options) -> list[int]:
    """The wrk runs' lengths: --phase seconds each, the last one what is left."""
    whole, left = divmod(options.seconds, options.phase)
    return [options.phase] * whole + ([left] if left else [])


def run(options: Options) -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("memory needs wrk: apt-get install wrk")
    started, stamp = time.perf_counter(), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="chargebox-memory-") as scratch:
        db = Path(scratch) / "chargebox.db"
        if options.db is not None:
            _say(options, f"copying {options.db} ...")
            shutil.copyfile(options.db, db)
            shutil.copyfile(options.db.with_name("ledger_key"), db.with_name("ledger_key"))
        backend = backends.Backend("sqlite", db, None)
        server = ServerProcess(db, token, os.environ, DEFAULT_THREADS).start()
        admin = None
        try:
            idle = rss_mb(server.proc.pid)
            admin = Client(server.url, token)
            ids, keys = fund_sellers(admin, options.sellers)
            wrk_options = backends.Options(connections=options.connections, quiet=True,
                                           backends=("sqlite",))  # fmt: skip
            rows, wrk_rows = [], []
            began = mark = time.monotonic()
            with Watcher(server.url, token, server.proc.pid, options) as watcher:
                for seconds in phases(options):
                    wrk_rows.append(backends.phase(
                        backend, [server], keys, "load",
                        dataclasses.replace(wrk_options, seconds=seconds), token,
                    ))  # fmt: skip
                    ended = time.monotonic()
                    sampled, audits = watcher.between(mark, ended)  # phases end to end
                    mark = ended
                    minute = (ended - began) / 60
                    rss = rss_mb(server.proc.pid)
                    rows.append(phase_row(len(rows) + 1, wrk_rows[-1], rss, sampled, audits,
                                          minute))  # fmt: skip
                    _say(options, report.table(rows[-1:], COLUMNS).splitlines()[-1])
            end = rss_mb(server.proc.pid)
            problems = backends.books(backend, admin, ids, wrk_rows) + watcher.failures
            problems += [
                f"an audit answered {audit['status']}, consistent: {audit['consistent']}"
                for audit in watcher.audits
                if audit["status"] != 200 or not audit["consistent"]
            ]
            problems += [
                f"phase {row['phase']}: {row['non_201']} sales not answered 201 (the load changed)"
                for row in rows
                if row["non_201"]
            ]
        finally:
            if admin is not None:
                admin.close()
            stopped = server.stop()
    if stopped != 0:
        raise RuntimeError(f"the server did not stop cleanly: exit status {stopped}")
    samples = [mb for _, mb in watcher.samples] + [row["rss_mb"] for row in rows] + [end]
    return {
        "command": "memory",
        "started": stamp,
        "machine": report.machine(),
        "options": {**dataclasses.asdict(options), "db": str(options.db) if options.db else None},
        "rows": rows,
        "rss_mb": {
            "idle": idle,
            "first_phase": rows[0]["rss_mb"],
            "end": end,
            "peak": max(samples),
        },
        "sales": sum(row["ok_201"] for row in wrk_rows),
        "audits": len(watcher.audits),
        "full_audits": sum(1 for a in watcher.audits if a["full"]),
        "books": {"ok": not problems, "problems": problems},
        "ok": not problems,
        "seconds": round(time.perf_counter() - started, 1),
    }


def render(result: dict) -> str:
    options, rss = result["options"], result["rss_mb"]
    start = f"a copy of {options['db']}" if options["db"] else "a fresh file"
    lines = [
        f"== one server ({DEFAULT_THREADS} threads) on {start}: wrk, {options['connections']}"
        f" connections, keyed sales of {options['sellers']} sellers, {options['seconds']} s;"
        f" an audit every {options['audit_every']} s, 1 in {options['full_every']} of them full ==",
        report.table(result["rows"], COLUMNS),
        f"RSS: {rss['idle']} MB idle, {rss['first_phase']} after the first phase,"
        f" {rss['end']} at the end, {rss['peak']} at most; {result['sales']:,} sales,"
        f" {result['audits']} audits ({result['full_audits']} full)",
    ]
    lines += [f"DISCREPANCY: {problem}" for problem in result["books"]["problems"]]
    lines.append("books reconcile" if result["ok"] else "THE BOOKS DO NOT RECONCILE")
    return "\n".join(lines)


def _say(options: Options, text: str) -> None:
    if not options.quiet:
        print(text, flush=True)
