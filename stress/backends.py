"""`python -m stress backends`: SQLite against PostgreSQL in one run, driven by `wrk`.

For each backend: two app servers (`serve --processes P`) on one database (an
SQLite file, or a throwaway PostgreSQL cluster started here, stress/pg_cluster.py),
and two `wrk` processes, one per server, together holding C keep-alive
connections that POST keyed sales (wrk_sales.lua): a warm-up, one hot seller,
then one sale per seller round-robin over S sellers. First, the SQLite default
as `run.py` starts it (`sqlite-default`: one server, its default options) under
the same two `wrk` processes, both at it. Printed: sales/s, p50/p99, non-201
answers, PostgreSQL's sales over each SQLite's, the CPU each party used, and on
PostgreSQL what its sessions waited for and how many sales a transaction held.
After each backend the books are checked; no speed is asserted anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from chargebox.config import DEFAULT_THREADS
from chargebox.process import ServerProcess, cli_audit
from stress import report
from stress.bench import AMOUNT, FUNDING, fund_sellers
from stress.client import Client

SCRIPT = Path(__file__).with_name("wrk_sales.lua")
# The SQLite default (one server as run.py starts it), two SQLite servers on one file,
# two PostgreSQL servers on one cluster.
BACKENDS = ("sqlite-default", "sqlite", "postgresql")
PHASES = ("warm-up", "hot", "many")
COLUMNS = ("backend", "phase", "sales_s", "p50_ms", "p99_ms", "requests", "non_201",
           "cpu_servers", "cpu_postgres", "cpu_wrk", "writes_per_tx")  # fmt: skip
TICKS = os.sysconf("SC_CLK_TCK")
WAIT_SAMPLE = 0.02  # seconds between two looks at pg_stat_activity


@dataclasses.dataclass(frozen=True)
class Options:
    connections: int = 64
    sellers: int = 64
    seconds: int = 10  # wrk takes whole seconds
    warmup: int = 2
    processes: int = 1  # per app server
    threads: int = 48  # per server process: at least the connections it may get
    backends: tuple[str, ...] = BACKENDS
    quiet: bool = False

    def servers(self, backend: str) -> tuple[int, int, dict[str, str]]:
        """How many app servers `backend` gets, their threads, and their environment:
        the SQLite default runs one with its default options."""
        if backend == "sqlite-default":
            return 1, DEFAULT_THREADS, {}
        return 2, self.threads, {"CHARGEBOX_PROCESSES": str(self.processes)}

    def __post_init__(self) -> None:
        if self.connections < 2 or self.sellers < 1 or min(self.processes, self.threads) < 1:
            raise ValueError("at least 2 connections, 1 seller, 1 process and 1 thread")
        if self.seconds < 1 or self.warmup < 1:
            raise ValueError("phases last at least 1 s (wrk takes whole seconds)")
        if not self.backends or not set(self.backends) <= set(BACKENDS):
            raise ValueError(f"backends are {', '.join(BACKENDS)}")
        if shutil.which("wrk") is None:
            raise ValueError("wrk is not installed: apt-get install wrk")


def _say(options: Options, text: str) -> None:
    if not options.quiet:
        print(f"  {text}", flush=True)


# --- the databases and their servers -----------------------------------------------------


@dataclasses.dataclass
class Backend:
    name: str
    db: Path | str  # what --db gets
    data_dir: Path | None
    superuser: str | None = None  # PostgreSQL: to watch it and read the books
    app_role: str | None = None
    postmaster: int | None = None


@contextlib.contextmanager
def database(name: str, scratch: Path, options: Options) -> Iterator[Backend]:
    """An empty database of `name`: an SQLite file, or a fresh PostgreSQL cluster."""
    if name.startswith("sqlite"):
        yield Backend(name, scratch / "chargebox.db", None)
        return
    from stress import pg_cluster

    slots = 2 * options.processes * (options.threads + 2) + 20
    with pg_cluster.running(max_connections=slots) as cluster:
        data = scratch / "pg-data"
        made = pg_cluster.initialised(cluster, "bench", data)
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        db_name = made.app_url.rsplit("/", 1)[1]
        yield Backend(name, made.app_url, data, cluster.url(db=db_name), made.app_role, pid)


@contextlib.contextmanager
def app_servers(backend: Backend, token: str, options: Options) -> Iterator[list[ServerProcess]]:
    count, threads, env = options.servers(backend.name)
    started: list[ServerProcess] = []
    try:
        for _ in range(count):
            server = ServerProcess(backend.db, token, os.environ, threads, env=env,
                                   data_dir=backend.data_dir)  # fmt: skip
            started.append(server.start())
        yield started
    finally:
        codes = [server.stop() for server in started]
        if any(codes):
            raise RuntimeError(f"an app server did not stop cleanly: exit statuses {codes}")


# --- CPU, waits and transactions -----------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (forked server processes, postgres backends)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(parents.get(pid, []))
    return found


def _cpu_seconds(roots: list[int]) -> float:
    total = 0
    for root in roots:
        for pid in process_tree(root):
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


class WaitSampler:
    """What the app's PostgreSQL sessions are doing, looked at every WAIT_SAMPLE s."""

    def __init__(self, backend: Backend) -> None:
        self.backend, self.seen, self.looks = backend, Counter(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import psycopg

        query = (
            "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'on CPU'), count(*)"
            " FROM pg_stat_activity WHERE usename = %s AND state <> 'idle' GROUP BY 1, 2"
        )
        with psycopg.connect(self.backend.superuser, autocommit=True) as conn:
            while not self._stop.wait(WAIT_SAMPLE):
                for state, event, count in conn.execute(query, (self.backend.app_role,)):
                    self.seen[f"{state}, {event}"] += count
                self.looks += 1

    def summary(self) -> dict[str, float]:
        """Sessions in each state on average, busiest first."""
        looks = max(1, self.looks)
        return {key: round(n / looks, 2) for key, n in self.seen.most_common(8)}


def _writes_and_batches(servers, token: str) -> tuple[float, float]:
    """Writes committed and the write transactions that held them, over every server, from
    their /metrics (`chargebox_write_batch_size`: its sum and count)."""
    writes = batches = 0.0
    for server in servers:
        request = urllib.request.Request(f"{server.url}/metrics",
                                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read().decode()
        found = dict(re.findall(r"^chargebox_write_batch_size_(sum|count) (\S+)$", text, re.M))
        writes += float(found.get("sum", 0))
        batches += float(found.get("count", 0))
    return writes, batches


# --- wrk ----------------------------------------------------------------------------------


def run_wrk(urls: list[str], tokens: list[str], tag: str, seconds: float, options: Options):
    """Two wrk processes at once, one per server, C/2 connections each; their JSON lines."""
    share = options.connections // len(urls)
    procs = []
    for n, url in enumerate(urls):
        args = [",".join(tokens), f"{tag}-{n}", str(AMOUNT), str(n * 3_000_017)]
        command = ["wrk", "-t", "1", "-c", str(share), "-d", f"{seconds}s", "--timeout", "30s",
                   "-s", str(SCRIPT), url, "--", *args]  # fmt: skip
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    return procs


def wrk_results(procs: list[subprocess.Popen], seconds: float) -> list[dict]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 60)
        lines = [line for line in out.splitlines() if line.startswith("wrk-json ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {(out + err).strip()[-800:]}")
        results.append(json.loads(lines[-1].removeprefix("wrk-json ")))
    return results


def merged_latency(results: list[dict], fraction: float) -> float:
    """The latency (ms) at `fraction` of all requests of both wrk processes: each one's
    1,000 quantiles stand for its requests in equal shares."""
    weighted = sorted(
        (cut, result["requests"] / 1000) for result in results for cut in result["latency_us"]
    )
    total, running = sum(weight for _, weight in weighted), 0.0
    for cut, weight in weighted:
        running += weight
        if running >= fraction * total:
            return round(cut / 1000, 2)
    return round(weighted[-1][0] / 1000, 2) if weighted else 0.0


def phase(backend: Backend, servers, tokens: list[str], name: str, options: Options,
          admin_token: str) -> dict:  # fmt: skip
    seconds = options.warmup if name == "warm-up" else options.seconds
    roots = {
        "servers": [server.proc.pid for server in servers],
        "postgres": [backend.postmaster] if backend.postmaster else [],
    }
    before = _writes_and_batches(servers, admin_token)
    cpu = {group: _cpu_seconds(pids) for group, pids in roots.items()}
    started = time.monotonic()
    waits = WaitSampler(backend) if backend.superuser and name != "warm-up" else None
    # two wrk processes whatever the servers: one server (the SQLite default) gets both
    urls = [server.url for server in servers] * (2 if backend.name == "sqlite-default" else 1)
    with waits or contextlib.nullcontext():
        procs = run_wrk(urls, tokens, f"{name}-{secrets.token_hex(4)}", seconds, options)
        wrk_cpu = _wrk_cpu(procs, seconds)
        results = wrk_results(procs, seconds)
    wall = time.monotonic() - started
    used = {group: _cpu_seconds(pids) - cpu[group] for group, pids in roots.items()}
    used["wrk"] = wrk_cpu
    statuses: Counter = Counter()
    for result in results:
        statuses.update({int(code): n for code, n in result["statuses"].items()})
    window = max(result["seconds"] for result in results)
    ok = statuses.get(201, 0)
    after = _writes_and_batches(servers, admin_token)
    writes, batches = (after[0] - before[0], after[1] - before[1])
    return {
        "backend": backend.name,
        "phase": name,
        "servers": len(servers),
        "sales_s": round(ok / window, 1),
        "p50_ms": merged_latency(results, 0.50),
        "p99_ms": merged_latency(results, 0.99),
        "requests": sum(result["requests"] for result in results),
        "ok_201": ok,
        "non_201": sum(n for code, n in statuses.items() if code != 201),
        "statuses": {str(code): n for code, n in sorted(statuses.items())},
        "socket_errors": _socket_errors(results),
        "sent": sum(result["sent"] for result in results),
        **{f"cpu_{group}": round(seconds_used / wall, 2) for group, seconds_used in used.items()},
        # Every write the servers committed in the phase (its sales, refused ones too) over
        # the write transactions that held them: group commit's batch size.
        "writes_per_tx": round(writes / batches, 1) if batches else None,
        "waits": waits.summary() if waits else {},
        "seconds": round(window, 2),
    }


def _wrk_cpu(procs: list[subprocess.Popen], seconds: float) -> float:
    """wrk's CPU seconds, read just before it exits (a reaped process has no /proc entry)."""
    time.sleep(max(0.0, seconds - 0.3))
    return _cpu_seconds([proc.pid for proc in procs])


def _socket_errors(results: list[dict]) -> dict:
    errors: Counter = Counter()
    for result in results:
        errors.update(result["errors"])
    return {kind: n for kind, n in errors.items() if n}


# --- the books, the run, the report ---------------------------------------------------------

_BOOKS = (
    "SELECT s.id, s.balance, COALESCE((SELECT CAST(SUM(amount) AS BIGINT) FROM ledger_entry"
    " WHERE seller_id = s.id), 0), (SELECT COUNT(*) FROM sale WHERE seller_id = s.id)"
    " FROM seller s ORDER BY s.id"
)


def _book_rows(backend: Backend) -> list[tuple]:
    if backend.superuser is None:
        conn = sqlite3.connect(f"file:{backend.db}?mode=ro", uri=True)
        try:
            return conn.execute(_BOOKS).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(backend.superuser) as conn:
        return conn.execute(_BOOKS).fetchall()


def books(backend: Backend, admin: Client, ids: list[int], rows: list[dict]) -> list[str]:
    """Each seller: balance = FUNDING - AMOUNT x its sale rows = its ledger sum; the sale
    rows are the 201s plus at most the sales still in flight when wrk stopped (sent but
    never answered: committed or not); /api/audit and `chargebox audit` clean."""
    problems = []
    found = {seller_id: rest for seller_id, *rest in _book_rows(backend)}
    sold = 0
    for seller_id in ids:
        balance, ledger_sum, sales = found.get(seller_id, (None, None, 0))
        sold += sales
        if not balance == ledger_sum == FUNDING - AMOUNT * sales:
            problems.append(
                f"{backend.name} seller {seller_id}: balance {balance}, ledger sum {ledger_sum},"
                f" {sales} sales of {AMOUNT} from {FUNDING}"
            )
    acked = sum(row["ok_201"] for row in rows)
    unanswered = sum(row["sent"] - row["requests"] for row in rows)
    if not acked <= sold <= acked + unanswered:
        problems.append(
            f"{backend.name}: {acked:,} sales answered 201 and {unanswered} unanswered,"
            f" but {sold:,} sale rows"
        )
    audit = admin.get("/api/audit").body
    if not audit.get("consistent"):
        problems.append(f"{backend.name}: /api/audit is not consistent: {audit.get('problems')}")
    checked = cli_audit(backend.db, backend.data_dir)
    if checked.returncode != 0:
        problems.append(f"{backend.name}: chargebox audit exited {checked.returncode}")
    return problems


def one_backend(name: str, options: Options) -> tuple[list[dict], list[str], str]:
    """Two servers on a fresh database of `name`, every phase, then its books."""
    token = secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="chargebox-backends-") as scratch,
        database(name, Path(scratch), options) as backend,
        app_servers(backend, token, options) as servers,
    ):
        admin = Client(servers[0].url, token)
        ids, keys = fund_sellers(admin, 1 + options.sellers)
        rows = []
        for phase_name in PHASES:
            tokens = keys[1:] if phase_name == "many" else keys[:1]
            rows.append(phase(backend, servers, tokens, phase_name, options, token))
            row = rows[-1]
            _say(options, f"{name} {phase_name}: {row['sales_s']:,.0f} sales/s, p99 "
                          f"{row['p99_ms']} ms, non-201 {row['non_201']}")  # fmt: skip
        problems = books(backend, admin, ids, rows)
        admin.close()
        return rows, problems, servers[0].announced


def run(options: Options) -> dict:
    started, stamp = time.perf_counter(), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    load_before = os.getloadavg()[0]
    rows, problems, announced = [], [], {}
    for name in options.backends:
        found, wrong, announced[name] = one_backend(name, options)
        rows += found
        problems += wrong
    return {
        "command": "backends",
        "started": stamp,
        "machine": report.machine() | {"load_1min": [load_before, os.getloadavg()[0]]},
        "options": dataclasses.asdict(options),
        "announced": announced,
        "rows": rows,
        "ratios": ratios(rows),
        "books": {"ok": not problems, "problems": problems},
        "ok": not problems,
        "seconds": round(time.perf_counter() - started, 1),
    }


# What PostgreSQL's two servers are compared with: the SQLite default (issue 12's
# target: "0.7x what the SQLite default sells"), and two SQLite servers on one file (the
# same deployment as PostgreSQL's, a stricter reading).
COMPARED = (("sqlite-default", "PostgreSQL / SQLite default"),
            ("sqlite", "PostgreSQL / SQLite, 2 servers each"))  # fmt: skip


def ratios(rows: list[dict]) -> list[dict]:
    """PostgreSQL's sales/s over each SQLite's, per phase, and the issue's targets."""
    by = {(row["backend"], row["phase"]): row for row in rows}
    found = []
    for lite_name, label in COMPARED:
        for name in ("hot", "many"):
            pg, lite = by.get(("postgresql", name)), by.get((lite_name, name))
            if pg and lite and lite["sales_s"] > 0:
                ratio = round(pg["sales_s"] / lite["sales_s"], 2)
                goal = ">= 0.7" if name == "hot" else ""
                found.append(measure(f"{name}: {label}, sales/s", ratio, goal))
    pg = by.get(("postgresql", "hot"))
    if pg:
        found.append(measure("hot: PostgreSQL p99 ms", pg["p99_ms"], "<= 100"))
    return found


def measure(name: str, value: float, goal: str) -> dict:
    met = value >= float(goal[3:]) if goal.startswith(">=") else value <= float(goal[3:] or 0)
    result = ("PASS" if met else "MISS") if goal else ""
    return {"measure": name, "value": value, "goal": goal, "result": result}


def render(result: dict) -> str:
    options, machine = result["options"], result["machine"]
    lines = [
        f"== {options['connections']} keep-alive connections from 2 wrk processes over 2 app"
        f" servers ({options['processes']} process(es) x {options['threads']} threads each;"
        f" sqlite-default: both at one server as run.py starts it, {DEFAULT_THREADS} threads),"
        f" {options['seconds']} s per phase ==",
        report.table(result["rows"], COLUMNS),
        "  hot: every sale for one seller; many: round-robin over"
        f" {options['sellers']} sellers; cpu_*: cores used on average; writes_per_tx:"
        " writes per write transaction (group commit), from the servers' /metrics",
        "",
        "== PostgreSQL's 2 servers / SQLite's (a MISS is reported, not an error) ==",
        report.table(result["ratios"], ("measure", "value", "goal", "result")),
    ]
    for row in result["rows"]:
        if row["waits"]:
            waits = "; ".join(f"{key} {n}" for key, n in row["waits"].items())
            lines.append(f"  PostgreSQL {row['phase']}: sessions on average: {waits}")
        if row["non_201"] or row["socket_errors"]:
            lines.append(f"  {row['backend']} {row['phase']}: statuses {row['statuses']},"
                         f" socket errors {row['socket_errors']}")  # fmt: skip
    lines.append(
        f"machine: {machine['cpus']} CPUs shared by the servers, PostgreSQL and wrk;"
        f" Python {machine['python']}, SQLite {machine['sqlite']}; load average"
        f" {machine['load_1min'][0]:.1f} before, {machine['load_1min'][1]:.1f} after;"
        f" {result['seconds']} s in all"
    )
    lines += [f"  DISCREPANCY: {problem}" for problem in result["books"]["problems"]]
    lines.append("books reconcile on every backend" if result["ok"] else "BOOKS DO NOT RECONCILE")
    return "\n".join(lines)
