"""Sales and balances over time, in Tehran days and hours: what the chart pages draw.

The database sums sales per UTC half hour (queries.py: plain text functions that both
backends share); whole Tehran hours and days are made of those here, with the zone's
own rules, so a sale at 20:29 UTC counts on one Tehran day and one at 20:31 on the next
(Asia/Tehran is UTC+03:30; its offsets since 1946 are all whole half hours). A period
with no sales is a zero, never a gap. There is no index on created_at: each read starts
at the id `Queries.first_id_since` finds for its start less `SLACK`, so a year of history
before the window costs some twenty lookups, not a scan. No SQL, no writes here.
"""

from __future__ import annotations

import dataclasses
import datetime

from chargebox.clock import stamp
from chargebox.periods import TEHRAN
from chargebox.queries import Queries

DAYS = 30  # days of sales and of balances shown
HOURS = 48  # hours of sales shown
TOP = 10  # sellers ranked
# How far before its window a read starts, in case ids and stamps disagree a little
# (stamps are taken before a write's id on hosts whose clocks may differ by seconds).
SLACK = datetime.timedelta(hours=1)
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


def _window(queries: Queries, table: str, start: datetime.datetime, end: datetime.datetime):
    return queries.first_id_since(table, stamp(start - SLACK)), stamp(start), stamp(end)


def sales_per_day(queries: Queries, now: datetime.datetime, seller_id: int | None = None,
                  days: int = DAYS) -> list[Total]:  # fmt: skip
    """Sales per Tehran day over the last `days` (of one seller, or of all), oldest first."""
    dates = days_ending(now, days)
    end = _midnight(dates[-1] + datetime.timedelta(days=1))
    rows = queries.sales_by_half_hour(*_window(queries, "sale", _midnight(dates[0]), end),
                                      seller_id)  # fmt: skip
    totals = {day: [0, 0] for day in dates}
    for row in rows:
        _add(totals, _local(row).date(), row)
    return [Total(day, amount, sales) for day, (amount, sales) in totals.items()]


def sales_per_hour(queries: Queries, now: datetime.datetime, hours: int = HOURS) -> list[Total]:
    """Sales of all sellers per Tehran hour over the last `hours`, oldest first."""
    starts = hours_ending(now, hours)
    end = starts[-1] + datetime.timedelta(hours=1)
    rows = queries.sales_by_half_hour(*_window(queries, "sale", starts[0], end))
    totals = {start: [0, 0] for start in starts}
    for row in rows:
        _add(totals, _local(row).replace(minute=0), row)
    return [Total(start, amount, sales) for start, (amount, sales) in totals.items()]


def _add(totals: dict, key: object, row: dict) -> None:
    if key in totals:  # int(): PostgreSQL's count is an int already, a BIGINT sum too
        totals[key][0] += int(row["amount"])
        totals[key][1] += int(row["sales"])


def top_sellers(queries: Queries, now: datetime.datetime, days: int = DAYS,
                limit: int = TOP) -> list[dict]:  # fmt: skip
    """The `limit` sellers with the most sales (amount) in the last `days` Tehran days:
    seller_id, name, amount, sales; most first."""
    dates = days_ending(now, days)
    end = _midnight(dates[-1] + datetime.timedelta(days=1))
    rows = queries.top_sellers(*_window(queries, "sale", _midnight(dates[0]), end), limit)
    return [{**row, "amount": int(row["amount"]), "sales": int(row["sales"])} for row in rows]


def closing_balances(queries: Queries, seller_id: int, now: datetime.datetime,
                     days: int = DAYS) -> list[tuple[datetime.date, int]]:  # fmt: skip
    """A seller's balance at the end of each of the last `days` Tehran days (today: now),
    from its ledger's balance_after (0 before its first entry, as every seller starts)."""
    dates = days_ending(now, days)
    start, end = _midnight(dates[0]), _midnight(dates[-1] + datetime.timedelta(days=1))
    from_id, _, until = _window(queries, "ledger_entry", start, end)
    before = dates[0] - datetime.timedelta(days=1)  # rows of earlier days: the opening
    closing: dict[datetime.date, int] = {}
    for row in queries.balances_by_half_hour(seller_id, from_id, until):  # oldest first
        day = before if row["hour"] is None else max(_local(row).date(), before)
        closing[day] = int(row["balance_after"])
    shown, balance = [], closing.get(before, 0)
    for day in dates:
        balance = closing.get(day, balance)
        shown.append((day, balance))
    return shown
