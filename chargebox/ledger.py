"""THE money module: the only code that changes a balance or writes a ledger entry.

Every movement is its ledger entry, then the balance UPDATE, both guarded
(`balance + delta BETWEEN 0 AND 10^15`), inside the caller's write: each function
takes the open `Write` and never opens a transaction of its own. Hand-written
SQL keeps the write lock short. Deciding a credit request (approve or reject)
lives here too, in one place. `audit` re-checks I1-I5 from the rows themselves.
"""

from __future__ import annotations

from chargebox import seals
from chargebox.config import MAX_BALANCE
from chargebox.db import Write
from chargebox.errors import BalanceLimitExceeded, InsufficientCredit, NotFound, NotPending
from chargebox.money import check_balance
from chargebox.queries import CREDIT_REQUEST, LEDGER_ENTRY, SALE

_GUARD = "FROM seller WHERE id = :seller_id AND balance + :delta BETWEEN 0 AND :ceiling"
_ENTRY = (
    "INSERT INTO ledger_entry (seller_id, kind, amount, balance_after, credit_request_id,"
    " sale_id, reason, created_at) SELECT id, :kind, :delta, balance + :delta,"
    f" :credit_request_id, :sale_id, :reason, :now {_GUARD} {LEDGER_ENTRY.returning}"
)
_BALANCE = (
    "UPDATE seller SET balance = balance + :delta"
    " WHERE id = :seller_id AND balance + :delta BETWEEN 0 AND :ceiling RETURNING balance"
)
_NEW_SALE = (
    "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
    f" SELECT id, :phone, :amount, balance + :delta, :now {_GUARD} {SALE.returning}"
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
    "ON CONFLICT (number) DO UPDATE"
    " SET total_charged = phone.total_charged + excluded.total_charged"
)
# PostgreSQL's order (Write.balance_first): the balance has moved, so the entry and the
# sale land on it; the entry is numbered after the seller's newest (read in this later
# statement, which sees what the row lock waited for).
_ENTRY_ON_BALANCE = (
    "INSERT INTO ledger_entry (seller_id, seq, kind, amount, balance_after, credit_request_id,"
    " sale_id, reason, created_at) SELECT :seller_id, COALESCE(MAX(seq), 0) + 1, :kind,"
    " CAST(:delta AS BIGINT), CAST(:balance AS BIGINT), CAST(:credit_request_id AS BIGINT),"
    " CAST(:sale_id AS BIGINT), CAST(:reason AS TEXT), :now FROM ledger_entry"
    f" WHERE seller_id = :seller_id {LEDGER_ENTRY.returning}"
)
_SALE_ON_BALANCE = (
    "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
    f" VALUES (:seller_id, :phone, :amount, :balance, :now) {SALE.returning}"
)
_DECIDE = (
    "UPDATE credit_request SET status = :status, decided_at = :now"
    f" WHERE id = :request_id AND status = 'pending' {CREDIT_REQUEST.returning}"
)


def _refuse(write: Write, seller_id: int, delta: int) -> None:
    """Say why a guarded movement matched no row: no seller, not enough credit, or the cap."""
    found = write.rows("SELECT balance FROM seller WHERE id = ?", (seller_id,))
    if not found:
        raise NotFound(f"seller {seller_id} does not exist")
    if delta < 0:
        raise InsufficientCredit(f"balance {found[0][0]:,} toman does not cover {-delta:,} toman")
    raise BalanceLimitExceeded(f"a balance may not exceed {MAX_BALANCE:,} toman")


def _move(write: Write, seller_id: int, delta: int, kind: str, now: str, *,
          credit_request_id: int | None = None, sale_id: int | None = None,
          reason: str | None = None, phone: str | None = None,
          taken: int | None = None) -> dict:  # fmt: skip
    """Record `delta` in the ledger and apply it to the balance; both guarded (I1-I3).

    SQLite: the entry first, since its triggers refuse a balance UPDATE that does not
    land on the newest entry. PostgreSQL (`balance_first`): the balance first, for the
    seller's row lock, unless the caller already moved it (`taken`: the new balance).
    """
    params = {
        "seller_id": seller_id, "delta": delta, "ceiling": MAX_BALANCE, "kind": kind,
        "credit_request_id": credit_request_id, "sale_id": sale_id, "reason": reason,
        "now": now,
    }  # fmt: skip
    if write.balance_first:
        params["balance"] = _take(write, seller_id, delta) if taken is None else taken
        entry = write.dicts(_ENTRY_ON_BALANCE, params)[0]
    else:
        made = write.dicts(_ENTRY, params)
        if not made:
            _refuse(write, seller_id, delta)
        entry = made[0]
        updated = write.rows(_BALANCE, params)
        if [(check_balance(entry["balance_after"]),)] != updated:
            raise AssertionError(f"seller {seller_id}: balance {updated} != entry {entry}")
    _seal(write, entry, phone)
    return entry


def _take(write: Write, seller_id: int, delta: int) -> int:
    """Move the balance by `delta`, guarded; the new balance (or the refusal)."""
    moved = write.rows(_BALANCE, {"seller_id": seller_id, "delta": delta, "ceiling": MAX_BALANCE})
    if not moved:
        _refuse(write, seller_id, delta)
    return check_balance(moved[0][0])


def _seal(write: Write, entry: dict, phone: str | None) -> None:
    """Chain the new entry's seal to its predecessor's and move the seller's sealed head."""
    if write.ledger_key is None:
        raise AssertionError("no ledger key: start through cli.prepare() (see seals.py)")
    head = write.execute(_HEAD, (entry["seller_id"],)).fetchone()
    entries, previous = head if head else (0, seals.GENESIS)
    values = tuple({**entry, "phone": phone}[name] for name in seals.ENTRY_COLUMNS)
    mac = seals.entry_mac(write.ledger_key, previous, values)
    write.execute(_SEAL, (entry["id"], mac))
    head_mac = seals.head_mac(write.ledger_key, entry["seller_id"], entry["id"], entries + 1,
                              mac, entry["balance_after"])  # fmt: skip
    write.execute(_NEW_HEAD, (entry["seller_id"], entry["id"], entries + 1, mac, head_mac))


def approve_credit_request(write: Write, request_id: int, now: str) -> dict:
    """Mark a pending request approved and credit its seller, exactly once (I4)."""
    request = _decide(write, request_id, "approved", now)
    _move(write, request["seller_id"], request["amount"], "credit", now,
          credit_request_id=request_id)  # fmt: skip
    return request


def reject_credit_request(write: Write, request_id: int, now: str) -> dict:
    """Mark a pending request rejected; nothing moves."""
    return _decide(write, request_id, "rejected", now)


def _decide(write: Write, request_id: int, status: str, now: str) -> dict:
    """Decide a pending request, once: a decided one is NotPending (and final, I4)."""
    decided = write.dicts(_DECIDE, {"status": status, "now": now, "request_id": request_id})
    if decided:
        return decided[0]
    found = write.rows("SELECT status FROM credit_request WHERE id = ?", (request_id,))
    if not found:
        raise NotFound(f"credit request {request_id} does not exist")
    raise NotPending(f"credit request {request_id} is already {found[0][0]}")


_REPLAY_BALANCE = "UPDATE seller SET balance = :balance_after WHERE id = :seller_id"
_REPLAY_ENTRY = (
    "INSERT INTO ledger_entry (id, seller_id, seq, kind, amount, balance_after,"
    " credit_request_id, sale_id, reason, created_at) VALUES (:id, :seller_id, :seq, :kind,"
    " :amount, :balance_after, :credit_request_id, :sale_id, :reason, :created_at)"
)


def replay(write: Write, entry: dict, seq: int) -> None:
    """An entry copied from another database (`chargebox copy`), its id kept: the balance
    first, then the entry, so that the target's triggers check it as they check a new one.
    Its seal is copied as it is (seals do not cover `seq`)."""
    if not write.balance_first:
        raise AssertionError("entries are replayed only into a balance-first database")
    write.execute(_REPLAY_BALANCE, entry)
    write.execute(_REPLAY_ENTRY, {**entry, "seq": seq})


def adjust(write: Write, seller_id: int, amount: int, reason: str, now: str) -> dict:
    """An admin's signed correction; never below zero (I1)."""
    return _move(write, seller_id, amount, "adjustment", now, reason=reason)


def sell(write: Write, seller_id: int, number: str, amount: int, now: str) -> dict:
    """Debit a sale: the sale row, its one ledger entry (I4), the balance, the phone total.

    The guarded INSERT of the sale decides; a refusal writes nothing at all, so a
    refused keyed sale can still record its outcome in the same transaction. The
    sale's phone reference is checked at COMMIT (deferred), after the phone upsert.
    """
    params = {"seller_id": seller_id, "phone": number, "amount": amount, "delta": -amount,
              "now": now, "ceiling": MAX_BALANCE}  # fmt: skip
    taken = None
    if write.balance_first:  # the sale lands on the balance its debit has moved
        params["balance"] = taken = _take(write, seller_id, -amount)
        sale = write.dicts(_SALE_ON_BALANCE, params)[0]
    else:
        made = write.dicts(_NEW_SALE, params)
        if not made:
            _refuse(write, seller_id, -amount)
        sale = made[0]
    _move(write, seller_id, -amount, "sale", now, sale_id=sale["id"], phone=number, taken=taken)
    write.execute(_PHONE_TOTAL, (number, amount, now))
    return sale
