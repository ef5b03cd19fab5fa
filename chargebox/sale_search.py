"""Finding sales: by phone, by the seller's Idempotency-Key, by a time range, a page at a time.

A page is the sales with the smallest ids above the page's `after_id` that match, so a
search by time walks ids, and stamps need not follow ids (two hosts' clocks, a clock
set back). Its cost is bounded two ways:

1. Unless a phone or a key is given, it walks from the page's start at most BUDGET of
   the sales (the seller's, or everyone's: BUDGET ids along an index, then at most
   BUDGET rows), checking their stamps: a range that is wide, or that starts near
   there, fills its page among them (a month's sales, page after page), and a range
   with nothing left after them ends there.
2. Otherwise, or if those rows neither fill the page nor run out, it finds the first
   and the last sale stamped in the range along the sales' stamp index (a read of the
   range's index entries), and walks the ids between: a recent hour of a long history
   reads that hour, not the history before it. A phone or a key goes straight there:
   counted along its own filter, a budget could read a rare number's whole history
   before it was spent. (Sales by number are indexed on both backends: PostgreSQL's
   `sale_phone_id` since schema version 6.)

Queries.sales runs it; this module composes only its conditions and bounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

# How many sales the first walk reads at most (an index entry and a row's stamp each).
BUDGET = 2000
_BY_KEY = "id IN (SELECT sale_id FROM idempotency_record WHERE seller_id = ? AND key = ?)"
# The first and the last sale (by id) stamped in a time range, along the sales' stamp
# index: the second walk goes over the ids between them only.
# `+ 0` keeps PostgreSQL from finding min(id) by walking the primary key (see statements).
_WITHIN = "SELECT min(id + 0), max(id + 0) FROM sale WHERE {}"
# The last of the BUDGET sales after an id that the other filters let through, and how
# many there were (fewer than BUDGET: the first walk reads every one left).
_REACH = "SELECT max(id), count(*) FROM (SELECT id FROM sale WHERE {} ORDER BY id LIMIT ?) AS c"


@dataclasses.dataclass(frozen=True)
class Search:
    """What a support desk looks a sale up by (validated already; None: any)."""

    phone: str | None = None
    key: str | None = None  # an Idempotency-Key of the seller's
    start: str | None = None  # stamps: created_at >= start AND created_at < end
    end: str | None = None


Conditions = tuple[tuple[str, tuple], ...]


def find(walk: Callable[[object, Conditions], list[dict]], rows: Callable[..., list[tuple]],
         page, seller_id: int | None, search: Search) -> list[dict]:  # fmt: skip
    """The page of sales `search` finds (a seller's, or everyone's).

    `walk(page, conditions)`: the sales with ids above page.after_id that meet the
    conditions and the search's seller and phone, in id order, at most page.limit
    (Queries.page); `rows(sql, params)`: a read.
    """
    filters: list[tuple[str, tuple]] = []
    if search.key is not None:
        filters.append((_BY_KEY, (seller_id, search.key)))
    bounds = (("created_at >= ?", "(created_at || '') >= ?", search.start),
              ("created_at < ?", "(created_at || '') < ?", search.end))  # fmt: skip
    # along the ids, the stamps are kept off their index (`|| ''`), as the seller is
    # (`+`) along the stamps: each walk goes along one index, the other conditions filter
    stamps = tuple((sql, (stamp,)) for sql, _, stamp in bounds if stamp is not None)
    checked = tuple((sql, (stamp,)) for _, sql, stamp in bounds if stamp is not None)
    if not stamps:
        return walk(page, tuple(filters))
    mine = [("seller_id = ?", (seller_id,))] if seller_id is not None else []
    found, rest, reach = [], page, page.after_id
    if search.phone is None and search.key is None:  # (see the module's docstring)
        let_through = [("id > ?", (page.after_id,)), *mine]
        reach, read = rows(_REACH.format(_joined(let_through)),
                           (*_params(let_through), BUDGET))[0]  # fmt: skip
        if not read:
            return []
        found = walk(page, (*filters, *checked, ("id <= ?", (reach,))))
        if len(found) == page.limit or read < BUDGET:
            return found
        rest = dataclasses.replace(page, limit=page.limit - len(found), after_id=reach)
    along = [*stamps, *(("+seller_id = ?", values) for _, values in mine)]
    first, last = rows(_WITHIN.format(_joined(along)), _params(along))[0]
    if first is None or last <= reach:
        return found
    # one lower bound on the id (SQLite would walk from the looser of two)
    rest = dataclasses.replace(rest, after_id=max(reach, first - 1))
    return found + walk(rest, (*filters, *checked, ("id <= ?", (last,))))


def _joined(conditions) -> str:
    return " AND ".join(sql for sql, _ in conditions)


def _params(conditions) -> tuple:
    return tuple(value for _, values in conditions for value in values)
