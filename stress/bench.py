"""`python -m stress bench`: how far chargebox's sale is from its ceilings, in one run.

Here: `Chargebox.sell` in process (the real code path, on a file `chargebox.cli.prepare`
made), against a raw-SQL baseline (a copy of the sale's statements on a plain sqlite3
connection: what the SQL costs without Python around it; a test checks that the copy
writes what the real sale writes); a trivial endpoint vs POST /api/sales at 1..64
keep-alive clients (threads, processes); the targets as ratios of this run; the books
check. No timing is asserted: only unreconciled books fail. chargebox is imported inside
functions, so the spawned client processes start light.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import multiprocessing
import os
import re
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from chargebox.config import DEFAULT_SYNCHRONOUS, MAX_BALANCE, SYNCHRONOUS_LEVELS
from chargebox.process import ServerProcess
from stress import report
from stress.client import Client
from stress.verify import Expected, verify

AMOUNT = 1_000  # toman per sale
FUNDING = 1_000_000_000  # toman per seller, one admin adjustment: a million sales' worth
ENDPOINTS = ("trivial", "sales_hot", "sales_many")
ENDPOINT_TEXT = {
    "trivial": "GET /health",
    "sales_hot": "POST /api/sales, every client for one seller",
    "sales_many": "POST /api/sales, each client its own seller",
}
BARRIER_TIMEOUT = 120  # spawning 64 client processes on 2 cores takes seconds, not minutes
SYNC_NAMES = dict(enumerate(("OFF", "NORMAL", "FULL", "EXTRA")))  # PRAGMA synchronous read-back

IN_PROCESS_COLUMNS = ("name", "layer", "variant", "sales", "transactions", "seconds", "sales_s")
HTTP_COLUMNS = ("client_kind", "clients", "endpoint", "req_s", "p50_ms", "p99_ms", "errors")
TARGET_COLUMNS = ("target", "measured", "goal", "result")

# The raw-SQL baseline: the statements of one sale as chargebox.ledger writes them, copied
# so that their cost is measured without chargebox's Python around them. Only a baseline:
# the service rows time the real code. test_stress_bench checks that a raw sale writes the
# same rows, table by table, as Chargebox.sell; a change in the ledger fails it there.
_GUARD = "FROM seller WHERE id = ? AND balance + ? BETWEEN 0 AND ?"
SALE_SQL = (
    "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at) "
    f"SELECT id, ?, ?, balance + ?, ? {_GUARD} RETURNING id, balance_after"
)
ENTRY_SQL = (
    "INSERT INTO ledger_entry (seller_id, kind, amount, balance_after, credit_request_id,"
    f" sale_id, reason, created_at) SELECT id, ?, ?, balance + ?, ?, ?, ?, ? {_GUARD} "
    "RETURNING id, balance_after"
)
UPDATE_SQL = (
    "UPDATE seller SET balance = balance + ? WHERE id = ? AND balance + ? BETWEEN 0 AND ? "
    "RETURNING balance"
)
HEAD_SQL = "SELECT entries, entry_mac FROM seller_head WHERE seller_id = ?"
SEAL_SQL = "INSERT INTO ledger_seal (entry_id, mac) VALUES (?, ?)"
NEW_HEAD_SQL = (
    "INSERT INTO seller_head (seller_id, entry_id, entries, entry_mac, mac) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (seller_id) DO UPDATE SET entry_id = excluded.entry_id, "
    "entries = excluded.entries, entry_mac = excluded.entry_mac, mac = excluded.mac"
)
PHONE_SQL = (
    "INSERT INTO phone (number, total_charged, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (number) DO UPDATE SET total_charged = total_charged + excluded.total_charged"
)


@dataclasses.dataclass(frozen=True)
class Options:
    sales: int = 20_000  # in-process sales per measurement (raw and service)
    batch: int = 100  # sales per transaction for the group-commit ceiling
    service_threads: int = 8
    clients: tuple[int, ...] = (1, 8, 32, 64)
    kinds: tuple[str, ...] = ("threads", "processes")
    seconds: float = 3.0
    server_threads: int = 64
    server_procs: int = 1
    synchronous: str = DEFAULT_SYNCHRONOUS
    wrk_seconds: int = 10  # the outside view (stress/outside.py); 0: none
    quiet: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.sales <= FUNDING // AMOUNT // 4:
            raise ValueError(f"sales must be between 1 and {FUNDING // AMOUNT // 4:,}")
        if min(self.batch, self.service_threads, self.server_threads, self.server_procs) < 1:
            raise ValueError("batch, thread and process counts must be at least 1")
        if not self.clients or min(self.clients) < 1 or self.seconds <= 0:
            raise ValueError("client counts must be at least 1 and seconds above 0")
        if not self.kinds or not set(self.kinds) <= set(RUNNERS):
            raise ValueError(f"client kinds are {', '.join(RUNNERS)}")
        if self.synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}")


def _now() -> str:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _phone(n: int) -> str:
    return f"0912{n % 10_000_000:07d}"


def _say(options: Options, text: str) -> None:
    if not options.quiet:
        print(f"  {text}", file=sys.stderr, flush=True)


# --- in process: the service (the real code path) and the raw-SQL baseline --------------


def raw_connection(path: Path, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A plain sqlite3 connection with the PRAGMAs chargebox.db sets on its own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA temp_store = memory")
    return conn


def raw_sale(
    conn: sqlite3.Connection, seller_id: int, number: str, amount: int, now: str, key: bytes
) -> None:
    """One sale's copied statements, inside the caller's BEGIN IMMEDIATE, checked as the
    ledger checks them (the baseline; `service_rate` times the real code)."""
    from chargebox import seals  # the HMAC chain the ledger seals each entry with

    rows = conn.execute(
        SALE_SQL, (number, amount, -amount, now, seller_id, -amount, MAX_BALANCE)
    ).fetchall()
    if not rows:
        raise RuntimeError(f"seller {seller_id} could not pay a sale of {amount:,} toman")
    sale_id = rows[0][0]
    entry = conn.execute(
        ENTRY_SQL,
        ("sale", -amount, -amount, None, sale_id, None, now, seller_id, -amount, MAX_BALANCE),
    ).fetchall()
    updated = conn.execute(UPDATE_SQL, (-amount, seller_id, -amount, MAX_BALANCE)).fetchall()
    if not entry or updated != [(entry[0][1],)]:
        raise AssertionError(f"seller {seller_id}: balance {updated} != entry {entry}")
    entry_id, balance_after = entry[0]
    head = conn.execute(HEAD_SQL, (seller_id,)).fetchone()
    entries, previous = head if head else (0, seals.GENESIS)
    sealed = (entry_id, seller_id, "sale", -amount, balance_after, None, sale_id, None, now, number)
    mac = seals.entry_mac(key, previous, sealed)
    conn.execute(SEAL_SQL, (entry_id, mac))
    head_mac = seals.head_mac(key, seller_id, entry_id, entries + 1, mac, balance_after)
    conn.execute(NEW_HEAD_SQL, (seller_id, entry_id, entries + 1, mac, head_mac))
    conn.execute(PHONE_SQL, (number, amount, now))


def raw_rate(config, seller_id: int, sales: int, per_tx: int) -> dict:
    """Sales/s of the copied sale SQL from one thread, `per_tx` sales per BEGIN...COMMIT,
    on the file of `config` (as `chargebox.cli.prepare` returned it: with its ledger key)."""
    key = config.ledger_key.encode("utf-8")
    conn = raw_connection(config.db_path, config.synchronous, config.busy_timeout_ms)
    level = SYNC_NAMES.get(conn.execute("PRAGMA synchronous").fetchone()[0], "?")
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    done = transactions = 0
    started = time.perf_counter()
    try:
        while done < sales:
            count = min(per_tx, sales - done)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for n in range(done, done + count):
                    raw_sale(conn, seller_id, _phone(n), AMOUNT, _now(), key)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            done, transactions = done + count, transactions + 1
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    per = "1 sale" if per_tx == 1 else f"{per_tx} sales"
    return {
        "name": "raw_1" if per_tx == 1 else "raw_batch",
        "layer": "raw SQL (baseline)",
        "variant": f"{per} / transaction, 1 thread",
        "sales": done,
        "transactions": transactions,
        "seconds": round(seconds, 3),
        "sales_s": round(done / seconds, 1),
        "synchronous": level,
        "journal_mode": journal,
    }


def service_rate(service, seller_id: int, sales: int, threads: int) -> dict:
    """Sales/s of `Chargebox.sell` from `threads` threads at once: the real code path, with
    its validation, key handling, write door and group commit (a connection per thread)."""
    barrier = threading.Barrier(threads + 1)
    done = [0] * threads
    errors: list[str] = []

    def body(worker: int) -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT)
            for n in range(worker, sales, threads):
                service.sell(seller_id, _phone(n), AMOUNT, None)
                done[worker] += 1
        except Exception as exc:  # reported with the row; the books check will see it too
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=body, args=(w,), daemon=True) for w in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait(BARRIER_TIMEOUT)  # every thread started and waiting: the clock starts now
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    return {
        "name": f"service_{threads}",
        "layer": "service",
        "variant": f"Chargebox.sell, {threads} thread{'s' if threads > 1 else ''}",
        "sales": sum(done),
        "group_commit": service.config.group_commit,
        "seconds": round(seconds, 3),
        "sales_s": round(sum(done) / seconds, 1),
        "errors": errors[:5],
    }


def prepared(db_path: Path, synchronous: str):
    """A fresh database as the service starts on it: `chargebox.cli.prepare`'s Config."""
    from chargebox.cli import prepare
    from chargebox.config import Config

    return prepare(
        Config(db_path=db_path, admin_token=secrets.token_urlsafe(32), synchronous=synchronous)
    )


def in_process(options: Options) -> tuple[list[dict], list[str]]:
    """The raw-SQL baseline, then the service, on one fresh database; rows and book problems."""
    from chargebox.services import Chargebox

    with tempfile.TemporaryDirectory(prefix="chargebox-bench-") as scratch:
        config = prepared(Path(scratch) / "bench.db", options.synchronous)
        service = Chargebox(config)
        try:
            sellers = {}
            for role in ("raw", "service"):
                sellers[role] = service.create_seller(f"bench {role}")[0]["id"]
                service.adjust_balance(sellers[role], FUNDING, "bench funding")
            rows = [
                raw_rate(config, sellers["raw"], options.sales, per_tx)
                for per_tx in (1, options.batch)
            ]
            rates = ", ".join(f"{r['variant']} {r['sales_s']:,.0f}/s" for r in rows)
            _say(options, f"raw: {rates}")
            rows += [
                service_rate(service, sellers["service"], options.sales, threads)
                for threads in (1, options.service_threads)
            ]
            _say(options, "service: " + ", ".join(f"{r['sales_s']:,.0f}/s" for r in rows[2:]))
            audit = service.audit()
        finally:
            service.close()
        return rows, _in_process_books(config.db_path, audit, sellers, rows)


def _in_process_books(db_path: Path, audit: dict, sellers: dict, rows: list[dict]) -> list[str]:
    """The service's audit, and each seller's balance and ledger sum read from the file."""
    problems = [f"{row['variant']}: {error}" for row in rows for error in row.get("errors", [])]
    if not audit["consistent"]:
        problems.append(f"in-process audit is not consistent: {audit['problems'][:5]}")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        for role, seller_id in sellers.items():
            sold = sum(row["sales"] for row in rows if row["name"].startswith(role))
            expected = FUNDING - AMOUNT * sold
            balance, ledger = conn.execute(
                "SELECT balance, (SELECT SUM(amount) FROM ledger_entry WHERE seller_id = s.id)"
                " FROM seller s WHERE id = ?",
                (seller_id,),
            ).fetchone()
            if balance != expected or ledger != expected:
                problems.append(
                    f"in-process {role} seller {seller_id}: expected balance {expected:,} "
                    f"({sold:,} sales) but the file says {balance:,} (ledger sum {ledger:,})"
                )
    finally:
        conn.close()
    return problems


# --- HTTP: keep-alive clients for a fixed time, as threads or as spawned processes --------


@dataclasses.dataclass
class PhaseResult:
    """What one client saw in one endpoint's round; compact, since processes pickle it."""

    requests: int = 0
    ok_201: int = 0
    errors: int = 0
    unanswered_posts: int = 0  # a sale whose outcome the client never learnt
    statuses: dict = dataclasses.field(default_factory=dict)
    latencies: list[float] = dataclasses.field(default_factory=list)
    messages: list[str] = dataclasses.field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


def run_phase(client: Client, index: int, token: str | None, seconds: float) -> PhaseResult:
    """Send requests back to back until `seconds` are up: GET /health, or sales with `token`."""
    result = PhaseResult(started=time.monotonic())
    deadline = result.started + seconds
    headers = {"Authorization": f"Bearer {token}"} if token else None
    while time.monotonic() < deadline:
        try:
            if headers is None:
                reply = client.get("/health")
            else:
                body = {"phone": _phone(index * 100_003 + result.requests), "amount": AMOUNT}
                reply = client.post("/api/sales", body, headers)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            result.errors += 1
            result.unanswered_posts += headers is not None
            if len(result.messages) < 5:
                result.messages.append(f"{type(exc).__name__}: {exc}")
            continue
        result.requests += 1
        result.latencies.append(reply.seconds)
        result.statuses[reply.status] = result.statuses.get(reply.status, 0) + 1
        result.ok_201 += reply.status == 201
        result.errors += not (200 <= reply.status < 300 or reply.status == 409)
    result.ended = time.monotonic()
    return result


def client_main(index: int, url: str, tokens: tuple[str, str], seconds: float, barrier) -> list:
    """One client: one keep-alive connection, then each endpoint in turn after a barrier."""
    client = Client(url)
    client.get("/health")  # connect before the clock starts
    results = []
    for endpoint in ENDPOINTS:
        barrier.wait(seconds + BARRIER_TIMEOUT)
        token = {"sales_hot": tokens[0], "sales_many": tokens[1]}.get(endpoint)
        results.append(run_phase(client, index, token, seconds))
    client.close()
    return results


def _process_main(index: int, url: str, tokens, seconds: float, barrier, outbox) -> None:
    try:
        outbox.put((index, client_main(index, url, tokens, seconds, barrier)))
    except BaseException as exc:
        barrier.abort()
        outbox.put((index, _failed(exc)))


def _failed(exc: BaseException) -> list[PhaseResult]:
    return [PhaseResult(errors=1, messages=[f"client failed: {exc!r}"]) for _ in ENDPOINTS]


def _release(barrier, seconds: float) -> None:
    """The main side of each endpoint's barrier; the clients are timed from there on."""
    for _ in ENDPOINTS:
        barrier.wait(seconds + BARRIER_TIMEOUT)


def run_threads(specs: list[tuple], seconds: float) -> list[list[PhaseResult]]:
    barrier = threading.Barrier(len(specs) + 1)
    results: list = [_failed(RuntimeError("client thread did not finish"))] * len(specs)

    def body(i: int) -> None:
        try:
            results[i] = client_main(i, *specs[i], seconds, barrier)
        except BaseException as exc:
            barrier.abort()
            results[i] = _failed(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    _release(barrier, seconds)
    for thread in threads:
        thread.join(seconds + BARRIER_TIMEOUT)
    return results


def run_processes(specs: list[tuple], seconds: float) -> list[list[PhaseResult]]:
    context = multiprocessing.get_context("spawn")
    barrier, outbox = context.Barrier(len(specs) + 1), context.Queue()
    processes = [
        context.Process(
            target=_process_main, args=(i, *specs[i], seconds, barrier, outbox), daemon=True
        )
        for i in range(len(specs))
    ]
    gathered: dict[int, list[PhaseResult]] = {}
    try:
        for process in processes:
            process.start()
        _release(barrier, seconds)
        while len(gathered) < len(specs):
            index, value = outbox.get(timeout=seconds + BARRIER_TIMEOUT)
            gathered[index] = value
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
    return [gathered[i] for i in range(len(specs))]


RUNNERS: dict[str, Callable[[list[tuple], float], list[list[PhaseResult]]]] = {
    "threads": run_threads,
    "processes": run_processes,
}


def http_row(kind: str, clients: int, endpoint: str, phases: list[PhaseResult]) -> dict:
    """One endpoint's round, all clients merged: throughput over the shared window, latencies."""
    requests = sum(p.requests for p in phases)
    timed = [p for p in phases if p.ended > 0] or phases  # a client that failed has no clock
    window = max(p.ended for p in timed) - min(p.started for p in timed)
    statuses = Counter()
    for phase in phases:
        statuses.update(phase.statuses)
    latency = report.latency_summary([s for p in phases for s in p.latencies])
    return {
        "client_kind": kind,
        "clients": clients,
        "endpoint": endpoint,
        "requests": requests,
        "seconds": round(window, 3),
        "req_s": round(requests / window, 1) if window > 0 else 0.0,
        **latency,
        "errors": sum(p.errors for p in phases),
        "status_counts": {str(code): n for code, n in sorted(statuses.items())},
        "messages": [m for p in phases for m in p.messages][:5],
    }


def start_servers(db_path: Path, token: str, options: Options) -> list[ServerProcess]:
    """One server of K forked processes sharing its listening socket (`serve --processes K`)."""
    env = {
        "CHARGEBOX_SYNCHRONOUS": options.synchronous,
        "CHARGEBOX_PROCESSES": str(options.server_procs),
    }
    server = ServerProcess(db_path, token, os.environ, options.server_threads, env=env)
    return [server.start()]


def fund_sellers(admin: Client, count: int) -> tuple[list[int], list[str]]:
    """`count` sellers, each with one admin adjustment of FUNDING toman; ids and API keys."""
    ids, keys = [], []
    for n in range(count):
        created = admin.post("/api/sellers", {"name": f"bench seller {n}"})
        if created.status != 201:
            raise RuntimeError(f"creating a seller answered {created.status}: {created.body}")
        seller_id = created.body["id"]
        funded = admin.post(
            f"/api/sellers/{seller_id}/adjustments", {"amount": FUNDING, "reason": "bench funding"}
        )
        if funded.status != 201:
            raise RuntimeError(f"funding seller {seller_id} answered {funded.status}")
        ids.append(seller_id)
        keys.append(created.body["api_key"])
    return ids, keys


def http_level(
    kind: str, clients: int, urls: list[str], keys: list[str], options: Options, acked: Counter
) -> list[dict]:
    """Every endpoint at one concurrency; adds the 201s per seller index (0 = the hot one)."""
    specs = [(urls[i % len(urls)], (keys[0], keys[1 + i])) for i in range(clients)]
    results = RUNNERS[kind](specs, options.seconds)
    rows = []
    for position, endpoint in enumerate(ENDPOINTS):
        phases = [result[position] for result in results]
        rows.append(http_row(kind, clients, endpoint, phases))
        rows[-1]["unanswered_sales"] = sum(p.unanswered_posts for p in phases)
    hot, many = ENDPOINTS.index("sales_hot"), ENDPOINTS.index("sales_many")
    acked[0] += sum(result[hot].ok_201 for result in results)
    for i, result in enumerate(results):
        acked[1 + i] += result[many].ok_201
    summary = ", ".join(
        f"{row['endpoint']} {row['req_s']:,.0f}/s p99 {row['p99_ms']:.1f} ms" for row in rows
    )
    _say(options, f"{kind} x{clients}: {summary}")
    return rows


def http_rounds(options: Options) -> tuple[list[dict], str, list[str]]:
    """Start the server(s), run every (kind, clients) level, then verify the books."""
    token = secrets.token_urlsafe(24)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="chargebox-bench-") as scratch:
        db_path = Path(scratch) / "chargebox.db"
        servers = start_servers(db_path, token, options)
        problems: list[str] = []
        try:
            urls = [server.url for server in servers]
            admin = Client(urls[0], token)
            ids, keys = fund_sellers(admin, 1 + max(options.clients))
            acked: Counter = Counter()
            for kind in options.kinds:
                for clients in options.clients:
                    rows += http_level(kind, clients, urls, keys, options, acked)
            expected = Expected(
                ids,
                [FUNDING] * len(ids),
                [AMOUNT * acked[i] for i in range(len(ids))],
                sum(acked.values()),
            )
            problems += verify(admin, expected, db_path)
            admin.close()
        finally:
            codes = [server.stop() for server in servers]
        if any(codes):
            problems.append(f"a server did not stop cleanly: exit statuses {codes}")
        unanswered = sum(row["unanswered_sales"] for row in rows)
        if problems and unanswered:
            problems.append(f"{unanswered:,} sales got no answer (their outcome is unknown)")
    return rows, servers[0].announced, problems


def _target(name: str, measured: float, op: str, goal: float) -> dict:
    ok = measured >= goal if op == ">=" else measured <= goal
    return {"target": name, "measured": round(measured, 3), "goal": f"{op} {goal}", "ok": ok}


def _ratio(top: float, bottom: float) -> float:
    return top / bottom if bottom > 0 else 0.0


def targets(
    in_rows: list[dict], http_rows: list[dict], server_sync: str, options: Options
) -> list[dict]:
    """The issue's targets as ratios of this run (the top concurrency stands for 64)."""
    top = max(options.clients)
    at_top = {(r["client_kind"], r["endpoint"]): r for r in http_rows if r["clients"] == top}
    rows = []
    for kind in options.kinds:
        hot, trivial = at_top[kind, "sales_hot"], at_top[kind, "trivial"]
        rows.append(
            _target(
                f"{kind}: sales_hot / trivial req/s at {top} clients",
                _ratio(hot["req_s"], trivial["req_s"]),
                ">=",
                0.8,
            )
        )
        rows.append(_target(f"{kind}: sales_hot p99 ms at {top} clients", hot["p99_ms"], "<=", 50))
    by_name = {row["name"]: row for row in in_rows}
    service, raw = by_name["service_1"]["sales_s"], by_name["raw_1"]["sales_s"]
    rows.append(
        _target("service 1 thread / raw ceiling (1 sale/tx)", _ratio(service, raw), ">=", 0.5)
    )
    strength = SYNCHRONOUS_LEVELS.index
    rows.append(
        {
            "target": "durability: the server's synchronous level",
            "measured": server_sync,
            "goal": f">= {DEFAULT_SYNCHRONOUS} (the core's default)",
            "ok": server_sync in SYNCHRONOUS_LEVELS
            and strength(server_sync) >= strength(DEFAULT_SYNCHRONOUS),
        }
    )
    for row in rows:
        row["result"] = "PASS" if row["ok"] else "MISS"
    return rows


def run(options: Options) -> dict:
    """The whole benchmark: in process, then HTTP, then targets and the books; a dict."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    in_rows, problems = in_process(options)
    http_rows, announced, http_problems = http_rounds(options)
    problems += http_problems
    from stress import outside  # it builds on backends, which builds on this module

    outside_view = None
    if options.wrk_seconds and outside.available():
        outside_view = outside.run(options.wrk_seconds, options.quiet)
        problems += outside_view["problems"]
    found = re.search(r"synchronous=(\w+)", announced or "")
    server_sync = found.group(1) if found else "unknown"
    return {
        "command": "bench",
        "started": stamp,
        "machine": report.machine() | {"load_1min": [load_before, os.getloadavg()[0]]},
        "durability": {
            "journal_mode": in_rows[0]["journal_mode"],
            "in_process_synchronous": in_rows[0]["synchronous"],
            "server_synchronous": server_sync,
            "server_announced": announced,
            "core_default": DEFAULT_SYNCHRONOUS,
        },
        "options": dataclasses.asdict(options),
        "in_process": in_rows,
        "http": http_rows,
        "targets": targets(in_rows, http_rows, server_sync, options),
        "wrk": outside_view,
        "books": {"ok": not problems, "problems": problems},
        "ok": not problems,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _outside_render(view: dict, seconds: int) -> str:
    from stress import outside

    return outside.render(view, seconds)


def render(result: dict) -> str:
    """The printed report: both measurement sections, the targets, durability, machine, books."""
    durability, machine = result["durability"], result["machine"]
    options = result["options"]
    lines = [
        f"== in process: Chargebox.sell against a raw-SQL baseline, {options['sales']:,} sales"
        " per row ==",
        report.table(result["in_process"], IN_PROCESS_COLUMNS),
        "",
        f"== HTTP: {options['seconds']} s per row, keep-alive clients, "
        f"{options['server_procs']} server process(es) x {options['server_threads']} threads ==",
        report.table(result["http"], HTTP_COLUMNS),
        "  " + "; ".join(f"{name}: {text}" for name, text in ENDPOINT_TEXT.items()),
        "",
        "== targets (ratios of this run; a MISS is reported, not an error) ==",
        report.table(result["targets"], TARGET_COLUMNS),
        "",
        _outside_render(result["wrk"], options["wrk_seconds"])
        if result["wrk"]
        else "== wrk: not measured (apt-get install wrk; or --wrk-seconds was 0) ==",
        "",
        f"durability: journal_mode={durability['journal_mode']}, synchronous="
        f"{durability['in_process_synchronous']} in process, "
        f"{durability['server_synchronous']} on the server ({durability['server_announced']})",
        f"machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"SQLite {machine['sqlite']}; load average {machine['load_1min'][0]:.1f} before, "
        f"{machine['load_1min'][1]:.1f} after; {result['seconds']} s in all",
    ]
    for problem in result["books"]["problems"]:
        lines.append(f"  DISCREPANCY: {problem}")
    lines.append(
        "books reconcile (in process and over HTTP)"
        if result["ok"]
        else "THE BOOKS DO NOT RECONCILE"
    )
    return "\n".join(lines)
