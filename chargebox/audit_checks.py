"""The audit's checks: the SQL of each invariant, and the walk of a seller's ledger.

`FULL_CHECKS` re-check every row set-wise; `since` re-checks only what came after a
trusted checkpoint, seller by seller, in Python where a check needs the state the
checkpoint left (the running balance, the seal chain, the ledger sum). Both name a
problem the same way. Reads only; `audit` decides which to run and records checkpoints.
"""

from __future__ import annotations

from typing import NamedTuple

from chargebox import seals
from chargebox.checkpoints import State, Trusted
from chargebox.schema import BLOCK_BITS, key_records

CHUNK = 5_000  # ledger entries per read
IN_LIST = 500  # values per IN (...) list
KINDS = ("credit", "sale", "adjustment", "refund")

I1_SELLERS = (
    "SELECT id, NULL, 'balance ' || balance || ' is negative or not an integer' "
    "FROM seller WHERE balance < 0 {not_an_integer}"
)
_I4_REQUESTS = (
    "SELECT r.seller_id, MIN(l.id), 'credit request ' || r.id || ' (' || r.status || ', '"
    " || r.amount || ') has ' || COUNT(l.id) || ' credit entries' "
    "FROM credit_request r LEFT JOIN ledger_entry l ON l.credit_request_id = r.id {where} "
    "GROUP BY r.id HAVING (r.status = 'approved' AND (COUNT(l.id) != 1 "
    "OR MIN(l.amount) != r.amount OR MIN(l.seller_id) != r.seller_id "
    "OR MIN(l.kind) != 'credit')) OR (r.status != 'approved' AND COUNT(l.id) > 0)"
)
_I4_SALES = (
    "SELECT s.seller_id, MIN(l.id), 'sale ' || s.id || ' of ' || s.amount || ' has ' "
    "|| COUNT(l.id) || ' matching debit entries' "
    "FROM sale s LEFT JOIN ledger_entry l ON l.sale_id = s.id AND l.kind = 'sale' "
    "AND l.amount = -s.amount AND l.seller_id = s.seller_id "
    "AND l.balance_after = s.balance_after {where} GROUP BY s.id HAVING COUNT(l.id) != 1"
)
# I4 for refunds: at most one refund entry per sale (each entry's match with its sale is
# checked with the entry's other links).
_I4_REFUNDS = (
    "SELECT MIN(l.seller_id), MIN(l.id), 'sale ' || l.refund_of || ' has ' || COUNT(*) "
    "|| ' refund entries' FROM ledger_entry l WHERE l.refund_of IS NOT NULL {where} "
    "GROUP BY l.refund_of HAVING COUNT(*) > 1"
)
# A phone's total: its sales, less those refunded.
_CHARGED = "COALESCE(CAST(SUM(s.amount - COALESCE(rf.amount, 0)) AS BIGINT), 0)"
_PHONES = (
    "SELECT NULL, NULL, 'phone ' || p.number || ' total ' || p.total_charged || "
    f"' != sum of its sales less refunds ' || {_CHARGED} "
    "FROM phone p LEFT JOIN sale s ON s.phone = p.number "
    "LEFT JOIN ledger_entry rf ON rf.refund_of = s.id {where} GROUP BY p.id "
    f"HAVING p.total_charged IS DISTINCT FROM {_CHARGED}"
)
# A refund entry's sale, when it is the entry's seller's and of the entry's amount.
_REFUNDED = (
    "LEFT JOIN sale rs ON rs.id = l.refund_of AND rs.seller_id = l.seller_id"
    " AND rs.amount = l.amount"
)
# I5 for the blocks of sales (schema version 7): a sale in no span of stamps of its block
# was made with the trigger on sale off, or its span was narrowed past the guards; a
# search by time would never find it (`migrate` widens the blocks again).
_UNBLOCKED = (
    "SELECT s.seller_id, NULL, 'sale ' || s.id || ' lies in no span of stamps of its block"
    " (sale_block): a search by time misses it' FROM sale s {where} AND NOT EXISTS"
    f" (SELECT 1 FROM sale_block b WHERE b.block = s.id >> {BLOCK_BITS}"
    " AND b.first_stamp <= s.created_at AND s.created_at <= b.last_stamp)"
)
# The full audit's set-wise checks (the walk adds the seals); each row is a problem.
FULL_CHECKS = (
    ("I1", I1_SELLERS),
    (
        "I1",
        "SELECT seller_id, id, 'balance_after ' || balance_after || ' is negative' "
        "FROM ledger_entry WHERE balance_after < 0",
    ),
    (
        "I2",
        "SELECT s.id, (SELECT MAX(id) FROM ledger_entry WHERE seller_id = s.id), "
        "'balance ' || s.balance || ' != ledger sum ' || "
        "COALESCE((SELECT CAST(SUM(amount) AS BIGINT) FROM ledger_entry WHERE seller_id = s.id),"
        " 0) FROM seller s WHERE s.balance IS DISTINCT FROM "
        "COALESCE((SELECT CAST(SUM(amount) AS BIGINT) FROM ledger_entry WHERE seller_id = s.id),"
        " 0)",
    ),
    (
        "I3",
        "SELECT seller_id, id, 'balance_after ' || balance_after || ' != previous ' || prev "
        "|| ' + amount ' || amount FROM (SELECT id, seller_id, amount, balance_after, "
        "LAG(balance_after, 1, 0) OVER (PARTITION BY seller_id ORDER BY id) AS prev "
        "FROM ledger_entry) AS chain WHERE balance_after IS DISTINCT FROM prev + amount",
    ),
    ("I4", _I4_REQUESTS.format(where="")),
    ("I4", _I4_SALES.format(where="")),
    ("I4", _I4_REFUNDS.format(where="")),
    (
        "I4",
        "SELECT l.seller_id, l.id, 'entry points at missing or mismatched sale/request' "
        "FROM ledger_entry l LEFT JOIN sale s ON s.id = l.sale_id "
        "LEFT JOIN credit_request r ON r.id = l.credit_request_id "
        f"{_REFUNDED} WHERE (l.kind = 'sale' AND s.id IS NULL) "
        "OR (l.kind = 'credit' AND r.id IS NULL) OR (l.kind = 'refund' AND rs.id IS NULL) "
        "OR (l.kind NOT IN ('sale', 'credit', 'adjustment', 'refund'))",
    ),
    *(("I4", sql) for sql in key_records()),
    ("phones", _PHONES.format(where="")),
    ("I5", _UNBLOCKED.format(where="WHERE 1 = 1")),
)
_ENTRIES = (
    "SELECT l.id, l.seller_id, l.kind, l.amount, l.balance_after, l.credit_request_id,"
    " l.sale_id, l.reason, l.created_at, s.phone, seal.mac, s.id, r.id, l.refund_of, rs.id,"
    " rs.phone FROM ledger_entry l"
    " LEFT JOIN sale s ON s.id = l.sale_id LEFT JOIN ledger_seal seal ON seal.entry_id = l.id"
    f" LEFT JOIN credit_request r ON r.id = l.credit_request_id {_REFUNDED}"
)
ALL_AFTER = f"{_ENTRIES} WHERE (l.seller_id, l.id) > (?, ?) ORDER BY l.seller_id, l.id LIMIT ?"
SELLER_AFTER = f"{_ENTRIES} WHERE l.seller_id = ? AND l.id > ? ORDER BY l.id LIMIT ?"
HEADS = "SELECT seller_id, entry_id, entries, entry_mac, mac FROM seller_head"


def sealed(row: tuple) -> tuple:
    """What the seal of an entry read by _ENTRIES covers (seals.values)."""
    return tuple(row[:10]) if row[13] is None else (*row[:10], row[13])


class Walk(NamedTuple):
    """One seller's ledger as walked so far."""

    chain: seals.Chain
    ledger_sum: int
    walked: int = 0  # entries read now


class Found(NamedTuple):
    """What an audit read: its problems, and what a checkpoint of it would say."""

    problems: list[dict]
    sellers: list[tuple]  # (seller_id, balance, ledger_sum)
    totals: dict
    states: dict[int, State]
    walked: int
    entry_id: int
    request_id: int


def heads(db, walks: dict[int, Walk], heads: list[tuple]) -> list[dict]:
    """Each seller's sealed head against its chain."""
    by_seller = {row[0]: row[1:] for row in heads}
    return [
        p._asdict()
        for sid in sorted(set(walks) | set(by_seller))
        for p in seals.head_problems(
            db.ledger_key, sid, walks[sid].chain if sid in walks else None, by_seller.get(sid)
        )
    ]


def sellers(db) -> list[tuple]:
    return db.rows(
        "SELECT s.id, s.balance, COALESCE(CAST(SUM(l.amount) AS BIGINT), 0) FROM seller s "
        "LEFT JOIN ledger_entry l ON l.seller_id = s.id GROUP BY s.id ORDER BY s.id"
    )


def totals(db, entries: int | None = None, sales: int | None = None) -> dict:
    """The report's totals; the counts a quick audit made are not counted again."""
    counted = "(SELECT COUNT(*) FROM {})"
    entries_sql = counted.format("ledger_entry") if entries is None else str(int(entries))
    sales_sql = counted.format("sale") if sales is None else str(int(sales))
    row = db.rows(
        f"SELECT (SELECT COUNT(*) FROM seller), {entries_sql}, {sales_sql},"
        " (SELECT COALESCE(CAST(SUM(balance) AS BIGINT), 0) FROM seller)"
    )[0]
    return dict(zip(("sellers", "ledger_entries", "sales", "balance_sum"), row, strict=True))


def newest_ids(db) -> tuple[int, int]:
    """The newest ledger entry and credit request in this snapshot (0: none)."""
    return tuple(
        db.rows(
            "SELECT COALESCE((SELECT MAX(id) FROM ledger_entry), 0),"
            " COALESCE((SELECT MAX(id) FROM credit_request), 0)"
        )[0]
    )


def as_problems(invariant: str, rows: list[tuple]) -> list[dict]:
    return [
        {"invariant": invariant, "seller_id": sid, "entry_id": eid, "message": message}
        for sid, eid, message in rows
    ]


def since(db, trusted: Trusted) -> Found:
    """What came after `trusted`: each seller's later entries and sales, the phones and
    credit requests they touch, later seals. Rows up to the checkpoint are not read."""
    balances = dict(db.rows("SELECT id, balance FROM seller ORDER BY id"))
    head_rows = db.rows(HEADS)
    loose = "OR typeof(balance) != 'integer'" if db.dialect == "sqlite" else ""
    problems = as_problems("I1", db.rows(I1_SELLERS.format(not_an_integer=loose)))
    walks: dict[int, Walk] = {}
    states: dict[int, State] = {}
    phones: set[str] = set()
    requests: set[int] = set()
    refunded: set[int] = set()
    sales_total = 0
    for sid in sorted(set(balances) | set(trusted.states) | {row[0] for row in head_rows}):
        state = trusted.states.get(sid)
        walk = _walk(db, sid, state, problems, phones, requests, refunded)
        after = state.sale_id if state else 0
        problems += as_problems("I4", db.rows(_I4_SALES.format(where=_NEW_SALES), (sid, after)))
        problems += as_problems("I5", db.rows(_UNBLOCKED.format(where=_NEW_SALES), (sid, after)))
        count, top = db.rows(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM sale WHERE seller_id = ? AND id > ?",
            (sid, after),
        )[0]
        if count:  # the keys' records of its new sales, and of its new entries
            problems += as_problems("I4", db.rows(_NEW_SALES_KEYS, (sid, after)))
        if walk is not None and walk.walked:
            entries_after = state.entry_id if state else 0
            problems += as_problems("I4", db.rows(_NEW_ENTRIES_KEYS, (sid, entries_after)))
        sales = (state.sales if state else 0) + count
        sales_total += sales
        if walk is not None:
            walks[sid] = walk
            chain = walk.chain
            states[sid] = State(chain.last_id, chain.entries, chain.mac, chain.balance,
                                top or after, sales)  # fmt: skip
        ledger_sum = walk.ledger_sum if walk else 0
        if sid in balances and balances[sid] != ledger_sum:
            last = walk.chain.last_id if walk else None
            problems += as_problems(
                "I2", [(sid, last, f"balance {balances[sid]} != ledger sum {ledger_sum}")]
            )
    problems += heads(db, walks, head_rows)
    problems += _touched(db, trusted, phones, requests)
    for part in _parts(sorted(refunded)):
        where = f"AND l.refund_of IN ({', '.join('?' * len(part))})"
        problems += as_problems("I4", db.rows(_I4_REFUNDS.format(where=where), tuple(part)))
    entries = sum(walk.chain.entries for walk in walks.values())
    return Found(
        problems,
        [
            (sid, balance, walks[sid].ledger_sum if sid in walks else 0)
            for sid, balance in balances.items()
        ],  # fmt: skip
        totals(db, entries, sales_total),
        states,
        sum(walk.walked for walk in walks.values()),
        *newest_ids(db),
    )


_NEW_SALES = "WHERE s.seller_id = ? AND s.id > ?"
# The key records of one seller's sales and entries after its checkpoint, and of the
# credit requests after the checkpoint, that name another seller's row.
_NEW_SALES_KEYS, _NEW_ENTRIES_KEYS, _ = key_records("AND t.seller_id = ? AND t.id > ?")
_NEW_REQUESTS_KEYS = key_records("AND t.id > ?")[2]


def _walk(db, sid: int, state: State | None, problems: list, phones: set,
          requests: set, refunded: set) -> Walk | None:  # fmt: skip
    """Walk one seller's entries after its checkpointed state: I1, I3, links, seals."""
    if state is None:
        walk, after = None, 0
    else:
        chain = seals.Chain(state.entry_mac, state.entries, state.entry_id, state.balance)
        walk, after = Walk(chain, state.balance), state.entry_id
    while True:
        rows = db.rows(SELLER_AFTER, (sid, after, CHUNK))
        for row in rows:
            walk = walk or Walk(seals.Chain(), 0)
            problems += entry_problems(row, walk.chain.balance)
            chain, broken = seals.step(db.ledger_key, walk.chain, sealed(row), row[10])
            problems += [p._asdict() for p in broken]
            walk = Walk(chain, walk.ledger_sum + row[3], walk.walked + 1)
            for phone in (row[9], row[15]):
                if phone is not None:
                    phones.add(phone)
            if row[13] is not None:
                refunded.add(row[13])
            if row[5] is not None:
                requests.add(row[5])
        if len(rows) < CHUNK:
            return walk
        after = rows[-1][0]


def entry_problems(row: tuple, previous: int) -> list[dict]:
    """I1, I3 and the entry's links, for one entry read by SELLER_AFTER."""
    eid, sid, kind, amount, balance_after = row[:5]
    found = []
    if balance_after < 0:
        found.append(("I1", f"balance_after {balance_after} is negative"))
    if balance_after != previous + amount:
        found.append(
            ("I3", f"balance_after {balance_after} != previous {previous} + amount {amount}")
        )
    if (
        (kind == "sale" and row[11] is None)
        or (kind == "credit" and row[12] is None)
        or (kind == "refund" and row[14] is None)
        or (kind not in KINDS)
    ):
        found.append(("I4", "entry points at missing or mismatched sale/request"))
    return [
        {"invariant": invariant, "seller_id": sid, "entry_id": eid, "message": message}
        for invariant, message in found
    ]


def _touched(db, trusted: Trusted, phones: set[str], requests: set[int]) -> list[dict]:
    """Phones of the new sales, credit requests newer than the checkpoint or credited by
    a new entry, and seals newer than it whose entry is missing."""
    found = as_problems(
        "I4", db.rows(_I4_REQUESTS.format(where="WHERE r.id > ?"), (trusted.request_id,))
    )
    found += as_problems("I4", db.rows(_NEW_REQUESTS_KEYS, (trusted.request_id,)))
    older = sorted(ident for ident in requests if ident <= trusted.request_id)
    for part in _parts(older):
        where = f"WHERE r.id IN ({', '.join('?' * len(part))})"
        found += as_problems("I4", db.rows(_I4_REQUESTS.format(where=where), tuple(part)))
    for part in _parts(sorted(phones)):
        where = f"WHERE p.number IN ({', '.join('?' * len(part))})"
        found += as_problems("phones", db.rows(_PHONES.format(where=where), tuple(part)))
    strays = db.rows(
        "SELECT entry_id FROM ledger_seal seal WHERE seal.entry_id > ?"
        " AND NOT EXISTS (SELECT 1 FROM ledger_entry l WHERE l.id = seal.entry_id)",
        (trusted.entry_id,),
    )
    return found + [seals.stray(entry_id)._asdict() for (entry_id,) in strays]


def _parts(values: list) -> list[list]:
    return [values[n : n + IN_LIST] for n in range(0, len(values), IN_LIST)]
