"""`python -m stress history`: a new SQLite database holding a long, genuinely sealed history.

It writes what the service would have written for a run of credits (requested and
approved, a few rejected), admin adjustments and sales over many sellers and phones:
the same rows, ids, timestamps, seals and sealed heads, balances and phone totals.
Only the way is faster: the seal chain is computed here in Python (seals.entry_mac,
seals.head_mac, the service's own functions) and the rows go in by executemany in big
transactions, the triggers and secondary indexes set aside and then created again by
the schema's own code. `chargebox audit --full` then verifies every row. SQLite only.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import random
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chargebox import schema, seals
from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.db import Database
from chargebox.models import ALL_MODELS

AMOUNTS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
CREDIT = 20_000_000  # toman per approved credit request: a seller's float
BATCH = 100_000  # ledger entries per transaction
START = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
STEP_US = 2_000  # microseconds between two entries: 10 million span about 5.6 hours

_SALE = "INSERT INTO sale VALUES (?, ?, ?, ?, ?, ?)"
_ENTRY = (
    "INSERT INTO ledger_entry (id, seller_id, kind, amount, balance_after, credit_request_id,"
    " sale_id, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SEAL = "INSERT INTO ledger_seal VALUES (?, ?)"
_REQUEST = "INSERT INTO credit_request VALUES (?, ?, ?, ?, ?, ?)"


@dataclasses.dataclass(frozen=True)
class Options:
    db: Path
    entries: int
    sellers: int = 1_000
    phones: int = 200_000
    seed: int = 1
    quiet: bool = False


@dataclasses.dataclass
class _Seller:
    ident: int
    balance: int = 0
    entries: int = 0
    last_id: int = 0
    mac: str = seals.GENESIS


@dataclasses.dataclass
class _Rows:
    """The rows of one batch, in the columns' order of each table."""

    sales: list = dataclasses.field(default_factory=list)
    entries: list = dataclasses.field(default_factory=list)
    seals: list = dataclasses.field(default_factory=list)
    requests: list = dataclasses.field(default_factory=list)


def stamp(n: int) -> str:
    """The n-th entry's time, as clock.now() writes it."""
    moment = START + datetime.timedelta(microseconds=n * STEP_US)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def generate(options: Options, say: Callable[[str], None] = print) -> dict:
    """Build the database; return what was made, with the seconds it took."""
    if options.db.exists():
        raise ValueError(f"--db {options.db}: exists; the generator makes a new database")
    if options.entries < 1 or options.sellers < 1 or options.phones < 1:
        raise ValueError("--entries, --sellers and --phones must be at least 1")
    started = time.perf_counter()
    options.db.parent.mkdir(parents=True, exist_ok=True)
    config = prepare(Config(db_path=options.db))
    key = config.ledger_key.encode("utf-8")
    conn = sqlite3.connect(options.db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB
        set_aside = _set_aside(conn)
        made = _fill(conn, key, options, say)
        for statement in schema.SALE_BLOCKS:  # (its trigger, set aside, would have made them)
            conn.execute(statement)
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    say(f"history: indexes and triggers ({len(set_aside)} set aside) created again")
    database = Database(config)
    try:  # what it set aside, made again (start-up would refuse a guard dropped by others)
        schema.create(database.peewee, ALL_MODELS)
    finally:
        database.close()
    made["seconds"] = round(time.perf_counter() - started, 1)
    made["bytes"] = options.db.stat().st_size
    return made


def _set_aside(conn: sqlite3.Connection) -> list[str]:
    """Drop the triggers and secondary indexes (schema.create makes them again)."""
    names = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'index') AND sql NOT NULL"
    ).fetchall()
    for kind, name in names:
        conn.execute(f"DROP {kind.upper()} {name}")
    return [name for _, name in names]


def _fill(conn: sqlite3.Connection, key: bytes, options: Options, say) -> dict:
    rng = random.Random(options.seed)
    now = stamp(0)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO seller (id, name, balance, status, created_at) VALUES (?, ?, 0, 'active', ?)",
        ((n, f"seller {n}", now) for n in range(1, options.sellers + 1)),
    )
    conn.executemany(
        "INSERT INTO seller_key (seller_id, label, key_hash, created_at)"
        " VALUES (?, 'default', ?, ?)",
        (
            (n, hashlib.sha256(secrets.token_bytes(32)).hexdigest(), now)
            for n in range(1, options.sellers + 1)
        ),
    )
    conn.execute("COMMIT")
    sellers = [_Seller(n) for n in range(1, options.sellers + 1)]
    # A few busy sellers and a long tail: seller i is picked about 1/(i+1) as often.
    weights = [1 / (n + 1) for n in range(options.sellers)]
    picks = rng.choices(range(options.sellers), weights, k=min(100_000, 100 * options.sellers))
    numbers = sorted({f"09{rng.randrange(10**9):09d}" for _ in range(options.phones)})
    phones: dict[str, list] = {}
    counts = {"sales": 0, "credits": 0, "rejected": 0, "adjustments": 0}
    rows, sale_id, request_id = _Rows(), 0, 0
    began = time.perf_counter()
    for n in range(1, options.entries + 1):
        seller = sellers[picks[rng.randrange(len(picks))]]
        now = stamp(n)
        amount = AMOUNTS[rng.randrange(len(AMOUNTS))]
        phone = reason = credit = sale = None
        if seller.balance < amount:
            if rng.randrange(20) == 0:  # a request the admin rejects first
                request_id += 1
                rows.requests.append((request_id, seller.ident, CREDIT, "rejected", now, now))
                counts["rejected"] += 1
            request_id += 1
            kind, delta, credit = "credit", CREDIT, request_id
            rows.requests.append((request_id, seller.ident, CREDIT, "approved", now, now))
            counts["credits"] += 1
        elif rng.randrange(1000) == 0:
            kind, delta, reason = "adjustment", -amount, "correction of a misdialled charge"
            counts["adjustments"] += 1
        else:
            sale_id += 1
            kind, delta, sale, phone = "sale", -amount, sale_id, rng.choice(numbers)
            total = phones.setdefault(phone, [0, now])
            total[0] += amount
            rows.sales.append((sale, seller.ident, phone, amount, seller.balance - amount, now))
            counts["sales"] += 1
        entry_id = n  # the n-th entry, as SQLite numbers a new table's rows
        seller.balance += delta
        entry = (entry_id, seller.ident, kind, delta, seller.balance, credit, sale, reason, now)
        seller.mac = seals.entry_mac(key, seller.mac, (*entry, phone))
        seller.entries += 1
        seller.last_id = entry_id
        rows.entries.append(entry)
        rows.seals.append((entry_id, seller.mac))
        if n % BATCH == 0 or n == options.entries:
            _write(conn, rows)
            rows = _Rows()
            if not options.quiet:
                rate = n / (time.perf_counter() - began)
                say(f"history: {n:,} of {options.entries:,} entries ({rate:,.0f}/s)")
    _finish(conn, key, sellers, phones)
    return {"entries": options.entries, **counts, "sellers": options.sellers,
            "phones": len(phones)}  # fmt: skip


def _write(conn: sqlite3.Connection, rows: _Rows) -> None:
    conn.execute("BEGIN")
    conn.executemany(_REQUEST, rows.requests)
    conn.executemany(_SALE, rows.sales)
    conn.executemany(_ENTRY, rows.entries)
    conn.executemany(_SEAL, rows.seals)
    conn.execute("COMMIT")


def _finish(conn: sqlite3.Connection, key: bytes, sellers: list[_Seller], phones: dict) -> None:
    """Balances, sealed heads and phone totals: where the history leaves them."""
    conn.execute("BEGIN")
    conn.executemany(
        "UPDATE seller SET balance = ? WHERE id = ?",
        ((seller.balance, seller.ident) for seller in sellers),
    )
    conn.executemany(
        "INSERT INTO seller_head (seller_id, entry_id, entries, entry_mac, mac)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            (
                s.ident,
                s.last_id,
                s.entries,
                s.mac,
                seals.head_mac(key, s.ident, s.last_id, s.entries, s.mac, s.balance),
            )  # fmt: skip
            for s in sellers
            if s.entries
        ),
    )
    conn.executemany(
        "INSERT INTO phone (number, total_charged, created_at) VALUES (?, ?, ?)",
        ((number, total, first) for number, (total, first) in sorted(phones.items())),
    )
    conn.execute("COMMIT")


def main(options: Options) -> int:
    made = generate(options, say=lambda line: print(line, file=sys.stderr, flush=True))
    print(
        f"history: {made['entries']:,} ledger entries ({made['sales']:,} sales, "
        f"{made['credits']:,} credits, {made['adjustments']:,} adjustments, "
        f"{made['rejected']:,} rejected requests) over {made['sellers']:,} sellers and "
        f"{made['phones']:,} phones in {made['seconds']} s; {made['bytes']:,} bytes, "
        f"{made['bytes'] / made['entries']:.0f} per entry, "
        f"{made['bytes'] / max(made['sales'], 1):.0f} per sale"
    )
    print(f"history: {options.db} (ledger_key and admin_token beside it); verify it with "
          f"`chargebox audit --full --db {options.db}`")  # fmt: skip
    return 0
