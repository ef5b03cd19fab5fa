"""THE money module: the only code that changes a balance or writes a ledger entry.

Every movement is its ledger entry, then the balance UPDATE, both guarded
(`balance + delta BETWEEN 0 AND 10^15`), inside the caller's `db.write_tx()`;
this module never opens a transaction, it asserts one is open. Hand-written SQL keeps the write lock
short (peewee's query builder costs ~80 us per statement inside it).
`audit()` re-checks invariants I1-I5 from the rows themselves.
"""

from __future__ import annotations

import sqlite3

from chargebox import db, seals
from chargebox.config import MAX_BALANCE
from chargebox.errors import BalanceLimitExceeded, InsufficientCredit, NotFound, NotPending
from chargebox.money import check_balance

AUDIT_PROBLEM_CAP = 100


_GUARD = "FROM seller WHERE id = ? AND balance + ? BETWEEN 0 AND ?"
_ENTRY = (
    "INSERT INTO ledger_entry (seller_id, kind, amount, balance_after, credit_request_id,"
    f" sale_id, reason, created_at) SELECT id, ?, ?, balance + ?, ?, ?, ?, ? {_GUARD} "
    "RETURNING id, balance_after"
)
_BALANCE = (
    "UPDATE seller SET balance = balance + ? WHERE id = ? AND balance + ? BETWEEN 0 AND ? "
    "RETURNING balance"
)
_SALE = (
    "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at) "
    f"SELECT id, ?, ?, balance + ?, ? {_GUARD} RETURNING id, balance_after"
)
_HEAD = "SELECT entries, entry_mac FROM seller_head WHERE seller_id = ?"
_SEAL = "INSERT INTO ledger_seal (entry_id, mac) VALUES (?, ?)"
_NEW_HEAD = (
    "INSERT INTO seller_head (seller_id, entry_id, entries, entry_mac, mac) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (seller_id) DO UPDATE SET entry_id = excluded.entry_id, "
    "entries = excluded.entries, entry_mac = excluded.entry_mac, mac = excluded.mac"
)
_PHONE_TOTAL = (
    "INSERT INTO phone (number, total_charged, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (number) DO UPDATE SET total_charged = total_charged + excluded.total_charged"
)


def _refuse(conn: sqlite3.Connection, seller_id: int, delta: int) -> None:
    """Say why a guarded movement matched no row: no seller, not enough credit, or the cap."""
    found = conn.execute("SELECT balance FROM seller WHERE id = ?", (seller_id,)).fetchall()
    if not found:
        raise NotFound(f"seller {seller_id} does not exist")
    if delta < 0:
        raise InsufficientCredit(f"balance {found[0][0]:,} toman does not cover {-delta:,} toman")
    raise BalanceLimitExceeded(f"a balance may not exceed {MAX_BALANCE:,} toman")


def _move(
    conn: sqlite3.Connection,
    seller_id: int,
    delta: int,
    kind: str,
    now: str,
    credit_request_id: int | None = None,
    sale_id: int | None = None,
    reason: str | None = None,
    phone: str | None = None,
) -> dict:
    """Record `delta` in the ledger, then apply it to the balance; both guarded (I1-I3).

    The entry comes first: the database refuses a balance UPDATE that does not land
    on the newest entry's balance_after, so no balance can change without its entry.
    """
    params = (
        kind,
        delta,
        delta,
        credit_request_id,
        sale_id,
        reason,
        now,
        seller_id,
        delta,
        MAX_BALANCE,
    )
    rows = conn.execute(_ENTRY, params).fetchall()
    if not rows:
        _refuse(conn, seller_id, delta)
    entry_id, balance_after = rows[0]
    updated = conn.execute(_BALANCE, (delta, seller_id, delta, MAX_BALANCE)).fetchall()
    if [(check_balance(balance_after),)] != updated:
        raise AssertionError(f"seller {seller_id}: balance {updated} != entry {balance_after}")
    entry = (entry_id, seller_id, kind, delta, balance_after, credit_request_id, sale_id,
             reason, now, phone)  # fmt: skip
    _seal(conn, entry)
    return {
        "id": entry_id, "seller_id": seller_id, "kind": kind, "amount": delta,
        "balance_after": balance_after, "credit_request_id": credit_request_id,
        "sale_id": sale_id, "reason": reason, "created_at": now,
    }  # fmt: skip


def _seal(conn: sqlite3.Connection, entry: tuple) -> None:
    """Chain the new entry's seal to its predecessor's and move the seller's sealed head."""
    key = db.ledger_key()
    if key is None:
        raise AssertionError("no ledger key: start through cli.prepare() (see seals.py)")
    seller_id, entry_id = entry[1], entry[0]
    head = conn.execute(_HEAD, (seller_id,)).fetchone()
    entries, previous = head if head else (0, seals.GENESIS)
    mac = seals.entry_mac(key, previous, entry)
    conn.execute(_SEAL, (entry_id, mac))
    head_mac = seals.head_mac(key, seller_id, entry_id, entries + 1, mac, entry[4])
    conn.execute(_NEW_HEAD, (seller_id, entry_id, entries + 1, mac, head_mac))


def approve_credit_request(request_id: int, now: str) -> dict:
    """Mark a pending request approved and credit its seller, exactly once (I4)."""
    conn = db.write_connection()
    rows = conn.execute(
        "UPDATE credit_request SET status = 'approved', decided_at = ? "
        "WHERE id = ? AND status = 'pending' RETURNING seller_id, amount, created_at",
        (now, request_id),
    ).fetchall()
    if not rows:
        raise_not_pending(request_id)
    seller_id, amount, created_at = rows[0]
    _move(conn, seller_id, amount, "credit", now, credit_request_id=request_id)
    return {
        "id": request_id, "seller_id": seller_id, "amount": amount, "status": "approved",
        "created_at": created_at, "decided_at": now,
    }  # fmt: skip


def raise_not_pending(request_id: int) -> None:
    found = db.rows("SELECT status FROM credit_request WHERE id = ?", (request_id,))
    if not found:
        raise NotFound(f"credit request {request_id} does not exist")
    raise NotPending(f"credit request {request_id} is already {found[0][0]}")


def adjust(seller_id: int, amount: int, reason: str, now: str) -> dict:
    """An admin's signed correction; never below zero (I1)."""
    return _move(db.write_connection(), seller_id, amount, "adjustment", now, reason=reason)


def sell(seller_id: int, number: str, amount: int, now: str) -> dict:
    """Debit a sale: the sale row, its one ledger entry (I4), the balance, the phone total.

    The guarded INSERT of the sale decides; a refusal writes nothing at all, so a
    refused keyed sale can still record its outcome in the same transaction. The
    sale's phone reference is checked at COMMIT (deferred), after the phone upsert.
    """
    conn = db.write_connection()
    rows = conn.execute(
        _SALE, (number, amount, -amount, now, seller_id, -amount, MAX_BALANCE)
    ).fetchall()
    if not rows:
        _refuse(conn, seller_id, -amount)
    sale_id, balance_after = rows[0]
    _move(conn, seller_id, -amount, "sale", now, sale_id=sale_id, phone=number)
    conn.execute(_PHONE_TOTAL, (number, amount, now))
    return {
        "id": sale_id, "seller_id": seller_id, "phone": number, "amount": amount,
        "balance_after": balance_after, "created_at": now,
    }  # fmt: skip


# --- audit -------------------------------------------------------------------------------

_AUDIT_CHECKS = (
    (
        "I1",
        "SELECT id, NULL, 'balance ' || balance || ' is negative or not an integer' "
        "FROM seller WHERE typeof(balance) != 'integer' OR balance < 0",
    ),
    (
        "I1",
        "SELECT seller_id, id, 'balance_after ' || balance_after || ' is negative' "
        "FROM ledger_entry WHERE balance_after < 0",
    ),
    (
        "I2",
        "SELECT s.id, (SELECT MAX(id) FROM ledger_entry WHERE seller_id = s.id), "
        "'balance ' || s.balance || ' != ledger sum ' || "
        "COALESCE((SELECT SUM(amount) FROM ledger_entry WHERE seller_id = s.id), 0) "
        "FROM seller s WHERE s.balance IS NOT "
        "COALESCE((SELECT SUM(amount) FROM ledger_entry WHERE seller_id = s.id), 0)",
    ),
    (
        "I3",
        "SELECT seller_id, id, 'balance_after ' || balance_after || ' != previous ' || prev "
        "|| ' + amount ' || amount FROM (SELECT id, seller_id, amount, balance_after, "
        "LAG(balance_after, 1, 0) OVER (PARTITION BY seller_id ORDER BY id) AS prev "
        "FROM ledger_entry) WHERE balance_after IS NOT prev + amount",
    ),
    (
        "I4",
        "SELECT r.seller_id, MIN(l.id), 'credit request ' || r.id || ' (' || r.status || ', '"
        " || r.amount || ') has ' || COUNT(l.id) || ' credit entries' "
        "FROM credit_request r LEFT JOIN ledger_entry l ON l.credit_request_id = r.id "
        "GROUP BY r.id HAVING (r.status = 'approved' AND (COUNT(l.id) != 1 "
        "OR MIN(l.amount) != r.amount OR MIN(l.seller_id) != r.seller_id "
        "OR MIN(l.kind) != 'credit')) OR (r.status != 'approved' AND COUNT(l.id) > 0)",
    ),
    (
        "I4",
        "SELECT s.seller_id, MIN(l.id), 'sale ' || s.id || ' of ' || s.amount || ' has ' "
        "|| COUNT(l.id) || ' matching debit entries' "
        "FROM sale s LEFT JOIN ledger_entry l ON l.sale_id = s.id AND l.kind = 'sale' "
        "AND l.amount = -s.amount AND l.seller_id = s.seller_id "
        "AND l.balance_after = s.balance_after GROUP BY s.id HAVING COUNT(l.id) != 1",
    ),
    (
        "I4",
        "SELECT l.seller_id, l.id, 'entry points at missing or mismatched sale/request' "
        "FROM ledger_entry l LEFT JOIN sale s ON s.id = l.sale_id "
        "LEFT JOIN credit_request r ON r.id = l.credit_request_id "
        "WHERE (l.kind = 'sale' AND s.id IS NULL) OR (l.kind = 'credit' AND r.id IS NULL) "
        "OR (l.kind NOT IN ('sale', 'credit', 'adjustment'))",
    ),
    (
        "phones",
        "SELECT NULL, NULL, 'phone ' || p.number || ' total ' || p.total_charged || "
        "' != sum of its sales ' || COALESCE(SUM(s.amount), 0) "
        "FROM phone p LEFT JOIN sale s ON s.phone = p.number GROUP BY p.id "
        "HAVING p.total_charged IS NOT COALESCE(SUM(s.amount), 0)",
    ),
)


def audit() -> dict:
    """Re-check I1-I5 and the cross-links from the rows, in one read snapshot."""
    with db.read_tx():
        sellers = db.rows(
            "SELECT s.id, s.balance, COALESCE(SUM(l.amount), 0) FROM seller s "
            "LEFT JOIN ledger_entry l ON l.seller_id = s.id GROUP BY s.id ORDER BY s.id"
        )
        problems = []
        for invariant, sql in _AUDIT_CHECKS:
            for seller_id, entry_id, message in db.rows(sql):
                problems.append(
                    {
                        "invariant": invariant,
                        "seller_id": seller_id,
                        "entry_id": entry_id,
                        "message": message,
                    }
                )
        problems.extend(seals.problems(db.ledger_key()))
        problems.extend(
            {
                "invariant": "I5",
                "seller_id": None,
                "entry_id": None,
                "message": f"schema trigger {name} is missing",
            }
            for name in db.missing_triggers()
        )
        totals = db.rows(
            "SELECT (SELECT COUNT(*) FROM seller), (SELECT COUNT(*) FROM ledger_entry), "
            "(SELECT COUNT(*) FROM sale), (SELECT COALESCE(SUM(balance), 0) FROM seller)"
        )[0]
    problems.sort(key=lambda p: (p["seller_id"] or 0, p["entry_id"] or 0))
    bad_sellers = {p["seller_id"] for p in problems}
    return {
        "consistent": not problems,
        "sellers": [
            {
                "seller_id": sid,
                "balance": balance,
                "ledger_sum": ledger_sum,
                "consistent": balance == ledger_sum and sid not in bad_sellers,
            }
            for sid, balance, ledger_sum in sellers
        ],
        "problems": problems[:AUDIT_PROBLEM_CAP],
        "problem_count": len(problems),
        "totals": dict(
            zip(("sellers", "ledger_entries", "sales", "balance_sum"), totals, strict=True)
        ),
    }
