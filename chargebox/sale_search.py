"""Finding sales: by phone, by the seller's Idempotency-Key, by a time range, a page at a time.

A page is the sales with the smallest ids above the page's `after_id` that match (newest
first: the largest below its `before_id`, the blocks below read downwards). Stamps
need not follow ids (two hosts' clocks, a clock set back), so a search by time finds
where its range's sales can be from the blocks of ids (`id >> schema.BLOCK_BITS`, 1,024
ids each): `sale_block` keeps each block's span of stamps, widened by a trigger as each
sale is made and never narrowed, so a sale stamped in the range lies in a block whose
span meets the range. The search reads those blocks in id order from the page's start
(newest first: downwards from its cursor's block, or from the newest), a batch at a
time (below), and walks each run of consecutive ones along the index its other
filters choose (the primary key, the seller's, the number's), checking each sale's
stamp, until the page is full or the blocks end.

So a range's page reads, besides its own sales, the rest of the block where it begins
(at most 1,023 sales) and the blocks' rows from the page's start through the range, and
past it while it has fewer than a batch of blocks (to the blocks' end: some 10,000 rows
for ten million sales, a few ms; more on PostgreSQL, a row per server backend that wrote
to a block), not the range's stamps nor the sales before it: so far as stamps follow
ids. A block whose span meets the range is walked whole, whether or not its sales are
in it, so sales stamped far out of their ids' order cost reads, never results. The
blocks are read BLOCKS at first, twice as many each time after (a seller's or a
number's few sales over a long range: a handful of rounds, not one per 64 blocks). A key
finds one sale at most, so a search by key walks its one record, with no blocks.
(Schema versions 5 and 6 indexed every sale's stamp instead: see docs/performance.md.)

Queries.sales runs it; this module composes only its conditions and bounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from chargebox.schema import BLOCK_BITS

BLOCKS = 64  # blocks read at first, then twice as many each time, up to MOST_BLOCKS
MOST_BLOCKS = 8192
_BY_KEY = "id IN (SELECT sale_id FROM idempotency_record WHERE seller_id = ? AND key = ?)"
# The blocks from one on (`block >= ?`; newest first `block <= ?`, downwards) whose span of
# stamps meets the range, in order.
_MEETING = "SELECT DISTINCT block FROM sale_block WHERE {} ORDER BY block{} LIMIT ?"


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

    `walk(page, conditions)`: the sales with ids between page.after_id and
    page.before_id that meet the conditions and the search's seller and phone, in the
    page's order, at most page.limit
    (Queries.page); `rows(sql, params)`: a read.
    """
    filters: list[tuple[str, tuple]] = []
    if search.key is not None:
        filters.append((_BY_KEY, (seller_id, search.key)))
    stamped = _bounded(("created_at >= ?", "created_at < ?"), search)
    if not stamped or search.key is not None:
        return walk(page, (*filters, *stamped))
    meets = _bounded(("last_stamp >= ?", "first_stamp < ?"), search)
    down = page.newest_first
    found: list[dict] = []
    block, reading = _first_block(page), BLOCKS
    while block is None or block >= 0:
        beyond = [] if block is None else [("block <= ?" if down else "block >= ?", (block,))]
        conditions = [*beyond, *meets]
        sql = _MEETING.format(" AND ".join(sql for sql, _ in conditions), " DESC" if down else "")
        blocks = [n for (n,) in rows(sql, (*(v for _, vs in conditions for v in vs), reading))]
        for low, high in _runs(blocks):
            part = dataclasses.replace(
                page,
                limit=page.limit - len(found),
                after_id=max(page.after_id, (low << BLOCK_BITS) - 1),
                before_id=_below(page.before_id, (high + 1) << BLOCK_BITS),
            )
            found += walk(part, stamped)
            if len(found) == page.limit:
                return found
        if len(blocks) < reading:
            return found
        block, reading = blocks[-1] + (-1 if down else 1), min(2 * reading, MOST_BLOCKS)
    return found


def _first_block(page) -> int | None:
    """The block a page's walk starts at: its first id's, or None (newest first from the
    top: the last block, whichever it is)."""
    if not page.newest_first:
        return (page.after_id + 1) >> BLOCK_BITS
    return None if page.before_id is None else (page.before_id - 1) >> BLOCK_BITS


def _below(cursor: int | None, bound: int) -> int:
    """The lower of a page's before_id (None: no cursor) and a run's end."""
    return bound if cursor is None else min(cursor, bound)


def _bounded(sql: tuple[str, str], search: Search) -> list[tuple[str, tuple]]:
    """The conditions (from, to) for the bounds the search gives."""
    return [(sql, (stamp,)) for sql, stamp in zip(sql, (search.start, search.end), strict=True)
            if stamp is not None]  # fmt: skip


def _runs(blocks: list[int]) -> Iterator[tuple[int, int]]:
    """The runs of consecutive blocks in a list in either order, each as (lowest, highest)."""
    start = None
    for n, block in enumerate(blocks):
        if start is None:
            start = block
        if n + 1 == len(blocks) or abs(blocks[n + 1] - block) != 1:
            yield min(start, block), max(start, block)
            start = None
