"""The money module's other half: queued sales of one or more sellers as one statement.

A group commit (writer.py) hands runs of queued sales, each run one seller's, to
`sell_together`; each sale is made exactly as `ledger.sell` would make it, with the
same checks in the database, but the runs cost a handful of statements in all
instead of about ten per sale. PostgreSQL: one statement moves each seller's balance
once, by its run's total, and writes everything on it (`_TOGETHER`). SQLite: a TEMP
view's INSTEAD OF trigger makes each row's sale, entry, balance, seal and phone
total in turn, inside one INSERT (`_BATCH`), each checked by the schema's triggers
as it lands.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from chargebox import seals
from chargebox.db import Write
from chargebox.errors import NOT_COVERED, InsufficientCredit
from chargebox.ledger import ACTIVE, NEW_HEAD, PHONE_TOTAL
from chargebox.money import check_balance
from chargebox.writer import Separately

Run = tuple[int, list[tuple[str, int]]]  # a seller, and its sales (number, amount) in order
Read = tuple[str, tuple, tuple[str, ...]]  # a query, its parameters, its columns' names
Also = Callable[[list[list]], list[tuple[str, tuple]]]

# --- runs of sellers' sales, set-based (PostgreSQL) -----------------------------------------

# `{read}`: the rows of the caller's read (`sell_together`), as JSON (`_READ`), in one
# row only (not a copy for each seller), or NULL.
_TOGETHER_HEAD = (
    "WITH ids AS (SELECT nextval('sale_id_seq') AS sale_id, nextval('ledger_entry_id_seq')"
    " AS entry_id FROM generate_series(1, ?)) SELECT seller.id, seller.balance, seller.status,"
    " head.entries, head.entry_mac, (SELECT COALESCE(max(seq), 0) FROM ledger_entry"
    " WHERE seller_id = seller.id), ARRAY(SELECT sale_id FROM ids ORDER BY sale_id),"
    " ARRAY(SELECT entry_id FROM ids ORDER BY entry_id),"
    " {read} FROM seller LEFT JOIN seller_head head ON head.seller_id = seller.id"
    " WHERE seller.id = ANY(CAST(? AS bigint[]))"
)
_READ = ("CASE WHEN row_number() OVER () = 1 THEN (SELECT COALESCE(json_agg("
         "json_build_array({columns})), '[]') FROM ({sql}) AS r) END")  # fmt: skip
_BIGINTS = "CAST(? AS bigint[])"
# Each balance moves once, by its run's total, from the balance read under the hold; the
# sales, then their entries in seq order (each continuing its seller's chain, I3), their
# seals, the heads and the phones' totals land on it; I2 is checked as the statement ends.
# A seller the UPDATE did not move (its balance not the one read under the hold, or it no
# longer active) still gets its rows, so that the database itself fails the statement (I2,
# I3, the sale's trigger) rather than leave them out for the check in Python to find.
_TOGETHER = (
    "WITH moved AS (UPDATE seller SET balance = seller.balance - m.total FROM"
    f" unnest({_BIGINTS}, {_BIGINTS}, {_BIGINTS}) AS m(id, total, before)"
    f" WHERE seller.id = m.id AND seller.balance = m.before{ACTIVE}"
    " RETURNING seller.id, seller.balance), sold AS (SELECT * FROM unnest("
    f"{_BIGINTS}, {_BIGINTS}, {_BIGINTS}, {_BIGINTS}, CAST(? AS text[]), {_BIGINTS},"
    f" {_BIGINTS}, CAST(? AS text[])) AS s(seller_id, id, entry_id, seq, phone, amount,"
    " balance_after, mac)), made AS (INSERT INTO sale (id, seller_id, phone, amount,"
    " balance_after, created_at) SELECT sold.id, sold.seller_id, sold.phone, sold.amount,"
    " sold.balance_after, ? FROM sold ORDER BY sold.id RETURNING id), entry AS (INSERT INTO"
    " ledger_entry (id, seller_id, seq, kind, amount, balance_after, sale_id, created_at)"
    " SELECT sold.entry_id, sold.seller_id,"
    " sold.seq, 'sale', -sold.amount, sold.balance_after, sold.id, ? FROM sold"
    " JOIN made ON made.id = sold.id ORDER BY sold.seller_id, sold.seq RETURNING id),"
    " sealed AS (INSERT INTO ledger_seal (entry_id, mac) SELECT entry.id, sold.mac FROM entry"
    " JOIN sold ON sold.entry_id = entry.id), head AS (INSERT INTO seller_head (seller_id,"
    " entry_id, entries, entry_mac, mac) SELECT h.seller_id, h.entry_id, h.entries,"
    f" h.entry_mac, h.mac FROM unnest({_BIGINTS}, {_BIGINTS}, {_BIGINTS}, CAST(? AS text[]),"
    " CAST(? AS text[])) AS h(seller_id, entry_id, entries, entry_mac, mac)"
    " ON CONFLICT (seller_id) DO UPDATE SET"
    " entry_id = excluded.entry_id, entries = excluded.entries,"
    " entry_mac = excluded.entry_mac, mac = excluded.mac), phones AS (INSERT INTO phone"
    " (number, total_charged, created_at) SELECT sold.phone, CAST(sum(sold.amount) AS BIGINT),"
    " ? FROM sold GROUP BY sold.phone"
    " ORDER BY sold.phone ON CONFLICT (number) DO UPDATE"
    " SET total_charged = phone.total_charged + excluded.total_charged){also}"
    " SELECT id, balance FROM moved ORDER BY id"
)


# --- the same runs on SQLite -------------------------------------------------------------
# SQLite has neither writable CTEs nor statement-level triggers: its triggers check each
# entry against the balance as the entry is inserted (I2, I3). So a batch goes through a
# view of this connection's own (TEMP: no schema change) whose INSTEAD OF trigger makes
# each row's sale exactly as `sell` does, one after another inside one statement: the
# sale, its entry, the balance onto the entry, the entry's seal, the phone's total, each
# checked by the schema's triggers as it lands. One statement for the batch, where alone
# each sale is about ten (a round trip each, and the GIL won back after each).
_BATCH_HEAD = (
    "SELECT seller.id, seller.balance, seller.status, head.entries, head.entry_mac,"
    " (SELECT COALESCE(max(id), 0) FROM sale), (SELECT COALESCE(max(id), 0) FROM ledger_entry)"
    " FROM seller LEFT JOIN seller_head head ON head.seller_id = seller.id"
    " WHERE seller.id IN (SELECT value FROM json_each(?))"
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


def sell_together(write: Write, runs: list[Run], now: str, also: Also,
                  left_out: Callable[[list[tuple]], set[tuple[int, int]]] = lambda rows: set(),
                  read: Read | None = None) -> list[list]:  # fmt: skip
    """The sales (number, amount) of each run, one active seller's, in one statement for
    all, each as `sell` would make it, in their order; for each run, for each sale, its
    sale or InsufficientCredit, or None for those `left_out(rows)` names (by run and
    index), given the rows of `read` (its SQL, its parameters and its columns' names),
    read once the sellers are held (PostgreSQL: with their heads, one statement).

    The sellers (PostgreSQL: their rows held, in the order of their ids) are read with
    their balances, status and sealed heads, and what numbers the new rows (PostgreSQL:
    ids from the sequences and each one's newest seq; SQLite: the newest ids, under the
    file's lock) in one round trip; which sales each balance covers, their balances
    after, ids and seals are worked out here, in order; then one statement writes them
    all (`_TOGETHER`, `_BATCH`), the heads move, and what `also(outcomes)` adds is
    written with them (the keys' records; PostgreSQL: as further WITH queries). The
    database checks it all as it checks one sale (I2-I4 triggers). A seller that is
    missing or not active is `Separately`; with that, whatever else fails the statement
    (a key's UNIQUE) sends each run alone, then each sale alone (writer.py).
    """
    if write.ledger_key is None:
        raise AssertionError("no ledger key: start through cli.prepare() (see seals.py)")
    write.hold(*(seller_id for seller_id, _ in runs))
    heads, ids, rows = _heads(write, runs, read)
    skipped = left_out(rows)
    outcomes: list[list] = []
    # seller, sale, entry, seq, number, amount, balance after, the entry's seal
    sold: list[list] = [[] for _ in range(8)]
    moves: list[list] = [[] for _ in range(3)]  # seller, its run's total, its balance before
    tops: list[list] = [[] for _ in range(5)]  # seller, newest entry, entries, its seal, head mac
    for run, (seller_id, sales) in enumerate(runs):
        left = {index for (of, index) in skipped if of == run}
        count, before = len(sold[0]), heads[seller_id][0]
        made, (balance, entries, previous, _) = _sell_run(
            write, seller_id, sales, heads[seller_id], ids, left, now, sold
        )
        outcomes.append(made)
        if len(sold[0]) > count:  # it sold: its balance and head move
            mac = seals.head_mac(write.ledger_key, seller_id, sold[2][-1], entries, previous,
                                 balance)  # fmt: skip
            _add(tops, (seller_id, sold[2][-1], entries, previous, mac))
            _add(moves, (seller_id, before - balance, before))
    queries = also(outcomes)
    if not sold[0]:  # nothing sold: only what `also` records
        _write_also(write, queries)
        return outcomes
    if write.balance_first:
        moved = _together(write, moves, sold, now, tops, queries)
    else:
        moved = _batch(write, sold, now, tops, queries)
    # Belt and braces: PostgreSQL's statement has already failed if this could fail.
    after = sorted((seller_id, check_balance(before - total))
                   for seller_id, total, before in zip(*moves, strict=True))  # fmt: skip
    if [tuple(row) for row in moved] != after:
        raise AssertionError(f"balances {moved} != {after} after a batch")
    return outcomes


def _sell_run(write: Write, seller_id: int, sales: list[tuple[str, int]], head: tuple,
              ids: Iterator, left: set[int], now: str,
              sold: list[list]) -> tuple[list, tuple]:  # fmt: skip
    """One run: each sale's outcome (None for those `left`), in order, from its seller's
    `head` (balance, entries, seal, seq), with ids from `ids`, and the head after it;
    what it sells is added to `sold`."""
    balance, entries, previous, seq = head
    made: list = []
    for index, (number, amount) in enumerate(sales):
        if index in left:
            made.append(None)
            continue
        if amount > balance:
            made.append(InsufficientCredit(NOT_COVERED, balance=balance, amount=amount))
            continue
        (sale_id, entry_id), balance = next(ids), balance - amount
        seq, entries = seq + 1, entries + 1
        entry = {"id": entry_id, "seller_id": seller_id, "kind": "sale", "amount": -amount,
                 "balance_after": balance, "credit_request_id": None, "sale_id": sale_id,
                 "reason": None, "created_at": now, "refund_of": None, "phone": number}  # fmt: skip
        previous = seals.entry_mac(write.ledger_key, previous, seals.values(entry))
        _add(sold, (seller_id, sale_id, entry_id, seq, number, amount, balance, previous))
        made.append({"id": sale_id, "seller_id": seller_id, "phone": number, "amount": amount,
                     "balance_after": balance, "created_at": now})  # fmt: skip
    return made, (balance, entries, previous, seq)


def _add(columns: list[list], row: tuple) -> None:
    for column, value in zip(columns, row, strict=True):
        column.append(value)


def _heads(write: Write, runs: list[Run], read: Read | None) -> tuple[dict, Iterator, list]:
    """The held sellers' balances, sealed heads (entries, seal) and newest seq, by seller,
    ids (sale, entry) for every sale of `runs` (SQLite: from the newest, under the
    file's lock; it has no seq), and the rows of `read` (PostgreSQL: in the same
    statement, one send less while the sellers are held); `Separately` if a seller is
    missing or not active."""
    sellers = [seller_id for seller_id, _ in runs]
    count = sum(len(sales) for _, sales in runs)
    sql, params, names = read or ("", (), ())
    if write.balance_first:
        columns = ", ".join(f"r.{name}" for name in names)
        column = _READ.format(columns=columns, sql=sql) if read else "NULL"
        found = write.rows(_TOGETHER_HEAD.format(read=column), (count, *params, sellers))
    else:
        found = write.rows(_BATCH_HEAD, (json.dumps(sellers),))
    if len(found) != len(set(sellers)) or any(row[2] != "active" for row in found):
        raise Separately
    if write.balance_first:  # ids from the sequences, and each seller's newest seq
        heads = {row[0]: (row[1], row[3] or 0, row[4] or seals.GENESIS, row[5]) for row in found}
        rows = [tuple(row) for row in _json(next((r[8] for r in found if r[8]), "[]"))]
        return heads, iter(zip(found[0][6], found[0][7], strict=True)), rows
    heads = {row[0]: (row[1], row[3] or 0, row[4] or seals.GENESIS, 0) for row in found}
    sale, entry = found[0][5] + 1, found[0][6] + 1  # the newest ids: the file is held
    rows = write.rows(sql, params) if read else []
    ids = zip(range(sale, sale + count), range(entry, entry + count), strict=True)
    return heads, iter(ids), rows


def _json(value):
    """A JSON column as the driver gives it: parsed already, or as text."""
    return json.loads(value) if isinstance(value, str) else value


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


def _together(write: Write, moves: list[list], sold: list[list], now: str, tops: list[list],
              queries: list[tuple[str, tuple]]) -> list:  # fmt: skip
    """PostgreSQL: the runs, the heads (entries, seal, its mac) and `queries` in one
    statement; each moved seller's balance after it, by seller."""
    extra, params = _as_with(queries)
    return write.rows(_TOGETHER.format(also=extra),
                      (*moves, *sold, now, now, *tops, now, *params))  # fmt: skip


def _batch(write: Write, sold: list[list], now: str, tops: list[list],
           queries: list[tuple[str, tuple]]) -> list:  # fmt: skip
    """SQLite: the runs through `sale_batch` (each sale made by its trigger, in order),
    the heads (entries, seal, its mac), `queries`; each moved seller's balance after it."""
    write.execute(_BATCH_VIEW)  # this connection's, made once (again after a rollback)
    write.execute(_BATCH_TRIGGER)
    rows = [(sale, entry, seller_id, number, amount, after, now, mac)
            for seller_id, sale, entry, _, number, amount, after, mac
            in zip(*sold, strict=True)]  # fmt: skip
    write.execute(_BATCH, (json.dumps(rows),))
    write.send_all([*((NEW_HEAD, top) for top in zip(*tops, strict=True)), *queries])
    return write.rows(
        "SELECT id, balance FROM seller WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (json.dumps(tops[0]),),
    )
