"""The money module's other half: several sales of one seller as one statement.

A group commit (writer.py) hands a run of one seller's queued sales to
`sell_together`; each is made exactly as `ledger.sell` would make it, with the
same checks in the database, but the batch costs a handful of statements
instead of about ten per sale. PostgreSQL: one statement moves the balance once
by the batch's total and writes everything on it (`_TOGETHER`). SQLite: a TEMP
view's INSTEAD OF trigger makes each row's sale, entry, balance, seal and phone
total in turn, inside one INSERT (`_BATCH`), each checked by the schema's
triggers as it lands.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from chargebox import seals
from chargebox.db import Write
from chargebox.errors import NOT_COVERED, InsufficientCredit
from chargebox.ledger import ACTIVE, NEW_HEAD, PHONE_TOTAL
from chargebox.money import check_balance
from chargebox.writer import Separately

# --- a batch of one seller's sales, set-based (PostgreSQL) ---------------------------------

_TOGETHER_HEAD = (
    "WITH ids AS (SELECT nextval('sale_id_seq') AS sale_id, nextval('ledger_entry_id_seq')"
    " AS entry_id FROM generate_series(1, ?)) SELECT seller.balance, seller.status,"
    " head.entries, head.entry_mac, (SELECT COALESCE(max(seq), 0) FROM ledger_entry"
    " WHERE seller_id = seller.id), ARRAY(SELECT sale_id FROM ids ORDER BY sale_id),"
    " ARRAY(SELECT entry_id FROM ids ORDER BY entry_id) FROM seller"
    " LEFT JOIN seller_head head ON head.seller_id = seller.id WHERE seller.id = ?"
)
# The balance moves once, by the batch's total, from the balance read under the hold; the
# sales, then their entries in seq order (each continuing the chain, I3), their seals,
# the head and the phones' totals land on it; I2 is checked as the statement ends.
_TOGETHER = (
    "WITH moved AS (UPDATE seller SET balance = balance - ? WHERE id = ? AND balance = ?"
    f"{ACTIVE} RETURNING balance), sold AS (SELECT * FROM unnest(CAST(? AS bigint[]),"
    " CAST(? AS bigint[]), CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS bigint[]),"
    " CAST(? AS bigint[]), CAST(? AS text[])) AS s(id, entry_id, seq, phone, amount,"
    " balance_after, mac)), made AS (INSERT INTO sale (id, seller_id, phone, amount,"
    " balance_after, created_at) SELECT sold.id, ?, sold.phone, sold.amount,"
    " sold.balance_after, ? FROM sold CROSS JOIN moved ORDER BY sold.id RETURNING id),"
    " entry AS (INSERT INTO ledger_entry (id, seller_id, seq, kind, amount, balance_after,"
    " sale_id, created_at) SELECT sold.entry_id, ?, sold.seq, 'sale', -sold.amount,"
    " sold.balance_after, sold.id, ? FROM sold JOIN made ON made.id = sold.id"
    " ORDER BY sold.seq RETURNING id), sealed AS (INSERT INTO ledger_seal (entry_id, mac)"
    " SELECT entry.id, sold.mac FROM entry JOIN sold ON sold.entry_id = entry.id),"
    " head AS (INSERT INTO seller_head (seller_id, entry_id, entries, entry_mac, mac)"
    " SELECT ?, ?, ?, ?, ? FROM moved ON CONFLICT (seller_id) DO UPDATE SET"
    " entry_id = excluded.entry_id, entries = excluded.entries,"
    " entry_mac = excluded.entry_mac, mac = excluded.mac), phones AS (INSERT INTO phone"
    " (number, total_charged, created_at) SELECT sold.phone, CAST(sum(sold.amount) AS BIGINT),"
    " ? FROM sold CROSS JOIN moved GROUP BY sold.phone ORDER BY sold.phone"
    " ON CONFLICT (number) DO UPDATE"
    " SET total_charged = phone.total_charged + excluded.total_charged){also}"
    " SELECT balance FROM moved"
)


# --- the same batch on SQLite ------------------------------------------------------------
# SQLite has neither writable CTEs nor statement-level triggers: its triggers check each
# entry against the balance as the entry is inserted (I2, I3). So a batch goes through a
# view of this connection's own (TEMP: no schema change) whose INSTEAD OF trigger makes
# each row's sale exactly as `sell` does, one after another inside one statement: the
# sale, its entry, the balance onto the entry, the entry's seal, the phone's total, each
# checked by the schema's triggers as it lands. One statement for the batch, where alone
# each sale is about ten (a round trip each, and the GIL won back after each).
_BATCH_HEAD = (
    "SELECT seller.balance, seller.status, head.entries, head.entry_mac,"
    " (SELECT COALESCE(max(id), 0) FROM sale), (SELECT COALESCE(max(id), 0) FROM ledger_entry)"
    " FROM seller LEFT JOIN seller_head head ON head.seller_id = seller.id WHERE seller.id = ?"
)
_BATCH_VIEW = (
    "CREATE TEMP VIEW IF NOT EXISTS sale_batch (id, entry_id, seller_id, phone, amount,"
    " balance_after, created_at, mac) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL WHERE 0"
)
_BATCH_TRIGGER = (
    "CREATE TEMP TRIGGER IF NOT EXISTS sale_batch_sells INSTEAD OF INSERT ON sale_batch BEGIN"
    " INSERT INTO sale (id, seller_id, phone, amount, balance_after, created_at) VALUES"
    " (NEW.id, NEW.seller_id, NEW.phone, NEW.amount, NEW.balance_after, NEW.created_at);"
    " INSERT INTO ledger_entry (id, seller_id, kind, amount, balance_after, sale_id,"
    " created_at) VALUES (NEW.entry_id, NEW.seller_id, 'sale', -NEW.amount,"
    " NEW.balance_after, NEW.id, NEW.created_at);"
    " UPDATE seller SET balance = NEW.balance_after WHERE id = NEW.seller_id;"
    " INSERT INTO ledger_seal (entry_id, mac) VALUES (NEW.entry_id, NEW.mac);"
    + PHONE_TOTAL.replace("(?, ?, ?)", "(NEW.phone, NEW.amount, NEW.created_at)")
    + "; END"
)
# json_extract, not ->> (SQLite 3.38): a JSON string is TEXT, a number INTEGER, null NULL.
_BATCH = (
    "INSERT INTO sale_batch SELECT "
    + ", ".join(f"json_extract(j.value, '$[{n}]')" for n in range(8))
    + " FROM json_each(?) AS j ORDER BY j.key"
)


def sell_together(write: Write, seller_id: int, sales: list[tuple[str, int]], now: str,
                  also: Callable[[list], list[tuple[str, tuple]]],
                  left_out: Callable[[], set[int]] = set) -> list:  # fmt: skip
    """Several sales (number, amount) of one active seller in one statement, each as `sell`
    would make it, in their order; for each, its sale or InsufficientCredit, or None for
    those `left_out()` names (by index; read once the seller is held).

    The seller (PostgreSQL: its row held) is read with its balance, status and sealed
    head, and what numbers the new rows (PostgreSQL: ids from the sequences and the
    newest seq; SQLite: the newest ids, under the file's lock) in one round trip; which
    sales the balance covers, their balances after, ids and seals are worked out here, in
    order; then one statement writes them all (`_TOGETHER`, `_BATCH`), the head moves,
    and what `also(outcomes)` adds is written with them (the keys' records; PostgreSQL:
    as further WITH queries). The database checks it all as it checks one sale (I2-I4
    triggers). A seller that is missing or not active is `Separately`; with that,
    whatever else fails the batch (a key's UNIQUE) sends each sale alone (writer.py).
    """
    if write.ledger_key is None:
        raise AssertionError("no ledger key: start through cli.prepare() (see seals.py)")
    write.hold(seller_id)
    balance, entries, previous, seq, sale_ids, entry_ids = _head(write, seller_id, len(sales))
    before, entries, previous = balance, entries or 0, previous or seals.GENESIS
    outcomes: list = []
    sold: list[list] = [[] for _ in range(7)]  # sale id, entry id, seq, phone, amount, after, seal
    skipped = left_out()
    ids = zip(sale_ids, entry_ids, strict=False)
    for index, (number, amount) in enumerate(sales):
        if index in skipped:
            outcomes.append(None)
            continue
        if amount > balance:
            outcomes.append(InsufficientCredit(NOT_COVERED, balance=balance, amount=amount))
            continue
        (sale_id, entry_id), balance = next(ids), balance - amount
        seq, entries = seq + 1, entries + 1
        entry = {"id": entry_id, "seller_id": seller_id, "kind": "sale", "amount": -amount,
                 "balance_after": balance, "credit_request_id": None, "sale_id": sale_id,
                 "reason": None, "created_at": now, "refund_of": None, "phone": number}  # fmt: skip
        previous = seals.entry_mac(write.ledger_key, previous, seals.values(entry))
        for column, value in zip(sold, (sale_id, entry_id, seq, number, amount, balance,
                                        previous), strict=True):  # fmt: skip
            column.append(value)
        outcomes.append({"id": sale_id, "seller_id": seller_id, "phone": number,
                         "amount": amount, "balance_after": balance,
                         "created_at": now})  # fmt: skip
    queries = also(outcomes)
    if not sold[0]:  # nothing sold: only what `also` records
        _write_also(write, queries)
        return outcomes
    mac = seals.head_mac(write.ledger_key, seller_id, sold[1][-1], entries, previous, balance)
    head = (entries, previous, mac)
    if write.balance_first:
        moved = _together(write, seller_id, before, sold, now, head, queries)
    else:
        moved = _batch(write, seller_id, sold, now, head, queries)
    if moved != [(check_balance(balance),)]:
        raise AssertionError(f"seller {seller_id}: balance {moved} != {balance} after a batch")
    return outcomes


def _head(write: Write, seller_id: int, count: int) -> tuple:
    """The held seller's balance, sealed head (entries, seal), newest seq, and ids for
    `count` sales and entries (SQLite: from the newest, under the file's lock; it has no
    seq); `Separately` if it is missing or not active."""
    if write.balance_first:
        found = write.rows(_TOGETHER_HEAD, (count, seller_id))
    else:
        found = write.rows(_BATCH_HEAD, (seller_id,))
    if not found or found[0][1] != "active":
        raise Separately
    if write.balance_first:
        balance, _, entries, previous, seq, sale_ids, entry_ids = found[0]
        return balance, entries, previous, seq, sale_ids, entry_ids
    balance, _, entries, previous, last_sale, last_entry = found[0]
    return (balance, entries, previous, 0, range(last_sale + 1, last_sale + 1 + count),
            range(last_entry + 1, last_entry + 1 + count))  # fmt: skip


def _write_also(write: Write, queries: list[tuple[str, tuple]]) -> None:
    """What `also` adds, when nothing was sold (PostgreSQL: in one statement)."""
    if write.balance_first and queries:
        extra, params = _as_with(queries)
        write.execute(f"WITH{extra[1:]} SELECT 1", params)
    elif queries:
        write.send_all(queries)


def _as_with(queries: list[tuple[str, tuple]]) -> tuple[str, tuple]:
    """`queries` as further WITH queries (`, q0 AS (...)`...), and their parameters."""
    extra = "".join(f", q{n} AS ({sql})" for n, (sql, _) in enumerate(queries))
    return extra, tuple(value for _, params in queries for value in params)


def _together(write: Write, seller_id: int, before: int, sold: list[list], now: str,
              head: tuple, queries: list[tuple[str, tuple]]) -> list:  # fmt: skip
    """PostgreSQL: the batch, the head (entries, seal, its mac) and `queries` in one
    statement; the balance after it."""
    extra, params = _as_with(queries)
    after = sold[5][-1]
    return write.rows(
        _TOGETHER.format(also=extra),
        (before - after, seller_id, before, *sold, seller_id, now, seller_id, now,
         seller_id, sold[1][-1], *head, now, *params),
    )  # fmt: skip


def _batch(write: Write, seller_id: int, sold: list[list], now: str, head: tuple,
           queries: list[tuple[str, tuple]]) -> list:  # fmt: skip
    """SQLite: the batch through `sale_batch` (each sale made by its trigger, in order),
    the head (entries, seal, its mac), `queries`; the balance after it."""
    write.execute(_BATCH_VIEW)  # this connection's, made once (again after a rollback)
    write.execute(_BATCH_TRIGGER)
    rows = [(sale, entry, seller_id, number, amount, after, now, mac)
            for sale, entry, _, number, amount, after, mac in zip(*sold, strict=True)]  # fmt: skip
    write.execute(_BATCH, (json.dumps(rows),))
    write.send_all([(NEW_HEAD, (seller_id, sold[1][-1], *head)), *queries])
    return write.rows("SELECT balance FROM seller WHERE id = ?", (seller_id,))
