"""`python -m stress.backup_effect --db PATH`: what `chargebox backup` costs the sales.

One server (as `run.py` starts it) serves PATH, a scratch SQLite file (say one made
by `python -m stress history`); wrk POSTs keyed sales over a few new sellers on 64
keep-alive connections, in phases of S seconds: without a backup, then while
`chargebox backup` runs back to back (the backup API), then while `chargebox backup
--vacuum` does, for R rounds. Prints sales/s, p50/p99/max per phase and what each
backup took; then audits the last copies and the file. Run it under
`flock /tmp/chargebox-load.lock` on a shared box. PATH gains the sales it makes.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from chargebox.process import CHECKOUT, ServerProcess
from stress import backends
from stress.bench import fund_sellers
from stress.client import Client

THREADS = 64
BACKUP_TIMEOUT = 600


def backups_until(db: Path, dest: Path, vacuum: bool, stop: threading.Event, env: dict,
                  done: list[dict]) -> None:  # fmt: skip
    """`chargebox backup` again and again (over one DEST, --force) until `stop`."""
    while not stop.is_set():
        command = [sys.executable, "-m", "chargebox.cli", "backup", "--db", str(db), str(dest),
                   "--force", *(["--vacuum"] if vacuum else [])]  # fmt: skip
        began = time.monotonic()
        result = subprocess.run(command, cwd=CHECKOUT, env=env, capture_output=True, text=True,
                                timeout=BACKUP_TIMEOUT)  # fmt: skip
        line = next((x for x in result.stderr.splitlines() if "backed up to" in x), "")
        held = line.split("read snapshot held ")[-1].split(" s")[0] if "held" in line else "nan"
        done.append({"ok": result.returncode == 0, "seconds": time.monotonic() - began,
                     "snapshot_s": float(held), "error": result.stderr[-400:]})  # fmt: skip


def phase(name: str, db: Path, server: ServerProcess, keys: list[str], seconds: int,
          scratch: Path, env: dict) -> dict:  # fmt: skip
    options = backends.Options(seconds=seconds, backends=("sqlite",), threads=THREADS)
    stop, done = threading.Event(), []
    worker = None
    if name != "no backup":
        dest = scratch / f"{name.replace(' ', '-')}.db"
        args = (db, dest, name == "vacuum into", stop, env, done)
        worker = threading.Thread(target=backups_until, args=args)
    procs = backends.run_wrk([server.url], keys, f"{name[:3]}-{secrets.token_hex(4)}", seconds,
                             options)  # fmt: skip
    if worker:
        worker.start()
    results = backends.wrk_results(procs, seconds)
    stop.set()
    if worker:
        worker.join(BACKUP_TIMEOUT)
    statuses: Counter = Counter()
    for result in results:
        statuses.update({int(code): n for code, n in result["statuses"].items()})
    window = max(result["seconds"] for result in results)
    wal = Path(f"{db}-wal")
    return {
        "phase": name,
        "sales_s": round(statuses.get(201, 0) / window, 1),
        "p50_ms": backends.merged_latency(results, 0.50),
        "p99_ms": backends.merged_latency(results, 0.99),
        "max_ms": backends.merged_latency(results, 1.0),
        "non_201": {code: n for code, n in statuses.items() if code != 201},
        "backups": f"{sum(d['ok'] for d in done)}/{len(done)}" if worker else "-",
        "backup_s": _median([d["seconds"] for d in done]),
        "snapshot_s": _median([d["snapshot_s"] for d in done]),
        "wal_mb": round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0,
        "errors": [d["error"] for d in done if not d["ok"]][:1],
    }


def _median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 2) if values else None


def audit(db: Path, env: dict) -> str:
    result = subprocess.run([sys.executable, "-m", "chargebox.cli", "audit", "--db", str(db)],
                            cwd=CHECKOUT, env=env, capture_output=True, text=True,
                            timeout=BACKUP_TIMEOUT)  # fmt: skip
    verdict = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "?"
    return f"{db.name}: exit {result.returncode}, {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.backup_effect", description=__doc__)
    parser.add_argument("--db", type=Path, required=True, help="a scratch SQLite file")
    parser.add_argument("--seconds", type=int, default=20, help="per phase (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="default 2")
    parser.add_argument("--sellers", type=int, default=8, help="new sellers sold for (8)")
    args = parser.parse_args(argv)
    db = args.db.resolve()
    key = (db.parent / "ledger_key").read_text().strip()
    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBOX_")}
    env["CHARGEBOX_LEDGER_KEY"] = key
    server = ServerProcess(db, token, env, THREADS).start()
    rows = []
    try:
        admin = Client(server.url, token)
        _ids, keys = fund_sellers(admin, args.sellers)
        admin.close()
        with tempfile.TemporaryDirectory(prefix="backup-effect-", dir=db.parent) as scratch:
            phase("no backup", db, server, keys, 2, Path(scratch), env)  # warm-up
            for _ in range(args.rounds):
                for name in ("no backup", "backup api", "vacuum into"):
                    rows.append(phase(name, db, server, keys, args.seconds, Path(scratch), env))
                    print(rows[-1], flush=True)
            copies = sorted(Path(scratch).glob("*.db"))
            verdicts = [audit(copy, env) for copy in copies]
    finally:
        code = server.stop()
    verdicts.append(audit(db, env))
    print("\n".join(["", *verdicts, f"server exit {code}"]))
    failed = any(row["errors"] for row in rows) or any("exit 0" not in v for v in verdicts)
    return 1 if failed or code else 0


if __name__ == "__main__":
    sys.exit(main())
