"""Sales and balances over time, in Tehran days and hours: what the chart pages draw.

There is no index on created_at (every sale would pay for one), but ids follow the time:
`stamped_ids.first_ids_since` finds by bisection the id at which any stamp begins. So a
period's sales are read as ranges of the primary key: within `SLACK` of a period's edge
the rows are grouped by their stamps' UTC half hour (queries.py; whole Tehran hours and
days are made of those here, with the zone's rules: a sale at 20:29 UTC counts on one
Tehran day, one at 20:31 on the next), and between two edges they are only summed, with
no sort. History before the window costs some twenty lookups, not a scan. A period with
no sales is a zero, never a gap. The one assumption: a sale stored after another is
never stamped more than SLACK before it (stamps come from the hosts' clocks); then a row
below the id found for `edge - SLACK` is stamped before the edge, and a row from the id
found for `edge + SLACK` on is stamped after it. No SQL here.

The sales are counted gross: a refunded sale still counts on its day, and the pages say so
under each chart ("Gross: refunded sales are still counted."). Taking refunds off needs a
choice the admin should see made (off the sale's day, changing past days, or on the
refund's day, as a negative) and a read of the ledger's refunds beside the sales; until
it is made, an admin reading these as net is told they are not.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools

from chargebox.clock import stamp
from chargebox.periods import TEHRAN
from chargebox.queries import Queries
from chargebox.stamped_ids import first_ids_since

DAYS = 30  # days of sales and of balances shown
HOURS = 48  # hours of sales shown
TOP = 10  # sellers ranked
# How far an id may stray from the order of its stamp: a stamp is taken inside its write
# (SQLite: under the write lock, so in order), but on PostgreSQL by hosts whose clocks
# differ by milliseconds under NTP. Rows within SLACK of a period's edge are placed by
# their stamps (grouped: the costly part), the others by their ids (summed). The bound
# is pairwise (any two sales): clocks each within SLACK / 2 of the truth keep it.
SLACK = datetime.timedelta(minutes=10)
UTC = datetime.UTC


@dataclasses.dataclass(frozen=True)
class Total:
    """What sold in one period: its start (a Tehran date, or an aware Tehran hour)."""

    start: datetime.date | datetime.datetime
    amount: int
    sales: int


def days_ending(now: datetime.datetime, days: int) -> list[datetime.date]:
    """The last `days` Tehran dates, today (at `now`) last."""
    today = now.astimezone(TEHRAN).date()
    return [today - datetime.timedelta(days=back) for back in range(days - 1, -1, -1)]


def hours_ending(now: datetime.datetime, hours: int) -> list[datetime.datetime]:
    """The starts of the last `hours` Tehran hours, the current one last."""
    this_hour = now.astimezone(TEHRAN).replace(minute=0, second=0, microsecond=0)
    first = this_hour.astimezone(UTC) - datetime.timedelta(hours=hours - 1)
    return [(first + datetime.timedelta(hours=n)).astimezone(TEHRAN) for n in range(hours)]


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=TEHRAN)


def _local(row: dict) -> datetime.datetime:
    """A half-hour row's start, in Tehran."""
    start = datetime.datetime.fromisoformat(row["hour"] + ":00+00:00")
    return (start + datetime.timedelta(minutes=30 * row["half"])).astimezone(TEHRAN)


def _day_edges(now: datetime.datetime, days: int) -> list[datetime.datetime]:
    dates = days_ending(now, days)
    return [_midnight(day) for day in dates] + [_midnight(dates[-1] + datetime.timedelta(days=1))]


def _hour_edges(now: datetime.datetime, hours: int) -> list[datetime.datetime]:
    starts = hours_ending(now, hours)
    return [*starts, starts[-1] + datetime.timedelta(hours=1)]


def sales_per_day(queries: Queries, now: datetime.datetime, seller_id: int | None = None,
                  days: int = DAYS) -> list[Total]:  # fmt: skip
    """Sales per Tehran day over the last `days` (of one seller, or of all), oldest first."""
    pieces = _pieces(queries, _day_edges(now, days), seller_id)
    return _totals(days_ending(now, days), pieces, _day_of)


def sales_per_hour(queries: Queries, now: datetime.datetime, hours: int = HOURS) -> list[Total]:
    """Sales of all sellers per Tehran hour over the last `hours`, oldest first."""
    pieces = _pieces(queries, _hour_edges(now, hours))
    return _totals(hours_ending(now, hours), pieces, _hour_of)


def admin_figures(database, now: datetime.datetime) -> tuple[list, list, list]:
    """The admin's page: sales per day, per hour, and top sellers, from one read snapshot
    (`database.snapshot()`: REPEATABLE READ on PostgreSQL, one read transaction on
    SQLite). Read apart, an entry committing between the reads could be seen by one and
    not another: PostgreSQL gives ids before COMMIT, so a credit with an id below the
    window's end, committed between the scan of the credits and the closing balances,
    would move a closing balance the scan never saw and hide that seller's sales."""
    with database.snapshot() as snapshot:
        queries = Queries(snapshot)
        return (*sales_per_day_and_hour(queries, now), top_sellers(queries, now))


def seller_figures(database, seller_id: int, now: datetime.datetime) -> tuple[list, list]:
    """A seller's page: its sales per day and its closing balances, from one snapshot."""
    with database.snapshot() as snapshot:
        queries = Queries(snapshot)
        return sales_per_day(queries, now, seller_id), closing_balances(queries, seller_id, now)


def sales_per_day_and_hour(queries: Queries, now: datetime.datetime) -> tuple[list, list]:
    """sales_per_day() and sales_per_hour() of all sellers from one read."""
    edges = sorted(set(_day_edges(now, DAYS)) | set(_hour_edges(now, HOURS)))
    pieces = _pieces(queries, edges)
    return (_totals(days_ending(now, DAYS), pieces, _day_of),
            _totals(hours_ending(now, HOURS), pieces, _hour_of))  # fmt: skip


def _day_of(start: datetime.datetime) -> datetime.date:
    return start.date()


def _hour_of(start: datetime.datetime) -> datetime.datetime:
    return start.replace(minute=0)


def _pieces(queries: Queries, edges: list[datetime.datetime], seller_id: int | None = None
            ) -> list[tuple[datetime.datetime, int, int]]:  # fmt: skip
    """(Tehran start, amount, sales) of the sales in [edges[0], edges[-1]), each piece
    inside one period between two edges: near an edge, a UTC half hour read by stamps;
    between edges, a range of ids summed whole and placed at the edge before it."""
    zones: list[list] = []  # [from, to, last edge inside]: stamps near edges, merged
    for edge in edges:
        if zones and edge - SLACK <= zones[-1][1]:
            zones[-1][1:] = [edge + SLACK, edge]
        else:
            zones.append([edge - SLACK, edge + SLACK, edge])
    moments = [stamp(moment) for zone in zones for moment in zone[:2]]
    ids = first_ids_since(queries.reader, "sale", moments, _latest(edges[-1]), SLACK)
    ranges = [(ids[2 * n], ids[2 * n + 1]) for n in range(len(zones))]
    window = stamp(edges[0]), stamp(edges[-1])
    rows = queries.sales_by_half_hour([near for near in ranges if near[0] < near[1]], *window,
                                      seller_id)  # fmt: skip
    pieces = [(_local(row), int(row["amount"]), int(row["sales"])) for row in rows]
    gaps = [(zone[2], (low, high)) for (zone, (_, low)), (_, (high, _))
            in itertools.pairwise(zip(zones, ranges, strict=True))
            if low < high]  # fmt: skip  # all stamped between a zone's last edge and the next zone
    found = queries.sales_between([ids for _, ids in gaps], seller_id)
    pieces += [(edge, int(sums["amount"]), int(sums["sales"]))
               for (edge, _), sums in zip(gaps, found, strict=True)]  # fmt: skip
    return pieces


def _latest(end: datetime.datetime) -> str:
    """Past this stamp a row is out of its place (stamped_ids.first_ids_since): the end of the
    last period drawn (today's, or this hour's) and SLACK."""
    return stamp(end + SLACK)


def _totals(keys: list, pieces: list, key_of) -> list[Total]:
    """A total for each key (a day, an hour), zero where no piece falls."""
    totals = {key: [0, 0] for key in keys}
    for start, amount, sales in pieces:
        if (key := key_of(start)) in totals:
            totals[key][0] += amount
            totals[key][1] += sales
    return [Total(key, amount, sales) for key, (amount, sales) in totals.items()]


def top_sellers(queries: Queries, now: datetime.datetime, days: int = DAYS,
                limit: int = TOP) -> list[dict]:  # fmt: skip
    """The `limit` sellers with the most sales (amount, refunds not taken off) in the last
    `days` Tehran days, most first: seller_id, name, amount.

    Read from the ledger without grouping a month of sales by seller (a sort of every
    one): between a seller's last entry before the window and its last entry in it, its
    balance moved by its credits, adjustments and refunds (few) less its sales (I2, I3),
    so sales = those others - (closing - opening). Each seller's two entries are found
    along its own index (queries.py: on PostgreSQL, bisected along (seller_id, seq)); the
    others by one scan of the window, with no sort."""
    start, end = _day_edges(now, days)[0], _day_edges(now, days)[-1]
    low, below_start, below_end = first_ids_since(
        queries.reader,
        "ledger_entry",
        [stamp(start - SLACK), stamp(start + SLACK), stamp(end + SLACK)],
        _latest(end),
        SLACK,
    )
    opening = {row["seller_id"]: row for row in queries.balances_at(below_start, stamp(start))}
    others: dict[int, list[tuple[int, int]]] = {}
    for entry in queries.entries_not_sales((low, below_end)):
        others.setdefault(entry["seller_id"], []).append((entry["id"], int(entry["amount"])))
    ranked = []
    for closing in queries.balances_at(below_end, stamp(end)):
        first = opening.get(closing["seller_id"], {}).get("entry_id") or 0
        last = closing["entry_id"] or 0
        moved = int(closing["balance_after"] or 0) - int(
            opening.get(closing["seller_id"], {}).get("balance_after") or 0
        )
        given = sum(amount for ident, amount in others.get(closing["seller_id"], ())
                    if first < ident <= last)  # fmt: skip
        if given - moved > 0:
            ranked.append({"seller_id": closing["seller_id"], "name": closing["name"],
                           "amount": given - moved})  # fmt: skip
    ranked.sort(key=lambda row: (-row["amount"], row["seller_id"]))
    return ranked[:limit]


def closing_balances(queries: Queries, seller_id: int, now: datetime.datetime,
                     days: int = DAYS) -> list[tuple[datetime.date, int]]:  # fmt: skip
    """A seller's balance at the end of each of the last `days` Tehran days (today: now),
    its last entry's balance_after (0 before its first entry, as every seller starts)."""
    dates, ends = days_ending(now, days), _day_edges(now, days)[1:]
    below = first_ids_since(
        queries.reader,
        "ledger_entry",
        [stamp(end + SLACK) for end in ends],
        _latest(ends[-1]),
        SLACK,
    )
    bounds = [(below_id, stamp(end)) for below_id, end in zip(below, ends, strict=True)]
    return list(zip(dates, queries.balances_before(seller_id, bounds), strict=True))
