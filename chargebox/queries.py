"""Reads: the shape of each resource, declared once, and the SELECTs that return it.

A `Shape` names a table and the columns a client sees. The same list makes the
SELECTs here and the RETURNING of the statement that writes the row (ledger,
services), so each resource is spelled in one place. `Queries` reads through a
Database, or through an open Write to see the write's own rows. No writes here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from chargebox import settled
from chargebox.errors import NotFound, ValidationError, phrase
from chargebox.sale_search import Conditions, Search, find

STATUSES = ("pending", "approved", "rejected")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class Shape:
    """A resource as a client sees it: its table, its columns, and what to call one."""

    table: str
    columns: tuple[str, ...]
    what: str

    @property
    def select(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.table}"

    @property
    def returning(self) -> str:
        return "RETURNING " + ", ".join(self.columns)


SELLER = Shape("seller", ("id", "name", "balance", "status", "created_at"), phrase("seller"))
# A seller's API key as anyone may see it: never its hash.
SELLER_KEY = Shape(
    "seller_key",
    ("id", "seller_id", "label", "created_at", "last_used_at", "revoked_at"),
    phrase("key"),
)
CREDIT_REQUEST = Shape(
    "credit_request",
    ("id", "seller_id", "amount", "status", "created_at", "decided_at"),
    phrase("credit request"),
)
SALE = Shape(
    "sale", ("id", "seller_id", "phone", "amount", "balance_after", "created_at"), phrase("sale")
)
# A sale as clients read it: the row, and whether it was refunded, when, by which entry
# (null, null: not refunded). The sale row never changes; its refund is a ledger entry.
SALE_READ = Shape(
    "(SELECT sale.*, refund.created_at AS refunded_at, refund.id AS refund_entry_id FROM sale"
    " LEFT JOIN ledger_entry AS refund ON refund.refund_of = sale.id) AS sale",
    (*SALE.columns, "refunded_at", "refund_entry_id"),
    "sale",
)
NOT_REFUNDED = {"refunded_at": None, "refund_entry_id": None}  # a sale just made
LEDGER_ENTRY = Shape(
    "ledger_entry",
    (
        "id",
        "seller_id",
        "kind",
        "amount",
        "balance_after",
        "credit_request_id",
        "sale_id",
        "reason",
        "created_at",
        "refund_of",
    ),  # fmt: skip
    phrase("ledger entry"),
)
PHONE = Shape("phone", ("id", "number", "total_charged", "created_at"), phrase("phone"))


@dataclasses.dataclass(frozen=True)
class Page:
    """Cursor paging: items with id > after_id (and < before_id, if given), at most
    `limit`, oldest first, or newest first: a list then paged downwards, each next
    page's before_id its last id (settled.below_top)."""

    limit: int = DEFAULT_LIMIT
    after_id: int = 0
    before_id: int | None = None
    newest_first: bool = False


# A stamp's UTC half hour, the unit the charts are summed in (text, so both backends agree).
_HOUR, _HALF = (
    "substr(created_at, 1, 13)",
    "CASE WHEN substr(created_at, 15, 2) < '30' THEN 0 ELSE 1 END",
)
_HALF_HOUR = f"{_HOUR} AS hour, {_HALF} AS half"
# Sales' amounts summed in two parts, each far from a 64-bit integer's end whatever the
# number of sales, put together in Python (`_whole`): one sum passed it after 9,223 sales
# of 10^15 (CHARGEBOX_MAX_AMOUNT's ceiling), and SQLite's SUM raises "integer overflow".
_PART = 2**25  # an amount (at most 10^15 < 2^50) is below _PART * _PART
_SUMS = (
    f"CAST(COALESCE(SUM(amount / {_PART}), 0) AS BIGINT) AS amount_high,"
    f" CAST(COALESCE(SUM(amount % {_PART}), 0) AS BIGINT) AS amount_low"
)


# PostgreSQL: each seller's last entry below an id and before a stamp, for each row of
# `{sellers}`, named s (n, id, below, before). Its entries are indexed by (seller_id, seq), not id,
# and seq runs 1, 2, 3... with the ids: so the last place below the id is bisected along
# that index (a recursive query, some 20 probes), and only the entries from there back to
# one stamped before are read (those near the stamp), never a walk back over the
# seller's entries after it.
_LAST_BEFORE = """SELECT s.n, s.id AS seller_id, {name} AS name, o.id AS entry_id,
 o.balance_after FROM {sellers} LEFT JOIN LATERAL (
 WITH RECURSIVE b(lo, hi) AS (
  SELECT CAST(0 AS bigint), COALESCE((SELECT max(seq) FROM ledger_entry
   WHERE seller_id = s.id), 0)
  UNION ALL
  SELECT CASE WHEN e.id < s.below THEN e.seq ELSE b.lo END,
   CASE WHEN e.id < s.below THEN b.hi ELSE e.seq - 1 END
  FROM b JOIN ledger_entry AS e ON e.seller_id = s.id AND e.seq = (b.lo + b.hi + 1) / 2
  WHERE b.lo < b.hi)
 SELECT e.id, e.balance_after FROM ledger_entry AS e WHERE e.seller_id = s.id
  AND e.seq <= (SELECT min(hi) FROM b) AND e.created_at < s.before
  ORDER BY e.seq DESC LIMIT 1
) AS o ON true ORDER BY s.n"""


def _each(one: str, count: int) -> str:
    """`one` (a SELECT whose `{0}` is its number) once per item, as one statement whose rows
    come back in the items' order (its column `n`)."""
    return " UNION ALL ".join(one.format(n) for n in range(count)) + " ORDER BY n"


def _whole(row: dict) -> dict:
    """A row of `_SUMS`, its amount whole."""
    high, low = row.pop("amount_high"), row.pop("amount_low")
    return {**row, "amount": int(high) * _PART + int(low)}


def _maybe(value: object) -> tuple:
    """A parameter if there is one (an optional `AND seller_id = ?`)."""
    return () if value is None else (value,)


class Reader(Protocol):
    """A Database, or an open Write (which sees its own uncommitted rows; pages are read
    through a Database only)."""

    def dicts(self, sql: str, params: tuple = ()) -> list[dict]: ...

    def settled(self, table: str, wait: bool = True, at_least: int | None = None
                ) -> int | None: ...  # fmt: skip


class Queries:
    """The reads of the API and the pages, through one reader."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def one(self, shape: Shape, ident: object, column: str = "id") -> dict:
        found = self.reader.dicts(f"{shape.select} WHERE {column} = ?", (ident,))
        if not found:
            raise NotFound("{what} {ident} does not exist", what=shape.what, ident=ident)
        return found[0]

    def page(
        self, shape: Shape, page: Page, conditions: tuple[tuple[str, tuple], ...] = (),
        **filters: object,
    ) -> list[dict]:  # fmt: skip
        """A page of `shape`, by equality `filters` (None: any) and other `conditions`
        (SQL, params) on its columns; only settled ids (settled.py)."""
        return self._settled(shape.table, filters.get("seller_id"), page, lambda held:
                             self._page(shape, page, (*conditions, *held), **filters))  # fmt: skip

    def _settled(self, table: str, seller_id: object, page: Page,
                 read: Callable[[Conditions], list[dict]]) -> list[dict]:  # fmt: skip
        if seller_id is not None and table in settled.UNDER_SELLER_LOCK:
            return read(())  # one seller's rows commit in id order
        if page.newest_first:
            return settled.below_top(self.reader.settled, table, page.before_id, read)
        return settled.kept(self.reader.settled, table, page.limit, read, page.before_id)

    def _page(self, shape: Shape, page: Page, conditions: Conditions, **filters: object
              ) -> list[dict]:  # fmt: skip
        where, params = ["id > ?"], [page.after_id]
        if page.before_id is not None:
            where.append("id < ?")
            params.append(page.before_id)
        for condition, values in conditions:
            where.append(condition)
            params.extend(values)
        for column, value in filters.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        order = "id DESC" if page.newest_first else "id"
        sql = f"{shape.select} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        return self.reader.dicts(sql, (*params, page.limit))

    # --- one of each ------------------------------------------------------------------------

    def seller(self, seller_id: int) -> dict:
        return self.one(SELLER, seller_id)

    def credit_request(self, request_id: int) -> dict:
        return self.one(CREDIT_REQUEST, request_id)

    def sale(self, sale_id: int) -> dict:
        return self.one(SALE_READ, sale_id)

    def ledger_entry(self, entry_id: int) -> dict:
        return self.one(LEDGER_ENTRY, entry_id)

    def phone(self, number: str) -> dict:
        return self.one(PHONE, number, "number")

    # --- lists ------------------------------------------------------------------------------

    def sellers(self, page: Page) -> list[dict]:
        return self.page(SELLER, page)

    def credit_requests(
        self, page: Page, seller_id: int | None = None, status: str | None = None
    ) -> list[dict]:
        if status is not None and status not in STATUSES:
            raise ValidationError("status must be pending, approved or rejected", "status")
        return self.page(CREDIT_REQUEST, page, seller_id=seller_id, status=status)

    def sales(self, page: Page, seller_id: int | None = None, search: Search | None = None
              ) -> list[dict]:  # fmt: skip
        """Sales, maybe found by phone, by the seller's Idempotency-Key (its order id: the
        key's record names the sale, UNIQUE (seller_id, key)) and by a time range: see
        sale_search for how a page of them is found."""
        search = search or Search()

        # with a number, the seller is kept off its index (`+`): the number's is narrower
        mine = (("+seller_id = ?", (seller_id,)),) if search.phone and seller_id else ()

        def read(held: Conditions) -> list[dict]:
            def walk(part: Page, conditions: Conditions) -> list[dict]:
                return self._page(SALE_READ, part, (*conditions, *mine, *held),
                                  phone=search.phone,
                                  seller_id=None if mine else seller_id)  # fmt: skip

            return find(walk, self.reader.rows, page, seller_id, search)

        return self._settled(SALE.table, seller_id, page, read)

    def order_ids(self, seller_id: int, sale_ids: list[int]) -> dict[int, str]:
        """The seller's order ids (Idempotency-Keys) of these sales, by sale: along the
        records' UNIQUE sale_id, one a sale at most; an unkeyed sale has none."""
        if not sale_ids:
            return {}
        marks = ", ".join("?" * len(sale_ids))
        sql = f"SELECT sale_id, key FROM idempotency_record WHERE sale_id IN ({marks})"
        return dict(self.reader.rows(f"{sql} AND seller_id = ?", (*sale_ids, seller_id)))

    def ledger(self, page: Page, seller_id: int | None = None) -> list[dict]:
        return self.page(LEDGER_ENTRY, page, seller_id=seller_id)

    def phones(self, page: Page) -> list[dict]:
        return self.page(PHONE, page)

    def seller_keys(self, seller_id: int, page: Page | None = None) -> list[dict]:
        self.seller(seller_id)  # NotFound for a seller that does not exist
        return self.page(SELLER_KEY, page or Page(), seller_id=seller_id)

    # --- what the pages show ----------------------------------------------------------------

    def pending_by_seller(self) -> list[dict]:
        """How many credit requests wait for the admin, per seller that has any."""
        return self.reader.dicts(
            "SELECT seller.id AS seller_id, seller.name, count(*) AS pending"
            " FROM credit_request JOIN seller ON seller.id = credit_request.seller_id"
            " WHERE credit_request.status = 'pending' GROUP BY seller.id ORDER BY seller.id"
        )

    def recent_ledger(self, seller_id: int, limit: int = 20) -> list[dict]:
        """A seller's newest ledger entries first, each sale or refund with its phone number,
        and a sale's `refunded_at` once it was refunded."""
        columns = ", ".join(f"e.{name}" for name in LEDGER_ENTRY.columns if name != "seller_id")
        return self.reader.dicts(
            f"SELECT {columns}, sale.phone, refund.created_at AS refunded_at"
            " FROM ledger_entry AS e LEFT JOIN sale ON sale.id = COALESCE(e.sale_id, e.refund_of)"
            " LEFT JOIN ledger_entry AS refund ON refund.refund_of = e.sale_id"
            " WHERE e.seller_id = ? ORDER BY e.id DESC LIMIT ?",
            (seller_id, limit),
        )

    def recent_credit_requests(self, seller_id: int, limit: int = 10) -> list[dict]:
        return self.reader.dicts(
            f"{CREDIT_REQUEST.select} WHERE seller_id = ? ORDER BY id DESC LIMIT ?",
            (seller_id, limit),
        )

    # --- what the charts show (activity.py buckets these in Tehran time) -------------------

    def sales_by_half_hour(self, ranges: list[tuple[int, int]], start: str, end: str,
                           seller_id: int | None = None) -> list[dict]:  # fmt: skip
        """Sales (amount, count) stamped in [start, end) with ids in any of the [ranges),
        per UTC half hour (`hour` is `2026-12-01T20`, `half` 0 or 1): whole Tehran hours
        and days are made of these, Tehran being UTC+03:30. One statement for them all."""
        if not ranges:
            return []
        mine = " AND seller_id = ?" if seller_id is not None else ""
        within = " OR ".join(["(id >= ? AND id < ?)"] * len(ranges))
        found = self.reader.dicts(
            f"SELECT {_HALF_HOUR}, {_SUMS}, count(*) AS sales"
            f" FROM sale WHERE ({within}) AND created_at >= ? AND created_at < ?{mine}"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            (*(n for ids in ranges for n in ids), start, end, *_maybe(seller_id)),
        )
        return [_whole(row) for row in found]

    def sales_between(self, ranges: list[tuple[int, int]], seller_id: int | None = None
                      ) -> list[dict]:  # fmt: skip
        """The amount and count of the sales with ids in each of the [ranges), in their
        order: plain ranges of the primary key, no sort (activity.py knows each falls in
        one period). One statement for them all."""
        if not ranges:
            return []
        mine = " AND seller_id = ?" if seller_id is not None else ""
        one = (
            f"SELECT {{0}} AS n, {_SUMS}, count(*) AS sales FROM sale"
            f" WHERE id >= ? AND id < ?{mine}"
        )
        found = self.reader.dicts(
            _each(one, len(ranges)), tuple(n for ids in ranges for n in (*ids, *_maybe(seller_id)))
        )
        return [{"amount": _whole(row)["amount"], "sales": row["sales"]} for row in found]

    def balances_at(self, below_id: int, before: str) -> list[dict]:
        """Each seller (id, name) with its last ledger entry below id `below_id` stamped
        before `before`: entry_id and balance_after, null before its first entry."""
        if self._postgresql:
            sellers = ("(SELECT id AS n, id, name, CAST(? AS bigint) AS below,"
                       " CAST(? AS text) AS before FROM seller) AS s")  # fmt: skip
            return self.reader.dicts(
                _LAST_BEFORE.format(sellers=sellers, name="s.name"), (below_id, before)
            )
        last = (
            "SELECT {0} FROM ledger_entry AS e WHERE e.seller_id = seller.id AND e.id < ?"
            " AND e.created_at < ? ORDER BY e.id DESC LIMIT 1"
        )
        return self.reader.dicts(
            f"SELECT id AS seller_id, name, ({last.format('e.id')}) AS entry_id,"
            f" ({last.format('e.balance_after')}) AS balance_after FROM seller ORDER BY id",
            (below_id, before, below_id, before),
        )

    def entries_not_sales(self, ids: tuple[int, int]) -> list[dict]:
        """The ledger entries with ids in [ids) that are not sales (credits, adjustments,
        refunds: few beside the sales), their seller, id and amount."""
        return self.reader.dicts(
            "SELECT seller_id, id, amount FROM ledger_entry"
            " WHERE id >= ? AND id < ? AND kind <> 'sale'",
            ids,
        )

    def balances_before(self, seller_id: int, bounds: list[tuple[int, str]]) -> list[int]:
        """For each (below_id, before), the seller's balance_after at its last ledger entry
        below id `below_id` stamped before `before` (0 before its first entry: every
        seller starts at 0). One statement for them all."""
        if not bounds:
            return []
        if self._postgresql:
            rows = ", ".join(["(CAST(? AS bigint), CAST(? AS bigint), CAST(? AS bigint),"
                              " CAST(? AS text))"] * len(bounds))  # fmt: skip
            sellers = f"(VALUES {rows}) AS s(n, id, below, before)"
            found = self.reader.dicts(
                _LAST_BEFORE.format(sellers=sellers, name="NULL"),
                tuple(v for n, bound in enumerate(bounds) for v in (n, seller_id, *bound)),
            )
        else:
            one = (
                "SELECT {0} AS n, (SELECT balance_after FROM ledger_entry WHERE seller_id = ?"
                " AND id < ? AND created_at < ? ORDER BY id DESC LIMIT 1) AS balance_after"
            )
            found = self.reader.dicts(
                _each(one, len(bounds)),
                tuple(v for below, before in bounds for v in (seller_id, below, before)),
            )
        return [int(row["balance_after"] or 0) for row in found]

    @property
    def _postgresql(self) -> bool:
        """A seller's entries are indexed by (seller_id, id) on SQLite, (seller_id, seq) on
        PostgreSQL; one order (both are taken under the seller's row lock)."""
        return getattr(self.reader, "dialect", "sqlite") == "postgresql"
