"""Verifying the books after a load: what the server acknowledged must be what it recorded.

Per seller: credited - acknowledged sales = balance = ledger sum, and no entry
below zero; the number of 201s equals the number of sale rows; `/api/audit`
and `chargebox audit` (when the file is at hand) agree. Every disagreement
comes back as one sentence naming the seller and both numbers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from chargebox.process import cli_audit
from stress.client import Client

PAGE = 1000


@dataclasses.dataclass
class Expected:
    """What the harness itself knows: ids, what it credited, what the server acknowledged."""

    seller_ids: list[int]
    credited: list[int]
    acked: list[int]  # toman of 201-answered sales, per seller
    acked_sales: int


def all_items(admin: Client, path: str) -> list[dict]:
    """Every item of a list route, following the after_id cursor."""
    items: list[dict] = []
    while True:
        separator = "&" if "?" in path else "?"
        after = items[-1]["id"] if items else 0
        reply = admin.get(f"{path}{separator}limit={PAGE}&after_id={after}")
        if reply.status != 200:
            raise RuntimeError(f"GET {path} answered {reply.status}: {reply.body}")
        items.extend(reply.body["items"])
        if len(reply.body["items"]) < PAGE:
            return items


def verify(
    admin: Client, expected: Expected, db_path: Path | str | None, data_dir: Path | None = None
) -> list[str]:
    """Return the discrepancies (empty when the books reconcile); `db_path` is what the
    servers' --db named (a PostgreSQL URL comes with its --data-dir)."""
    problems: list[str] = []
    sale_rows = 0
    for index, seller_id in enumerate(expected.seller_ids):
        problems += _seller(admin, seller_id, expected.credited[index] - expected.acked[index])
        sale_rows += len(all_items(admin, f"/api/sales?seller_id={seller_id}"))
    if sale_rows != expected.acked_sales:
        problems.append(
            f"{expected.acked_sales:,} sales were answered 201 but "
            f"{sale_rows:,} sale rows exist for these sellers"
        )
    audit = admin.get("/api/audit").body
    if not audit.get("consistent"):
        problems.append(f"/api/audit is not consistent: {audit.get('problems')}")
    if db_path is not None:
        result = cli_audit(db_path, data_dir)
        if result.returncode != 0:
            problems.append(f"chargebox audit exited {result.returncode}: {result.stderr.strip()}")
    return problems


def _seller(admin: Client, seller_id: int, expected_balance: int) -> list[str]:
    problems = []
    reply = admin.get(f"/api/sellers/{seller_id}")
    if reply.status != 200:
        return [f"seller {seller_id}: GET answered {reply.status}"]
    balance = reply.body["balance"]
    entries = all_items(admin, f"/api/ledger?seller_id={seller_id}")
    ledger_sum = sum(entry["amount"] for entry in entries)
    if balance != expected_balance:
        problems.append(
            f"seller {seller_id}: expected balance {expected_balance:,} (credited "
            f"minus acknowledged sales) but the server says {balance:,}"
        )
    if ledger_sum != balance:
        problems.append(f"seller {seller_id}: balance {balance:,} but ledger sum {ledger_sum:,}")
    negative = [entry["id"] for entry in entries if entry["balance_after"] < 0]
    if negative:
        problems.append(f"seller {seller_id}: entries {negative[:5]} have a negative balance_after")
    return problems
