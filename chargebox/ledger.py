"""THE money module: the only code that changes a balance or writes a ledger entry.

Every movement is its ledger entry and the balance UPDATE, both guarded
(`balance + delta BETWEEN 0 AND 10^15`), inside the caller's write (SQLite: the
entry first; PostgreSQL: the balance first, its seller's row held): each function
takes the open `Write` and never opens a transaction of its own. Hand-written
SQL keeps the write lock short. Deciding a credit request (approve or reject)
lives here too, in one place, and a sale's refund (`refund`, once per sale).
The sales queued together go as one statement, one seller's or several's
(sale_batches.py, the other half of this module), each as `sell` would make it.
"""

from __future__ import annotations

from chargebox import seals
from chargebox.config import MAX_BALANCE, MAX_PHONE_TOTAL
from chargebox.db import Write
from chargebox.errors import (
    NOT_COVERED,
    OVER_CEILING,
    SUSPENDED,
    AlreadyRefunded,
    BalanceLimitExceeded,
    InsufficientCredit,
    NotFound,
    NotPending,
    PhoneTotalExceeded,
    SellerSuspended,
)
from chargebox.money import check_balance
from chargebox.queries import CREDIT_REQUEST, LEDGER_ENTRY, SALE

_GUARD = "FROM seller WHERE id = :seller_id AND balance + :delta BETWEEN 0 AND :ceiling"
_ENTRY = (
    "INSERT INTO ledger_entry (seller_id, kind, amount, balance_after, credit_request_id,"
    " sale_id, reason, created_at, refund_of) SELECT id, :kind, :delta, balance + :delta,"
    f" :credit_request_id, :sale_id, :reason, :now, :refund_of {_GUARD} {LEDGER_ENTRY.returning}"
)
_BALANCE = (
    "UPDATE seller SET balance = balance + :delta"
    " WHERE id = :seller_id AND balance + :delta BETWEEN 0 AND :ceiling RETURNING balance"
)
# A sale needs an active seller too, checked inside its write: a sale queued when the
# seller's suspension commits is refused, not sold (a trigger refuses it as well).
ACTIVE = " AND status = 'active'"
_NEW_SALE = (
    "INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
    f" SELECT id, :phone, :amount, balance + :delta, :now {_GUARD}{ACTIVE} {SALE.returning}"
)
_HEAD = "SELECT entries, entry_mac FROM seller_head WHERE seller_id = ?"
_SEAL = "INSERT INTO ledger_seal (entry_id, mac) VALUES (?, ?)"
NEW_HEAD = (
    "INSERT INTO seller_head (seller_id, entry_id, entries, entry_mac, mac) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (seller_id) DO UPDATE SET entry_id = excluded.entry_id, "
    "entries = excluded.entries, entry_mac = excluded.entry_mac, mac = excluded.mac"
)
PHONE_TOTAL = (
    "INSERT INTO phone (number, total_charged, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (number) DO UPDATE"
    " SET total_charged = phone.total_charged + excluded.total_charged"
)
# PostgreSQL's order (Write.balance_first), in one statement: the balance moves, the sale
# (if any) and the entry land on it, the entry numbered after the seller's newest, and the
# sealed head comes back for the seal. The seller's row is held already (Write.hold), so
# nothing here waits for a lock, and the statement's snapshot, taken after the lock was
# had, sees the seller's newest entry and head. (A statement that waited for the lock
# would read them from before: its snapshot is taken when it starts.)
_MOVED = (
    "WITH moved AS (UPDATE seller SET balance = balance + :delta"
    " WHERE id = :seller_id AND balance + :delta BETWEEN 0 AND :ceiling RETURNING balance)"
)
_MADE = (
    ", made AS (INSERT INTO sale (seller_id, phone, amount, balance_after, created_at)"
    f" SELECT :seller_id, :phone, :amount, balance, :now FROM moved {SALE.returning})"
)
_ON_MOVED = (
    ", entry AS (INSERT INTO ledger_entry (seller_id, seq, kind, amount, balance_after,"
    " credit_request_id, sale_id, reason, created_at, refund_of) SELECT :seller_id, (SELECT"
    " COALESCE(MAX(seq), 0) + 1 FROM ledger_entry WHERE seller_id = :seller_id), :kind,"
    " CAST(:delta AS BIGINT), moved.balance, CAST(:credit_request_id AS BIGINT), {sale_id},"
    " CAST(:reason AS TEXT), :now, CAST(:refund_of AS BIGINT)"
    f" FROM moved{{made}} {LEDGER_ENTRY.returning})"
    " SELECT entry.*, head.entries AS head_entries, head.entry_mac AS head_entry_mac{sale}"
    " FROM entry{join} LEFT JOIN seller_head head ON head.seller_id = entry.seller_id"
)
_MOVE_ON_BALANCE = _MOVED + _ON_MOVED.format(
    sale_id="CAST(NULL AS BIGINT)", made="", sale="", join=""
)
_SALE_ON_BALANCE = (
    _MOVED.replace(" RETURNING balance)", f"{ACTIVE} RETURNING balance)")
    + _MADE
    + _ON_MOVED.format(
        sale_id="made.id",
        made=", made",
        sale="".join(f", made.{name} AS made_{name}" for name in SALE.columns),
        join=" CROSS JOIN made",
    )
)
# Never before the request was made: a clock set back, or another host's clock ahead when
# it was made, would otherwise show it (and its credit entry) decided before it was asked.
_DECIDE = (
    "UPDATE credit_request SET status = :status,"
    " decided_at = CASE WHEN created_at > :now THEN created_at ELSE :now END"
    f" WHERE id = :request_id AND status = 'pending' {CREDIT_REQUEST.returning}"
)


def _refuse(write: Write, seller_id: int, delta: int, sale: bool = False) -> None:
    """Say why a guarded movement matched no row: no seller, a suspended seller's sale,
    not enough credit, or the cap."""
    found = write.rows("SELECT balance, status FROM seller WHERE id = ?", (seller_id,))
    if not found:
        raise NotFound("seller {seller_id} does not exist", seller_id=seller_id)
    if sale and found[0][1] != "active":
        raise SellerSuspended(SUSPENDED)
    if delta < 0:
        raise InsufficientCredit(NOT_COVERED, balance=found[0][0], amount=-delta)
    raise BalanceLimitExceeded(OVER_CEILING, limit=MAX_BALANCE)


def _move(write: Write, seller_id: int, delta: int, kind: str, now: str, *,
          credit_request_id: int | None = None, sale_id: int | None = None,
          reason: str | None = None, phone: str | None = None,
          refund_of: int | None = None) -> dict:  # fmt: skip
    """Record `delta` in the ledger and apply it to the balance; both guarded (I1-I3).

    SQLite: the entry first, since its triggers refuse a balance UPDATE that does not
    land on the newest entry. PostgreSQL (`balance_first`): the balance first, for the
    seller's row lock, and the entry on it, in one statement (`_on_balance`).
    """
    params = {
        "seller_id": seller_id, "delta": delta, "ceiling": MAX_BALANCE, "kind": kind,
        "credit_request_id": credit_request_id, "sale_id": sale_id, "reason": reason,
        "now": now, "refund_of": refund_of,
    }  # fmt: skip
    head = None
    if write.balance_first:
        row, head = _on_balance(write, _MOVE_ON_BALANCE, params)
        entry = {name: row[name] for name in LEDGER_ENTRY.columns}
    else:
        made = write.dicts(_ENTRY, params)
        if not made:
            _refuse(write, seller_id, delta)
        entry = made[0]
        updated = write.rows(_BALANCE, params)
        if [(check_balance(entry["balance_after"]),)] != updated:
            raise AssertionError(f"seller {seller_id}: balance {updated} != entry {entry}")
    write.send_all(_seal(write, entry, phone, head))
    return entry


def _on_balance(write: Write, sql: str, params: dict) -> tuple[dict, tuple[int, str]]:
    """PostgreSQL: hold the seller's row, then move (`_MOVE_ON_BALANCE`, `_SALE_ON_BALANCE`);
    the row made and the seller's sealed head before it (entries, seal), or the refusal."""
    write.hold(params["seller_id"])
    moved = write.dicts(sql, params)
    if not moved:
        _refuse(write, params["seller_id"], params["delta"], params["kind"] == "sale")
    row = moved[0]
    check_balance(row["balance_after"])
    if row["head_entries"] is None:
        return row, (0, seals.GENESIS)
    return row, (row["head_entries"], row["head_entry_mac"])


def _seal(write: Write, entry: dict, phone: str | None,
          head: tuple[int, str] | None) -> list[tuple[str, tuple]]:  # fmt: skip
    """What chains the new entry's seal to its predecessor's and moves the seller's sealed
    head, for the caller to send (`head`: the head before this entry, if it was read)."""
    if write.ledger_key is None:
        raise AssertionError("no ledger key: start through cli.prepare() (see seals.py)")
    if head is None:
        found = write.execute(_HEAD, (entry["seller_id"],)).fetchone()
        head = tuple(found) if found else (0, seals.GENESIS)
    entries, previous = head
    values = seals.values({**entry, "phone": phone})
    mac = seals.entry_mac(write.ledger_key, previous, values)
    head_mac = seals.head_mac(write.ledger_key, entry["seller_id"], entry["id"], entries + 1,
                              mac, entry["balance_after"])  # fmt: skip
    return [
        (_SEAL, (entry["id"], mac)),
        (NEW_HEAD, (entry["seller_id"], entry["id"], entries + 1, mac, head_mac)),
    ]


def approve_credit_request(write: Write, request_id: int, now: str) -> dict:
    """Mark a pending request approved and credit its seller, exactly once (I4)."""
    request = _decide(write, request_id, "approved", now)
    _move(write, request["seller_id"], request["amount"], "credit", request["decided_at"],
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
        raise NotFound("credit request {request_id} does not exist", request_id=request_id)
    raise NotPending(
        "credit request {request_id} is already {status}", request_id=request_id, status=found[0][0]
    )


# The columns of an entry replayed from another database, and their PostgreSQL types.
REPLAYED = {"id": "bigint", "seller_id": "bigint", "seq": "bigint", "kind": "text",
            "amount": "bigint", "balance_after": "bigint", "credit_request_id": "bigint",
            "sale_id": "bigint", "reason": "text", "created_at": "text",
            "refund_of": "bigint"}  # fmt: skip
_REPLAY = (
    "WITH moved AS (UPDATE seller SET balance = m.balance FROM {balances} WHERE seller.id = m.id"
    " RETURNING seller.id) INSERT INTO ledger_entry ({columns}) SELECT {columns} FROM {entries}"
    " ORDER BY id"
)


def replay(write: Write, entries: list[dict]) -> None:
    """Entries copied from another database (`chargebox copy`), in id order, ids and `seq`
    kept, in one statement: each seller's balance moves once, to its last entry's
    balance_after, and the entries land in id order; the target's triggers check each
    entry as they check a new one (I3, I4) and, as the statement ends, that each balance
    rests on its seller's newest entry (I2), as for a batch of sales. (Entry by entry,
    balance first, the seller's row took a new version for each entry of one long
    transaction, and each update walked the versions before it: a million entries
    ran at ~120 a second, slowing.) Seals are copied as they are (they do not cover seq)."""
    if not write.balance_first:
        raise AssertionError("entries are replayed only into a balance-first database")
    last = {entry["seller_id"]: entry["balance_after"] for entry in entries}
    balances, moves = write.table("m", {"id": "bigint", "balance": "bigint"},
                                  [list(last), list(last.values())])  # fmt: skip
    rows, params = write.table("e", REPLAYED, [[e[name] for e in entries] for name in REPLAYED])
    sql = _REPLAY.format(balances=balances, columns=", ".join(REPLAYED), entries=rows)
    write.execute(sql, (*moves, *params))


def adjust(write: Write, seller_id: int, amount: int, reason: str, now: str) -> dict:
    """An admin's signed correction; never below zero (I1)."""
    return _move(write, seller_id, amount, "adjustment", now, reason=reason)


_REFUND_OF = "SELECT id FROM ledger_entry WHERE refund_of = ?"
_PHONE_REFUND = "UPDATE phone SET total_charged = total_charged - ? WHERE number = ?"


def refund(write: Write, sale_id: int, reason: str, now: str) -> dict:
    """Give a sale's whole amount back to its seller, at most once (I4): a ledger entry of
    kind 'refund' naming the sale (UNIQUE), the balance, the phone's total, in this write.

    The sale row never changes: that it was refunded is its refund entry. PostgreSQL: the
    seller's row is held before the look for an earlier refund, so racing refunds of one
    sale (all of one seller) look one after another, each seeing the one before it.
    """
    found = write.rows(
        "SELECT seller_id, phone, amount, created_at FROM sale WHERE id = ?", (sale_id,)
    )
    if not found:
        raise NotFound("sale {sale_id} does not exist", sale_id=sale_id)
    seller_id, number, amount, sold = found[0]
    now = max(now, sold)  # never refunded before it was sold (a clock set back)
    if write.balance_first:
        write.hold(seller_id)
    earlier = write.rows(_REFUND_OF, (sale_id,))
    if earlier:
        raise AlreadyRefunded(
            "sale {sale_id} was refunded already (ledger entry {entry_id})",
            sale_id=sale_id,
            entry_id=earlier[0][0],
        )
    entry = _move(write, seller_id, amount, "refund", now, reason=reason, refund_of=sale_id)
    write.send(_PHONE_REFUND, (amount, number))
    return entry


def sell(write: Write, seller_id: int, number: str, amount: int, now: str) -> dict:
    """Debit a sale: the sale row, its one ledger entry (I4), the balance, the phone total.

    The guarded INSERT of the sale decides (PostgreSQL: the guarded balance UPDATE the
    sale is made from); a refusal writes nothing at all, so a refused keyed sale can
    still record its outcome in the same transaction. The
    sale's phone reference is checked at COMMIT (deferred), after the phone upsert. A
    sale that would pass its number's total past MAX_PHONE_TOTAL is PhoneTotalExceeded,
    before anything is written (the database refuses it too: a batch holding it fails,
    and its sales come here one by one).
    """
    total = write.rows("SELECT total_charged FROM phone WHERE number = ?", (number,))
    if total and total[0][0] > MAX_PHONE_TOTAL - amount:
        raise PhoneTotalExceeded("the total charged to {number} may not exceed {limit:,} toman",
                                 number=number, limit=MAX_PHONE_TOTAL)  # fmt: skip
    params = {"seller_id": seller_id, "phone": number, "amount": amount, "delta": -amount,
              "now": now, "ceiling": MAX_BALANCE}  # fmt: skip
    if write.balance_first:  # the sale and its entry land on the balance the debit moved
        params.update(kind="sale", credit_request_id=None, reason=None, refund_of=None)
        row, head = _on_balance(write, _SALE_ON_BALANCE, params)
        sale = {name: row[f"made_{name}"] for name in SALE.columns}
        sealed = _seal(write, {name: row[name] for name in LEDGER_ENTRY.columns}, number, head)
        write.send_all([*sealed, (PHONE_TOTAL, (number, amount, now))])
    else:
        made = write.dicts(_NEW_SALE, params)
        if not made:
            _refuse(write, seller_id, -amount, sale=True)
        sale = made[0]
        _move(write, seller_id, -amount, "sale", now, sale_id=sale["id"], phone=number)
        write.send(PHONE_TOTAL, (number, amount, now))
    return sale
