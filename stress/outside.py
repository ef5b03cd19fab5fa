"""`python -m stress bench`'s outside view: `wrk` against one server as `run.py` starts it.

The harness's own clients are Python and slower than a real load tool, so they
understate what a sale costs the server. Here Debian's `wrk` (C, keep-alive) sends
64 connections' worth of `GET /health`, then of keyed hot-seller sales
(`wrk_sales.lua`, one Idempotency-Key each), to one server with its default
threads, in one process and then in two (`serve --processes 2`), then both again
pinned to CPUs (`--cpus auto`, cpus.py). It prints requests/s and p99 for each,
sales as a share of `/health`, and what two processes sell over one (the issue's
targets, on the default servers); then it checks the books of each server
(balance = funding - sales = ledger sum, every 201 a sale row, audits clean).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from chargebox.config import DEFAULT_THREADS
from chargebox.process import ServerProcess
from stress import backends, report
from stress.client import Client

COLUMNS = ("processes", "cpus", "health_req_s", "health_p99_ms", "sales_s", "sales_p99_ms",
           "sales_share", "non_201")  # fmt: skip
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def health(url: str, options: backends.Options) -> tuple[float, float]:
    """wrk's GET /health: requests/s and p99 (ms), from its own report."""
    command = ["wrk", "-t", "2", "-c", str(options.connections), "-d", f"{options.seconds}s",
               "--latency", url + "/health"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=options.seconds + 60)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not rate or not p99:
        raise RuntimeError(f"wrk failed ({out.returncode}): {(out.stdout + out.stderr)[-800:]}")
    return float(rate.group(1)), round(float(p99.group(1)) * UNITS[p99.group(2)], 1)


def one_server(processes: int, cpus: str, options: backends.Options) -> tuple[dict, list[str]]:
    """A fresh file, one server of `processes` processes (`--cpus`): /health, then hot sales."""
    from stress.bench import fund_sellers

    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="chargebox-outside-") as scratch:
        backend = backends.Backend("sqlite", Path(scratch) / "chargebox.db", None)
        env = {"CHARGEBOX_PROCESSES": str(processes), "CHARGEBOX_CPUS": cpus}
        server = ServerProcess(backend.db, token, os.environ, DEFAULT_THREADS, env=env).start()
        try:
            admin = Client(server.url, token)
            ids, keys = fund_sellers(admin, 1)
            health_rate, health_p99 = health(server.url, options)
            phases = [backends.phase(backend, [server], keys, name, options, token)
                      for name in ("warm-up", "hot")]  # fmt: skip
            problems = backends.books(backend, admin, ids, phases)
            admin.close()
        finally:
            if server.stop() != 0:
                raise RuntimeError("the server did not stop cleanly")
    hot = phases[-1]
    health_rate = round(health_rate, 1)  # the share is of the figures the row shows
    row = {
        "processes": processes,
        "cpus": cpus,
        "health_req_s": health_rate,
        "health_p99_ms": health_p99,
        "sales_s": hot["sales_s"],
        "sales_p99_ms": hot["p99_ms"],
        "sales_share": round(hot["sales_s"] / health_rate, 2) if health_rate else 0.0,
        "non_201": hot["non_201"],
    }
    return row, problems


def run(seconds: int, quiet: bool) -> dict:
    """One and two processes, then both pinned; their rows, the issue's targets (on the
    default servers), and the books."""
    options = backends.Options(seconds=seconds, warmup=1, backends=("sqlite",), quiet=quiet)
    rows, problems = [], []
    for cpus in ("off", "auto"):
        for processes in (1, 2):
            row, wrong = one_server(processes, cpus, options)
            rows.append(row)
            problems += wrong
            if not quiet:
                print(
                    f"  wrk, {processes} process(es), --cpus {cpus}: /health"
                    f" {row['health_req_s']:,.0f}/s, sales {row['sales_s']:,.0f}/s"
                    f" p99 {row['sales_p99_ms']} ms",
                    flush=True,
                )
    one, two, pinned_one, pinned_two = rows
    scale = round(two["sales_s"] / one["sales_s"], 2) if one["sales_s"] else 0.0
    targets = [
        backends.measure("1 process: sales / /health", one["sales_share"], ">= 0.6"),
        backends.measure("1 process: sales p99 ms", one["sales_p99_ms"], "<= 50"),
        backends.measure("2 processes / 1: sales/s", scale, ">= 1.3"),
        backends.measure("2 processes: sales p99 ms", two["sales_p99_ms"],
                          f"<= {one['sales_p99_ms']}"),
    ]  # fmt: skip
    pinned = {
        f"--cpus auto / off, {n} process(es): sales/s": round(p["sales_s"] / d["sales_s"], 2)
        for n, p, d in ((1, pinned_one, one), (2, pinned_two, two))
        if d["sales_s"]
    }
    return {"rows": rows, "targets": targets, "pinned": pinned, "problems": problems}


def render(result: dict, seconds: int) -> str:
    return "\n".join([
        f"== wrk: 64 keep-alive connections, {seconds} s each, one server with its default "
        f"{DEFAULT_THREADS} threads; sales: one hot seller, keyed ==",
        report.table(result["rows"], COLUMNS),
        report.table(result["targets"], ("measure", "value", "goal", "result")),
        *(f"{name}: {value}x" for name, value in result.get("pinned", {}).items()),
    ])  # fmt: skip
