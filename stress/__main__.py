"""`python -m stress`: the load harness (`run`), the threads-vs-processes lessons (`demo`),
the benchmark (`bench`), SQLite against PostgreSQL under wrk (`backends`), a
database with a long sealed history to measure against (`history`), and a server's
memory under long load and audits (`memory`).

Argument parsing and printing only; the work lives in `scenario`, `workers`,
`verify`, `demos`, `bench`, `backends`, `history` and `memory`. Exit status: 0 when the books
reconcile (or a demo showed its effect), 1 when anything disagreed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from stress import backends, bench, history, memory, report, scenario
from stress.demos import DEMOS, load

ROUND_COLUMNS = (
    "mode",
    "workers",
    "sales",
    "ok_201",
    "refused_409",
    "other",
    "replays",
    "seconds",
    "sales_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "books",
)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected integers like 32 or 1,8,32,64") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return values


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fraction is between 0 and 1")
    return value


def _summary(name: str) -> str:
    try:
        return load(name).SUMMARY
    except ImportError:
        return "(not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="load a chargebox server with sales and verify the books",
        description="Start a server on a fresh database (or target --url), create sellers, "
        "file and approve credit requests concurrently, fire the sales from W workers, then "
        "verify: expected = actual balance = ledger sum per seller, one sale row per 201, "
        "/api/audit and `chargebox audit` clean.",
    )
    add = run.add_argument
    add("--sellers", type=int, default=2, help="sellers per round (default 2)")
    add(
        "--credits",
        type=int,
        default=10,
        help="credit requests per round, filed and approved from 16 threads at once (default 10)",
    )
    add("--sales", type=int, default=1000, help="sales per round (default 1000)")
    add(
        "--workers",
        type=_int_list,
        default=(32,),
        help="concurrent workers, each with one "
        "keep-alive connection; a list like 1,8,32,64 runs a round per value (default 32)",
    )
    add(
        "--mode",
        choices=("threads", "processes", "both"),
        default="threads",
        help="workers as threads of this process, as separate processes, or both, one after "
        "the other on the same workload (default threads)",
    )
    add(
        "--replay-fraction",
        type=_fraction,
        default=0.0,
        help="every sale gets an "
        "Idempotency-Key and this fraction is sent twice; the copy must be replayed, not "
        "charged (default 0)",
    )
    add(
        "--overspend",
        type=_fraction,
        default=0.0,
        help="credit only (1 - this) of what the "
        "sales need, so about this fraction of sales must be refused with 409 (default 0)",
    )
    add(
        "--server-procs",
        type=int,
        default=1,
        help="server processes on the same SQLite file, "
        "to exercise cross-process locking; workers spread over them (default 1)",
    )
    add("--server-threads", type=int, default=64, help="waitress threads per server (default 64)")
    add("--url", help="target a running server instead of starting one (needs --admin-token)")
    add(
        "--admin-token",
        help="the admin token of --url's server; write it --admin-token=TOKEN, since a"
        " generated token may start with '-'",
    )
    add(
        "--db",
        type=Path,
        help="the database file: with --url, lets `chargebox audit` check "
        "it too; otherwise the file the started servers use (default: a temporary file)",
    )
    add(
        "--out",
        type=Path,
        default=Path("data/stress"),
        help="where the JSON report (and the chart) go (default data/stress)",
    )
    add(
        "--plot",
        action="store_true",
        help="also draw throughput and p99 against workers, "
        "threads vs processes, as a PNG (needs `pip install -e .[plot]`)",
    )
    add("--seed", type=int, default=1, help="seed of the sales plan (default 1)")
    add("--quiet", action="store_true", help="no live progress line")
    demo = commands.add_parser("demo", help="one threads-vs-processes lesson, measured live")
    demo.add_argument(
        "name", choices=DEMOS, help="; ".join(f"{name}: {_summary(name)}" for name in DEMOS)
    )
    demo.add_argument("--quick", action="store_true", help="the short mode (seconds; used in CI)")
    demo.add_argument("--out", type=Path, default=Path("data/stress"), help="where the JSON goes")
    bench_cmd = commands.add_parser(
        "bench",
        help="measure raw sqlite3, the service and HTTP in one run; targets as ratios",
        description="The raw sqlite3 ceiling of a sale, Chargebox.sell in process, and a "
        "trivial endpoint vs POST /api/sales at N keep-alive clients (threads and processes, "
        "one hot seller and many), with p50/p99; then the targets and the books.",
    )
    add = bench_cmd.add_argument
    add("--quick", action="store_true", help="short rounds: --seconds 0.7, --sales 3000")
    add("--clients", type=_int_list, default=(1, 8, 32, 64), help="default 1,8,32,64")
    add("--seconds", type=float, help="duration of each HTTP row (default 3; quick 0.7)")
    add("--sales", type=int, help="in-process sales per row (default 20000; quick 3000)")
    add("--batch", type=int, default=100, help="sales per transaction, group ceiling (100)")
    add("--kinds", default="threads,processes", help="client kinds (default threads,processes)")
    add("--server-threads", type=int, default=64, help="waitress threads per server (64)")
    add(
        "--server-procs",
        type=int,
        default=1,
        help="server processes sharing one port and one file (`serve --processes`; default 1)",
    )
    add("--synchronous", choices=bench.SYNCHRONOUS_LEVELS, default="NORMAL", help="(NORMAL)")
    add(
        "--wrk-seconds",
        type=int,
        help="seconds of each wrk measurement: /health and hot sales, 1 and 2 server"
        " processes (default 10; quick 2; 0: none; needs Debian's wrk: apt-get install wrk)",
    )
    add("--out", type=Path, default=Path("data/stress"), help="where the JSON goes")
    add("--quiet", action="store_true", help="no progress lines")
    _backends_parser(commands)
    _history_parser(commands)
    _memory_parser(commands)
    return parser


def _memory_parser(commands) -> None:
    long = commands.add_parser(
        "memory",
        help="one server under wrk's sales and repeated audits for an hour: its memory",
        description="One server as run.py starts it, on a fresh SQLite file or a copy of "
        "--db: wrk sends keyed sales of --sellers sellers in phases of --phase s for --seconds "
        "s, while an admin asks for GET /api/audit every --audit-every s (every --full-every"
        "th one full) and the server's RSS is read every --sample s. Prints a row per phase "
        "and checks the books. Needs wrk (apt-get install wrk). Run it alone: "
        "`flock /tmp/chargebox-load.lock python -m stress memory`.",
    )
    add = long.add_argument
    add("--seconds", type=int, default=3600, help="the whole run (default 3600)")
    add("--phase", type=int, default=60, help="seconds of one wrk run, one row (default 60)")
    add("--connections", type=int, default=32, help="wrk's connections (default 32)")
    add("--sellers", type=int, default=8, help="sellers sold for, round-robin (default 8)")
    add("--audit-every", type=float, default=10.0, help="seconds between audits (default 10)")
    add("--full-every", type=int, default=12, help="every Nth audit is full (default 12)")
    add("--sample", type=float, default=5.0, help="seconds between RSS reads (default 5)")
    add("--db", type=Path, help="start from a copy of this file (and its ledger_key)")
    add("--out", type=Path, default=Path("data/stress"), help="where the JSON goes")
    add("--quiet", action="store_true", help="no progress lines")


def _history_parser(commands) -> None:
    made = commands.add_parser(
        "history",
        help="build a new SQLite database with N sealed ledger entries, fast",
        description="A new database (its ledger_key and admin_token files beside it) holding "
        "what the service would have written for N ledger entries: credits requested and "
        "approved (a few rejected), adjustments and sales over many sellers and phones, every "
        "seal, sealed head, balance and phone total as the service makes them. Then verify "
        "it with `chargebox audit --full --db PATH`.",
    )
    add = made.add_argument
    add("--db", type=Path, required=True, help="the new database file (must not exist)")
    add("--entries", type=int, default=1_000_000, help="ledger entries (default 1,000,000)")
    add("--sellers", type=int, default=1_000, help="sellers, a few busy (default 1,000)")
    add("--phones", type=int, default=200_000, help="distinct phone numbers (default 200,000)")
    add("--seed", type=int, default=1, help="seed of the history (default 1)")
    add("--quiet", action="store_true", help="no progress lines")


def _backends_parser(commands) -> None:
    both = commands.add_parser(
        "backends",
        help="SQLite against PostgreSQL under wrk: the SQLite default, 2 app servers each",
        description="For the SQLite default (one server as run.py starts it), for two "
        "SQLite servers on one file, then for a throwaway PostgreSQL cluster started here "
        "with two app servers: two wrk processes (one per server) holding "
        "--connections keep-alive connections that POST keyed sales: a warm-up, one hot "
        "seller, then round-robin over --sellers sellers. Prints sales/s, p50/p99, non-201 "
        "answers, PostgreSQL's sales over each SQLite's, the cores used by the servers, PostgreSQL "
        "and wrk, and PostgreSQL's wait events; then checks the books. Needs wrk "
        "(apt-get install wrk) and a PostgreSQL server (apt-get install postgresql). "
        "Run it alone: `flock /tmp/chargebox-load.lock python -m stress backends`.",
    )
    add = both.add_argument
    add("--quick", action="store_true", help="short phases: --seconds 2, --warmup 1")
    add("--seconds", type=int, help="each measured phase, whole seconds (default 10; quick 2)")
    add("--warmup", type=int, help="the first phase, not compared (default 2; quick 1)")
    add("--connections", type=int, default=64, help="wrk connections in all (default 64)")
    add("--sellers", type=int, default=64, help="sellers of the round-robin phase (64)")
    add("--processes", type=int, default=1, help="processes per app server (default 1)")
    add("--threads", type=int, default=48, help="threads per server process (default 48)")
    add(
        "--backends",
        default=",".join(backends.BACKENDS),
        help=f"default {','.join(backends.BACKENDS)}",
    )
    add("--out", type=Path, default=Path("data/stress"), help="where the JSON goes")
    add("--quiet", action="store_true", help="no progress lines")


def _run(args: argparse.Namespace) -> int:
    if args.url and not args.admin_token:
        print("--url needs --admin-token", file=sys.stderr)
        return 2
    options = scenario.Options(
        sellers=args.sellers,
        credits=args.credits,
        sales=args.sales,
        workers=args.workers,
        modes=("threads", "processes") if args.mode == "both" else (args.mode,),
        replay_fraction=args.replay_fraction,
        overspend=args.overspend,
        server_procs=args.server_procs,
        server_threads=args.server_threads,
        url=args.url,
        admin_token=args.admin_token,
        db=args.db,
        out=args.out,
        plot=args.plot,
        seed=args.seed,
        quiet=args.quiet,
    )
    result = scenario.run(options)
    print(report.table(result["rounds"], ROUND_COLUMNS))
    print(
        f"\n{result['machine']['cpus']} CPUs, Python {result['machine']['python']}, SQLite "
        f"{result['machine']['sqlite']}, {result['durability']}, "
        f"{result['server_procs']} server process(es)"
    )
    for row in result["rounds"]:
        print(f"{row['mode']} x{row['workers']}: status codes {row['status_counts']}")
        for problem in row["problems"]:
            print(f"  DISCREPANCY: {problem}")
    path = report.write_json(args.out / f"run-{result['started']}.json", result)
    print(f"report: {path}")
    if args.plot:
        print(f"chart: {report.plot_rounds(result['rounds'], path.with_suffix('.png'))}")
    print("books reconcile in every round" if result["ok"] else "THE BOOKS DO NOT RECONCILE")
    return 0 if result["ok"] else 1


def _demo(args: argparse.Namespace) -> int:
    """Exit 1 only if the mechanism did not show; a busy box gets a printed warning."""
    started = time.perf_counter()
    result = load(args.name).run(quick=args.quick)
    columns = list(dict.fromkeys(key for row in result["rows"] for key in row))
    print(report.table(result["rows"], columns))
    print(f"\n{result['lesson']}")
    if result.get("warning"):
        print(f"\n{result['warning']}")
    path = report.write_json(args.out / f"demo-{args.name}.json", result)
    print(f"({time.perf_counter() - started:.1f} s; report: {path})")
    return 0 if result["effect_shown"] else 1


def _bench(args: argparse.Namespace) -> int:
    options = bench.Options(
        sales=args.sales or (3_000 if args.quick else 20_000),
        batch=args.batch,
        clients=args.clients,
        kinds=tuple(args.kinds.split(",")),
        seconds=args.seconds or (0.7 if args.quick else 3.0),
        server_threads=args.server_threads,
        server_procs=args.server_procs,
        synchronous=args.synchronous,
        wrk_seconds=(2 if args.quick else 10) if args.wrk_seconds is None else args.wrk_seconds,
        quiet=args.quiet,
    )
    result = bench.run(options)
    return _reported("bench", result, bench.render(result), args.out)


def _backends(args: argparse.Namespace) -> int:
    options = backends.Options(
        connections=args.connections,
        sellers=args.sellers,
        seconds=args.seconds or (2 if args.quick else 10),
        warmup=args.warmup or (1 if args.quick else 2),
        processes=args.processes,
        threads=args.threads,
        backends=tuple(args.backends.split(",")),
        quiet=args.quiet,
    )
    result = backends.run(options)
    return _reported("backends", result, backends.render(result), args.out)


def _memory(args: argparse.Namespace) -> int:
    fields = (field.name for field in dataclasses.fields(memory.Options))
    result = memory.run(memory.Options(**{name: getattr(args, name) for name in fields}))
    return _reported("memory", result, memory.render(result), args.out)


def _reported(command: str, result: dict, rendered: str, out: Path) -> int:
    """Print a run's tables, write its JSON; exit 0 if its books reconciled."""
    print(rendered)
    path = report.write_json(out / f"{command}-{result['started']}.json", result)
    print(f"report: {path}")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "backends":
            return _backends(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "memory":
            return _memory(args)
        if args.command == "history":
            return history.main(
                history.Options(
                    args.db, args.entries, args.sellers, args.phones, args.seed, args.quiet
                )
            )
        return _run(args) if args.command == "run" else _demo(args)
    except (ValueError, RuntimeError) as exc:
        print(f"stress: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
