"""Demo `io`: I/O-bound work; threads scale while they wait (waiting drops the GIL), no further.

Lives here: HTTP calls to a real chargebox server (1 thread, N threads, N processes)
and to a simulated slow upstream — the operator's top-up API a real chargebox would
call — served in-process with a fixed 20 ms delay. Nothing here reaches into
chargebox itself; every loop is bounded by a request count and a time cap. What it
checks is the mechanism, which a busy box does not undo: the upstream sees many
threads' calls waiting at once, and against chargebox the threads keep several
requests in flight whose server CPU each does not shrink. The speed-ups are the
printed figures; when a busy box flattens them, the run says so in a warning.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chargebox.process import ServerProcess
from stress.client import Client
from stress.demos.gil import Measurement, run_in_processes, run_in_threads
from stress.report import latency_summary, machine

NAME = "io"
SUMMARY = "I/O-bound work: threads scale while they wait; against chargebox, until the CPU is full"

UPSTREAM_DELAY = 0.020
UPSTREAM_THREADS = (1, 4, 16, 64)
CHARGEBOX_WORKERS = 8
CHARGEBOX_REQUESTS = {True: 600, False: 6_000}  # total per variant, split among workers
CHARGEBOX_REPEATS = {True: 3, False: 3}  # best of, interleaved: the box is shared and noisy
UPSTREAM_PER_THREAD = {True: 15, False: 100}  # per thread: 1 thread at 20 ms must stay short
TIME_CAP = {True: 8.0, False: 25.0}  # per worker, a backstop: counts end the loops
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The mechanism: threads' calls wait on the upstream at once (at least this many of
# them, or all if fewer), and 8 threads keep at least this many requests in flight at
# chargebox (Little's law: the sum of their latencies over the wall time), each costing
# its server at least this share of the CPU one client's request costs.
OVERLAPPING, IN_FLIGHT, SAME_CPU = 4, 2.0, 0.5
# The printed figures an idle box shows; a miss is a warning that the box was busy:
# 16 threads on the upstream do 8x one thread; against chargebox threads either scale
# (1.3x) or hit the server's ceiling (one GIL-bound process, about one core).
UPSTREAM_SCALED = 8
CHARGEBOX_SCALED, SERVER_SATURATED = 1.3, 0.85
BUSY = "; other work on the box took the CPU, so run it again on an idle machine for them."


@dataclasses.dataclass
class Batch:
    latencies: list[float]
    errors: int
    seconds: float  # wall time from the "go" to the last worker finishing
    cpu_s: float  # CPU time of the calling workers themselves


def hammer(url: str, token: str | None, path: str, count: int, cap: float) -> tuple:
    """GET `path` `count` times on one keep-alive connection; (latencies, errors)."""
    client = Client(url, token, timeout=10)
    latencies, errors = [], 0
    deadline = time.monotonic() + cap
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            try:
                ok = client.get(path).status == 200
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
    finally:
        client.close()
    return latencies, errors


def _batch(m: Measurement) -> Batch:
    latencies = [s for lats, _ in m.values for s in lats]
    return Batch(latencies, sum(errors for _, errors in m.values), m.seconds, m.cpu_s)


def calls(
    runner: Callable, url: str, token: str | None, path: str, counts: list[int], cap: float
) -> Batch:
    """One `hammer` per entry of `counts`, in threads or processes (`runner`)."""
    return _batch(runner(hammer, [(url, token, path, count, cap) for count in counts]))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _cpu_of(pid: int) -> float | None:
    """User+system CPU seconds of another process, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _row(target: str, variant: str, workers: int, batch: Batch, baseline: float | None) -> dict:
    rate = len(batch.latencies) / batch.seconds
    summary = latency_summary(batch.latencies)
    return {
        "target": target,
        "variant": variant,
        "workers": workers,
        "requests": len(batch.latencies),
        "errors": batch.errors,
        "seconds": round(batch.seconds, 3),
        "req_s": round(rate, 1),
        "speedup": round(rate / (baseline or rate), 2),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "client_cores": round(batch.cpu_s / batch.seconds, 2),
        # Little's law: how many requests were in flight, on average, over the batch.
        "in_flight": round(sum(batch.latencies) / batch.seconds, 2),
    }


def _served(server: ServerProcess, runner: Callable, key: str, counts: list[int], cap: float):
    """One batch against the server, with the server's own CPU seconds over the same span."""
    before = _cpu_of(server.proc.pid)
    batch = calls(runner, server.url, key, "/api/me", counts, cap)
    after = _cpu_of(server.proc.pid)
    return batch, None if before is None or after is None else after - before


def chargebox_rows(quick: bool) -> list[dict]:
    """GET /api/me on a real server: 1 thread, N threads, N processes, same total requests."""
    total, cap = CHARGEBOX_REQUESTS[quick], TIME_CAP[quick]
    plan = {
        "thread": (run_in_threads, 1),
        "threads": (run_in_threads, CHARGEBOX_WORKERS),
        "processes": (run_in_processes, CHARGEBOX_WORKERS),
    }
    best: dict[str, tuple] = {}
    admin_token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="chargebox-io-demo-") as tmp:
        server = ServerProcess(Path(tmp) / "chargebox.db", admin_token, os.environ)
        try:
            server.start()
            admin = Client(server.url, admin_token)
            key = admin.post("/api/sellers", {"name": "io demo"}).body["api_key"]
            admin.close()
            # Warm-up, untimed: every server thread opens its database connection once.
            calls(run_in_threads, server.url, key, "/api/me", [20] * CHARGEBOX_WORKERS, cap)
            # Round-robin, keeping each variant's fastest batch: load from elsewhere on
            # the box then costs one batch of every variant, not all batches of one.
            for _ in range(CHARGEBOX_REPEATS[quick]):
                for variant, (runner, workers) in plan.items():
                    batch, server_cpu = _served(server, runner, key, _split(total, workers), cap)
                    if variant not in best or batch.seconds < best[variant][0].seconds:
                        best[variant] = (batch, server_cpu)
        finally:
            server.stop()
    target, rows, baseline = "chargebox GET /api/me", [], None
    for variant, (batch, server_cpu) in best.items():
        row = _row(target, variant, plan[variant][1], batch, baseline)
        known = server_cpu is not None and batch.latencies
        row["server_cores"] = round(server_cpu / batch.seconds, 2) if known else None
        row["server_cpu_ms_per_request"] = (
            round(1000 * server_cpu / len(batch.latencies), 3) if known else None
        )
        rows.append(row)
        baseline = baseline or row["req_s"]
    return rows


class _SlowUpstream(BaseHTTPRequestHandler):
    """Answers every GET after UPSTREAM_DELAY, like an operator's API under load."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real client would use
    server: _UpstreamServer
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms) and the upstream would look 3x slower than it is.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        with self.server.waiting():
            # The GIL is released while sleeping, as it is while waiting on a socket.
            time.sleep(UPSTREAM_DELAY)
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one stderr line per request would bury the table


class _UpstreamServer(ThreadingHTTPServer):
    """Counts the calls waiting at once: the most since `peak` was last reset."""

    request_queue_size = 128  # the default backlog of 5 drops SYNs when 64 clients connect at once

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._lock = threading.Lock()
        self.in_flight = self.peak = 0

    @contextmanager
    def waiting(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


@contextmanager
def slow_upstream() -> Iterator[_UpstreamServer]:
    """A threaded HTTP server on a free 127.0.0.1 port in a background thread."""
    server = _UpstreamServer(("127.0.0.1", 0), _SlowUpstream)
    thread = threading.Thread(target=server.serve_forever, name="slow-upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def upstream_rows(quick: bool) -> list[dict]:
    """1, 4, 16, 64 threads calling the slow upstream, each making the same number of calls."""
    target = f"slow upstream ({UPSTREAM_DELAY * 1000:.0f} ms)"
    rows, baseline = [], None
    with slow_upstream() as upstream:
        url = f"http://127.0.0.1:{upstream.server_address[1]}"
        for workers in UPSTREAM_THREADS:
            counts = [UPSTREAM_PER_THREAD[quick]] * workers
            upstream.peak = 0
            batch = calls(run_in_threads, url, None, "/topup", counts, TIME_CAP[quick])
            row = _row(target, "threads", workers, batch, baseline)
            row["waiting_at_once"] = upstream.peak  # the most calls the upstream held at once
            baseline = baseline or row["req_s"]
            rows.append(row)
    return rows


def judge(up: dict[int, dict], cb: dict[str, dict]) -> tuple[bool, str | None]:
    """(the mechanism showed, a warning when a busy box flattened the printed speed-ups).

    The mechanism holds on a busy box: every call waited its 20 ms; threads' calls waited
    on the upstream at once (so waiting released the GIL); 8 threads kept requests in
    flight at chargebox, and each still cost its server the CPU one client's did.
    """
    one, threads = cb["thread"], cb["threads"]
    overlapped = all(
        row["waiting_at_once"] >= min(workers, OVERLAPPING) for workers, row in up.items()
    )
    cost, one_cost = threads["server_cpu_ms_per_request"], one["server_cpu_ms_per_request"]
    same_cost = cost is None or one_cost is None or cost >= SAME_CPU * one_cost
    shown = (
        overlapped
        and up[1]["p50_ms"] >= UPSTREAM_DELAY * 1000
        and threads["in_flight"] >= IN_FLIGHT
        and same_cost
        and not any(row["errors"] for row in [*up.values(), *cb.values()])
    )
    saturated = (threads["server_cores"] or 0) >= SERVER_SATURATED
    if up[16]["speedup"] >= UPSTREAM_SCALED and (
        threads["speedup"] >= CHARGEBOX_SCALED or saturated
    ):
        return shown, None
    return shown, (
        f"Warning: 16 threads got {up[16]['speedup']:.1f}x from the upstream (an idle box: "
        f"{UPSTREAM_SCALED}x or more) and {CHARGEBOX_WORKERS} threads {threads['speedup']:.2f}x "
        f"from chargebox, whose server used {threads['server_cores'] or 0:.2f} cores{BUSY}"
    )


def _lesson(up: dict[int, dict], cb: dict[str, dict], shown: bool) -> str:
    one, threads, procs, cpus = cb["thread"], cb["threads"], cb["processes"], os.cpu_count()
    numbers = (
        f"16 threads got {up[16]['speedup']:.1f}x one thread's throughput from a "
        f"{UPSTREAM_DELAY * 1000:.0f} ms upstream (64 threads: {up[64]['speedup']:.1f}x), "
        f"but against chargebox on the same {cpus} cores {CHARGEBOX_WORKERS} threads got "
        f"{threads['speedup']:.2f}x and {CHARGEBOX_WORKERS} processes {procs['speedup']:.2f}x"
    )
    if not shown:
        return (
            f"This run did not show the effect ({numbers}): threads' calls should wait on the "
            f"upstream at once, and keep requests in flight at chargebox."
        )
    server = (
        f"the server, one GIL-bound process, used {one['server_cores']:.2f} of its ~1 core for "
        f"one client and {threads['server_cores']:.2f} for {CHARGEBOX_WORKERS}"
        if one["server_cores"] is not None and threads["server_cores"] is not None
        else "the server, one GIL-bound process, ran out of CPU"
    )
    crowded = (
        ", and client processes, not held to one core by a GIL, only took CPU from it"
        if procs["speedup"] < threads["speedup"]
        else ""
    )
    return (
        f"{numbers}: a thread waiting for a reply releases the GIL, so threads overlap "
        f"waiting almost perfectly, but chargebox's replies are CPU work on the same box and "
        f"{server}, leaving little waiting to overlap{crowded}."
    )


def run(quick: bool = False) -> dict:
    upstream = upstream_rows(quick)
    charge = chargebox_rows(quick)
    up = {row["workers"]: row for row in upstream}
    cb = {row["variant"]: row for row in charge}
    shown, warning = judge(up, cb)
    return {
        "demo": NAME,
        "rows": charge + upstream,
        "lesson": _lesson(up, cb, shown),
        "effect_shown": shown,
        "warning": warning,
        "thresholds": {
            "upstream_waiting_at_once_at_least": OVERLAPPING,
            "chargebox_in_flight_at_least": IN_FLIGHT,
            "chargebox_server_cpu_per_request_share_at_least": SAME_CPU,
            "figures_upstream_16_threads": UPSTREAM_SCALED,
            "figures_chargebox_threads": CHARGEBOX_SCALED,
            "figures_or_chargebox_server_cores": SERVER_SATURATED,
        },
        "timing": "seconds start once every worker is started and waiting; start-up is untimed",
        "machine": machine(),
    }
