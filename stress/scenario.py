"""`python -m stress run`: sellers, concurrent credits, N sales from W workers, then the books.

A round creates its own sellers, files and approves the credit requests from
16 threads at once, and fires the sales plan in the given mode; the plan is
the same for every round (same seed), so threads and processes are compared
on one workload. Every round is verified; the report says what disagreed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import random
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from chargebox.process import ServerProcess
from stress import report
from stress.client import Client
from stress.verify import Expected, verify
from stress.workers import Sale, WorkerResult, run_workers

AMOUNTS = (1_000, 2_000, 5_000, 10_000, 20_000)
MAX_CREDIT = 1_000_000_000
# The server's default cap on a seller's pending credit requests (CHARGEBOX_MAX_PENDING_REQUESTS).
PENDING_PER_SELLER = 10


@dataclasses.dataclass(frozen=True)
class Options:
    sellers: int = 2
    credits: int = 10
    sales: int = 1000
    workers: tuple[int, ...] = (32,)
    modes: tuple[str, ...] = ("threads",)
    replay_fraction: float = 0.0
    overspend: float = 0.0
    server_procs: int = 1
    server_threads: int = 16
    url: str | None = None
    admin_token: str | None = None
    db: Path | None = None
    out: Path = Path("data/stress")
    plot: bool = False
    seed: int = 1
    quiet: bool = False


@dataclasses.dataclass
class Target:
    urls: list[str]
    token: str
    db_path: Path | None
    durability: str


@contextlib.contextmanager
def servers(options: Options) -> Iterator[Target]:
    """The target: a given --url, or K fresh server processes sharing one database file."""
    if options.url:
        yield Target(
            [options.url.rstrip("/")],
            options.admin_token,
            options.db,
            "unknown (an external server)",
        )
        return
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="chargebox-stress-") as scratch:
        db_path = options.db or Path(scratch) / "chargebox.db"
        started: list[ServerProcess] = []
        try:
            for _ in range(options.server_procs):
                server = ServerProcess(db_path, token, os.environ, options.server_threads)
                started.append(server.start())
            durability = started[0].announced.split("synchronous=")[-1].rstrip(")")
            yield Target(
                [server.url for server in started], token, db_path, f"WAL, synchronous={durability}"
            )
        finally:
            codes = [server.stop() for server in started]
            if any(codes):
                raise RuntimeError(f"a server did not stop cleanly: exit statuses {codes}")


def plan_sales(options: Options, tag: str) -> list[Sale]:
    rng = random.Random(options.seed)
    keyed = options.replay_fraction > 0
    return [
        Sale(
            seller=i % options.sellers,
            phone=f"09{rng.randrange(10**9):09d}",
            amount=rng.choice(AMOUNTS),
            key=f"{tag}-{i}" if keyed else None,
            replay=keyed and rng.random() < options.replay_fraction,
        )
        for i in range(options.sales)
    ]


def credit_amounts(options: Options, plan: list[Sale]) -> list[tuple[int, int]]:
    """(seller, amount) credits covering (1 - overspend) of each seller's demand."""
    demand = Counter()
    for sale in plan:
        demand[sale.seller] += sale.amount
    per_seller = Counter(i % options.sellers for i in range(options.credits))
    credits = []
    for seller, count in sorted(per_seller.items()):
        total = int(demand[seller] * (1 - options.overspend))
        share, rest = divmod(total, count)
        for n in range(count):
            amount = share + (rest if n == 0 else 0)
            if amount > MAX_CREDIT:
                raise ValueError("a credit would exceed 1,000,000,000 toman: use more --credits")
            if amount > 0:
                credits.append((seller, amount))
    return credits


def setup_round(
    admin: Client, url: str, token: str, options: Options, tag: str, plan: list[Sale]
) -> tuple[list[int], list[str], list[int]]:
    """Create the round's sellers, then file and approve every credit from 16 threads."""
    ids, tokens = [], []
    for n in range(options.sellers):
        reply = admin.post("/api/sellers", {"name": f"stress {tag} seller {n}"})
        if reply.status != 201:
            raise RuntimeError(f"creating a seller answered {reply.status}: {reply.body}")
        ids.append(reply.body["id"])
        tokens.append(reply.body["api_key"])
    credited = [0] * options.sellers
    # Each credit is approved before its place is given back: never over the cap.
    places = [threading.BoundedSemaphore(PENDING_PER_SELLER) for _ in range(options.sellers)]

    def file_and_approve(credit: tuple[int, int]) -> tuple[int, int]:
        seller, amount = credit
        own, boss = Client(url, tokens[seller]), Client(url, token)
        with places[seller]:
            filed = own.post("/api/credit-requests", {"amount": amount})
            approved = boss.post(f"/api/credit-requests/{filed.body['id']}/approve")
        own.close()
        boss.close()
        if (filed.status, approved.status) != (201, 200):
            raise RuntimeError(f"credit answered {filed.status}/{approved.status}")
        return seller, amount

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for seller, amount in pool.map(file_and_approve, credit_amounts(options, plan)):
            credited[seller] += amount
    return ids, tokens, credited


def run_round(
    options: Options,
    mode: str,
    workers: int,
    urls: list[str],
    token: str,
    db_path: Path | None,
    tag: str,
) -> dict:
    admin = Client(urls[0], token)
    plan = plan_sales(options, tag)
    ids, tokens, credited = setup_round(admin, urls[0], token, options, tag, plan)
    plans = [plan[w::workers] for w in range(workers)]
    results, seconds = run_workers(
        mode, lambda i: urls[i % len(urls)], tokens, plans, f"{mode} x{workers}", options.quiet
    )
    merged = _merge(results, options.sellers)
    problems = merged.bad_replays + merged.errors[:20]
    problems += verify(
        admin,
        Expected(
            ids,
            credited,
            [merged.acked.get(i, 0) for i in range(options.sellers)],
            merged.acked_sales,
        ),
        db_path,
    )
    admin.close()
    statuses = Counter(merged.statuses)
    return {
        "mode": mode,
        "workers": workers,
        "sales": len(plan),
        "ok_201": statuses.get(201, 0),
        "refused_409": statuses.get(409, 0),
        "other": sum(n for code, n in statuses.items() if code not in (201, 409)),
        "replays": merged.replays,
        "seconds": round(seconds, 3),
        "sales_per_s": round(len(plan) / seconds, 1),
        **report.latency_summary(merged.latencies),
        "books": "ok" if not problems else "FAIL",
        "status_counts": {str(code): n for code, n in sorted(statuses.items())},
        "seller_ids": ids,
        "credited": credited,
        "problems": problems,
    }


def _merge(results: list[WorkerResult], sellers: int) -> WorkerResult:
    merged = WorkerResult()
    for result in results:
        merged.statuses += result.statuses
        merged.latencies += result.latencies
        for seller, amount in result.acked.items():
            merged.acked[seller] = merged.acked.get(seller, 0) + amount
        merged.acked_sales += result.acked_sales
        merged.replays += result.replays
        merged.bad_replays += result.bad_replays
        merged.errors += result.errors
    return merged


def run(options: Options) -> dict:
    """Every (mode, workers) round against one target; the whole report as a dict."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    rounds = []
    with servers(options) as target:
        for mode in options.modes:
            for workers in options.workers:
                tag = f"{stamp}-{secrets.token_hex(3)}"
                rounds.append(
                    run_round(
                        options, mode, workers, target.urls, target.token, target.db_path, tag
                    )
                )
    return {
        "command": "run",
        "started": stamp,
        "machine": report.machine(),
        "durability": target.durability,
        "server_procs": len(target.urls),
        "options": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in dataclasses.asdict(options).items()
            if k != "admin_token"
        },
        "rounds": rounds,
        "ok": all(r["books"] == "ok" for r in rounds),
    }
