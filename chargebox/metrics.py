"""Prometheus metrics (prometheus-client): what is counted, how processes share it, the scrape.

Off until `start()` (the server calls it; the CLI's other commands never do), and
then cheap: a request costs a dict lookup and two increments. With `--processes K`
the children keep their values in files of one directory (prometheus-client's
multiprocess mode; `metric_files`), so a scrape answered by any child sums them all.
Labels are route patterns, methods and statuses only: never a raw path, an id or a token.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import re
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from chargebox import metric_files
from chargebox.config import share_metrics_through
from chargebox.errors import raised_at

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOCK_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"  # no route: a 404, a 405, or refused before routing
_PARAMETER = re.compile(r"<(\w+)(?::[^>]*)?>")
_log = logging.getLogger("chargebox.metrics")
_FAILED: set[str] = set()  # the counts that failed in this process, each logged once
_GRID = float(1 << 20)  # observed seconds are multiples of 1 / _GRID (_exact)


class _Instruments:
    """The metrics of this process (registered nowhere: the scrape collects them)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "chargebox_http_requests",
            "Requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=None,
        )
        self.latency = Histogram(
            "chargebox_http_request_duration_seconds",
            "Time from a worker taking a request to its answer, by route pattern and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.unavailable = Counter(
            "chargebox_http_unavailable",
            "503 answers (unavailable: docs/api.md, Errors), by route pattern",
            ["route"],
            registry=None,
        )
        self.batch = Histogram(
            "chargebox_write_batch_size",
            "Writes in one write transaction (group commit; a refused write, undone by its "
            "savepoint, counts too)",
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.lock_wait = Histogram(
            "chargebox_write_lock_wait_seconds",
            "Time a write transaction waited to begin: the write gate and BEGIN IMMEDIATE on "
            "SQLite (the whole database's write lock); a connection and BEGIN on PostgreSQL",
            buckets=LOCK_WAIT_BUCKETS,
            registry=None,
        )
        self.runs = Counter(
            "chargebox_write_runs",
            "Runs of one seller's queued sales in a committed write transaction, "
            "by how they were written: together (one statement) or separately (one at a time, "
            "after the run could not go as one)",
            ["written"],
            registry=None,
        )
        self.redone = Counter(
            "chargebox_write_batches_redone",
            "Write transactions whose leading runs (one seller's sales each) could not go as "
            "one statement: rolled back, then applied again run by run",
            registry=None,
        )
        self.lost = Counter(
            "chargebox_lost_commits",
            "PostgreSQL: write transactions whose COMMIT's answer was lost with the connection, "
            "by what they were then found to have done: committed, aborted, or unknown",
            ["outcome"],
            registry=None,
        )
        self.all = (self.requests, self.latency, self.unavailable, self.batch, self.lock_wait,
                    self.runs, self.redone, self.lost)  # fmt: skip
        self.children: dict[tuple, tuple] = {}  # (route, method, status) -> its metrics
        self.lock = threading.Lock()


_on: _Instruments | None = None
_directory: Path | None = None


def start(directory: Path | None = None) -> None:
    """Count from now on, in this process and the processes it forks.

    `directory`: where forked processes share their values (empty, made by the caller,
    who removes it at the end); None keeps them in this process's memory.
    """
    global _on, _directory
    if directory is not None:
        share_metrics_through(directory)  # prometheus-client names each process's file by it
        values.ValueClass = values.MultiProcessValue()
    else:
        values.ValueClass = values.MutexValue
    _directory = directory
    _on = _Instruments()


def stop() -> None:
    """Count no more (for tests that start metrics in their own process)."""
    global _on, _directory
    _on, _directory = None, None


def process_ended(pid: int) -> None:
    """A forked server died: its counts are kept in the sums (`metric_files.ended`)."""
    if _directory is not None:
        metric_files.ended(_directory, pid)


def _exact(seconds: float) -> float:
    """`seconds` to the nearest 2^-20 s (~1 us): every sum of such values is exact below
    2^33 s, so the scrape's sum over the processes' files is the same in any order and
    however they were folded (a float sum that went back would read as a counter reset)."""
    return round(seconds * _GRID) / _GRID


_ROUTES: dict[str, str] = {}


def route_label(environ: dict) -> str:
    """The route's pattern (`/api/sellers/{ident}`), never the path it matched."""
    route = environ.get("bottle.route")
    if route is None:
        return UNMATCHED
    rule = route.rule
    label = _ROUTES.get(rule)
    if label is None:
        label = _ROUTES.setdefault(rule, _PARAMETER.sub(r"{\1}", rule))
    return label


def observe(environ: dict, method: str, status: int, seconds: float) -> None:
    """One answered request (access_log.AccessLog calls this)."""
    on = _on
    if on is None:
        return
    key = (route_label(environ), method if method in METHODS else "other", status)
    found = on.children.get(key)
    if found is None:
        with on.lock:
            found = on.children.setdefault(key, _children(on, *key))
    found[0].inc()
    found[1].observe(_exact(seconds))
    if found[2] is not None:
        found[2].inc()


def _children(on: _Instruments, route: str, method: str, status: int) -> tuple:
    unavailable = on.unavailable.labels(route) if status == 503 else None
    return (
        on.requests.labels(route, method, str(status)),
        on.latency.labels(route, method),
        unavailable,
    )


def _quiet(count):
    """`count` as a write's path calls it: a count that fails (a bug, prometheus's files on a
    full disk) is logged once a process, never raised into a write or its answer."""

    @functools.wraps(count)
    def counted(*args) -> None:
        try:
            count(*args)
        except Exception as exc:
            if count.__name__ not in _FAILED:
                _FAILED.add(count.__name__)
                _log.error("%s was not counted: %s (at %s)", count.__name__,
                           type(exc).__name__, raised_at(exc))  # fmt: skip

    return counted


@_quiet
def write_committed(writes: int) -> None:
    """A write transaction committed, with `writes` writes in it."""
    if _on is not None:
        _on.batch.observe(writes)


@_quiet
def run_written(together: bool) -> None:
    """A run of one seller's queued sales was written together, or each separately."""
    if _on is not None:
        _on.runs.labels("together" if together else "separately").inc()


@_quiet
def batch_redone() -> None:
    """A batch's leading runs could not go as one statement: it was rolled back, and goes
    again run by run."""
    if _on is not None:
        _on.redone.inc()


def commit_lost(outcome: str) -> None:
    """A COMMIT's answer was lost; its transaction was then found `outcome` (committed,
    aborted, or unknown: answered 503 all the same)."""
    if _on is not None:
        _on.lost.labels(outcome).inc()


@_quiet
def lock_waited(seconds: float) -> None:
    """A write transaction waited this long to begin (or to give up)."""
    if _on is not None:
        _on.lock_wait.observe(_exact(seconds))


def one_write(transaction, work, deadline: float):
    """`work(write)` in a transaction of its own (no group commit), on either backend: its
    wait for the write lock and its one write counted as a group commit's are."""
    began = time.perf_counter()
    with transaction(deadline) as write:
        lock_waited(time.perf_counter() - began)
        result = work(write)
    write_committed(1)  # quiet: a count that fails does not fail a committed write
    return result


class _Measured:
    """What is measured at scrape time by the process that answers: the database's size
    on disk, and how many of its schema's guards are dropped or changed."""

    def __init__(self, sizes: dict[str, int], guards_missing: int | None) -> None:
        self.sizes, self.guards_missing = sizes, guards_missing

    def collect(self):
        described = {
            "database": "The database's size in bytes (SQLite: the file; PostgreSQL: "
            "pg_database_size)",
            "wal": "SQLite's write-ahead log file (-wal) in bytes: it grows while a long "
            "read holds its snapshot, and is cut back to 64 MiB as it restarts",
        }
        for name, size in self.sizes.items():
            gauge = GaugeMetricFamily(f"chargebox_{name}_bytes", described[name])
            gauge.add_metric([], size)
            yield gauge
        if self.guards_missing is not None:
            gauge = GaugeMetricFamily(
                "chargebox_schema_guards_missing",
                "The schema's guards (triggers; PostgreSQL: also their functions; the "
                "constraints, unique indexes and columns of its tables) dropped or changed, "
                "and triggers (PostgreSQL: also rules, child tables) added beside them (I5): "
                "the servers run on; the next start refuses",
            )
            gauge.add_metric([], self.guards_missing)
            yield gauge


def exposition(sizes: dict[str, int], accept: str | None = None,
               guards_missing: int | None = None) -> tuple[bytes, str]:  # fmt: skip
    """Every metric (all processes' sums) and its content type: Prometheus's text format
    0.0.4, or the one the scraper's `accept` asks for (OpenMetrics, text 1.0.0)."""
    registry = CollectorRegistry()
    if _directory is not None:
        metric_files.Summed(registry, path=str(_directory))
    elif _on is not None:
        for metric in _on.all:
            registry.register(metric)
    registry.register(_Measured(sizes, guards_missing))
    encode, content_type = choose_encoder(accept or "")
    if _directory is None:
        return encode(registry), content_type
    with metric_files.held(_directory, fcntl.LOCK_SH):  # none folded away as it reads
        return encode(registry), content_type
